use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, get, http::header, web};
use serde::Serialize;
use utoipa::ToSchema;

use secrecy::ExposeSecret;

use crate::core::{
    auth::guard::bearer_token,
    config::Config,
    crypto::{constant_time_eq, token_hash},
    error::{ApiError, ApiResult, ErrorBody},
    state::AppState,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(root).service(healthz).service(readyz).service(metrics_text);
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(root, healthz, readyz, metrics_text), components(schemas(RootView, StatusView)))]
pub struct Api;

#[derive(Serialize, ToSchema)]
pub struct RootView {
    name: &'static str,
    version: &'static str,
    openapi: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct StatusView {
    status: &'static str,
}

/// CONTRACT §3 `GET /`: API information, or the console for a browser.
#[utoipa::path(tag = "ops", responses((status = 200, body = RootView), (status = 303, description = "to /console/ for Accept: text/html")))]
#[get("/")]
async fn root(req: HttpRequest) -> HttpResponse {
    let wants_html =
        req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/html"));
    if wants_html {
        return HttpResponse::SeeOther().insert_header((header::LOCATION, "/console/")).finish();
    }
    HttpResponse::Ok().json(RootView { name: "confab", version: env!("CARGO_PKG_VERSION"), openapi: "/openapi.json" })
}

/// The process is alive.
#[utoipa::path(tag = "ops", responses((status = 200, body = StatusView)))]
#[get("/healthz")]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(StatusView { status: "ok" })
}

/// The database (and, when configured, the broker and media store) answer; else 503 naming
/// the failing part.
#[utoipa::path(tag = "ops", responses((status = 200, body = StatusView), (status = 503, body = ErrorBody)))]
#[get("/readyz")]
async fn readyz(st: web::Data<AppState>) -> ApiResult<HttpResponse> {
    if let Err(e) = st.db.ping(Duration::from_secs(2)).await {
        tracing::warn!(error = %e, "readiness: database unreachable");
        return Err(ApiError::Unavailable("database".into()));
    }
    if let Some(mut redis) = st.broker.redis() {
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut redis);
        if !matches!(tokio::time::timeout(Duration::from_secs(2), ping).await, Ok(Ok(_))) {
            tracing::warn!("readiness: Redis unreachable");
            return Err(ApiError::Unavailable("broker (Redis)".into()));
        }
    }
    if let Err(e) = st.media.ping(Duration::from_secs(2)).await {
        tracing::warn!(error = %e, "readiness: media store unreachable");
        return Err(ApiError::Unavailable("media store".into()));
    }
    Ok(HttpResponse::Ok().json(StatusView { status: "ready" }))
}

/// Marks the app of the dedicated metrics listener (`CONFAB_METRICS_BIND`).
#[derive(Debug, Clone, Copy)]
pub struct MetricsListener;

/// Prometheus text exposition. Who may read it (issue 17): with `CONFAB_METRICS_BIND` only
/// that listener serves it (404 on the public one); with `CONFAB_METRICS_TOKEN` every request
/// needs `Authorization: Bearer <token>` (else 401); with neither, the public listener answers
/// only loopback clients that came through no proxy (else 403).
#[utoipa::path(tag = "ops", responses((status = 200, content_type = "text/plain", body = String),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
#[get("/metrics")]
pub async fn metrics_text(req: HttpRequest, st: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let dedicated = req.app_data::<web::Data<MetricsListener>>().is_some();
    metrics_access(&req, &st.config, dedicated)?;
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(st.metrics.render()))
}

/// Headers a reverse proxy adds: a request carrying one is not local, whatever its peer.
const PROXY_HEADERS: [&str; 3] = ["forwarded", "x-forwarded-for", "x-real-ip"];

fn metrics_access(req: &HttpRequest, config: &Config, dedicated: bool) -> ApiResult<()> {
    if config.metrics_bind.is_some() && !dedicated {
        return Err(ApiError::NotFound);
    }
    if let Some(token) = &config.metrics_token {
        // Digests compared, so neither the token's bytes nor its length leak through timing.
        let given = bearer_token(req).unwrap_or_default();
        let expected = token_hash(token.expose_secret());
        return if constant_time_eq(token_hash(given).as_bytes(), expected.as_bytes()) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized("invalid_token"))
        };
    }
    if dedicated {
        return Ok(());
    }
    let loopback = req.peer_addr().is_some_and(|a| a.ip().to_canonical().is_loopback());
    let proxied = PROXY_HEADERS.iter().any(|h| req.headers().contains_key(*h));
    if loopback && !proxied { Ok(()) } else { Err(ApiError::Forbidden) }
}
