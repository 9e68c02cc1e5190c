//! Twilio (WhatsApp and SMS over the Messages API): the `X-Twilio-Signature` check as Twilio's
//! own libraries compute it, form webhook parsing, sending and media (providers.md §3).
//!
//! A Twilio channel's sender is its `phoneNumberId` when set — the exact Twilio address:
//! `whatsapp:+14155238886` (WhatsApp), `+14155238886` (SMS) or `MG…` (a Messaging Service) —
//! else `whatsapp:` + its phone number. Recipients get the sender's scheme.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Mac, SimpleHmac};
use sha1::Sha1;

use super::{
    Accepted, FetchedMedia, Outbound, OutboundBody, Recipient, SendError, is_transient_status, read_media,
    transport_error,
};
use crate::{
    core::{
        crypto::constant_time_eq,
        types::{Phone, now},
    },
    messaging::{
        model::{MediaKind, Status},
        service::{InboundMedia, InboundMessage, StatusUpdate},
    },
};

pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub media: super::MediaPolicy,
    /// The channel's sender address (see the module docs).
    pub from: String,
    pub account_sid: String,
    pub auth_token: String,
    /// Where Twilio posts delivery statuses (`CONFAB_PUBLIC_URL` + `/webhooks/twilio`).
    pub status_callback: Option<String>,
}

/// Twilio error codes worth retrying: too many requests (20429), internal/service errors
/// (20500, 20503), queue overflow (30001).
const TRANSIENT_CODES: &[i64] = &[20429, 20500, 20503, 30001];

impl Client {
    /// `POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded, basic auth.
    pub async fn send(&self, out: &Outbound) -> Result<Accepted, SendError> {
        let whatsapp = self.from.starts_with("whatsapp:");
        let Recipient::Phone(to) = &out.to else {
            return Err(SendError::Permanent {
                code: "no_phone".into(),
                message: "Twilio sends to phone numbers; this customer has only a WhatsApp user id".into(),
            });
        };
        let to = if whatsapp { format!("whatsapp:{to}") } else { to.clone() };
        let mut form: Vec<(&str, String)> = vec![("To", to)];
        if self.from.starts_with("MG") {
            form.push(("MessagingServiceSid", self.from.clone()));
        } else {
            form.push(("From", self.from.clone()));
        }
        match &out.body {
            OutboundBody::Text(t) => form.push(("Body", t.clone())),
            // A Twilio Content template: its SID and the params as `{"1": …, "2": …}`, no body
            // (Twilio's rule for business-initiated WhatsApp messages).
            OutboundBody::Template { content_sid: Some(sid), params, .. } => {
                let variables: serde_json::Map<String, serde_json::Value> =
                    params.iter().enumerate().map(|(i, p)| ((i + 1).to_string(), p.clone().into())).collect();
                form.push(("ContentSid", sid.clone()));
                form.push(("ContentVariables", serde_json::Value::Object(variables).to_string()));
            }
            // Without a Content SID the rendered text goes as the body (fine inside the
            // 24-hour window and for SMS).
            OutboundBody::Template { rendered, .. } => form.push(("Body", rendered.clone())),
            OutboundBody::Media { items, caption } => {
                if let Some(c) = caption {
                    form.push(("Body", c.clone()));
                }
                form.extend(items.iter().map(|i| ("MediaUrl", i.url.clone())));
            }
            // Twilio's API has no reactions (README "Reactions"); the reaction worker never
            // sends one here.
            OutboundBody::Reaction { .. } => {
                return Err(SendError::Permanent {
                    code: "unsupported".into(),
                    message: "Twilio has no reaction API".into(),
                });
            }
        }
        if let Some(cb) = &self.status_callback {
            form.push(("StatusCallback", cb.clone()));
        }
        let url = format!("{}/2010-04-01/Accounts/{}/Messages.json", self.base, self.account_sid);
        let res = self
            .http
            .post(url)
            .basic_auth(&self.account_sid, Some(&self.auth_token))
            .form(&form)
            .send()
            .await
            .map_err(transport_error)?;
        let status = res.status();
        let reply: serde_json::Value = res.json().await.unwrap_or(serde_json::Value::Null);
        if status.is_success() {
            return reply["sid"]
                .as_str()
                .map(|sid| Accepted { provider_id: sid.to_owned(), then: Vec::new() })
                .ok_or_else(|| SendError::Transient(format!("HTTP {status} without a sid")));
        }
        let code = reply["code"].as_i64();
        let message = reply["message"].as_str().unwrap_or("").to_owned();
        if is_transient_status(status) || code.is_some_and(|c| TRANSIENT_CODES.contains(&c)) {
            return Err(SendError::Transient(format!("HTTP {status} code {code:?}: {message}")));
        }
        Err(SendError::Permanent {
            code: code.map(|c| c.to_string()).unwrap_or_else(|| status.as_u16().to_string()),
            message: if message.is_empty() { format!("HTTP {status}") } else { message },
        })
    }

