//! Authenticator apps (CONTRACT §5, ARC `POST /auth/create-qr-code`, `GET /auth/check-qr-code`):
//! TOTP with SHA-1, 6 digits, 30 s (what every authenticator app reads). Where ARC replaces the
//! secret before the user proves possession and stores it in plain text, here:
//!
//! - `POST /auth/create-qr-code` (bearer) stores a new secret, encrypted with the data key,
//!   *unconfirmed*; a confirmed one is never replaced through it;
//! - `POST /auth/totp/confirm` `{otp}` (bearer) enables it with a first valid code and answers
//!   the 10 recovery codes, once (stored as hashes, each single use);
//! - `POST /auth/totp/recovery-codes` `{otp}` (bearer) replaces the recovery codes;
//! - `POST /auth/totp/disable` `{otp}` (bearer) turns the authenticator off with a current code
//!   or a recovery code;
//! - a time step is never accepted twice (`last_step` moves forward atomically).

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use base64::Engine;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use totp_rs::{Algorithm, Secret, TOTP};
use utoipa::ToSchema;

use super::{otp, service::Origin};
use crate::{
    core::{
        auth::{guard::AuthUser, lockout},
        crypto::{constant_time_eq, random_bytes, token_hash},
        db::{
            Db,
            schema::{recovery_codes, totp_secrets},
        },
        error::{ApiError, ApiResult, ErrorBody},
        extract::Json,
        state::AppState,
        types::now,
    },
    users::store,
};

pub const ISSUER: &str = "confab";
pub const STEP_SECS: u64 = 30;
pub const RECOVERY_CODES: usize = 10;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(create_qr_code).service(check_qr_code).service(confirm).service(regenerate).service(disable);
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(create_qr_code, check_qr_code, confirm, regenerate, disable),
    components(schemas(QrView, QrBody, CheckView, OtpBody, RecoveryView))
)]
pub struct Api;

/// Whether the user has a confirmed authenticator (then logins need the second step).
pub fn enabled(c: &mut Db, user_id: i64) -> ApiResult<bool> {
    Ok(diesel::select(diesel::dsl::exists(
        totp_secrets::table.find(user_id).filter(totp_secrets::confirmed_at.is_not_null()),
    ))
    .get_result(c)?)
}

/// Stores a new, unconfirmed secret (sealed with the data key) for the user, in place of an
/// earlier unconfirmed one; 409 `totp_already_enabled` when a confirmed one exists.
fn enrol(c: &mut Db, user_id: i64, sealed: &str) -> ApiResult<()> {
    if enabled(c, user_id)? {
        return Err(ApiError::conflict("totp_already_enabled", "an authenticator is already enabled"));
    }
    diesel::delete(totp_secrets::table.find(user_id)).execute(c)?;
    diesel::insert_into(totp_secrets::table)
        .values((
            totp_secrets::user_id.eq(user_id),
            totp_secrets::secret.eq(sealed),
            totp_secrets::created_at.eq(now()),
        ))
        .execute(c)?;
    Ok(())
}

/// Marks the user's secret confirmed: from now on logins need the second step.
fn mark_confirmed(c: &mut Db, user_id: i64) -> ApiResult<()> {
    diesel::update(totp_secrets::table.find(user_id)).set(totp_secrets::confirmed_at.eq(now())).execute(c)?;
    Ok(())
}

/// Deletes the user's authenticator secret and recovery codes (the authenticator is turned
/// off, or the account is claimed by someone who proved its contact).
pub fn forget(c: &mut Db, user_id: i64) -> ApiResult<()> {
    diesel::delete(totp_secrets::table.find(user_id)).execute(c)?;
    diesel::delete(recovery_codes::table.filter(recovery_codes::user_id.eq(user_id))).execute(c)?;
    Ok(())
}

fn totp(secret: Vec<u8>, account: &str) -> ApiResult<TOTP> {
    TOTP::new(Algorithm::SHA1, 6, 1, STEP_SECS, secret, Some(ISSUER.to_owned()), account.replace(':', "_"))
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("totp: {e:?}")))
}

