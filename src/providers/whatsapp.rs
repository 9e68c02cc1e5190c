//! WhatsApp Cloud API (Meta): webhook parsing and the Graph API calls for sending and media
//! (reference: providers.md §2). Pure parsing is separate from I/O so it is unit-tested here.

use chrono::NaiveDateTime;
use serde_json::{Value, json};

use super::{
    Accepted, FetchedMedia, Outbound, OutboundBody, Recipient, SendError, is_transient_status, read_media,
    transport_error,
};
use crate::{
    core::types::{Phone, now},
    messaging::{
        model::{MediaKind, Status},
        service::{Amend, InboundMedia, InboundMessage, StatusUpdate},
    },
};

pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub media: super::MediaPolicy,
    pub phone_number_id: String,
    pub access_token: String,
}

/// Meta error codes worth retrying: API unknown/service (1, 2), rate limits (4, 17, 80007,
/// 130429), "something went wrong" (131000), service unavailable (131016), pair rate limit
/// (131056). Everything else (e.g. 131047 window closed, 131026 undeliverable) is final.
const TRANSIENT_CODES: &[i64] = &[1, 2, 4, 17, 80007, 130429, 131000, 131016, 131056];

impl Client {
    /// `POST {base}/{phone-number-id}/messages` with the bearer token, once per item (WhatsApp
    /// carries one media per message); the provider id of the first call is the message's.
    pub async fn send(&self, out: &Outbound) -> Result<Accepted, SendError> {
        let mut first = None;
        for body in request_bodies(out) {
            let id = self.post_message(&body).await?;
            first.get_or_insert(id);
        }
        let provider_id = first
            .ok_or_else(|| SendError::Permanent { code: "empty_message".into(), message: "nothing to send".into() })?;
        Ok(Accepted { provider_id, then: Vec::new() })
    }

    async fn post_message(&self, body: &Value) -> Result<String, SendError> {
        let url = format!("{}/{}/messages", self.base, self.phone_number_id);
        let res =
            self.http.post(url).bearer_auth(&self.access_token).json(body).send().await.map_err(transport_error)?;
        let status = res.status();
        let text = res.text().await.map_err(transport_error)?;
        let reply: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return reply["messages"][0]["id"].as_str().map(str::to_owned).ok_or_else(|| {
                SendError::Transient(format!("HTTP {status} without a message id: {}", truncate(&text)))
            });
        }
        let code = reply["error"]["code"].as_i64();
        let message = reply["error"]["message"].as_str().unwrap_or("").to_owned();
        if is_transient_status(status) || code.is_some_and(|c| TRANSIENT_CODES.contains(&c)) {
            return Err(SendError::Transient(format!("HTTP {status} code {code:?}: {message}")));
        }
        Err(SendError::Permanent {
            code: code.map(|c| c.to_string()).unwrap_or_else(|| status.as_u16().to_string()),
            message: if message.is_empty() { format!("HTTP {status}") } else { message },
        })
    }

    /// `GET {base}/{media-id}` for a short-lived URL, then `GET url`, both with the bearer token
    /// (providers.md §2.5).
    pub async fn fetch_media(&self, media_id: &str) -> Result<FetchedMedia, SendError> {
        if media_id.is_empty() || !media_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(SendError::Permanent {
                code: "bad_media_id".into(),
                message: "not a WhatsApp media id".into(),
            });
        }
        let url = format!("{}/{media_id}", self.base);
        let res = self.media.get(&self.http, &url, |r| r.bearer_auth(&self.access_token)).await?;
        let status = res.status();
        let meta: Value = res.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(if is_transient_status(status) {
                SendError::Transient(format!("media lookup: HTTP {status}"))
            } else {
                SendError::Permanent {
                    code: meta["error"]["code"].as_i64().map_or_else(|| status.as_u16().to_string(), |c| c.to_string()),
                    message: meta["error"]["message"].as_str().unwrap_or("media lookup refused").to_owned(),
                }
            });
        }
        let Some(download) = meta["url"].as_str() else {
            return Err(SendError::Transient("media lookup answered without a url".into()));
        };
        // The download URL comes from the lookup's answer: it must be on Meta's media hosts
        // (or the configured API), like every redirect after it.
        let res = self.media.get(&self.http, download, |r| r.bearer_auth(&self.access_token)).await?;
        let mut media = read_media(res)?;
        if let Some(mime) = meta["mime_type"].as_str().filter(|m| !m.is_empty()) {
            media.content_type = mime.to_owned();
        }
        Ok(media)
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(200).collect()
}

