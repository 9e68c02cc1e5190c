//! Configuration (CONTRACT §1): CLI flags, `CONFAB_*` environment variables and an optional
//! `confab.toml`, with precedence flag > env > file > default. clap handles flags, env and
//! defaults; the file fills in whatever neither flags nor env set (see [`Cli::load`]).

use std::{ffi::OsString, path::PathBuf};

use anyhow::{Context, bail};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, parser::ValueSource};
use secrecy::SecretString;

#[derive(Debug, Parser)]
#[command(name = "confab", version, about = "Real-time customer-messaging server", long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Serve the HTTP and WebSocket API (the default).
    Serve,
    /// Run the database migrations and exit.
    Migrate,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Fill the Default company's sandbox channel with demo contacts, conversations and
    /// messages (run it once, then `confab serve`).
    Demo {
        #[arg(long, default_value_t = 300)]
        conversations: usize,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum UserCommand {
    /// Create an admin or agent; prints the generated password unless --password is given.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long, value_parser = ["admin", "agent"])]
        role: String,
        /// Company name or id; created when no company has that name.
        #[arg(long, default_value = "Default")]
        company: String,
        #[arg(long)]
        password: Option<String>,
        #[arg(long, default_value = "")]
        first_name: String,
        #[arg(long, default_value = "")]
        last_name: String,
    },
}

