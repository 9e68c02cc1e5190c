//! Messaging domain types and wire views (CONTRACT §3, seed 004). No I/O here.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    core::{
        db::schema::{channels, conversations, messages, templates},
        types::rfc3339,
    },
    media::db::AttachmentRow,
};

/// WhatsApp's customer-service window: free text only within 24 h of the customer's last
/// message; templates are always allowed (CONTRACT §3 `POST /message`).
pub const WINDOW: chrono::Duration = chrono::Duration::hours(24);
/// WhatsApp's text limit.
pub const MAX_TEXT_CHARS: usize = 4096;
/// How long an agent may edit a message after sending it (issue 22; WhatsApp's own limit for
/// edits is the same 15 minutes).
pub const EDIT_WINDOW: chrono::Duration = chrono::Duration::minutes(15);

/// The outbox job that hands a scheduled send to the delivery worker at its `sendAt`
/// (issue 22; `service::release_scheduled`).
pub const SCHEDULED_SEND_JOB: &str = "scheduled_send";

/// Delivery status; `status_rank` makes it forward-only (CONTRACT §3: never backwards).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// A scheduled send waiting for its time (issue 22); `PENDING` when it is handed to the
    /// delivery worker, or `FAILED` (`window_closed`).
    Scheduled,
    Pending,
    Sent,
    Delivered,
    Read,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Scheduled => "SCHEDULED",
            Status::Pending => "PENDING",
            Status::Sent => "SENT",
            Status::Delivered => "DELIVERED",
            Status::Read => "READ",
            Status::Failed => "FAILED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "SCHEDULED" => Some(Status::Scheduled),
            "PENDING" | "QUEUED" | "ACCEPTED" => Some(Status::Pending),
            "SENT" => Some(Status::Sent),
            "DELIVERED" => Some(Status::Delivered),
            "READ" => Some(Status::Read),
            "FAILED" | "UNDELIVERED" => Some(Status::Failed),
            _ => None,
        }
    }

    pub fn rank(self) -> i32 {
        match self {
            Status::Scheduled => -1,
            Status::Pending => 0,
            Status::Sent => 1,
            Status::Delivered => 2,
            Status::Read => 3,
            Status::Failed => 4,
        }
    }

    /// Whether a message at `current` may move to `self`. Statuses only move forward; a
    /// failure is accepted only before the message was delivered (a provider's late
    /// "failed" after "read" is noise).
    pub fn advances(self, current: Status) -> bool {
        match self {
            Status::Failed => current.rank() <= Status::Sent.rank(),
            _ => current != Status::Failed && self.rank() > current.rank(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Sent,
    Received,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Sent => "SENT",
            Direction::Received => "RECEIVED",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConversationStatus {
    Open,
    Pending,
    Resolved,
    Snoozed,
}

impl ConversationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Pending => "pending",
            Self::Resolved => "resolved",
            Self::Snoozed => "snoozed",
        }
    }
}

pub use crate::core::media::model::MediaKind;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = conversations)]
pub struct ConversationRow {
    pub id: i64,
    pub company_id: i64,
    pub channel_id: i64,
    pub customer_id: i64,
    pub status: String,
    pub assignee_id: Option<i64>,
    pub labels: String,
    pub last_seq: i64,
    pub message_count: i64,
    pub unread_count: i64,
    pub last_read_seq: i64,
    pub last_message_id: Option<String>,
    pub last_update_time: NaiveDateTime,
    pub last_free_message_time: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    /// While `status` is `snoozed`: when it reopens by itself (`None`: at the customer's next
    /// message only).
    pub snoozed_until: Option<NaiveDateTime>,
    /// The team working it (issue 22): its channel's team when it opened, or set by an agent.
    pub team_id: Option<i64>,
    /// Merged into that conversation (issue 22): its messages are there now.
    pub merged_into: Option<i64>,
}

