//! Everything a handler, actor or worker needs, built once by `lib::build`. It names core types
//! only: what a feature shares with another (the webhook channel cache of `messaging`) is
//! registered as its own app data by `lib::build` instead.

use std::sync::Arc;

use crate::core::{
    auth::{jwt::Keys, ratelimit::AuthLimiter, session::SessionCache},
    config::Config,
    crypto::DataKey,
    db::Pool,
    media::MediaStore,
    metrics::Metrics,
    realtime::{broker::Broker, hub::Hub, limit::WsSlots, presence::Presence, tickets::Tickets},
};

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Pool,
    pub data_key: Arc<DataKey>,
    pub keys: Arc<Keys>,
    pub media: MediaStore,
    pub sessions: SessionCache,
    pub auth_limiter: Arc<AuthLimiter>,
    pub mail: crate::core::notify::EmailSender,
    pub sms: crate::core::notify::SmsSender,
    pub metrics: Metrics,
    pub broker: Broker,
    /// Wakes the delivery worker after a commit that queued outbox jobs.
    pub outbox_wake: Arc<tokio::sync::Notify>,
    /// Wakes the outgoing-webhook worker (a replayed delivery); new events wake it through
    /// the broker.
    pub webhook_wake: Arc<tokio::sync::Notify>,
    /// Wakes the campaign runner (a campaign started or resumed).
    pub campaign_wake: Arc<tokio::sync::Notify>,
    pub hub: actix::Addr<Hub>,
    pub tickets: Tickets,
    /// Open WebSockets per user on this node (`CONFAB_WS_MAX_PER_USER`).
    pub ws_slots: Arc<WsSlots>,
    /// Records which agents have a live WebSocket here, for every node to read (issue 22).
    pub presence: Presence,
    /// The outbound HTTP client, with the address checks ([`crate::core::net`]).
    pub http: reqwest::Client,
}
