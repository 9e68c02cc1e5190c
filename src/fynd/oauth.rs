//! The Fynd SDK's platform OAuth (CONTRACT §9): `POST /service/panel/authentication/v1.0/
//! company/{company_id}/oauth/token` (form-encoded, as the SDK's `OAuthClient` sends it) and
//! `…/oauth/offline-token` (JSON). The SDK authenticates with `Authorization: Basic
//! base64(apiKey:apiSecret)`: an auth client (`/auth-clients`) of that company, confidential,
//! whose `grants` include the grant used. The credentials may also come as `client_id` and
//! `client_secret` in the body.
//!
//! Grants:
//! - `client_credentials`: a token for the client's own service account (role `service`:
//!   company-admin API access, no password, never an agent). Deleting the client revokes it.
//! - `authorization_code`: a code from `POST /auth/login` with this client, redeemed by the same
//!   single-use exchange as `POST /auth/token`.
//! - `refresh_token`: rotation with reuse detection, only for sessions this client opened.
//!
//! Every failure is 401 with the unified error body and an OAuth error code
//! (`invalid_client`, `unauthorized_client`, `invalid_grant`) or 400 `unsupported_grant_type`.

use actix_web::{HttpRequest, HttpResponse, post, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    auth::{
        arc,
        clients::{self, ClientRow},
        service::{self, Issued, Origin},
    },
    core::{
        auth::{guard::credential_pair, session},
        crypto::constant_time_eq,
        db::Db,
        error::{ApiError, ApiResult, ErrorBody},
        extract::JsonOrForm,
        state::AppState,
        types::{Role, now},
    },
    users::{
        model::{NewUser, UserRow},
        store,
    },
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(oauth_token).service(offline_token);
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(oauth_token, offline_token), components(schemas(OAuthTokenRequest, OAuthTokenView)))]
pub struct Api;

/// The token request of the SDK's `OAuthClient` (RFC 6749 §4).
#[derive(Debug, Deserialize, ToSchema)]
pub struct OAuthTokenRequest {
    /// `client_credentials`, `authorization_code` or `refresh_token`.
    pub grant_type: String,
    pub code: Option<String>,
    pub refresh_token: Option<String>,
    /// Instead of the Basic header.
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    /// Accepted and ignored: a token carries its account's role, not scopes.
    #[schema(value_type = Option<Object>)]
    pub scope: Option<serde_json::Value>,
}

/// The answer the SDK's `setToken` reads.
#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthTokenView {
    pub access_token: String,
    pub token_type: String,
    /// Seconds.
    pub expires_in: i64,
    /// Milliseconds since the epoch.
    pub expires_at: i64,
    pub refresh_token: String,
    pub scope: Vec<String>,
}

impl From<Issued> for OAuthTokenView {
    fn from(i: Issued) -> Self {
        let expires_in = ((i.expires - now().and_utc().timestamp_millis()) / 1000).max(0);
        Self {
            access_token: i.access_token,
            token_type: "Bearer".into(),
            expires_in,
            expires_at: i.expires,
            refresh_token: i.refresh_token,
            scope: Vec::new(),
        }
    }
}

