//! Issue 24 item 1 (README "Reliability"): crash durability. The real `confab` binary runs as a
//! child process; a load generator posts signed WhatsApp webhooks (inbound messages and the
//! statuses of what was sent) and REST sends while the server is killed with SIGKILL at random
//! moments and restarted on the same database. Every request is retried until the server
//! acknowledges it, as providers and clients do, so a request cut off by a crash (committed or
//! not) comes back. Afterwards the database is read directly:
//!
//! - every acknowledged inbound message and REST send is stored exactly once, with exactly one
//!   `message.created` event;
//! - every conversation's events number 1..`last_seq` without a gap, and `message_count` is
//!   the number of its messages;
//! - every outbox job is done, exactly once, without an error; the mock provider (which counts
//!   the sends of each message by `biz_opaque_callback_data`) saw every message, and a message
//!   it saw twice was in flight when the server was killed (README: the provider call is
//!   at-least-once across a crash, at most one duplicate per kill and delivery lane, because
//!   each lane calls the provider one job at a time; one lane by default, four in a variant);
//! - every acknowledged status of a message's recorded provider id is reflected by its status,
//!   with at most one event per status.
//!
//! Short form (`cargo test`): 3 kills per backend. `CONFAB_SOAK=1`: 10 kills, longer load
//! between them; `CONFAB_CRASH_KILLS=N` sets the count.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use diesel::prelude::*;
use rand::Rng;
use serde_json::{Value, json};

use crate::{
    helpers::{ADMIN_PASSWORD, Backend, PgScope},
    webhooks::{ACCESS_TOKEN, APP_SECRET, Mock, PNID, channel_conversations, sign, wa_statuses, wa_text},
};

/// The delivery lease of the child servers: a job the killed process held is taken again
/// this long after its claim. The provider timeout stays below it (README "Providers").
const LEASE_SECS: u64 = 5;
const PROVIDER_TIMEOUT_SECS: u64 = 4;
/// Customers writing in (one conversation each).
const CUSTOMERS: usize = 6;
const INBOUND_TASKS: usize = 3;
const REST_TASKS: usize = 3;
/// How long one request may keep failing before the test gives up on it.
const ITEM_DEADLINE: Duration = Duration::from_secs(90);

pub(crate) fn soak() -> bool {
    std::env::var("CONFAB_SOAK").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn kills() -> usize {
    std::env::var("CONFAB_CRASH_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(if soak() { 10 } else { 3 })
}

/// The port of a child confab started with `CONFAB_BIND=127.0.0.1:0`, from the line it prints
/// once bound (`src/main.rs`).
pub(crate) fn listening_port(line: &str) -> Option<u16> {
    line.strip_prefix("confab: listening on 127.0.0.1:")?.trim().parse().ok()
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The mock provider on a thread and actix system of its own, so that the load generator
/// sharing the test's thread never delays its answers past the provider timeout.
fn mock_on_own_thread() -> (Mock, actix_web::rt::System) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            tx.send((Mock::start().await, actix_web::rt::System::current())).unwrap();
            std::future::pending::<()>().await;
        })
    });
    rx.recv_timeout(Duration::from_secs(30)).expect("mock provider started")
}

/// Starts the real binary on one database, again and again.
pub(crate) struct Launcher {
    pub(crate) dir: PathBuf,
    pub(crate) db_url: String,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) starts: usize,
}

/// A running `confab` child process; killed (SIGKILL) when dropped.
pub(crate) struct Proc {
    child: Child,
    pub(crate) base: String,
    pub(crate) pid: u32,
    log: PathBuf,
}

impl Proc {
    /// SIGKILL, no graceful shutdown: a crash.
    pub(crate) fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

impl Launcher {
    pub(crate) fn new(dir: PathBuf, db_url: String) -> Self {
        Self { dir, db_url, env: Vec::new(), starts: 0 }
    }

