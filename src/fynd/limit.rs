//! Per-IP request limit for the storefront routes that disclose account existence
//! (`user-exists`, auth.md §2.4): `CONFAB_AUTH_RATE_PER_MINUTE` requests per fixed one-minute
//! window, 0 turns it off. In-process only; the shared (Redis) limiter of the ARC routes
//! should replace it once both are merged.

use std::sync::{
    Arc, OnceLock,
    atomic::{AtomicU32, Ordering},
};

use crate::{
    error::{ApiError, ApiResult},
    state::AppState,
};

type Windows = moka::sync::Cache<String, Arc<AtomicU32>>;

fn windows() -> &'static Windows {
    static WINDOWS: OnceLock<Windows> = OnceLock::new();
    WINDOWS.get_or_init(|| {
        moka::sync::Cache::builder().max_capacity(100_000).time_to_live(std::time::Duration::from_secs(60)).build()
    })
}

pub fn check(st: &AppState, route: &str, ip: &str) -> ApiResult<()> {
    let limit = st.config.auth_rate_per_minute;
    if limit == 0 {
        return Ok(());
    }
    let counter = windows().get_with(format!("{}|{route}|{ip}", st.config.bind), || Arc::new(AtomicU32::new(0)));
    if counter.fetch_add(1, Ordering::Relaxed) >= limit {
        return Err(ApiError::TooManyRequests { retry_after_secs: 60 });
    }
    Ok(())
}
