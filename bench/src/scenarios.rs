//! The five scenarios. Each starts its own servers, runs for a bounded time, prints a table and
//! records failed checks in `Ctx::failures`.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};
use diesel::{
    Connection, QueryableByName, RunQueryDsl, connection::SimpleConnection, pg::PgConnection, sqlite::SqliteConnection,
};
use serde_json::Value;
use tokio::sync::{Semaphore, watch};

use crate::{
    Cli, Preset, Scenario, Size,
    confab::{self, Backend, Confab, Setup, blocking, phone},
    report::{Table, f0, f1, f2, summary_ms},
    server::{self, Proc, Spawn},
    wsload::{self, Proto, Target},
};

pub struct Ctx {
    confab_bin: PathBuf,
    server_cpus: Option<String>,
    server_workers: usize,
    client_desc: String,
    peers: Vec<Peer>,
    peers_dir: PathBuf,
    node: PathBuf,
    pg_url: String,
    failures: Vec<String>,
}

impl Ctx {
    fn fail(&mut self, what: String) {
        eprintln!("CHECK FAILED: {what}");
        self.failures.push(what);
    }

    async fn confab(&self, backend: Backend) -> anyhow::Result<Confab> {
        Confab::start(confab::Options {
            binary: &self.confab_bin,
            backend,
            pg_base: &self.pg_url,
            cpus: self.server_cpus.as_deref(),
            workers: self.server_workers,
        })
        .await
    }

    async fn peer(&self, peer: Peer) -> anyhow::Result<Proc> {
        let port = server::free_port()?;
        let mut proc = Spawn {
            name: peer.name().into(),
            program: &self.node,
            args: vec![self.peers_dir.join(peer.script()).display().to_string(), port.to_string()],
            env: vec![],
            cwd: Some(&self.peers_dir),
            cpus: self.server_cpus.as_deref(),
            port,
            log: std::env::temp_dir().join(format!("confab-bench-{}-{}.log", peer.name(), std::process::id())),
        }
        .start()?;
        proc.wait_ready(&confab::http_client(), Duration::from_secs(30)).await?;
        Ok(proc)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Ws,
    Uws,
    SocketIo,
}

impl Peer {
    fn parse(s: &str) -> anyhow::Result<Option<Self>> {
        Ok(match s.trim() {
            "ws" => Some(Peer::Ws),
            "uws" | "uwebsockets" => Some(Peer::Uws),
            "socketio" | "socket.io" => Some(Peer::SocketIo),
            "none" | "" => None,
            other => bail!("unknown peer {other} (ws, uws, socketio, none)"),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Peer::Ws => "Node ws",
            Peer::Uws => "uWS.js",
            Peer::SocketIo => "Socket.IO",
        }
    }

    fn script(self) -> &'static str {
        match self {
            Peer::Ws => "ws.js",
            Peer::Uws => "uws.js",
            Peer::SocketIo => "socketio.js",
        }
    }

