//! confab under test: started from the workspace's built binary on a fresh SQLite file or a
//! fresh PostgreSQL database, and set up through its REST API only (admin login, sandbox
//! channel with a known webhook secret, invited agents, customers writing in).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, anyhow, bail};
use diesel::{Connection, RunQueryDsl, pg::PgConnection};
use hmac::{Mac, SimpleHmac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::server::{Proc, Scratch, Spawn, free_port};

pub const ADMIN_EMAIL: &str = "admin@localhost";
pub const ADMIN_PASSWORD: &str = "bench-admin-password";
pub const AGENT_PASSWORD: &str = "bench-agent-password";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite (WAL, synchronous=FULL)",
            Backend::Postgres => "PostgreSQL (synchronous_commit=on)",
        }
    }
}

/// A fresh PostgreSQL database, dropped with the value.
pub struct PgDatabase {
    base: String,
    name: String,
    pub url: String,
}

impl PgDatabase {
    pub fn create(base: &str) -> anyhow::Result<Self> {
        let name = format!("confab_bench_{}", &::confab::core::crypto::random_hex_id()[..12]);
        let mut c = PgConnection::establish(base).with_context(|| format!("connecting to {base}"))?;
        diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut c)?;
        let (head, query) = base.split_once('?').map_or((base, None), |(h, q)| (h, Some(q)));
        let root = head.rsplit_once('/').map_or(head, |(r, _)| r);
        let url = match query {
            Some(q) => format!("{root}/{name}?{q}"),
            None => format!("{root}/{name}"),
        };
        Ok(Self { base: base.to_owned(), name, url })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if let Ok(mut c) = PgConnection::establish(&self.base) {
            let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).execute(&mut c);
        }
    }
}

pub struct Confab {
    pub proc: Proc,
    pub base: String,
    pub http: reqwest::Client,
    pub backend: Backend,
    pub db_url: String,
    /// Path of the SQLite file (SQLite only).
    pub sqlite_path: Option<PathBuf>,
    _pg: Option<PgDatabase>,
    _dir: Scratch,
}

pub struct Options<'a> {
    pub binary: &'a Path,
    pub backend: Backend,
    pub pg_base: &'a str,
    pub cpus: Option<&'a str>,
    pub workers: usize,
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(256)
        .pool_idle_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("reqwest client")
}

