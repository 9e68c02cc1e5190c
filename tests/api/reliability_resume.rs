//! Issue 24 item 2 (README "Reliability"): resume under load. WebSocket clients connect,
//! subscribe to a few conversations (resuming with `afterSeq` = the last seq they received),
//! drop the connection after a random time and reconnect, again and again, while signed sandbox
//! webhooks bring customer messages at a steady rate. Every client checks each event it gets
//! against the last seq of its conversation: the next one is a step forward, anything else is a
//! duplicate (≤ last) or a gap (> last + 1). When the load stops, the clients stay connected
//! (no more reconnects, so the tail must arrive live) until each has the conversation's
//! `last_seq` from the database. Asserted: every client got exactly 1..N of every conversation
//! it follows, no duplicate, no gap, no error frame; every acknowledged message is stored once.
//!
//! Two scenarios: one node on SQLite, and two nodes on one PostgreSQL schema and a private
//! Redis (`redis-server` started by the test on its own port, never the machine's 6379) that
//! is killed and restarted in the middle of the load, clients and webhooks spread over both
//! nodes. Short form (`cargo test`): 40 clients, 200 messages/s, 10 s. `CONFAB_SOAK=1`: 200
//! clients, 1,000 messages/s, 60 s (`CONFAB_RESUME_CLIENTS`, `CONFAB_RESUME_RATE`,
//! `CONFAB_RESUME_SECS` set each).