    /// `GET MediaUrlN` with basic auth (Twilio's media auth). The URL comes from a webhook
    /// the tenant's own credentials signed, so it is not trusted: it must be a media URL of the
    /// channel's account on the configured API (`{base}/2010-04-01/Accounts/{sid}/…`), and the
    /// redirect to Twilio's CDN must stay on Twilio's media hosts ([`super::MediaPolicy`]).
    pub async fn fetch_media(&self, url: &str) -> Result<FetchedMedia, SendError> {
        // Compared after parsing, so `..` segments, encodings and user-info cannot sneak past.
        let account = reqwest::Url::parse(&format!("{}/2010-04-01/Accounts/{}/", self.base, self.account_sid));
        let ours = match (account, reqwest::Url::parse(url)) {
            (Ok(account), Ok(url)) => {
                url.origin() == account.origin()
                    && url.username().is_empty()
                    && url.password().is_none()
                    && url.path().starts_with(account.path())
            }
            _ => false,
        };
        if !ours {
            return Err(SendError::Permanent {
                code: "media_host_refused".into(),
                message: "not a media URL of this Twilio account".into(),
            });
        }
        let res = self.media.get(&self.http, url, |r| r.basic_auth(&self.account_sid, Some(&self.auth_token))).await?;
        read_media(res)
    }
}

/// `base64(HMAC-SHA1(auth_token, url + sorted names, each followed by its sorted, de-duplicated
/// values))`, exactly as `twilio-python` `RequestValidator.compute_signature`.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut names: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut data = url.to_owned();
    for name in names {
        let mut values: Vec<&str> = params.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect();
        values.sort_unstable();
        values.dedup();
        for v in values {
            data.push_str(name);
            data.push_str(v);
        }
    }
    let mut mac = <SimpleHmac<Sha1> as Mac>::new_from_slice(auth_token.as_bytes()).expect("any key length");
    mac.update(data.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// The URL as configured, without its port, and with the scheme's default port: Twilio's
/// libraries accept any of them "since sig generation on back end is inconsistent".
pub fn url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_owned()];
    let Ok(parsed) = reqwest::Url::parse(url) else { return out };
    let Some(host) = parsed.host_str() else { return out };
    let scheme = parsed.scheme();
    // Everything after the authority, as given (the url crate would re-encode the query).
    let after_scheme = &url[scheme.len() + 3..];
    let rest = after_scheme.find(['/', '?', '#']).map_or("", |i| &after_scheme[i..]);
    let port = parsed.port_or_known_default();
    out.push(format!("{scheme}://{host}{rest}"));
    if let Some(p) = port {
        out.push(format!("{scheme}://{host}:{p}{rest}"));
    }
    out.dedup();
    out
}

/// Whether `header` is a valid signature of the request for this auth token (constant time,
/// every URL variant tried).
pub fn verify(header: Option<&str>, auth_token: &str, url: &str, params: &[(String, String)]) -> bool {
    let Some(given) = header.map(str::trim).filter(|h| !h.is_empty()) else { return false };
    let mut ok = false;
    for variant in url_variants(url) {
        ok |= constant_time_eq(signature(auth_token, &variant, params).as_bytes(), given.as_bytes());
    }
    ok
}

/// What one Twilio webhook says.
#[derive(Debug)]
pub enum Parsed {
    Message(InboundMessage),
    Status(StatusUpdate),
    /// Recorded and logged, not acted on.
    Ignored {
        reason: String,
        key: String,
    },
}

pub fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

/// Our channel's number in a webhook: `To` on inbound messages, `From` on status callbacks.
pub fn our_number(params: &[(String, String)]) -> Option<Phone> {
    let field = if is_status_callback(params) { "From" } else { "To" };
    param(params, field).and_then(|n| Phone::try_from(n.to_owned()).ok())
}

fn is_status_callback(params: &[(String, String)]) -> bool {
    let status = param(params, "MessageStatus").or_else(|| param(params, "SmsStatus"));
    status.is_some_and(|s| !matches!(s, "received" | "receiving"))
}

