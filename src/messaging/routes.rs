//! Messaging routes (CONTRACT §3, seed 004 ConnectMe): conversations, messages, search,
//! contacts and profiles. Wire types only; every rule lives in `service`.

use actix_web::{HttpResponse, delete, get, patch, post, put, web};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    model::*,
    service::{self, Content, ConversationPatch, SendRequest, Target},
    store,
};
use crate::core::{
    auth::guard::Agent,
    error::{ApiError, ApiResult, ErrorBody},
    extract::Json,
    query::{Paging, search_text},
    state::AppState,
    types::{Phone, now, rfc3339},
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(conversation_page_list)
        .service(conversation_counts)
        .service(chat_time_report)
        .service(patch_conversation)
        .service(merge_conversation)
        .service(message_page_list)
        .service(post_message)
        .service(edit_message)
        .service(delete_message)
        .service(react)
        .service(new_chat)
        .service(message_search)
        .service(list_mentions)
        .service(contacts)
        .service(contact_search)
        .service(put_contact)
        .service(get_profile)
        .service(put_profile);
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        conversation_page_list,
        conversation_counts,
        chat_time_report,
        patch_conversation,
        merge_conversation,
        message_page_list,
        post_message,
        edit_message,
        delete_message,
        react,
        new_chat,
        message_search,
        list_mentions,
        contacts,
        contact_search,
        put_contact,
        get_profile,
        put_profile
    ),
    components(schemas(
        ConversationView,
        ConversationCounts,
        StatusCounts,
        MessageView,
        AttachmentView,
        ContactView,
        SendBody,
        NewChatBody,
        NewChatView,
        PatchConversationBody,
        MergeBody,
        ChatTimeView,
        ContactBody,
        ProfileBody,
        ProfileUpdatedView,
        MessageType,
        ConversationStatus,
        MentionView,
        EditBody,
        ReactBody,
        ReactionView,
        ReactionBy
    ))
)]
pub struct Api;

/// An id given as a JSON number or a numeric string (old ConnectMe clients send both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ToSchema)]
#[schema(value_type = i64)]
pub struct FlexId(pub i64);

impl<'de> Deserialize<'de> for FlexId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(i64),
            S(String),
        }
        match Raw::deserialize(d).map_err(|_| serde::de::Error::custom("must be an integer id"))? {
            Raw::N(n) => Ok(FlexId(n)),
            Raw::S(s) => s.trim().parse().map(FlexId).map_err(|_| serde::de::Error::custom("must be an integer id")),
        }
    }
}

/// CONTRACT §2 paging: `page` 1–1,000,000 (default 1), `limit` 1–100 (default 20), else 400
/// `validation_failed` naming the field ([`Paging`]).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct PageQuery {
    pub page: Option<i64>,
    pub limit: Option<i64>,
    /// Keyset paging for messages: the page of messages older than this `messageId`.
    pub before: Option<String>,
}

