//! The ARC code flow and account routes (CONTRACT §5, seed 003): `POST /auth/login` with a
//! client (→ `{code}`), `POST /auth/token`, `POST /auth/login-token`,
//! `PATCH /auth/change-password`, `POST /keycloak/logout` and the admins' `GET /auth/audit`.
//!
//! Where ARC is weak this is strict (auth.md §1.13): codes are opaque, stored hashed, single
//! use through one `UPDATE … WHERE used_at IS NULL`, live at most 60 s, are bound to their
//! client and to a PKCE S256 challenge when one was sent; redeeming one takes the client's
//! secret (confidential clients) or the PKCE verifier (public clients, whose codes always carry
//! a challenge); presenting a used code again revokes the session the first exchange opened.
//! Changing the password revokes the other sessions.

use actix_web::{HttpRequest, HttpResponse, get, patch, post, web};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{Duration, NaiveDateTime};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};

use super::{
    clients::{self, ClientRow},
    otp, password,
    routes::TokenView,
    service::{self, Issued, Origin},
    totp,
};
use crate::{
    core::{
        auth::{
            guard::{Admin, AuthUser, credential_pair},
            lockout,
            session::{self, NewSession},
        },
        crypto::{constant_time_eq, random_token, token_hash},
        db::{Db, schema::auth_codes},
        error::{ApiError, ApiResult, ErrorBody},
        extract::{Json, JsonOrForm},
        query::Paging,
        state::AppState,
        types::{Email, now, rfc3339},
    },
    users::{model::UserRow, store},
};

/// Every ARC route: this module's, the auth clients, OTP and authenticator apps.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.configure(clients::configure)
        .configure(super::oauth::configure)
        .configure(super::saml::configure)
        .configure(otp::configure)
        .configure(totp::configure)
        .configure(super::recovery::configure);
    cfg.service(token).service(login_token).service(change_password).service(keycloak_logout).service(audit);
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(token, login_token, change_password, keycloak_logout, audit),
    components(schemas(ArcLoginBody, CodeView, TokenBody, ChangePasswordBody, SuccessView, AuditPage, AuditView))
)]
pub struct Api;

