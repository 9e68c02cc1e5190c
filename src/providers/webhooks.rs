//! Provider webhook routes (CONTRACT §6). Signatures are checked over the raw body bytes,
//! constant-time, before the payload is acted on; a bad or missing signature is 401, stores
//! nothing and is counted (`confab_webhook_verifications_total{provider,result}`). A valid
//! delivery that names an unknown number or carries an unsupported item answers 200 and is
//! recorded in `webhook_receipts` (key `ignored:<reason>:<id>`) and logged, nothing else.
//!
//! WhatsApp: each Meta app signs with its app secret, and confab keeps one per channel. The
//! body is verified against the app secrets of every WhatsApp channel (one HMAC per distinct
//! secret) before it is parsed; each change is then routed by `metadata.phone_number_id`, and
//! only to a channel whose own secret verified the body (a signer of app A cannot post into a
//! channel of app B).
//!
//! Twilio: the signature is keyed by the account's auth token. Candidates are the Twilio
//! channels of the form's `AccountSid`; the URL signed is `CONFAB_PUBLIC_URL` + path + query
//! (with and without the default port); the delivery is routed by our number (`To` of an
//! inbound message, `From` of a status callback) among the channels that verified it.
//!
//! The live channels of each provider are cached ([`WebhookChannels`], for its `CHANNELS_TTL`):
//! a delivery is verified without waiting on the database first. A channel created, changed or
//! retired through the API takes effect at once on the node that took the change, and within
//! the TTL on the other nodes of a cluster (a rotated secret is still accepted there for at
//! most that long).