/// The Cloud API request bodies for one outbound message (providers.md §2.6).
pub fn request_bodies(out: &Outbound) -> Vec<Value> {
    let envelope = |kind: &str, payload: Value| {
        let mut v = json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "type": kind,
            "biz_opaque_callback_data": out.message_id,
        });
        // A phone goes as `to` (digits only), a business-scoped user id as `recipient`.
        match &out.to {
            Recipient::Phone(phone) => v["to"] = json!(phone.trim_start_matches('+')),
            Recipient::Bsuid(bsuid) => v["recipient"] = json!(bsuid),
        }
        v[kind] = payload;
        v
    };
    match &out.body {
        OutboundBody::Text(text) => vec![envelope("text", json!({"body": text, "preview_url": false}))],
        OutboundBody::Template { name, language, params, .. } => {
            let mut template = json!({"name": name, "language": {"policy": "deterministic", "code": language}});
            if !params.is_empty() {
                let parameters: Vec<Value> = params.iter().map(|p| json!({"type": "text", "text": p})).collect();
                template["components"] = json!([{"type": "body", "parameters": parameters}]);
            }
            vec![envelope("template", template)]
        }
        OutboundBody::Media { items, caption } => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let kind = item.kind.as_str().to_ascii_lowercase();
                let mut media = json!({"link": item.url});
                if let Some(c) = caption.as_ref().filter(|_| i == 0 && item.kind != MediaKind::Audio) {
                    media["caption"] = json!(c);
                }
                if item.kind == MediaKind::Document {
                    media["filename"] = json!(item.filename);
                }
                envelope(&kind, media)
            })
            .collect(),
        OutboundBody::Reaction { message_id, emoji } => {
            vec![envelope("reaction", json!({"message_id": message_id, "emoji": emoji}))]
        }
    }
}

/// One `changes[]` item of a webhook, routed by `metadata.phone_number_id`.
#[derive(Debug, Default)]
pub struct Change {
    pub phone_number_id: String,
    pub messages: Vec<InboundMessage>,
    pub statuses: Vec<StatusUpdate>,
    /// Items recorded but not acted on: (kind of item, provider id or description).
    pub ignored: Vec<(String, String)>,
}

/// Why a body that passed the signature check could not be read at all.
#[derive(Debug)]
pub struct Unreadable(pub String);

/// Parses a verified webhook body into its `messages` changes. Arrays are iterated in full
/// (`entry[]`, `changes[]`, `messages[]`, `statuses[]`); other `field`s are reported as
/// ignored; nothing panics on unexpected shapes.
pub fn parse(body: &[u8]) -> Result<Vec<Change>, Unreadable> {
    let root: Value = serde_json::from_slice(body).map_err(|e| Unreadable(format!("not JSON: {e}")))?;
    let Some(entries) = root.get("entry").and_then(Value::as_array) else {
        return Err(Unreadable("no entry array".into()));
    };
    let mut out = Vec::new();
    for entry in entries {
        for change in entry.get("changes").and_then(Value::as_array).into_iter().flatten() {
            let field = str_at(change, &["field"]).unwrap_or("");
            let value = change.get("value").unwrap_or(&Value::Null);
            let mut parsed = Change {
                phone_number_id: str_at(value, &["metadata", "phone_number_id"]).unwrap_or("").to_owned(),
                ..Default::default()
            };
            if field != "messages" {
                parsed.ignored.push(("field".into(), if field.is_empty() { "(none)".into() } else { field.into() }));
                out.push(parsed);
                continue;
            }
            let contacts = value.get("contacts").and_then(Value::as_array);
            for m in value.get("messages").and_then(Value::as_array).into_iter().flatten() {
                match inbound(m, contacts) {
                    Ok(msg) => parsed.messages.push(msg),
                    Err(reason) => parsed.ignored.push((reason, str_at(m, &["id"]).unwrap_or("(no id)").to_owned())),
                }
            }
            for s in value.get("statuses").and_then(Value::as_array).into_iter().flatten() {
                match status(s) {
                    Some(update) => parsed.statuses.push(update),
                    None => parsed.ignored.push((
                        format!("status {}", str_at(s, &["status"]).unwrap_or("?")),
                        str_at(s, &["id"]).unwrap_or("(no id)").to_owned(),
                    )),
                }
            }
            out.push(parsed);
        }
    }
    Ok(out)
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(*k)).and_then(Value::as_str)
}

