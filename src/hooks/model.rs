//! Webhook subscriptions and deliveries: rows, wire types, the signature.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::core::{
    db::schema::{webhook_attempts, webhook_deliveries, webhook_subscriptions},
    realtime::event::{CONVERSATION_CREATED, CONVERSATION_UPDATED, MESSAGE_CREATED, MESSAGE_UPDATED},
    types::rfc3339,
};

/// The events a subscription may ask for (the conversation events of the WebSocket API).
pub const EVENT_TYPES: [&str; 4] = [MESSAGE_CREATED, MESSAGE_UPDATED, CONVERSATION_CREATED, CONVERSATION_UPDATED];

/// How long a rotated-out secret keeps signing (README "Outgoing webhooks").
pub const OLD_SECRET_TTL: chrono::Duration = chrono::Duration::hours(24);

/// Delivery states: queued or being retried; received with a 2xx; given up (dead letter).
pub const PENDING: &str = "pending";
pub const DELIVERED: &str = "delivered";
pub const FAILED: &str = "failed";

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhook_subscriptions)]
pub struct SubscriptionRow {
    pub id: i64,
    pub company_id: i64,
    pub url: String,
    pub events: String,
    pub active: bool,
    pub secrets: String,
    pub bot_id: Option<i64>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl SubscriptionRow {
    pub fn event_types(&self) -> Vec<String> {
        serde_json::from_str(&self.events).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhook_deliveries)]
pub struct DeliveryRow {
    pub id: i64,
    pub company_id: i64,
    pub subscription_id: i64,
    pub event_id: String,
    pub event_type: String,
    pub conversation_id: i64,
    pub seq: Option<i64>,
    pub body: String,
    pub status: String,
    pub attempts: i32,
    pub last_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: NaiveDateTime,
    pub delivered_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhook_attempts)]
pub struct AttemptRow {
    pub id: i64,
    pub delivery_id: i64,
    pub status: String,
    pub code: Option<i32>,
    pub duration_ms: i64,
    pub error: Option<String>,
    pub at: NaiveDateTime,
}

/// A signing secret and, once rotated out, when it stops signing. The list is stored sealed
/// with the data key (like provider tokens).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SigningSecret {
    pub secret: String,
    pub until: Option<NaiveDateTime>,
}

/// `X-Confab-Signature`: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`, one
/// `v1=` per secret (the newest first), so a receiver that knows any of them can verify
/// (Stripe's scheme).
pub fn signature_header(secrets: &[&str], t: i64, body: &[u8]) -> String {
    use hmac::{Mac, SimpleHmac};
    let mut header = format!("t={t}");
    for secret in secrets {
        let mut mac = <SimpleHmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        header.push_str(",v1=");
        header.push_str(&hex::encode(mac.finalize().into_bytes()));
    }
    header
}

// ---- wire types ----

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionBody {
    /// `http` or `https`; must resolve to public addresses unless `CONFAB_WEBHOOK_ALLOW_PRIVATE`.
    pub url: String,
    /// Any of `message.created`, `message.updated`, `conversation.created`, `conversation.updated`.
    pub events: Vec<String>,
    #[serde(default)]
    pub active: Option<bool>,
}

/// `PUT`: the fields to change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionPatch {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub active: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionView {
    pub subscription_id: i64,
    pub url: String,
    pub events: Vec<String>,
    pub active: bool,
    /// Set when this is a bot's `webhookUrl`: only events of conversations assigned to the bot.
    pub bot_id: Option<i64>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&SubscriptionRow> for SubscriptionView {
    fn from(r: &SubscriptionRow) -> Self {
        Self {
            subscription_id: r.id,
            url: r.url.clone(),
            events: r.event_types(),
            active: r.active,
            bot_id: r.bot_id,
            created_at: rfc3339(r.created_at),
            updated_at: rfc3339(r.updated_at),
        }
    }
}

/// The answer to `POST` and `rotate-secret`: the subscription and its new secret, shown once.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionWithSecret {
    #[serde(flatten)]
    pub subscription: SubscriptionView,
    pub secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    /// `delivered` (a 2xx answer) or `failed`.
    pub status: String,
    /// The receiver's HTTP status; `null` when none came (timeout, refused, unreachable).
    pub code: Option<i32>,
    pub duration_ms: i64,
    pub error: Option<String>,
    pub at: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    pub delivery_id: i64,
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub conversation_id: i64,
    pub seq: Option<i64>,
    /// `pending` (queued or waiting for a retry), `delivered`, or `failed` (dead-lettered
    /// after 8 attempts, or refused address; `POST …/retry` replays it).
    pub status: String,
    pub attempts: Vec<AttemptView>,
    pub created_at: String,
    pub delivered_at: Option<String>,
}

impl DeliveryView {
    pub fn new(d: &DeliveryRow, attempts: Vec<AttemptView>) -> Self {
        Self {
            delivery_id: d.id,
            event_id: d.event_id.clone(),
            event_type: d.event_type.clone(),
            conversation_id: d.conversation_id,
            seq: d.seq,
            status: d.status.clone(),
            attempts,
            created_at: rfc3339(d.created_at),
            delivered_at: d.delivered_at.map(rfc3339),
        }
    }
}

impl From<&AttemptRow> for AttemptView {
    fn from(a: &AttemptRow) -> Self {
        Self {
            status: a.status.clone(),
            code: a.code,
            duration_ms: a.duration_ms,
            error: a.error.clone(),
            at: rfc3339(a.at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryPage {
    pub items: Vec<DeliveryView>,
    pub total: i64,
    pub page: i64,
    pub limit: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_t_dot_body_per_secret() {
        // Computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec_test
        let h = signature_header(&["whsec_test"], 1_700_000_000, br#"{"a":1}"#);
        let parts: Vec<&str> = h.split(',').collect();
        assert_eq!(parts[0], "t=1700000000");
        assert_eq!(parts[1], "v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789");
        assert_eq!(parts.len(), 2);
        let two = signature_header(&["whsec_test", "whsec_old"], 1_700_000_000, br#"{"a":1}"#);
        assert!(two.starts_with(&h), "the newest secret signs first");
        assert_eq!(two.matches("v1=").count(), 2);
        assert_ne!(signature_header(&["whsec_test"], 1_700_000_001, br#"{"a":1}"#), h, "t is signed");
    }
}