/// Every setting of CONTRACT §1. Secrets are `SecretString` so `Debug` never prints them.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Listen address.
    #[arg(long, env = "CONFAB_BIND", default_value = "127.0.0.1:8080", global = true)]
    pub bind: String,
    /// `sqlite://path` or `postgres://…` [default: sqlite://<data-dir>/confab.db]
    #[arg(long, env = "CONFAB_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Redis URL; set it on every node to run several nodes behind a load balancer.
    #[arg(long, env = "CONFAB_REDIS_URL", global = true)]
    pub redis_url: Option<String>,
    /// Media store: any object_store URL (file://, s3://bucket, gs://, az://, memory://)
    /// [default: file://<data-dir>/media]
    #[arg(long, env = "CONFAB_MEDIA_URL", global = true)]
    pub media_url: Option<String>,
    /// External base URL (Twilio signatures, media links, e-mail links).
    #[arg(long, env = "CONFAB_PUBLIC_URL", default_value = "http://127.0.0.1:8080", global = true)]
    pub public_url: String,
    /// Keys, SQLite file and outbox files live here.
    #[arg(long, env = "CONFAB_DATA_DIR", default_value = "data", global = true)]
    pub data_dir: PathBuf,
    /// E-mail of the admin created on first start.
    #[arg(long, env = "CONFAB_ADMIN_EMAIL", default_value = "admin@localhost", global = true)]
    pub admin_email: String,
    /// Password of the admin created on first start [default: generated and printed once]
    #[arg(long, env = "CONFAB_ADMIN_PASSWORD", global = true, hide_env_values = true)]
    pub admin_password: Option<SecretString>,
    /// 32 random bytes, base64: encrypts secrets at rest [default: generated into the data dir]
    #[arg(long, env = "CONFAB_SECRET_KEY", global = true, hide_env_values = true)]
    pub secret_key: Option<SecretString>,
    /// `smtp://user:pass@host:port` [default: mail saved as .eml under <data-dir>/outbox/mail/]
    #[arg(long, env = "CONFAB_SMTP_URL", global = true, hide_env_values = true)]
    pub smtp_url: Option<SecretString>,
    /// Whether `POST /auth/signup` without an invite may create a company.
    #[arg(long, env = "CONFAB_OPEN_SIGNUP", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub open_signup: bool,
    /// Per-IP request limit on the auth routes (0 turns it off).
    #[arg(long, env = "CONFAB_AUTH_RATE_PER_MINUTE", default_value_t = 60, global = true)]
    pub auth_rate_per_minute: u32,
    /// Comma-separated origins allowed to call the API from a browser [default: same origin only]
    #[arg(long, env = "CONFAB_CORS_ORIGINS", global = true)]
    pub cors_origins: Option<String>,
    /// `tracing` filter.
    #[arg(long, env = "CONFAB_LOG", default_value = "info", global = true)]
    pub log: String,
    /// `text` or `json` (JSON lines).
    #[arg(long, env = "CONFAB_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"], global = true)]
    pub log_format: String,
    /// HTTP worker threads [default: one per core]
    #[arg(long, env = "CONFAB_WORKERS", global = true)]
    pub workers: Option<usize>,
    /// Database connections in the pool.
    #[arg(long, env = "CONFAB_DB_POOL_SIZE", default_value_t = 16, global = true)]
    pub db_pool_size: u32,
    /// The longest a write may wait, in microseconds, for later writes to share its
    /// transaction (and its `fsync`) when writes arrive one by one faster than they commit
    /// alone. The group commit waits only while waiting gathers writes (README "Decisions worth
    /// knowing"); 0 never waits.
    #[arg(long, env = "CONFAB_COMMIT_DELAY_US", default_value_t = 2000, global = true)]
    pub commit_delay_us: u64,
    /// Largest JSON body accepted outside media upload, in bytes.
    #[arg(long, env = "CONFAB_MAX_BODY_BYTES", default_value_t = 1024 * 1024, global = true)]
    pub max_body_bytes: usize,
    /// Frames queued per WebSocket before a client that does not read is closed with 1013.
    #[arg(long, env = "CONFAB_WS_QUEUE_FRAMES", default_value_t = 1024, global = true)]
    pub ws_queue_frames: usize,
    /// WebSocket connections one user may hold open on a node; the next upgrade is refused
    /// with 429 (0 turns the cap off).
    #[arg(long, env = "CONFAB_WS_MAX_PER_USER", default_value_t = 20, global = true)]
    pub ws_max_per_user: usize,
    /// A separate listen address for `GET /metrics` (e.g. `127.0.0.1:9090`); when set, the
    /// public listener no longer serves it [default: /metrics on the public listener, for
    /// loopback clients only unless CONFAB_METRICS_TOKEN is set]
    #[arg(long, env = "CONFAB_METRICS_BIND", global = true)]
    pub metrics_bind: Option<String>,
    /// Bearer token `GET /metrics` requires (from any address) when set.
    #[arg(long, env = "CONFAB_METRICS_TOKEN", global = true, hide_env_values = true)]
    pub metrics_token: Option<SecretString>,
    /// Base of the delivery worker's exponential backoff, in milliseconds (attempt n waits
    /// base·2ⁿ, capped at 10 minutes, ±25 % jitter).
    #[arg(long, env = "CONFAB_OUTBOX_BACKOFF_MS", default_value_t = 1000, global = true)]
    pub outbox_backoff_ms: u64,
    /// How long a claimed delivery job (and a running campaign) stays leased to its node; one
    /// claimed by a node that died is taken again after this. Keep it above the provider timeout.
    #[arg(long, env = "CONFAB_OUTBOX_LEASE_SECS", default_value_t = 60, global = true)]
    pub outbox_lease_secs: u64,
    /// How many provider calls the delivery worker of a node makes at once (lanes). One
    /// conversation's jobs always run in one lane, in order. A crash may repeat the send each
    /// lane had in flight, so at most this many per crash (README "Reliability").
    #[arg(long, env = "CONFAB_DELIVERY_LANES", default_value_t = 1, global = true)]
    pub delivery_lanes: usize,
    /// How long the sandbox provider takes to accept a send, in milliseconds, as a remote
    /// provider's API round trip does (WhatsApp and Twilio answer in 100–300 ms); 0 answers at
    /// once. For demos and load tests: the delivery worker waits on it as on a real provider.
    #[arg(long, env = "CONFAB_SANDBOX_DELAY_MS", default_value_t = 0, global = true)]
    pub sandbox_delay_ms: u64,
    /// Timeout of each call to a provider's API (send, media download), in seconds.
    #[arg(long, env = "CONFAB_PROVIDER_TIMEOUT_SECS", default_value_t = 15, global = true)]
    pub provider_timeout_secs: u64,
    /// Base URL of the WhatsApp Cloud API for every WhatsApp channel (sends, media lookups).
    /// Set by the operator only: tenants cannot point the server at another host.
    #[arg(long, env = "CONFAB_WHATSAPP_API_URL", default_value = "https://graph.facebook.com/v21.0", global = true)]
    pub whatsapp_api_url: String,
    /// Base URL of Twilio's REST API for every Twilio channel (sends, media).
    #[arg(long, env = "CONFAB_TWILIO_API_URL", default_value = "https://api.twilio.com", global = true)]
    pub twilio_api_url: String,
    /// Comma-separated hosts WhatsApp media may be downloaded from, over https (`*.example.com`
    /// matches its subdomains); the API URL's own host is always allowed.
    #[arg(
        long,
        env = "CONFAB_WHATSAPP_MEDIA_HOSTS",
        default_value = "*.fbsbx.com,*.whatsapp.net,*.fbcdn.net",
        global = true
    )]
    pub whatsapp_media_hosts: String,
    /// Comma-separated hosts Twilio media may be downloaded from or redirected to, over https;
    /// the API URL's own host is always allowed.
    #[arg(
        long,
        env = "CONFAB_TWILIO_MEDIA_HOSTS",
        default_value = "*.twilio.com,*.twiliocdn.com,s3-external-1.amazonaws.com",
        global = true
    )]
    pub twilio_media_hosts: String,
    /// Lets the server's outbound calls reach loopback, private, link-local and other
    /// non-public addresses. Only for tests and local mocks: never in production.
    #[arg(long, env = "CONFAB_ALLOW_PRIVATE_FETCH", default_value_t = false, action = clap::ArgAction::Set, global = true)]
    pub allow_private_fetch: bool,
    /// Lets outgoing webhooks (subscriptions, bots' `webhookUrl`) go to loopback, private and
    /// link-local addresses. Only for tests and receivers on a trusted network.
    #[arg(long, env = "CONFAB_WEBHOOK_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set, global = true)]
    pub webhook_allow_private: bool,
    /// Base of the outgoing-webhook retry backoff, in milliseconds (attempt n waits base·2ⁿ,
    /// capped at 10 minutes, ±25 % jitter).
    #[arg(long, env = "CONFAB_WEBHOOK_BACKOFF_MS", default_value_t = 1000, global = true)]
    pub webhook_backoff_ms: u64,
    /// Timeout of each outgoing-webhook delivery, in seconds; keep it below the outbox lease.
    #[arg(long, env = "CONFAB_WEBHOOK_TIMEOUT_SECS", default_value_t = 10, global = true)]
    pub webhook_timeout_secs: u64,
    /// Graph API base the storefront's Facebook login verifies tokens with.
    #[arg(long, env = "CONFAB_FACEBOOK_GRAPH_URL", default_value = "https://graph.facebook.com", global = true)]
    pub facebook_graph_url: String,
    /// Google's token-info endpoint for the storefront's Google logins.
    #[arg(
        long,
        env = "CONFAB_GOOGLE_TOKENINFO_URL",
        default_value = "https://oauth2.googleapis.com/tokeninfo",
        global = true
    )]
    pub google_tokeninfo_url: String,
    /// Apple's signing keys (JWKS) for the storefront's Sign in with Apple.
    #[arg(long, env = "CONFAB_APPLE_KEYS_URL", default_value = "https://appleid.apple.com/auth/keys", global = true)]
    pub apple_keys_url: String,
    /// Optional configuration file (TOML, keys as the flag names: `database_url = "…"`).
    #[arg(long, env = "CONFAB_CONFIG", default_value = "confab.toml", global = true)]
    pub config: PathBuf,
}

