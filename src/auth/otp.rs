//! One-time codes by e-mail or SMS (CONTRACT §5, ARC `POST /auth/send-otp` and
//! `POST /auth/verify-otp`), and the second step of a password login for users with an
//! authenticator app (see [`super::totp`]).
//!
//! A challenge is a row of `otp_challenges`: 6 digits stored as an HMAC with the data key
//! (a bare hash of a 6-digit number is reversed in a second), 5 minutes, at most 5 attempts
//! (counted with one atomic `UPDATE … WHERE attempts < 5`), one new code per 30 s per address,
//! consumed on success, and a new code retires the older ones. `purpose` records what the
//! challenge is for: `login:<client_id>` (passwordless login at that client) or
//! `mfa:<client_id>` (second step after a password login at that client).
//!
//! No account enumeration: an unknown address gets the same answer, the same throttle and a
//! stored challenge that can never succeed; delivery happens after the answer.

use actix_web::{HttpResponse, post, web};
use chrono::{Duration, NaiveDateTime};
use diesel::prelude::*;
use serde::Deserialize;
use utoipa::ToSchema;

use super::{
    arc::{self, CodeView, SuccessView},
    clients::{self, ClientRow},
    service::Origin,
    totp,
};
use crate::{
    crypto::{constant_time_eq, random_bytes, random_hex_id, random_token, token_hash},
    db::{
        Db,
        schema::{otp_challenges, user_phones, users},
    },
    error::{ApiError, ApiResult, ErrorBody},
    extract::Json,
    state::AppState,
    types::{Email, Phone, Role, now},
    users::{model::UserRow, store},
};

pub const CODE_TTL_SECS: i64 = 5 * 60;
pub const RESEND_AFTER_SECS: i64 = 30;
pub const MAX_ATTEMPTS: i32 = 5;

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

/// ARC `OtpLoginRequest`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct OtpVerifyBody {
    pub key: String,
    pub otp: String,
    #[serde(alias = "client_id")]
    #[serde(rename = "clientId")]
    pub client_id: Option<String>,
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

/// The HMAC a code is stored as, bound to its challenge.
pub fn code_mac(st: &AppState, request_id: &str, code: &str) -> String {
    st.data_key.sign(format!("otp:{request_id}:{code}").as_bytes())
}

fn six_digits() -> String {
    format!("{:06}", u32::from_le_bytes(random_bytes::<4>()) % 1_000_000)
}