/// The time step `code` belongs to (previous, current or next), if any.
fn matching_step(t: &TOTP, code: &str) -> Option<i64> {
    let current = chrono::Utc::now().timestamp() as u64 / STEP_SECS;
    [current.saturating_sub(1), current, current + 1]
        .into_iter()
        .find(|step| constant_time_eq(t.generate(step * STEP_SECS).as_bytes(), code.as_bytes()))
        .map(|s| s as i64)
}

/// Checks an authenticator code against the user's secret (confirmed or, with `pending`, not
/// yet) and burns its time step: the same step is never accepted twice.
fn check_code(c: &mut Db, st: &AppState, user_id: i64, code: &str, pending: bool) -> ApiResult<bool> {
    let row: Option<(String, Option<chrono::NaiveDateTime>)> = totp_secrets::table
        .find(user_id)
        .select((totp_secrets::secret, totp_secrets::confirmed_at))
        .first(c)
        .optional()?;
    let Some((sealed, confirmed)) = row else { return Ok(false) };
    if confirmed.is_some() == pending {
        return Ok(false);
    }
    let secret = st.data_key.decrypt(&sealed)?;
    let Some(step) = matching_step(&totp(secret, "user")?, code.trim()) else { return Ok(false) };
    let moved = diesel::update(
        totp_secrets::table
            .find(user_id)
            .filter(totp_secrets::last_step.is_null().or(totp_secrets::last_step.lt(step))),
    )
    .set(totp_secrets::last_step.eq(step))
    .execute(c)?;
    Ok(moved == 1)
}

/// [`check_code`] for the bearer routes, under brute-force protection: five wrong codes lock
/// the user's authenticator routes like a password ([`lockout`]), so a stolen access token
/// cannot guess its way to new recovery codes.
fn guarded_check(c: &mut Db, st: &AppState, user_id: i64, code: &str, pending: bool, ip: &str) -> ApiResult<bool> {
    lockout::guard(c, &keys(user_id, ip), |c| check_code(c, st, user_id, code, pending))
}

/// The one failure counter of a user's second factor: the bearer routes above and every MFA
/// login step count on it, so five wrong codes lock the second factor whatever number of
/// password logins they are spread over.
pub fn keys(user_id: i64, ip: &str) -> lockout::Keys {
    lockout::Keys::scoped("totp", &user_id.to_string(), ip)
}

/// The second step of a login: an authenticator code, or one unused recovery code. Not
/// guarded by itself: the caller counts the attempt on [`keys`].
pub fn check_second_factor(c: &mut Db, st: &AppState, user_id: i64, answer: &str) -> ApiResult<bool> {
    let answer = answer.trim();
    if answer.len() == 6 && answer.bytes().all(|b| b.is_ascii_digit()) {
        return check_code(c, st, user_id, answer, false);
    }
    let used = diesel::update(
        recovery_codes::table
            .filter(recovery_codes::user_id.eq(user_id))
            .filter(recovery_codes::code_hash.eq(token_hash(&normalise_recovery(answer))))
            .filter(recovery_codes::used_at.is_null()),
    )
    .set(recovery_codes::used_at.eq(now()))
    .execute(c)?;
    Ok(used == 1)
}

fn normalise_recovery(code: &str) -> String {
    code.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_lowercase()
}

/// Ten new recovery codes (`xxxxx-xxxxx`, base32 lower case); the old ones stop working.
fn new_recovery_codes(c: &mut Db, user_id: i64) -> ApiResult<Vec<String>> {
    diesel::delete(recovery_codes::table.filter(recovery_codes::user_id.eq(user_id))).execute(c)?;
    let mut codes = Vec::with_capacity(RECOVERY_CODES);
    for _ in 0..RECOVERY_CODES {
        let raw = base32_lower(&random_bytes::<7>());
        let code = format!("{}-{}", &raw[..5], &raw[5..10]);
        diesel::insert_into(recovery_codes::table)
            .values((
                recovery_codes::user_id.eq(user_id),
                recovery_codes::code_hash.eq(token_hash(&normalise_recovery(&code))),
            ))
            .execute(c)?;
        codes.push(code);
    }
    Ok(codes)
}