use std::{collections::HashMap, sync::Arc};

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use diesel::prelude::*;
use hmac::{Mac, SimpleHmac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use utoipa::ToSchema;

use super::{twilio, whatsapp};
use crate::{
    core::{
        crypto::constant_time_eq,
        db::{Db, schema::webhook_receipts},
        error::{ApiError, ApiResult, ErrorBody, is_unique_violation},
        state::AppState,
        types::{Phone, now},
    },
    messaging::{
        channel_cache::WebhookChannels,
        model::{ChannelRow, Status},
        service::{self, Amend, InboundMessage, StatusUpdate},
    },
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(sandbox)
        .service(whatsapp_handshake)
        .service(whatsapp_webhook)
        .service(twilio_webhook)
        .service(message_in)
        .service(message_status);
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(sandbox, whatsapp_handshake, whatsapp_webhook, twilio_webhook, message_in, message_status),
    components(schemas(SandboxBody, SandboxMessage, SandboxStatus, WebhookView))
)]
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
    /// This is the customer editing their earlier message with this id: `text` replaces it
    /// (like WhatsApp's `edit` notice).
    pub edits: Option<String>,
    /// This is the customer deleting their earlier message with this id (WhatsApp `revoke`).
    pub revokes: Option<String>,
    /// This is the customer's reaction (`text`, the emoji; empty removes it) on the message
    /// with this provider id (WhatsApp `reaction`).
    #[serde(rename = "reactsTo")]
    pub reacts_to: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SandboxStatus {
    pub id: String,
    pub status: String,
    pub error_code: Option<String>,
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct WebhookView {
    pub received: usize,
    pub duplicates: usize,
    pub statuses: usize,
    /// Items recorded but not acted on (unknown number, unsupported type).
    pub ignored: usize,
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
    sandbox_delivery(&req, &st, &body).await
}

async fn sandbox_delivery(req: &HttpRequest, st: &AppState, body: &[u8]) -> ApiResult<HttpResponse> {
    let Ok(ChannelOnly { channel_id }) = serde_json::from_slice::<ChannelOnly>(body) else {
        return Err(rejected(st, "sandbox"));
    };
    let sandboxes = live_channels(req, st, "sandbox").await?;
    let Some(channel) = sandboxes.iter().find(|ch| ch.id == channel_id) else {
        return Err(rejected(st, "sandbox"));
    };
    let secret = channel_secret(st, &channel.secrets, "webhookSecret")?;
    if !verify_sha256_signature(header(req, "X-Confab-Signature"), secret.as_bytes(), body) {
        return Err(rejected(st, "sandbox"));
    }
    passed(st, "sandbox");
    let parsed: SandboxBody = crate::core::extract::parse(body)?;
    let mut messages = Vec::new();
    for m in parsed.messages {
        let from = Phone::try_from(m.from).map_err(|e| ApiError::field("messages.from", e.0))?;
        let timestamp = match m.timestamp {
            Some(t) => chrono::DateTime::parse_from_rfc3339(&t)
                .map_err(|_| ApiError::field("messages.timestamp", "must be RFC 3339"))?
                .naive_utc(),
            None => crate::core::types::now(),
        };
        let amends = match (m.edits, m.revokes, m.reacts_to) {
            (Some(id), None, None) => Some(Amend::Edit(id)),
            (None, Some(id), None) => Some(Amend::Revoke(id)),
            (None, None, Some(id)) => Some(Amend::React(id)),
            (None, None, None) => None,
            _ => {
                return Err(ApiError::field("messages.edits", "a message edits, revokes or reacts, one of them"));
            }
        };
        messages.push(InboundMessage {
            provider_message_id: m.id,
            from: Some(from),
            bsuid: None,
            name: m.name,
            text: m.text,
            media: Vec::new(),
            timestamp,
            amends,
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
    let outcome = service::ingest(st, channel, scrub(messages), scrub_statuses(statuses)).await?;
    Ok(HttpResponse::Ok().json(WebhookView {
        received: outcome.created,
        duplicates: outcome.duplicates,
        statuses: n,
        ignored: 0,
    }))
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

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Counts a failed verification and gives the 401.
fn rejected(st: &AppState, provider: &str) -> ApiError {
    st.metrics.webhook_verifications.with_label_values(&[provider, "failed"]).inc();
    ApiError::Unauthorized("invalid_signature")
}

fn passed(st: &AppState, provider: &str) {
    st.metrics.webhook_verifications.with_label_values(&[provider, "passed"]).inc();
}

/// All live channels of `provider`, through the node's cache ([`WebhookChannels`], app data
/// registered by `lib::build`).
async fn live_channels(req: &HttpRequest, st: &AppState, provider: &'static str) -> ApiResult<Arc<Vec<ChannelRow>>> {
    let cache = req
        .app_data::<web::Data<WebhookChannels>>()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("WebhookChannels is not registered")))?;
    cache.of(st, provider).await
}

/// Records items of a verified delivery that were not acted on (retries record nothing new)
/// and logs them.
async fn record_ignored(st: &AppState, provider: &'static str, items: Vec<(String, String)>) -> ApiResult<usize> {
    let n = items.len();
    if n == 0 {
        return Ok(0);
    }
    for (reason, key) in &items {
        tracing::warn!(provider, %reason, %key, "webhook item ignored");
    }
    st.db
        .write(move |c| {
            for (reason, key) in items {
                let key: String = format!("ignored:{reason}:{key}").chars().filter(|c| *c != '\0').take(500).collect();
                record_receipt(c, provider, &key)?;
            }
            Ok(())
        })
        .await?;
    Ok(n)
}

/// Stores that `provider` sent `key` once (a repeat, or a concurrent insert of it, is a no-op).
fn record_receipt(c: &mut Db, provider: &str, key: &str) -> ApiResult<()> {
    let seen: i64 = webhook_receipts::table
        .filter(webhook_receipts::provider.eq(provider).and(webhook_receipts::key.eq(key)))
        .count()
        .get_result(c)?;
    if seen > 0 {
        return Ok(());
    }
    match diesel::insert_into(webhook_receipts::table)
        .values((
            webhook_receipts::provider.eq(provider),
            webhook_receipts::key.eq(key),
            webhook_receipts::received_at.eq(now()),
        ))
        .execute(c)
    {
        Err(e) if is_unique_violation(&e) => Ok(()),
        other => other.map(drop).map_err(Into::into),
    }
}

pub(crate) fn scrub_statuses(statuses: Vec<StatusUpdate>) -> Vec<StatusUpdate> {
    statuses
        .into_iter()
        .map(|s| StatusUpdate { provider_message_id: s.provider_message_id.replace('\0', ""), ..s })
        .collect()
}

/// NUL characters cannot be stored in PostgreSQL text; no provider means them.
pub(crate) fn scrub(mut messages: Vec<InboundMessage>) -> Vec<InboundMessage> {
    let clean = |s: &mut String| {
        if s.contains('\0') {
            *s = s.replace('\0', "");
        }
    };
    for m in &mut messages {
        clean(&mut m.provider_message_id);
        m.text.iter_mut().for_each(clean);
        m.name.iter_mut().for_each(clean);
        for media in &mut m.media {
            clean(&mut media.provider_media_id);
            clean(&mut media.filename);
            clean(&mut media.content_type);
        }
    }
    messages
}

// ---- WhatsApp Cloud API ----

/// Meta's verification handshake: 200 `text/plain` with `hub.challenge` when `hub.mode` is
/// `subscribe` and `hub.verify_token` equals the verify token of any WhatsApp channel
/// (constant-time), else 403.
#[utoipa::path(tag = "webhooks",
    params(("hub.mode" = String, Query), ("hub.verify_token" = String, Query), ("hub.challenge" = String, Query)),
    responses((status = 200, description = "the challenge, as text/plain", body = String), (status = 403, body = ErrorBody)))]
#[get("/webhooks/whatsapp")]
async fn whatsapp_handshake(req: HttpRequest, st: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let query: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string()).unwrap_or_default();
    let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let (Some(mode), Some(token), Some(challenge)) = (get("hub.mode"), get("hub.verify_token"), get("hub.challenge"))
    else {
        return Err(ApiError::Forbidden);
    };
    let channels = live_channels(&req, &st, "whatsapp").await?;
    let mut ok = false;
    for ch in channels.iter() {
        if let Ok(expected) = channel_secret(&st, &ch.secrets, "verifyToken") {
            ok |= constant_time_eq(expected.as_bytes(), token.as_bytes());
        }
    }
    if mode != "subscribe" || !ok {
        st.metrics.webhook_verifications.with_label_values(&["whatsapp_handshake", "failed"]).inc();
        return Err(ApiError::Forbidden);
    }
    passed(&st, "whatsapp_handshake");
    Ok(HttpResponse::Ok().content_type("text/plain; charset=utf-8").body(challenge))
}