impl PageQuery {
    pub fn bounds(&self) -> ApiResult<Paging> {
        Paging::parse(self.page, self.limit, 20, ("page", "limit"))
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct ConversationQuery {
    pub page: Option<i64>,
    pub limit: Option<i64>,
    pub status: Option<ConversationStatus>,
    /// An agent id, or `none` for unassigned conversations.
    pub assignee_id: Option<String>,
    pub unread: Option<bool>,
    /// Customer name or phone digits.
    pub q: Option<String>,
    /// Keyset paging: conversations updated before this RFC 3339 time.
    pub before_update: Option<String>,
    /// A team id (`GET /team`), or `none` for conversations of no team.
    pub team_id: Option<String>,
    /// One customer's conversations (their `userId`).
    pub user_id: Option<i64>,
}

/// An id filter that may also be `none` (`assigneeId`, `teamId`): `(Some(id), false)`,
/// `(None, true)` for none, `(None, false)` when absent.
fn id_or_none(field: &str, v: Option<&str>) -> ApiResult<(Option<i64>, bool)> {
    match v {
        None => Ok((None, false)),
        Some("none") | Some("unassigned") => Ok((None, true)),
        Some(s) => s
            .parse::<i64>()
            .map(|id| (Some(id), false))
            .map_err(|_| ApiError::bad_request("invalid_query", format!("{field} must be an id or `none`"))),
    }
}

/// The company's conversations, newest `lastUpdateTime` first (CONTRACT §3).
#[utoipa::path(tag = "conversations", params(ConversationQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<ConversationView>), (status = 400, body = ErrorBody)))]
#[get("/conversation/conversation-page-list")]
async fn conversation_page_list(
    agent: Agent,
    st: web::Data<AppState>,
    q: web::Query<ConversationQuery>,
) -> ApiResult<HttpResponse> {
    let Paging { page, size: limit, offset } = PageQuery { page: q.page, limit: q.limit, before: None }.bounds()?;
    let (assignee_id, unassigned) = id_or_none("assigneeId", q.assignee_id.as_deref())?;
    let (team_id, no_team) = id_or_none("teamId", q.team_id.as_deref())?;
    let before_update = match q.before_update.as_deref() {
        None => None,
        Some(s) => Some(
            chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|_| ApiError::bad_request("invalid_query", "beforeUpdate must be an RFC 3339 time"))?
                .naive_utc(),
        ),
    };
    let filter = store::ConversationFilter {
        status: q.status.map(|s| s.as_str().to_owned()),
        assignee_id,
        unassigned,
        team_id,
        no_team,
        customer_id: q.user_id,
        unread: q.unread.unwrap_or(false),
        q: q.q.as_deref().map(|t| search_text("q", t)).transpose()?.flatten(),
        before_update,
    };
    let offset = if before_update.is_some() { 0 } else { offset };
    let company_id = agent.company_id;
    let (data, total_count) = st
        .db
        .run(move |c| {
            let (rows, total) = store::conversations_page(c, company_id, &filter, offset, limit)?;
            Ok((service::conversation_views(c, &rows)?, total))
        })
        .await?;
    Ok(HttpResponse::Ok().json(Page { total_count, page, limit, data }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct CountsQuery {
    /// Count only this team's conversations (an id, or `none` for those of no team).
    pub team_id: Option<String>,
}

/// How many conversations have each status.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct StatusCounts {
    pub open: i64,
    pub pending: i64,
    pub resolved: i64,
    pub snoozed: i64,
}

/// `GET /conversation/counts` (issue 22): the inbox tabs' counters.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ConversationCounts {
    /// Assigned to the caller.
    pub mine: StatusCounts,
    pub unassigned: StatusCounts,
    pub all: StatusCounts,
}

/// The counters of the inbox tabs (issue 22): the company's conversations by status, all of
/// them, the caller's and the unassigned ones; `teamId` narrows them to a team like the list.
#[utoipa::path(tag = "conversations", params(CountsQuery), security(("bearer" = [])),
    responses((status = 200, body = ConversationCounts), (status = 400, body = ErrorBody)))]
#[get("/conversation/counts")]
async fn conversation_counts(
    agent: Agent,
    st: web::Data<AppState>,
    q: web::Query<CountsQuery>,
) -> ApiResult<HttpResponse> {
    let team = id_or_none("teamId", q.team_id.as_deref())?;
    let (company_id, me) = (agent.company_id, agent.user_id);
    let rows = st.db.run(move |c| store::conversation_counts(c, company_id, team)).await?;
    let mut counts = ConversationCounts::default();
    for (status, assignee, n) in rows {
        let add = |s: &mut StatusCounts| match status.as_str() {
            "open" => s.open += n,
            "pending" => s.pending += n,
            "resolved" => s.resolved += n,
            "snoozed" => s.snoozed += n,
            _ => {}
        };
        add(&mut counts.all);
        match assignee {
            None => add(&mut counts.unassigned),
            Some(a) if a == me => add(&mut counts.mine),
            Some(_) => {}
        }
    }
    Ok(HttpResponse::Ok().json(counts))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatTimeView {
    pub last_free_message_time: Option<String>,
    pub compared_time: String,
    /// Whole seconds left in the 24-hour window (0 when closed).
    pub duration: i64,
}

/// The 24-hour window of a conversation (CONTRACT §3).
#[utoipa::path(tag = "conversations", security(("bearer" = [])),
    responses((status = 200, body = ChatTimeView), (status = 404, body = ErrorBody)))]
