//! WebSocket frames of CONTRACT §4: one JSON object per text frame.

use serde::Deserialize;
use serde_json::json;

use super::event::Event;

/// Client → server.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", rename_all_fields = "camelCase")]
pub enum ClientFrame {
    Subscribe {
        conversation_id: i64,
        after_seq: Option<i64>,
    },
    Unsubscribe {
        conversation_id: i64,
    },
    SubscribeInbox,
    Send {
        conversation_id: i64,
        client_id: Option<String>,
        text: Option<String>,
        #[serde(default)]
        attachment_ids: Vec<i64>,
        template_id: Option<i64>,
        #[serde(default)]
        params: Vec<String>,
        /// A private note (issue 22).
        #[serde(default)]
        private: bool,
        /// A scheduled send's time and fallback template (issue 22), as in `POST /message`.
        send_at: Option<String>,
        fallback_template_id: Option<i64>,
    },
    Typing {
        conversation_id: i64,
        on: bool,
    },
    Read {
        conversation_id: i64,
        seq: i64,
    },
    Ping,
}

/// A client's text frame.
pub fn client_frame(text: &[u8]) -> Result<ClientFrame, serde_json::Error> {
    serde_json::from_slice(text)
}

/// `{"type":"event","conversationId":3,"seq":46,"event":"message.created","data":{…}}`,
/// serialised once per event whatever the number of subscribers.
pub fn event_frame(e: &Event) -> String {
    let mut frame = json!({"type": "event", "conversationId": e.conversation_id, "event": e.event, "data": e.data});
    if let Some(seq) = e.seq {
        frame["seq"] = seq.into();
    }
    frame.to_string()
}

pub fn subscribed(conversation_id: i64, last_seq: i64) -> String {
    json!({"type": "subscribed", "conversationId": conversation_id, "lastSeq": last_seq}).to_string()
}

pub fn resync_required(conversation_id: i64) -> String {
    json!({"type": "resync_required", "conversationId": conversation_id}).to_string()
}

pub fn error(client_id: Option<&str>, conversation_id: Option<i64>, code: &str, message: &str) -> String {
    let mut frame = json!({"type": "error", "code": code, "message": message});
    if let Some(c) = client_id {
        frame["clientId"] = c.into();
    }
    if let Some(id) = conversation_id {
        frame["conversationId"] = id.into();
    }
    frame.to_string()
}

pub fn ack(client_id: Option<&str>, message_id: &str, seq: i64) -> String {
    json!({"type": "ack", "clientId": client_id, "messageId": message_id, "seq": seq}).to_string()
}

pub fn pong() -> String {
    json!({"type": "pong"}).to_string()
}