/// Meta's webhook: `X-Hub-Signature-256` over the raw body, then every change of every entry
/// routed by `metadata.phone_number_id`; one `ingest` (one transaction) per channel named.
#[utoipa::path(tag = "webhooks", request_body = serde_json::Value,
    params(("X-Hub-Signature-256" = String, Header, description = "sha256=<hex HMAC-SHA256 of the raw body with the app secret>")),
    responses((status = 200, body = WebhookView), (status = 401, body = ErrorBody)))]
#[post("/webhooks/whatsapp")]
async fn whatsapp_webhook(req: HttpRequest, st: web::Data<AppState>, body: web::Bytes) -> ApiResult<HttpResponse> {
    whatsapp_delivery(&req, &st, &body).await
}

async fn whatsapp_delivery(req: &HttpRequest, st: &AppState, body: &[u8]) -> ApiResult<HttpResponse> {
    let Some(sig) = header(req, "X-Hub-Signature-256") else { return Err(rejected(st, "whatsapp")) };
    let channels = live_channels(req, st, "whatsapp").await?;
    let mut by_secret: HashMap<String, bool> = HashMap::new();
    let mut verified = Vec::new();
    for ch in channels.iter() {
        let Ok(secret) = channel_secret(st, &ch.secrets, "appSecret") else { continue };
        let ok =
            *by_secret.entry(secret).or_insert_with_key(|s| verify_sha256_signature(Some(sig), s.as_bytes(), body));
        if ok {
            verified.push(ch.clone());
        }
    }
    if verified.is_empty() {
        return Err(rejected(st, "whatsapp"));
    }
    passed(st, "whatsapp");
    let changes = match whatsapp::parse(body) {
        Ok(c) => c,
        Err(whatsapp::Unreadable(why)) => {
            let key = hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(body)[..8]);
            let ignored = record_ignored(st, "whatsapp", vec![(format!("unreadable body ({why})"), key)]).await?;
            return Ok(HttpResponse::Ok().json(WebhookView { ignored, ..Default::default() }));
        }
    };
    let mut per_channel: Vec<(ChannelRow, Vec<InboundMessage>, Vec<StatusUpdate>)> = Vec::new();
    let mut ignored = Vec::new();
    for change in changes {
        ignored.extend(change.ignored);
        if change.messages.is_empty() && change.statuses.is_empty() {
            continue;
        }
        let Some(ch) = verified.iter().find(|c| c.phone_number_id.as_deref() == Some(change.phone_number_id.as_str()))
        else {
            let ids = change.messages.iter().map(|m| m.provider_message_id.clone());
            let ids = ids.chain(change.statuses.iter().map(|s| s.provider_message_id.clone()));
            ignored.extend(ids.map(|id| (format!("unknown number {}", change.phone_number_id), id)));
            continue;
        };
        match per_channel.iter_mut().find(|(c, _, _)| c.id == ch.id) {
            Some((_, m, s)) => {
                m.extend(change.messages);
                s.extend(change.statuses);
            }
            None => per_channel.push((ch.clone(), change.messages, change.statuses)),
        }
    }
    let mut view = WebhookView { ignored: record_ignored(st, "whatsapp", ignored).await?, ..Default::default() };
    // Usually one channel per delivery, so one transaction; with several, each is its own and
    // a failure answers 500 so Meta retries (ingest is idempotent, the retry repairs it).
    for (ch, messages, statuses) in per_channel {
        view.statuses += statuses.len();
        let statuses = scrub_statuses(statuses);
        let outcome = service::ingest(st, &ch, scrub(messages), statuses).await?;
        view.received += outcome.created;
        view.duplicates += outcome.duplicates;
    }
    Ok(HttpResponse::Ok().json(view))
}