impl Cli {
    /// Parses the process arguments, then fills unset settings from the TOML file.
    pub fn load() -> anyhow::Result<Self> {
        Self::load_from(std::env::args_os().collect())
    }

    /// flag > env > file > default: clap resolves flag, env and default; every setting whose
    /// value came from the default (or nowhere) and that the file names is re-parsed as if it
    /// had been passed as a flag.
    pub fn load_from(args: Vec<OsString>) -> anyhow::Result<Self> {
        let matches = Self::command().get_matches_from(args.clone());
        let first = Self::from_arg_matches(&matches)?;
        let path = &first.config.config;
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(first),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let table: toml::Table = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let known: Vec<String> = Self::command().get_arguments().map(|a| a.get_id().to_string()).collect();
        let mut args = args;
        for (key, value) in table {
            let id = key.replace('-', "_");
            if !known.contains(&id) || id == "config" {
                bail!("{}: unknown setting `{key}`", path.display());
            }
            let from_default = matches!(matches.value_source(&id), None | Some(ValueSource::DefaultValue));
            if from_default {
                let value = match value {
                    toml::Value::String(s) => s,
                    other => other.to_string(),
                };
                args.push(format!("--{}={value}", id.replace('_', "-")).into());
            }
        }
        Ok(Self::from_arg_matches(&Self::command().try_get_matches_from(args)?)?)
    }
}

impl Config {
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("confab.db").display()))
    }

    pub fn media_url(&self) -> String {
        self.media_url.clone().unwrap_or_else(|| format!("file://{}", self.data_dir.join("media").display()))
    }

    pub fn console_url(&self) -> String {
        format!("{}/console/", self.public_url.trim_end_matches('/'))
    }

    /// Settings for tests and embedding: defaults with the given data dir and database.
    pub fn for_tests(data_dir: PathBuf, database_url: String) -> Self {
        let mut cli = Cli::try_parse_from(["confab"]).expect("defaults parse");
        cli.config.data_dir = data_dir;
        cli.config.database_url = Some(database_url);
        cli.config.bind = "127.0.0.1:0".into();
        cli.config.workers = Some(2);
        cli.config.db_pool_size = 8;
        cli.config.config = PathBuf::from("/nonexistent/confab.toml");
        // Test mocks listen on 127.0.0.1; the attack tests turn this off again.
        cli.config.allow_private_fetch = true;
        cli.config.webhook_allow_private = true;
        cli.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_fills_only_what_flags_and_env_leave_unset() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("confab.toml");
        std::fs::write(&file, "bind = \"0.0.0.0:9000\"\npublic_url = \"https://chat.example\"\nopen_signup = false\n")
            .unwrap();
        let cli = Cli::load_from(vec![
            "confab".into(),
            format!("--config={}", file.display()).into(),
            "--bind=127.0.0.1:7000".into(),
        ])
        .unwrap();
        assert_eq!(cli.config.bind, "127.0.0.1:7000", "flag beats file");
        assert_eq!(cli.config.public_url, "https://chat.example", "file beats default");
        assert!(!cli.config.open_signup);
    }

    #[test]
    fn unknown_file_setting_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("confab.toml");
        std::fs::write(&file, "bnd = \"x\"\n").unwrap();
        let err = Cli::load_from(vec!["confab".into(), format!("--config={}", file.display()).into()]).unwrap_err();
        assert!(err.to_string().contains("unknown setting"));
    }
}
