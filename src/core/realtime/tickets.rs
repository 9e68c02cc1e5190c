//! Single-use WebSocket tickets for browsers (CONTRACT §4): valid 30 s, stored hashed, in
//! process or in Redis (so a ticket minted on one node works on another).

use std::time::Duration;

use crate::core::{
    auth::session::Principal,
    crypto::{random_token, token_hash},
    error::{ApiError, ApiResult},
    realtime::broker::Broker,
};

pub const TTL: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Tickets {
    local: moka::sync::Cache<String, Principal>,
    redis: Option<redis::aio::ConnectionManager>,
}

impl Tickets {
    pub fn new(broker: &Broker) -> Self {
        Self { local: moka::sync::Cache::builder().time_to_live(TTL).build(), redis: broker.redis() }
    }

    pub async fn issue(&self, p: &Principal) -> ApiResult<String> {
        let ticket = random_token();
        let key = format!("confab:ticket:{}", token_hash(&ticket));
        match &self.redis {
            None => self.local.insert(key, p.clone()),
            Some(conn) => {
                let value = serde_json::to_string(p).map_err(anyhow::Error::from)?;
                let mut conn = conn.clone();
                redis::cmd("SET")
                    .arg(&key)
                    .arg(value)
                    .arg("EX")
                    .arg(TTL.as_secs())
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(|e| ApiError::Internal(e.into()))?;
            }
        }
        Ok(ticket)
    }

    /// Takes a ticket (atomically: a second use finds nothing).
    pub async fn take(&self, ticket: &str) -> ApiResult<Option<Principal>> {
        let key = format!("confab:ticket:{}", token_hash(ticket));
        match &self.redis {
            None => Ok(self.local.remove(&key)),
            Some(conn) => {
                let mut conn = conn.clone();
                let value: Option<String> = redis::cmd("GETDEL")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| ApiError::Internal(e.into()))?;
                Ok(value.and_then(|v| serde_json::from_str(&v).ok()))
            }
        }
    }
}
