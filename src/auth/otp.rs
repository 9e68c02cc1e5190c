//! One-time codes by e-mail or SMS (CONTRACT §5, ARC `POST /auth/send-otp` and
//! `POST /auth/verify-otp`), and the second step of a password login for users with an
//! authenticator app (see [`super::totp`]).
//!
//! Codes come from the shared engine ([`crate::codes`]: 6 digits as an HMAC, 5 minutes, 5
//! attempts counted atomically, one code per 30 s, single use). `purpose` records what the
//! challenge is for: `login:<client_id>` (passwordless login at that client) or
//! `mfa:<client_id>` (second step after a password login at that client).
//!
//! No account enumeration: an unknown address gets the same answer, the same throttle and a
//! stored challenge that can never succeed; delivery happens after the answer.
//!
//! A challenge belongs to the company and client that sent it: `verify-otp` answers only
//! challenges that have an account (another company's code for the same address, stored for
//! nobody, cannot shadow or void it), and wrong answers count on the brute-force counters of
//! the contact or of the user's second factor, whatever number of codes or logins they are
//! spread over (issue 17 items 6 and 7).

use actix_web::{HttpResponse, post, web};
use serde::Deserialize;
use utoipa::ToSchema;

use super::{
    arc::{self, CodeView, SuccessView},
    clients::{self, ClientRow},
    service::Origin,
    totp,
};
use crate::{
    core::{
        auth::lockout,
        crypto::random_token,
        db::Db,
        error::{ApiError, ApiResult, ErrorBody},
        extract::Json,
        state::AppState,
        types::{Email, Phone},
    },
    users::{model::UserRow, store},
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(send_otp).service(verify_otp);
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(send_otp, verify_otp), components(schemas(OtpSendBody, OtpVerifyBody)))]
pub struct Api;

/// ARC `OtpSendRequest`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct OtpSendBody {
    pub client_id: String,
    pub client_secret: Option<String>,
    /// The user's e-mail (code by e-mail) or phone number (code by SMS).
    pub key: String,
}

/// ARC `OtpLoginRequest`, plus the PKCE challenge the answered code is bound to (required for
/// public clients: `POST /auth/token` redeems their codes only with the verifier).
#[derive(Debug, Deserialize, ToSchema)]
pub struct OtpVerifyBody {
    pub key: String,
    pub otp: String,
    #[serde(alias = "client_id")]
    #[serde(rename = "clientId")]
    pub client_id: Option<String>,
    /// base64url(SHA-256(code_verifier)).
    pub code_challenge: Option<String>,
    /// Only `S256`.
    pub code_challenge_method: Option<String>,
}

/// Where a code goes: `("email", address)` or `("sms", E.164)`.
fn destination(key: &str) -> ApiResult<(&'static str, String)> {
    let key = key.trim();
    if key.contains('@') {
        let email = Email::try_from(key.to_owned()).map_err(|e| ApiError::field("key", e.0))?;
        Ok(("email", email.as_str().to_owned()))
    } else {
        let phone = Phone::try_from(key.to_owned()).map_err(|e| ApiError::field("key", e.0))?;
        Ok(("sms", phone.as_str().to_owned()))
    }
}

/// The active staff user of `company` with this e-mail or phone.
fn user_at(c: &mut Db, company_id: i64, channel: &str, dest: &str) -> ApiResult<Option<UserRow>> {
    let user = if channel == "email" {
        match Email::try_from(dest.to_owned()) {
            Ok(e) => store::find_staff_by_email(c, &e)?,
            Err(_) => None,
        }
    } else {
        store::find_staff_by_phone(c, company_id, dest)?
    };
    Ok(user.filter(|u| u.company_id == company_id && u.is_active()))
}

/// Sends a login code to the user with this e-mail or phone, if the client's company has one.
/// The answer is the same either way.
#[utoipa::path(tag = "auth", request_body = OtpSendBody, responses(
    (status = 200, body = SuccessView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 429, body = ErrorBody)))]