/// ARC `LoginRequest`, plus the optional PKCE challenge of RFC 7636.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ArcLoginBody {
    pub client_id: String,
    /// Required for confidential clients; public clients have none.
    pub client_secret: Option<String>,
    /// The user's e-mail.
    pub username: String,
    pub password: String,
    /// base64url(SHA-256(code_verifier)); required for public clients.
    pub code_challenge: Option<String>,
    /// Only `S256` (the default when a challenge is sent).
    pub code_challenge_method: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CodeView {
    pub code: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SuccessView {
    pub success: bool,
}

/// `POST /auth/login` with `client_id` (the messaging-family body has none): the client
/// authenticates with its secret, the user with e-mail and password under brute-force
/// protection; the answer is a code for `POST /auth/token`. A user with an authenticator app
/// gets `{code, mfa: true}` instead: that code only opens the second step
/// (`POST /auth/verify-otp` with `key` = e-mail and `otp` = authenticator or recovery code).
pub async fn code_login(st: &AppState, origin: &Origin, b: ArcLoginBody) -> ApiResult<HttpResponse> {
    let client = clients::authenticate(st, &b.client_id, b.client_secret.as_deref()).await?;
    if !client.allows(clients::GRANT_CODE) {
        return Err(ApiError::Unauthorized("unauthorized_client"));
    }
    let challenge = pkce_challenge(&client, b.code_challenge, b.code_challenge_method.as_deref())?;
    let user = service::check_credentials(st, &b.username, b.password, origin, Some(client.company_id)).await?;
    let (code, mfa) = st.db.write(move |c| issue_code(c, &client, &user, challenge)).await?;
    if mfa {
        return Ok(HttpResponse::Ok().json(serde_json::json!({"code": code, "mfa": true})));
    }
    Ok(HttpResponse::Ok().json(CodeView { code }))
}

/// The confab client's PKCE challenge (required for public clients, S256 only).
pub fn pkce_challenge(
    client: &ClientRow,
    challenge: Option<String>,
    method: Option<&str>,
) -> ApiResult<Option<String>> {
    match (challenge, method) {
        (None, _) if client.is_public() => {
            Err(ApiError::bad_request("pkce_required", "a public client must send a PKCE code_challenge"))
        }
        (None, _) => Ok(None),
        (Some(_), Some(m)) if m != "S256" => Err(ApiError::field("code_challenge_method", "only S256 is supported")),
        (Some(c), _) if c.len() != 43 || URL_SAFE_NO_PAD.decode(&c).is_err() => {
            Err(ApiError::field("code_challenge", "must be base64url(SHA-256(code_verifier)), 43 characters"))
        }
        (Some(c), _) => Ok(Some(c)),
    }
}

/// The code for a user who has proved who they are (password, or an upstream identity
/// provider in `oauth`): the second-step code `(code, true)` when the user has an
/// authenticator app, else the code for `POST /auth/token`.
pub fn issue_code(
    c: &mut Db,
    client: &ClientRow,
    user: &UserRow,
    challenge: Option<String>,
) -> ApiResult<(String, bool)> {
    if totp::enabled(c, user.id)? {
        return Ok((otp::start_mfa(c, client, user)?, true));
    }
    Ok((insert_code(c, client, user.id, challenge)?, false))
}

/// Stores a new single-use code for `user_id` at `client` and returns it.
pub fn insert_code(c: &mut Db, client: &ClientRow, user_id: i64, challenge: Option<String>) -> ApiResult<String> {
    let code = random_token();
    let t = now();
    diesel::insert_into(auth_codes::table)
        .values((
            auth_codes::code_hash.eq(token_hash(&code)),
            auth_codes::client_id.eq(&client.client_id),
            auth_codes::user_id.eq(user_id),
            auth_codes::challenge_method.eq(challenge.as_ref().map(|_| "S256")),
            auth_codes::code_challenge.eq(challenge),
            auth_codes::expires_at.eq(t + Duration::seconds(client.code_ttl())),
            auth_codes::created_at.eq(t),
        ))
        .execute(c)?;
    Ok(code)
}

/// Deletes every code of the auth client `client_id` (the client is being deleted): its unused
/// codes stop working.
pub fn delete_codes_of(c: &mut Db, client_id: &str) -> ApiResult<()> {
    diesel::delete(auth_codes::table.filter(auth_codes::client_id.eq(client_id))).execute(c)?;
    Ok(())
}

/// ARC `AuthTokenRequest` plus the client's secret and the PKCE verifier. JSON or a form.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenBody {
    pub code: String,
    /// Required unless the client authenticates with HTTP Basic.
    #[serde(alias = "client_id")]
    pub client_id: Option<String>,
    /// A confidential client's secret (ARC's `client_secret`; or HTTP Basic
    /// `base64(clientId:clientSecret)`). Public clients have none and send `code_verifier`.
    #[serde(alias = "client_secret")]
    pub client_secret: Option<String>,
    #[serde(alias = "code_verifier")]
    pub code_verifier: Option<String>,
}

enum Exchange {
    Issued { user: Box<UserRow>, access_ttl: i64, session_id: String, refresh_token: String },
    Reused { session_id: Option<String> },
    MfaRequired,
    Invalid,
}