use std::{
    collections::HashMap,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

use crate::{
    helpers::{Backend, Company, TestApp, pg_base_url},
    reliability_crash::{free_port, soak},
};

struct Scale {
    clients: usize,
    /// Customer messages per second, over all nodes.
    rate: u64,
    secs: u64,
    conversations: usize,
    /// Conversations each client follows.
    follows: usize,
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn scale() -> Scale {
    let long = soak();
    Scale {
        clients: env_or("CONFAB_RESUME_CLIENTS", if long { 200 } else { 40 }) as usize,
        rate: env_or("CONFAB_RESUME_RATE", if long { 1000 } else { 200 }),
        secs: env_or("CONFAB_RESUME_SECS", if long { 60 } else { 10 }),
        conversations: if long { 40 } else { 12 },
        follows: 3,
    }
}

/// A private `redis-server` on a port of its own, killed when dropped.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    fn start() -> Self {
        let mut r = Self { port: free_port(), child: None };
        r.restart();
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// (Re)starts the server on the same port and waits (bounded) until it answers.
    fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) on PATH");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                let mut buf = [0u8; 16];
                if s.write_all(b"PING\r\n").is_ok() && s.read(&mut buf).is_ok_and(|n| buf[..n].starts_with(b"+PONG")) {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start on port {}", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What one client saw, over all its connections.
#[derive(Default)]
struct Seen {
    /// conversation → last seq received in order
    last: HashMap<i64, i64>,
    events: u64,
    duplicates: u64,
    gaps: u64,
    errors: Vec<String>,
    connections: u64,
    /// Connection attempts that failed (retried).
    refused: u64,
}

impl Seen {
    fn event(&mut self, conversation_id: i64, seq: i64) {
        let last = self.last.entry(conversation_id).or_insert(0);
        if seq <= *last {
            self.duplicates += 1;
        } else {
            if seq > *last + 1 {
                self.gaps += 1;
            }
            *last = seq;
            self.events += 1;
        }
    }
}

/// The phase every client is in.
struct Shared {
    /// Set when the load is over: no more reconnects.
    settle: AtomicBool,
    /// The conversations' final `last_seq`, once the load is over.
    targets: Mutex<Option<HashMap<i64, i64>>>,
}

/// One client: connects to a random node, subscribes with `afterSeq`, reads for a random
/// lifetime, drops the connection, and again; after `settle`, reads until it has `targets`.
async fn client(nodes: Arc<Vec<String>>, token: String, follows: Vec<i64>, shared: Arc<Shared>) -> Seen {
    let mut seen = Seen::default();
    for c in &follows {
        seen.last.insert(*c, 0);
    }
    // Set once the load is over: the tail must arrive within it.
    let mut deadline: Option<Instant> = None;
    loop {
        let url = nodes[rand::thread_rng().gen_range(0..nodes.len())].clone();
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert("Authorization", format!("Bearer {token}").parse().unwrap());
        let mut ws = match tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(req)).await {
            Ok(Ok((ws, _))) => ws,
            other => {
                seen.refused += 1;
                assert!(seen.refused < 200, "client cannot connect: {other:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        seen.connections += 1;
        for c in &follows {
            let frame = json!({"type": "subscribe", "conversationId": c, "afterSeq": seen.last[c]});
            if ws.send(Message::Text(frame.to_string())).await.is_err() {
                break;
            }
        }
        let lifetime = Duration::from_millis(rand::thread_rng().gen_range(200..1500));
        let until = Instant::now() + lifetime;
        loop {
            let settled = shared.settle.load(Ordering::Relaxed);
            if settled {
                let done = shared
                    .targets
                    .lock()
                    .unwrap()
                    .as_ref()
                    .is_some_and(|t| follows.iter().all(|c| seen.last[c] >= t[c]));
                if done {
                    let _ = ws.close(None).await;
                    return seen;
                }
                let deadline = *deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(60));
                assert!(
                    Instant::now() < deadline,
                    "client stuck 60 s after the load at {:?} of {:?}",
                    seen.last,
                    shared.targets.lock().unwrap()
                );
            } else if Instant::now() >= until {
                break;
            }
            let wait =
                if settled { Duration::from_millis(200) } else { until.saturating_duration_since(Instant::now()) };
            match tokio::time::timeout(wait, ws.next()).await {
                Err(_) => continue,
                Ok(Some(Ok(Message::Text(t)))) => {
                    let f: Value = serde_json::from_str(&t).unwrap();
                    match f["type"].as_str() {
                        Some("event") => {
                            if let (Some(c), Some(seq)) = (f["conversationId"].as_i64(), f["seq"].as_i64()) {
                                seen.event(c, seq);
                            }
                        }
                        Some("subscribed" | "pong") => {}
                        _ => seen.errors.push(t.to_string()),
                    }
                }
                Ok(Some(Ok(_))) => {}
                // Closed by the server (never expected here): reconnect and resume.
                Ok(Some(Err(e))) => {
                    seen.errors.push(format!("connection error: {e}"));
                    break;
                }
                Ok(None) => {
                    seen.errors.push("connection closed by the server".into());
                    break;
                }
            }
        }
        // Half the time a clean close, half the time the socket is just dropped.
        if rand::thread_rng().gen_bool(0.5) {
            let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
        }
        drop(ws);
    }
}

/// Posts signed sandbox webhooks to the nodes in turn, each carrying `batch` customer messages
/// from random customers, at `rate` messages per second until `secs` have passed. Open loop:
/// each webhook leaves at its own tick of a 10 ms clock, whether or not the earlier ones were
/// answered (at most `MAX_IN_FLIGHT` at once per task), so a slow answer does not lower the
/// offered rate. A failed request (the server answers, or the connection fails) is repeated:
/// the ids make it idempotent. Returns (messages acknowledged, webhooks, repeats).
async fn webhook_load(
    apps: Arc<Vec<(String, reqwest::Client)>>,
    co: Arc<Company>,
    phones: Arc<Vec<String>>,
    rate: u64,
    secs: u64,
    task: u64,
    tasks: u64,
) -> (u64, u64, u64) {
    const MAX_IN_FLIGHT: usize = 64;
    let batch = (rate / 100).max(1);
    // Each task sends every `tasks`-th tick of a 10 ms clock.
    let tick = Duration::from_millis(10 * tasks);
    let mut next = Instant::now() + Duration::from_millis(10 * task);
    let end = Instant::now() + Duration::from_secs(secs);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut sends = Vec::new();
    let mut n = 0u64;
    while Instant::now() < end {
        tokio::time::sleep_until(next.into()).await;
        next += tick;
        let messages: Vec<Value> = (0..batch)
            .map(|i| {
                let from = &phones[rand::thread_rng().gen_range(0..phones.len())];
                json!({"id": format!("resume-{task}-{n}-{i}"), "from": from, "name": "Ada Lovelace",
                       "text": format!("message {task}-{n}-{i}")})
            })
            .collect();
        let raw = serde_json::to_vec(&json!({"channelId": co.channel_id, "messages": messages})).unwrap();
        let permit = in_flight.clone().acquire_owned().await.unwrap();
        sends.push(tokio::spawn(deliver(apps.clone(), co.clone(), raw, batch, n, permit)));
        n += 1;
    }
    let (mut acked, mut repeats) = (0, 0);
    for s in sends {
        let r = s.await.unwrap();
        acked += batch;
        repeats += r;
    }
    (acked, n, repeats)
}

/// Posts one signed webhook of `batch` messages until a node acknowledges all of them, starting
/// with node `n` and moving to the next on each failure. Returns the number of repeats.
async fn deliver(
    apps: Arc<Vec<(String, reqwest::Client)>>,
    co: Arc<Company>,
    raw: Vec<u8>,
    batch: u64,
    n: u64,
    _permit: tokio::sync::OwnedSemaphorePermit,
) -> u64 {
    use hmac::Mac;
    let mut mac = <hmac::SimpleHmac<sha2::Sha256> as Mac>::new_from_slice(co.secret.as_bytes()).unwrap();
    mac.update(&raw);
    let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let mut attempt = 0;
    loop {
        let (base, http) = &apps[((n + attempt) % apps.len() as u64) as usize];
        let res = http
            .post(format!("{base}/webhooks/sandbox"))
            .header("Content-Type", "application/json")
            .header("X-Confab-Signature", &sig)
            .body(raw.clone())
            .send()
            .await;
        let answer = match res {
            Ok(r) if r.status() == 200 => r.json::<Value>().await.ok(),
            _ => None,
        };
        if let Some(v) = answer {
            let got = v["received"].as_u64().unwrap_or(0) + v["duplicates"].as_u64().unwrap_or(0);
            assert_eq!(got, batch, "{v}");
            return attempt;
        }
        attempt += 1;
        assert!(attempt < 100, "webhook never acknowledged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn last_seqs(app: &TestApp, ids: Vec<i64>) -> (HashMap<i64, i64>, Vec<String>) {
    app.state
        .db
        .run(move |c| {
            use confab::core::db::schema::{conversations, events};
            use diesel::prelude::*;
            let rows: Vec<(i64, i64)> = conversations::table
                .filter(conversations::id.eq_any(&ids))
                .select((conversations::id, conversations::last_seq))
                .load(c)?;
            let mut problems = Vec::new();
            for (id, last) in &rows {
                let mut seqs: Vec<i64> =
                    events::table.filter(events::conversation_id.eq(id)).select(events::seq).load(c)?;
                seqs.sort_unstable();
                if seqs != (1..=*last).collect::<Vec<_>>() {
                    problems.push(format!("conversation {id}: stored seqs are not 1..{last}"));
                }
            }
            Ok((rows.into_iter().collect(), problems))
        })
        .await
        .unwrap()
}

/// (messages stored, distinct provider ids) of the test's customer messages.
async fn stored_messages(app: &TestApp, channel_id: i64) -> (usize, usize) {
    let ids: Vec<String> = app
        .state
        .db
        .run(move |c| {
            use confab::core::db::schema::messages;
            use diesel::prelude::*;
            Ok(messages::table
                .filter(messages::channel_id.eq(channel_id).and(messages::provider_message_id.like("resume-%")))
                .select(messages::provider_message_id.assume_not_null())
                .load::<String>(c)?)
        })
        .await
        .unwrap();
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    (ids.len(), distinct.len())
}

async fn scenario(nodes: Vec<TestApp>, mut redis: Option<PrivateRedis>, label: &str) {
    let started = Instant::now();
    let s = scale();
    let a = &nodes[0];
    let co = Arc::new(a.default_company().await);
    // The customers write in once, so their conversations exist before the clients follow them.
    let phones: Vec<String> = (0..s.conversations).map(|k| format!("+1415555{:04}", 3000 + k)).collect();
    let opening: Vec<Value> = phones
        .iter()
        .enumerate()
        .map(|(k, p)| json!({"id": format!("resume-open-{k}"), "from": p, "name": "Ada Lovelace", "text": "hello"}))
        .collect();
    let (status, body) = a.sandbox_webhook(&co, &json!({"channelId": co.channel_id, "messages": opening})).await;
    assert_eq!(status, 200, "{body}");
    let (_, list) = a.get("/conversation/conversation-page-list?limit=100", Some(&co.agent)).await;
    let conversations: Vec<i64> =
        list["data"].as_array().unwrap().iter().map(|c| c["conversationId"].as_i64().unwrap()).collect();
    assert_eq!(conversations.len(), s.conversations, "{list}");

    let shared = Arc::new(Shared { settle: AtomicBool::new(false), targets: Mutex::new(None) });
    let ws_urls = Arc::new(nodes.iter().map(|n| n.ws_url("/ws")).collect::<Vec<_>>());
    let mut clients = Vec::new();
    for i in 0..s.clients {
        let follows: Vec<i64> = (0..s.follows).map(|k| conversations[(i * 7 + k * 5) % conversations.len()]).collect();
        let mut follows = follows;
        follows.sort_unstable();
        follows.dedup();
        clients.push(tokio::spawn(client(ws_urls.clone(), co.agent.clone(), follows, shared.clone())));
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let apps = Arc::new(nodes.iter().map(|n| (n.addr.clone(), http.clone())).collect::<Vec<_>>());
    let phones = Arc::new(phones);
    let tasks = 4;
    let load: Vec<_> = (0..tasks)
        .map(|t| tokio::spawn(webhook_load(apps.clone(), co.clone(), phones.clone(), s.rate, s.secs, t, tasks)))
        .collect();
    let load_started = Instant::now();
    // Redis goes away in the middle of the load, for a second, and comes back.
    let mut redis_restarts = 0;
    if let Some(r) = redis.as_mut() {
        tokio::time::sleep(Duration::from_secs(s.secs / 2)).await;
        r.kill();
        tokio::time::sleep(Duration::from_secs(1)).await;
        r.restart();
        redis_restarts += 1;
    }
    let (mut acked, mut hooks, mut repeats) = (0, 0, 0);
    for l in load {
        let (m, h, r) = l.await.unwrap();
        acked += m;
        hooks += h;
        repeats += r;
    }
    let load_secs = load_started.elapsed().as_secs_f64();

    // The load is over: the clients stop reconnecting and read until they have everything.
    shared.settle.store(true, Ordering::Relaxed);
    let (targets, mut problems) = last_seqs(a, conversations.clone()).await;
    *shared.targets.lock().unwrap() = Some(targets.clone());
    let settle_started = Instant::now();
    let mut seen = Vec::new();
    for c in clients {
        seen.push(tokio::time::timeout(Duration::from_secs(120), c).await.expect("clients settle").unwrap());
    }
    let settle_secs = settle_started.elapsed().as_secs_f64();
    let (stored, distinct) = stored_messages(a, co.channel_id).await;

    let events_stored: i64 = targets.values().sum();
    let (mut received, mut duplicates, mut gaps, mut connections, mut refused) = (0, 0, 0, 0, 0);
    let mut losses = 0;
    for (i, c) in seen.iter().enumerate() {
        received += c.events;
        duplicates += c.duplicates;
        gaps += c.gaps;
        connections += c.connections;
        refused += c.refused;
        for (conv, last) in &c.last {
            if *last != targets[conv] {
                losses += 1;
                problems.push(format!("client {i}: conversation {conv} at {last} of {}", targets[conv]));
            }
        }
        problems.extend(c.errors.iter().take(3).map(|e| format!("client {i}: {e}")));
    }
    let reconnects = connections - s.clients as u64;
    println!(
        "resume under load ({label}): {} clients following {} of {} conversations each, {} connections \
         ({reconnects} reconnects, each resuming with afterSeq; {refused} connection attempts retried), {} \
         Redis restarts; load {acked} customer messages in {hooks} signed webhooks over {load_secs:.1} s ({:.0} \
         messages/s, target {}), {repeats} webhooks repeated; {stored} messages stored ({distinct} distinct), \
         {events_stored} events; events received by clients {received}, losses {losses}, duplicates \
         {duplicates}, gaps {gaps}; settled {settle_secs:.1} s after the load ({:.1} s in all)",
        s.clients,
        s.follows,
        s.conversations,
        connections,
        redis_restarts,
        acked as f64 / load_secs,
        s.rate,
        started.elapsed().as_secs_f64(),
    );
    assert_eq!(stored, distinct, "a message stored twice");
    // Every acknowledged message (and the opening ones) stored exactly once: a repeated
    // webhook whose first attempt had committed is answered as duplicates.
    assert_eq!(stored as u64, acked + s.conversations as u64, "acknowledged messages stored");
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
    assert_eq!((losses, duplicates, gaps), (0, 0, 0));
    assert!(reconnects as usize >= s.clients * 2, "only {reconnects} reconnects");
    assert!(acked > 0 && received > 0);
}

mod resume_under_load {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_one_node() {
        let app = TestApp::spawn_with(Backend::Sqlite, |c| c.ws_max_per_user = 0).await.unwrap();
        scenario(vec![app], None, "SQLite, one node").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_two_nodes_redis_restart() {
        if pg_base_url().is_none() {
            return eprintln!("skipped: CONFAB_TEST_DATABASE_URL is not set");
        }
        let redis = PrivateRedis::start();
        let url = redis.url();
        let a = TestApp::spawn_with(Backend::Postgres, |c| {
            c.ws_max_per_user = 0;
            c.redis_url = Some(url);
        })
        .await
        .unwrap();
        let b = TestApp::start(Backend::Postgres, a.config.clone(), a.dir.clone(), a.pg.clone()).await;
        scenario(vec![a, b], Some(redis), "PostgreSQL, two nodes, Redis restarted").await;
    }
}
