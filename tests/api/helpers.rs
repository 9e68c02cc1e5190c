//! Test harness: the real server (`confab::build`) on 127.0.0.1:0 in its own thread and actix
//! system, on a fresh SQLite file, or on a fresh PostgreSQL schema when
//! `CONFAB_TEST_DATABASE_URL` is set. Tests talk HTTP (and WebSocket) to it.

#![allow(dead_code)]

use std::{path::PathBuf, sync::mpsc, time::Duration};

use actix_web::{dev::ServerHandle, web};
use confab::{
    bootstrap::Bootstrapped,
    core::{config::Config, state::AppState},
};
use diesel::{Connection, RunQueryDsl, pg::PgConnection};
use serde_json::{Value, json};
use tempfile::TempDir;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs the same scenario on SQLite and, when `CONFAB_TEST_DATABASE_URL` is set, PostgreSQL:
/// `both_backends!(name, |app| async move { … });` defines `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $scenario:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[actix_web::test]
            async fn sqlite() {
                let app = $crate::helpers::TestApp::spawn($crate::helpers::Backend::Sqlite).await.unwrap();
                ($scenario)(app).await;
            }

            #[actix_web::test]
            async fn postgres() {
                match $crate::helpers::TestApp::spawn($crate::helpers::Backend::Postgres).await {
                    Some(app) => ($scenario)(app).await,
                    None => eprintln!("skipped: CONFAB_TEST_DATABASE_URL is not set"),
                }
            }
        }
    };
}

/// For scenarios that start their own servers: `per_backend!(name);` defines `name::sqlite` and
/// `name::postgres`, each calling `async fn name(backend: Backend)` (which skips PostgreSQL itself
/// when `CONFAB_TEST_DATABASE_URL` is not set).
#[macro_export]
macro_rules! per_backend {
    ($name:ident) => {
        mod $name {
            #[actix_web::test]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await;
            }

            #[actix_web::test]
            async fn postgres() {
                super::$name($crate::helpers::Backend::Postgres).await;
            }
        }
    };
}

pub fn pg_base_url() -> Option<String> {
    std::env::var("CONFAB_TEST_DATABASE_URL").ok().filter(|s| !s.is_empty())
}

pub fn redis_url() -> Option<String> {
    std::env::var("CONFAB_TEST_REDIS_URL").ok().filter(|s| !s.is_empty())
}

fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", confab::core::crypto::random_hex_id())
}

fn with_param(url: &str, param: &str) -> String {
    if url.contains('?') { format!("{url}&{param}") } else { format!("{url}?{param}") }
}

/// A PostgreSQL schema (or whole database) that exists for one test and is dropped after.
pub struct PgScope {
    base: String,
    drop_sql: String,
    pub url: String,
}

impl PgScope {
    pub fn schema() -> Option<Self> {
        let base = pg_base_url()?;
        let name = unique_name("t");
        let mut c = PgConnection::establish(&base).expect("connect to CONFAB_TEST_DATABASE_URL");
        diesel::sql_query(format!("CREATE SCHEMA {name}")).execute(&mut c).unwrap();
        let url = with_param(&base, &format!("options=-csearch_path%3D{name}"));
        Some(Self { base, drop_sql: format!("DROP SCHEMA IF EXISTS {name} CASCADE"), url })
    }