#[get("/conversation/chat-time-report/{conversationId}")]
async fn chat_time_report(agent: Agent, st: web::Data<AppState>, id: web::Path<i64>) -> ApiResult<HttpResponse> {
    let (company_id, id) = (agent.company_id, id.into_inner());
    let conv = st.db.run(move |c| store::conversation(c, company_id, id)).await?;
    let t = now();
    Ok(HttpResponse::Ok().json(ChatTimeView {
        last_free_message_time: conv.last_free_message_time.map(rfc3339),
        compared_time: rfc3339(t),
        duration: conv.window_seconds_left(t),
    }))
}

fn double_option<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatchConversationBody {
    pub status: Option<ConversationStatus>,
    /// With `status: "snoozed"`: when the conversation reopens by itself (RFC 3339, at most a
    /// year ahead; a past time reopens it at once). Without it a snooze lasts until the
    /// customer's next message, which ends any snooze.
    #[serde(default, deserialize_with = "blank_is_none")]
    pub snoozed_until: Option<String>,
    /// An agent id, or null to unassign.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i64>)]
    pub assignee_id: Option<Option<FlexId>>,
    pub labels: Option<Vec<String>>,
    /// A team of the company (`GET /team`), or null for none. Moving an open, unassigned
    /// conversation to a team with `autoAssign` assigns it to one of its online agents.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i64>)]
    pub team_id: Option<Option<FlexId>>,
}

