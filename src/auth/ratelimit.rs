//! Per-IP request limit on the auth routes of both families (CONTRACT §5 and §9,
//! `CONFAB_AUTH_RATE_PER_MINUTE`, 0 turns it off), answering 429 with `Retry-After`.
//!
//! With Redis configured the limit is shared by every node (CONTRACT §8): a counter per IP and
//! minute (`INCR` and `EXPIRE … NX` in one atomic pipeline), under a namespace derived from the
//! data key, so the nodes of one deployment share it and other deployments on the same Redis
//! do not. Without Redis, or while Redis does not answer, each node keeps its own keyed GCRA
//! limiter from `governor`. The failure counters that stop password guessing
//! ([`super::lockout`]) are shared through the database either way.

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

use crate::{crypto::DataKey, error::ApiError, state::AppState};

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

/// Storefront routes (under [`STOREFRONT_AUTH`]) that check a password, create an account or
/// disclose whether one exists (auth.md §2.4).
const STOREFRONT_LIMITED: [&str; 3] = ["login/password", "register/form", "user-exists"];
const STOREFRONT_AUTH: &str = "/service/application/user/authentication/v1.0/";

/// The routes the limit applies to: everything under `/auth/`, the logout routes and the
/// storefront's [`STOREFRONT_LIMITED`] routes.
pub fn is_auth_path(path: &str) -> bool {
    path.starts_with("/auth/")
        || path == "/logout"
        || path == "/keycloak/logout"
        || path.strip_prefix(STOREFRONT_AUTH).is_some_and(|rest| STOREFRONT_LIMITED.contains(&rest))
}

pub async fn limit(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    if is_auth_path(req.path())
        && let Some(st) = req.app_data::<Data<AppState>>().cloned()
        && let Some(ip) = req.peer_addr().map(|a| a.ip())
        && let Err(retry_after_secs) = st.auth_limiter.check(ip).await
    {
        let res = ApiError::TooManyRequests { retry_after_secs: retry_after_secs.max(1) }.error_response();
        return Ok(req.into_response(res).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}
