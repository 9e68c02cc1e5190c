//! Messaging providers and outbound delivery (CONTRACT §6). Each channel row names its provider
//! (`whatsapp`, `twilio` or `sandbox`) and holds its encrypted credentials; the provider APIs'
//! base URLs are the operator's settings (`CONFAB_WHATSAPP_API_URL`, `CONFAB_TWILIO_API_URL`;
//! tests point them at a local mock), never a tenant's.
//!
//! The design is enum dispatch: [`Provider`] is built from a channel row and does what differs
//! per provider on the way out (send, fetch media). The way in (verify a webhook, parse it into
//! the provider-neutral `InboundMessage`/`StatusUpdate` of `messaging::service`) lives in each
//! provider module as plain functions (`whatsapp::verify`, `whatsapp::parse`,
//! `twilio::expected_signatures`, `twilio::parse`), called by the routes in [`webhooks`]; every
//! path ends in one `service::ingest` call per webhook delivery (one transaction).

pub mod fetcher;
pub mod outbox;
pub mod sandbox;
pub mod twilio;
pub mod webhooks;
pub mod whatsapp;
pub mod worker;

use crate::{
    core::{
        error::{ApiError, ApiResult},
        redact::outbound_error,
        state::AppState,
    },
    messaging::model::{ChannelRow, MediaKind, Status},
};

/// Why a send did not go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Worth retrying with backoff (429, 5xx, provider unreachable): the provider did not
    /// take the message.
    Transient(String),
    /// The request was sent and no usable answer came (a timeout, the connection lost): the
    /// provider may have taken it. Retried like [`SendError::Transient`], except for jobs that
    /// must not run twice (a campaign's sends), which end as `outcome_unknown`.
    Uncertain(String),
    /// Final: the message becomes `FAILED` with this provider error code.
    Permanent { code: String, message: String },
}

/// A provider accepted a message under this id; `then` lists statuses it already reports
/// (the sandbox delivers at once). Kept as JSON in the job until it is recorded on the
/// message (`outbox::deliver`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Accepted {
    pub provider_id: String,
    pub then: Vec<Status>,
}

/// A message on its way out, in provider-neutral terms.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// confab's message id (sent along where the provider echoes it back).
    pub message_id: String,
    pub to: Recipient,
    pub body: OutboundBody,
}

/// Who a message goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// An E.164 number.
    Phone(String),
    /// A WhatsApp business-scoped user id: a customer WhatsApp gave confab no phone for, whom
    /// only the WhatsApp Cloud API can reach (its `recipient` field).
    Bsuid(String),
}

#[derive(Debug, Clone)]
pub enum OutboundBody {
    Text(String),
    /// A pre-approved template: name and language from the `templates` table, the positional
    /// body parameters, the text as rendered by confab (for providers without templates) and
    /// the template's Twilio Content SID when it has one.
    Template {
        name: String,
        language: String,
        params: Vec<String>,
        rendered: String,
        content_sid: Option<String>,
    },
    /// Media by link: the caption goes with the first item.
    Media {
        items: Vec<OutboundMedia>,
        caption: Option<String>,
    },
    /// A reaction on the message with this provider id (WhatsApp only); `""` removes it.
    Reaction {
        message_id: String,
        emoji: String,
    },
}

#[derive(Debug, Clone)]
pub struct OutboundMedia {
    pub kind: MediaKind,
    pub url: String,
    pub filename: String,
}

/// Media downloaded from a provider: the body as it arrives, never held whole in memory (the
/// media store enforces the size limit while it streams).
pub struct FetchedMedia {
    pub body: futures_util::stream::BoxStream<'static, ApiResult<bytes::Bytes>>,
    pub content_type: String,
}

impl std::fmt::Debug for FetchedMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchedMedia").field("content_type", &self.content_type).finish_non_exhaustive()
    }
}

/// A channel's provider with its decrypted credentials.
pub enum Provider {
    WhatsApp(whatsapp::Client),
    Twilio(twilio::Client),
    /// Answers after `CONFAB_SANDBOX_DELAY_MS`.
    Sandbox(std::time::Duration),
}