/// Status (`snoozed` with `snoozedUntil`, issue 22), assignee and labels; emits
/// `conversation.updated` (CONTRACT §3). A snoozed conversation reopens by itself at
/// `snoozedUntil` (once, on one node, also after a restart) or at the customer's next message.
#[utoipa::path(tag = "conversations", request_body = PatchConversationBody, security(("bearer" = [])),
    responses((status = 200, body = ConversationView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[patch("/conversation/{conversationId}")]
async fn patch_conversation(
    agent: Agent,
    st: web::Data<AppState>,
    id: web::Path<i64>,
    Json(b): Json<PatchConversationBody>,
) -> ApiResult<HttpResponse> {
    if b.labels.as_ref().is_some_and(|l| l.len() > 50 || l.iter().any(|s| s.chars().count() > 64)) {
        return Err(ApiError::field("labels", "at most 50 labels of at most 64 characters"));
    }
    let patch = ConversationPatch {
        status: b.status,
        snoozed_until: b.snoozed_until.as_deref().map(|t| service::instant("snoozedUntil", t)).transpose()?,
        assignee_id: b.assignee_id.map(|a| a.map(|id| id.0)),
        labels: b.labels,
        team_id: b.team_id.map(|t| t.map(|id| id.0)),
    };
    Ok(HttpResponse::Ok().json(service::update_conversation(&st, &agent, id.into_inner(), patch).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MergeBody {
    /// Another conversation of the same customer, which receives the messages.
    pub into_conversation_id: FlexId,
}

/// Merges this conversation into another of the same customer (issue 22): its messages move
/// there in time order (the target's subscribers get them as `message.created` with the
/// target's next seqs, then `conversation.updated`); this one becomes `resolved` with
/// `mergedInto`, and its message list answers from the target. Answers the target's view.
#[utoipa::path(tag = "conversations", request_body = MergeBody, security(("bearer" = [])),
    responses((status = 200, body = ConversationView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "one of them is merged already"),
        (status = 422, body = ErrorBody, description = "the same conversation, or another customer's")))]
#[post("/conversation/{conversationId}/merge")]
async fn merge_conversation(
    agent: Agent,
    st: web::Data<AppState>,
    id: web::Path<i64>,
    Json(b): Json<MergeBody>,
) -> ApiResult<HttpResponse> {
    let view = service::merge_conversations(&st, &agent, id.into_inner(), b.into_conversation_id.0).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// A conversation's messages, newest first; `before=<messageId>` pages by keyset and stays as
/// fast at any depth. `totalCount` is the conversation's maintained counter.
#[utoipa::path(tag = "messages", params(PageQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<MessageView>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[get("/message/message-page-list/{conversationId}")]
async fn message_page_list(
    agent: Agent,
    st: web::Data<AppState>,
    id: web::Path<i64>,
    q: web::Query<PageQuery>,
) -> ApiResult<HttpResponse> {
    let Paging { page, size: limit, offset } = q.bounds()?;
    let (company_id, id, before) = (agent.company_id, id.into_inner(), q.before.clone());
    let (total_count, data) = st
        .db
        .run(move |c| {
            let conv = store::conversation(c, company_id, id)?;
            // A merged conversation's messages are in the one it was merged into (issue 22).
            let conv = match conv.merged_into {
                Some(into) => store::conversation(c, company_id, into)?,
                None => conv,
            };
            let before_pk = match before {
                Some(mid) => {
                    let m = store::message(c, company_id, &mid).map_err(|_| {
                        ApiError::bad_request("invalid_query", "before must be a messageId of this conversation")
                    })?;
                    if m.conversation_id != conv.id {
                        return Err(ApiError::bad_request(
                            "invalid_query",
                            "before must be a messageId of this conversation",
                        ));
                    }
                    Some(m.pk)
                }
                None => None,
            };
            let rows = store::messages_page(c, conv.id, before_pk, offset, limit)?;
            Ok((conv.message_count, store::message_views(c, &rows)?))
        })
        .await?;
    Ok(HttpResponse::Ok().json(Page { total_count, page, limit, data }))
}

/// The `type` of `POST /message`, in any case (`"TEXT"`, as seed 004's clients send it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum MessageType {
    Text,
    Template,
    Image,
    Audio,
    Video,
    Document,
}

impl MessageType {
    /// The attachment kind a media type names (`None` for text and templates).
    fn media_kind(self) -> Option<MediaKind> {
        match self {
            Self::Image => Some(MediaKind::Image),
            Self::Audio => Some(MediaKind::Audio),
            Self::Video => Some(MediaKind::Video),
            Self::Document => Some(MediaKind::Document),
            Self::Text | Self::Template => None,
        }
    }
}

impl<'de> Deserialize<'de> for MessageType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "template" => Ok(Self::Template),
            other => MediaKind::parse(other)
                .map(|k| match k {
                    MediaKind::Image => Self::Image,
                    MediaKind::Audio => Self::Audio,
                    MediaKind::Video => Self::Video,
                    MediaKind::Document => Self::Document,
                })
                .ok_or_else(|| serde::de::Error::custom("must be text, template, image, audio, video or document")),
        }
    }
}

/// Seed 004 clients send every field of the seed's body on every message, with `0`, `""` or
/// `null` for the ones that do not apply: those mean "none".
fn blank_is_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.trim().is_empty()))
}

/// `documentType` as seed 004 sends it: `"IMAGE"`, `"image"`, `""`/`null` for none.
fn document_type<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MediaKind>, D::Error> {
    match blank_is_none(d)? {
        None => Ok(None),
        Some(s) => MediaKind::parse(s.trim())
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom("must be IMAGE, AUDIO, VIDEO or DOCUMENT")),
    }
}

/// The attachment id of a relative `/media/{attachmentId}` path (query ignored).
fn own_media_path(url: &str) -> Option<i64> {
    let path = url.trim().split(['?', '#']).next()?;
    path.strip_prefix("/media/")?.trim_end_matches('/').parse().ok().filter(|id| *id > 0)
}

