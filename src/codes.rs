//! One-time codes and single-use tokens: the one engine behind the ARC routes
//! (`/auth/send-otp`, `/auth/verify-otp`, the MFA step) and the storefront's OTP and link flows
//! (CONTRACT §5 OTP rules, auth.md §2.4). A code is 6 digits, valid 5 minutes, stored as an
//! HMAC with the data key (a bare hash of 6 digits is reversed in a second), at most 5 attempts
//! counted atomically before the comparison, one new code per destination and purpose every
//! 30 s, single use, and a new code retires the older ones. Rows of `otp_challenges`;
//! `purpose` keeps the flows apart.
//!
//! Besides the 5 attempts of each code, every wrong code counts on one brute-force counter
//! per company and contact ([`keys`], the rules of [`crate::core::auth::lockout`]): five failures
//! lock that contact's codes — across new codes, purposes and flows — for 1 minute, doubling up
//! to 1 hour, and while it is locked even the right code is refused. Asking for a new code does
//! not reset it; a right code does.

use chrono::Duration;
use diesel::prelude::*;

use crate::core::{
    auth::lockout,
    crypto::{DataKey, constant_time_eq, random_bytes, random_hex_id, random_token},
    db::{Db, schema::otp_challenges},
    error::{ApiError, ApiResult},
    types::now,
};

pub const TTL: Duration = Duration::minutes(5);
/// Seconds before the same destination may get another code (`resend_timer`).
pub const RESEND_SECS: i64 = 30;
pub const MAX_ATTEMPTS: i32 = 5;
/// Forgot-password tokens (the `forgot_token` of `VerifyForgotOtpSuccess`) live 15 minutes.
pub const FORGOT_TTL: Duration = Duration::minutes(15);
/// Messages (codes and links) one destination may get from one company in an hour.
pub const MAX_PER_HOUR: i64 = 10;
/// The `channel`s of challenges that were sent to their destination; `token` (a
/// `forgot_token` handed back in an answer) and `totp` (an MFA step) rows were not.
pub const MESSAGE_CHANNELS: [&str; 2] = ["email", "sms"];

fn code_mac(key: &DataKey, request_id: &str, code: &str) -> String {
    key.sign(format!("otp:{request_id}:{code}").as_bytes())
}

fn six_digits() -> String {
    let n = u32::from_be_bytes(random_bytes::<4>()) % 1_000_000;
    format!("{n:06}")
}

pub struct Issued {
    pub request_id: String,
    pub code: String,
}

pub struct Challenge<'a> {
    pub company_id: i64,
    pub user_id: Option<i64>,
    pub channel: &'a str,
    pub destination: &'a str,
    pub purpose: &'a str,
}

/// The per-recipient resend window (README "Account takeover and abuse"): a destination gets
/// at most one message per purpose every [`RESEND_SECS`] while the last one is unused, and at
/// most [`MAX_PER_HOUR`] messages (codes and links, every purpose) an hour, counted within
/// `company_id` (customers are per company) or, with `None`, over every company (staff
/// addresses are unique across companies). Unknown addresses are counted like known ones
/// (their challenges are stored too), so the throttle says nothing about accounts. `Err` is
/// 429 with `Retry-After`. The check and the insert that follows it are serialised per
/// destination ([`crate::core::db::dialect::lock_key`]) so concurrent requests cannot both pass.
pub fn throttle(c: &mut Db, company_id: Option<i64>, destination: &str, purpose: &str) -> ApiResult<()> {
    crate::core::db::dialect::lock_key(c, &format!("notify:{destination}"))?;
    let t = now();
    let scoped = || {
        let q = otp_challenges::table.filter(otp_challenges::destination.eq(destination)).into_boxed();
        match company_id {
            Some(id) => q.filter(otp_challenges::company_id.eq(id)),
            None => q,
        }
    };
    let blocked_until: Option<chrono::NaiveDateTime> = scoped()
        .filter(otp_challenges::purpose.eq(purpose))
        .filter(otp_challenges::consumed_at.is_null())
        .filter(otp_challenges::resend_after.gt(t))
        .select(otp_challenges::resend_after)
        .order(otp_challenges::resend_after.desc())
        .first(c)
        .optional()?;
    if let Some(until) = blocked_until {
        return Err(ApiError::TooManyRequests { retry_after_secs: (until - t).num_seconds().max(1) as u64 });
    }
    let hour_ago = t - Duration::hours(1);
    let sent: Vec<chrono::NaiveDateTime> = scoped()
        .filter(otp_challenges::channel.eq_any(MESSAGE_CHANNELS))
        .filter(otp_challenges::created_at.gt(hour_ago))
        .order(otp_challenges::created_at)
        .select(otp_challenges::created_at)
        .limit(MAX_PER_HOUR)
        .load(c)?;
    if sent.len() as i64 >= MAX_PER_HOUR {
        let frees_at = sent[0] + Duration::hours(1);
        return Err(ApiError::TooManyRequests { retry_after_secs: (frees_at - t).num_seconds().max(1) as u64 });
    }
    Ok(())
}