impl ConversationRow {
    /// Seconds left in the 24-hour window at `now` (0 when closed or never opened).
    pub fn window_seconds_left(&self, now: NaiveDateTime) -> i64 {
        self.last_free_message_time.map(|t| (t + WINDOW - now).num_seconds().max(0)).unwrap_or(0)
    }
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = messages)]
pub struct MessageRow {
    pub pk: i64,
    pub id: String,
    pub conversation_id: i64,
    pub company_id: i64,
    pub channel_id: i64,
    pub direction: String,
    pub kind: String,
    pub content: Option<String>,
    pub template_id: Option<i64>,
    pub params: String,
    pub status: String,
    pub status_rank: i32,
    pub provider_message_id: Option<String>,
    pub client_id: Option<String>,
    pub sender_id: Option<i64>,
    pub error_code: Option<String>,
    pub seq: i64,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// A private note: agent-only, never sent to a provider (issue 22).
    pub is_private: bool,
    pub edited_at: Option<NaiveDateTime>,
    /// Deleted (an agent's note or unsent message, or revoked by the customer): the content
    /// is gone for everyone.
    pub deleted_at: Option<NaiveDateTime>,
    /// A scheduled send's time (issue 22): the message waits as `SCHEDULED` until then.
    pub send_at: Option<NaiveDateTime>,
    /// The template a scheduled text goes out as (with `params`) when the 24-hour window has
    /// closed by its time.
    pub fallback_template_id: Option<i64>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = templates)]
pub struct TemplateRow {
    pub id: i64,
    pub company_id: i64,
    pub name: String,
    pub language: String,
    pub category: String,
    pub content: String,
    pub param_count: i32,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// The Twilio Content template (`HX…`) this template is sent as on Twilio channels.
    pub content_sid: Option<String>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = channels)]
pub struct ChannelRow {
    pub id: i64,
    pub company_id: i64,
    pub provider: String,
    pub phone_e164: String,
    pub phone_number_id: Option<String>,
    pub display_name: String,
    pub secrets: String,
    pub is_default: bool,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub deleted_at: Option<NaiveDateTime>,
    /// The agent bot that gets every new conversation of the channel first (issue 23).
    pub bot_id: Option<i64>,
    /// The team every new conversation of the channel belongs to (issue 22).
    pub team_id: Option<i64>,
}

/// Counts the `{{n}}` placeholders of a template: the highest n, which must equal the number
/// of `params` a send supplies.
pub fn placeholder_count(content: &str) -> usize {
    let mut max = 0;
    let mut rest = content;
    while let Some(start) = rest.find("{{") {
        rest = &rest[start + 2..];
        if let Some(end) = rest.find("}}") {
            if let Ok(n) = rest[..end].trim().parse::<usize>() {
                max = max.max(n);
            }
            rest = &rest[end + 2..];
        } else {
            break;
        }
    }
    max
}

/// Replaces `{{1}}`…`{{n}}` with the params in one pass (a param that itself contains
/// `{{2}}` stays as written).
pub fn render_template(content: &str, params: &[String]) -> String {
    let mut out = String::with_capacity(content.len());
    let mut rest = content;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}").and_then(|end| Some((end, after[..end].trim().parse::<usize>().ok()?))) {
            Some((end, n)) if n >= 1 && n <= params.len() => {
                out.push_str(&params[n - 1]);
                rest = &after[end + 2..];
            }
            _ => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The agents an `@Name` in a private note mentions: every `(id, first name)` whose first
/// name follows an `@` (case-insensitive) and ends there or at a character that cannot
/// continue a name (`@Grace,` and `@Grace Hopper` mention Grace; `@Graceful` does not).
pub fn mentioned(text: &str, staff: &[(i64, String)]) -> Vec<i64> {
    let lower = text.to_lowercase();
    let mut out = Vec::new();
    for (at, _) in lower.match_indices('@') {
        let rest = &lower[at + 1..];
        for (id, first) in staff {
            let first = first.trim().to_lowercase();
            if first.is_empty() || out.contains(id) || !rest.starts_with(&first) {
                continue;
            }
            let next = rest[first.len()..].chars().next();
            if next.is_none_or(|ch| !(ch.is_alphanumeric() || ch == '_')) {
                out.push(*id);
            }
        }
    }
    out
}