/// Exchanges a code for tokens (RFC 6749 §4.1.3 with §2.3 client authentication). The client
/// authenticates first: a confidential client with its secret (body `client_secret` or HTTP
/// Basic), else 401 `invalid_client` and the code is left alone; a public client has no secret
/// and its code must carry a PKCE challenge that `code_verifier` answers. Then the code is
/// claimed and the claim is kept whatever follows (a wrong verifier burns the code). A second
/// use answers 401 and revokes the session the first use opened.
#[utoipa::path(tag = "auth", request_body = TokenBody, responses(
    (status = 200, body = TokenView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
#[post("/auth/token")]
async fn token(
    st: web::Data<AppState>,
    req: HttpRequest,
    origin: Origin,
    JsonOrForm(b): JsonOrForm<TokenBody>,
) -> ApiResult<HttpResponse> {
    let (client_id, secret) = match (credential_pair(&req, "basic"), b.client_id) {
        (Some((id, _)), Some(named)) if named != id => return Err(ApiError::Unauthorized("invalid_client")),
        (Some((id, secret)), _) => (id, Some(secret)),
        (None, Some(id)) => (id, b.client_secret),
        (None, None) => return Err(ApiError::field("clientId", "is required")),
    };
    let client = clients::authenticate(&st, &client_id, secret.as_deref()).await?;
    let issued = redeem_code(&st, &origin, &b.code, client.client_id, b.code_verifier).await?;
    Ok(HttpResponse::Ok().json(TokenView::from(issued)))
}

/// Exchanges a code issued to `client_id` (the one code path of `POST /auth/token`, the
/// OAuth callbacks' SPA step and the Fynd SDK's `authorization_code` grant). The caller has
/// authenticated the client ([`clients::authenticate`]); a public client's code must carry a
/// PKCE challenge.
pub async fn redeem_code(
    st: &AppState,
    origin: &Origin,
    code: &str,
    client_id: String,
    verifier: Option<String>,
) -> ApiResult<Issued> {
    let hash = token_hash(code);
    let o = origin.clone();
    let outcome = st.db.write(move |c| exchange(c, &hash, &client_id, verifier.as_deref(), &o)).await?;
    match outcome {
        Exchange::Issued { user, access_ttl, session_id, refresh_token } => {
            let (access_token, expires) =
                st.keys.sign_for(user.id, user.company_id, &user.role, &session_id, access_ttl)?;
            Ok(Issued { access_token, refresh_token, expires })
        }
        Exchange::Reused { session_id } => {
            if let Some(sid) = session_id {
                st.sessions.forget(&sid);
            }
            Err(ApiError::Unauthorized("invalid_grant"))
        }
        Exchange::MfaRequired => Err(ApiError::Unauthorized("mfa_required")),
        Exchange::Invalid => Err(ApiError::Unauthorized("invalid_grant")),
    }
}

type CodeRow = (String, i64, Option<String>, Option<String>, NaiveDateTime);

fn exchange(c: &mut Db, hash: &str, client_id: &str, verifier: Option<&str>, origin: &Origin) -> ApiResult<Exchange> {
    let t = now();
    let claimed = diesel::update(auth_codes::table.find(hash).filter(auth_codes::used_at.is_null()))
        .set(auth_codes::used_at.eq(t))
        .execute(c)?;
    let row: Option<CodeRow> = auth_codes::table
        .find(hash)
        .select((
            auth_codes::client_id,
            auth_codes::user_id,
            auth_codes::code_challenge,
            auth_codes::issued_session_id,
            auth_codes::expires_at,
        ))
        .first(c)
        .optional()?;
    let Some((code_client, user_id, challenge, issued, expires_at)) = row else {
        return Ok(if otp::mfa_pending(c, hash)? { Exchange::MfaRequired } else { Exchange::Invalid });
    };
    if claimed == 0 {
        let company = store::company_of(c, user_id)?;
        if let Some(sid) = &issued {
            session::revoke(c, sid, "auth_code_reuse")?;
        }
        store::audit(
            c,
            company,
            Some(user_id),
            "auth_code_reuse",
            &origin.ip,
            serde_json::json!({"client": code_client}),
        )?;
        return Ok(Exchange::Reused { session_id: issued });
    }
    if expires_at <= t || !constant_time_eq(code_client.as_bytes(), client_id.as_bytes()) {
        return Ok(Exchange::Invalid);
    }
    let Some(client) = clients::by_client_id(c, client_id)? else { return Ok(Exchange::Invalid) };
    let pkce_ok = match (&challenge, verifier) {
        // A public client has no secret: only PKCE ties the code to whoever asked for it.
        (None, None) => !client.is_public(),
        (Some(ch), Some(v)) => {
            let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes()));
            constant_time_eq(computed.as_bytes(), ch.as_bytes())
        }
        _ => false,
    };
    if !pkce_ok {
        return Ok(Exchange::Invalid);
    }
    let Some(user) = store::find_by_id(c, user_id)?.filter(|u| u.is_active() && u.company_id == client.company_id)
    else {
        return Ok(Exchange::Invalid);
    };
    let (session_id, refresh_token) = open_session(c, &user, &client, origin)?;
    diesel::update(auth_codes::table.find(hash)).set(auth_codes::issued_session_id.eq(&session_id)).execute(c)?;
    Ok(Exchange::Issued { user: Box::new(user), access_ttl: client.access_token_ttl, session_id, refresh_token })
}

fn open_session(c: &mut Db, user: &UserRow, client: &ClientRow, origin: &Origin) -> ApiResult<(String, String)> {
    let created = session::create(
        c,
        &NewSession {
            user_id: user.id,
            company_id: user.company_id,
            kind: "arc",
            client_id: Some(&client.client_id),
            application_id: None,
            ip: &origin.ip,
            user_agent: &origin.user_agent,
            ttl: Duration::seconds(client.refresh_token_ttl),
        },
    )?;
    store::audit(
        c,
        Some(user.company_id),
        Some(user.id),
        "login",
        &origin.ip,
        serde_json::json!({"kind": "arc", "client": client.client_id}),
    )?;
    Ok(created)
}