/// Issues a code. A second code for the same destination and purpose within the resend
/// window, or one over the hourly cap, is 429 with `Retry-After` ([`throttle`]); a new code
/// invalidates the older ones.
pub fn issue(c: &mut Db, key: &DataKey, ch: &Challenge<'_>) -> ApiResult<Issued> {
    let t = now();
    throttle(c, Some(ch.company_id), ch.destination, ch.purpose)?;
    retire(c, ch.company_id, ch.destination, ch.purpose)?;
    let request_id = random_hex_id();
    let code = six_digits();
    diesel::insert_into(otp_challenges::table)
        .values((
            otp_challenges::request_id.eq(&request_id),
            otp_challenges::company_id.eq(ch.company_id),
            otp_challenges::user_id.eq(ch.user_id),
            otp_challenges::channel.eq(ch.channel),
            otp_challenges::destination.eq(ch.destination),
            otp_challenges::purpose.eq(ch.purpose),
            otp_challenges::code_hash.eq(code_mac(key, &request_id, &code)),
            otp_challenges::attempts.eq(0),
            otp_challenges::expires_at.eq(t + TTL),
            otp_challenges::resend_after.eq(t + Duration::seconds(RESEND_SECS)),
            otp_challenges::created_at.eq(t),
        ))
        .execute(c)?;
    Ok(Issued { request_id, code })
}

/// A code that was accepted.
#[derive(Debug, Clone)]
pub struct Verified {
    pub request_id: String,
    pub user_id: Option<i64>,
    pub destination: String,
}

/// The outcome of a check; a wrong code must still commit its attempt, so it is not an `Err`.
pub enum Checked {
    Accepted(Verified),
    Rejected,
}

impl Checked {
    pub fn accepted(self) -> ApiResult<Verified> {
        match self {
            Checked::Accepted(v) => Ok(v),
            Checked::Rejected => Err(ApiError::bad_request("invalid_otp", "the code is wrong, used or expired")),
        }
    }
}

/// The newest live challenge for a destination (routes that name an e-mail, not a request id).
pub fn latest_request(c: &mut Db, company_id: i64, destination: &str, purposes: &[&str]) -> ApiResult<Option<String>> {
    Ok(otp_challenges::table
        .filter(otp_challenges::company_id.eq(company_id))
        .filter(otp_challenges::destination.eq(destination))
        .filter(otp_challenges::purpose.eq_any(purposes))
        .filter(otp_challenges::consumed_at.is_null())
        .filter(otp_challenges::expires_at.gt(now()))
        .order(otp_challenges::created_at.desc())
        .select(otp_challenges::request_id)
        .first(c)
        .optional()?)
}

/// The brute-force counter of one contact's codes in one company (module docs).
pub fn keys(company_id: i64, destination: &str, ip: &str) -> lockout::Keys {
    lockout::Keys::scoped("otp", &format!("{company_id}:{destination}"), ip)
}

