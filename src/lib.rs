//! confab: a real-time customer-messaging server. [`build`] is the one start path, used by
//! `main` and by the tests (STYLE, after zero-to-production's `Application::build`).

pub mod auth;
pub mod bootstrap;
pub mod bots;
pub mod campaigns;
pub mod codes;
pub mod console;
pub mod core;
pub mod fuzzing;
pub mod fynd;
pub mod hooks;
pub mod media;
pub mod messaging;
pub mod ops;
pub mod providers;
pub mod realtime;
pub mod users;

use std::{net::TcpListener, rc::Rc, sync::Arc};

use actix::Actor;
use actix_http::HttpService;
use actix_service::{IntoServiceFactory, ServiceFactoryExt, fn_factory, fn_service, map_config};
use actix_web::{
    App, HttpServer,
    dev::{AppConfig, ServerHandle, ServiceFactory},
    middleware::from_fn,
    web,
};
use anyhow::Context;
use tracing_actix_web::TracingLogger;

use crate::{
    bootstrap::Bootstrapped,
    core::{
        auth::{
            guard,
            jwt::Keys,
            ratelimit::{self, AuthLimiter},
            session::SessionCache,
        },
        config::Config,
        crypto::DataKey,
        db::Pool,
        error::{self, ApiError},
        media::MediaStore,
        metrics::{self, Metrics},
        net, notify,
        realtime::{
            broker::Broker,
            hub::{Bus, Hub, Shutdown},
            limit::WsSlots,
            presence::Presence,
            tickets::Tickets,
        },
        redact::RedactedRootSpan,
        state::AppState,
    },
    messaging::channel_cache::WebhookChannels,
};

/// A bound, not yet running server.
pub struct Server {
    pub port: u16,
    /// The port of the dedicated `/metrics` listener (`CONFAB_METRICS_BIND`), when there is one.
    pub metrics_port: Option<u16>,
    pub state: web::Data<AppState>,
    /// Set on the first start of an empty database: the admin credentials to print once.
    pub bootstrap: Option<Bootstrapped>,
    server: actix_web::dev::Server,
    metrics_server: Option<actix_web::dev::Server>,
}

impl Server {
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped. SIGTERM and SIGINT drain (CONTRACT §1): stop accepting, close
    /// WebSockets with 1001, finish in-flight requests (up to 30 s), then return.
    pub async fn run(self) -> std::io::Result<()> {
        let (handle, hub) = (self.server.handle(), self.state.hub.clone());
        actix_web::rt::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: closing WebSockets, draining requests");
            let _ = hub.send(Shutdown).await;
            handle.stop(true).await;
        });
        // The metrics listener lives exactly as long as the main one.
        let metrics = self.metrics_server.map(|server| {
            let handle = server.handle();
            actix_web::rt::spawn(server);
            handle
        });
        let result = self.server.await;
        if let Some(handle) = metrics {
            handle.stop(true).await;
        }
        result
    }
}