/// Opens a session for `user` at `client` and signs its first access token.
pub async fn issue_tokens(st: &AppState, user: UserRow, client: ClientRow, origin: &Origin) -> ApiResult<Issued> {
    let o = origin.clone();
    let (u, cl) = (user.clone(), client.clone());
    let (session_id, refresh_token) = st.db.write(move |c| open_session(c, &u, &cl, &o)).await?;
    let (access_token, expires) =
        st.keys.sign_for(user.id, user.company_id, &user.role, &session_id, client.access_token_ttl)?;
    Ok(Issued { access_token, refresh_token, expires })
}

/// Tokens in one call (ARC marks it deprecated; here only clients whose grants include
/// `password`).
#[utoipa::path(tag = "auth", request_body = ArcLoginBody, responses(
    (status = 200, body = TokenView), (status = 401, body = ErrorBody)))]
#[post("/auth/login-token")]
async fn login_token(st: web::Data<AppState>, origin: Origin, Json(b): Json<ArcLoginBody>) -> ApiResult<HttpResponse> {
    let client = clients::authenticate(&st, &b.client_id, b.client_secret.as_deref()).await?;
    if !client.allows(clients::GRANT_PASSWORD) || client.is_public() {
        return Err(ApiError::Unauthorized("unauthorized_client"));
    }
    let user = service::check_credentials(&st, &b.username, b.password, &origin, Some(client.company_id)).await?;
    let user_id = user.id;
    if st.db.run(move |c| totp::enabled(c, user_id)).await? {
        return Err(ApiError::Unauthorized("mfa_required"));
    }
    let issued = issue_tokens(&st, user, client, &origin).await?;
    Ok(HttpResponse::Ok().json(TokenView::from(issued)))
}

/// ARC `ResetPasswordPartial`, plus `resetToken`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangePasswordBody {
    /// Accepted for compatibility (ARC checks it belongs to the bearer); not needed.
    pub refresh_token: Option<String>,
    /// When sent, must be the caller's e-mail.
    pub username: Option<String>,
    pub password: String,
    /// The current password: required when the account has one and no `resetToken` is given.
    pub old_password: Option<String>,
    /// A live token of this user from `POST /auth/forget-password` (single use), in place of
    /// `oldPassword`.
    pub reset_token: Option<String>,
}

/// How the caller proves the right to set a new password.
enum Proof {
    Old(String),
    Reset(String),
    /// The account has no password yet (a social or enterprise login): the session is enough.
    Session,
}