/// The body of `POST /message`: CONTRACT §3's fields plus seed 004's (`mediaUrl`,
/// `documentType`). Other seed fields (`direction`, `companyName`) are ignored, as is any
/// unknown field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SendBody {
    /// A customer's user id: their conversation on the default channel (opened if needed).
    pub to: Option<FlexId>,
    pub conversation_id: Option<FlexId>,
    /// The text, or a media message's caption.
    pub text: Option<String>,
    /// Case-insensitive. Default: `template` with `templateId`, media with an attachment or
    /// `mediaUrl`, else `text`.
    #[serde(rename = "type")]
    pub kind: Option<MessageType>,
    /// An uploaded attachment (`POST /media/save`); `0` or `null` means none.
    pub attachment_id: Option<FlexId>,
    /// Seed 004: an https link to the media, which the server downloads under the rules of
    /// uploads (CONTRACT §7), or the relative path `/media/{attachmentId}` of an upload;
    /// `""` or `null` means none.
    #[serde(default, deserialize_with = "blank_is_none")]
    pub media_url: Option<String>,
    /// Seed 004: the media kind the sender means (`IMAGE`, `AUDIO`, `VIDEO`, `DOCUMENT`, any
    /// case); the attachment's sniffed kind must match it (422 `media_kind_mismatch`).
    #[serde(default, deserialize_with = "document_type")]
    #[schema(value_type = Option<String>)]
    pub document_type: Option<MediaKind>,
    pub template_id: Option<FlexId>,
    pub params: Option<Vec<String>>,
    /// Makes a retry safe: the same agent sending the same clientId gets the same message.
    pub client_id: Option<String>,
    /// A private note (text only): shown to the company's agents, never sent to the customer,
    /// `DELIVERED` at once, allowed outside the 24-hour window; `@FirstName` mentions notify
    /// those agents (`mention` event, `GET /mentions`).
    pub private: Option<bool>,
    /// Schedules the send (issue 22): RFC 3339, in the future, at most a year ahead. The
    /// message is `SCHEDULED` until then, `DELETE /message/{messageId}` cancels it, and at
    /// that time it goes out once (on one node, also after a restart).
    #[serde(default, deserialize_with = "blank_is_none")]
    pub send_at: Option<String>,
    /// With `sendAt` and text: the template (its `params` are this body's `params`) sent
    /// instead if the 24-hour window has closed by `sendAt`; without one such a send becomes
    /// `FAILED` with `errorCode` `window_closed`. `0` or `null` means none.
    pub fallback_template_id: Option<FlexId>,
}

impl SendBody {
    fn into_request(self) -> ApiResult<SendRequest> {
        let target = match (self.conversation_id, self.to) {
            (Some(id), _) => Target::Conversation(id.0),
            (None, Some(to)) => Target::Customer { user_id: to.0, channel_id: None },
            (None, None) => return Err(ApiError::field("conversationId", "give conversationId or to")),
        };
        let mut attachment_id = self.attachment_id.filter(|id| id.0 != 0);
        let mut media_url = self.media_url;
        // Seed 004 calls `mediaUrl` a "relative url of the media file": a path to one of the
        // company's own attachments (`/media/{attachmentId}`, as `POST /media/save` stores
        // them) names that attachment; any other link is downloaded.
        if let Some(id) = media_url.as_deref().and_then(own_media_path) {
            if attachment_id.is_some_and(|a| a.0 != id) {
                return Err(ApiError::field("mediaUrl", "names another attachment than attachmentId"));
            }
            attachment_id = Some(FlexId(id));
            media_url = None;
        }
        if attachment_id.is_some() && media_url.is_some() {
            return Err(ApiError::field("mediaUrl", "give attachmentId or mediaUrl, not both"));
        }
        let has_media = attachment_id.is_some() || media_url.is_some();
        let declared = match (self.kind.and_then(MessageType::media_kind), self.document_type) {
            (Some(a), Some(b)) if a != b => {
                return Err(ApiError::field("documentType", "does not match the message type"));
            }
            (a, b) => a.or(b),
        };
        // A seed client sends `type: "TEXT"` with every message; an attachment or link it
        // sends along makes it a media message (the text is its caption), never dropped.
        let kind = match self.kind {
            Some(MessageType::Text) | None if has_media => MessageType::Document,
            Some(k) => k,
            None if self.template_id.is_some() => MessageType::Template,
            None => MessageType::Text,
        };
        let params = self.params.unwrap_or_default();
        let schedule = service::schedule(self.send_at.as_deref(), self.fallback_template_id.map(|id| id.0), &params)?;
        let content = match kind {
            MessageType::Text => Content::Text(self.text.ok_or_else(|| ApiError::field("text", "is required"))?),
            MessageType::Template => Content::Template {
                template_id: self.template_id.ok_or_else(|| ApiError::field("templateId", "is required"))?.0,
                params,
            },
            MessageType::Image | MessageType::Audio | MessageType::Video | MessageType::Document => {
                let caption = self.text.filter(|t| !t.trim().is_empty());
                match (attachment_id, media_url) {
                    (Some(id), _) => Content::Media { attachment_ids: vec![id.0], kind: declared, caption },
                    (None, Some(url)) => Content::MediaUrl { url, kind: declared, caption },
                    (None, None) => return Err(ApiError::field("attachmentId", "is required (or mediaUrl)")),
                }
            }
        };
        Ok(SendRequest { target, content, client_id: self.client_id, private: self.private.unwrap_or(false), schedule })
    }
}

