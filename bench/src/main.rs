//! confab-bench: `cargo run --release -p confab-bench -- <scenario> [options]`.
//!
//! Starts the servers itself on 127.0.0.1 (confab from the workspace's built binary, the Node
//! peers from `bench/peers/`), pins server and load generator to different cores with
//! `taskset`, records server CPU time and RSS from `/proc/<pid>`, runs each scenario for a
//! bounded time and prints Markdown results tables. Exits non-zero when a check fails
//! (messages lost, acknowledged webhooks missing from the database, wrong pages).

mod confab;
mod report;
mod scenarios;
mod server;
mod wsload;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(name = "confab-bench", about = "Load harness for confab and its Node peers (127.0.0.1 only)")]
pub struct Cli {
    /// The confab binary [default: `confab` next to this binary, built first when missing and run through cargo]
    #[arg(long, global = true)]
    pub confab: Option<PathBuf>,
    /// Never run `cargo build -p confab`, even when the server binary is missing.
    #[arg(long, global = true)]
    pub no_build: bool,
    /// CPUs for the server under test (`taskset -c` list); "" disables pinning.
    #[arg(long, global = true, default_value = "0")]
    pub server_cpus: String,
    /// CPUs for this load generator; "" disables pinning.
    #[arg(long, global = true, default_value = "1")]
    pub client_cpus: String,
    /// Peers to run next to confab (fan-out and idle): ws, uws, socketio, or none.
    #[arg(long, global = true, value_delimiter = ',', default_value = "ws,uws,socketio")]
    pub peers: Vec<String>,
    /// Directory of the Node peers (with node_modules from `npm ci`).
    #[arg(long, global = true, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/peers"))]
    pub peers_dir: PathBuf,
    /// The node executable.
    #[arg(long, global = true, default_value = "node")]
    pub node: PathBuf,
    /// PostgreSQL server for the ingest scenario (a fresh database is created and dropped).
    #[arg(long, global = true, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    pub pg_url: String,
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Size {
    /// Seconds, tiny sizes: what CI runs.
    Smoke,
    Small,
    Large,
}

/// Named fan-out shapes, so that figures from different runs and harnesses compare.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Preset {
    /// 5,000 agents, 50 conversations (100 per conversation), 200 msg/s, 10 s: fan-out-heavy.
    Heavy,
    /// 5,000 agents, 1,000 conversations (5 per conversation), 1,000 msg/s, 10 s: issue 20's
    /// latency target.
    Target,
    /// 5,000 agents, 500 conversations (10 per conversation), 1,000 signed webhooks/s, 10 s:
    /// the shape of an independent harness's measurement.
    Harness,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Scenario {
    /// A agents over WebSocket, each subscribed to one of C conversations; signed sandbox
    /// webhooks (peers: POST /publish) at a fixed rate; deliveries/s per server core and latency.
    FanOut {
        #[arg(long, value_enum, default_value = "small")]
        size: Size,
        /// A named shape (overrides `--size`; `--agents` etc. still override it).
        #[arg(long, value_enum)]
        preset: Option<Preset>,
        #[arg(long)]
        agents: Option<usize>,
        #[arg(long)]
        conversations: Option<usize>,
        /// Messages per second (open loop).
        #[arg(long)]
        rate: Option<u64>,
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// N idle authenticated connections with one subscription each (or `--subscriptions`);
    /// server RSS per connection, then the server's CPU while they stay idle.
    Idle {
        #[arg(long, value_enum, default_value = "small")]
        size: Size,
        #[arg(long)]
        connections: Option<usize>,
        /// Conversations each connection subscribes to.
        #[arg(long, default_value_t = 1)]
        subscriptions: usize,
        /// Seconds of idleness over which the server's CPU is measured (20 s is one heartbeat
        /// period); 0 skips it.
        #[arg(long)]
        idle_seconds: Option<u64>,
    },
    /// Signed webhooks and agents' sends (REST, WebSocket) as fast as they are acknowledged,
    /// 1/16/64 senders, SQLite and PostgreSQL; then the server is killed with SIGKILL and
    /// every acknowledged message is looked up in the database.
    Ingest {
        #[arg(long, value_enum, default_value = "small")]
        size: Size,
        #[arg(long)]
        seconds: Option<u64>,
        #[arg(long, value_delimiter = ',')]
        senders: Option<Vec<usize>>,
        /// sqlite, postgres
        #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
        backends: Vec<String>,
        /// How messages come in: webhook (signed sandbox webhooks from customers), rest
        /// (agents' `POST /message` with `clientId`), ws (agents' WebSocket `send` with `clientId`).
        #[arg(long, value_delimiter = ',', default_value = "webhook,rest,ws")]
        paths: Vec<String>,
    },
    /// One conversation with many messages generated straight into SQLite; latency of deep
    /// pages by offset and by keyset (`before=`).
    Paging {
        #[arg(long, value_enum, default_value = "small")]
        size: Size,
        #[arg(long)]
        messages: Option<u64>,
        #[arg(long)]
        repeats: Option<usize>,
    },
    /// Logins per second (argon2id cost reported); authenticated vs unauthenticated request cost.
    Auth {
        #[arg(long, value_enum, default_value = "small")]
        size: Size,
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Every scenario at the given size.
    All {
        #[arg(long, value_enum, default_value = "small")]
        size: Size,
    },
    /// Every scenario at smoke size with strict checks (CI).
    Smoke,
}

fn main() {
    let cli = Cli::parse();
    let code = match scenarios::run(cli) {
        Ok(true) => 0,
        Ok(false) => {
            eprintln!("confab-bench: some checks FAILED (see above)");
            1
        }
        Err(e) => {
            eprintln!("confab-bench: error: {e:#}");
            2
        }
    };
    std::process::exit(code);
}