    fn proto(self) -> Proto {
        match self {
            Peer::SocketIo => Proto::SocketIo,
            _ => Proto::Json,
        }
    }
}

/// Resolves the confab binary: `--confab`, else `confab` next to this executable, built first
/// with the same profile when it is missing and the harness was launched through `cargo run`.
fn confab_binary(cli: &Cli) -> anyhow::Result<PathBuf> {
    if let Some(p) = &cli.confab {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().ok_or_else(|| anyhow!("no directory for {}", exe.display()))?;
    let bin = dir.join("confab");
    // Only when missing: a build started under `cargo run` inherits cargo's environment and
    // was seen to recompile the confab crate (and the next plain build to recompile it again).
    if let (Ok(cargo), false, false) = (std::env::var("CARGO"), cli.no_build, bin.exists()) {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&workspace).args(["build", "-p", "confab", "--bin", "confab"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        eprintln!("confab-bench: building the server ({cmd:?})");
        let status = cmd.status().context("running cargo build -p confab")?;
        if !status.success() {
            bail!("cargo build -p confab failed");
        }
    }
    if !bin.exists() {
        bail!("{} not found: build it with `cargo build --release -p confab` or pass --confab", bin.display());
    }
    Ok(bin)
}

pub fn run(cli: Cli) -> anyhow::Result<bool> {
    let nofile = server::raise_nofile_limit();
    let taskset = server::have_taskset();
    let online = server::online_cpus();
    let pin = |list: &str| -> anyhow::Result<Option<Vec<usize>>> {
        if list.is_empty() || !taskset || online < 2 { Ok(None) } else { server::parse_cpus(list).map(Some) }
    };
    let server_cpus = pin(&cli.server_cpus)?;
    let client_cpus = pin(&cli.client_cpus)?;
    if let Some(cpus) = &client_cpus {
        server::pin_self(cpus)?;
    }
    let confab_bin = confab_binary(&cli)?;
    let mut peers = Vec::new();
    for p in &cli.peers {
        if let Some(peer) = Peer::parse(p)? {
            peers.push(peer);
        }
    }
    if !peers.is_empty() && !cli.peers_dir.join("node_modules").exists() {
        bail!("{}/node_modules is missing: run `npm ci` there, or pass --peers none", cli.peers_dir.display());
    }
    let server_workers = server_cpus.as_ref().map_or(online, Vec::len);
    let mut ctx = Ctx {
        confab_bin,
        server_cpus: server_cpus.as_ref().map(|_| cli.server_cpus.clone()),
        server_workers,
        client_desc: client_cpus.as_ref().map_or("unpinned".into(), |_| format!("CPU {}", cli.client_cpus)),
        peers,
        peers_dir: cli.peers_dir.clone(),
        node: cli.node.clone(),
        pg_url: cli.pg_url.clone(),
        failures: Vec::new(),
    };
    println!(
        "confab-bench: {} online CPUs; server on {} ({} worker(s)), load generator on {}; open-file limit {nofile}; confab = {}",
        online,
        ctx.server_cpus.as_deref().map_or("unpinned".into(), |c| format!("CPU {c}")),
        server_workers,
        ctx.client_desc,
        ctx.confab_bin.display()
    );
    if !taskset {
        println!("confab-bench: taskset not found: server and load generator are not pinned");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(client_cpus.as_ref().map_or(2, Vec::len))
        .enable_all()
        .build()?;
    rt.block_on(async {
        match cli.scenario.clone() {
            Scenario::FanOut { size, preset, agents, conversations, rate, seconds } => {
                let base = preset.map_or(FanOutParams::of(size), FanOutParams::preset);
                let p = base.with(agents, conversations, rate, seconds);
                fan_out(&mut ctx, p).await
            }
            Scenario::Idle { size, connections, subscriptions, idle_seconds } => {
                let p = IdleParams {
                    connections: connections.unwrap_or(IdleParams::of(size)),
                    subscriptions,
                    idle_seconds: idle_seconds.unwrap_or(IdleParams::seconds(size)),
                };
                idle(&mut ctx, p).await
            }
            Scenario::Ingest { size, seconds, senders, backends, paths } => {
                let mut p = IngestParams::of(size);
                p.seconds = seconds.unwrap_or(p.seconds);
                p.senders = senders.unwrap_or(p.senders);
                p.paths = paths.iter().map(|s| IngestPath::parse(s)).collect::<anyhow::Result<_>>()?;
                ingest(&mut ctx, p, &backends).await
            }
            Scenario::Paging { size, messages, repeats } => {
                let mut p = PagingParams::of(size);
                p.messages = messages.unwrap_or(p.messages);
                p.repeats = repeats.unwrap_or(p.repeats);
                paging(&mut ctx, p).await
            }
            Scenario::Auth { size, seconds } => auth(&mut ctx, seconds.unwrap_or(AuthParams::of(size))).await,
            Scenario::All { size } => all(&mut ctx, size).await,
            Scenario::Smoke => all(&mut ctx, Size::Smoke).await,
        }
    })?;
    Ok(ctx.failures.is_empty())
}

async fn all(ctx: &mut Ctx, size: Size) -> anyhow::Result<()> {
    fan_out(ctx, FanOutParams::of(size)).await?;
    idle(
        ctx,
        IdleParams { connections: IdleParams::of(size), subscriptions: 1, idle_seconds: IdleParams::seconds(size) },
    )
    .await?;
    ingest(ctx, IngestParams::of(size), &["sqlite".into(), "postgres".into()]).await?;
    paging(ctx, PagingParams::of(size)).await?;
    auth(ctx, AuthParams::of(size)).await
}

// ---------------------------------------------------------------- fan-out

#[derive(Debug, Clone, Copy)]
struct FanOutParams {
    agents: usize,
    conversations: usize,
    rate: u64,
    seconds: u64,
}

impl FanOutParams {
    fn of(size: Size) -> Self {
        match size {
            Size::Smoke => Self { agents: 40, conversations: 8, rate: 40, seconds: 2 },
            Size::Small => Self { agents: 1000, conversations: 100, rate: 500, seconds: 10 },
            Size::Large => Self { agents: 5000, conversations: 1000, rate: 1000, seconds: 20 },
        }
    }

    fn preset(preset: Preset) -> Self {
        match preset {
            Preset::Heavy => Self { agents: 5000, conversations: 50, rate: 200, seconds: 10 },
            Preset::Target => Self { agents: 5000, conversations: 1000, rate: 1000, seconds: 10 },
            Preset::Harness => Self { agents: 5000, conversations: 500, rate: 1000, seconds: 10 },
        }
    }

    fn with(
        mut self,
        agents: Option<usize>,
        conversations: Option<usize>,
        rate: Option<u64>,
        seconds: Option<u64>,
    ) -> Self {
        self.agents = agents.unwrap_or(self.agents);
        self.conversations = conversations.unwrap_or(self.conversations).clamp(1, self.agents.max(1));
        self.rate = rate.unwrap_or(self.rate).max(1);
        self.seconds = seconds.unwrap_or(self.seconds).clamp(1, 600);
        self
    }
}

/// How messages get in: a signed sandbox webhook (confab) or POST /publish (peers).
#[derive(Clone)]
enum Publisher {
    Confab { http: reqwest::Client, url: String, secret: String, channel_id: i64, run: String },
    Peer { http: reqwest::Client, url: String },
}

impl Publisher {
    async fn send(&self, idx: usize, conversation_id: i64, k: u64, text: &str) -> bool {
        let res = match self {
            Publisher::Confab { http, url, secret, channel_id, run } => {
                let body = confab::webhook_body(*channel_id, &format!("{run}-{k}"), &phone(idx), text);
                let sig = confab::sign(secret, &body);
                http.post(url)
                    .header("Content-Type", "application/json")
                    .header("X-Confab-Signature", sig)
                    .body(body)
                    .send()
                    .await
            }
            Publisher::Peer { http, url } => {
                http.post(url).json(&serde_json::json!({"conversationId": conversation_id, "text": text})).send().await
            }
        };
        matches!(res, Ok(r) if r.status().is_success())
    }
}

struct FanOutRow {
    server: String,
    sent: u64,
    failed: u64,
    expected: u64,
    delivered: u64,
    wall: f64,
    server_cpu: f64,
    client_cpu: f64,
    p50: f64,
    p99: f64,
    max: f64,
    rss: u64,
    closed: usize,
}

impl FanOutRow {
    fn per_core(&self) -> f64 {
        self.delivered as f64 / self.server_cpu.max(1e-9)
    }
}

async fn fan_out_one(
    label: &str,
    proc: &Proc,
    target: Target,
    publisher: Publisher,
    conversations: &[i64],
    p: FanOutParams,
) -> anyhow::Result<FanOutRow> {
    eprintln!("fan-out: {label}: connecting {} agents", p.agents);
    let clients = wsload::connect_all(&target, p.agents, conversations, 128, Duration::from_secs(600)).await?;
    let mut subscribers = vec![0u64; conversations.len()];
    for (i, _) in &clients {
        subscribers[i % conversations.len()] += 1;
    }
    let subscribers = Arc::new(subscribers);
    let base = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let readers: Vec<_> = clients
        .into_iter()
        .map(|(_, ws)| wsload::spawn_reader(ws, target.proto, base, delivered.clone(), stop_rx.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let expected = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let in_flight = 1024;
    let sem = Arc::new(Semaphore::new(in_flight));
    let (cpu0, self0, t0) = (proc.cpu_secs(), server::self_cpu_secs(), Instant::now());
    let total = p.rate * p.seconds;
    eprintln!("fan-out: {label}: {total} messages at {}/s", p.rate);
    for k in 0..total {
        let sched = t0 + Duration::from_secs_f64(k as f64 / p.rate as f64);
        tokio::time::sleep_until(sched.into()).await;
        let permit = sem.clone().acquire_owned().await?;
        let idx = (k as usize) % conversations.len();
        let text = wsload::timed_text((sched - base).as_micros() as u64, k);
        let (publisher, conv, subs, expected, sent, failed) = (
            publisher.clone(),
            conversations[idx],
            subscribers.clone(),
            expected.clone(),
            sent.clone(),
            failed.clone(),
        );
        tokio::spawn(async move {
            if publisher.send(idx, conv, k, &text).await {
                sent.fetch_add(1, Ordering::Relaxed);
                expected.fetch_add(subs[idx], Ordering::Relaxed);
            } else {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
        });
    }
    let _all = tokio::time::timeout(Duration::from_secs(60), sem.acquire_many(in_flight as u32)).await;
    // Drain: every expected delivery, or 10 s.
    let drain_deadline = Instant::now() + Duration::from_secs(10);
    while delivered.load(Ordering::Relaxed) < expected.load(Ordering::Relaxed) && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let wall = t0.elapsed().as_secs_f64();
    let (server_cpu, client_cpu) = (proc.cpu_secs() - cpu0, server::self_cpu_secs() - self0);
    let rss = proc.rss_bytes();
    let _ = stop_tx.send(true);
    let mut lat = Vec::new();
    let mut closed = 0;
    for r in readers {
        if let Ok(Ok(res)) = tokio::time::timeout(Duration::from_secs(30), r).await {
            lat.extend(res.latencies_us);
            closed += usize::from(res.closed.is_some());
        }
    }
    let (p50, p99, max) = summary_ms(&mut lat);
    Ok(FanOutRow {
        server: label.into(),
        sent: sent.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        expected: expected.load(Ordering::Relaxed),
        delivered: delivered.load(Ordering::Relaxed),
        wall,
        server_cpu,
        client_cpu,
        p50,
        p99,
        max,
        rss,
        closed,
    })
}

async fn fan_out(ctx: &mut Ctx, p: FanOutParams) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    let commits = {
        let c = ctx.confab(Backend::Sqlite).await?;
        let agents = p.agents.clamp(1, 4);
        let s = c.setup(agents).await?;
        let conversations = c.customers(&s, p.conversations).await?;
        let target = Target { proto: Proto::Json, url: c.ws_url(), tokens: s.agent_tokens.clone() };
        let publisher = Publisher::Confab {
            http: confab::http_client(),
            url: c.url("/webhooks/sandbox"),
            secret: s.secret.clone(),
            channel_id: s.channel_id,
            run: format!("fan-{}", &::confab::core::crypto::random_hex_id()[..8]),
        };
        eprintln!(
            "fan-out: confab pid {} runs with an open-file limit of {}",
            c.proc.pid,
            server::nofile_of(c.proc.pid)
        );
        let commits0 = CommitCounters::read(&c).await;
        let row = fan_out_one("confab", &c.proc, target, publisher, &conversations, p).await?;
        let commits = CommitCounters::read(&c).await.since(commits0).describe(row.wall);
        rows.push(row);
        commits
    };
    for peer in ctx.peers.clone() {
        let proc = ctx.peer(peer).await?;
        let conversations: Vec<i64> = (1..=p.conversations as i64).collect();
        let target = Target { proto: peer.proto(), url: format!("ws://127.0.0.1:{}/ws", proc.port), tokens: vec![] };
        let publisher = Publisher::Peer { http: confab::http_client(), url: format!("{}/publish", proc.base_url()) };
        rows.push(fan_out_one(peer.name(), &proc, target, publisher, &conversations, p).await?);
    }
    let confab_per_core = rows[0].per_core();
    let mut t = Table::new(
        format!(
            "fan-out: {} agents, {} conversations ({} per conversation), {} msg/s for {} s",
            p.agents,
            p.conversations,
            f1(p.agents as f64 / p.conversations as f64),
            p.rate,
            p.seconds
        ),
        &[
            "server",
            "sent msgs",
            "delivered/expected",
            "deliveries/s",
            "server CPU %",
            "deliveries per server CPU-s",
            "confab ÷ this (per CPU-s)",
            "p50 ms",
            "p99 ms",
            "max ms",
            "server RSS MB",
            "loadgen CPU %",
        ],
    );
    for r in &rows {
        let ok = r.delivered >= r.expected && r.failed == 0 && r.closed == 0;
        if !ok {
            ctx.fail(format!(
                "fan-out {}: delivered {} of {} expected, {} publishes failed, {} connections closed early",
                r.server, r.delivered, r.expected, r.failed, r.closed
            ));
        }
        let name = if r.server == "confab" {
            "confab (durable: SQLite FULL, webhook + signature)".to_owned()
        } else {
            format!("{} (no persistence)", r.server)
        };
        t.row(vec![
            name,
            format!("{}{}", r.sent, if r.failed > 0 { format!(" (+{} failed)", r.failed) } else { String::new() }),
            format!("{}/{}{}", r.delivered, r.expected, if ok { "" } else { " FAIL" }),
            f0(r.delivered as f64 / r.wall),
            f0(100.0 * r.server_cpu / r.wall),
            f0(r.per_core()),
            f2(confab_per_core / r.per_core()),
            f2(r.p50),
            f2(r.p99),
            f2(r.max),
            f1(r.rss as f64 / 1048576.0),
            f0(100.0 * r.client_cpu / r.wall),
        ]);
    }
    t.note(
        "Latency: from the scheduled send time (open loop, embedded in the message text) to receipt by the agent. \
         \"Deliveries per server CPU-s\" = delivered frames ÷ server CPU seconds (user+sys, /proc/<pid>/stat): deliveries/s per fully used core.",
    );
    t.note(format!(
        "confab's group commit (its confab_group_commit_* counters over the run, connecting included): {commits}"
    ));
    t.print();
    Ok(())
}

// ---------------------------------------------------------------- idle

struct IdleParams {
    connections: usize,
    subscriptions: usize,
    idle_seconds: u64,
}

impl IdleParams {
    fn of(size: Size) -> usize {
        match size {
            Size::Smoke => 100,
            Size::Small => 2000,
            Size::Large => 10_000,
        }
    }

    fn seconds(size: Size) -> u64 {
        match size {
            Size::Smoke => 0,
            Size::Small => 5,
            Size::Large => 20,
        }
    }
}

/// What one server did in the idle scenario.
struct IdleRow {
    rss0: u64,
    rss1: u64,
    /// RSS at the end of the idle period (threads and buffers of the connection burst gone).
    rss2: Option<u64>,
    connected: u64,
    /// Server CPU while idle, in % of one core (None when not measured).
    cpu_pct: Option<f64>,
}

async fn idle_one(
    label: &str,
    proc: &Proc,
    target: Target,
    conversations: &[i64],
    p: &IdleParams,
) -> anyhow::Result<IdleRow> {
    let n = p.connections;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss0 = proc.rss_bytes();
    eprintln!("idle: {label}: {n} connections, {} subscription(s) each", p.subscriptions);
    let clients =
        wsload::connect_all_many(&target, n, conversations, p.subscriptions, 128, Duration::from_secs(900)).await?;
    let connected = clients.len() as u64;
    let delivered = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let readers: Vec<_> = clients
        .into_iter()
        .map(|(_, ws)| wsload::spawn_reader(ws, target.proto, Instant::now(), delivered.clone(), stop_rx.clone()))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss1 = proc.rss_bytes();
    // The readers answer the server's pings (tungstenite does), as real clients do.
    let (cpu_pct, rss2) = if p.idle_seconds > 0 {
        let (c0, t0) = (proc.cpu_secs(), Instant::now());
        tokio::time::sleep(Duration::from_secs(p.idle_seconds)).await;
        (Some((proc.cpu_secs() - c0) / t0.elapsed().as_secs_f64() * 100.0), Some(proc.rss_bytes()))
    } else {
        (None, None)
    };
    let _ = stop_tx.send(true);
    for r in readers {
        let _ = tokio::time::timeout(Duration::from_secs(30), r).await;
    }
    Ok(IdleRow { rss0, rss1, rss2, connected, cpu_pct })
}

async fn idle(ctx: &mut Ctx, p: IdleParams) -> anyhow::Result<()> {
    let n = p.connections;
    let mut t = Table::new(
        format!(
            "idle: {n} connections with {} subscription(s) each (user-space RSS, 2 s after the last subscribe; then server CPU over {} s of idleness)",
            p.subscriptions, p.idle_seconds
        ),
        &[
            "server",
            "connected",
            "RSS before MB",
            "RSS after MB",
            "bytes per connection",
            "confab ÷ this",
            "idle CPU % of a core",
            "bytes per connection after the idle period",
        ],
    );
    let mut rows = Vec::new();
    // Enough conversations for distinct subscriptions per connection.
    let n_conv = (n / 10).clamp(p.subscriptions.max(1), 1000.max(p.subscriptions));
    {
        let c = ctx.confab(Backend::Sqlite).await?;
        let s = c.setup(2).await?;
        let conversations = c.customers(&s, n_conv).await?;
        let target = Target { proto: Proto::Json, url: c.ws_url(), tokens: s.agent_tokens.clone() };
        let r = idle_one("confab", &c.proc, target, &conversations, &p).await?;
        rows.push(("confab (authenticated)".to_owned(), r));
    }
    for peer in ctx.peers.clone() {
        let proc = ctx.peer(peer).await?;
        let conversations: Vec<i64> = (1..=n_conv as i64).collect();
        let target = Target { proto: peer.proto(), url: format!("ws://127.0.0.1:{}/ws", proc.port), tokens: vec![] };
        let r = idle_one(peer.name(), &proc, target, &conversations, &p).await?;
        rows.push((format!("{} (no auth, no persistence)", peer.name()), r));
    }
    let per = |r: &IdleRow| r.rss1.saturating_sub(r.rss0) as f64 / r.connected.max(1) as f64;
    let confab_per = per(&rows[0].1);
    for (name, r) in &rows {
        if r.connected as usize != n {
            ctx.fail(format!("idle {name}: {} of {n} connected", r.connected));
        }
        t.row(vec![
            name.clone(),
            r.connected.to_string(),
            f1(r.rss0 as f64 / 1048576.0),
            f1(r.rss1 as f64 / 1048576.0),
            f0(per(r)),
            f2(confab_per / per(r)),
            r.cpu_pct.map_or("—".into(), f2),
            r.rss2.map_or("—".into(), |rss2| match rss2.checked_sub(r.rss0) {
                Some(grown) => f0(grown as f64 / r.connected.max(1) as f64),
                // The memory of the connection burst went back and more: not "0 bytes".
                None => format!("below the start ({:.1} MB)", rss2 as f64 / 1048576.0),
            }),
        ]);
    }
    t.note("Kernel socket memory (about 4.8 KB per TCP endpoint here) is not included. Node's figure includes V8 heap not yet collected.");
    t.print();
    Ok(())
}

// ---------------------------------------------------------------- ingest

struct IngestParams {
    seconds: u64,
    senders: Vec<usize>,
    customers: usize,
    paths: Vec<IngestPath>,
}

impl IngestParams {
    fn of(size: Size) -> Self {
        let paths = vec![IngestPath::Webhook, IngestPath::Rest, IngestPath::Ws];
        match size {
            Size::Smoke => Self { seconds: 1, senders: vec![1, 16, 64], customers: 50, paths },
            Size::Small => Self { seconds: 5, senders: vec![1, 16, 64], customers: 1000, paths },
            Size::Large => Self { seconds: 15, senders: vec![1, 16, 64], customers: 1000, paths },
        }
    }
}

/// How the messages of an ingest point come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IngestPath {
    /// Customers' messages: signed sandbox webhooks, one message each; acknowledged = 200 with
    /// `received: 1`; identified by the provider message id.
    Webhook,
    /// Agents' `POST /message` with a `clientId`; acknowledged = 201.
    Rest,
    /// Agents' WebSocket `send` with a `clientId`, one connection per sender; acknowledged =
    /// the `ack` frame naming the `clientId`.
    Ws,
}

impl IngestPath {
    fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "webhook" => Ok(Self::Webhook),
            "rest" => Ok(Self::Rest),
            "ws" | "websocket" => Ok(Self::Ws),
            other => bail!("unknown ingest path {other} (webhook, rest, ws)"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Rest => "REST send",
            Self::Ws => "WS send",
        }
    }
}

#[derive(QueryableByName)]
struct IdRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
}

#[derive(QueryableByName)]
struct CountRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// What one closed-loop sender did: acknowledged ids, their latencies in µs, failures.
type SenderResult = (Vec<String>, Vec<u32>, u64);

/// One closed-loop sender of an ingest point: sends until `deadline`, one message in flight.
/// `ws` is its WebSocket connection on the `Ws` path (opened before the clock starts).
#[allow(clippy::too_many_arguments)]
async fn ingest_sender(
    c: &Confab,
    s: &Setup,
    path: IngestPath,
    conversations: &[i64],
    customers: usize,
    run: &str,
    task: usize,
    deadline: Instant,
    mut ws: Option<wsload::Ws>,
) -> SenderResult {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut acked = Vec::new();
    let mut lat = Vec::new();
    let mut errors = 0u64;
    // Agents' tokens exist only when the point sends as agents (`--paths webhook` creates none).
    let token = s.agent_tokens.get(task % s.agent_tokens.len().max(1)).map_or("", String::as_str);
    for n in 0..1_000_000u64 {
        if Instant::now() >= deadline {
            break;
        }
        let id = format!("{run}-{task}-{n}");
        let pick = (task * 7919 + n as usize) % customers;
        let t = Instant::now();
        let ok = match path {
            IngestPath::Webhook => {
                let body = confab::webhook_body(s.channel_id, &id, &phone(pick), "ingest benchmark message");
                matches!(c.webhook(s, body).await, Ok((200, text))
                    if serde_json::from_str::<Value>(&text).is_ok_and(|v| v["received"] == 1))
            }
            IngestPath::Rest => {
                let body = serde_json::json!({"conversationId": conversations[pick], "clientId": id,
                    "text": "ingest benchmark reply"});
                matches!(c.call(reqwest::Method::POST, "/message", Some(token), Some(&body)).await,
                    Ok((201, v)) if v["clientId"] == id.as_str())
            }
            IngestPath::Ws => {
                let Some(socket) = ws.as_mut() else { return (acked, lat, errors + 1) };
                let frame = serde_json::json!({"type": "send", "conversationId": conversations[pick],
                    "clientId": id, "text": "ingest benchmark reply"})
                .to_string();
                let mut answer = None;
                if socket.send(Message::Text(frame)).await.is_ok() {
                    // Not subscribed to anything: the frames are this connection's acks and errors.
                    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(30), socket.next()).await {
                        let Message::Text(text) = msg else { continue };
                        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                        if v["clientId"] == id.as_str() {
                            answer = Some(v["type"] == "ack");
                            break;
                        }
                    }
                }
                if answer.is_none() {
                    // The connection is gone or stuck: this sender stops.
                    ws = None;
                }
                answer == Some(true)
            }
        };
        if ok {
            lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
            acked.push(id);
        } else {
            errors += 1;
        }
    }
    (acked, lat, errors)
}

async fn ingest(ctx: &mut Ctx, p: IngestParams, backends: &[String]) -> anyhow::Result<()> {
    let mut t = Table::new(
        format!("ingest: one message per request, closed loop, {} s per point", p.seconds),
        &[
            "backend",
            "path",
            "senders",
            "acknowledged",
            "errors",
            "durable msgs/s",
            "p50 ms",
            "p99 ms",
            "server CPU ms/msg",
            "all acked in DB after kill -9",
        ],
    );
    let mut handed_over = Vec::new();
    let mut commit_notes = Vec::new();
    for b in backends {
        let backend = match b.as_str() {
            "sqlite" => Backend::Sqlite,
            "postgres" | "postgresql" => Backend::Postgres,
            other => bail!("unknown backend {other}"),
        };
        let mut c = match ctx.confab(backend).await {
            Ok(c) => c,
            Err(e) if backend == Backend::Postgres => {
                ctx.fail(format!("ingest on PostgreSQL not run: {e:#}"));
                continue;
            }
            Err(e) => return Err(e),
        };
        let agents = if p.paths.iter().any(|p| *p != IngestPath::Webhook) { 4 } else { 0 };
        let s = c.setup(agents).await?;
        let conversations = c.customers(&s, p.customers).await?;
        let (mut by_provider_id, mut by_client_id): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
        // Steady state, not a fresh database: PostgreSQL plans a statement against the table
        // statistics it has, and a fresh database has none (autovacuum analyzes a table only
        // after a minute and 50 changed rows), so a lookup such as `known_provider_ids` runs as
        // a bitmap scan of every message of the channel (bench/README.md "Ingest"). A short
        // warm-up fills the tables, then ANALYZE gives the planner what autovacuum gives a
        // server that has run for a while. Its messages are verified after `kill -9` too.
        let warm_run = format!("inwarm-{}", &::confab::core::crypto::random_hex_id()[..8]);
        let warm_deadline = Instant::now() + Duration::from_secs(p.seconds.min(2));
        let warm = (0..16).map(|task| {
            ingest_sender(
                &c,
                &s,
                IngestPath::Webhook,
                &conversations,
                p.customers,
                &warm_run,
                task,
                warm_deadline,
                None,
            )
        });
        for (acked, _, _) in futures_util::future::join_all(warm).await {
            by_provider_id.extend(acked);
        }
        if backend == Backend::Postgres {
            let url = c.db_url.clone();
            blocking(move || Ok(PgConnection::establish(&url)?.batch_execute("ANALYZE")?)).await?;
        }
        let mut points = Vec::new();
        for &path in &p.paths {
            for &senders in &p.senders {
                eprintln!("ingest: {}: {}, {senders} senders", backend.name(), path.name());
                let run = format!("in{senders}-{}", &::confab::core::crypto::random_hex_id()[..8]);
                let mut sockets: Vec<Option<wsload::Ws>> = Vec::new();
                if path == IngestPath::Ws {
                    let target = Target { proto: Proto::Json, url: c.ws_url(), tokens: s.agent_tokens.clone() };
                    for i in 0..senders {
                        sockets.push(Some(wsload::connect_many(&target, i, &[]).await?));
                    }
                } else {
                    sockets.resize_with(senders, || None);
                }
                let commits0 = CommitCounters::read(&c).await;
                let (cpu0, t0) = (c.proc.cpu_secs(), Instant::now());
                let deadline = t0 + Duration::from_secs(p.seconds);
                let (c_ref, s_ref, convs, run) = (&c, &s, &conversations[..], &run);
                let tasks = sockets
                    .into_iter()
                    .enumerate()
                    .map(|(task, ws)| ingest_sender(c_ref, s_ref, path, convs, p.customers, run, task, deadline, ws));
                let results = futures_util::future::join_all(tasks).await;
                let wall = t0.elapsed().as_secs_f64();
                let cpu = c.proc.cpu_secs() - cpu0;
                let commits = CommitCounters::read(&c).await.since(commits0);
                commit_notes.push(format!(
                    "{} {}, {senders} senders: {}",
                    backend.name(),
                    path.name(),
                    commits.describe(wall)
                ));
                let mut lat = Vec::new();
                let mut errors = 0;
                let mut acked = 0usize;
                for (a, l, e) in results {
                    acked += a.len();
                    match path {
                        IngestPath::Webhook => by_provider_id.extend(a),
                        IngestPath::Rest | IngestPath::Ws => by_client_id.extend(a),
                    }
                    lat.extend(l);
                    errors += e;
                }
                let (p50, p99, _) = summary_ms(&mut lat);
                let cpu_ms = 1000.0 * cpu / acked.max(1) as f64;
                points.push((path, senders, acked, errors, acked as f64 / wall, p50, p99, cpu_ms));
            }
        }
        // Crash the server (no graceful shutdown), then look every acknowledged id up.
        c.proc.kill9();
        let check = verify_ingest(&c, s.channel_id, &by_provider_id, &by_client_id).await?;
        let acked_total = by_provider_id.len() + by_client_id.len();
        if !by_client_id.is_empty() {
            // The sends' other half: what the delivery worker got through meanwhile.
            let send_secs = p.seconds * (points.iter().filter(|pt| pt.0 != IngestPath::Webhook).count() as u64);
            handed_over.push(format!(
                "{}: {} of {} acknowledged sends handed to the sandbox provider by the kill, {}/s over the {send_secs} s of send points",
                backend.name(),
                check.handed_over,
                by_client_id.len(),
                f0(check.handed_over as f64 / send_secs.max(1) as f64),
            ));
        }
        let verdict = match check {
            IngestCheck { missing: 0, duplicates: 0, seq_gaps: 0, .. } => {
                format!("yes ({acked_total} of {acked_total})")
            }
            IngestCheck { missing, duplicates, seq_gaps, .. } => {
                ctx.fail(format!(
                    "ingest {}: {missing} acknowledged messages missing, {duplicates} duplicates, \
                     {seq_gaps} conversations whose seq has a gap",
                    backend.name()
                ));
                format!("NO: {missing} missing, {duplicates} duplicates, {seq_gaps} seq gaps")
            }
        };
        for (path, senders, acked, errors, rate, p50, p99, cpu_ms) in points {
            if errors > 0 {
                ctx.fail(format!(
                    "ingest {} {} with {senders} senders: {errors} messages not acknowledged",
                    backend.name(),
                    path.name()
                ));
            }
            t.row(vec![
                backend.name().into(),
                path.name().into(),
                senders.to_string(),
                acked.to_string(),
                errors.to_string(),
                f0(rate),
                f2(p50),
                f2(p99),
                f2(cpu_ms),
                verdict.clone(),
            ]);
        }
    }
    t.note("Acknowledged: webhook = HTTP 200 with received=1; REST send = 201 echoing the clientId; WS send = the ack frame of the clientId.");
    t.note("After the last point the server is killed with SIGKILL and the database is read directly: every acknowledged provider id and clientId must be there exactly once, and every conversation's events must number 1..last_seq without a gap.");
    for line in handed_over {
        t.note(line);
    }
    t.note("Group commit (the server's confab_group_commit_* counters over each point): transactions, their items, and per transaction the time spent waiting for a connection (and BEGIN), applying the writes, committing, and in the after-commit work with the answers.");
    for line in commit_notes {
        t.note(line);
    }
    // The server inherits the harness's environment (bench/README.md "Agents' sends").
    if let Some(ms) = std::env::var("CONFAB_SANDBOX_DELAY_MS").ok().filter(|v| v.trim() != "0" && !v.is_empty()) {
        t.note(format!("The sandbox provider accepted each send after {ms} ms (CONFAB_SANDBOX_DELAY_MS), as a remote provider's API does."));
    }
    t.print();
    Ok(())
}

/// The group commit's counters at the server's `/metrics` (`confab_group_commit_*`); zero
/// where the server does not export them.
#[derive(Default, Clone, Copy)]
struct CommitCounters {
    batches: f64,
    items: f64,
    /// Seconds by phase: wait, apply, commit, after.
    phases: [f64; 4],
}

impl CommitCounters {
    const PHASES: [&str; 4] = ["wait", "apply", "commit", "after"];

    async fn read(c: &Confab) -> Self {
        let text = match c.http.get(c.url("/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let value = |name: &str| {
            text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
        };
        Self {
            batches: value("confab_group_commit_batches_total"),
            items: value("confab_group_commit_items_total"),
            phases: Self::PHASES.map(|p| value(&format!("confab_group_commit_seconds_total{{phase=\"{p}\"}}"))),
        }
    }

    fn since(self, before: Self) -> Self {
        Self {
            batches: self.batches - before.batches,
            items: self.items - before.items,
            phases: std::array::from_fn(|i| self.phases[i] - before.phases[i]),
        }
    }

    /// One line: transactions per second, items per transaction, ms per transaction by phase
    /// and the phases' share of the `wall` seconds.
    fn describe(self, wall: f64) -> String {
        let n = self.batches.max(1.0);
        let per: Vec<String> =
            Self::PHASES.iter().zip(self.phases).map(|(p, s)| format!("{p} {} ms", f2(1000.0 * s / n))).collect();
        format!(
            "{} transactions/s of {} items; per transaction {}; {} % of the wall time in transactions",
            f0(self.batches / wall),
            f1(self.items / n),
            per.join(", "),
            f0(100.0 * self.phases.iter().sum::<f64>() / wall),
        )
    }
}

struct IngestCheck {
    missing: usize,
    duplicates: usize,
    seq_gaps: i64,
    /// Agents' sends the delivery worker had handed to the (sandbox) provider by the kill.
    handed_over: i64,
}

/// Looks every acknowledged provider id (webhooks on `channel_id`) and clientId (agents'
/// sends) up in the database, and counts conversations whose `last_seq` is not the number of
/// their events (a gap, a duplicate or a lost event).
async fn verify_ingest(
    c: &Confab,
    channel_id: i64,
    provider_ids: &[String],
    client_ids: &[String],
) -> anyhow::Result<IngestCheck> {
    let by_provider = format!(
        "SELECT provider_message_id AS id FROM messages WHERE channel_id = {channel_id} AND provider_message_id LIKE 'in%'"
    );
    let by_client = "SELECT client_id AS id FROM messages WHERE client_id LIKE 'in%'".to_owned();
    let gaps = "SELECT count(*) AS n FROM conversations c \
                WHERE c.last_seq <> (SELECT count(*) FROM events e WHERE e.conversation_id = c.id)"
        .to_owned();
    let handed = "SELECT count(*) AS n FROM messages WHERE client_id LIKE 'in%' \
                  AND status IN ('SENT', 'DELIVERED', 'READ')"
        .to_owned();
    let (backend, url, path) = (c.backend, c.db_url.clone(), c.sqlite_path.clone());
    let (providers, clients, gaps, handed): (Vec<IdRow>, Vec<IdRow>, CountRow, CountRow) = blocking(move || {
        Ok(match backend {
            Backend::Sqlite => {
                let path = path.ok_or_else(|| anyhow!("no SQLite path"))?;
                let mut conn = SqliteConnection::establish(&path.display().to_string())?;
                (
                    diesel::sql_query(by_provider).load(&mut conn)?,
                    diesel::sql_query(by_client).load(&mut conn)?,
                    diesel::sql_query(gaps).get_result(&mut conn)?,
                    diesel::sql_query(handed).get_result(&mut conn)?,
                )
            }
            Backend::Postgres => {
                let mut conn = PgConnection::establish(&url)?;
                (
                    diesel::sql_query(by_provider).load(&mut conn)?,
                    diesel::sql_query(by_client).load(&mut conn)?,
                    diesel::sql_query(gaps).get_result(&mut conn)?,
                    diesel::sql_query(handed).get_result(&mut conn)?,
                )
            }
        })
    })
    .await?;
    let mut check = IngestCheck { missing: 0, duplicates: 0, seq_gaps: gaps.n, handed_over: handed.n };
    for (rows, acked) in [(providers, provider_ids), (clients, client_ids)] {
        let total = rows.len();
        let set: HashSet<String> = rows.into_iter().map(|r| r.id).collect();
        check.duplicates += total - set.len();
        check.missing += acked.iter().filter(|id| !set.contains(id.as_str())).count();
    }
    Ok(check)
}

// ---------------------------------------------------------------- paging

struct PagingParams {
    messages: u64,
    repeats: usize,
}

impl PagingParams {
    fn of(size: Size) -> Self {
        match size {
            Size::Smoke => Self { messages: 20_000, repeats: 3 },
            Size::Small => Self { messages: 200_000, repeats: 20 },
            Size::Large => Self { messages: 1_000_000, repeats: 30 },
        }
    }
}

#[derive(QueryableByName)]
struct PkRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pk: i64,
}

/// Inserts `n` messages into `conversation_id` in batches of 50,000 rows (one transaction
/// each, which also adds them to the full-text index as the server's indexer would), copying
/// the shape of an existing message; updates the conversation's counter.
fn generate_messages(path: &Path, conversation_id: i64, n: u64) -> anyhow::Result<()> {
    let mut conn = SqliteConnection::establish(&path.display().to_string())?;
    conn.batch_execute("PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")?;
    let template: PkRow = diesel::sql_query(format!(
        "SELECT pk FROM messages WHERE conversation_id = {conversation_id} ORDER BY pk LIMIT 1"
    ))
    .get_result(&mut conn)?;
    let batch = 50_000u64;
    let mut done = 0u64;
    while done < n {
        let k = batch.min(n - done);
        conn.batch_execute(&format!(
            "BEGIN IMMEDIATE;
             WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < {k})
             INSERT INTO messages (id, conversation_id, company_id, channel_id, direction, kind, content, params, status,
                                   status_rank, seq, created_at, updated_at)
             SELECT lower(hex(randomblob(16))), m.conversation_id, m.company_id, m.channel_id, m.direction, m.kind,
                    'generated message ' || ({done} + seq.i), m.params, m.status, m.status_rank, 0, m.created_at, m.updated_at
             FROM seq, (SELECT * FROM messages WHERE pk = {}) AS m;
             INSERT INTO messages_fts(rowid, content) SELECT pk, content FROM messages
             WHERE pk > (SELECT indexed_pk FROM messages_fts_cursor);
             UPDATE messages_fts_cursor SET indexed_pk = (SELECT max(pk) FROM messages);
             COMMIT;",
            template.pk
        ))?;
        done += k;
    }
    conn.batch_execute(&format!(
        "UPDATE conversations SET message_count = (SELECT count(*) FROM messages WHERE conversation_id = {conversation_id}) WHERE id = {conversation_id};"
    ))?;
    Ok(())
}

/// The messageId at newest-first position `index` of the conversation.
fn message_id_at(path: &Path, conversation_id: i64, index: u64) -> anyhow::Result<String> {
    let mut conn = SqliteConnection::establish(&path.display().to_string())?;
    let row: IdRow = diesel::sql_query(format!(
        "SELECT id FROM messages WHERE conversation_id = {conversation_id} ORDER BY pk DESC LIMIT 1 OFFSET {index}"
    ))
    .get_result(&mut conn)?;
    Ok(row.id)
}

async fn timed_get(c: &Confab, token: &str, path: &str, repeats: usize) -> anyhow::Result<(Vec<u32>, Value)> {
    let mut lat = Vec::new();
    let mut last = Value::Null;
    for _ in 0..repeats + 1 {
        let t = Instant::now();
        let (status, body) = c.call(reqwest::Method::GET, path, Some(token), None).await?;
        if status != 200 {
            bail!("{path}: {status} {body}");
        }
        lat.push(t.elapsed().as_micros() as u32);
        last = body;
    }
    lat.remove(0); // warm-up
    Ok((lat, last))
}

async fn paging(ctx: &mut Ctx, p: PagingParams) -> anyhow::Result<()> {
    let c = ctx.confab(Backend::Sqlite).await?;
    let s = c.setup(1).await?;
    let conv = c.customers(&s, 1).await?[0];
    let path = c.sqlite_path.clone().ok_or_else(|| anyhow!("no SQLite path"))?;
    eprintln!("paging: generating {} messages", p.messages);
    let t0 = Instant::now();
    let gen_path = path.clone();
    let n = p.messages;
    blocking(move || generate_messages(&gen_path, conv, n)).await?;
    let gen_secs = t0.elapsed().as_secs_f64();
    let token = s.agent_tokens[0].clone();
    let limit = 100u64;
    let total = p.messages + 1;
    let deepest = (total / limit).clamp(1, 10_000);
    let pages: Vec<u64> = [1, 100, 10_000].into_iter().filter(|&pg| pg < deepest).chain([deepest]).collect();
    let mut t = Table::new(
        format!(
            "paging: one conversation with {total} messages (SQLite), limit {limit}, median of {} requests",
            p.repeats
        ),
        &[
            "page",
            "offset (?page=) p50 ms",
            "offset p99 ms",
            "keyset (?before=) p50 ms",
            "keyset p99 ms",
            "same first message",
        ],
    );
    let mut firsts = (f64::NAN, f64::NAN);
    let mut lasts = (f64::NAN, f64::NAN);
    for &page in &pages {
        let (mut off, body) =
            timed_get(&c, &token, &format!("/message/message-page-list/{conv}?page={page}&limit={limit}"), p.repeats)
                .await?;
        let first_offset = body["data"][0]["messageId"].as_str().unwrap_or("").to_owned();
        let (mut key, first_keyset) = if page == 1 {
            let (l, b) =
                timed_get(&c, &token, &format!("/message/message-page-list/{conv}?limit={limit}"), p.repeats).await?;
            (l, b["data"][0]["messageId"].as_str().unwrap_or("").to_owned())
        } else {
            let (path, idx) = (path.clone(), (page - 1) * limit - 1);
            let before = blocking(move || message_id_at(&path, conv, idx)).await?;
            let (l, b) = timed_get(
                &c,
                &token,
                &format!("/message/message-page-list/{conv}?limit={limit}&before={before}"),
                p.repeats,
            )
            .await?;
            (l, b["data"][0]["messageId"].as_str().unwrap_or("").to_owned())
        };
        let same = !first_offset.is_empty() && first_offset == first_keyset;
        if !same {
            ctx.fail(format!(
                "paging: page {page} by offset starts with {first_offset:?}, by keyset with {first_keyset:?}"
            ));
        }
        let (o50, o99, _) = summary_ms(&mut off);
        let (k50, k99, _) = summary_ms(&mut key);
        if page == 1 {
            firsts = (o50, k50);
        }
        lasts = (o50, k50);
        t.row(vec![
            page.to_string(),
            f2(o50),
            f2(o99),
            f2(k50),
            f2(k99),
            if same { "yes".into() } else { "NO".into() },
        ]);
    }
    t.row(vec![
        format!("ratio page {deepest} ÷ page 1"),
        f1(lasts.0 / firsts.0),
        String::new(),
        f2(lasts.1 / firsts.1),
        String::new(),
        String::new(),
    ]);
    t.note(format!(
        "{} messages generated with SQL INSERT … SELECT in batches of 50,000 in {:.1} s.",
        p.messages, gen_secs
    ));
    t.print();
    Ok(())
}

// ---------------------------------------------------------------- auth

struct AuthParams;

impl AuthParams {
    fn of(size: Size) -> u64 {
        match size {
            Size::Smoke => 1,
            Size::Small => 5,
            Size::Large => 10,
        }
    }
}

struct LoadPoint {
    ok: u64,
    errors: u64,
    wall: f64,
    cpu: f64,
    lat: Vec<u32>,
}

/// `concurrency` closed-loop clients for `seconds`, each request built by `make`.
async fn closed_loop<F>(c: &Confab, concurrency: usize, seconds: u64, want: u16, make: F) -> LoadPoint
where
    F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
{
    let (cpu0, t0) = (c.proc.cpu_secs(), Instant::now());
    let deadline = t0 + Duration::from_secs(seconds);
    let make = &make;
    let tasks = (0..concurrency).map(|_| async move {
        let (mut ok, mut errors, mut lat) = (0u64, 0u64, Vec::new());
        for _ in 0..10_000_000u64 {
            if Instant::now() >= deadline {
                break;
            }
            let t = Instant::now();
            match make(&c.http).send().await {
                Ok(res) if res.status().as_u16() == want => {
                    let _ = res.bytes().await;
                    ok += 1;
                    lat.push(t.elapsed().as_micros() as u32);
                }
                _ => errors += 1,
            }
        }
        (ok, errors, lat)
    });
    let results = futures_util::future::join_all(tasks).await;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = c.proc.cpu_secs() - cpu0;
    let mut p = LoadPoint { ok: 0, errors: 0, wall, cpu, lat: Vec::new() };
    for (ok, e, l) in results {
        p.ok += ok;
        p.errors += e;
        p.lat.extend(l);
    }
    p
}

#[derive(QueryableByName)]
struct HashRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    password_hash: String,
}