// ---- wire views (camelCase, seed 004) ----

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentView {
    pub attachment_id: i64,
    pub order: Option<i32>,
    #[serde(rename = "type")]
    pub kind: String,
    pub filename: String,
    pub filesize: i64,
    /// `ready`, or `pending` while inbound provider media is being fetched.
    pub state: String,
}

impl From<&AttachmentRow> for AttachmentView {
    fn from(a: &AttachmentRow) -> Self {
        Self {
            attachment_id: a.id,
            order: a.ord,
            kind: a.kind.clone(),
            filename: a.filename.clone(),
            filesize: a.filesize,
            state: a.state.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    pub message_id: String,
    pub conversation_id: i64,
    /// `SENT` (agent to customer) or `RECEIVED`.
    pub direction: String,
    pub content: Option<String>,
    pub datetime: String,
    pub status: String,
    pub attachments: Vec<AttachmentView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// A private note: seen by the company's agents only, never sent to the customer.
    #[serde(default)]
    pub private: bool,
    /// When the text was last edited (an agent's edit, or the customer's on WhatsApp).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<String>,
    /// Deleted: `content` is null and `attachments` empty for everyone.
    #[serde(default)]
    pub deleted: bool,
    /// A scheduled send's time (RFC 3339): `status` is `SCHEDULED` until then (issue 22).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_at: Option<String>,
    /// The template a scheduled send goes out as if the 24-hour window has closed by then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_template_id: Option<i64>,
    /// Reactions (issue 22): the customer's (WhatsApp) and agents', one each, oldest first.
    #[serde(default)]
    pub reactions: Vec<ReactionView>,
}

/// A reaction on a message: `by` is `"customer"` or the reacting agent's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReactionView {
    pub emoji: String,
    pub by: ReactionBy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ReactionBy {
    /// An agent's user id.
    Agent(i64),
    /// Always `"customer"`.
    Customer(String),
}

/// The outbox job that sends an agent's reaction to WhatsApp (ref `{messageId}:{agentId}`):
/// it sends the reaction as it is when the job runs (an empty emoji removes it).
pub const REACTION_JOB: &str = "reaction";

impl MessageView {
    pub fn new(m: &MessageRow, attachments: &[AttachmentRow]) -> Self {
        Self {
            message_id: m.id.clone(),
            conversation_id: m.conversation_id,
            direction: m.direction.clone(),
            content: if m.deleted_at.is_some() { None } else { m.content.clone() },
            datetime: rfc3339(m.created_at),
            status: m.status.clone(),
            attachments: if m.deleted_at.is_some() {
                Vec::new()
            } else {
                attachments.iter().map(AttachmentView::from).collect()
            },
            sender_id: m.sender_id,
            template_id: m.template_id,
            client_id: m.client_id.clone(),
            error_code: m.error_code.clone(),
            private: m.is_private,
            edited_at: m.edited_at.map(rfc3339),
            deleted: m.deleted_at.is_some(),
            send_at: m.send_at.map(rfc3339),
            fallback_template_id: m.fallback_template_id,
            reactions: Vec::new(),
        }
    }
}

/// An agent mentioned in a private note (issue 22): an item of `GET /mentions` and the data
/// of the `mention` event on that agent's sockets.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MentionView {
    pub mention_id: i64,
    pub conversation_id: i64,
    pub message_id: String,
    /// The agent who wrote the note, and their name.
    pub by_id: i64,
    pub by_name: String,
    /// The note as it is now (empty once deleted).
    pub content: Option<String>,
    pub datetime: String,
}

/// A customer as the messaging family shows it (CONTRACT §3 `GET /contact`, the `user` of a
/// conversation). Every field is always present: a contact without a phone or e-mail has
/// `null` there, never a missing key or `""` (issue 25).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContactView {
    pub user_id: i64,
    pub first_name: String,
    pub last_name: String,
    /// E.164, or `null`.
    pub phone: Option<String>,
    /// The primary e-mail, or `null`.
    pub email: Option<String>,
    /// The customer sent STOP (START undoes it): campaigns skip them.
    pub opted_out: bool,
    /// The customer's WhatsApp business-scoped user id (`US.1349…`), or `null`. A customer
    /// with a WhatsApp username may have this and no `phone`; replies reach them on WhatsApp
    /// Cloud API channels (Twilio needs a phone).
    pub whatsapp_user_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationView {
    pub conversation_id: i64,
    pub company_id: i64,
    pub user_id: i64,
    pub channel_id: i64,
    pub last_update_time: Option<String>,
    pub last_free_message_time: Option<String>,
    pub user: ContactView,
    pub status: String,
    /// A snoozed conversation's reopening time (RFC 3339); `null` otherwise, or when it is
    /// snoozed until the customer writes.
    pub snoozed_until: Option<String>,
    pub assignee_id: Option<i64>,
    /// The team working the conversation (`GET /team`), or `null`.
    pub team_id: Option<i64>,
    /// Set when this conversation was merged into that one (`POST /conversation/{id}/merge`):
    /// it is resolved, and its message list answers from that conversation.
    pub merged_into: Option<i64>,
    pub labels: Vec<String>,
    pub unread_count: i64,
    /// The conversation's latest event sequence number (resume point for `subscribe`).
    pub last_seq: i64,
    pub last_message: Option<MessageView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub total_count: i64,
    pub page: i64,
    pub limit: i64,
    pub data: Vec<T>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_only_move_forward() {
        use Status::*;
        assert!(Sent.advances(Pending));
        assert!(Read.advances(Sent));
        assert!(!Delivered.advances(Read), "a late delivered keeps READ");
        assert!(!Sent.advances(Sent), "idempotent");
        assert!(Failed.advances(Sent));
        assert!(!Failed.advances(Read));
        assert!(!Delivered.advances(Failed));
        assert!(Pending.advances(Scheduled), "a scheduled send is handed to the worker");
        assert!(Failed.advances(Scheduled), "window_closed");
        assert!(!Scheduled.advances(Pending), "never back to scheduled");
    }

    #[test]
    fn mentions_match_first_names_at_a_word_end() {
        let staff = [(1, "Grace".to_owned()), (2, "Alan".to_owned()), (3, "".to_owned()), (4, "Al".to_owned())];
        assert_eq!(mentioned("@grace can you look? cc @Alan.", &staff), vec![1, 2]);
        assert_eq!(mentioned("@Graceful @Alanis", &staff), Vec::<i64>::new());
        assert_eq!(mentioned("mail grace@example.com", &staff), Vec::<i64>::new());
        assert_eq!(mentioned("@Al and @Grace Hopper, @Grace", &staff), vec![4, 1]);
        assert_eq!(mentioned("no mentions @", &staff), Vec::<i64>::new());
    }

    #[test]
    fn templates_count_and_render_placeholders() {
        let t = "Your {{1}} order of {{2}} ships on {{3}}. {{1}}!";
        assert_eq!(placeholder_count(t), 3);
        assert_eq!(placeholder_count("no params"), 0);
        let p = ["big".to_owned(), "shoes".to_owned(), "Monday".to_owned()];
        assert_eq!(render_template(t, &p), "Your big order of shoes ships on Monday. big!");
        assert_eq!(render_template("{{1}} {{2}}", &["{{2}}".to_owned(), "x".to_owned()]), "{{2}} x");
    }
}
