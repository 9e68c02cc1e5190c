//! Per-IP request limit on the auth routes (CONTRACT §5, `CONFAB_AUTH_RATE_PER_MINUTE`, 0 turns
//! it off), answering 429 with `Retry-After`. With Redis configured the limit is shared by all
//! nodes: a fixed one-minute window per IP (`INCR` + `EXPIRE` in one `MULTI`); without Redis,
//! or while Redis does not answer, each node limits on its own with a keyed GCRA limiter from
//! `governor`. The failure counters that stop password guessing ([`super::lockout`]) are shared
//! through the database.

use std::{
    net::IpAddr,
    num::NonZeroU32,
    time::{SystemTime, UNIX_EPOCH},
};

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
    per_minute: u32,
    redis: Option<redis::aio::ConnectionManager>,
}

impl AuthLimiter {
    pub fn new(per_minute: u32, redis: Option<redis::aio::ConnectionManager>) -> Self {
        Self {
            limiter: NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            per_minute,
            redis,
        }
    }

    /// `Err(seconds to wait)` when `ip` is over its quota.
    pub async fn check(&self, ip: IpAddr) -> Result<(), u64> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        if let Some(conn) = &self.redis {
            match shared_check(conn.clone(), ip, self.per_minute).await {
                Ok(answer) => return answer,
                Err(e) => tracing::warn!(error = %e, "shared rate limit unavailable; limiting on this node"),
            }
        }
        if limiter.len() > MAX_TRACKED {
            limiter.retain_recent();
        }
        limiter.check_key(&ip).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

/// The shared window: `confab:ratelimit:auth:<ip>:<minute>` counts this minute's requests and
/// expires after two minutes.
async fn shared_check(
    mut conn: redis::aio::ConnectionManager,
    ip: IpAddr,
    per_minute: u32,
) -> redis::RedisResult<Result<(), u64>> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
    let key = format!("confab:ratelimit:auth:{ip}:{}", now / 60);
    let (count,): (u64,) =
        redis::pipe().atomic().incr(&key, 1).expire(&key, 120).ignore().query_async(&mut conn).await?;
    Ok(if count > u64::from(per_minute) { Err(60 - now % 60) } else { Ok(()) })
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
        && let Err(retry_after_secs) = st.auth_limiter.check(ip).await
    {
        let res = ApiError::TooManyRequests { retry_after_secs: retry_after_secs.max(1) }.error_response();
        return Ok(req.into_response(res).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}