#[post("/auth/send-otp")]
async fn send_otp(st: web::Data<AppState>, origin: Origin, Json(b): Json<OtpSendBody>) -> ApiResult<HttpResponse> {
    let client = clients::authenticate(&st, &b.client_id, b.client_secret.as_deref()).await?;
    if !client.allows(clients::GRANT_OTP) {
        return Err(ApiError::Unauthorized("unauthorized_client"));
    }
    let (channel, dest) = destination(&b.key)?;
    let purpose = format!("login:{}", client.client_id);
    let (company_id, d, ip, key) = (client.company_id, dest.clone(), origin.ip.clone(), st.data_key.clone());
    let (user, issued) = st
        .db
        .write(move |c| {
            let user = user_at(c, company_id, channel, &d)?;
            let challenge = crate::codes::Challenge {
                company_id,
                user_id: user.as_ref().map(|u| u.id),
                channel,
                destination: &d,
                purpose: &purpose,
            };
            let issued = crate::codes::issue(c, &key, &challenge)?;
            if let Some(u) = &user {
                store::audit(
                    c,
                    Some(u.company_id),
                    Some(u.id),
                    "otp_sent",
                    &ip,
                    serde_json::json!({"channel": channel}),
                )?;
            }
            Ok((user, issued))
        })
        .await?;
    if user.is_some() {
        deliver(&st, client.company_id, channel, dest, issued.code);
    }
    Ok(HttpResponse::Ok().json(SuccessView { success: true }))
}

/// Delivers in the background, so the answer's timing says nothing about the account. Texts
/// go through the company's Twilio SMS channel when it has one ([`crate::providers::send_sms`]).
fn deliver(st: &AppState, company_id: i64, channel: &'static str, dest: String, code: String) {
    let st = st.clone();
    actix_web::rt::spawn(async move {
        let text = format!("Your confab sign-in code is {code}. It expires in 5 minutes.");
        let sent = if channel == "email" {
            st.mail.send(&dest, "Your sign-in code", &text).await.map_err(ApiError::from)
        } else {
            crate::providers::send_sms(&st, company_id, &dest, &text).await
        };
        if let Err(e) = sent {
            tracing::warn!(error = ?e, channel, "one-time code not delivered");
        }
    });
}

/// A challenge that may still be answered.
#[derive(Debug, Clone)]
struct Pending {
    request_id: String,
    company_id: Option<i64>,
    user_id: i64,
    purpose: String,
}

enum Verdict {
    Code { code: String },
    Mfa { code: String },
    Invalid,
}

/// The live challenges `POST /auth/verify-otp` may answer for `dest`, newest first: only
/// those with an account (a challenge stored for an unknown address can never succeed, so it
/// must not shadow one that can), only at `client_id` when the body names it. Each is bound to
/// the company and client that sent it, so a code sent by another company for the same
/// address neither replaces nor voids this one (issue 17 item 6).
fn answerable(c: &mut Db, dest: &str, client_id: Option<&str>) -> ApiResult<Vec<Pending>> {
    let wanted = |purpose: &str| match client_id {
        Some(id) => purpose == format!("login:{id}") || purpose == format!("mfa:{id}"),
        None => purpose.starts_with("login:") || purpose.starts_with("mfa:"),
    };
    Ok(crate::codes::live_for_destination(c, dest)?
        .into_iter()
        .filter(|t| wanted(&t.purpose))
        .filter_map(|t| {
            Some(Pending {
                request_id: t.request_id,
                company_id: t.company_id,
                user_id: t.user_id?,
                purpose: t.purpose,
            })
        })
        .collect())
}

/// Answers one challenge under brute-force protection: an e-mailed or texted code through the
/// code engine (counted on the contact's counter, [`crate::codes::keys`]); an authenticator or
/// recovery code counted on the user's second-factor counter ([`totp::keys`]) shared with
/// the bearer TOTP routes, so wrong codes add up across password logins. Either way the
/// challenge's own 5 attempts apply too, and a right answer consumes it.
fn answer(c: &mut Db, st: &AppState, ch: &Pending, kind: &str, otp: &str, ip: &str) -> ApiResult<bool> {
    if kind == "mfa" {
        return lockout::guard(c, &totp::keys(ch.user_id, ip), |c| {
            Ok(crate::codes::count_attempt(c, &ch.request_id)?
                && totp::check_second_factor(c, st, ch.user_id, otp)?
                && crate::codes::consume(c, &ch.request_id)?)
        });
    }
    let Some(company_id) = ch.company_id else { return Ok(false) };
    let checked = crate::codes::check(c, &st.data_key, company_id, &ch.request_id, &[ch.purpose.as_str()], otp, ip)?;
    Ok(matches!(checked, crate::codes::Checked::Accepted(_)))
}

