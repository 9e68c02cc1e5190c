//! confab: a real-time customer-messaging server. [`build`] is the one start path, used by
//! `main` and by the tests (STYLE, after zero-to-production's `Application::build`).

pub mod auth;
pub mod bootstrap;
pub mod config;
pub mod crypto;
pub mod db;
pub mod error;
pub mod extract;
pub mod media;
pub mod ops;
pub mod state;
pub mod types;
pub mod users;

use std::{net::TcpListener, sync::Arc};

use actix_web::{App, HttpServer, dev::ServerHandle, middleware::from_fn, web};
use anyhow::Context;
use tracing_actix_web::TracingLogger;

use crate::{
    auth::{jwt::Keys, session::SessionCache},
    bootstrap::Bootstrapped,
    config::Config,
    crypto::DataKey,
    db::Pool,
    error::ApiError,
    ops::metrics::Metrics,
    state::AppState,
};

/// A bound, not yet running server.
pub struct Server {
    pub port: u16,
    pub state: web::Data<AppState>,
    /// Set on the first start of an empty database: the admin credentials to print once.
    pub bootstrap: Option<Bootstrapped>,
    server: actix_web::dev::Server,
}

impl Server {
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped. SIGTERM and SIGINT drain: stop accepting, finish in-flight
    /// requests (up to 30 s), then return.
    pub async fn run(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Opens storage (running migrations), loads keys, bootstraps an empty database and binds.
pub async fn build(config: Config) -> anyhow::Result<Server> {
    let config = Arc::new(config);
    let cfg = config.clone();
    let (db, data_key, keys, bootstrap) = web::block(move || -> anyhow::Result<_> {
        let db = Pool::connect(&cfg.database_url(), cfg.db_pool_size)?;
        db.migrate()?;
        let data_key = DataKey::load(cfg.secret_key.as_ref(), &cfg.data_dir)?;
        let keys = Keys::load_or_create(&db, &data_key)?;
        let bootstrap = bootstrap::run(&db, &cfg, &data_key)?;
        Ok((db, data_key, keys, bootstrap))
    })
    .await??;
    let media_url = config.media_url();
    let media = web::block(move || media::MediaStore::open(&media_url)).await??;

    let state = web::Data::new(AppState {
        config: config.clone(),
        db,
        data_key: Arc::new(data_key),
        keys: Arc::new(keys),
        media,
        sessions: SessionCache::default(),
        metrics: Metrics::new()?,
    });

    media::service::spawn_housekeeping(state.clone());

    let listener = TcpListener::bind(&config.bind).with_context(|| format!("binding {}", config.bind))?;
    let port = listener.local_addr()?.port();
    let app_state = state.clone();
    let max_body = config.max_body_bytes;
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .app_data(web::PayloadConfig::new(max_body))
            .app_data(web::JsonConfig::default().limit(max_body).error_handler(error::handlers::json))
            .app_data(web::QueryConfig::default().error_handler(error::handlers::query))
            .app_data(web::PathConfig::default().error_handler(error::handlers::path))
            .app_data(web::FormConfig::default().limit(max_body).error_handler(error::handlers::form))
            .wrap(from_fn(auth::extract::authenticate))
            .wrap(from_fn(error::unify))
            .wrap(from_fn(ops::metrics::track))
            .wrap(TracingLogger::default())
            .configure(ops::routes::configure)
            .configure(auth::routes::configure)
            .configure(media::routes::configure)
            .default_service(web::to(|| async { Err::<actix_web::HttpResponse, _>(ApiError::NotFound) }))
    })
    .listen(listener)?
    .shutdown_timeout(30);
    if let Some(workers) = config.workers {
        server = server.workers(workers);
    }
    Ok(Server { port, state, bootstrap, server: server.run() })
}

/// Logging to stdout: `CONFAB_LOG` filter, text or JSON lines.
pub fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log).unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    let _ = if config.log_format == "json" { builder.json().try_init() } else { builder.try_init() };
}