/// Issues platform tokens to an auth client of the company (see the module doc).
#[utoipa::path(tag = "fynd-platform", request_body(content = OAuthTokenRequest, content_type = "application/x-www-form-urlencoded"),
    params(("company_id" = i64, Path)),
    responses((status = 200, body = OAuthTokenView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
#[post("/service/panel/authentication/v1.0/company/{company_id}/oauth/token")]
async fn oauth_token(
    st: web::Data<AppState>,
    req: HttpRequest,
    origin: Origin,
    company_id: web::Path<String>,
    JsonOrForm(b): JsonOrForm<OAuthTokenRequest>,
) -> ApiResult<HttpResponse> {
    let issued = grant(&st, &req, &origin, &company_id, b).await?;
    Ok(HttpResponse::Ok().json(OAuthTokenView::from(issued)))
}

/// The SDK's `getOfflineAccessToken` (JSON body, same grants and answer as `…/oauth/token`).
#[utoipa::path(tag = "fynd-platform", request_body = OAuthTokenRequest, params(("company_id" = i64, Path)),
    responses((status = 200, body = OAuthTokenView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
#[post("/service/panel/authentication/v1.0/company/{company_id}/oauth/offline-token")]
async fn offline_token(
    st: web::Data<AppState>,
    req: HttpRequest,
    origin: Origin,
    company_id: web::Path<String>,
    JsonOrForm(b): JsonOrForm<OAuthTokenRequest>,
) -> ApiResult<HttpResponse> {
    let issued = grant(&st, &req, &origin, &company_id, b).await?;
    Ok(HttpResponse::Ok().json(OAuthTokenView::from(issued)))
}

async fn grant(
    st: &AppState,
    req: &HttpRequest,
    origin: &Origin,
    company_id: &str,
    b: OAuthTokenRequest,
) -> ApiResult<Issued> {
    let client = authenticate(st, req, company_id, b.client_id, b.client_secret).await?;
    let allowed =
        |grant: &str| if client.allows(grant) { Ok(()) } else { Err(ApiError::Unauthorized("unauthorized_client")) };
    match b.grant_type.as_str() {
        clients::GRANT_CLIENT_CREDENTIALS => {
            allowed(clients::GRANT_CLIENT_CREDENTIALS)?;
            let cl = client.clone();
            let account = st.db.write(move |c| service_account(c, &cl)).await?;
            arc::issue_tokens(st, account, client, origin).await
        }
        clients::GRANT_CODE => {
            allowed(clients::GRANT_CODE)?;
            let code = b.code.ok_or_else(|| ApiError::field("code", "is required for authorization_code"))?;
            arc::redeem_code(st, origin, &code, client.client_id, None).await
        }
        "refresh_token" => {
            let token =
                b.refresh_token.ok_or_else(|| ApiError::field("refresh_token", "is required for refresh_token"))?;
            let t = token.clone();
            let owner = st.db.run(move |c| session::client_of_refresh(c, &t)).await?;
            if !owner.is_some_and(|o| constant_time_eq(o.as_bytes(), client.client_id.as_bytes())) {
                return Err(ApiError::Unauthorized("invalid_grant"));
            }
            service::refresh(st, token, origin).await
        }
        _ => Err(ApiError::bad_request(
            "unsupported_grant_type",
            "grant_type must be client_credentials, authorization_code or refresh_token",
        )),
    }
}

/// Authenticates the calling client: Basic header (or body credentials), confidential, of the
/// path's company. A mismatch of any kind is 401 `invalid_client`.
async fn authenticate(
    st: &AppState,
    req: &HttpRequest,
    company_id: &str,
    body_id: Option<String>,
    body_secret: Option<String>,
) -> ApiResult<ClientRow> {
    let (id, secret) = match credential_pair(req, "basic") {
        Some(pair) => pair,
        None => (body_id.unwrap_or_default(), body_secret.unwrap_or_default()),
    };
    let client = clients::authenticate(st, &id, Some(&secret)).await?;
    if client.is_public() || company_id.parse::<i64>().ok() != Some(client.company_id) {
        return Err(ApiError::Unauthorized("invalid_client"));
    }
    Ok(client)
}

/// The client's service account, created on its first client-credentials grant. It is a user
/// of the client's company with role `service`, no password and no contact, keyed by
/// `external_id = "auth_client:<client_id>"`.
fn service_account(c: &mut Db, client: &ClientRow) -> ApiResult<UserRow> {
    let key = format!("auth_client:{}", client.client_id);
    if let Some(user) = store::find_by_external_id(c, client.company_id, &key)? {
        return Ok(user);
    }
    let t = now();
    let user = store::insert_user(
        c,
        &NewUser {
            company_id: client.company_id,
            application_id: None,
            role: Role::Service.as_str(),
            first_name: "API client",
            last_name: &client.client_id,
            password_hash: None,
            status: "active",
            created_at: t,
            updated_at: t,
        },
    )?;
    store::set_external_id(c, user.id, &key)?;
    Ok(UserRow { external_id: Some(key), ..user })
}