async fn auth(ctx: &mut Ctx, seconds: u64) -> anyhow::Result<()> {
    let c = ctx.confab(Backend::Sqlite).await?;
    let s: Setup = c.setup(1).await?;
    let path = c.sqlite_path.clone().ok_or_else(|| anyhow!("no SQLite path"))?;
    let email = s.agent_emails[0].clone();
    let cost = blocking(move || {
        let mut conn = SqliteConnection::establish(&path.display().to_string())?;
        let row: HashRow = diesel::sql_query(
            "SELECT password_hash FROM users WHERE id = (SELECT user_id FROM user_emails WHERE email = ?)",
        )
        .bind::<diesel::sql_types::Text, _>(email)
        .get_result(&mut conn)?;
        // "$argon2id$v=19$m=19456,t=2,p=1$salt$hash" -> "argon2id v=19 m=19456,t=2,p=1"
        Ok(row.password_hash.split('$').filter(|p| !p.is_empty()).take(3).collect::<Vec<_>>().join(" "))
    })
    .await
    .unwrap_or_else(|e| format!("unknown ({e})"));
    let mut t = Table::new(
        format!("auth: {seconds} s per point, password hash {cost}"),
        &["request", "concurrency", "ok", "errors", "req/s", "p50 ms", "p99 ms", "server CPU µs/req"],
    );
    let login_body = serde_json::json!({"email": s.agent_emails[0], "password": confab::AGENT_PASSWORD});
    let url = |p: &str| c.url(p);
    let mut add = |ctx: &mut Ctx, name: &str, conc: usize, mut p: LoadPoint| -> f64 {
        if p.errors > 0 || p.ok == 0 {
            ctx.fail(format!("auth {name}: {} ok, {} errors", p.ok, p.errors));
        }
        let (p50, p99, _) = summary_ms(&mut p.lat);
        let cpu_us = 1e6 * p.cpu / p.ok.max(1) as f64;
        t.row(vec![
            name.into(),
            conc.to_string(),
            p.ok.to_string(),
            p.errors.to_string(),
            f0(p.ok as f64 / p.wall),
            f2(p50),
            f2(p99),
            f0(cpu_us),
        ]);
        cpu_us
    };
    for conc in [1usize, 4] {
        let p = closed_loop(&c, conc, seconds, 200, |h| h.post(url("/auth/login")).json(&login_body)).await;
        add(ctx, "POST /auth/login (argon2id verify + session)", conc, p);
    }
    let token = s.agent_tokens[0].clone();
    let conc = 16;
    let unauth = closed_loop(&c, conc, seconds, 200, |h| h.get(url("/healthz"))).await;
    let unauth_cpu = add(ctx, "GET /healthz, no token", conc, unauth);
    let authed = closed_loop(&c, conc, seconds, 200, |h| h.get(url("/healthz")).bearer_auth(&token)).await;
    let authed_cpu = add(ctx, "GET /healthz, valid bearer (JWT verify + session lookup)", conc, authed);
    let me = closed_loop(&c, conc, seconds, 200, |h| h.get(url("/auth/me")).bearer_auth(&token)).await;
    add(ctx, "GET /auth/me, valid bearer (plus 2 queries)", conc, me);
    let rejected = closed_loop(&c, conc, seconds, 401, |h| h.get(url("/auth/me"))).await;
    add(ctx, "GET /auth/me, no token (401)", conc, rejected);
    t.note(format!(
        "Authentication overhead on the same handler: {} µs of server CPU per request ({} vs {} µs).",
        f0(authed_cpu - unauth_cpu),
        f0(authed_cpu),
        f0(unauth_cpu)
    ));
    t.print();
    Ok(())
}