    /// Starts the server on a port the kernel picks (`CONFAB_BIND=127.0.0.1:0`), reads the port
    /// from the line the child prints once it is bound, and waits (bounded) until `/healthz`
    /// answers. A port chosen by the test and bound later by the child could be drawn by a
    /// concurrent test too, which then answered this test's `/healthz`.
    pub(crate) async fn start(&mut self, http: &reqwest::Client) -> Proc {
        self.starts += 1;
        let log = self.dir.join(format!("server-{}.log", self.starts));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_confab"));
        // The test's own settings (CONFAB_TEST_*, CONFAB_SOAK…) are not the server's.
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("CONFAB_")) {
            cmd.env_remove(k);
        }
        cmd.current_dir(&self.dir)
            .env("CONFAB_BIND", "127.0.0.1:0")
            .env("CONFAB_DATABASE_URL", &self.db_url)
            .env("CONFAB_DATA_DIR", self.dir.join("data"))
            .env("CONFAB_CONFIG", "/nonexistent/confab.toml")
            .env("CONFAB_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("CONFAB_AUTH_RATE_PER_MINUTE", "0")
            .env("CONFAB_ALLOW_PRIVATE_FETCH", "true")
            .env("CONFAB_WORKERS", "2")
            .env("CONFAB_DB_POOL_SIZE", "8")
            .env("CONFAB_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let child = cmd.spawn().expect("start the confab binary");
        let mut proc = Proc { pid: child.id(), child, base: String::new(), log };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(proc.child.try_wait().unwrap().is_none(), "confab exited at start:\n{}", proc.log_tail());
            assert!(Instant::now() < deadline, "confab not ready after 60 s:\n{}", proc.log_tail());
            if proc.base.is_empty() {
                let text = std::fs::read_to_string(&proc.log).unwrap_or_default();
                if let Some(port) = text.lines().find_map(listening_port) {
                    proc.base = format!("http://127.0.0.1:{port}");
                }
            }
            if !proc.base.is_empty() {
                let ok = http.get(format!("{}/healthz", proc.base)).timeout(Duration::from_secs(2)).send().await;
                if ok.is_ok_and(|r| r.status().is_success()) {
                    return proc;
                }
            }
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Where the load goes: the base URL of the server running now (a new port after each restart).
#[derive(Clone)]
struct Target(Arc<Mutex<String>>);

impl Target {
    fn base(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

/// What the load generator had acknowledged, and how often a request had to be repeated.
#[derive(Default)]
struct Acked {
    inbound: Vec<String>,
    /// (clientId, messageId)
    sends: Vec<(String, String)>,
    /// (provider id, status)
    statuses: Vec<(String, &'static str)>,
    /// Requests that failed (connection refused or cut, or a 5xx) and were repeated.
    repeated: usize,
    /// Requests that were repeated and then answered as already done (committed before the crash).
    already_done: usize,
}

/// Repeats `attempt` until it returns `Some`, on whichever server is running; counts repeats.
async fn until_acked<T, F, Fut>(target: &Target, acked: &Mutex<Acked>, what: &str, mut attempt: F) -> T
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + ITEM_DEADLINE;
    let mut failed = false;
    loop {
        match attempt(target.base()).await {
            Ok(v) => return v,
            Err(e) => {
                if !failed {
                    acked.lock().unwrap().repeated += 1;
                    failed = true;
                }
                assert!(Instant::now() < deadline, "{what}: not acknowledged in {ITEM_DEADLINE:?}: {e}");
                actix_web::rt::time::sleep(Duration::from_millis(30)).await;
            }
        }
    }
}

async fn whatsapp_webhook(http: &reqwest::Client, base: &str, body: &Value) -> Result<Value, String> {
    let raw = serde_json::to_vec(body).unwrap();
    let res = http
        .post(format!("{base}/webhooks/whatsapp"))
        .header("Content-Type", "application/json")
        .header("X-Hub-Signature-256", sign(APP_SECRET, &raw))
        .body(raw)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let body: Value = res.json().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("{status} {body}"));
    }
    Ok(body)
}

fn phone(k: usize) -> String {
    format!("1415555012{k}")
}

/// Inbound customer messages, one at a time, each repeated until acknowledged.
async fn inbound_load(
    http: reqwest::Client,
    target: Target,
    acked: Arc<Mutex<Acked>>,
    stop: Arc<AtomicBool>,
    task: usize,
) {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let id = format!("wamid.crash-{task}-{n}");
        let body = wa_text(PNID, &phone((task + n) % CUSTOMERS), &id, &format!("customer message {id}"));
        let mut tries = 0;
        let answer = until_acked(&target, &acked, &id, |base| {
            tries += 1;
            let (http, body) = (http.clone(), body.clone());
            async move { whatsapp_webhook(&http, &base, &body).await }
        })
        .await;
        assert_eq!(
            answer["received"].as_u64().unwrap_or(0) + answer["duplicates"].as_u64().unwrap_or(0),
            1,
            "{answer}"
        );
        let mut a = acked.lock().unwrap();
        if tries > 1 && answer["duplicates"] == 1 {
            a.already_done += 1;
        }
        a.inbound.push(id);
        n += 1;
    }
}

/// Agents' REST sends with a `clientId`, each repeated until acknowledged (201, or 200 when an
/// earlier attempt had already been committed).
async fn rest_load(
    http: reqwest::Client,
    target: Target,
    acked: Arc<Mutex<Acked>>,
    stop: Arc<AtomicBool>,
    (task, token, conversations): (usize, String, Arc<Vec<i64>>),
) {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let client_id = format!("crash-{task}-{n}");
        let body = json!({"conversationId": conversations[(task + n) % conversations.len()], "clientId": client_id,
                          "text": format!("agent reply {client_id}")});
        let (status, message_id) = until_acked(&target, &acked, &client_id, |base| {
            let (http, body, token) = (http.clone(), body.clone(), token.clone());
            async move {
                let res = http
                    .post(format!("{base}/message"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = res.status().as_u16();
                let v: Value = res.json().await.map_err(|e| e.to_string())?;
                match (status, v["messageId"].as_str()) {
                    (200 | 201, Some(id)) if v["clientId"] == body["clientId"] => Ok((status, id.to_owned())),
                    _ => Err(format!("{status} {v}")),
                }
            }
        })
        .await;
        let mut a = acked.lock().unwrap();
        if status == 200 {
            a.already_done += 1;
        }
        a.sends.push((client_id, message_id));
        n += 1;
    }
}

/// For every send the mock provider answered, WhatsApp's `delivered` then `read` callbacks,
/// each repeated until acknowledged; runs until `stop` and nothing is left to report.
async fn status_load(
    http: reqwest::Client,
    target: Target,
    acked: Arc<Mutex<Acked>>,
    stop: Arc<AtomicBool>,
    mock: Mock,
) {
    let mut next = 0;
    loop {
        let seen = mock.seen();
        if next >= seen.len() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        for s in &seen[next..] {
            let Some(wamid) = s.wamid.clone().filter(|_| s.method == "POST" && s.path.ends_with("/messages")) else {
                continue;
            };
            for status in ["delivered", "read"] {
                let body = wa_statuses(PNID, &[(&wamid, status)]);
                until_acked(&target, &acked, &wamid, |base| {
                    let (http, body) = (http.clone(), body.clone());
                    async move { whatsapp_webhook(&http, &base, &body).await }
                })
                .await;
                acked.lock().unwrap().statuses.push((wamid.clone(), status));
            }
        }
        next = seen.len();
    }
}

/// A message as the checks read it: (id, conversation, direction, provider id, client id, status).
type MessageRow = (String, i64, String, Option<String>, Option<String>, String);

/// The rows the checks read, straight from the database.
#[derive(Default)]
struct Stored {
    messages: Vec<MessageRow>,
    /// (conversation, seq, kind, payload)
    events: Vec<(i64, i64, String, String)>,
    /// (id, last_seq, message_count)
    conversations: Vec<(i64, i64, i64)>,
    /// (kind, ref id, done, last error)
    outbox: Vec<(String, String, bool, Option<String>)>,
    /// (provider id, status)
    pending_statuses: Vec<(String, String)>,
}

async fn read_stored(db_url: &str, channel_id: i64) -> Stored {
    use confab::core::db::schema::*;
    let pool = confab::core::db::Pool::connect(db_url, 1).unwrap();
    pool.run(move |c| {
        let convs: Vec<(i64, i64, i64)> = conversations::table
            .filter(conversations::channel_id.eq(channel_id))
            .select((conversations::id, conversations::last_seq, conversations::message_count))
            .load(c)?;
        let ids: Vec<i64> = convs.iter().map(|c| c.0).collect();
        Ok(Stored {
            messages: messages::table
                .filter(messages::channel_id.eq(channel_id))
                .select((
                    messages::id,
                    messages::conversation_id,
                    messages::direction,
                    messages::provider_message_id,
                    messages::client_id,
                    messages::status,
                ))
                .load(c)?,
            events: events::table
                .filter(events::conversation_id.eq_any(&ids))
                .select((events::conversation_id, events::seq, events::kind, events::payload))
                .load(c)?,
            conversations: convs,
            outbox: outbox::table
                .select((outbox::kind, outbox::ref_id, outbox::done_at.is_not_null(), outbox::last_error))
                .load(c)?,
            pending_statuses: pending_statuses::table
                .filter(pending_statuses::channel_id.eq(channel_id))
                .select((pending_statuses::provider_message_id, pending_statuses::status))
                .load(c)?,
        })
    })
    .await
    .unwrap()
}

fn rank(status: &str) -> u8 {
    match status.to_ascii_uppercase().as_str() {
        "PENDING" => 0,
        "SENT" => 1,
        "DELIVERED" => 2,
        "READ" => 3,
        _ => 9,
    }
}

/// `lanes`: the delivery worker's (`CONFAB_DELIVERY_LANES`); each lane may repeat one send per kill.
async fn scenario(backend: Backend, lanes: usize) {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let pg = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => match PgScope::schema() {
            Some(scope) => Some(scope),
            None => return eprintln!("skipped: CONFAB_TEST_DATABASE_URL is not set"),
        },
    };
    let db_url = match &pg {
        Some(scope) => scope.url.clone(),
        None => format!("sqlite://{}", dir.path().join("confab.db").display()),
    };
    let (mock, mock_system) = mock_on_own_thread();
    let mut launcher = Launcher::new(dir.path().to_path_buf(), db_url.clone());
    launcher.env = vec![
        ("CONFAB_WHATSAPP_API_URL".into(), mock.base.clone()),
        ("CONFAB_OUTBOX_LEASE_SECS".into(), LEASE_SECS.to_string()),
        ("CONFAB_PROVIDER_TIMEOUT_SECS".into(), PROVIDER_TIMEOUT_SECS.to_string()),
        ("CONFAB_OUTBOX_BACKOFF_MS".into(), "10".into()),
        ("CONFAB_DELIVERY_LANES".into(), lanes.to_string()),
    ];
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .connect_timeout(Duration::from_secs(2))
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut server = launcher.start(&http).await;
    let target = Target(Arc::new(Mutex::new(server.base.clone())));

    // A WhatsApp channel on the mock, and one conversation per customer.
    let login: Value = http
        .post(format!("{}/auth/login", server.base))
        .json(&json!({"email": "admin@localhost", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["accessToken"].as_str().expect("admin login").to_owned();
    let ch: Value = http
        .post(format!("{}/channel", server.base))
        .bearer_auth(&token)
        .json(&json!({"provider": "whatsapp", "phoneNumber": "+14155550100", "phoneNumberId": PNID,
                      "displayName": "WhatsApp", "accessToken": ACCESS_TOKEN, "appSecret": APP_SECRET,
                      "verifyToken": "verify-me"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let channel_id = ch["channelId"].as_i64().unwrap_or_else(|| panic!("channel: {ch}"));
    for k in 0..CUSTOMERS {
        let id = format!("wamid.open-{k}");
        let answer = whatsapp_webhook(&http, &server.base, &wa_text(PNID, &phone(k), &id, "hello")).await.unwrap();
        assert_eq!(answer["received"], 1, "{answer}");
    }
    let list: Value = http
        .get(format!("{}/conversation/conversation-page-list?limit=100", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let conversations = channel_conversations(&list, channel_id);
    assert_eq!(conversations.len(), CUSTOMERS, "{list}");
    let conversations = Arc::new(conversations);

    // The load, then the kills.
    let acked = Arc::new(Mutex::new(Acked::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let stop_statuses = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for task in 0..INBOUND_TASKS {
        load.push(actix_web::rt::spawn(inbound_load(http.clone(), target.clone(), acked.clone(), stop.clone(), task)));
    }
    for task in 0..REST_TASKS {
        let job = (task, token.clone(), conversations.clone());
        load.push(actix_web::rt::spawn(rest_load(http.clone(), target.clone(), acked.clone(), stop.clone(), job)));
    }
    let statuses = actix_web::rt::spawn(status_load(
        http.clone(),
        target.clone(),
        acked.clone(),
        stop_statuses.clone(),
        mock.clone(),
    ));
    let kills = kills();
    let mut kill_times = Vec::new();
    let restarts = AtomicUsize::new(0);
    for _ in 0..kills {
        let pause =
            if soak() { rand::thread_rng().gen_range(500..4000) } else { rand::thread_rng().gen_range(300..1500) };
        actix_web::rt::time::sleep(Duration::from_millis(pause)).await;
        server.kill9();
        kill_times.push(Instant::now());
        server = launcher.start(&http).await;
        restarts.fetch_add(1, Ordering::Relaxed);
        *target.0.lock().unwrap() = server.base.clone();
    }
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let load_secs = started.elapsed().as_secs_f64();

    // Every job the dead processes held comes back after its lease: wait (bounded) for the
    // outbox to drain, then for the statuses of the last sends.
    let drain_deadline = Instant::now() + Duration::from_secs(60 + LEASE_SECS);
    loop {
        let undone = read_stored(&db_url, channel_id).await.outbox.iter().filter(|j| !j.2).count();
        if undone == 0 {
            break;
        }
        assert!(Instant::now() < drain_deadline, "{undone} outbox jobs still not done:\n{}", server.log_tail());
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    }
    stop_statuses.store(true, Ordering::Relaxed);
    statuses.await.unwrap();
    server.kill9();
    let stored = read_stored(&db_url, channel_id).await;
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let sends_seen: Vec<_> =
        mock.seen().into_iter().filter(|s| s.method == "POST" && s.path.ends_with("/messages")).collect();
    mock_system.stop();

    // ---- the checks ----
    let mut losses = Vec::new();
    let mut by_provider_id: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut by_client_id: HashMap<&str, Vec<&str>> = HashMap::new();
    for m in &stored.messages {
        if let Some(p) = &m.3 {
            by_provider_id.entry(p).or_default().push(&m.0);
        }
        if let Some(c) = &m.4 {
            by_client_id.entry(c).or_default().push(&m.0);
        }
    }
    for id in &acked.inbound {
        match by_provider_id.get(id.as_str()).map(Vec::len) {
            Some(1) => {}
            n => losses.push(format!("inbound {id} stored {} times", n.unwrap_or(0))),
        }
    }
    for (client_id, message_id) in &acked.sends {
        match by_client_id.get(client_id.as_str()) {
            Some(ids) if ids.len() == 1 && ids[0] == message_id => {}
            other => losses.push(format!("send {client_id} ({message_id}) stored as {other:?}")),
        }
    }
    // Events: gap-free per conversation, one message.created per message.
    let mut seqs: HashMap<i64, Vec<i64>> = HashMap::new();
    let mut created: HashMap<String, usize> = HashMap::new();
    // (message, STATUS) → message.updated events showing it
    let mut status_events: HashMap<(String, String), usize> = HashMap::new();
    for (conv, seq, kind, payload) in &stored.events {
        seqs.entry(*conv).or_default().push(*seq);
        let v: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
        let id = v["messageId"].as_str().unwrap_or_default().to_owned();
        match kind.as_str() {
            "message.created" => *created.entry(id).or_default() += 1,
            "message.updated" => {
                *status_events.entry((id, v["status"].as_str().unwrap_or_default().to_owned())).or_default() += 1
            }
            _ => {}
        }
    }
    let mut gaps = 0;
    for (id, last_seq, message_count) in &stored.conversations {
        let mut s = seqs.remove(id).unwrap_or_default();
        s.sort_unstable();
        if s != (1..=*last_seq).collect::<Vec<_>>() {
            gaps += 1;
            losses.push(format!("conversation {id}: last_seq {last_seq}, seqs {s:?}"));
        }
        let n = stored.messages.iter().filter(|m| m.1 == *id).count() as i64;
        if n != *message_count {
            losses.push(format!("conversation {id}: message_count {message_count}, {n} messages"));
        }
    }
    for m in &stored.messages {
        if created.get(&m.0).copied().unwrap_or(0) != 1 {
            losses.push(format!("message {}: {:?} message.created events", m.0, created.get(&m.0)));
        }
    }
    // The outbox: each send job done exactly once, without an error; every job done.
    let mut jobs: HashMap<&str, usize> = HashMap::new();
    for (kind, ref_id, done, error) in &stored.outbox {
        if !done || error.is_some() {
            losses.push(format!("outbox {kind} {ref_id}: done {done}, error {error:?}"));
        }
        if kind == "send" {
            *jobs.entry(ref_id).or_default() += 1;
        }
    }
    // The provider: every send seen, duplicates only across a kill, the last send's id recorded.
    let mut provider_calls: HashMap<String, Vec<(Instant, String)>> = HashMap::new();
    for s in &sends_seen {
        let id = s.json()["biz_opaque_callback_data"].as_str().unwrap_or_default().to_owned();
        provider_calls.entry(id).or_default().push((s.at, s.wamid.clone().unwrap_or_default()));
    }
    let mut duplicate_sends = 0;
    let mut superseded: HashSet<String> = HashSet::new();
    let outbound: Vec<_> = stored.messages.iter().filter(|m| m.2 == "SENT").collect();
    for m in &outbound {
        if jobs.get(m.0.as_str()).copied().unwrap_or(0) != 1 {
            losses.push(format!("message {}: {:?} send jobs", m.0, jobs.get(m.0.as_str())));
        }
        let calls = provider_calls.get(&m.0).cloned().unwrap_or_default();
        let Some((last_at, last_wamid)) = calls.last().cloned() else {
            losses.push(format!("message {} never reached the provider", m.0));
            continue;
        };
        if m.3.as_deref() != Some(last_wamid.as_str()) {
            losses.push(format!("message {}: provider id {:?}, last send answered {last_wamid}", m.0, m.3));
        }
        if calls.len() > 1 {
            duplicate_sends += calls.len() - 1;
            let first_at = calls[0].0;
            if !kill_times.iter().any(|k| *k >= first_at && *k <= last_at) {
                losses.push(format!("message {}: sent {} times without a kill in between", m.0, calls.len()));
            }
            superseded.extend(calls[..calls.len() - 1].iter().map(|c| c.1.clone()));
        }
        // Statuses: the one SENT, and each acknowledged status of the recorded id at most once.
        for status in ["SENT", "DELIVERED", "READ"] {
            let n = status_events.get(&(m.0.clone(), status.to_owned())).copied().unwrap_or(0);
            if n > 1 || (status == "SENT" && n != 1) {
                losses.push(format!("message {}: {n} events showing {status}", m.0));
            }
        }
    }
    if duplicate_sends > kills * lanes {
        losses.push(format!("{duplicate_sends} duplicate provider calls for {kills} kills with {lanes} lane(s)"));
    }
    let status_of: HashMap<&str, &str> =
        stored.messages.iter().filter_map(|m| Some((m.3.as_deref()?, m.5.as_str()))).collect();
    let mut superseded_statuses = 0;
    for (wamid, status) in &acked.statuses {
        match status_of.get(wamid.as_str()) {
            Some(now) if rank(now) >= rank(status) => {}
            Some(now) => losses.push(format!("{wamid}: {status} acknowledged, message is {now}")),
            None if superseded.contains(wamid) => superseded_statuses += 1,
            None => losses.push(format!("{wamid}: {status} acknowledged for an unknown send")),
        }
    }
    for (wamid, status) in &stored.pending_statuses {
        if !superseded.contains(wamid) {
            losses.push(format!("pending status {status} for {wamid}, which is no superseded send"));
        }
    }
    for (wamid, _) in &acked.statuses {
        if let Some(now) = status_of.get(wamid.as_str())
            && *now != "READ"
        {
            losses.push(format!("{wamid}: read acknowledged, message is {now}"));
        }
    }

    println!(
        "crash durability ({backend:?}): {kills} kills (SIGKILL at random moments), {} restarts, {:.1} s of load; \
         acknowledged: {} inbound webhooks, {} REST sends, {} status webhooks; {} requests repeated after a \
         failure, {} of them already committed before the crash; outbox: {} send jobs done once each, {} \
         provider calls ({duplicate_sends} duplicates across a kill, {superseded_statuses} statuses of a \
         superseded send kept pending); {} conversations, {} events, seq gaps {gaps}; losses and duplicates {} \
         ({:.1} s in all)",
        restarts.load(Ordering::Relaxed),
        load_secs,
        acked.inbound.len(),
        acked.sends.len(),
        acked.statuses.len(),
        acked.repeated,
        acked.already_done,
        outbound.len(),
        sends_seen.len(),
        stored.conversations.len(),
        stored.events.len(),
        losses.len(),
        started.elapsed().as_secs_f64(),
    );
    assert!(losses.is_empty(), "{} violations:\n{}", losses.len(), losses.join("\n"));
    assert!(!acked.inbound.is_empty() && !acked.sends.is_empty(), "the load acknowledged nothing");
    drop(pg);
}

mod crash_durability {
    use super::*;

    #[actix_web::test]
    async fn sqlite() {
        scenario(Backend::Sqlite, 1).await;
    }

    #[actix_web::test]
    async fn postgres() {
        scenario(Backend::Postgres, 1).await;
    }

    /// Four delivery lanes: nothing lost, each conversation in order (seq), and at most one
    /// repeated send per lane per kill.
    #[actix_web::test]
    async fn sqlite_four_lanes() {
        scenario(Backend::Sqlite, 4).await;
    }
}