/// Changes the caller's password; every other session of the user is revoked. The proof, in
/// this order (seed 003 makes `oldPassword` optional; README "Seed shapes"): a `resetToken` of
/// this user (claimed once); else `oldPassword`, which is required when the account has a
/// password (checked against the per-account lockout); an account without a password (it signs
/// in only through a provider) sets its first one with the bearer token alone.
#[utoipa::path(tag = "auth", request_body = ChangePasswordBody, responses(
    (status = 200, body = SuccessView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
#[patch("/auth/change-password")]
async fn change_password(
    st: web::Data<AppState>,
    user: AuthUser,
    origin: Origin,
    Json(b): Json<ChangePasswordBody>,
) -> ApiResult<HttpResponse> {
    let (company_id, user_id) = (user.company_id, user.user_id);
    let (row, email) = st
        .db
        .run(move |c| {
            let row = store::get(c, company_id, user_id)?;
            Ok((row, store::primary_email(c, user_id)?))
        })
        .await?;
    if let Some(name) = b.username.as_deref().filter(|n| !n.trim().is_empty())
        && !email.as_deref().is_some_and(|e| e.eq_ignore_ascii_case(name.trim()))
    {
        return Err(ApiError::field("username", "is not the signed-in user"));
    }
    let given = |v: Option<String>| v.filter(|s| !s.is_empty());
    let proof = match (given(b.reset_token), given(b.old_password)) {
        (Some(reset), _) => Proof::Reset(reset),
        (None, Some(old)) => Proof::Old(old),
        (None, None) if row.password_hash.is_some() => {
            return Err(ApiError::field("oldPassword", "is required (or a resetToken)"));
        }
        (None, None) => Proof::Session,
    };
    let parsed = email.clone().and_then(|e| Email::try_from(e).ok());
    password::check_new(&b.password, parsed.as_ref())?;
    let new = b.password;
    let (hash, lock) = match proof {
        Proof::Old(old) => {
            if new == old {
                return Err(ApiError::field("password", "must differ from the old password"));
            }
            let keys = lockout::Keys::new(&format!("user:{user_id}"), &origin.ip);
            let k = keys.clone();
            let allowed = st.db.write(move |c| lockout::reserve(c, &k)).await?;
            let stored = row.password_hash.clone().filter(|_| allowed);
            let (matched, hash) = web::block(move || -> anyhow::Result<(bool, Option<String>)> {
                let matched = match stored {
                    Some(h) => password::verify(&h, &old),
                    None => {
                        password::verify_dummy(&old);
                        false
                    }
                };
                Ok((matched, if matched { Some(password::hash(&new)?) } else { None }))
            })
            .await??;
            (hash.map(|h| (h, None)), allowed.then_some((keys, matched)))
        }
        Proof::Reset(reset) => (Some((web::block(move || password::hash(&new)).await??, Some(reset))), None),
        Proof::Session => (Some((web::block(move || password::hash(&new)).await??, None)), None),
    };
    let (sid, ip) = (user.session_id.clone(), origin.ip.clone());
    let revoked = st
        .db
        .write(move |c| {
            if let Some((keys, matched)) = &lock {
                lockout::settle(c, keys, *matched)?;
            }
            let Some((hash, reset_token)) = hash else {
                store::audit(c, Some(company_id), Some(user_id), "password_change_failed", &ip, serde_json::json!({}))?;
                return Ok(None);
            };
            if let Some(reset) = &reset_token
                && !super::recovery::claim_reset_of(c, reset, user_id)?
            {
                return Err(ApiError::Unauthorized("invalid_token"));
            }
            store::set_password_hash(c, user_id, &hash)?;
            let revoked = session::revoke_all(c, user_id, Some(&sid), "password_changed")?;
            let detail = serde_json::json!({"proof": if reset_token.is_some() { "reset_token" } else { "password" }});
            store::audit(c, Some(company_id), Some(user_id), "password_changed", &ip, detail)?;
            Ok(Some(revoked))
        })
        .await?;
    let Some(revoked) = revoked else { return Err(ApiError::Unauthorized("invalid_credentials")) };
    for s in revoked {
        st.sessions.forget(&s);
    }
    Ok(HttpResponse::Ok().json(SuccessView { success: true }))
}

/// The user of a live, unused authorization code of `client_id` (a login in progress, seed 003
/// `POST /auth/create-qr-code {code, clientId}`), without using it up.
pub(crate) fn pending_code_user(c: &mut Db, code: &str, client_id: &str) -> ApiResult<Option<i64>> {
    Ok(auth_codes::table
        .find(token_hash(code))
        .filter(auth_codes::client_id.eq(client_id))
        .filter(auth_codes::used_at.is_null())
        .filter(auth_codes::expires_at.gt(now()))
        .select(auth_codes::user_id)
        .first(c)
        .optional()?)
}

/// Same as `POST /logout`: confab talks to no Keycloak, so there is nothing external to end.
#[utoipa::path(tag = "auth", responses((status = 200, body = super::routes::LogoutView), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
#[post("/keycloak/logout")]
async fn keycloak_logout(st: web::Data<AppState>, user: AuthUser, origin: Origin) -> ApiResult<HttpResponse> {
    service::logout(&st, &user, &origin).await?;
    Ok(HttpResponse::Ok().json(super::routes::LogoutView { success: true, key: user.user_id }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct AuditQuery {
    /// 1-based, default 1, at most 1,000,000.
    pub page: Option<i64>,
    /// 1–100, default 20.
    pub limit: Option<i64>,
    /// Only this event kind (`login`, `login_failed`, `account_locked`, …).
    pub kind: Option<String>,
    pub user_id: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditView {
    pub id: i64,
    pub kind: String,
    pub user_id: Option<i64>,
    pub ip: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    pub at: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    pub total_count: i64,
    pub page: i64,
    pub limit: i64,
    pub data: Vec<AuditView>,
}

/// The company's security events, newest first (admins only).
#[utoipa::path(tag = "auth", params(AuditQuery), responses(
    (status = 200, body = AuditPage), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
#[get("/auth/audit")]
async fn audit(st: web::Data<AppState>, admin: Admin, q: web::Query<AuditQuery>) -> ApiResult<HttpResponse> {
    let q = q.into_inner();
    let Paging { page, size: limit, offset } = Paging::parse(q.page, q.limit, 20, ("page", "limit"))?;
    let company_id = admin.company_id;
    let (total, rows) = st
        .db
        .run(move |c| crate::users::store::audit_page(c, company_id, q.kind.as_deref(), q.user_id, offset, limit))
        .await?;
    let data = rows
        .into_iter()
        .map(|(id, kind, user_id, ip, detail, at)| AuditView {
            id,
            kind,
            user_id,
            ip,
            detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
            at: rfc3339(at),
        })
        .collect();
    Ok(HttpResponse::Ok().json(AuditPage { total_count: total, page, limit, data }))
}