impl Provider {
    /// The provider of `channel`, talking to the API the operator configured for it
    /// (`CONFAB_WHATSAPP_API_URL`, `CONFAB_TWILIO_API_URL`), never to a tenant's choice.
    pub fn for_channel(st: &AppState, channel: &ChannelRow) -> ApiResult<Self> {
        let secret = |name: &str| webhooks::channel_secret(st, &channel.secrets, name);
        let media = |base: &str, hosts: &str| MediaPolicy::new(base, hosts);
        match channel.provider.as_str() {
            "whatsapp" => Ok(Self::WhatsApp(whatsapp::Client {
                http: st.http.clone(),
                media: media(&st.config.whatsapp_api_url, &st.config.whatsapp_media_hosts)?,
                base: api_base(&st.config.whatsapp_api_url),
                phone_number_id: channel.phone_number_id.clone().unwrap_or_default(),
                access_token: secret("accessToken")?,
            })),
            "twilio" => Ok(Self::Twilio(twilio::Client {
                http: st.http.clone(),
                media: media(&st.config.twilio_api_url, &st.config.twilio_media_hosts)?,
                base: api_base(&st.config.twilio_api_url),
                from: channel
                    .phone_number_id
                    .clone()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| format!("whatsapp:{}", channel.phone_e164)),
                account_sid: secret("accountSid")?,
                auth_token: secret("authToken")?,
                status_callback: Some(format!("{}/webhooks/twilio", st.config.public_url.trim_end_matches('/'))),
            })),
            "sandbox" => Ok(Self::Sandbox(std::time::Duration::from_millis(st.config.sandbox_delay_ms))),
            other => Err(ApiError::Internal(anyhow::anyhow!("unknown provider {other}"))),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::WhatsApp(_) => "whatsapp",
            Self::Twilio(_) => "twilio",
            Self::Sandbox(_) => "sandbox",
        }
    }

    pub async fn send(&self, out: &Outbound) -> Result<Accepted, SendError> {
        match self {
            Self::WhatsApp(c) => c.send(out).await,
            Self::Twilio(c) => c.send(out).await,
            Self::Sandbox(delay) => {
                if !delay.is_zero() {
                    actix_web::rt::time::sleep(*delay).await;
                }
                sandbox::send(&out.message_id)
            }
        }
    }

    /// Downloads an inbound attachment: `media_id` is what the webhook gave (a WhatsApp media
    /// id, a Twilio `MediaUrlN`).
    pub async fn fetch_media(&self, media_id: &str) -> Result<FetchedMedia, SendError> {
        match self {
            Self::WhatsApp(c) => c.fetch_media(media_id).await,
            Self::Twilio(c) => c.fetch_media(media_id).await,
            Self::Sandbox(_) => Err(SendError::Permanent {
                code: "unsupported".into(),
                message: "the sandbox provider has no media to download".into(),
            }),
        }
    }
}

/// Sends a text message that is not part of a conversation (one-time codes, links) to a phone:
/// through the company's Twilio SMS channel when it has one — a Twilio channel whose sender
/// (`phoneNumberId`) is an SMS number or a Messaging Service, not a `whatsapp:` address; the
/// default channel first — else into the SMS outbox files ([`crate::core::notify::SmsSender`]).
/// No status callback is asked for: such texts have no message row to update.
pub async fn send_sms(st: &AppState, company_id: i64, to: &str, body: &str) -> ApiResult<()> {
    let channels = st.db.run(move |c| crate::messaging::store::channels(c, company_id)).await?;
    let sms = channels
        .iter()
        .filter(|ch| ch.provider == "twilio")
        .filter(|ch| {
            ch.phone_number_id.as_deref().is_some_and(|from| !from.is_empty() && !from.starts_with("whatsapp:"))
        })
        .max_by_key(|ch| ch.is_default);
    let Some(channel) = sms else { return Ok(st.sms.send(to, body).await?) };
    let Provider::Twilio(mut client) = Provider::for_channel(st, channel)? else {
        unreachable!("a twilio channel builds a Twilio client")
    };
    client.status_callback = None;
    let out = Outbound {
        message_id: crate::core::crypto::random_hex_id(),
        to: Recipient::Phone(to.to_owned()),
        body: OutboundBody::Text(body.to_owned()),
    };
    client.send(&out).await.map(|_| ()).map_err(|e| {
        tracing::warn!(channel = channel.id, error = ?e, "text message not sent");
        ApiError::Unavailable("the SMS provider".into())
    })
}