/// Sends a message (CONTRACT §3): 201 with the new message (`PENDING`), or 200 with the
/// earlier one when this agent already sent this `clientId`. Free text and media need the
/// 24-hour window (else 422 `window_closed`); templates are always allowed. With `sendAt`
/// the message is `SCHEDULED` and goes out at that time (issue 22): the window is checked
/// then, and a closed one sends `fallbackTemplateId` or fails the message `window_closed`. Seed 004's body is
/// accepted as written (README "Seed shapes"): `type` in any case, `attachmentId: 0`, a
/// `mediaUrl` the server downloads (422 `media_url_refused`, 502 `media_fetch_failed`).
#[utoipa::path(tag = "messages", request_body = SendBody, security(("bearer" = [])),
    responses((status = 201, body = MessageView), (status = 200, body = MessageView, description = "clientId replay"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 502, body = ErrorBody)))]
#[post("/message")]
async fn post_message(agent: Agent, st: web::Data<AppState>, Json(b): Json<SendBody>) -> ApiResult<HttpResponse> {
    let sent = service::send(&st, &agent, b.into_request()?).await?;
    let mut res = if sent.created { HttpResponse::Created() } else { HttpResponse::Ok() };
    Ok(res.json(sent.message))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct EditBody {
    /// The new text (1 to 4096 characters).
    pub text: String,
}

/// Edits the text of a message the caller sent (a text message or a private note) within 15
/// minutes of sending it (issue 22). WhatsApp has no edit API: the customer keeps what they
/// received, agents see the new text with `editedAt`. Emits `message.updated`.
#[utoipa::path(tag = "messages", request_body = EditBody, security(("bearer" = [])),
    responses((status = 200, body = MessageView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "`not_editable`, `message_deleted` or `edit_window_passed`")))]
#[patch("/message/{messageId}")]
async fn edit_message(
    agent: Agent,
    st: web::Data<AppState>,
    id: web::Path<String>,
    Json(b): Json<EditBody>,
) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(service::edit_message(&st, &agent, id.into_inner(), b.text).await?))
}