    pub fn database() -> Option<Self> {
        let base = pg_base_url()?;
        let name = unique_name("confab_t");
        let mut c = PgConnection::establish(&base).expect("connect to CONFAB_TEST_DATABASE_URL");
        diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut c).unwrap();
        let (head, query) = base.split_once('?').map(|(h, q)| (h, Some(q))).unwrap_or((&base, None));
        let root = head.rsplit_once('/').map(|(r, _)| r).unwrap_or(head);
        let mut url = format!("{root}/{name}");
        if let Some(q) = query {
            url = format!("{url}?{q}");
        }
        Some(Self { base, drop_sql: format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"), url })
    }

    /// Drops now (the readiness test pulls the database out from under a running server).
    pub fn drop_now(&self) {
        let mut c = PgConnection::establish(&self.base).unwrap();
        diesel::sql_query(&self.drop_sql).execute(&mut c).unwrap();
    }
}

impl Drop for PgScope {
    fn drop(&mut self) {
        if let Ok(mut c) = PgConnection::establish(&self.base) {
            let _ = diesel::sql_query(&self.drop_sql).execute(&mut c);
        }
    }
}

pub struct TestApp {
    pub addr: String,
    pub port: u16,
    /// The dedicated `/metrics` listener's port (`CONFAB_METRICS_BIND`), when configured.
    pub metrics_port: Option<u16>,
    pub client: reqwest::Client,
    pub state: web::Data<AppState>,
    pub bootstrap: Option<Bootstrapped>,
    pub admin_email: String,
    pub admin_password: String,
    pub backend: Backend,
    pub config: Config,
    handle: ServerHandle,
    pub dir: std::sync::Arc<TempDir>,
    pub pg: Option<std::sync::Arc<PgScope>>,
}

pub const ADMIN_PASSWORD: &str = "admin-password-1";

impl TestApp {
    pub async fn spawn(backend: Backend) -> Option<Self> {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Option<Self> {
        let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(std::sync::Arc::new(PgScope::schema()?)),
        };
        let url = match &pg {
            Some(scope) => scope.url.clone(),
            None => format!("sqlite://{}", dir.path().join("confab.db").display()),
        };
        let mut config = Config::for_tests(dir.path().to_path_buf(), url);
        config.admin_password = Some(ADMIN_PASSWORD.to_owned().into());
        config.auth_rate_per_minute = 0;
        tweak(&mut config);
        Some(Self::start(backend, config, dir, pg).await)
    }

    /// Starts a server on an existing configuration (a second node, or a restart).
    pub async fn start(
        backend: Backend,
        config: Config,
        dir: std::sync::Arc<TempDir>,
        pg: Option<std::sync::Arc<PgScope>>,
    ) -> Self {
        init_logs();
        let (tx, rx) = mpsc::channel();
        let cfg = config.clone();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                match confab::build(cfg).await {
                    Ok(server) => {
                        let info = (
                            server.port,
                            server.metrics_port,
                            server.state.clone(),
                            server.bootstrap.clone(),
                            server.handle(),
                        );
                        tx.send(Ok(info)).unwrap();
                        let _ = server.run().await;
                    }
                    Err(e) => tx.send(Err(format!("{e:?}"))).unwrap(),
                }
            })
        });
        let (port, metrics_port, state, bootstrap, handle) =
            web::block(move || rx.recv_timeout(Duration::from_secs(60)))
                .await
                .unwrap()
                .expect("server thread answered")
                .expect("server started");
        let addr = format!("http://127.0.0.1:{port}");
        Self {
            addr,
            port,
            metrics_port,
            // Idle connections are dropped before the server's 5 s keep-alive would close them under us.
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .pool_idle_timeout(Duration::from_secs(2))
                .build()
                .unwrap(),
            state,
            bootstrap,
            admin_email: config.admin_email.clone(),
            admin_password: ADMIN_PASSWORD.to_owned(),
            backend,
            config,
            handle,
            dir,
            pg,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.addr, path)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{}", self.port, path)
    }

    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        into_json(req.send().await.unwrap()).await
    }

    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> (u16, Value) {
        let mut req = self.client.request(method, self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        into_json(req.send().await.unwrap()).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        self.send_json(reqwest::Method::POST, path, token, body).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        self.send_json(reqwest::Method::PUT, path, token, body).await
    }

    pub async fn patch(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        self.send_json(reqwest::Method::PATCH, path, token, body).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.client.delete(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        into_json(req.send().await.unwrap()).await
    }

    /// Logs in with the messaging-family form; returns the whole login body.
    pub async fn login(&self, email: &str, password: &str) -> Value {
        let (status, body) = self.post("/auth/login", None, &json!({"email": email, "password": password})).await;
        assert_eq!(status, 200, "login {email}: {body}");
        body
    }

    /// The bootstrap admin's access token.
    pub async fn admin_token(&self) -> String {
        self.login(&self.admin_email.clone(), ADMIN_PASSWORD).await["accessToken"].as_str().unwrap().to_owned()
    }

    /// Signs up a fresh company; returns (admin access token, login body).
    pub async fn new_company(&self, name: &str) -> (String, Value) {
        let email = format!("{}@{}.test", confab::core::crypto::random_hex_id(), name.to_lowercase().replace(' ', "-"));
        let (status, body) = self
            .post(
                "/auth/signup",
                None,
                &json!({"email": email, "password": "password-123", "firstName": "Ada", "lastName": name,
                        "phone": "+14155550100", "companyName": name}),
            )
            .await;
        assert_eq!(status, 201, "signup: {body}");
        self.verify_signup(&email).await;
        let login = self.login(&email, "password-123").await;
        (login["accessToken"].as_str().unwrap().to_owned(), login)
    }

    /// Confirms an open sign-up's e-mail with the token mailed to it (README "Security":
    /// the account is pending until then); returns the answer.
    pub async fn verify_signup(&self, email: &str) -> Value {
        let token = signup_token(self, email);
        let (status, body) = self.post("/auth/signup/verify", None, &json!({"token": token})).await;
        assert_eq!(status, 200, "verify sign-up of {email}: {body}");
        body
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // The stop command is sent synchronously; the server's own thread finishes the rest.
        drop(self.handle.stop(false));
    }
}

pub async fn into_json(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    (status, body)
}

/// Asserts the unified error body of CONTRACT §2 with the given status and code.
pub fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "status; body: {body}");
    assert_eq!(body["statusCode"], want_status, "statusCode in {body}");
    assert_eq!(body["code"], want_code, "code in {body}");
    assert!(body["error"].is_string() && body["message"].is_string(), "error/message in {body}");
}