/// A provider API base URL as configured, without a trailing slash.
pub fn api_base(url: &str) -> String {
    url.trim_end_matches('/').to_owned()
}

/// Where a provider's media may be downloaded from: the operator's API URL (its origin, any
/// scheme) and, over https only, the provider's media hosts (`CONFAB_*_MEDIA_HOSTS`).
#[derive(Debug, Clone)]
pub struct MediaPolicy {
    api: url::Url,
    hosts: crate::core::net::HostList,
}

/// Redirects followed by one media download (Twilio answers a media URL with one redirect to
/// its CDN).
const MAX_MEDIA_REDIRECTS: usize = 3;

impl MediaPolicy {
    fn new(api: &str, hosts: &str) -> ApiResult<Self> {
        let api =
            url::Url::parse(api).map_err(|e| ApiError::Internal(anyhow::anyhow!("provider API URL {api}: {e}")))?;
        Ok(Self { api, hosts: crate::core::net::HostList::parse(hosts) })
    }

    fn allows(&self, url: &url::Url) -> bool {
        url.origin() == self.api.origin()
            || (url.scheme() == "https" && url.host_str().is_some_and(|h| self.hosts.allows(h)))
    }

    /// `GET url` for a media download, following at most [`MAX_MEDIA_REDIRECTS`] redirects:
    /// every hop must be allowed by this policy (and reach a public address, [`crate::core::net`]);
    /// `auth` adds the provider's credentials, which go only to the first URL's origin.
    pub async fn get(
        &self,
        http: &reqwest::Client,
        url: &str,
        auth: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, SendError> {
        use crate::core::net::{FollowError, get_following};
        get_following(http, url, MAX_MEDIA_REDIRECTS, |u| self.allows(u), auth).await.map_err(|e| match e {
            FollowError::Refused(url) => SendError::Permanent {
                code: "media_host_refused".into(),
                message: format!("media is not downloaded from {url}"),
            },
            FollowError::BadRedirect => SendError::Permanent {
                code: "bad_redirect".into(),
                message: "redirect without a usable Location".into(),
            },
            FollowError::TooManyRedirects => SendError::Permanent {
                code: "too_many_redirects".into(),
                message: "media download redirected too often".into(),
            },
            FollowError::Transport(e) => transport_error(e),
        })
    }
}

/// How an HTTP failure of a provider call is classified: no connection (the request never
/// left), 429 and 5xx are transient; a failure after the request went out (timeout, connection
/// lost) is uncertain; other statuses, and an address the outbound checks refused, are
/// permanent.
fn transport_error(e: reqwest::Error) -> SendError {
    if crate::core::net::is_refused(&e) {
        return SendError::Permanent { code: "address_refused".into(), message: outbound_error(e) };
    }
    if e.is_connect() {
        return SendError::Transient(format!("provider unreachable: {}", outbound_error(e)));
    }
    SendError::Uncertain(format!("no answer from the provider: {}", outbound_error(e)))
}

fn is_transient_status(status: reqwest::StatusCode) -> bool {
    status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// Largest media download accepted from a provider (WhatsApp's document limit).
pub const MAX_MEDIA_BYTES: usize = 100 * 1024 * 1024;

/// The body of a successful media download as a stream; a declared length over
/// [`MAX_MEDIA_BYTES`] is refused before reading. A body without a length is cut off by the
/// media store at its type's limit, so nothing larger than that is ever read.
fn read_media(res: reqwest::Response) -> Result<FetchedMedia, SendError> {
    use futures_util::{StreamExt, TryStreamExt};
    let status = res.status();
    if !status.is_success() {
        return Err(if is_transient_status(status) {
            SendError::Transient(format!("media download: HTTP {status}"))
        } else {
            SendError::Permanent { code: status.as_u16().to_string(), message: "media download refused".into() }
        });
    }
    if res.content_length().is_some_and(|n| n > MAX_MEDIA_BYTES as u64) {
        return Err(SendError::Permanent { code: "too_large".into(), message: "media is larger than 100 MB".into() });
    }
    let content_type = res
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let body = res
        .bytes_stream()
        .map_err(|e| {
            tracing::info!(error = %outbound_error(e), "media download interrupted");
            ApiError::Unavailable("the provider's media download".into())
        })
        .boxed();
    Ok(FetchedMedia { body, content_type })
}