/// Checks a code for the challenge `request_id` of `company_id`: a slot on the contact's
/// counter ([`keys`]) is reserved first (a locked contact is refused without a comparison),
/// then the challenge's attempt is counted (`attempts < 5` in the same UPDATE, so concurrent
/// guesses cannot exceed the limit), then the code is compared in constant time and the
/// challenge consumed (single use, atomic). `ip` feeds the per-address counter.
pub fn check(
    c: &mut Db,
    key: &DataKey,
    company_id: i64,
    request_id: &str,
    purposes: &[&str],
    code: &str,
    ip: &str,
) -> ApiResult<Checked> {
    let found: Option<(String, Option<i64>, String)> = otp_challenges::table
        .filter(otp_challenges::request_id.eq(request_id))
        .filter(otp_challenges::company_id.eq(company_id))
        .filter(otp_challenges::purpose.eq_any(purposes))
        .select((otp_challenges::code_hash, otp_challenges::user_id, otp_challenges::destination))
        .first(c)
        .optional()?;
    let Some((stored, user_id, destination)) = found else { return Ok(Checked::Rejected) };
    let accepted = lockout::guard(c, &keys(company_id, &destination, ip), |c| {
        Ok(count_attempt(c, request_id)? && code_matches(key, request_id, code, &stored) && consume(c, request_id)?)
    })?;
    if !accepted {
        return Ok(Checked::Rejected);
    }
    Ok(Checked::Accepted(Verified { request_id: request_id.to_owned(), user_id, destination }))
}

/// Counts one attempt at a live challenge (`attempts < 5` in the same UPDATE, so concurrent
/// guesses cannot exceed the limit); `false` when it is used, expired or out of attempts.
pub fn count_attempt(c: &mut Db, request_id: &str) -> ApiResult<bool> {
    let counted = diesel::update(
        otp_challenges::table
            .find(request_id)
            .filter(otp_challenges::consumed_at.is_null())
            .filter(otp_challenges::expires_at.gt(now()))
            .filter(otp_challenges::attempts.lt(MAX_ATTEMPTS)),
    )
    .set(otp_challenges::attempts.eq(otp_challenges::attempts + 1))
    .execute(c)?;
    Ok(counted == 1)
}

/// Whether `code` is the one stored for the challenge (constant-time).
pub fn code_matches(key: &DataKey, request_id: &str, code: &str, stored: &str) -> bool {
    constant_time_eq(stored.as_bytes(), code_mac(key, request_id, code.trim()).as_bytes())
}

/// Uses a challenge up (single use, atomic); `false` when it already was.
pub fn consume(c: &mut Db, request_id: &str) -> ApiResult<bool> {
    let consumed = diesel::update(otp_challenges::table.find(request_id).filter(otp_challenges::consumed_at.is_null()))
        .set(otp_challenges::consumed_at.eq(now()))
        .execute(c)?;
    Ok(consumed == 1)
}

/// Marks every open challenge of `destination` for `purpose` used (a new one replaces them).
pub fn retire(c: &mut Db, company_id: i64, destination: &str, purpose: &str) -> ApiResult<()> {
    diesel::update(
        otp_challenges::table
            .filter(otp_challenges::company_id.eq(company_id))
            .filter(otp_challenges::destination.eq(destination))
            .filter(otp_challenges::purpose.eq(purpose))
            .filter(otp_challenges::consumed_at.is_null()),
    )
    .set(otp_challenges::consumed_at.eq(now()))
    .execute(c)?;
    Ok(())
}

/// A single-use opaque token stored like a code: the `forgot_token` after a verified OTP
/// (channel `token`: handed back in the answer), and the codes of e-mailed or texted links
/// (password reset, contact verification; channel `email` or `sms`, under [`throttle`]). The
/// `destination` is the contact the token is about; `user_id` must be set.
pub fn issue_token(c: &mut Db, key: &DataKey, ch: &Challenge<'_>) -> ApiResult<String> {
    let sent = MESSAGE_CHANNELS.contains(&ch.channel);
    if sent {
        throttle(c, Some(ch.company_id), ch.destination, ch.purpose)?;
    }
    let token = random_token();
    let t = now();
    let request_id = random_hex_id();
    diesel::insert_into(otp_challenges::table)
        .values((
            otp_challenges::request_id.eq(&request_id),
            otp_challenges::company_id.eq(ch.company_id),
            otp_challenges::user_id.eq(ch.user_id),
            otp_challenges::channel.eq(ch.channel),
            otp_challenges::destination.eq(ch.destination),
            otp_challenges::purpose.eq(ch.purpose),
            otp_challenges::code_hash.eq(key.sign(format!("token:{token}").as_bytes())),
            otp_challenges::attempts.eq(0),
            otp_challenges::expires_at.eq(t + FORGOT_TTL),
            otp_challenges::resend_after.eq(if sent { t + Duration::seconds(RESEND_SECS) } else { t }),
            otp_challenges::created_at.eq(t),
        ))
        .execute(c)?;
    Ok(format!("{request_id}.{token}"))
}

