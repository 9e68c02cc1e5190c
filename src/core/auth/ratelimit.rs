//! Per-IP request limit on the auth routes of both families (CONTRACT §5 and §9,
//! `CONFAB_AUTH_RATE_PER_MINUTE`, 0 turns it off), answering 429 with `Retry-After`: every
//! route that checks or hashes a secret or sends a mail or a text ([`is_auth_path`]).
//!
//! With Redis configured the limit is shared by every node (CONTRACT §8): a counter per IP and
//! minute (`INCR` and `EXPIRE … NX` in one atomic pipeline), under a namespace derived from the
//! data key, so the nodes of one deployment share it and other deployments on the same Redis
//! do not. Without Redis, or while Redis does not answer, each node keeps its own keyed GCRA
//! limiter from `governor`. The failure counters that stop password guessing
//! ([`crate::core::auth::lockout`]) are shared through the database either way.

use std::{net::IpAddr, num::NonZeroU32};

use actix_web::{
    Error, ResponseError,
    body::{EitherBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    middleware::Next,
    web::Data,
};
use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};

use redis::aio::ConnectionManager;

use crate::core::{crypto::DataKey, error::ApiError};

/// Keys kept before stale ones are dropped.
const MAX_TRACKED: usize = 100_000;

pub struct AuthLimiter {
    per_minute: u32,
    local: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Redis and the key prefix of this deployment.
    shared: Option<(ConnectionManager, String)>,
}

impl AuthLimiter {
    pub fn new(per_minute: u32, redis: Option<ConnectionManager>, data_key: &DataKey) -> Self {
        let namespace = format!("confab:{}:ratelimit:auth", &data_key.sign(b"rate-limit namespace")[..16]);
        Self {
            per_minute,
            local: NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            shared: redis.map(|conn| (conn, namespace)),
        }
    }

    /// `Err(seconds to wait)` when `ip` is over its quota.
    pub async fn check(&self, ip: IpAddr) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        if let Some((conn, namespace)) = &self.shared {
            match self.check_shared(conn.clone(), namespace, ip).await {
                Ok(verdict) => return verdict,
                Err(e) => tracing::warn!(error = %e, "Redis rate limit unavailable; limiting per node"),
            }
        }
        let Some(limiter) = &self.local else { return Ok(()) };
        if limiter.len() > MAX_TRACKED {
            limiter.retain_recent();
        }
        limiter.check_key(&ip).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }

    async fn check_shared(
        &self,
        mut conn: ConnectionManager,
        namespace: &str,
        ip: IpAddr,
    ) -> redis::RedisResult<Result<(), u64>> {
        let now = chrono::Utc::now().timestamp();
        let key = format!("{namespace}:{ip}:{}", now / 60);
        let (count,): (u64,) = redis::pipe()
            .atomic()
            .incr(&key, 1)
            .cmd("EXPIRE")
            .arg(&key)
            .arg(61)
            .arg("NX")
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(if count > u64::from(self.per_minute) { Err((60 - now.rem_euclid(60)) as u64) } else { Ok(()) })
    }
}

/// Every route that checks or hashes a secret (a password, a client secret, a one-time code)
/// or sends a mail or a text is under the limit (README "Account takeover and abuse" lists
/// them): argon2 costs tens of milliseconds of a core, and mails and texts cost money and
/// annoy their recipients. Routes under these prefixes…
const LIMITED_PREFIXES: [&str; 4] = [
    // ARC and messaging-family auth: logins, tokens, codes, resets, sign-up, OAuth starts.
    "/auth/",
    // Auth clients: creating one or setting its secret hashes it.
    "/auth-clients",
    // The Fynd SDK's panel OAuth: every call verifies a client secret.
    "/service/panel/authentication/",
    // The storefront's authentication routes (except [`STOREFRONT_UNLIMITED`]).
    STOREFRONT_AUTH,
];
/// …and these exact paths.
const LIMITED_PATHS: [&str; 5] = [
    "/logout",
    "/keycloak/logout",
    // Mails an invitation.
    "/agent/invite",
    // Mail or text a verification link.
    "/service/application/user/profile/v1.0/email/link/send",
    "/service/application/user/profile/v1.0/mobile/link/send",
];
const STOREFRONT_AUTH: &str = "/service/application/user/authentication/v1.0/";
/// Storefront authentication routes a signed-in page calls all the time and that check no
/// secret and send nothing: the session cookie is an HMAC, not a password.
const STOREFRONT_UNLIMITED: [&str; 4] = ["session", "sessions", "has-password", "logout"];

/// Whether the per-IP limit applies to `path` (see [`LIMITED_PREFIXES`] and [`LIMITED_PATHS`]).
pub fn is_auth_path(path: &str) -> bool {
    if let Some(rest) = path.strip_prefix(STOREFRONT_AUTH) {
        return !STOREFRONT_UNLIMITED.contains(&rest);
    }
    LIMITED_PATHS.contains(&path) || LIMITED_PREFIXES.iter().any(|p| path.starts_with(p))
}

pub async fn limit(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    if is_auth_path(req.path())
        && let Some(limiter) = req.app_data::<Data<AuthLimiter>>().cloned()
        && let Some(ip) = req.peer_addr().map(|a| a.ip())
        && let Err(retry_after_secs) = limiter.check(ip).await
    {
        let res = ApiError::TooManyRequests { retry_after_secs: retry_after_secs.max(1) }.error_response();
        return Ok(req.into_response(res).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::is_auth_path;

    #[test]
    fn secret_checking_and_message_sending_routes_are_limited() {
        for path in [
            "/auth/login",
            "/auth/token",
            "/auth/forget-password",
            "/auth-clients",
            "/auth-clients/3",
            "/logout",
            "/agent/invite",
            "/service/panel/authentication/v1.0/company/1/oauth/token",
            "/service/panel/authentication/v1.0/company/1/oauth/offline-token",
            "/service/application/user/authentication/v1.0/login/password",
            "/service/application/user/authentication/v1.0/login/otp",
            "/service/application/user/authentication/v1.0/otp/forgot/mobile/send",
            "/service/application/user/authentication/v1.0/login/password/reset",
            "/service/application/user/authentication/v1.0/login/password/reset/forgot",
            "/service/application/user/authentication/v1.0/password",
            "/service/application/user/profile/v1.0/email/link/send",
        ] {
            assert!(is_auth_path(path), "{path} should be limited");
        }
        for path in [
            "/service/application/user/authentication/v1.0/session",
            "/service/application/user/authentication/v1.0/logout",
            "/service/application/user/profile/v1.0/detail",
            "/message",
            "/agent",
            "/authx",
        ] {
            assert!(!is_auth_path(path), "{path} should not be limited");
        }
    }
}