/// The active staff user of `company` with this e-mail or phone.
fn user_at(c: &mut Db, company_id: i64, channel: &str, dest: &str) -> ApiResult<Option<UserRow>> {
    let user = if channel == "email" {
        match Email::try_from(dest.to_owned()) {
            Ok(e) => store::find_staff_by_email(c, &e)?,
            Err(_) => None,
        }
    } else {
        users::table
            .inner_join(user_phones::table.on(user_phones::user_id.eq(users::id)))
            .filter(user_phones::e164.eq(dest))
            .filter(user_phones::active.eq(true))
            .filter(user_phones::company_id.eq(company_id))
            .filter(users::role.eq_any([Role::Admin.as_str(), Role::Agent.as_str()]))
            .select(UserRow::as_select())
            .first(c)
            .optional()?
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
    let code = six_digits();
    let request_id = random_hex_id();
    let mac = code_mac(&st, &request_id, &code);
    let purpose = format!("login:{}", client.client_id);
    let (company_id, d, ip) = (client.company_id, dest.clone(), origin.ip.clone());
    let user = st
        .db
        .write(move |c| {
            let t = now();
            let last: Option<NaiveDateTime> = otp_challenges::table
                .filter(otp_challenges::destination.eq(&d))
                .filter(otp_challenges::purpose.eq(&purpose))
                .filter(otp_challenges::consumed_at.is_null())
                .order(otp_challenges::created_at.desc())
                .select(otp_challenges::resend_after)
                .first(c)
                .optional()?;
            if let Some(after) = last
                && after > t
            {
                let secs = (after - t).num_seconds().max(1) as u64;
                return Err(ApiError::TooManyRequests { retry_after_secs: secs });
            }
            retire(c, &d, &purpose)?;
            let user = user_at(c, company_id, channel, &d)?;
            diesel::insert_into(otp_challenges::table)
                .values((
                    otp_challenges::request_id.eq(&request_id),
                    otp_challenges::company_id.eq(company_id),
                    otp_challenges::user_id.eq(user.as_ref().map(|u| u.id)),
                    otp_challenges::channel.eq(channel),
                    otp_challenges::destination.eq(&d),
                    otp_challenges::purpose.eq(&purpose),
                    otp_challenges::code_hash.eq(&mac),
                    otp_challenges::attempts.eq(0),
                    otp_challenges::expires_at.eq(t + Duration::seconds(CODE_TTL_SECS)),
                    otp_challenges::resend_after.eq(t + Duration::seconds(RESEND_AFTER_SECS)),
                    otp_challenges::created_at.eq(t),
                ))
                .execute(c)?;
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
            Ok(user)
        })
        .await?;
    if user.is_some() {
        deliver(&st, channel, dest, code);
    }
    Ok(HttpResponse::Ok().json(SuccessView { success: true }))
}

/// Marks every open challenge of `dest` for `purpose` used (a new one replaces them).
fn retire(c: &mut Db, dest: &str, purpose: &str) -> ApiResult<()> {
    diesel::update(
        otp_challenges::table
            .filter(otp_challenges::destination.eq(dest))
            .filter(otp_challenges::purpose.eq(purpose))
            .filter(otp_challenges::consumed_at.is_null()),
    )
    .set(otp_challenges::consumed_at.eq(now()))
    .execute(c)?;
    Ok(())
}

/// Delivers in the background, so the answer's timing says nothing about the account.
fn deliver(st: &AppState, channel: &'static str, dest: String, code: String) {
    let (mail, sms) = (st.mail.clone(), st.sms.clone());
    actix_web::rt::spawn(async move {
        let text = format!("Your confab sign-in code is {code}. It expires in 5 minutes.");
        let sent = if channel == "email" {
            mail.send(&dest, "Your sign-in code", &text).await
        } else {
            sms.send(&dest, &text).await
        };
        if let Err(e) = sent {
            tracing::warn!(error = ?e, channel, "one-time code not delivered");
        }
    });
}

/// A challenge that may still be answered.
#[derive(Debug, Clone, Queryable)]
struct Challenge {
    request_id: String,
    user_id: Option<i64>,
    purpose: String,
    code_hash: String,
}

enum Verdict {
    Code { code: String },
    Mfa { code: String },
    Invalid,
}

/// Checks a code sent by `POST /auth/send-otp` (or, for a pending MFA step, an authenticator
/// or recovery code) and answers `{code}` for `POST /auth/token`. Users with an authenticator
/// app get `{code, mfa: true}` from a passwordless login: the second step is still due.
#[utoipa::path(tag = "auth", request_body = OtpVerifyBody, responses(
    (status = 200, body = CodeView), (status = 401, body = ErrorBody)))]
