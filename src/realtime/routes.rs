//! `POST /ws/ticket` and `GET /ws` (CONTRACT §4).

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::session::Accepted;
use crate::core::{
    auth::guard::{Agent, bearer_token, resolve},
    error::{ApiError, ApiResult, ErrorBody},
    realtime::tickets,
    state::AppState,
    types::{now, rfc3339},
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(ticket).service(ws);
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(ticket, ws), components(schemas(TicketView)))]
pub struct Api;

#[derive(Serialize, ToSchema)]
pub struct TicketView {
    /// Single use, valid 30 s: `GET /ws?ticket=…`.
    pub ticket: String,
    pub expires: String,
}

/// A WebSocket ticket for browsers, which cannot set headers on the upgrade.
#[utoipa::path(tag = "realtime", security(("bearer" = [])),
    responses((status = 200, body = TicketView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
#[post("/ws/ticket")]
async fn ticket(agent: Agent, st: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let ticket = st.tickets.issue(&agent).await?;
    let expires = now() + chrono::Duration::from_std(tickets::TTL).unwrap_or_default();
    Ok(HttpResponse::Ok().json(TicketView { ticket, expires: rfc3339(expires) }))
}

#[derive(Deserialize)]
struct WsQuery {
    ticket: Option<String>,
}

/// The real-time API: upgrade with `Authorization: Bearer` (an access token or a bot token) or
/// `?ticket=`; agents, admins and agent bots only; at most `CONFAB_WS_MAX_PER_USER` (default 20) open connections per user on a node,
/// the next upgrade is 429. Frames and guarantees: CONTRACT §4 and the README.
#[utoipa::path(tag = "realtime", params(("ticket" = Option<String>, Query, description = "from POST /ws/ticket")),
    responses((status = 101, description = "switching protocols"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "the user already holds the maximum of open connections on this node")))]
#[get("/ws")]
async fn ws(req: HttpRequest, st: web::Data<AppState>, q: web::Query<WsQuery>) -> ApiResult<HttpResponse> {
    let principal = match (&q.ticket, bearer_token(&req)) {
        (Some(t), _) => {
            let p = st.tickets.take(t).await?.ok_or(ApiError::Unauthorized("invalid_ticket"))?;
            // The session may have ended since the ticket was minted.
            st.sessions.principal(&st.db, &p.session_id).await?.ok_or(ApiError::Unauthorized("session_revoked"))?
        }
        (None, Some(token)) => resolve(&st, token).await?,
        (None, None) => return Err(ApiError::Unauthorized("unauthorized")),
    };
    if !principal.role.works_conversations() {
        return Err(ApiError::Forbidden);
    }
    let mut handshake =
        actix_http::ws::handshake(req.head()).map_err(|e| ApiError::bad_request("not_websocket", e.to_string()))?;
    // Refused before the upgrade, so the client sees an HTTP status (issue 17).
    let slot = st.ws_slots.acquire(principal.user_id).ok_or(ApiError::TooManyRequests { retry_after_secs: 1 })?;
    let mut res = HttpResponse::from(handshake.finish().map_into_boxed_body());
    // The upgrade (`upgrade.rs`) takes the socket over with this once the 101 is written.
    res.extensions_mut().insert(Accepted { st: st.get_ref().clone(), principal, slot });
    Ok(res)
}
