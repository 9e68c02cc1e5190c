//! Authentication middleware and the role extractors. The middleware resolves a bearer token
//! once per request (JWT signature, then the session's revocation through the 2-second cache)
//! and stores the outcome in the request extensions; `AuthUser`, `Agent` and `Admin` read it
//! without awaiting, so a body error can never mask an auth error (STYLE "Auth and tenancy").

use std::{
    future::{Ready, ready},
    ops::Deref,
};

use actix_web::{
    Error, FromRequest, HttpMessage, HttpRequest,
    body::MessageBody,
    dev::{Payload, ServiceRequest, ServiceResponse},
    middleware::Next,
    web::Data,
};

use crate::core::{
    auth::session::{BOT_TOKEN_PREFIX, Principal, bot_session_id},
    error::{ApiError, ApiResult},
    state::AppState,
    types::Role,
};

/// The outcome of bearer authentication: the principal, or the 401 code to answer with.
#[derive(Debug, Clone)]
struct Authn(Result<Principal, &'static str>);

pub fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(actix_web::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

/// A `scheme base64(id:secret)` credential (HTTP Basic, or Fynd's application bearer): the
/// decoded pair, or `None` when the header is missing, of another scheme or malformed.
pub fn credential_pair(req: &HttpRequest, scheme: &str) -> Option<(String, String)> {
    use base64::{Engine, engine::general_purpose::STANDARD};
    let value = req.headers().get(actix_web::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (given, encoded) = value.split_once(' ')?;
    if !given.eq_ignore_ascii_case(scheme) {
        return None;
    }
    let encoded = encoded.trim();
    let decoded = STANDARD.decode(encoded.trim_end_matches('=')).or_else(|_| STANDARD.decode(encoded)).ok()?;
    let (id, secret) = String::from_utf8(decoded).ok()?.split_once(':').map(|(a, b)| (a.to_owned(), b.to_owned()))?;
    Some((id, secret))
}

/// Verifies an access token (or an agent bot's `cfbot_` token) and checks its session. Used by
/// the middleware and by the WebSocket upgrade.
pub async fn resolve(st: &AppState, token: &str) -> ApiResult<Principal> {
    if token.starts_with(BOT_TOKEN_PREFIX) {
        return match st.sessions.principal(&st.db, &bot_session_id(token)).await? {
            Some(p) if p.role == Role::Bot => Ok(p),
            _ => Err(ApiError::Unauthorized("invalid_token")),
        };
    }
    let claims = st.keys.verify_or_reload(&st.db, token).await?;
    match st.sessions.principal(&st.db, &claims.sid).await? {
        Some(p) if p.user_id.to_string() == claims.sub => Ok(p),
        _ => Err(ApiError::Unauthorized("session_revoked")),
    }
}

pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    // Only JWT-shaped bearers and bot tokens are ours; Fynd application credentials are base64 pairs that
    // their own extractor reads (CONTRACT §9).
    let token = bearer_token(req.request())
        .filter(|t| t.matches('.').count() == 2 || t.starts_with(BOT_TOKEN_PREFIX))
        .map(str::to_owned);
    if let Some(token) = token
        && let Some(st) = req.app_data::<Data<AppState>>().cloned()
    {
        let outcome = match resolve(&st, &token).await {
            Ok(p) => Ok(p),
            Err(ApiError::Unauthorized(code)) => Err(code),
            Err(e) => return Err(e.into()),
        };
        req.extensions_mut().insert(Authn(outcome));
    }
    next.call(req).await
}

/// The caller resolved by the middleware, or the 401 to answer with.
pub fn principal(req: &HttpRequest) -> ApiResult<Principal> {
    match req.extensions().get::<Authn>() {
        Some(Authn(Ok(p))) => Ok(p.clone()),
        Some(Authn(Err(code))) => Err(ApiError::Unauthorized(code)),
        None => Err(ApiError::Unauthorized("unauthorized")),
    }
}

macro_rules! role_extractor {
    ($(#[$doc:meta])* $name:ident, $allowed:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name(pub Principal);

        impl Deref for $name {
            type Target = Principal;
            fn deref(&self) -> &Principal {
                &self.0
            }
        }

        impl FromRequest for $name {
            type Error = ApiError;
            type Future = Ready<Result<Self, ApiError>>;

            fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
                let allowed: fn(Role) -> bool = $allowed;
                ready(principal(req).and_then(|p| if allowed(p.role) { Ok(Self(p)) } else { Err(ApiError::Forbidden) }))
            }
        }
    };
}

role_extractor!(
    /// Any authenticated user (customers included).
    AuthUser,
    |_| true
);
role_extractor!(
    /// Agents, admins and agent bots: the messaging API (CONTRACT §2 roles, issue 23).
    Agent,
    Role::works_conversations
);
role_extractor!(
    /// Company admins (and auth clients' service accounts): agents, channels, templates,
    /// applications, auth clients, the Fynd platform API.
    Admin,
    |r| matches!(r, Role::Admin | Role::Service)
);