// ---- Twilio ----

/// Twilio's webhook (inbound WhatsApp/SMS messages and status callbacks), form-encoded and
/// signed with `X-Twilio-Signature`. Answers an empty TwiML response.
#[utoipa::path(tag = "webhooks", request_body(content = String, content_type = "application/x-www-form-urlencoded"),
    params(("X-Twilio-Signature" = String, Header, description = "base64 HMAC-SHA1 of CONFAB_PUBLIC_URL + path + query + sorted form pairs, keyed by the auth token")),
    responses((status = 200, description = "empty TwiML"), (status = 401, body = ErrorBody)))]
#[post("/webhooks/twilio")]
async fn twilio_webhook(req: HttpRequest, st: web::Data<AppState>, body: web::Bytes) -> ApiResult<HttpResponse> {
    twilio_delivery(&req, &st, &body).await
}

async fn twilio_delivery(req: &HttpRequest, st: &AppState, body: &[u8]) -> ApiResult<HttpResponse> {
    let Some(sig) = header(req, "X-Twilio-Signature") else { return Err(rejected(st, "twilio")) };
    let params: Vec<(String, String)> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    let mut url = format!("{}{}", st.config.public_url.trim_end_matches('/'), req.path());
    if !req.query_string().is_empty() {
        url = format!("{url}?{}", req.query_string());
    }
    let account = twilio::param(&params, "AccountSid").map(str::to_owned);
    let channels = live_channels(req, st, "twilio").await?;
    let mut verified = Vec::new();
    for ch in channels.iter() {
        let (Ok(sid), Ok(token)) =
            (channel_secret(st, &ch.secrets, "accountSid"), channel_secret(st, &ch.secrets, "authToken"))
        else {
            continue;
        };
        if account.as_deref().is_some_and(|a| a != sid) {
            continue;
        }
        if twilio::verify(Some(sig), &token, &url, &params) {
            verified.push(ch.clone());
        }
    }
    if verified.is_empty() {
        return Err(rejected(st, "twilio"));
    }
    passed(st, "twilio");
    let twiml = || {
        HttpResponse::Ok()
            .content_type("text/xml; charset=utf-8")
            .body("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>")
    };
    let sid = twilio::param(&params, "MessageSid").unwrap_or("(none)").to_owned();
    let number = twilio::our_number(&params);
    let Some(ch) = number.as_ref().and_then(|n| verified.iter().find(|c| c.phone_e164 == n.as_str())) else {
        let what = format!("unknown number {}", number.as_ref().map_or("(none)", |n| n.as_str()));
        record_ignored(st, "twilio", vec![(what, sid)]).await?;
        return Ok(twiml());
    };
    match twilio::parse(&params) {
        twilio::Parsed::Message(m) => {
            service::ingest(st, ch, scrub(vec![m]), Vec::new()).await?;
        }
        twilio::Parsed::Status(s) => {
            service::ingest(st, ch, Vec::new(), vec![s]).await?;
        }
        twilio::Parsed::Ignored { reason, key } => {
            record_ignored(st, "twilio", vec![(reason, key)]).await?;
        }
    }
    Ok(twiml())
}