/// Unix seconds as a string (or number) → time; now when absent or absurd.
fn timestamp(v: &Value) -> NaiveDateTime {
    let secs = match v.get("timestamp") {
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        Some(Value::Number(n)) => n.as_i64(),
        _ => None,
    };
    secs.and_then(|s| chrono::DateTime::from_timestamp(s, 0)).map(|t| t.naive_utc()).unwrap_or_else(now)
}

fn status(s: &Value) -> Option<StatusUpdate> {
    let id = str_at(s, &["id"]).filter(|i| !i.is_empty())?;
    let status = match str_at(s, &["status"])? {
        // A played voice note has been read.
        "played" => Status::Read,
        other => Status::parse(other).filter(|st| *st != Status::Pending)?,
    };
    let error_code = s.get("errors").and_then(|e| e.get(0)).and_then(|e| e.get("code")).map(|c| match c {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    Some(StatusUpdate { provider_message_id: id.to_owned(), status, error_code })
}

/// One inbound message, or the reason it is not stored (recorded by the caller).
fn inbound(m: &Value, contacts: Option<&Vec<Value>>) -> Result<InboundMessage, String> {
    let id = str_at(m, &["id"]).filter(|i| !i.is_empty()).ok_or("message without id")?;
    // The sender: a phone (`from`, the contact's `wa_id`) and, since 2026, a business-scoped
    // user id (`from_user_id`, the contact's `user_id`); users with a username may have no
    // phone in the webhook at all (providers.md "BSUID").
    let from = str_at(m, &["from"]).filter(|f| !f.is_empty());
    let from_user_id = str_at(m, &["from_user_id"]).filter(|f| !f.is_empty());
    let contact = contacts.and_then(|cs| {
        cs.iter()
            .find(|c| from.is_some() && str_at(c, &["wa_id"]) == from)
            .or_else(|| cs.iter().find(|c| from_user_id.is_some() && str_at(c, &["user_id"]) == from_user_id))
            .or(cs.first())
    });
    let bsuid = from_user_id.or_else(|| contact.and_then(|c| str_at(c, &["user_id"])));
    let bsuid = match bsuid {
        Some(b) if is_bsuid(b) => Some(b.to_owned()),
        Some(b) => return Err(format!("unusable business-scoped user id {b}")),
        None => None,
    };
    let phone =
        from.map(|f| Phone::try_from(f.to_owned()).map_err(|_| format!("unusable sender number {f}"))).transpose()?;
    if phone.is_none() && bsuid.is_none() {
        return Err("message without a sender (no phone, no business-scoped user id)".into());
    }
    let kind = str_at(m, &["type"]).unwrap_or("");
    let name = contact.and_then(|c| str_at(c, &["profile", "name"])).map(str::to_owned);
    let (text, media, amends) = match kind {
        // A customer's edit or deletion of an earlier message (Meta "Edit/Revoke messages
        // webhook reference"): applied to the original, never stored as a new message. An
        // edited media message keeps its media; only the caption changes.
        "edit" => {
            let original = str_at(m, &["edit", "original_message_id"]).filter(|i| !i.is_empty());
            let original = original.ok_or("edit without original_message_id")?;
            let inner = m.get("edit").and_then(|e| e.get("message")).unwrap_or(&Value::Null);
            let (text, _) = content(str_at(inner, &["type"]).unwrap_or(""), inner)?;
            (text, Vec::new(), Some(Amend::Edit(original.to_owned())))
        }
        "revoke" => {
            let original = str_at(m, &["revoke", "original_message_id"]).filter(|i| !i.is_empty());
            let original = original.ok_or("revoke without original_message_id")?;
            (None, Vec::new(), Some(Amend::Revoke(original.to_owned())))
        }
        // A reaction attaches to the message it names (issue 22); "When an end user removes a
        // reaction emoji, WhatsApp sends a webhook without the emoji field".
        "reaction" => {
            let target = str_at(m, &["reaction", "message_id"]).filter(|i| !i.is_empty());
            let target = target.ok_or("reaction without message_id")?;
            let emoji = str_at(m, &["reaction", "emoji"]).unwrap_or("").to_owned();
            (Some(emoji), Vec::new(), Some(Amend::React(target.to_owned())))
        }
        _ => {
            let (text, media) = content(kind, m)?;
            (text, media, None)
        }
    };
    Ok(InboundMessage {
        provider_message_id: id.to_owned(),
        from: phone,
        bsuid,
        name,
        text,
        media,
        timestamp: timestamp(m),
        amends,
    })
}

/// A WhatsApp business-scoped user id as Meta writes them: a two-letter country code, a dot,
/// then digits (`US.13491208655302741918`), the parent ids with `ENT.` between
/// (`US.ENT.…`).
pub fn is_bsuid(s: &str) -> bool {
    let Some((country, rest)) = s.split_once('.') else { return false };
    let id = rest.strip_prefix("ENT.").unwrap_or(rest);
    country.len() == 2
        && country.chars().all(|c| c.is_ascii_uppercase())
        && (1..=64).contains(&id.len())
        && id.chars().all(|c| c.is_ascii_alphanumeric())
}

/// Text and media of a message by type. Types without a first-class representation
/// (location, contacts, replies, reactions, orders, system notices) become readable text.
fn content(kind: &str, m: &Value) -> Result<(Option<String>, Vec<InboundMedia>), String> {
    let part = m.get(kind).unwrap_or(&Value::Null);
    let s = |path: &[&str]| str_at(part, path).map(str::to_owned);
    let text = match kind {
        "text" => s(&["body"]),
        "image" | "video" | "audio" | "document" | "sticker" => {
            let media_id = s(&["id"]).filter(|i| !i.is_empty()).ok_or_else(|| format!("{kind} without media id"))?;
            let media_kind = MediaKind::parse(kind).unwrap_or(MediaKind::Document);
            let content_type = s(&["mime_type"]).unwrap_or_else(|| "application/octet-stream".into());
            let filename = s(&["filename"]).filter(|f| !f.trim().is_empty()).unwrap_or_else(|| {
                let ext = content_type.split(';').next().and_then(|t| t.split('/').nth(1)).unwrap_or("bin").trim();
                format!("{kind}-{media_id}.{ext}")
            });
            let caption = s(&["caption"]).or_else(|| (kind == "sticker").then(|| "[sticker]".to_owned()));
            let media = InboundMedia { kind: media_kind, provider_media_id: media_id, filename, content_type };
            return Ok((caption, vec![media]));
        }
        "location" => {
            let num = |k: &str| part.get(k).and_then(Value::as_f64);
            let (lat, lon) = (num("latitude"), num("longitude"));
            let mut t = String::from("📍 Location");
            for label in [s(&["name"]), s(&["address"])].into_iter().flatten().filter(|l| !l.is_empty()) {
                t.push_str(": ");
                t.push_str(&label);
            }
            if let (Some(lat), Some(lon)) = (lat, lon) {
                t.push_str(&format!(" ({lat}, {lon}) https://maps.google.com/?q={lat},{lon}"));
            }
            Some(t)
        }
        "contacts" => {
            let cards: Vec<String> = m
                .get("contacts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|c| {
                    let name = str_at(c, &["name", "formatted_name"])
                        .or_else(|| str_at(c, &["name", "first_name"]))
                        .unwrap_or("(no name)");
                    let phones: Vec<&str> = c
                        .get("phones")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|p| str_at(p, &["phone"]).or_else(|| str_at(p, &["wa_id"])))
                        .collect();
                    if phones.is_empty() { name.to_owned() } else { format!("{name} ({})", phones.join(", ")) }
                })
                .collect();
            Some(format!("👤 Contact: {}", if cards.is_empty() { "(empty)".into() } else { cards.join("; ") }))
        }
        "interactive" => {
            let reply_kind = s(&["type"]).unwrap_or_default();
            let title = str_at(part, &[reply_kind.as_str(), "title"])
                .or_else(|| str_at(part, &["button_reply", "title"]))
                .or_else(|| str_at(part, &["list_reply", "title"]));
            match title {
                Some(t) => Some(t.to_owned()),
                None => Some(format!("[interactive reply: {}]", if reply_kind.is_empty() { "?" } else { &reply_kind })),
            }
        }
        "button" => s(&["text"]).or_else(|| s(&["payload"])),
        "order" => {
            let n = part.get("product_items").and_then(Value::as_array).map_or(0, Vec::len);
            let note = s(&["text"]).map(|t| format!(": {t}")).unwrap_or_default();
            Some(format!("🛒 Order of {n} item(s){note}"))
        }
        "system" => Some(s(&["body"]).unwrap_or_else(|| "[system notice]".into())),
        other => return Err(format!("unsupported type {}", if other.is_empty() { "(none)" } else { other })),
    };
    Ok((text, Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(messages: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages",
            "value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
                      "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "14155550123"}],
                      "messages": messages}}]}]}))
        .unwrap()
    }

    fn one(m: Value) -> InboundMessage {
        let mut changes = parse(&envelope(json!([m]))).unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].phone_number_id, "106540352242922");
        assert!(changes[0].ignored.is_empty(), "{:?}", changes[0].ignored);
        changes[0].messages.remove(0)
    }

    #[test]
    fn business_scoped_user_ids() {
        assert!(is_bsuid("US.13491208655302741918") && is_bsuid("US.ENT.13491208655302741918"));
        for bad in ["13491208655302741918", "us.1349", "US.", "USA.1349", "US.13 49", "+14155550123", "US.ENT."] {
            assert!(!is_bsuid(bad), "{bad}");
        }
        let parse_one = |contacts: Value, m: Value| {
            let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages",
                "value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550783881", "phone_number_id": "1"},
                          "contacts": contacts, "messages": [m]}}]}]});
            parse(&serde_json::to_vec(&body).unwrap()).unwrap().remove(0)
        };
        let text = |sender: Value| {
            let mut m = json!({"id": "wamid.b", "timestamp": "1749416383", "type": "text", "text": {"body": "hi"}});
            m.as_object_mut().unwrap().extend(sender.as_object().unwrap().clone());
            m
        };
        let bsuid = "US.13491208655302741918";
        // A username user: no phone anywhere, the BSUID on the message and its contact.
        let change =
            parse_one(json!([{"profile": {"name": "Kai"}, "user_id": bsuid}]), text(json!({"from_user_id": bsuid})));
        let m = &change.messages[0];
        assert_eq!((m.from.as_ref(), m.bsuid.as_deref(), m.name.as_deref()), (None, Some(bsuid), Some("Kai")));
        // Phone and BSUID: the BSUID from the sender's own contact.
        let change = parse_one(
            json!([{"profile": {"name": "Other"}, "wa_id": "14155550999", "user_id": "US.1"},
                   {"profile": {"name": "Ann"}, "wa_id": "14155550123", "user_id": bsuid}]),
            text(json!({"from": "14155550123"})),
        );
        let m = &change.messages[0];
        assert_eq!(m.from.as_ref().map(Phone::as_str), Some("+14155550123"));
        assert_eq!((m.bsuid.as_deref(), m.name.as_deref()), (Some(bsuid), Some("Ann")));
        // Neither, or a malformed BSUID: not stored, recorded as ignored.
        for sender in [json!({}), json!({"from_user_id": "not a bsuid"})] {
            let change = parse_one(json!([]), text(sender));
            assert!(change.messages.is_empty() && change.ignored.len() == 1, "{:?}", change.ignored);
        }
    }

    #[test]
    fn every_reference_type_parses() {
        let base = |kind: &str, part: Value| {
            let mut m =
                json!({"from": "14155550123", "id": format!("wamid.{kind}"), "timestamp": "1749416383", "type": kind});
            m[kind] = part;
            m
        };
        let t = one(base("text", json!({"body": "Does it come in another color?"})));
        assert_eq!(t.text.as_deref(), Some("Does it come in another color?"));
        assert_eq!(t.name.as_deref(), Some("Sheena Nelson"));
        assert_eq!(t.from.as_ref().map(Phone::as_str), Some("+14155550123"));
        assert_eq!(t.timestamp, chrono::DateTime::from_timestamp(1749416383, 0).unwrap().naive_utc());

        let img = one(base("image", json!({"mime_type": "image/jpeg", "sha256": "x", "id": "65463453"})));
        assert_eq!(img.media[0].provider_media_id, "65463453");
        assert_eq!(img.media[0].kind, MediaKind::Image);
        assert_eq!(img.media[0].content_type, "image/jpeg");
        let doc = one(base(
            "document",
            json!({"caption": "caption", "filename": "filename.pdf", "mime_type": "application/pdf", "id": "1234"}),
        ));
        assert_eq!((doc.media[0].filename.as_str(), doc.text.as_deref()), ("filename.pdf", Some("caption")));
        let voice = one(base("audio", json!({"mime_type": "audio/ogg; codecs=opus", "id": "9", "voice": true})));
        assert_eq!(voice.media[0].kind, MediaKind::Audio);
        let video = one(base("video", json!({"mime_type": "video/mp4", "id": "7", "caption": "c"})));
        assert_eq!(video.media[0].kind, MediaKind::Video);
        let sticker = one(base("sticker", json!({"mime_type": "image/webp", "id": "5", "animated": false})));
        assert_eq!(sticker.media[0].kind, MediaKind::Image);

        let loc = one(base("location", json!({"latitude": 12.25089, "longitude": 43.90539, "name": "Cafe"})));
        assert!(loc.text.unwrap().contains("12.25089, 43.90539"));
        let mut contacts = json!({"from": "14155550123", "id": "wamid.c", "timestamp": "1", "type": "contacts"});
        contacts["contacts"] =
            json!([{"name": {"formatted_name": "Chandler Bing"}, "phones": [{"phone": "+1 555-555-5555"}]}]);
        assert_eq!(one(contacts).text.as_deref(), Some("👤 Contact: Chandler Bing (+1 555-555-5555)"));
        let button = one(base(
            "interactive",
            json!({"type": "button_reply", "button_reply": {"id": "yes", "title": "Yes please"}}),
        ));
        assert_eq!(button.text.as_deref(), Some("Yes please"));
        let list = one(base("interactive", json!({"type": "list_reply", "list_reply": {"id": "a", "title": "Row A"}})));
        assert_eq!(list.text.as_deref(), Some("Row A"));
        let quick = one(base("button", json!({"payload": "p", "text": "Stop promotions"})));
        assert_eq!(quick.text.as_deref(), Some("Stop promotions"));
        let reaction = one(base("reaction", json!({"message_id": "wamid.x", "emoji": "😮"})));
        assert_eq!((reaction.amends, reaction.text.as_deref()), (Some(Amend::React("wamid.x".into())), Some("😮")));
        let removed = one(base("reaction", json!({"message_id": "wamid.x"})));
        assert_eq!((removed.amends, removed.text.as_deref()), (Some(Amend::React("wamid.x".into())), Some("")));
        let edit = one(base(
            "edit",
            json!({"original_message_id": "wamid.orig", "message": {"type": "text", "text": {"body": "fixed typo"}}}),
        ));
        assert_eq!(edit.amends, Some(Amend::Edit("wamid.orig".into())));
        assert_eq!(edit.text.as_deref(), Some("fixed typo"));
        let caption = one(base(
            "edit",
            json!({"original_message_id": "wamid.img", "message": {"type": "image", "image": {"id": "9", "caption": "new caption"}}}),
        ));
        assert_eq!((caption.text.as_deref(), caption.media.len()), (Some("new caption"), 0));
        let revoke = one(base("revoke", json!({"original_message_id": "wamid.orig"})));
        assert_eq!(revoke.amends, Some(Amend::Revoke("wamid.orig".into())));
        assert_eq!(one(base("text", json!({"body": "plain"}))).amends, None);
    }

    #[test]
    fn unsupported_and_odd_items_are_reported_not_dropped() {
        let body = envelope(json!([
            {"from": "14155550123", "id": "wamid.u", "timestamp": "1", "type": "unsupported", "errors": [{"code": 131051}]},
            {"id": "wamid.nofrom", "type": "text", "text": {"body": "x"}},
            {"from": "14155550123", "id": "wamid.ok", "type": "text", "text": {"body": "fine"}}
        ]));
        let changes = parse(&body).unwrap();
        assert_eq!(changes[0].messages.len(), 1);
        assert_eq!(changes[0].ignored.len(), 2);
        assert!(
            parse(b"{\"entry\":[{\"changes\":[{\"field\":\"account_update\",\"value\":{}}]}]}").unwrap()[0]
                .ignored
                .len()
                == 1
        );
        assert!(parse(b"not json").is_err());
        assert!(parse(b"{\"entry\":7}").is_err());
        assert!(
            parse(b"{\"entry\":[7,{\"changes\":[null,{\"value\":{\"messages\":[1,\"x\"]},\"field\":\"messages\"}]}]}")
                .is_ok()
        );
    }

    #[test]
    fn statuses_parse_with_error_codes() {
        let body = serde_json::to_vec(&json!({"entry": [{"changes": [{"field": "messages", "value": {
            "metadata": {"phone_number_id": "1"},
            "statuses": [{"id": "wamid.a", "status": "read", "timestamp": "1"},
                         {"id": "wamid.a", "status": "failed", "errors": [{"code": 131047}]},
                         {"id": "wamid.a", "status": "played"},
                         {"id": "wamid.a", "status": "deleted"}]}}]}]}))
        .unwrap();
        let c = &parse(&body).unwrap()[0];
        assert_eq!(c.statuses.len(), 3);
        assert_eq!(c.statuses[0].status, Status::Read);
        assert_eq!(c.statuses[1].error_code.as_deref(), Some("131047"));
        assert_eq!(c.ignored.len(), 1);
    }

    #[test]
    fn template_and_media_bodies() {
        let out = Outbound {
            message_id: "m1".into(),
            to: Recipient::Phone("+14155550123".into()),
            body: OutboundBody::Template {
                name: "order_update".into(),
                language: "en_US".into(),
                params: vec!["John".into()],
                rendered: "Hi John".into(),
                content_sid: None,
            },
        };
        let b = &request_bodies(&out)[0];
        assert_eq!(b["to"], "14155550123");
        assert_eq!(b["template"]["name"], "order_update");
        assert_eq!(b["template"]["language"]["code"], "en_US");
        assert_eq!(b["template"]["components"][0]["parameters"][0]["text"], "John");
        let media = Outbound {
            body: OutboundBody::Media {
                items: vec![super::super::OutboundMedia {
                    kind: MediaKind::Document,
                    url: "https://x/media/1".into(),
                    filename: "a.pdf".into(),
                }],
                caption: Some("see".into()),
            },
            ..out
        };
        let b = &request_bodies(&media)[0];
        assert_eq!(b["type"], "document");
        assert_eq!(b["document"], json!({"link": "https://x/media/1", "caption": "see", "filename": "a.pdf"}));
        let by_bsuid = Outbound { to: Recipient::Bsuid("US.13491208655302741918".into()), ..media };
        let b = &request_bodies(&by_bsuid)[0];
        assert_eq!((b.get("to"), &b["recipient"]), (None, &json!("US.13491208655302741918")));
    }
}