fn base32_lower(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    out
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QrView {
    /// `data:image/png;base64,…` of the otpauth URI.
    pub qr_code: String,
    pub otpauth_url: String,
    /// Base32, for typing into an app by hand.
    pub secret: String,
}

/// Seed 003's `AuthTokenRequest` body of `POST /auth/create-qr-code`: the code of a login in
/// progress and its client.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QrBody {
    /// An unused authorization code from `POST /auth/login` (or the MFA code of a login that
    /// waits for its second factor); it stays usable.
    pub code: Option<String>,
    #[serde(alias = "client_id")]
    pub client_id: Option<String>,
}

/// Starts enrolment: a new, unconfirmed secret. Whose: the user of the login in progress named
/// by the body `{code, clientId}` (seed 003, ARC's flow), else the bearer token's user (401
/// `invalid_token` with neither). Confirm it with `POST /auth/totp/confirm` (bearer, after the
/// login completes). 409 `totp_already_enabled` when a confirmed one exists.
#[utoipa::path(tag = "auth", request_body(content = Option<QrBody>), responses(
    (status = 200, body = QrView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 409, body = ErrorBody)), security(("bearer" = []), ()))]
#[post("/auth/create-qr-code")]
async fn create_qr_code(st: web::Data<AppState>, req: HttpRequest, body: web::Bytes) -> ApiResult<HttpResponse> {
    let b: QrBody = if body.iter().all(u8::is_ascii_whitespace) {
        QrBody { code: None, client_id: None }
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?
    };
    let bearer = crate::core::auth::guard::principal(&req).ok().map(|p| p.user_id);
    let given = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let user_id = match (given(b.code), given(b.client_id)) {
        (Some(code), Some(client)) => st
            .db
            .run(move |c| match super::arc::pending_code_user(c, &code, &client)? {
                Some(user) => Ok(Some(user)),
                None => otp::mfa_user(c, &code, &client),
            })
            .await?
            .ok_or(ApiError::Unauthorized("invalid_token"))?,
        (Some(_), None) => return Err(ApiError::field("clientId", "is required with code")),
        (None, _) => bearer.ok_or(ApiError::Unauthorized("invalid_token"))?,
    };
    let email = st.db.run(move |c| store::primary_email(c, user_id)).await?;
    let account = email.unwrap_or_else(|| format!("user-{user_id}"));
    let secret = Secret::generate_secret().to_bytes().map_err(|e| ApiError::Internal(anyhow::anyhow!("{e:?}")))?;
    let t = totp(secret.clone(), &account)?;
    let png = t.get_qr_png().map_err(|e| ApiError::Internal(anyhow::anyhow!("qr: {e}")))?;
    let view = QrView {
        qr_code: format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(png)),
        otpauth_url: t.get_url(),
        secret: t.get_secret_base32(),
    };
    let sealed = st.data_key.encrypt(&secret);
    st.db.write(move |c| enrol(c, user_id, &sealed)).await?;
    Ok(HttpResponse::Ok().json(view))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckView {
    /// Whether a confirmed authenticator exists.
    pub is_generated: bool,
}

/// ARC: headers `code` (the MFA code of a pending login) and `clientId`; or a bearer token.
#[utoipa::path(tag = "auth", params(
    ("code" = Option<String>, Header), ("clientId" = Option<String>, Header)),
    responses((status = 200, body = CheckView), (status = 401, body = ErrorBody)))]