/// A company with a sandbox channel whose webhook secret the test knows, an admin and an agent.
pub struct Company {
    pub admin: String,
    pub agent: String,
    pub agent_id: i64,
    pub company_id: i64,
    pub channel_id: i64,
    pub secret: String,
}

impl TestApp {
    /// The bootstrap company ("Default") with its sandbox channel, plus an invited agent.
    pub async fn default_company(&self) -> Company {
        let admin = self.admin_token().await;
        self.company_with(admin).await
    }

    /// A fresh company (signed up), with a sandbox channel and an invited agent.
    pub async fn other_company(&self, name: &str) -> Company {
        let (admin, _) = self.new_company(name).await;
        let (status, ch) = self
            .post(
                "/channel",
                Some(&admin),
                &json!({"provider": "sandbox", "phoneNumber": "+14155550123", "displayName": "Sandbox",
                        "webhookSecret": "placeholder-secret"}),
            )
            .await;
        assert_eq!(status, 201, "{ch}");
        self.company_with(admin).await
    }

    async fn company_with(&self, admin: String) -> Company {
        let (status, me) = self.get("/auth/me", Some(&admin)).await;
        assert_eq!(status, 200);
        let (_, channels) = self.get("/channel", Some(&admin)).await;
        let ch = channels.as_array().unwrap().iter().find(|c| c["provider"] == "sandbox").unwrap().clone();
        let secret = format!("secret-{}", confab::core::crypto::random_hex_id());
        let (status, body) = self
            .put(
                &format!("/channel/{}", ch["channelId"]),
                Some(&admin),
                &json!({"provider": "sandbox", "phoneNumber": ch["phoneNumber"], "displayName": ch["displayName"],
                        "webhookSecret": secret}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let email = format!("agent-{}@example.test", confab::core::crypto::random_hex_id());
        let (status, invite) =
            self.post("/agent/invite", Some(&admin), &json!({"email": email, "role": "agent"})).await;
        assert_eq!(status, 201, "{invite}");
        let (status, signup) = self
            .post(
                "/auth/signup",
                None,
                &json!({"email": email, "password": "agent-password", "firstName": "Grace", "lastName": "Hopper",
                        "phone": "+14155550199", "inviteToken": invite["inviteToken"]}),
            )
            .await;
        assert_eq!(status, 201, "{signup}");
        let agent = self.login(&email, "agent-password").await["accessToken"].as_str().unwrap().to_owned();
        Company {
            admin,
            agent,
            agent_id: signup["userId"].as_i64().unwrap(),
            company_id: me["companyId"].as_i64().unwrap(),
            channel_id: ch["channelId"].as_i64().unwrap(),
            secret,
        }
    }

    /// Posts a signed sandbox webhook (CONTRACT §6) and returns the response.
    pub async fn sandbox_webhook(&self, co: &Company, body: &Value) -> (u16, Value) {
        use hmac::Mac;
        let raw = serde_json::to_vec(body).unwrap();
        let mut mac = <hmac::SimpleHmac<sha2::Sha256> as Mac>::new_from_slice(co.secret.as_bytes()).unwrap();
        mac.update(&raw);
        let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let res = self
            .client
            .post(self.url("/webhooks/sandbox"))
            .header("Content-Type", "application/json")
            .header("X-Confab-Signature", sig)
            .body(raw)
            .send()
            .await
            .unwrap();
        into_json(res).await
    }

    /// A customer writes in through the sandbox; returns the conversation id.
    pub async fn customer_says(&self, co: &Company, from: &str, text: &str) -> i64 {
        let id = format!("sb-{}", confab::core::crypto::random_hex_id());
        let (status, body) = self
            .sandbox_webhook(
                co,
                &json!({"channelId": co.channel_id, "messages": [{"id": id, "from": from, "name": "Ada Lovelace", "text": text}]}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (_, list) = self.get("/conversation/conversation-page-list?limit=100", Some(&co.agent)).await;
        let digits: String = from.chars().filter(char::is_ascii_digit).collect();
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["user"]["phone"].as_str().unwrap_or("").ends_with(&digits))
            .unwrap_or_else(|| panic!("conversation for {from} in {list}"))["conversationId"]
            .as_i64()
            .unwrap()
    }

    /// A token for a customer (the storefront family mints these); for role checks.
    pub async fn customer_token(&self, company_id: i64, user_id: i64) -> String {
        let st = self.state.clone();
        let sid = st
            .db
            .write(move |c| {
                confab::core::auth::session::create(
                    c,
                    &confab::core::auth::session::NewSession {
                        user_id,
                        company_id,
                        kind: "api",
                        client_id: None,
                        application_id: None,
                        ip: "",
                        user_agent: "",
                        ttl: chrono::Duration::hours(1),
                    },
                )
            })
            .await
            .unwrap()
            .0;
        self.state.keys.sign(user_id, company_id, "customer", &sid).unwrap().0
    }

    /// Waits (bounded) until `check` passes on the message list of a conversation.
    pub async fn wait_for_message_status(
        &self,
        token: &str,
        conversation_id: i64,
        message_id: &str,
        status: &str,
    ) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let (_, page) =
                self.get(&format!("/message/message-page-list/{conversation_id}?limit=100"), Some(token)).await;
            if let Some(m) = page["data"].as_array().unwrap().iter().find(|m| m["messageId"] == message_id)
                && m["status"] == status
            {
                return m.clone();
            }
            assert!(std::time::Instant::now() < deadline, "message {message_id} never reached {status}: {page}");
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Moves every code's 30 s resend window into the past (the throttle is tested on its own).
pub async fn skip_resend_window(app: &TestApp) {
    use diesel::ExpressionMethods;
    app.state
        .db
        .write(|c| {
            use confab::core::db::schema::otp_challenges::dsl::*;
            diesel::update(otp_challenges)
                .set(resend_after.eq(confab::core::types::now() - chrono::Duration::seconds(1)))
                .execute(c)?;
            Ok(())
        })
        .await
        .unwrap();
}

/// Ends every brute-force lock now (as if its time had run out; locks last a minute or more).
pub async fn expire_lockouts(app: &TestApp) {
    use diesel::ExpressionMethods;
    app.state
        .db
        .write(|c| {
            use confab::core::db::schema::login_failures::dsl::*;
            diesel::update(login_failures)
                .set(locked_until.eq(confab::core::types::now() - chrono::Duration::seconds(1)))
                .execute(c)?;
            Ok(())
        })
        .await
        .unwrap();
}

/// A message the server wrote to its outbox (tests run without SMTP): the recipient and the
/// text, mail bodies decoded from their transfer encoding (lettre picks 7bit, quoted-printable
/// or base64 by content, so raw files must not be searched).
#[derive(Debug, Clone)]
pub struct Sent {
    pub to: String,
    pub subject: String,
    pub text: String,
}

/// Every outbox message of `kind` (`"mail"` or `"sms"`), oldest first.
pub fn outbox(app: &TestApp, kind: &str) -> Vec<Sent> {
    let dir = app.data_dir().join("outbox").join(kind);
    let mut paths: Vec<_> =
        std::fs::read_dir(&dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    paths.retain(|p: &PathBuf| !p.file_name().unwrap().to_string_lossy().starts_with('.'));
    paths.sort();
    paths
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .map(|raw| if kind == "mail" { parse_mail(&raw) } else { parse_sms(&raw) })
        .collect()
}

fn parse_mail(raw: &[u8]) -> Sent {
    use mailparse::MailHeaderMap;
    let mail = mailparse::parse_mail(raw).expect("an RFC 5322 message");
    Sent {
        to: mail.headers.get_first_value("To").unwrap_or_default(),
        subject: mail.headers.get_first_value("Subject").unwrap_or_default(),
        text: mail.get_body().expect("a decodable body"),
    }
}

fn parse_sms(raw: &[u8]) -> Sent {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    Sent { to: head.trim_start_matches("To: ").trim().to_owned(), subject: String::new(), text: body.to_owned() }
}

/// The token of the newest sign-up verification mail to `email` (sent before `POST
/// /auth/signup` answers).
pub fn signup_token(app: &TestApp, email: &str) -> String {
    let mail = outbox(app, "mail")
        .into_iter()
        .rev()
        .find(|m| m.to.contains(&email.to_lowercase()) && m.subject == "Confirm your e-mail address")
        .unwrap_or_else(|| panic!("no verification mail to {email}"));
    let at = mail.text.find("Token: ").expect("a token") + "Token: ".len();
    mail.text[at..].split_whitespace().next().unwrap().to_owned()
}

/// The newest outbox message of `kind` to `to`.
pub fn last_sent(app: &TestApp, kind: &str, to: &str) -> Option<Sent> {
    outbox(app, kind).into_iter().rev().find(|m| m.to.contains(to))
}

/// Log lines of this process that mention a probe marker (the server under test logs into the
/// test process's global subscriber; other tests' lines are not kept).
#[derive(Clone, Default)]
pub struct Captured(pub std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = String::from_utf8_lossy(buf);
        if line.contains("probe-") {
            self.0.lock().unwrap().push(line.into_owned());
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
/// Whether the INFO lines go to [`Captured`]: from the first [`captured_logs`] on.
static CAPTURING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The process's INFO log lines that mention a probe marker, from now on.
pub fn captured_logs() -> Captured {
    init_logs();
    CAPTURING.store(true, std::sync::atomic::Ordering::SeqCst);
    CAPTURED.get().cloned().unwrap_or_default()
}

/// The test process's one global subscriber, with two layers: the servers' errors (an internal
/// error's cause, a panicking handler) go to the output of the test whose server logged them
/// (its threads inherit the test's output capture, and `cargo test` prints a test's output only
/// when the test fails; a test that got a 500 showed the status alone), and, once a test asks
/// for them, INFO lines go to [`Captured`].
fn init_logs() {
    use tracing_subscriber::{Layer, filter, fmt, layer::SubscriberExt};
    CAPTURED.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        // Dynamic: a `filter_fn` decides each call site once, maybe before any test captures.
        let capturing = filter::dynamic_filter_fn(|meta, _| {
            CAPTURING.load(std::sync::atomic::Ordering::Relaxed) && *meta.level() <= tracing::Level::INFO
        });
        let capture = fmt::layer().with_ansi(false).with_writer(move || writer.clone()).with_filter(capturing);
        let errors = fmt::layer().with_ansi(false).with_test_writer().with_filter(filter::LevelFilter::ERROR);
        let subscriber = tracing_subscriber::registry().with(capture).with(errors);
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber in the tests");
        logs
    });
}