/// A status callback or an inbound message (WhatsApp or SMS) from the form pairs.
pub fn parse(params: &[(String, String)]) -> Parsed {
    let sid = param(params, "MessageSid").or_else(|| param(params, "SmsSid")).unwrap_or("");
    if sid.is_empty() {
        return Parsed::Ignored { reason: "no MessageSid".into(), key: "(none)".into() };
    }
    if is_status_callback(params) {
        let raw = param(params, "MessageStatus").or_else(|| param(params, "SmsStatus")).unwrap_or("");
        let status = match raw {
            "sent" => Some(Status::Sent),
            "delivered" => Some(Status::Delivered),
            "read" => Some(Status::Read),
            "failed" | "undelivered" => Some(Status::Failed),
            _ => None,
        };
        return match status {
            Some(status) => Parsed::Status(StatusUpdate {
                provider_message_id: sid.to_owned(),
                status,
                error_code: param(params, "ErrorCode").map(str::to_owned),
            }),
            None => Parsed::Ignored { reason: format!("status {raw}"), key: sid.to_owned() },
        };
    }
    let Some(from) = param(params, "From").and_then(|f| Phone::try_from(f.to_owned()).ok()) else {
        return Parsed::Ignored { reason: "unusable From".into(), key: sid.to_owned() };
    };
    let n: usize = param(params, "NumMedia").and_then(|n| n.parse().ok()).unwrap_or(0).min(10);
    let media: Vec<InboundMedia> = (0..n)
        .filter_map(|i| {
            let url = param(params, &format!("MediaUrl{i}"))?;
            let content_type = param(params, &format!("MediaContentType{i}")).unwrap_or("application/octet-stream");
            let top = content_type.split('/').next().unwrap_or("");
            let kind = match top {
                "image" => MediaKind::Image,
                "audio" => MediaKind::Audio,
                "video" => MediaKind::Video,
                _ => MediaKind::Document,
            };
            let ext = content_type.split(['/', ';']).nth(1).unwrap_or("bin").trim();
            Some(InboundMedia {
                kind,
                provider_media_id: url.to_owned(),
                filename: format!(
                    "{}-{i}.{ext}",
                    top.to_ascii_lowercase().replace(|c: char| !c.is_ascii_alphanumeric(), "")
                ),
                content_type: content_type.to_owned(),
            })
        })
        .collect();
    let text = param(params, "Body")
        .map(str::to_owned)
        .or_else(|| param(params, "ButtonText").map(str::to_owned))
        .or_else(|| match (param(params, "Latitude"), param(params, "Longitude")) {
            (Some(lat), Some(lon)) => {
                let label = param(params, "Label").or_else(|| param(params, "Address")).map(|l| format!(": {l}"));
                Some(format!(
                    "📍 Location{} ({lat}, {lon}) https://maps.google.com/?q={lat},{lon}",
                    label.unwrap_or_default()
                ))
            }
            _ => None,
        });
    if text.is_none() && media.is_empty() {
        return Parsed::Ignored { reason: "message without body or media".into(), key: sid.to_owned() };
    }
    Parsed::Message(InboundMessage {
        provider_message_id: sid.to_owned(),
        from: Some(from),
        bsuid: None,
        name: param(params, "ProfileName").map(str::to_owned),
        text,
        media,
        timestamp: now(),
        amends: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn reference_vectors_of_twilio_python() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let params = pairs(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]);
        assert_eq!(signature("12345", url, &params), "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
        assert!(verify(Some("RSOYDt4T1cUTdK1PDd93/VVr8B8="), "12345", url, &params));
        assert!(!verify(Some("RSOYDt4T1cUTdK1PDd93/VVr8B8="), "54321", url, &params));
        assert!(!verify(None, "12345", url, &params));
        let multi = pairs(&[
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
            ("Digits", "1234"),
        ]);
        assert_eq!(signature("12345", url, &multi), "IK+Dwps556ElfBT0I3Rgjkr1wJU=");
    }

    #[test]
    fn port_variants_are_accepted() {
        let params = pairs(&[("Body", "hi")]);
        let with_port = signature("tok", "https://mycompany.com:443/myapp.php?foo=1", &params);
        assert!(verify(Some(&with_port), "tok", "https://mycompany.com/myapp.php?foo=1", &params));
        let without = signature("tok", "http://h.example/p", &params);
        assert!(verify(Some(&without), "tok", "http://h.example:80/p", &params));
        assert_eq!(url_variants("http://127.0.0.1:8080/x?y=1")[1], "http://127.0.0.1/x?y=1");
    }

    #[test]
    fn inbound_and_status_forms() {
        let inbound = pairs(&[
            ("MessageSid", "SM1"),
            ("From", "whatsapp:+14155550123"),
            ("To", "whatsapp:+14155238886"),
            ("Body", "hello"),
            ("NumMedia", "1"),
            ("MediaUrl0", "https://api.twilio.com/media/1"),
            ("MediaContentType0", "image/jpeg"),
            ("ProfileName", "Ada"),
            ("SmsStatus", "received"),
        ]);
        assert_eq!(our_number(&inbound).unwrap().as_str(), "+14155238886");
        let Parsed::Message(m) = parse(&inbound) else { panic!("a message") };
        assert_eq!(
            (m.from.as_ref().map(Phone::as_str), m.text.as_deref(), m.name.as_deref()),
            (Some("+14155550123"), Some("hello"), Some("Ada"))
        );
        assert_eq!(m.media[0].kind, MediaKind::Image);
        let status = pairs(&[
            ("MessageSid", "SM2"),
            ("MessageStatus", "undelivered"),
            ("ErrorCode", "63016"),
            ("From", "whatsapp:+14155238886"),
            ("To", "whatsapp:+14155550123"),
        ]);
        assert_eq!(our_number(&status).unwrap().as_str(), "+14155238886");
        let Parsed::Status(s) = parse(&status) else { panic!("a status") };
        assert_eq!((s.status, s.error_code.as_deref()), (Status::Failed, Some("63016")));
        assert!(matches!(parse(&pairs(&[("MessageSid", "SM3"), ("MessageStatus", "queued")])), Parsed::Ignored { .. }));
    }
}