#[get("/auth/check-qr-code")]
async fn check_qr_code(st: web::Data<AppState>, req: HttpRequest) -> ApiResult<HttpResponse> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let bearer = crate::core::auth::guard::principal(&req).ok().map(|p| p.user_id);
    let (code, client) = (header("code"), header("clientId"));
    let is_generated = st
        .db
        .run(move |c| {
            let user_id = match (code, client) {
                (Some(code), Some(client)) => otp::mfa_user(c, &code, &client)?,
                _ => bearer,
            };
            let user_id = user_id.ok_or(ApiError::Unauthorized("invalid_token"))?;
            enabled(c, user_id)
        })
        .await?;
    Ok(HttpResponse::Ok().json(CheckView { is_generated }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct OtpBody {
    /// A current authenticator code.
    pub otp: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryView {
    /// Shown once; each works once in place of an authenticator code.
    pub recovery_codes: Vec<String>,
}

/// Enables the enrolled authenticator with a first valid code; answers the recovery codes.
#[utoipa::path(tag = "auth", request_body = OtpBody, responses(
    (status = 200, body = RecoveryView), (status = 401, body = ErrorBody)), security(("bearer" = [])))]
#[post("/auth/totp/confirm")]
async fn confirm(
    st: web::Data<AppState>,
    user: AuthUser,
    origin: Origin,
    Json(b): Json<OtpBody>,
) -> ApiResult<HttpResponse> {
    let (user_id, company_id, state) = (user.user_id, user.company_id, st.clone());
    let codes = st
        .db
        .write(move |c| {
            if !guarded_check(c, &state, user_id, &b.otp, true, &origin.ip)? {
                return Ok(None);
            }
            mark_confirmed(c, user_id)?;
            store::audit(c, Some(company_id), Some(user_id), "mfa_enabled", &origin.ip, serde_json::json!({}))?;
            Ok(Some(new_recovery_codes(c, user_id)?))
        })
        .await?;
    let recovery_codes = codes.ok_or(ApiError::Unauthorized("invalid_otp"))?;
    Ok(HttpResponse::Ok().json(RecoveryView { recovery_codes }))
}

/// Replaces the recovery codes (needs a current authenticator code).
#[utoipa::path(tag = "auth", request_body = OtpBody, responses(
    (status = 200, body = RecoveryView), (status = 401, body = ErrorBody)), security(("bearer" = [])))]
#[post("/auth/totp/recovery-codes")]
async fn regenerate(
    st: web::Data<AppState>,
    user: AuthUser,
    origin: Origin,
    Json(b): Json<OtpBody>,
) -> ApiResult<HttpResponse> {
    let (user_id, company_id, state) = (user.user_id, user.company_id, st.clone());
    let codes = st
        .db
        .write(move |c| {
            if !guarded_check(c, &state, user_id, &b.otp, false, &origin.ip)? {
                return Ok(None);
            }
            store::audit(
                c,
                Some(company_id),
                Some(user_id),
                "recovery_codes_regenerated",
                &origin.ip,
                serde_json::json!({}),
            )?;
            Ok(Some(new_recovery_codes(c, user_id)?))
        })
        .await?;
    let recovery_codes = codes.ok_or(ApiError::Unauthorized("invalid_otp"))?;
    Ok(HttpResponse::Ok().json(RecoveryView { recovery_codes }))
}

/// Turns the authenticator off: needs a current authenticator code or an unused recovery code
/// (counted on the second-factor lockout like a login step); the secret and the recovery codes
/// are deleted, so the next password login needs no second step.
#[utoipa::path(tag = "auth", request_body = OtpBody, responses(
    (status = 204), (status = 401, body = ErrorBody)), security(("bearer" = [])))]
#[post("/auth/totp/disable")]
async fn disable(
    st: web::Data<AppState>,
    user: AuthUser,
    origin: Origin,
    Json(b): Json<OtpBody>,
) -> ApiResult<HttpResponse> {
    let (user_id, company_id, state) = (user.user_id, user.company_id, st.clone());
    let disabled = st
        .db
        .write(move |c| {
            if !enabled(c, user_id)? {
                return Ok(false);
            }
            if !lockout::guard(c, &keys(user_id, &origin.ip), |c| check_second_factor(c, &state, user_id, &b.otp))? {
                return Ok(false);
            }
            forget(c, user_id)?;
            store::audit(c, Some(company_id), Some(user_id), "mfa_disabled", &origin.ip, serde_json::json!({}))?;
            Ok(true)
        })
        .await?;
    if !disabled {
        return Err(ApiError::Unauthorized("invalid_otp"));
    }
    Ok(HttpResponse::NoContent().finish())
}