// ---- aliases ----

/// Inbound alias of the anchor system: accepts a WhatsApp, Twilio or sandbox delivery, told
/// apart by its signature header (`X-Hub-Signature-256`, `X-Twilio-Signature`,
/// `X-Confab-Signature`).
#[utoipa::path(tag = "webhooks", request_body = serde_json::Value,
    responses((status = 200, body = WebhookView), (status = 401, body = ErrorBody)))]
#[post("/message/messagein")]
async fn message_in(req: HttpRequest, st: web::Data<AppState>, body: web::Bytes) -> ApiResult<HttpResponse> {
    any_delivery(&req, &st, &body).await
}

/// Status alias of the anchor system; the same dispatch as `/message/messagein`.
#[utoipa::path(tag = "webhooks", request_body = serde_json::Value,
    responses((status = 200, body = WebhookView), (status = 401, body = ErrorBody)))]
#[post("/message/status")]
async fn message_status(req: HttpRequest, st: web::Data<AppState>, body: web::Bytes) -> ApiResult<HttpResponse> {
    any_delivery(&req, &st, &body).await
}

async fn any_delivery(req: &HttpRequest, st: &AppState, body: &[u8]) -> ApiResult<HttpResponse> {
    if header(req, "X-Hub-Signature-256").is_some() {
        whatsapp_delivery(req, st, body).await
    } else if header(req, "X-Twilio-Signature").is_some() {
        twilio_delivery(req, st, body).await
    } else if header(req, "X-Confab-Signature").is_some() {
        sandbox_delivery(req, st, body).await
    } else {
        Err(rejected(st, "unknown"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_reference_signature() {
        let body = br#"{"object":"whatsapp_business_account","entry":[]}"#;
        let sig = "sha256=c236c758c9b2bd40b388a550eeca09eaca72384dd0aa5e7c31d19cddac5bba46";
        assert!(verify_sha256_signature(Some(sig), b"app_secret", body));
        assert!(!verify_sha256_signature(Some(sig), b"app_secreT", body));
        assert!(!verify_sha256_signature(Some("c236c758"), b"app_secret", body));
        assert!(!verify_sha256_signature(None, b"app_secret", body));
    }
}
