//! Provider webhook routes (CONTRACT §6). Signatures are checked over the raw body bytes,
//! constant-time, before the payload is acted on; a bad or missing signature is 401 and
//! stores nothing.

use actix_web::{HttpRequest, HttpResponse, post, web};
use hmac::{Mac, SimpleHmac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use utoipa::ToSchema;

use crate::{
    error::{ApiError, ApiResult, ErrorBody},
    messaging::{
        model::Status,
        service::{self, InboundMessage, StatusUpdate},
        store,
    },
    state::AppState,
    types::Phone,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(sandbox);
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(sandbox), components(schemas(SandboxBody, SandboxMessage, SandboxStatus, WebhookView)))]
pub struct Api;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxBody {
    pub channel_id: i64,
    #[serde(default)]
    pub messages: Vec<SandboxMessage>,
    #[serde(default)]
    pub statuses: Vec<SandboxStatus>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SandboxMessage {
    /// The provider message id: retries with the same id are ignored.
    pub id: String,
    pub from: String,
    pub name: Option<String>,
    pub text: Option<String>,
    /// RFC 3339; defaults to now.
    pub timestamp: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SandboxStatus {
    pub id: String,
    pub status: String,
    pub error_code: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    pub received: usize,
    pub duplicates: usize,
    pub statuses: usize,
}

/// `sha256=<hex HMAC-SHA256(raw body, secret)>`, compared in constant time.
pub fn verify_sha256_signature(header: Option<&str>, secret: &[u8], body: &[u8]) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else { return false };
    let Ok(given) = hex::decode(hex_sig) else { return false };
    let mut mac = <SimpleHmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChannelOnly {
    channel_id: i64,
}

/// The sandbox provider's webhook, for demos, the console and load tests: a JSON body signed
/// with the channel's `webhookSecret` in `X-Confab-Signature` (CONTRACT §6). The body is read
/// for its `channelId` alone (to pick the secret) before the signature is checked.
#[utoipa::path(tag = "webhooks", request_body = SandboxBody,
    responses((status = 200, body = WebhookView), (status = 401, body = ErrorBody), (status = 400, body = ErrorBody)))]
#[post("/webhooks/sandbox")]
async fn sandbox(req: HttpRequest, st: web::Data<AppState>, body: web::Bytes) -> ApiResult<HttpResponse> {
    let unauthorized = ApiError::Unauthorized("invalid_signature");
    let Ok(ChannelOnly { channel_id }) = serde_json::from_slice::<ChannelOnly>(&body) else {
        return Err(unauthorized);
    };
    let channel = match st.db.run(move |c| store::channel_by_id(c, channel_id)).await {
        Ok(ch) if ch.provider == "sandbox" => ch,
        Ok(_) | Err(ApiError::NotFound) => return Err(unauthorized),
        Err(e) => return Err(e),
    };
    let secret = channel_secret(&st, &channel.secrets, "webhookSecret")?;
    let header = req.headers().get("X-Confab-Signature").and_then(|v| v.to_str().ok());
    if !verify_sha256_signature(header, secret.as_bytes(), &body) {
        return Err(unauthorized);
    }
    let parsed: SandboxBody = crate::extract::parse(&body)?;
    let mut messages = Vec::new();
    for m in parsed.messages {
        let from = Phone::try_from(m.from).map_err(|e| ApiError::field("messages.from", e.0))?;
        let timestamp = match m.timestamp {
            Some(t) => chrono::DateTime::parse_from_rfc3339(&t)
                .map_err(|_| ApiError::field("messages.timestamp", "must be RFC 3339"))?
                .naive_utc(),
            None => crate::types::now(),
        };
        messages.push(InboundMessage {
            provider_message_id: m.id,
            from,
            name: m.name,
            text: m.text,
            media: Vec::new(),
            timestamp,
        });
    }
    let statuses = parsed
        .statuses
        .into_iter()
        .map(|s| {
            Ok(StatusUpdate {
                provider_message_id: s.id,
                status: Status::parse(&s.status).ok_or_else(|| ApiError::field("statuses.status", "unknown status"))?,
                error_code: s.error_code,
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let n = statuses.len();
    let outcome = service::ingest(&st, &channel, messages, statuses).await?;
    Ok(HttpResponse::Ok().json(WebhookView { received: outcome.created, duplicates: outcome.duplicates, statuses: n }))
}

/// One decrypted secret of a channel.
pub fn channel_secret(st: &AppState, sealed: &str, name: &str) -> ApiResult<String> {
    let plain = st.data_key.decrypt(sealed).map_err(ApiError::Internal)?;
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&plain).map_err(|e| ApiError::Internal(e.into()))?;
    map.get(name)
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("channel secret {name} is not set")))
}