#[post("/auth/verify-otp")]
async fn verify_otp(st: web::Data<AppState>, origin: Origin, Json(b): Json<OtpVerifyBody>) -> ApiResult<HttpResponse> {
    let Ok((_, dest)) = destination(&b.key) else { return Err(ApiError::Unauthorized("invalid_otp")) };
    let state = st.clone();
    let ip = origin.ip.clone();
    let verdict = st
        .db
        .write(move |c| {
            let t = now();
            let found: Option<Challenge> = otp_challenges::table
                .filter(otp_challenges::destination.eq(&dest))
                .filter(otp_challenges::consumed_at.is_null())
                .filter(otp_challenges::expires_at.gt(t))
                .filter(otp_challenges::purpose.like("login:%").or(otp_challenges::purpose.like("mfa:%")))
                .order(otp_challenges::created_at.desc())
                .select((
                    otp_challenges::request_id,
                    otp_challenges::user_id,
                    otp_challenges::purpose,
                    otp_challenges::code_hash,
                ))
                .first(c)
                .optional()?;
            let Some(ch) = found else { return Ok(Verdict::Invalid) };
            let (kind, client_id) = ch.purpose.split_once(':').unwrap_or(("", ""));
            if b.client_id.as_deref().is_some_and(|id| id != client_id) {
                return Ok(Verdict::Invalid);
            }
            let counted = diesel::update(
                otp_challenges::table
                    .find(&ch.request_id)
                    .filter(otp_challenges::attempts.lt(MAX_ATTEMPTS))
                    .filter(otp_challenges::consumed_at.is_null()),
            )
            .set(otp_challenges::attempts.eq(otp_challenges::attempts + 1))
            .execute(c)?;
            let Some(user_id) = ch.user_id.filter(|_| counted == 1) else { return Ok(Verdict::Invalid) };
            let ok = if kind == "mfa" {
                totp::check_second_factor(c, &state, user_id, &b.otp)?
            } else {
                let mac = code_mac(&state, &ch.request_id, b.otp.trim());
                constant_time_eq(mac.as_bytes(), ch.code_hash.as_bytes())
            };
            let company: Option<i64> = users::table.find(user_id).select(users::company_id).first(c).optional()?;
            if !ok {
                store::audit(c, company, Some(user_id), "otp_failed", &ip, serde_json::json!({"step": kind}))?;
                return Ok(Verdict::Invalid);
            }
            let consumed = diesel::update(
                otp_challenges::table.find(&ch.request_id).filter(otp_challenges::consumed_at.is_null()),
            )
            .set(otp_challenges::consumed_at.eq(t))
            .execute(c)?;
            let Some(client) = clients::by_client_id(c, client_id)? else { return Ok(Verdict::Invalid) };
            let user: Option<UserRow> = users::table.find(user_id).select(UserRow::as_select()).first(c).optional()?;
            let Some(user) = user.filter(|u| consumed == 1 && u.is_active() && u.company_id == client.company_id)
            else {
                return Ok(Verdict::Invalid);
            };
            store::audit(
                c,
                Some(user.company_id),
                Some(user.id),
                "otp_verified",
                &ip,
                serde_json::json!({"step": kind}),
            )?;
            if kind == "login" && totp::enabled(c, user.id)? {
                return Ok(Verdict::Mfa { code: start_mfa(c, &client, &user)? });
            }
            Ok(Verdict::Code { code: arc::insert_code(c, &client, user.id, None)? })
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
    retire(c, &dest, &purpose)?;
    let code = random_token();
    let t = now();
    diesel::insert_into(otp_challenges::table)
        .values((
            otp_challenges::request_id.eq(token_hash(&code)),
            otp_challenges::company_id.eq(user.company_id),
            otp_challenges::user_id.eq(user.id),
            otp_challenges::channel.eq("totp"),
            otp_challenges::destination.eq(&dest),
            otp_challenges::purpose.eq(&purpose),
            otp_challenges::code_hash.eq(""),
            otp_challenges::attempts.eq(0),
            otp_challenges::expires_at.eq(t + Duration::seconds(CODE_TTL_SECS)),
            otp_challenges::resend_after.eq(t),
            otp_challenges::created_at.eq(t),
        ))
        .execute(c)?;
    Ok(code)
}

/// The user of a pending MFA code (`GET /auth/check-qr-code` with headers `code`, `clientId`).
pub fn mfa_user(c: &mut Db, code: &str, client_id: &str) -> ApiResult<Option<i64>> {
    Ok(otp_challenges::table
        .find(token_hash(code))
        .filter(otp_challenges::purpose.eq(format!("mfa:{client_id}")))
        .filter(otp_challenges::consumed_at.is_null())
        .filter(otp_challenges::expires_at.gt(now()))
        .select(otp_challenges::user_id)
        .first::<Option<i64>>(c)
        .optional()?
        .flatten())
}

/// Whether a code hash is a pending MFA code (so `POST /auth/token` can say `mfa_required`).
pub fn mfa_pending(c: &mut Db, hash: &str) -> ApiResult<bool> {
    Ok(diesel::select(diesel::dsl::exists(
        otp_challenges::table
            .find(hash)
            .filter(otp_challenges::purpose.like("mfa:%"))
            .filter(otp_challenges::consumed_at.is_null()),
    ))
    .get_result(c)?)
}