impl Confab {
    pub async fn start(o: Options<'_>) -> anyhow::Result<Self> {
        let dir = Scratch::new("confab-bench")?;
        let (db_url, pg, sqlite_path) = match o.backend {
            Backend::Sqlite => {
                let path = dir.0.join("confab.db");
                (format!("sqlite://{}", path.display()), None, Some(path))
            }
            Backend::Postgres => {
                let base = o.pg_base.to_owned();
                let db = tokio::task::spawn_blocking(move || PgDatabase::create(&base)).await??;
                (db.url.clone(), Some(db), None)
            }
        };
        let port = free_port()?;
        let env = vec![
            ("CONFAB_BIND".into(), format!("127.0.0.1:{port}")),
            ("CONFAB_PUBLIC_URL".into(), format!("http://127.0.0.1:{port}")),
            ("CONFAB_DATA_DIR".into(), dir.0.display().to_string()),
            ("CONFAB_DATABASE_URL".into(), db_url.clone()),
            ("CONFAB_ADMIN_EMAIL".into(), ADMIN_EMAIL.into()),
            ("CONFAB_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()),
            ("CONFAB_AUTH_RATE_PER_MINUTE".into(), "0".into()),
            // The idle and fan-out scenarios open thousands of sockets over a few agents'
            // tokens: the per-user WebSocket cap (default 20) is turned off for the bench.
            ("CONFAB_WS_MAX_PER_USER".into(), "0".into()),
            ("CONFAB_WORKERS".into(), o.workers.to_string()),
            ("CONFAB_LOG".into(), "warn".into()),
            ("CONFAB_CONFIG".into(), dir.0.join("none.toml").display().to_string()),
        ];
        let mut proc = Spawn {
            name: "confab".into(),
            program: o.binary,
            args: vec!["serve".into()],
            env,
            cwd: Some(&dir.0),
            cpus: o.cpus,
            port,
            log: dir.0.join("server.log"),
        }
        .start()?;
        let http = http_client();
        proc.wait_ready(&http, Duration::from_secs(120)).await?;
        Ok(Self { base: proc.base_url(), proc, http, backend: o.backend, db_url, sqlite_path, _pg: pg, _dir: dir })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.proc.port)
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.with_context(|| path.to_owned())?;
        let status = res.status().as_u16();
        let text = res.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    async fn expect(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        want: u16,
    ) -> anyhow::Result<Value> {
        let (status, value) = self.call(method, path, token, body).await?;
        if status != want {
            bail!("{path}: expected {want}, got {status}: {value}");
        }
        Ok(value)
    }

    pub async fn login(&self, email: &str, password: &str) -> anyhow::Result<String> {
        let body = self
            .expect(
                reqwest::Method::POST,
                "/auth/login",
                None,
                Some(&json!({"email": email, "password": password})),
                200,
            )
            .await?;
        body["accessToken"].as_str().map(str::to_owned).ok_or_else(|| anyhow!("login without accessToken: {body}"))
    }

    /// Admin login, the sandbox channel with a known webhook secret, and `agents` invited agents
    /// (each with its own login).
    pub async fn setup(&self, agents: usize) -> anyhow::Result<Setup> {
        let admin = self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await?;
        let channels = self.expect(reqwest::Method::GET, "/channel", Some(&admin), None, 200).await?;
        let ch = channels
            .as_array()
            .and_then(|a| a.iter().find(|c| c["provider"] == "sandbox"))
            .cloned()
            .ok_or_else(|| anyhow!("no sandbox channel in {channels}"))?;
        let secret = format!("bench-{}", ::confab::core::crypto::random_hex_id());
        self.expect(
            reqwest::Method::PUT,
            &format!("/channel/{}", ch["channelId"]),
            Some(&admin),
            Some(&json!({"provider": "sandbox", "phoneNumber": ch["phoneNumber"], "displayName": ch["displayName"], "webhookSecret": secret})),
            200,
        )
        .await?;
        let mut agent_tokens = Vec::new();
        let mut agent_emails = Vec::new();
        for i in 0..agents {
            let email = format!("agent{i}-{}@bench.test", &::confab::core::crypto::random_hex_id()[..8]);
            let invite = self
                .expect(
                    reqwest::Method::POST,
                    "/agent/invite",
                    Some(&admin),
                    Some(&json!({"email": email, "role": "agent"})),
                    201,
                )
                .await?;
            self.expect(
                reqwest::Method::POST,
                "/auth/signup",
                None,
                Some(&json!({"email": email, "password": AGENT_PASSWORD, "firstName": "Bench", "lastName": format!("Agent {i}"),
                        "phone": format!("+1415666{:04}", i % 10_000), "inviteToken": invite["inviteToken"]})),
                201,
            )
            .await?;
            agent_tokens.push(self.login(&email, AGENT_PASSWORD).await?);
            agent_emails.push(email);
        }
        Ok(Setup {
            admin,
            channel_id: ch["channelId"].as_i64().ok_or_else(|| anyhow!("channelId in {ch}"))?,
            secret,
            agent_tokens,
            agent_emails,
        })
    }

    /// `n` customers write in (100 per signed webhook); returns their conversation ids, index
    /// `i` being the customer with phone [`phone`]`(i)`.
    pub async fn customers(&self, s: &Setup, n: usize) -> anyhow::Result<Vec<i64>> {
        for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
            let messages: Vec<Value> = chunk
                .iter()
                .map(|&i| json!({"id": format!("setup-{i}"), "from": phone(i), "name": format!("Customer {i}"), "text": "hello"}))
                .collect();
            let body = serde_json::to_vec(&json!({"channelId": s.channel_id, "messages": messages}))?;
            let (status, text) = self.webhook(s, body).await?;
            if status != 200 {
                bail!("setup webhook: {status} {text}");
            }
        }
        let mut by_phone = std::collections::HashMap::new();
        let agent = s.agent_tokens.first().unwrap_or(&s.admin);
        for page in 1..=n.div_ceil(100).max(1) as i64 + 1 {
            let list = self
                .expect(
                    reqwest::Method::GET,
                    &format!("/conversation/conversation-page-list?page={page}&limit=100"),
                    Some(agent),
                    None,
                    200,
                )
                .await?;
            let data = list["data"].as_array().cloned().unwrap_or_default();
            if data.is_empty() {
                break;
            }
            for c in data {
                if let (Some(p), Some(id)) = (c["user"]["phone"].as_str(), c["conversationId"].as_i64()) {
                    by_phone.insert(p.to_owned(), id);
                }
            }
        }
        (0..n)
            .map(|i| by_phone.get(&phone(i)).copied().ok_or_else(|| anyhow!("no conversation for {}", phone(i))))
            .collect()
    }

    /// Posts a signed sandbox webhook; returns the status and body.
    pub async fn webhook(&self, s: &Setup, body: Vec<u8>) -> anyhow::Result<(u16, String)> {
        let sig = sign(&s.secret, &body);
        let res = self
            .http
            .post(self.url("/webhooks/sandbox"))
            .header("Content-Type", "application/json")
            .header("X-Confab-Signature", sig)
            .body(body)
            .send()
            .await?;
        let status = res.status().as_u16();
        Ok((status, res.text().await?))
    }
}

pub struct Setup {
    pub admin: String,
    pub channel_id: i64,
    pub secret: String,
    pub agent_tokens: Vec<String>,
    pub agent_emails: Vec<String>,
}

/// Customer `i`'s phone number (E.164, unique per i up to 10^7).
pub fn phone(i: usize) -> String {
    format!("+1555{:07}", i % 10_000_000)
}

pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = <SimpleHmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// One sandbox webhook body carrying one message.
pub fn webhook_body(channel_id: i64, id: &str, from: &str, text: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"channelId": channel_id, "messages": [{"id": id, "from": from, "name": "Bench Customer", "text": text}]}))
        .expect("json")
}

/// Waits (bounded) for a blocking closure on the blocking pool.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> anyhow::Result<T> + Send + 'static) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await?
}
