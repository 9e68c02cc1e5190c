//! Messaging providers and outbound delivery (CONTRACT §6). Each channel row names its provider
//! (`whatsapp`, `twilio` or `sandbox`), holds its encrypted credentials and an optional
//! `api_base_url` (tests point it at a local mock).
//!
//! The design is enum dispatch: [`Provider`] is built from a channel row and does what differs
//! per provider on the way out (send, fetch media). The way in (verify a webhook, parse it into
//! the provider-neutral `InboundMessage`/`StatusUpdate` of `messaging::service`) lives in each
//! provider module as plain functions (`whatsapp::verify`, `whatsapp::parse`,
//! `twilio::expected_signatures`, `twilio::parse`), called by the routes in [`webhooks`]; every
//! path ends in one `service::ingest` call per webhook delivery (one transaction).

pub mod outbox;
pub mod sandbox;
pub mod twilio;
pub mod webhooks;
pub mod whatsapp;

use std::time::Duration;

use crate::{
    config::Config,
    error::{ApiError, ApiResult},
    messaging::model::{ChannelRow, MediaKind, Status},
    state::AppState,
};

/// Why a send did not go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Worth retrying with backoff (timeouts, 429, 5xx).
    Transient(String),
    /// Final: the message becomes `FAILED` with this provider error code.
    Permanent { code: String, message: String },
}

/// A provider accepted a message under this id; `then` lists statuses it already reports
/// (the sandbox delivers at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub provider_id: String,
    pub then: Vec<Status>,
}

/// A message on its way out, in provider-neutral terms.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// confab's message id (sent along where the provider echoes it back).
    pub message_id: String,
    /// The customer's E.164 number.
    pub to: String,
    pub body: OutboundBody,
}

#[derive(Debug, Clone)]
pub enum OutboundBody {
    Text(String),
    /// A pre-approved template: name and language from the `templates` table, the positional
    /// body parameters, and the text as rendered by confab (for providers without templates).
    Template {
        name: String,
        language: String,
        params: Vec<String>,
        rendered: String,
    },
    /// Media by link: the caption goes with the first item.
    Media {
        items: Vec<OutboundMedia>,
        caption: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub struct OutboundMedia {
    pub kind: MediaKind,
    pub url: String,
    pub filename: String,
}

/// Media downloaded from a provider.
#[derive(Debug, Clone)]
pub struct FetchedMedia {
    pub bytes: actix_web::web::Bytes,
    pub content_type: String,
}

/// A channel's provider with its decrypted credentials.
pub enum Provider {
    WhatsApp(whatsapp::Client),
    Twilio(twilio::Client),
    Sandbox,
}

impl Provider {
    pub fn for_channel(st: &AppState, channel: &ChannelRow, http: &reqwest::Client) -> ApiResult<Self> {
        let secret = |name: &str| webhooks::channel_secret(st, &channel.secrets, name);
        match channel.provider.as_str() {
            "whatsapp" => Ok(Self::WhatsApp(whatsapp::Client {
                http: http.clone(),
                base: base_url(channel, whatsapp::DEFAULT_BASE),
                phone_number_id: channel.phone_number_id.clone().unwrap_or_default(),
                access_token: secret("accessToken")?,
            })),
            "twilio" => Ok(Self::Twilio(twilio::Client {
                http: http.clone(),
                base: base_url(channel, twilio::DEFAULT_BASE),
                from: channel
                    .phone_number_id
                    .clone()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| format!("whatsapp:{}", channel.phone_e164)),
                account_sid: secret("accountSid")?,
                auth_token: secret("authToken")?,
                status_callback: Some(format!("{}/webhooks/twilio", st.config.public_url.trim_end_matches('/'))),
            })),
            "sandbox" => Ok(Self::Sandbox),
            other => Err(ApiError::Internal(anyhow::anyhow!("unknown provider {other}"))),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::WhatsApp(_) => "whatsapp",
            Self::Twilio(_) => "twilio",
            Self::Sandbox => "sandbox",
        }
    }

    pub async fn send(&self, out: &Outbound) -> Result<Accepted, SendError> {
        match self {
            Self::WhatsApp(c) => c.send(out).await,
            Self::Twilio(c) => c.send(out).await,
            Self::Sandbox => sandbox::send(&out.message_id),
        }
    }

    /// Downloads an inbound attachment: `media_id` is what the webhook gave (a WhatsApp media
    /// id, a Twilio `MediaUrlN`).
    pub async fn fetch_media(&self, media_id: &str) -> Result<FetchedMedia, SendError> {
        match self {
            Self::WhatsApp(c) => c.fetch_media(media_id).await,
            Self::Twilio(c) => c.fetch_media(media_id).await,
            Self::Sandbox => Err(SendError::Permanent {
                code: "unsupported".into(),
                message: "the sandbox provider has no media to download".into(),
            }),
        }
    }
}

fn base_url(channel: &ChannelRow, default: &str) -> String {
    channel.api_base_url.as_deref().filter(|u| !u.is_empty()).unwrap_or(default).trim_end_matches('/').to_owned()
}

/// The HTTP client for provider calls, with the configured timeout.
pub fn http_client(config: &Config) -> reqwest::Client {
    let timeout = Duration::from_secs(config.provider_timeout_secs.max(1));
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::limited(3))
        .user_agent(concat!("confab/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// How an HTTP failure of a provider call is classified: network errors, timeouts, 429 and
/// 5xx are transient; other statuses are permanent.
fn transport_error(e: reqwest::Error) -> SendError {
    SendError::Transient(format!("provider unreachable: {e}"))
}

fn is_transient_status(status: reqwest::StatusCode) -> bool {
    status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// Largest media download accepted from a provider (WhatsApp's document limit).
pub const MAX_MEDIA_BYTES: usize = 100 * 1024 * 1024;

async fn read_media(res: reqwest::Response) -> Result<FetchedMedia, SendError> {
    let status = res.status();
    if !status.is_success() {
        return Err(if is_transient_status(status) {
            SendError::Transient(format!("media download: HTTP {status}"))
        } else {
            SendError::Permanent { code: status.as_u16().to_string(), message: "media download refused".into() }
        });
    }
    if res.content_length().is_some_and(|n| n as usize > MAX_MEDIA_BYTES) {
        return Err(SendError::Permanent { code: "too_large".into(), message: "media is larger than 100 MB".into() });
    }
    let content_type = res
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let bytes = res.bytes().await.map_err(transport_error)?;
    if bytes.len() > MAX_MEDIA_BYTES {
        return Err(SendError::Permanent { code: "too_large".into(), message: "media is larger than 100 MB".into() });
    }
    Ok(FetchedMedia { bytes, content_type })
}
