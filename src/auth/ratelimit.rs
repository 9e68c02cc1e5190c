//! Per-IP request limit on the auth routes (CONTRACT §5, `CONFAB_AUTH_RATE_PER_MINUTE`, 0 turns
//! it off): a keyed GCRA limiter from `governor`, answering 429 with `Retry-After`. It is per
//! node; the failure counters that stop password guessing ([`super::lockout`]) are shared
//! through the database.

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

use crate::{error::ApiError, state::AppState};

/// Keys kept before stale ones are dropped.
const MAX_TRACKED: usize = 100_000;

pub struct AuthLimiter {
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl AuthLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self { limiter: NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n))) }
    }

    /// `Err(seconds to wait)` when `ip` is over its quota.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        if limiter.len() > MAX_TRACKED {
            limiter.retain_recent();
        }
        limiter.check_key(&ip).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

/// The routes the limit applies to: everything under `/auth/` and the logout routes.
pub fn is_auth_path(path: &str) -> bool {
    path.starts_with("/auth/") || path == "/logout" || path == "/keycloak/logout"
}

pub async fn limit(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    if is_auth_path(req.path())
        && let Some(st) = req.app_data::<Data<AppState>>()
        && let Some(ip) = req.peer_addr().map(|a| a.ip())
        && let Err(retry_after_secs) = st.auth_limiter.check(ip)
    {
        let res = ApiError::TooManyRequests { retry_after_secs: retry_after_secs.max(1) }.error_response();
        return Ok(req.into_response(res).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}
