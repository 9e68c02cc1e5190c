use serde::{Deserialize, Serialize};

/// Something an agent can see happen. Persisted events carry the conversation's gap-free `seq`
/// and were committed before anyone receives them (CONTRACT §4); `typing`, `presence` and the
/// inbox-only `conversation.created` carry none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub company_id: i64,
    pub conversation_id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    pub event: String,
    pub data: serde_json::Value,
    /// The connection that caused a transient event (typing), which does not get it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<u64>,
}

pub const MESSAGE_CREATED: &str = "message.created";
pub const MESSAGE_UPDATED: &str = "message.updated";
pub const CONVERSATION_UPDATED: &str = "conversation.updated";
pub const CONVERSATION_CREATED: &str = "conversation.created";
pub const TYPING: &str = "typing";
pub const PRESENCE: &str = "presence";
/// An agent was @-mentioned in a private note: sent to that agent's sockets only, not persisted.
pub const MENTION: &str = "mention";