/// Deletes a private note, or a message that has not been handed to the provider yet (its
/// delivery is cancelled), for everyone: `deleted: true`, `content` null (issue 22). The
/// sender or an admin may; a message the worker is sending right now is 409
/// `already_sending`, one that went out is 422 `not_deletable`. Emits `message.updated`.
#[utoipa::path(tag = "messages", security(("bearer" = [])),
    responses((status = 200, body = MessageView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
#[delete("/message/{messageId}")]
async fn delete_message(agent: Agent, st: web::Data<AppState>, id: web::Path<String>) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(service::delete_message(&st, &agent, id.into_inner()).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ReactBody {
    /// One emoji; `""` (or no `emoji`) removes the caller's reaction.
    #[serde(default)]
    pub emoji: String,
}

/// The caller's reaction on a message of the company (issue 22): one per agent, replaced by
/// the next, removed by `""`; the message's `reactions` list it as `{emoji, by: agentId}`
/// (the customer's as `by: "customer"`). Emits `message.updated` when it changed. On WhatsApp
/// channels it is sent to the customer as a reaction message (outbox); Twilio has no reaction
/// API, so there it stays with the agents.
#[utoipa::path(tag = "messages", request_body = ReactBody, security(("bearer" = [])),
    responses((status = 200, body = MessageView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "`message_deleted`")))]
#[post("/message/{messageId}/reaction")]
async fn react(
    agent: Agent,
    st: web::Data<AppState>,
    id: web::Path<String>,
    Json(b): Json<ReactBody>,
) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(service::react(&st, &agent, id.into_inner(), b.emoji).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewChatBody {
    #[schema(value_type = String)]
    pub phone: Phone,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub channel_id: Option<FlexId>,
    pub template_id: FlexId,
    pub params: Option<Vec<String>>,
    pub client_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NewChatView {
    pub conversation: ConversationView,
    pub message: MessageView,
}

/// Starts a chat with a phone number by sending a template (CONTRACT §3).
#[utoipa::path(tag = "messages", request_body = NewChatBody, security(("bearer" = [])),
    responses((status = 201, body = NewChatView), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
#[post("/message/new-chat")]
async fn new_chat(agent: Agent, st: web::Data<AppState>, Json(b): Json<NewChatBody>) -> ApiResult<HttpResponse> {
    let (conversation, sent) = service::new_chat(
        &st,
        &agent,
        b.phone,
        b.first_name.unwrap_or_default(),
        b.last_name.unwrap_or_default(),
        b.channel_id.map(|c| c.0),
        b.template_id.0,
        b.params.unwrap_or_default(),
        b.client_id,
    )
    .await?;
    let mut res = if sent.created { HttpResponse::Created() } else { HttpResponse::Ok() };
    Ok(res.json(NewChatView { conversation, message: sent.message }))
}

/// Full-text search over the company's messages, newest first (CONTRACT §3).
#[utoipa::path(tag = "messages", params(PageQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<MessageView>), (status = 400, body = ErrorBody)))]
#[get("/message/message-search/{term}")]
async fn message_search(
    agent: Agent,
    st: web::Data<AppState>,
    term: web::Path<String>,
    q: web::Query<PageQuery>,
) -> ApiResult<HttpResponse> {
    let Paging { page, size: limit, offset } = q.bounds()?;
    let term = search_text("term", &term)?.ok_or_else(|| ApiError::field("term", "must not be blank"))?;
    let (total_count, data) = service::search(&st, agent.company_id, term, offset, limit).await?;
    Ok(HttpResponse::Ok().json(Page { total_count, page, limit, data }))
}

/// The private notes that @-mention the calling agent, newest first (issue 22). The same
/// items reach the agent's open sockets as `mention` events when the note is written.
#[utoipa::path(tag = "messages", params(PageQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<MentionView>), (status = 400, body = ErrorBody)))]
#[get("/mentions")]
async fn list_mentions(agent: Agent, st: web::Data<AppState>, q: web::Query<PageQuery>) -> ApiResult<HttpResponse> {
    let Paging { page, size: limit, offset } = q.bounds()?;
    let (data, total_count) = service::mentions(&st, &agent, offset, limit).await?;
    Ok(HttpResponse::Ok().json(Page { total_count, page, limit, data }))
}

/// The company's customers (CONTRACT §3).
#[utoipa::path(tag = "contacts", params(PageQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<ContactView>), (status = 400, body = ErrorBody)))]
#[get("/contact")]
async fn contacts(agent: Agent, st: web::Data<AppState>, q: web::Query<PageQuery>) -> ApiResult<HttpResponse> {
    let Paging { page, size: limit, offset } = q.bounds()?;
    let company_id = agent.company_id;
    let (total_count, data) = st.db.run(move |c| super::contacts::page(c, company_id, None, offset, limit)).await?;
    Ok(HttpResponse::Ok().json(Page { total_count, page, limit, data }))
}

/// Customers whose phone contains the digits given (CONTRACT §3).
#[utoipa::path(tag = "contacts", params(PageQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<ContactView>), (status = 400, body = ErrorBody)))]
#[get("/contact/search/{phone}")]
async fn contact_search(
    agent: Agent,
    st: web::Data<AppState>,
    phone: web::Path<String>,
    q: web::Query<PageQuery>,
) -> ApiResult<HttpResponse> {
    let Paging { page, size: limit, offset } = q.bounds()?;
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    if digits.is_empty() || digits.len() > 32 {
        return Err(ApiError::field("phone", "must contain 1 to 32 digits of the phone number"));
    }
    let company_id = agent.company_id;
    let (total_count, data) =
        st.db.run(move |c| super::contacts::page(c, company_id, Some(&digits), offset, limit)).await?;
    Ok(HttpResponse::Ok().json(Page { total_count, page, limit, data }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContactBody {
    pub user_id: FlexId,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    #[schema(value_type = Option<String>)]
    pub phone: Option<Phone>,
    #[schema(value_type = Option<String>)]
    pub email: Option<crate::core::types::Email>,
}

/// Updates a customer (CONTRACT §3). Changing the phone or e-mail of a customer who signs in
/// (password, social login or any session) is 409 `login_contact_locked`.
#[utoipa::path(tag = "contacts", request_body = ContactBody, security(("bearer" = [])),
    responses((status = 200, body = ContactView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[put("/contact")]
async fn put_contact(agent: Agent, st: web::Data<AppState>, Json(b): Json<ContactBody>) -> ApiResult<HttpResponse> {
    let company_id = agent.company_id;
    let view = st
        .db
        .write(move |c| {
            super::contacts::update(c, company_id, b.user_id.0, b.first_name, b.last_name, b.phone, b.email)
        })
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileView {
    pub user_id: i64,
    pub first_name: String,
    pub last_name: String,
    pub phone: Option<String>,
}

/// A contact's profile (CONTRACT §3).
#[utoipa::path(tag = "contacts", security(("bearer" = [])),
    responses((status = 200, body = ProfileView), (status = 404, body = ErrorBody)))]
#[get("/profile/{profileId}")]
async fn get_profile(agent: Agent, st: web::Data<AppState>, id: web::Path<i64>) -> ApiResult<HttpResponse> {
    let (company_id, id) = (agent.company_id, id.into_inner());
    let v = st
        .db
        .run(move |c| {
            let u = store::customer(c, company_id, id)?;
            store::contact_view(c, u)
        })
        .await?;
    Ok(HttpResponse::Ok().json(ProfileView {
        user_id: v.user_id,
        first_name: v.first_name,
        last_name: v.last_name,
        phone: v.phone,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileBody {
    pub user_id: FlexId,
    pub first_name: String,
    pub last_name: String,
    #[schema(value_type = String)]
    pub phone: Phone,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileUpdatedView {
    pub status: bool,
    pub message: &'static str,
}

/// Updates a contact's profile; answers with the seed's exact wording for old clients. A new
/// phone for a customer who signs in is 409 `login_contact_locked`, as at `PUT /contact`.
#[utoipa::path(tag = "contacts", request_body = ProfileBody, security(("bearer" = [])),
    responses((status = 200, body = ProfileUpdatedView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[put("/profile")]
async fn put_profile(agent: Agent, st: web::Data<AppState>, Json(b): Json<ProfileBody>) -> ApiResult<HttpResponse> {
    let company_id = agent.company_id;
    st.db
        .write(move |c| {
            super::contacts::update(
                c,
                company_id,
                b.user_id.0,
                Some(b.first_name),
                Some(b.last_name),
                Some(b.phone),
                None,
            )
        })
        .await?;
    Ok(HttpResponse::Ok().json(ProfileUpdatedView { status: true, message: "Profile Update sucessfully" }))
}