/// A live token from [`issue_token`]: its user and destination, without using it up.
pub fn peek_token(
    c: &mut Db,
    key: &DataKey,
    company_id: i64,
    token: &str,
    purpose: &str,
) -> ApiResult<Option<(String, i64, String)>> {
    let Some((request_id, secret)) = token.split_once('.') else { return Ok(None) };
    let row: Option<(String, Option<i64>, String)> = otp_challenges::table
        .filter(otp_challenges::request_id.eq(request_id))
        .filter(otp_challenges::company_id.eq(company_id))
        .filter(otp_challenges::purpose.eq(purpose))
        .filter(otp_challenges::consumed_at.is_null())
        .filter(otp_challenges::expires_at.gt(now()))
        .select((otp_challenges::code_hash, otp_challenges::user_id, otp_challenges::destination))
        .first(c)
        .optional()?;
    Ok(row.and_then(|(stored, user_id, destination)| {
        let ours = constant_time_eq(stored.as_bytes(), key.sign(format!("token:{secret}").as_bytes()).as_bytes());
        match (ours, user_id) {
            (true, Some(user_id)) => Some((request_id.to_owned(), user_id, destination)),
            _ => None,
        }
    }))
}

/// Uses up a token from [`issue_token`] (single use, atomic); returns its user and destination.
pub fn consume_token(
    c: &mut Db,
    key: &DataKey,
    company_id: i64,
    token: &str,
    purpose: &str,
) -> ApiResult<Option<(i64, String)>> {
    let Some((request_id, user_id, destination)) = peek_token(c, key, company_id, token, purpose)? else {
        return Ok(None);
    };
    let consumed =
        diesel::update(otp_challenges::table.find(&request_id).filter(otp_challenges::consumed_at.is_null()))
            .set(otp_challenges::consumed_at.eq(now()))
            .execute(c)?;
    Ok((consumed == 1).then_some((user_id, destination)))
}

/// A `register_token`: proof, signed with the data key, that `destination` (a phone or an
/// e-mail) was verified by OTP for this application, valid 30 minutes. Registration with it
/// marks that contact verified.
pub fn register_token(key: &DataKey, application_id: i64, destination: &str) -> String {
    let expires = (now() + Duration::minutes(30)).and_utc().timestamp();
    let payload = format!("{application_id}|{destination}|{expires}");
    let encoded = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &payload);
    format!("{encoded}.{}", key.sign(format!("register:{payload}").as_bytes()))
}

/// The destination a `register_token` vouches for, when it is ours, for this application and
/// not expired.
pub fn verified_destination(key: &DataKey, application_id: i64, token: &str) -> Option<String> {
    let (encoded, sig) = token.split_once('.')?;
    let payload = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, encoded).ok()?;
    let payload = String::from_utf8(payload).ok()?;
    if !constant_time_eq(key.sign(format!("register:{payload}").as_bytes()).as_bytes(), sig.as_bytes()) {
        return None;
    }
    let mut parts = payload.splitn(3, '|');
    let (app, dest, exp) = (parts.next()?, parts.next()?, parts.next()?);
    let live = exp.parse::<i64>().ok()? > now().and_utc().timestamp();
    (app == application_id.to_string() && live).then(|| dest.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_six_digits() {
        for _ in 0..100 {
            let c = six_digits();
            assert_eq!(c.len(), 6);
            assert!(c.chars().all(|d| d.is_ascii_digit()));
        }
    }

    #[test]
    fn register_tokens_are_bound_to_application_and_key() {
        let key = DataKey::from_bytes([9; 32]);
        let t = register_token(&key, 5, "+919876543210");
        assert_eq!(verified_destination(&key, 5, &t).as_deref(), Some("+919876543210"));
        assert_eq!(verified_destination(&key, 6, &t), None);
        assert_eq!(verified_destination(&DataKey::from_bytes([1; 32]), 5, &t), None);
        assert_eq!(verified_destination(&key, 5, &t.replace('.', "x.")), None);
    }
}