/// Opens storage (running migrations), loads keys, bootstraps an empty database and binds.
pub async fn build(config: Config) -> anyhow::Result<Server> {
    let config = Arc::new(config);
    let cfg = config.clone();
    let (db, data_key, keys, bootstrap) = web::block(move || -> anyhow::Result<_> {
        let db = Pool::connect(&cfg.database_url(), cfg.db_pool_size)?
            .with_commit_delay(std::time::Duration::from_micros(cfg.commit_delay_us));
        db.migrate()?;
        let data_key = DataKey::load(cfg.secret_key.as_ref(), &cfg.data_dir)?;
        let keys = Keys::load_or_create(&db, &data_key)?;
        let bootstrap = bootstrap::run(&db, &cfg, &data_key)?;
        Ok((db, data_key, keys, bootstrap))
    })
    .await??;
    let media_url = config.media_url();
    let media = web::block(move || MediaStore::open(&media_url)).await??;

    let broker = match &config.redis_url {
        Some(url) => Broker::with_redis(url).await.context("connecting to Redis")?,
        None => Broker::local(),
    };
    let metrics = Metrics::new()?;
    metrics.registry.register(Box::new(keys.reloads.clone()))?;
    db.register_metrics(&metrics.registry)?;
    let sessions = SessionCache::default();
    let hub = Hub::new(metrics.clone(), sessions.clone(), db.clone()).start();
    let tickets = Tickets::new(&broker);
    let mut events = broker.subscribe();
    let hub_feed = hub.clone();
    actix_web::rt::spawn(async move {
        loop {
            match events.recv().await {
                Ok(bus) => {
                    if hub_feed.send(bus).await.is_err() {
                        break;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "hub lagged behind the broker; subscribers catch up from the database");
                    if hub_feed.send(Bus::CatchUp).await.is_err() {
                        break;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    let auth_limiter = Arc::new(AuthLimiter::new(config.auth_rate_per_minute, broker.redis(), &data_key));
    let presence = Presence::start(db.clone());
    let state = web::Data::new(AppState {
        config: config.clone(),
        db,
        data_key: Arc::new(data_key),
        keys: Arc::new(keys),
        media,
        sessions,
        auth_limiter,
        mail: notify::EmailSender::from_config(&config)?,
        sms: notify::SmsSender::from_config(&config),
        metrics,
        broker,
        outbox_wake: Arc::new(tokio::sync::Notify::new()),
        webhook_wake: Arc::new(tokio::sync::Notify::new()),
        campaign_wake: Arc::new(tokio::sync::Notify::new()),
        hub,
        tickets,
        ws_slots: WsSlots::new(config.ws_max_per_user),
        presence,
        http: net::client(&config)?,
    });
    actix_web::rt::spawn(providers::worker::run(state.get_ref().clone()));
    actix_web::rt::spawn(hooks::worker::run(state.get_ref().clone()));
    actix_web::rt::spawn(campaigns::worker::run(state.get_ref().clone()));
    state.db.spawn_checkpointer();
    messaging::service::spawn_indexer(state.get_ref().clone());

    media::service::spawn_housekeeping(state.clone());

    let listener = TcpListener::bind(&config.bind).with_context(|| format!("binding {}", config.bind))?;
    let port = listener.local_addr()?.port();
    let app_state = state.clone();
    // The parts middleware and handlers take on their own (besides the whole state).
    let metrics_data = web::Data::new(state.metrics.clone());
    let limiter_data = web::Data::from(state.auth_limiter.clone());
    let webhook_channels = web::Data::new(WebhookChannels::default());
    let max_body = config.max_body_bytes;
    let cors_config = config.clone();
    let app = move || {
        App::new()
            .app_data(app_state.clone())
            .app_data(metrics_data.clone())
            .app_data(limiter_data.clone())
            .app_data(webhook_channels.clone())
            .app_data(web::PayloadConfig::new(max_body))
            .app_data(web::JsonConfig::default().limit(max_body).error_handler(error::handlers::json))
            .app_data(web::QueryConfig::default().error_handler(error::handlers::query))
            .app_data(web::PathConfig::default().error_handler(error::handlers::path))
            .app_data(web::FormConfig::default().limit(max_body).error_handler(error::handlers::form))
            .wrap(from_fn(guard::authenticate))
            .wrap(from_fn(ratelimit::limit))
            .wrap(from_fn(error::unify))
            .wrap(from_fn(metrics::track))
            .wrap(TracingLogger::<RedactedRootSpan>::new())
            .wrap(actix_web::middleware::Condition::new(
                fynd::cors::enabled(&cors_config),
                fynd::cors::middleware(&cors_config),
            ))
            // The router tries routes in this order, a regex per pattern with a parameter: the
            // hot paths (provider webhooks, the WebSocket, agents' sends and reads) come first.
            // No two route sets here share a path.
            .configure(providers::webhooks::configure)
            .configure(realtime::routes::configure)
            .configure(messaging::routes::configure)
            .configure(ops::routes::configure)
            .configure(ops::openapi::configure)
            .configure(auth::routes::configure)
            .configure(messaging::admin::configure)
            .configure(messaging::canned::configure)
            .configure(messaging::teams::configure)
            .configure(fynd::configure)
            .configure(console::configure)
            .configure(auth::arc::configure)
            .configure(media::routes::configure)
            .configure(hooks::routes::configure)
            .configure(bots::routes::configure)
            .configure(campaigns::routes::configure)
            .default_service(web::to(|| async { Err::<actix_web::HttpResponse, _>(ApiError::NotFound) }))
    };
    // actix-web's `HttpServer`, plus the WebSocket upgrade: requests with `Connection: upgrade`
    // go through the same application, and an accepted WebSocket takes its socket over from
    // actix-http (issue 20, `realtime::upgrade`).
    let addr = listener.local_addr()?;
    let builder = actix_server::Server::build();
    let shutdown = builder.graceful_shutdown_signal();
    let mut builder = builder
        .listen("confab", listener, move || {
            let shutdown = shutdown.clone();
            let upgrade_app = app.clone();
            let host = addr.to_string();
            let upgrade_host = host.clone();
            HttpService::build()
                .graceful_shutdown_signal(move || {
                    let shutdown = shutdown.clone();
                    async move { shutdown.notified().await }
                })
                .keep_alive(actix_http::KeepAlive::default())
                .client_request_timeout(std::time::Duration::from_secs(5))
                .client_disconnect_timeout(std::time::Duration::from_secs(1))
                .h1_allow_half_closed(true)
                .local_addr(addr)
                .upgrade(fn_factory(move || {
                    let factory = upgrade_app().into_factory();
                    let config = AppConfig::__priv_test_new(false, upgrade_host.clone(), addr);
                    async move {
                        let app = Rc::new(factory.new_service(config).await.map_err(|_| ())?);
                        Ok::<_, ()>(fn_service(move |(req, framed)| realtime::upgrade::serve(app.clone(), req, framed)))
                    }
                }))
                .h1(map_config(app().into_factory().map_err(|err: actix_web::Error| err.error_response()), move |_| {
                    AppConfig::__priv_test_new(false, host.clone(), addr)
                }))
                .tcp()
        })?
        .disable_signals()
        .shutdown_timeout(30);
    if let Some(workers) = config.workers {
        builder = builder.workers(workers);
    }
    let server = builder;
    let (metrics_port, metrics_server) = match &config.metrics_bind {
        Some(bind) => {
            let (port, server) = metrics_listener(bind, state.clone())?;
            (Some(port), Some(server))
        }
        None => (None, None),
    };
    Ok(Server { port, metrics_port, state, bootstrap, server: server.run(), metrics_server })
}

/// `CONFAB_METRICS_BIND`: a listener that serves `GET /metrics` and nothing else, so the
/// metrics can stay on a private interface while the API is public (issue 17).
fn metrics_listener(bind: &str, state: web::Data<AppState>) -> anyhow::Result<(u16, actix_web::dev::Server)> {
    let listener = TcpListener::bind(bind).with_context(|| format!("binding the metrics listener {bind}"))?;
    let port = listener.local_addr()?.port();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::Data::new(ops::routes::MetricsListener))
            .wrap(from_fn(error::unify))
            .service(ops::routes::metrics_text)
            .default_service(web::to(|| async { Err::<actix_web::HttpResponse, _>(ApiError::NotFound) }))
    })
    .listen(listener)?
    .workers(1)
    .disable_signals()
    .shutdown_timeout(5)
    .run();
    Ok((port, server))
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Logging to stdout: `CONFAB_LOG` filter, text or JSON lines.
pub fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log).unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    let _ = if config.log_format == "json" { builder.json().try_init() } else { builder.try_init() };
}