/// Checks a code sent by `POST /auth/send-otp` (or, for a pending MFA step, an authenticator
/// or recovery code) and answers `{code}` for `POST /auth/token`. Users with an authenticator
/// app get `{code, mfa: true}` from a passwordless login: the second step is still due.
///
/// The answer is tried against each live challenge of the address that has an account
/// ([`answerable`]; one, unless several companies sent codes to a shared phone number), newest
/// first, until one accepts it; `clientId` narrows them to that client's.
#[utoipa::path(tag = "auth", request_body = OtpVerifyBody, responses(
    (status = 200, body = CodeView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
#[post("/auth/verify-otp")]
async fn verify_otp(st: web::Data<AppState>, origin: Origin, Json(b): Json<OtpVerifyBody>) -> ApiResult<HttpResponse> {
    let Ok((_, dest)) = destination(&b.key) else { return Err(ApiError::Unauthorized("invalid_otp")) };
    let state = st.clone();
    let ip = origin.ip.clone();
    let verdict = st
        .db
        .write(move |c| {
            let mut accepted = None;
            for ch in answerable(c, &dest, b.client_id.as_deref())? {
                let (kind, _) = ch.purpose.split_once(':').unwrap_or(("", ""));
                let kind = kind.to_owned();
                let ok = answer(c, &state, &ch, &kind, &b.otp, &ip)?;
                store::audit(
                    c,
                    ch.company_id,
                    Some(ch.user_id),
                    if ok { "otp_verified" } else { "otp_failed" },
                    &ip,
                    serde_json::json!({"step": kind}),
                )?;
                if ok {
                    accepted = Some((ch, kind));
                    break;
                }
            }
            let Some((ch, kind)) = accepted else { return Ok(Verdict::Invalid) };
            let client_id = ch.purpose.split_once(':').map_or("", |(_, id)| id);
            let Some(client) = clients::by_client_id(c, client_id)? else { return Ok(Verdict::Invalid) };
            // A public client's code is bound to PKCE (`POST /auth/token`). Refusing with an
            // error rolls the whole check back: the right code stays usable with a challenge.
            let challenge = arc::pkce_challenge(&client, b.code_challenge, b.code_challenge_method.as_deref())?;
            let Some(user) =
                store::find_by_id(c, ch.user_id)?.filter(|u| u.is_active() && u.company_id == client.company_id)
            else {
                return Ok(Verdict::Invalid);
            };
            if kind == "login" && totp::enabled(c, user.id)? {
                return Ok(Verdict::Mfa { code: start_mfa(c, &client, &user)? });
            }
            Ok(Verdict::Code { code: arc::insert_code(c, &client, user.id, challenge)? })
        })
        .await?;
    match verdict {
        Verdict::Code { code } => Ok(HttpResponse::Ok().json(CodeView { code })),
        Verdict::Mfa { code } => Ok(HttpResponse::Ok().json(serde_json::json!({"code": code, "mfa": true}))),
        Verdict::Invalid => Err(ApiError::Unauthorized("invalid_otp")),
    }
}

/// Opens the second step of a login for a user with an authenticator app: a pending
/// challenge (keyed by the user's e-mail, answered at `POST /auth/verify-otp` with an
/// authenticator or recovery code) and an MFA code that `GET /auth/check-qr-code` accepts and
/// `POST /auth/token` refuses with 401 `mfa_required`.
pub fn start_mfa(c: &mut Db, client: &ClientRow, user: &UserRow) -> ApiResult<String> {
    let dest = store::primary_email(c, user.id)?.ok_or(ApiError::Unauthorized("invalid_credentials"))?;
    let purpose = format!("mfa:{}", client.client_id);
    crate::codes::retire(c, user.company_id, &dest, &purpose)?;
    let code = random_token();
    let ch = crate::codes::HashedToken {
        company_id: Some(user.company_id),
        user_id: Some(user.id),
        channel: "totp",
        destination: &dest,
        purpose: &purpose,
        ttl: crate::codes::TTL,
        resend_after: chrono::Duration::zero(),
    };
    crate::codes::store_hashed(c, &code, &ch)?;
    Ok(code)
}

/// The user of a pending MFA code (`GET /auth/check-qr-code` with headers `code`, `clientId`).
pub fn mfa_user(c: &mut Db, code: &str, client_id: &str) -> ApiResult<Option<i64>> {
    Ok(crate::codes::live_hashed(c, code)?.filter(|t| t.purpose == format!("mfa:{client_id}")).and_then(|t| t.user_id))
}

/// Whether a code hash is a pending MFA code (so `POST /auth/token` can say `mfa_required`).
pub fn mfa_pending(c: &mut Db, hash: &str) -> ApiResult<bool> {
    Ok(crate::codes::unused_purpose(c, hash)?.is_some_and(|p| p.starts_with("mfa:")))
}
