//! The messaging operations every entry point shares: REST routes, the WebSocket `send`, and
//! provider webhooks call these and nothing else (STYLE "one feature, five files"). Each write
//! an agent can see appends an event with the conversation's next `seq` in the same
//! transaction; events are published only after commit (CONTRACT §4).

use std::collections::{HashMap, HashSet};

use diesel::Connection;

use super::{model::*, store};
use crate::core::{
    auth::session::Principal,
    db::{Batched, Db},
    error::{ApiError, ApiResult},
    realtime::{
        event::{CONVERSATION_CREATED, CONVERSATION_UPDATED, Event, MENTION, MESSAGE_UPDATED},
        hub::Bus,
    },
    state::AppState,
    types::{Phone, Role, now, rfc3339},
};

/// The error code of a scheduled send whose time came after the 24-hour window closed, with
/// no fallback template (issue 22).
pub const WINDOW_CLOSED: &str = "window_closed";

/// Where a send goes.
#[derive(Debug, Clone)]
pub enum Target {
    Conversation(i64),
    /// A customer: their conversation on the given channel or the company's default one,
    /// opened if needed (CONTRACT §3 `to`, `new-chat`).
    Customer {
        user_id: i64,
        channel_id: Option<i64>,
    },
}

#[derive(Debug, Clone)]
pub enum Content {
    Text(String),
    Template {
        template_id: i64,
        params: Vec<String>,
    },
    /// Uploaded attachments (CONTRACT §7) with an optional caption; the kind is the first
    /// attachment's, and must be `kind` when the sender named one (seed 004 `documentType`).
    Media {
        attachment_ids: Vec<i64>,
        kind: Option<MediaKind>,
        caption: Option<String>,
    },
    /// Seed 004's `mediaUrl`: downloaded and stored as an attachment
    /// ([`crate::media::service::save_remote`]), then sent as [`Content::Media`].
    MediaUrl {
        url: String,
        kind: Option<MediaKind>,
        caption: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub struct SendRequest {
    pub target: Target,
    pub content: Content,
    pub client_id: Option<String>,
    /// A private note (issue 22): text for the company's agents only. Stored `DELIVERED` at
    /// once, never queued for a provider, outside the 24-hour window rules; `@Name` mentions
    /// notify those agents.
    pub private: bool,
    /// A scheduled send (issue 22): stored `SCHEDULED`, handed to the delivery worker at its
    /// time ([`release_scheduled`]).
    pub schedule: Option<Schedule>,
}

/// When a scheduled send goes out, and what goes instead if the 24-hour window has closed by
/// then.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub send_at: chrono::NaiveDateTime,
    /// A template (id, params) sent instead of the text when the window has closed by
    /// `send_at`; without one such a send fails `window_closed`.
    pub fallback: Option<(i64, Vec<String>)>,
}

/// A time a client schedules something for (a snooze, a send): RFC 3339, at most a year ahead
/// (400 `validation_failed` naming the field otherwise).
pub fn instant(field: &str, s: &str) -> ApiResult<chrono::NaiveDateTime> {
    let t = chrono::DateTime::parse_from_rfc3339(s.trim())
        .map_err(|_| ApiError::field(field, "must be an RFC 3339 time, like 2026-12-24T09:00:00Z"))?
        .naive_utc();
    if t > now() + chrono::Duration::days(366) {
        return Err(ApiError::field(field, "must be at most a year ahead"));
    }
    Ok(t)
}

/// The schedule of a send as REST and WebSocket clients give it: `sendAt`, and
/// `fallbackTemplateId` with `params` (which are then the fallback's).
pub fn schedule(
    send_at: Option<&str>,
    fallback_template_id: Option<i64>,
    params: &[String],
) -> ApiResult<Option<Schedule>> {
    let fallback = fallback_template_id.filter(|id| *id != 0);
    match send_at.filter(|t| !t.trim().is_empty()) {
        Some(t) => {
            Ok(Some(Schedule { send_at: instant("sendAt", t)?, fallback: fallback.map(|id| (id, params.to_vec())) }))
        }
        None if fallback.is_some() => {
            Err(ApiError::field("fallbackTemplateId", "is for scheduled sends (with sendAt)"))
        }
        None => Ok(None),
    }
}

#[derive(Debug, Clone)]
pub struct Sent {
    pub message: MessageView,
    /// False when `clientId` named a message this agent already sent (no second send).
    pub created: bool,
    pub seq: i64,
}

fn publish(st: &AppState, events: Vec<Event>) {
    st.broker.publish(events);
}

/// An event for one agent's sockets only (a `mention`), published after commit.
#[derive(Debug, Clone)]
pub struct Notice {
    pub user_id: i64,
    pub event: Event,
}

/// CONTRACT §3 `POST /message` and §4 `send`: role and tenancy (the caller is staff of the
/// conversation's company), the 24-hour window for free text and media, template rendering
/// with its params checked, and idempotency by (sender, `clientId`). One transaction writes
/// the message, its `message.created` event and the delivery job (outbox); the event is
/// published after commit and the delivery worker woken.
#[tracing::instrument(skip(st, req), fields(company = agent.company_id, agent = agent.user_id))]
pub async fn send(st: &AppState, agent: &Principal, mut req: SendRequest) -> ApiResult<Sent> {
    validate(&req)?;
    // The one `clientId` rule for REST and WebSocket sends alike.
    if req.client_id.as_ref().is_some_and(|c| c.is_empty() || c.len() > 128) {
        return Err(ApiError::field("clientId", "must be 1 to 128 characters"));
    }
    let (company_id, sender_id) = (agent.company_id, agent.user_id);
    let mut fetched = None;
    if let Content::MediaUrl { url, kind, caption } = &req.content {
        // A retry of a send that already went out downloads nothing again.
        if let Some(client_id) = req.client_id.clone()
            && let Some(sent) = st
                .db
                .run(move |c| match store::message_by_client_id(c, sender_id, &client_id)? {
                    Some(m) => Ok(Some(Sent { message: store::message_view(c, &m)?, created: false, seq: m.seq })),
                    None => Ok(None),
                })
                .await?
        {
            return Ok(sent);
        }
        let row = crate::media::service::save_remote(st, agent, url).await?;
        req.content = Content::Media { attachment_ids: vec![row.id], kind: *kind, caption: caption.clone() };
        fetched = Some(row);
    }
    let sent = send_stored(st, company_id, sender_id, req).await;
    if sent.is_err()
        && let Some(row) = &fetched
    {
        crate::media::service::discard_unattached(st, row).await;
    }
    sent
}

async fn send_stored(st: &AppState, company_id: i64, sender_id: i64, req: SendRequest) -> ApiResult<Sent> {
    let client_id = req.client_id.clone();
    let (broker, wake) = (st.broker.clone(), st.outbox_wake.clone());
    let item = Write::Send(SendItem { company_id, sender_id, req });
    let attempt = st
        .db
        .write_batched(item, move |written: &mut Written| {
            let Written::Send(done) = written else { return };
            let (sent, events, notices) = &mut **done;
            if sent.created {
                broker.publish(std::mem::take(events));
                for n in std::mem::take(notices) {
                    broker.publish_bus(Bus::ToUser { user_id: n.user_id, event: n.event });
                }
                if !sent.message.private {
                    wake.notify_one();
                }
            }
        })
        .await;
    match attempt {
        Ok(Written::Send(done)) => Ok(done.0),
        Ok(Written::Delivery(..)) => Err(ApiError::Internal(anyhow::anyhow!("a send was answered as a delivery"))),
        // Two sends with one clientId raced: the unique key let one in; answer with it.
        Err(e) if client_id.is_some() && e.is_unique_violation() => {
            let client_id = client_id.unwrap_or_default();
            st.db
                .run(move |c| {
                    let m = store::message_by_client_id(c, sender_id, &client_id)?.ok_or(ApiError::NotFound)?;
                    Ok(Sent { message: store::message_view(c, &m)?, created: false, seq: m.seq })
                })
                .await
        }
        Err(e) => Err(e),
    }
}

/// A write of the messaging hot path: the group committer applies every one queued at the same
/// time in one call ([`apply_writes`]), so their messages and events are written together.
pub enum Write {
    Delivery(Delivery),
    Send(SendItem),
}

/// What a [`Write`] gave.
pub enum Written {
    Delivery(Ingested, Vec<Event>),
    Send(Box<SendOutcome>),
}

/// A verified provider webhook delivery.
pub struct Delivery {
    pub channel: ChannelRow,
    pub messages: Vec<InboundMessage>,
    pub statuses: Vec<StatusUpdate>,
}

/// An agent's send (REST `POST /message`, WebSocket `send`).
pub struct SendItem {
    pub company_id: i64,
    pub sender_id: i64,
    pub req: SendRequest,
}

impl Batched for Write {
    type Out = Written;

    fn apply(c: &mut Db, items: &[Self]) -> ApiResult<Vec<Written>> {
        apply_writes(c, items)
    }
}

/// Applies writes together: what each needs is looked up for all of them at once (known
/// provider ids, customers and conversations for the deliveries; the conversations the sends
/// name, see [`SendLookups`]; a send's `clientId` is still looked up alone), their new messages
/// go into one [`store::Stage`] (one multi-row INSERT each for messages and events), their
/// delivery jobs into one more, then each is answered.
fn apply_writes(c: &mut Db, items: &[Write]) -> ApiResult<Vec<Written>> {
    let deliveries: Vec<&Delivery> = items
        .iter()
        .filter_map(|w| match w {
            Write::Delivery(d) => Some(d),
            Write::Send(_) => None,
        })
        .collect();
    let mut keys: Vec<(i64, &str)> = deliveries
        .iter()
        .flat_map(|d| d.statuses.iter().map(|s| (d.channel.id, s.provider_message_id.as_str())))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    for (channel_id, provider_id) in keys {
        lock_pending(c, channel_id, provider_id)?;
    }
    let mut lookups = Lookups::prefetch(c, &deliveries)?;
    let mut send_lookups = SendLookups::prefetch(c, items, &lookups)?;
    let mut stage = store::Stage::default();
    let mut drafts = Vec::with_capacity(items.len());
    for item in items {
        drafts.push(match item {
            Write::Delivery(d) => Draft::Delivery(ingest_staged(c, &mut stage, &mut lookups, d)?),
            Write::Send(s) => Draft::Send(Box::new(send_staged(
                c,
                &mut stage,
                Some(&mut send_lookups),
                s.company_id,
                s.sender_id,
                &s.req,
            )?)),
        });
    }
    let created = stage.finish(c)?;
    let mut jobs = Vec::new();
    let written = drafts
        .into_iter()
        .map(|d| match d {
            Draft::Delivery((outcome, slots)) => {
                let events = slots
                    .into_iter()
                    .map(|slot| match slot {
                        Slot::Ready(e) => e,
                        Slot::Staged(at) => created[at].event.clone(),
                    })
                    .collect();
                Ok(Written::Delivery(outcome, events))
            }
            Draft::Send(draft) => Ok(Written::Send(Box::new(send_finish(c, *draft, &created, &mut jobs)?))),
        })
        .collect::<ApiResult<Vec<_>>>()?;
    insert_jobs(c, &jobs)?;
    Ok(written)
}

enum Draft {
    Delivery((Ingested, Vec<Slot>)),
    Send(Box<SendDraft>),
}

/// An event of a delivery: built already, or a staged message's `message.created`.
enum Slot {
    Ready(Event),
    Staged(usize),
}

/// What the deliveries of one group commit need, looked up once for all of them and kept up
/// to date as they are applied.
#[derive(Default)]
struct Lookups {
    /// (channel, provider message id) of messages stored or staged.
    known: HashSet<(i64, String)>,
    /// (company, sender key: BSUID or E.164) → customer.
    customers: HashMap<(i64, String), i64>,
    /// (channel, customer) → conversation.
    conversations: HashMap<(i64, i64), ConversationRow>,
}

/// What the sends of one group commit need, read once for all of them: the conversations they
/// name and, on PostgreSQL, which of their clientIds are taken.
#[derive(Default)]
struct SendLookups {
    /// (company, id) → conversation, as it was when the batch began. Conversations a delivery
    /// of the batch may change are left out and read when their send comes.
    conversations: HashMap<(i64, i64), ConversationRow>,
    /// (sender, clientId) of the sends' stored messages, as the batch began; `None`: look each
    /// up (SQLite, where a lookup costs microseconds and no round trip). A list lookup
    /// (`sender_id = $1 AND client_id = ANY($2)`) got a plan that filtered all the sender's
    /// index entries (2 ms); [`store::taken_client_ids_pg`] looks each key up in the index.
    taken: Option<HashSet<(i64, String)>>,
}

impl SendLookups {
    /// Whether `client_id` may name a stored message of `sender_id` (then it is read). The set
    /// is empty but for repeats, so the common case allocates no key.
    fn may_be_taken(this: Option<&Self>, sender_id: i64, client_id: &str) -> bool {
        this.and_then(|l| l.taken.as_ref())
            .is_none_or(|taken| !taken.is_empty() && taken.contains(&(sender_id, client_id.to_owned())))
    }

    fn prefetch(c: &mut Db, items: &[Write], deliveries: &Lookups) -> ApiResult<Self> {
        let mut l = SendLookups::default();
        let sends: Vec<&SendItem> = items
            .iter()
            .filter_map(|w| match w {
                Write::Send(s) => Some(s),
                Write::Delivery(_) => None,
            })
            .collect();
        let touched: HashSet<i64> = deliveries.conversations.values().map(|conv| conv.id).collect();
        let mut companies: Vec<i64> = sends.iter().map(|s| s.company_id).collect();
        companies.sort_unstable();
        companies.dedup();
        for company in companies {
            let mut ids: Vec<i64> = sends
                .iter()
                .filter(|s| s.company_id == company)
                .filter_map(|s| match s.req.target {
                    Target::Conversation(id) if !touched.contains(&id) => Some(id),
                    _ => None,
                })
                .collect();
            ids.sort_unstable();
            ids.dedup();
            for conv in store::conversations_by_ids(c, company, &ids)? {
                l.conversations.insert((company, conv.id), conv);
            }
        }
        if let Db::Pg(conn) = c {
            let keys: Vec<(i64, &str)> =
                sends.iter().filter_map(|s| Some((s.sender_id, s.req.client_id.as_deref()?))).collect();
            l.taken = Some(store::taken_client_ids_pg(conn, &keys)?);
        }
        Ok(l)
    }
}

impl Lookups {
    fn prefetch(c: &mut Db, deliveries: &[&Delivery]) -> ApiResult<Self> {
        let mut l = Lookups::default();
        if deliveries.iter().all(|d| d.messages.is_empty()) {
            return Ok(l);
        }
        let mut channels: Vec<&ChannelRow> = Vec::new();
        for d in deliveries {
            if !channels.iter().any(|ch| ch.id == d.channel.id) {
                channels.push(&d.channel);
            }
        }
        let of_channel = |id: i64| deliveries.iter().filter(move |d| d.channel.id == id).flat_map(|d| &d.messages);
        for ch in &channels {
            let ids: Vec<&str> = of_channel(ch.id).map(|m| m.provider_message_id.as_str()).collect();
            for id in store::known_provider_ids(c, ch.id, &ids)? {
                l.known.insert((ch.id, id));
            }
            let mut bsuids: Vec<&str> = of_channel(ch.id).filter_map(|m| m.bsuid.as_deref()).collect();
            let mut phones: Vec<&str> = of_channel(ch.id)
                .filter(|m| m.bsuid.is_none())
                .filter_map(|m| m.from.as_ref().map(Phone::as_str))
                .collect();
            for keys in [&mut bsuids, &mut phones] {
                keys.sort_unstable();
                keys.dedup();
            }
            for (key, user_id, conv) in store::customers_with_conversations(c, ch, &bsuids, &phones)? {
                l.customers.insert((ch.company_id, key), user_id);
                if let Some(conv) = conv {
                    l.conversations.insert((ch.id, user_id), conv);
                }
            }
        }
        Ok(l)
    }
}

fn validate(req: &SendRequest) -> ApiResult<()> {
    if req.private && !matches!(req.content, Content::Text(_)) {
        return Err(ApiError::field("private", "a private note is text only"));
    }
    if let Some(s) = &req.schedule {
        if req.private {
            return Err(ApiError::field("sendAt", "a private note cannot be scheduled"));
        }
        if s.send_at <= now() {
            return Err(ApiError::field("sendAt", "must be in the future"));
        }
        if s.fallback.is_some() && !matches!(req.content, Content::Text(_)) {
            return Err(ApiError::field("fallbackTemplateId", "only a scheduled text message has a fallback template"));
        }
    }
    let content = &req.content;
    let check_text = |field: &str, t: &str| {
        if t.contains('\0') {
            return Err(ApiError::field(field, "must not contain NUL characters"));
        }
        if t.chars().count() > MAX_TEXT_CHARS {
            return Err(ApiError::unprocessable(
                "text_too_long",
                format!("{field} is longer than {MAX_TEXT_CHARS} characters"),
            ));
        }
        Ok(())
    };
    match content {
        Content::Text(t) if t.trim().is_empty() => Err(ApiError::field("text", "must not be empty")),
        Content::Text(t) => check_text("text", t),
        Content::Media { attachment_ids, .. } if attachment_ids.is_empty() => {
            Err(ApiError::field("attachmentId", "a media message needs an attachment"))
        }
        Content::Media { caption: Some(c), .. } | Content::MediaUrl { caption: Some(c), .. } => check_text("text", c),
        _ => Ok(()),
    }
}

pub type SendOutcome = (Sent, Vec<Event>, Vec<Notice>);

/// [`send`] inside the caller's transaction (campaigns: the recipient's claim and its message
/// commit together). The caller publishes the events and notices after its commit and wakes
/// the worker.
pub fn send_tx(c: &mut Db, company_id: i64, sender_id: i64, req: &SendRequest) -> ApiResult<SendOutcome> {
    let mut stage = store::Stage::default();
    let draft = send_staged(c, &mut stage, None, company_id, sender_id, req)?;
    let created = stage.finish(c)?;
    let mut jobs = Vec::new();
    let outcome = send_finish(c, draft, &created, &mut jobs)?;
    insert_jobs(c, &jobs)?;
    Ok(outcome)
}

/// Checks a send and stages its message (everything of [`send_tx`] up to the write).
/// `known`: what the batch read for its sends ([`SendLookups`]); `None` reads everything here.
fn send_staged<'a>(
    c: &mut Db,
    stage: &mut store::Stage<'a>,
    mut known: Option<&mut SendLookups>,
    company_id: i64,
    sender_id: i64,
    req: &SendRequest,
) -> ApiResult<SendDraft> {
    if let Some(client_id) = &req.client_id
        && SendLookups::may_be_taken(known.as_deref(), sender_id, client_id)
        && let Some(m) = store::message_by_client_id(c, sender_id, client_id)?
    {
        let sent = Sent { message: store::message_view(c, &m)?, created: false, seq: m.seq };
        return Ok(SendDraft::Replay(Box::new((sent, Vec::new(), Vec::new()))));
    }
    let (conv, opened) = match req.target {
        Target::Conversation(id) => {
            let read = known.as_mut().and_then(|k| k.conversations.get(&(company_id, id)).cloned());
            let conv = match read {
                Some(conv) => conv,
                None => store::conversation(c, company_id, id)?,
            };
            (not_merged(conv)?, false)
        }
        Target::Customer { user_id, channel_id } => {
            store::customer(c, company_id, user_id)?;
            let channel = match channel_id {
                Some(id) => {
                    store::channel(c, company_id, id).map_err(|_| ApiError::field("channelId", "no such channel"))?
                }
                None => store::default_channel(c, company_id)?,
            };
            let (mut conv, opened) = store::find_or_create_conversation(c, company_id, channel.id, user_id)?;
            store::unmerge(c, &mut conv)?;
            // Unmerged here: a later send of the batch naming it reads it again.
            if let Some(k) = known.as_mut() {
                k.conversations.remove(&(company_id, conv.id));
            }
            (conv, opened)
        }
    };
    let t = now();
    // A private note never reaches the customer, so the window does not apply to it; a
    // scheduled send meets it at its time ([`release_scheduled`]).
    let window_open = req.private || req.schedule.is_some() || conv.window_seconds_left(t) > 0;
    let closed = || ApiError::unprocessable(WINDOW_CLOSED, "the 24-hour window is closed: send a template");
    let (kind, content, template_id, params, attachment_ids) = match &req.content {
        Content::Text(text) if req.private => ("note".to_owned(), Some(text.clone()), None, Vec::new(), Vec::new()),
        Content::Text(text) => {
            if !window_open {
                return Err(closed());
            }
            ("text".to_owned(), Some(text.clone()), None, Vec::new(), Vec::new())
        }
        Content::Template { template_id, params } => {
            let tpl = checked_template(c, company_id, "templateId", *template_id, params)?;
            (
                "template".to_owned(),
                Some(render_template(&tpl.content, params)),
                Some(tpl.id),
                params.clone(),
                Vec::new(),
            )
        }
        Content::Media { attachment_ids, kind: declared, caption } => {
            if !window_open {
                return Err(closed());
            }
            let first = crate::media::db::get(c, company_id, attachment_ids[0])
                .map_err(|_| ApiError::field("attachmentId", "no such uploaded attachment"))?;
            if let Some(declared) = declared
                && MediaKind::parse(&first.kind) != Some(*declared)
            {
                return Err(ApiError::unprocessable(
                    "media_kind_mismatch",
                    format!("the attachment is {}, not {}", first.kind, declared.as_str()),
                ));
            }
            (first.kind.to_ascii_lowercase(), caption.clone(), None, Vec::new(), attachment_ids.clone())
        }
        Content::MediaUrl { .. } => {
            return Err(ApiError::Internal(anyhow::anyhow!("a mediaUrl is downloaded before the transaction")));
        }
    };
    // A scheduled text's fallback template is checked now; its params are the message's.
    let (fallback_template_id, params) = match req.schedule.as_ref().and_then(|s| s.fallback.as_ref()) {
        Some((id, fallback_params)) => (
            Some(checked_template(c, company_id, "fallbackTemplateId", *id, fallback_params)?.id),
            fallback_params.clone(),
        ),
        None => (None, params),
    };
    let send_at = req.schedule.as_ref().map(|s| s.send_at);
    let mut events = Vec::new();
    if opened {
        events.push(conversation_event(c, &conv, CONVERSATION_CREATED)?);
    }
    let attach: Option<store::AfterInsert<'a>> = if attachment_ids.is_empty() {
        None
    } else {
        Some(Box::new(move |c: &mut Db, row: &MessageRow| {
            for (i, id) in attachment_ids.iter().enumerate() {
                crate::media::db::attach(c, company_id, *id, &row.id, i as i32)?;
            }
            Ok(attachment_ids.len())
        }))
    };
    let at = stage.push(
        &store::NewMessage {
            conversation: &conv,
            direction: Direction::Sent,
            kind: &kind,
            content: content.as_deref(),
            template_id,
            params: &params,
            status: match (req.private, send_at) {
                (true, _) => Status::Delivered,
                (false, Some(_)) => Status::Scheduled,
                (false, None) => Status::Pending,
            },
            provider_message_id: None,
            client_id: req.client_id.as_deref(),
            sender_id: Some(sender_id),
            created_at: t,
            private: req.private,
            send_at,
            fallback_template_id,
        },
        attach,
    );
    Ok(SendDraft::Staged { at, events, private: req.private, sender_id, send_at })
}

/// The company's template `id` for a send with `params` (400 naming `field` when there is no
/// such template, 422 `template_params` when the count is wrong).
fn checked_template(c: &mut Db, company_id: i64, field: &str, id: i64, params: &[String]) -> ApiResult<TemplateRow> {
    let tpl = store::template(c, company_id, id).map_err(|_| ApiError::field(field, "no such template"))?;
    if params.len() != tpl.param_count as usize {
        return Err(ApiError::unprocessable(
            "template_params",
            format!("the template takes {} params, {} given", tpl.param_count, params.len()),
        ));
    }
    Ok(tpl)
}

/// A send up to its [`store::Stage`]: answered already (a `clientId` replay), or staged.
enum SendDraft {
    Replay(Box<SendOutcome>),
    Staged {
        at: usize,
        /// `conversation.created` when the send opened the conversation.
        events: Vec<Event>,
        private: bool,
        sender_id: i64,
        /// A scheduled send's time: its job falls due then.
        send_at: Option<chrono::NaiveDateTime>,
    },
}

/// Completes a staged send once its message is stored: a private note's mentions, or the
/// delivery job (outbox), added to `jobs` for [`insert_jobs`].
fn send_finish(
    c: &mut Db,
    draft: SendDraft,
    created: &[store::Created],
    jobs: &mut Vec<SendJob>,
) -> ApiResult<SendOutcome> {
    let (at, mut events, private, sender_id, send_at) = match draft {
        SendDraft::Replay(done) => return Ok(*done),
        SendDraft::Staged { at, events, private, sender_id, send_at } => (at, events, private, sender_id, send_at),
    };
    let store::Created { row, view, event } =
        created.get(at).cloned().ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a staged send was not stored")))?;
    events.push(event);
    let mut notices = Vec::new();
    if private {
        notices = mention_notices(c, &row, sender_id)?;
    } else {
        // A scheduled send's job falls due at its time; the others' at once.
        let (kind, due) = match send_at {
            Some(due) => (SCHEDULED_SEND_JOB, due),
            None => ("send", now()),
        };
        jobs.push(SendJob {
            kind,
            message_id: row.id.clone(),
            company_id: row.company_id,
            channel_id: row.channel_id,
            due,
        });
    }
    Ok((Sent { message: view, created: true, seq: row.seq }, events, notices))
}

/// A staged send's outbox job, queued by [`insert_jobs`] with the others of its batch.
struct SendJob {
    kind: &'static str,
    message_id: String,
    company_id: i64,
    channel_id: i64,
    due: chrono::NaiveDateTime,
}

/// Queues the delivery jobs of a batch's sends (one statement for them all on PostgreSQL).
fn insert_jobs(c: &mut Db, jobs: &[SendJob]) -> ApiResult<()> {
    let new: Vec<crate::core::outbox::NewJob<'_>> = jobs
        .iter()
        .map(|j| crate::core::outbox::NewJob {
            kind: j.kind,
            ref_id: &j.message_id,
            company_id: j.company_id,
            channel_id: Some(j.channel_id),
            ordering_key: None,
        })
        .collect();
    let due: Vec<_> = new.iter().zip(jobs).map(|(job, j)| (job, j.due)).collect();
    crate::core::outbox::insert_many(c, &due)
}

/// Records the agents a private note mentions (`@Name`, the author excepted) and builds the
/// `mention` event for each one's sockets.
fn mention_notices(c: &mut Db, note: &MessageRow, by_id: i64) -> ApiResult<Vec<Notice>> {
    let text = note.content.as_deref().unwrap_or("");
    if !text.contains('@') {
        return Ok(Vec::new());
    }
    let staff = crate::users::store::active_staff_first_names(c, note.company_id)?;
    let ids: Vec<i64> = mentioned(text, &staff).into_iter().filter(|id| *id != by_id).collect();
    let created = store::insert_mentions(c, note, by_id, &ids)?;
    let by_name = staff_name(c, note.company_id, by_id)?;
    created
        .into_iter()
        .map(|(mention_id, user_id)| {
            let view = MentionView {
                mention_id,
                conversation_id: note.conversation_id,
                message_id: note.id.clone(),
                by_id,
                by_name: by_name.clone(),
                content: note.content.clone(),
                datetime: rfc3339(note.created_at),
            };
            Ok(Notice {
                user_id,
                event: Event {
                    company_id: note.company_id,
                    conversation_id: note.conversation_id,
                    seq: None,
                    event: MENTION.to_owned(),
                    data: serde_json::to_value(view).map_err(anyhow::Error::from)?,
                    origin: None,
                },
            })
        })
        .collect()
}

/// The most messages one indexing write takes ([`index_messages`]).
const INDEX_STEP: i64 = 2_000;
/// How often SQLite's full-text indexer looks for messages to index ([`spawn_indexer`]).
const INDEX_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// SQLite: adds every message committed so far to the full-text index, [`INDEX_STEP`] at a
/// time, each step one write transaction (a few a second under load). A message is not indexed
/// in the transaction that stores it: FTS5 writes an index segment per transaction, a third
/// of a one-message commit's pages (bench/README.md). No-op on PostgreSQL, whose `tsvector`
/// is written with the row.
pub async fn index_messages(st: &AppState) -> ApiResult<()> {
    if st.db.backend() != crate::core::db::Backend::Sqlite {
        return Ok(());
    }
    while st.db.run(store::unindexed_messages).await? {
        st.db.write(|c| store::index_messages(c, INDEX_STEP)).await?;
    }
    Ok(())
}

/// SQLite: runs [`index_messages`] every [`INDEX_EVERY`] until the process stops (a search
/// runs it first too, so the delay is never seen).
pub fn spawn_indexer(st: AppState) {
    if st.db.backend() != crate::core::db::Backend::Sqlite {
        return;
    }
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval(INDEX_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = index_messages(&st).await {
                tracing::warn!(error = ?e, "indexing messages for search");
            }
        }
    });
}

/// CONTRACT §3 message-search: the company's messages matching every word of `term`, newest
/// first, and how many match. The messages committed before the call are indexed first
/// ([`index_messages`]), so a message is found as soon as its ack was returned.
pub async fn search(
    st: &AppState,
    company_id: i64,
    term: String,
    offset: i64,
    limit: i64,
) -> ApiResult<(i64, Vec<MessageView>)> {
    index_messages(st).await?;
    st.db
        .run(move |c| {
            let (pks, total) = store::search_messages(c, company_id, &term, offset, limit)?;
            let rows = store::messages_by_pks(c, company_id, &pks)?;
            Ok((total, store::message_views(c, &rows)?))
        })
        .await
}

/// "First Last" of a staff member (what a mention shows as its author).
fn staff_name(c: &mut Db, company_id: i64, user_id: i64) -> ApiResult<String> {
    let u = crate::users::store::get(c, company_id, user_id)?;
    Ok(format!("{} {}", u.first_name, u.last_name).trim().to_owned())
}

/// CONTRACT §3 (issue 22) `GET /mentions`: the notes that mention this agent, newest first.
pub async fn mentions(st: &AppState, agent: &Principal, offset: i64, limit: i64) -> ApiResult<(Vec<MentionView>, i64)> {
    let (company_id, user_id) = (agent.company_id, agent.user_id);
    st.db
        .run(move |c| {
            let (rows, total) = store::mentions_page(c, company_id, user_id, offset, limit)?;
            let ids: Vec<String> = rows.iter().map(|r| r.message_id.clone()).collect();
            let notes: HashMap<String, MessageRow> =
                store::messages_by_ids(c, company_id, &ids)?.into_iter().map(|m| (m.id.clone(), m)).collect();
            let mut names: HashMap<i64, String> = HashMap::new();
            for r in &rows {
                if let std::collections::hash_map::Entry::Vacant(e) = names.entry(r.by_id) {
                    e.insert(staff_name(c, company_id, r.by_id)?);
                }
            }
            let views = rows
                .into_iter()
                .map(|r| MentionView {
                    mention_id: r.id,
                    conversation_id: r.conversation_id,
                    content: notes.get(&r.message_id).and_then(|m| m.content.clone()),
                    message_id: r.message_id,
                    by_name: names.get(&r.by_id).cloned().unwrap_or_default(),
                    by_id: r.by_id,
                    datetime: rfc3339(r.created_at),
                })
                .collect();
            Ok((views, total))
        })
        .await
}

/// A non-persisted inbox event carrying the conversation view.
fn conversation_event(c: &mut Db, conv: &ConversationRow, kind: &str) -> ApiResult<Event> {
    let fresh = store::conversation(c, conv.company_id, conv.id)?;
    let assignee = fresh.assignee_id;
    let view = conversation_views(c, &[fresh])?.remove(0);
    let event = Event {
        company_id: conv.company_id,
        conversation_id: conv.id,
        seq: None,
        event: kind.to_owned(),
        data: serde_json::to_value(view).map_err(anyhow::Error::from)?,
        origin: None,
    };
    crate::hooks::store::enqueue(c, &event, assignee)?;
    Ok(event)
}

/// A customer message from a provider, already verified and parsed (CONTRACT §6).
#[derive(Debug, Clone)]
pub struct InboundMessage {
    pub provider_message_id: String,
    /// The sender's phone; WhatsApp users with a username may come with only a BSUID.
    pub from: Option<Phone>,
    /// The sender's WhatsApp business-scoped user id (`US.1349…`), when the provider gave one.
    pub bsuid: Option<String>,
    pub name: Option<String>,
    pub text: Option<String>,
    pub media: Vec<InboundMedia>,
    pub timestamp: chrono::NaiveDateTime,
    /// Set when this is not a new message but the customer's edit or deletion of an earlier one.
    pub amends: Option<Amend>,
}

impl InboundMessage {
    /// The sender as the batch lookups key it: the BSUID when there is one, else the phone
    /// (E.164 starts with `+`, a BSUID never does). The parsers give at least one of them.
    fn sender_key(&self) -> &str {
        self.bsuid.as_deref().or(self.from.as_ref().map(Phone::as_str)).unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
pub struct InboundMedia {
    pub kind: MediaKind,
    pub provider_media_id: String,
    pub filename: String,
    pub content_type: String,
}

#[derive(Debug, Clone)]
pub struct StatusUpdate {
    pub provider_message_id: String,
    pub status: Status,
    pub error_code: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    pub created: usize,
    /// Edits and deletions of earlier customer messages applied.
    pub amended: usize,
    pub duplicates: usize,
    pub statuses_applied: usize,
    pub statuses_kept: usize,
}

/// CONTRACT §6 inbound: a whole webhook delivery is applied atomically (in a group commit
/// shared with concurrent deliveries and sends, [`crate::core::db::Pool::write_batched`]) and
/// answered only after that commit. Each message finds or creates its customer (by E.164) and
/// conversation, is stored unless its provider id is already known (retries are harmless),
/// refreshes `lastFreeMessageTime` and emits `message.created`; media arrive as pending
/// attachments with a `media_fetch` job. Statuses go through the same forward-only path as
/// [`apply_status`]. Deliveries are applied and their events published in arrival order.
#[tracing::instrument(skip_all, fields(channel = channel.id, messages = messages.len(), statuses = statuses.len()))]
pub async fn ingest(
    st: &AppState,
    channel: &ChannelRow,
    messages: Vec<InboundMessage>,
    statuses: Vec<StatusUpdate>,
) -> ApiResult<Ingested> {
    // Only media queue outbox jobs (`media_fetch`): waking the worker for text alone made it
    // take the write lock for nothing after every commit.
    let queues_jobs = messages.iter().any(|m| !m.media.is_empty());
    let delivery = Write::Delivery(Delivery { channel: channel.clone(), messages, statuses });
    let (broker, wake) = (st.broker.clone(), st.outbox_wake.clone());
    let written = st
        .db
        .write_batched(delivery, move |written: &mut Written| {
            if let Written::Delivery(outcome, events) = written {
                // A conversation opened or reopened may have queued its team's auto-assignment.
                let opened = events.iter().any(|e| e.event == CONVERSATION_CREATED || e.event == CONVERSATION_UPDATED);
                broker.publish(std::mem::take(events));
                if outcome.created > 0 && (queues_jobs || opened) {
                    wake.notify_one();
                }
            }
        })
        .await?;
    match written {
        Written::Delivery(outcome, _) => Ok(outcome),
        Written::Send(_) => Err(ApiError::Internal(anyhow::anyhow!("a delivery was answered as a send"))),
    }
}

/// Applies one delivery: new messages are staged (written by the caller's
/// [`store::Stage::flush`]); edits, revokes and statuses, which read stored messages, flush
/// the stage first.
fn ingest_staged(
    c: &mut Db,
    stage: &mut store::Stage<'_>,
    lookups: &mut Lookups,
    d: &Delivery,
) -> ApiResult<(Ingested, Vec<Slot>)> {
    let channel = &d.channel;
    let mut outcome = Ingested::default();
    let mut events = Vec::new();
    for m in &d.messages {
        if let Some(amend) = &m.amends {
            stage.flush(c)?;
            match amend_tx(c, channel, m, amend)? {
                Some(e) => {
                    events.push(Slot::Ready(e));
                    outcome.amended += 1;
                }
                None => outcome.duplicates += 1,
            }
            continue;
        }
        if !lookups.known.insert((channel.id, m.provider_message_id.clone())) {
            outcome.duplicates += 1;
            continue;
        }
        events.extend(ingest_one(c, stage, lookups, channel, m)?);
        outcome.created += 1;
    }
    if !d.statuses.is_empty() {
        stage.flush(c)?;
    }
    for s in &d.statuses {
        match apply_status_tx(c, channel, s)? {
            Some(e) => {
                outcome.statuses_applied += 1;
                events.extend(e.into_iter().map(Slot::Ready));
            }
            None => outcome.statuses_kept += 1,
        }
    }
    Ok((outcome, events))
}

fn ingest_one(
    c: &mut Db,
    stage: &mut store::Stage<'_>,
    lookups: &mut Lookups,
    channel: &ChannelRow,
    m: &InboundMessage,
) -> ApiResult<Vec<Slot>> {
    let company_id = channel.company_id;
    let customer_id = match lookups.customers.get(&(company_id, m.sender_key().to_owned())) {
        Some(id) => *id,
        None => {
            let (first, last) = split_name(m.name.as_deref().unwrap_or(""));
            let id = store::find_or_create_sender(c, company_id, m.from.as_ref(), m.bsuid.as_deref(), &first, &last)?;
            lookups.customers.insert((company_id, m.sender_key().to_owned()), id);
            id
        }
    };
    // Opting out of campaigns by keyword, as WhatsApp and Twilio advise (issue 23).
    match m.text.as_deref().map(|t| t.trim().to_ascii_uppercase()).as_deref() {
        Some("STOP" | "UNSUBSCRIBE") => crate::users::store::set_opted_out(c, customer_id, true)?,
        Some("START") => crate::users::store::set_opted_out(c, customer_id, false)?,
        _ => {}
    }
    let mut events = Vec::new();
    let mut opened = false;
    let conv = match lookups.conversations.get(&(channel.id, customer_id)) {
        Some(conv) => conv.clone(),
        None => {
            let (conv, created) = store::find_or_create_conversation(c, company_id, channel.id, customer_id)?;
            if created {
                events.push(Slot::Ready(conversation_event(c, &conv, CONVERSATION_CREATED)?));
            }
            opened = created;
            lookups.conversations.insert((channel.id, customer_id), conv.clone());
            conv
        }
    };
    // The customer writes to a conversation merged into another (issue 22): it comes back as a
    // conversation of its own; what was merged stays in the other.
    let mut conv = conv;
    if conv.merged_into.is_some() {
        store::unmerge(c, &mut conv)?;
        if let Some(cached) = lookups.conversations.get_mut(&(channel.id, customer_id)) {
            cached.merged_into = None;
        }
    }
    let kind = m.media.first().map(|a| a.kind.as_str().to_ascii_lowercase()).unwrap_or_else(|| "text".into());
    let media = m.media.clone();
    let after_insert: Option<store::AfterInsert<'_>> = if media.is_empty() {
        None
    } else {
        Some(Box::new(move |c: &mut Db, row: &MessageRow| {
            for (i, media) in media.iter().enumerate() {
                let id = crate::media::db::insert(
                    c,
                    &crate::media::db::NewAttachment {
                        company_id,
                        message_id: Some(&row.id),
                        ord: Some(i as i32),
                        kind: media.kind.as_str(),
                        filename: &media.filename,
                        filesize: 0,
                        content_type: &media.content_type,
                        sha256: None,
                        storage_key: None,
                        state: crate::media::db::PENDING,
                        provider_media_id: Some(&media.provider_media_id),
                        uploaded_by: None,
                        created_at: now(),
                    },
                )?
                .id;
                store::enqueue(c, "media_fetch", &id.to_string(), company_id, Some(row.channel_id))?;
            }
            Ok(media.len())
        }))
    };
    let at = stage.push(
        &store::NewMessage {
            conversation: &conv,
            direction: Direction::Received,
            kind: &kind,
            content: m.text.as_deref(),
            template_id: None,
            params: &[],
            status: Status::Delivered,
            provider_message_id: Some(&m.provider_message_id),
            client_id: None,
            sender_id: Some(customer_id),
            created_at: m.timestamp,
            private: false,
            send_at: None,
            fallback_template_id: None,
        },
        after_insert,
    );
    events.push(Slot::Staged(at));
    // The message reopened a snoozed, pending or resolved conversation (issue 22): written now,
    // so that `conversation.updated` follows it with the next seq and shows it open.
    if conv.status != ConversationStatus::Open.as_str() && !opened {
        stage.flush(c)?;
        let reopened = store::conversation(c, company_id, conv.id)?;
        super::teams::queue_assignment(c, &reopened)?;
        events.extend(conversation_updated(c, company_id, conv.id)?.1.into_iter().map(Slot::Ready));
        if let Some(cached) = lookups.conversations.get_mut(&(channel.id, customer_id)) {
            cached.status = ConversationStatus::Open.as_str().to_owned();
            cached.snoozed_until = None;
        }
    }
    Ok(events)
}

fn split_name(name: &str) -> (String, String) {
    let name = name.trim();
    match name.split_once(' ') {
        Some((first, last)) => (first.to_owned(), last.trim().to_owned()),
        None => (name.to_owned(), String::new()),
    }
}

/// CONTRACT §6 statuses: forward only and idempotent per (message, status); a status for a
/// message not known yet is kept and applied when the message's provider id is recorded.
pub async fn apply_status(st: &AppState, channel: &ChannelRow, update: StatusUpdate) -> ApiResult<bool> {
    let channel = channel.clone();
    let events = st
        .db
        .write(move |c| {
            lock_pending(c, channel.id, &update.provider_message_id)?;
            apply_status_tx(c, &channel, &update)
        })
        .await?;
    let applied = events.is_some();
    publish(st, events.unwrap_or_default());
    Ok(applied)
}

/// Serialises a status for a provider id with the delivery worker's record of that id
/// ([`record_sent_tx`]): a status that finds no message is kept in `pending_statuses`, and the
/// record takes what is kept there; without the lock, on PostgreSQL, a status whose lookup ran
/// before the record committed, and whose keeping committed after the record's take, stayed
/// kept for ever and the message never moved past `SENT` (found by `reliability_crash`). The
/// lock (`pg_advisory_xact_lock`; nothing on SQLite, whose writers run one at a time) is taken
/// before the transaction touches a message, event or conversation row, all of a group
/// commit's in one order, so it cannot take part in a deadlock.
fn lock_pending(c: &mut Db, channel_id: i64, provider_id: &str) -> ApiResult<()> {
    crate::core::db::dialect::lock_key(c, &format!("pending_status:{channel_id}:{provider_id}"))
}

/// `None` when kept for later (message unknown); `Some(events)` (possibly empty when the
/// status did not move the message forward) otherwise. The caller holds [`lock_pending`].
fn apply_status_tx(c: &mut Db, channel: &ChannelRow, s: &StatusUpdate) -> ApiResult<Option<Vec<Event>>> {
    match store::message_by_provider_id(c, channel.id, &s.provider_message_id)? {
        None => {
            store::keep_pending_status(c, channel.id, &s.provider_message_id, s.status, s.error_code.as_deref())?;
            Ok(None)
        }
        Some(m) => Ok(Some(advance(c, &m, s.status, s.error_code.as_deref())?)),
    }
}

/// Moves a message's status forward and appends its `message.updated` (none when the status
/// did not move it).
fn advance(c: &mut Db, m: &MessageRow, to: Status, error_code: Option<&str>) -> ApiResult<Vec<Event>> {
    match store::advance_status(c, m, to, error_code)? {
        Some(moved) => Ok(messages_updated(c, &[moved])?.into_iter().map(|(_, e)| e).collect()),
        None => Ok(Vec::new()),
    }
}

/// The delivery worker's success, in the caller's transaction. `m` is the message as the
/// worker read it before the call (only its key and channel are used). Records the provider's
/// id, moves the message to `SENT`, applies any statuses that arrived before this id was known,
/// then those the provider reported with its answer (`then`: the sandbox's `DELIVERED`), each
/// of these in its own savepoint, so one that fails leaves the send recorded. Each step
/// continues from the row its UPDATE returned (the row stays locked by the first UPDATE until
/// the commit on PostgreSQL, and a status webhook for this provider id waits on
/// [`lock_pending`]); the steps' `message.updated` events are appended together at the end.
pub fn record_sent_tx(c: &mut Db, m: &MessageRow, provider_id: &str, then: &[Status]) -> ApiResult<Vec<Event>> {
    lock_pending(c, m.channel_id, provider_id)?;
    let recorded = store::set_provider_id(c, m, provider_id)?;
    // The rows each step left, in order; the next step starts from the last one.
    let mut steps: Vec<MessageRow> = Vec::new();
    let kept = store::take_pending_statuses(c, m.channel_id, provider_id)?;
    let kept = kept.iter().filter_map(|(status, code)| Some((Status::parse(status)?, code.as_deref())));
    for (to, code) in std::iter::once((Status::Sent, None)).chain(kept) {
        steps.extend(store::advance_status(c, steps.last().unwrap_or(&recorded), to, code)?);
    }
    for &to in then {
        match c.transaction(|c| store::advance_status(c, steps.last().unwrap_or(&recorded), to, None)) {
            Ok(moved) => steps.extend(moved),
            Err(e) => {
                tracing::warn!(message = %m.id, ?to, error = ?e, "recording a status the provider reported with its answer")
            }
        }
    }
    Ok(messages_updated(c, &steps)?.into_iter().map(|(_, e)| e).collect())
}

/// The delivery worker's permanent failure: `FAILED` with the provider's error code.
pub fn record_failed_tx(c: &mut Db, m: &MessageRow, error_code: &str) -> ApiResult<Vec<Event>> {
    advance(c, m, Status::Failed, Some(error_code))
}

pub fn publish_events(st: &AppState, events: Vec<Event>) {
    publish(st, events);
}

/// Issue 22 `PATCH /message/{id}`: an agent edits the text of a message they sent (a text
/// message or a private note, not deleted) within [`EDIT_WINDOW`] of sending it. WhatsApp has
/// no edit API, so the customer keeps what they received; agents see the new text with
/// `editedAt`. Emits `message.updated` with the conversation's next `seq`.
#[tracing::instrument(skip(st, text), fields(company = agent.company_id, agent = agent.user_id))]
pub async fn edit_message(
    st: &AppState,
    agent: &Principal,
    message_id: String,
    text: String,
) -> ApiResult<MessageView> {
    validate(&SendRequest {
        target: Target::Conversation(0),
        content: Content::Text(text.clone()),
        client_id: None,
        private: false,
        schedule: None,
    })?;
    let (company_id, user_id) = (agent.company_id, agent.user_id);
    let (view, events) = st
        .db
        .write(move |c| {
            let m = store::message(c, company_id, &message_id)?;
            if m.direction != Direction::Sent.as_str() || m.sender_id != Some(user_id) {
                return Err(ApiError::unprocessable("not_editable", "only the agent who sent a message can edit it"));
            }
            if m.deleted_at.is_some() {
                return Err(ApiError::unprocessable("message_deleted", "the message was deleted"));
            }
            if m.kind != "text" && m.kind != "note" {
                return Err(ApiError::unprocessable("not_editable", "only text messages and notes can be edited"));
            }
            if now() - m.created_at > EDIT_WINDOW {
                return Err(ApiError::unprocessable("edit_window_passed", "messages can be edited for 15 minutes"));
            }
            if m.content.as_deref() == Some(text.as_str()) {
                return Ok((store::message_view(c, &m)?, Vec::new()));
            }
            let edited = store::set_text(c, &m, &text)?;
            message_updated(c, &edited)
        })
        .await?;
    publish(st, events);
    Ok(view)
}

/// Issue 22 `DELETE /message/{id}`: the sender (or an admin) deletes a private note, or a
/// message that has not gone out yet (its send job is cancelled, as is a scheduled send's
/// before its time; one a worker is sending right now is 409 `already_sending`). What reached the customer cannot be taken back
/// (422 `not_deletable`). The content is emptied for everyone; `message.updated`. Deleting a
/// deleted message answers it again, without a new event.
#[tracing::instrument(skip(st), fields(company = agent.company_id, agent = agent.user_id))]
pub async fn delete_message(st: &AppState, agent: &Principal, message_id: String) -> ApiResult<MessageView> {
    let (company_id, user_id, admin) = (agent.company_id, agent.user_id, agent.role == Role::Admin);
    let (view, events) = st
        .db
        .write(move |c| {
            let m = store::message(c, company_id, &message_id)?;
            if m.deleted_at.is_some() {
                return Ok((store::message_view(c, &m)?, Vec::new()));
            }
            if m.direction != Direction::Sent.as_str() || !(m.sender_id == Some(user_id) || admin) {
                return Err(ApiError::unprocessable(
                    "not_deletable",
                    "only the agent who wrote a message (or an admin) can delete it",
                ));
            }
            let unsent = m.provider_message_id.is_none()
                && (m.status == Status::Pending.as_str() || m.status == Status::Scheduled.as_str());
            if !m.is_private && !unsent {
                return Err(ApiError::unprocessable(
                    "not_deletable",
                    "the message has reached the provider; only private notes and unsent messages can be deleted",
                ));
            }
            if !m.is_private && !store::cancel_send(c, &m.id)? {
                return Err(ApiError::conflict("already_sending", "the message is being sent right now"));
            }
            let deleted = store::mark_deleted(c, &m)?;
            message_updated(c, &deleted)
        })
        .await?;
    publish(st, events);
    Ok(view)
}

/// Issue 22 `POST /message/{id}/reaction`: the agent's reaction on a message of the company
/// (one per agent; an empty emoji removes it), `message.updated` when it changed. On a message
/// that reached or came from the customer it is also sent to the provider by a
/// [`REACTION_JOB`] (WhatsApp; Twilio has no reaction API, so there it stays with the agents).
#[tracing::instrument(skip(st), fields(company = agent.company_id, agent = agent.user_id))]
pub async fn react(st: &AppState, agent: &Principal, message_id: String, emoji: String) -> ApiResult<MessageView> {
    let emoji = emoji.trim().to_owned();
    if emoji.chars().count() > 16 || emoji.chars().any(|ch| ch.is_ascii_alphanumeric() || ch.is_control()) {
        return Err(ApiError::field("emoji", "must be one emoji (or empty to remove the reaction)"));
    }
    let (company_id, user_id) = (agent.company_id, agent.user_id);
    let (view, events, queued) = st
        .db
        .write(move |c| {
            let m = store::message(c, company_id, &message_id)?;
            if m.deleted_at.is_some() {
                return Err(ApiError::unprocessable("message_deleted", "the message was deleted"));
            }
            if !store::set_reaction(c, &m, user_id, false, &emoji)? {
                return Ok((store::message_view(c, &m)?, Vec::new(), false));
            }
            let queued = !m.is_private;
            if queued {
                let job = crate::core::outbox::NewJob {
                    kind: REACTION_JOB,
                    ref_id: &format!("{}:{user_id}", m.id),
                    company_id,
                    channel_id: Some(m.channel_id),
                    ordering_key: None,
                };
                crate::core::outbox::insert(c, &job)?;
            }
            let (view, events) = message_updated(c, &m)?;
            Ok((view, events, queued))
        })
        .await?;
    publish(st, events);
    if queued {
        st.outbox_wake.notify_one();
    }
    Ok(view)
}

/// Appends `message.updated` with the message's view; returns the view and the event.
fn message_updated(c: &mut Db, m: &MessageRow) -> ApiResult<(MessageView, Vec<Event>)> {
    let (view, event) = messages_updated(c, std::slice::from_ref(m))?.remove(0);
    Ok((view, vec![event]))
}

/// A `message.updated` for each of `rows` (one conversation's messages as they now are), in
/// order, with their views: one conversation read, one lookup of attachments and reactions,
/// one seq bump and one event INSERT for them all.
fn messages_updated(c: &mut Db, rows: &[MessageRow]) -> ApiResult<Vec<(MessageView, Event)>> {
    let Some(first) = rows.first() else { return Ok(Vec::new()) };
    let conv = store::conversation(c, first.company_id, first.conversation_id)?;
    let views = store::message_views(c, rows)?;
    let data = views.iter().map(serde_json::to_value).collect::<Result<Vec<_>, _>>().map_err(anyhow::Error::from)?;
    let events = store::append_events(c, &conv, MESSAGE_UPDATED, data)?;
    Ok(views.into_iter().zip(events).collect())
}

/// A customer's change to a message they sent earlier (WhatsApp `edit` / `revoke` notices,
/// issue 22), naming the original by its provider id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Amend {
    /// The new text is the notice's `text`.
    Edit(String),
    Revoke(String),
    /// The customer's reaction on the message with this provider id: the emoji is the
    /// notice's `text` (none or empty: the reaction is removed).
    React(String),
}

/// Applies an edit or revoke notice to the customer's stored message: `None` when the
/// original is unknown or the notice changes nothing (a retried delivery).
fn amend_tx(c: &mut Db, channel: &ChannelRow, m: &InboundMessage, amend: &Amend) -> ApiResult<Option<Event>> {
    let original_id = match amend {
        Amend::Edit(id) | Amend::Revoke(id) | Amend::React(id) => id,
    };
    let Some(original) = store::message_by_provider_id(c, channel.id, original_id)? else { return Ok(None) };
    if let Amend::React(_) = amend {
        // On any message of the conversation (mostly the agents'), by its customer.
        if original.deleted_at.is_some() {
            return Ok(None);
        }
        let customer_id = store::conversation(c, original.company_id, original.conversation_id)?.customer_id;
        let emoji = m.text.as_deref().unwrap_or("").trim();
        if !store::set_reaction(c, &original, customer_id, true, emoji)? {
            return Ok(None);
        }
        return Ok(message_updated(c, &original)?.1.pop());
    }
    if original.direction != Direction::Received.as_str() || original.deleted_at.is_some() {
        return Ok(None);
    }
    let changed = match amend {
        Amend::Edit(_) => {
            let text = m.text.clone().unwrap_or_default();
            if original.content.as_deref() == Some(text.as_str()) {
                return Ok(None);
            }
            store::set_text(c, &original, &text)?
        }
        Amend::Revoke(_) => store::mark_deleted(c, &original)?,
        Amend::React(_) => return Ok(None),
    };
    Ok(message_updated(c, &changed)?.1.pop())
}

/// What an agent may change on a conversation (CONTRACT §3 `PATCH /conversation/{id}`).
#[derive(Debug, Clone, Default)]
pub struct ConversationPatch {
    pub status: Option<ConversationStatus>,
    /// With `status: snoozed` (or on a snoozed conversation): when it reopens by itself
    /// (issue 22). `status: snoozed` without it snoozes until the customer's next message.
    pub snoozed_until: Option<chrono::NaiveDateTime>,
    /// `Some(None)` unassigns.
    pub assignee_id: Option<Option<i64>>,
    pub labels: Option<Vec<String>>,
    /// `Some(None)` takes the conversation out of its team (issue 22).
    pub team_id: Option<Option<i64>>,
}

/// The outbox job that reopens a snoozed conversation when its time comes (issue 22).
pub const UNSNOOZE_JOB: &str = "unsnooze";

/// Applies a patch and emits `conversation.updated` (only when something changed). Snoozing
/// with a time queues an [`UNSNOOZE_JOB`] due then ([`reopen_snoozed`]).
pub async fn update_conversation(
    st: &AppState,
    agent: &Principal,
    id: i64,
    patch: ConversationPatch,
) -> ApiResult<ConversationView> {
    let company_id = agent.company_id;
    let (view, events) = st
        .db
        .write(move |c| {
            let conv = not_merged(store::conversation(c, company_id, id)?)?;
            if let Some(Some(assignee)) = patch.assignee_id {
                let staff = crate::users::store::get(c, company_id, assignee)
                    .map_err(|_| ApiError::field("assigneeId", "no such agent in this company"))?;
                if !staff.role().works_conversations() || !staff.is_active() {
                    return Err(ApiError::field("assigneeId", "no such agent in this company"));
                }
            }
            if let Some(Some(team)) = patch.team_id {
                super::teams::named(c, company_id, team)?;
            }
            let status = patch.status.map(ConversationStatus::as_str).unwrap_or(&conv.status).to_owned();
            let snoozed = status == ConversationStatus::Snoozed.as_str();
            if patch.snoozed_until.is_some() && !snoozed {
                return Err(ApiError::field("snoozedUntil", "is only for status snoozed"));
            }
            let snoozed_until = match (snoozed, patch.snoozed_until) {
                (false, _) => None,
                (true, Some(t)) => Some(t),
                // `status: snoozed` without a time: until the customer writes.
                (true, None) if patch.status.is_some() => None,
                (true, None) => conv.snoozed_until,
            };
            let assignee = patch.assignee_id.unwrap_or(conv.assignee_id);
            let team = patch.team_id.unwrap_or(conv.team_id);
            let labels = match &patch.labels {
                Some(l) => {
                    let mut l: Vec<String> = l.iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
                    l.sort();
                    l.dedup();
                    serde_json::to_string(&l).map_err(anyhow::Error::from)?
                }
                None => conv.labels.clone(),
            };
            let changed = status != conv.status
                || snoozed_until != conv.snoozed_until
                || assignee != conv.assignee_id
                || team != conv.team_id
                || labels != conv.labels;
            if !changed {
                return Ok((conversation_views(c, &[conv])?.remove(0), Vec::new()));
            }
            let fields = store::ConversationFields {
                status: &status,
                snoozed_until,
                assignee_id: assignee,
                team_id: team,
                labels: &labels,
            };
            store::update_conversation(c, conv.id, &fields)?;
            // Opening (or reopening), or moving to a team, without an assignee: the team's
            // auto-assignment takes it (issue 22).
            let open = ConversationStatus::Open.as_str();
            if status == open && (conv.status != open || team != conv.team_id) {
                let now_open = store::conversation(c, company_id, conv.id)?;
                super::teams::queue_assignment(c, &now_open)?;
            }
            if let Some(due) = snoozed_until.filter(|_| snoozed_until != conv.snoozed_until) {
                let job = crate::core::outbox::NewJob {
                    kind: UNSNOOZE_JOB,
                    ref_id: &conv.id.to_string(),
                    company_id,
                    channel_id: None,
                    ordering_key: None,
                };
                crate::core::outbox::insert_due(c, &job, due)?;
            }
            conversation_updated(c, company_id, conv.id)
        })
        .await?;
    publish(st, events);
    if view.snoozed_until.is_some() || view.team_id.is_some() {
        st.outbox_wake.notify_one();
    }
    Ok(view)
}

/// Runs an [`UNSNOOZE_JOB`]: reopens the conversation if it is still snoozed and its time has
/// come. The claim is the UPDATE `… WHERE status = 'snoozed' AND snoozed_until <= now`, in
/// the transaction that finishes the job under its lease and appends `conversation.updated`,
/// so it happens exactly once, on whichever node holds the job. A job left over from an
/// earlier snooze (snoozed again for later, reopened by a customer message or by hand)
/// changes nothing.
pub async fn reopen_snoozed(st: &AppState, owner: &str, job: &crate::core::outbox::Job) -> ApiResult<()> {
    let (job_id, company_id, owner) = (job.id, job.company_id, owner.to_owned());
    let conv_id = job.ref_id.parse::<i64>().ok();
    let events = st
        .db
        .write(move |c| {
            crate::core::outbox::finish(c, job_id, &owner, None)?;
            let Some(id) = conv_id else { return Ok(Vec::new()) };
            if !store::reopen_if_due(c, company_id, id)? {
                return Ok(Vec::new());
            }
            let reopened = store::conversation(c, company_id, id)?;
            super::teams::queue_assignment(c, &reopened)?;
            Ok(conversation_updated(c, company_id, id)?.1)
        })
        .await?;
    publish(st, events);
    Ok(())
}

/// Issue 22 `POST /conversation/{id}/merge`: moves every message of the conversation
/// `source_id` into `into_id`, another conversation of the same customer (on another channel).
/// Each moved message becomes the target's next event (`message.created` with the target's
/// next `seq`, the messages in time order), then the target's `conversation.updated` (its
/// counts, last message, both conversations' labels); the source becomes `resolved` with
/// `mergedInto` (its own `conversation.updated`) and its message list answers from the target.
/// Conversations merged into the source before now point at the target. Refused: the same
/// conversation (422 `same_conversation`), another customer's (422 `different_customer`), a
/// source or target already merged (409 `already_merged`); a target that is not the company's
/// is 400 on `intoConversationId`. One transaction.
#[tracing::instrument(skip(st), fields(company = agent.company_id, agent = agent.user_id))]
pub async fn merge_conversations(
    st: &AppState,
    agent: &Principal,
    source_id: i64,
    into_id: i64,
) -> ApiResult<ConversationView> {
    let company_id = agent.company_id;
    let (view, events) = st.db.write(move |c| merge_tx(c, company_id, source_id, into_id)).await?;
    publish(st, events);
    Ok(view)
}

fn merge_tx(c: &mut Db, company_id: i64, source_id: i64, into_id: i64) -> ApiResult<(ConversationView, Vec<Event>)> {
    store::conversation(c, company_id, source_id)?;
    if source_id == into_id {
        return Err(ApiError::unprocessable("same_conversation", "a conversation cannot be merged into itself"));
    }
    store::conversation(c, company_id, into_id)
        .map_err(|_| ApiError::field("intoConversationId", "no such conversation in this company"))?;
    // Both rows locked, in id order, before they are read for the merge: two merges, or a
    // merge and another writer, cannot interleave on PostgreSQL (SQLite has one writer).
    for id in [source_id.min(into_id), source_id.max(into_id)] {
        store::lock_conversation(c, id)?;
    }
    let source = store::conversation(c, company_id, source_id)?;
    let target = store::conversation(c, company_id, into_id)?;
    if source.merged_into.is_some() || target.merged_into.is_some() {
        return Err(ApiError::conflict("already_merged", "the conversation was merged into another one"));
    }
    if source.customer_id != target.customer_id {
        return Err(ApiError::unprocessable(
            "different_customer",
            "only conversations of the same customer can be merged",
        ));
    }
    let mut events = Vec::new();
    let moved = store::messages_in_time_order(c, source.id)?;
    for m in &moved {
        events.push(store::move_message(c, m, &target)?);
    }
    store::absorb_counters(c, &source, &target, moved.len() as i64)?;
    events.extend(conversation_updated(c, company_id, target.id)?.1);
    store::mark_merged(c, source.id, target.id)?;
    events.extend(conversation_updated(c, company_id, source.id)?.1);
    // Earlier merges into the source now lead straight to the target.
    for id in store::redirect_merged(c, company_id, source.id, target.id)? {
        events.extend(conversation_updated(c, company_id, id)?.1);
    }
    let merged = store::conversation(c, company_id, target.id)?;
    let view = conversation_views(c, &[merged])?.remove(0);
    Ok((view, events))
}

/// A merged conversation takes no sends or changes: 409 `conversation_merged` naming where its
/// messages went.
fn not_merged(conv: ConversationRow) -> ApiResult<ConversationRow> {
    match conv.merged_into {
        Some(into) => Err(ApiError::conflict(
            "conversation_merged",
            format!("the conversation was merged into conversation {into}"),
        )),
        None => Ok(conv),
    }
}

/// Runs a [`SCHEDULED_SEND_JOB`] (issue 22): at its time a scheduled message is handed to the
/// delivery worker (`PENDING` and a `send` job) while the 24-hour window is open (or it is a
/// template); once the window has closed it goes as its fallback template instead, or fails
/// `window_closed`. One `message.updated` with the conversation's next `seq` says which. The
/// job is finished under its lease in the same transaction, and the move from `SCHEDULED` is
/// a compare-and-set on the status, so it happens once, on whichever node holds the job, also
/// after a restart; a message deleted (cancelled) meanwhile is left alone.
pub async fn release_scheduled(st: &AppState, owner: &str, job: &crate::core::outbox::Job) -> ApiResult<()> {
    let (job_id, company_id, owner, message_id) = (job.id, job.company_id, owner.to_owned(), job.ref_id.clone());
    let (events, queued) = st
        .db
        .write(move |c| {
            crate::core::outbox::finish(c, job_id, &owner, None)?;
            let m = match store::message(c, company_id, &message_id) {
                Ok(m) => m,
                Err(ApiError::NotFound) => return Ok((Vec::new(), false)),
                Err(e) => return Err(e),
            };
            if m.status != Status::Scheduled.as_str() || m.deleted_at.is_some() {
                return Ok((Vec::new(), false));
            }
            let conv = store::conversation(c, company_id, m.conversation_id)?;
            let moved = if m.kind == "template" || conv.window_seconds_left(now()) > 0 {
                store::advance_status(c, &m, Status::Pending, None)?
            } else if let Some(id) = m.fallback_template_id {
                let params: Vec<String> = serde_json::from_str(&m.params).unwrap_or_default();
                match checked_template(c, company_id, "fallbackTemplateId", id, &params) {
                    Ok(tpl) => store::use_template(c, &m, &tpl, &params)?,
                    // Deleted or changed since the send was scheduled.
                    Err(ApiError::Invalid(_) | ApiError::Unprocessable { .. }) => {
                        store::advance_status(c, &m, Status::Failed, Some("fallback_template_unusable"))?
                    }
                    Err(e) => return Err(e),
                }
            } else {
                store::advance_status(c, &m, Status::Failed, Some(WINDOW_CLOSED))?
            };
            let Some(moved) = moved else { return Ok((Vec::new(), false)) };
            let queued = moved.status == Status::Pending.as_str();
            if queued {
                store::enqueue(c, "send", &moved.id, company_id, Some(moved.channel_id))?;
            }
            Ok((message_updated(c, &moved)?.1, queued))
        })
        .await?;
    publish(st, events);
    if queued {
        st.outbox_wake.notify_one();
    }
    Ok(())
}

/// Unassigns every conversation of the company assigned to `user_id` (a deleted bot, issue 23:
/// its conversations go back to the humans' Unassigned list), each with `conversation.updated`;
/// the events are the caller's to publish after its commit.
pub fn unassign_all_tx(c: &mut Db, company_id: i64, user_id: i64) -> ApiResult<Vec<Event>> {
    let mut events = Vec::new();
    for id in store::unassign_conversations_of(c, company_id, user_id)? {
        events.extend(conversation_updated(c, company_id, id)?.1);
    }
    Ok(events)
}

/// Re-reads the conversation, appends `conversation.updated` with its view, and returns both.
pub(crate) fn conversation_updated(c: &mut Db, company_id: i64, id: i64) -> ApiResult<(ConversationView, Vec<Event>)> {
    let conv = store::conversation(c, company_id, id)?;
    let view = conversation_views(c, std::slice::from_ref(&conv))?.remove(0);
    let event =
        store::append_event(c, &conv, CONVERSATION_UPDATED, serde_json::to_value(&view).map_err(anyhow::Error::from)?)?;
    let view = ConversationView { last_seq: event.seq.unwrap_or(view.last_seq), ..view };
    Ok((view, vec![event]))
}

/// CONTRACT §4 `read`: the agent has seen everything up to `seq`; clears the unread count and
/// emits `conversation.updated` when it changed.
pub async fn mark_read(st: &AppState, agent: &Principal, id: i64, seq: i64) -> ApiResult<ConversationView> {
    let company_id = agent.company_id;
    let (view, events) = st
        .db
        .write(move |c| {
            let conv = store::conversation(c, company_id, id)?;
            let upto = seq.clamp(0, conv.last_seq);
            if conv.unread_count == 0 && upto <= conv.last_read_seq {
                return Ok((conversation_views(c, &[conv])?.remove(0), Vec::new()));
            }
            store::mark_read(c, conv.id, upto.max(conv.last_read_seq))?;
            conversation_updated(c, company_id, conv.id)
        })
        .await?;
    publish(st, events);
    Ok(view)
}

/// Views for conversation rows, with customers and last messages loaded in batches.
pub fn conversation_views(c: &mut Db, rows: &[ConversationRow]) -> ApiResult<Vec<ConversationView>> {
    let customer_ids: Vec<i64> = rows.iter().map(|r| r.customer_id).collect();
    let people = crate::users::store::profiles_by_id(c, &customer_ids)?;
    let phones = crate::users::store::primary_phones_by_id(c, &customer_ids)?;
    let emails = crate::users::store::primary_emails_by_id(c, &customer_ids)?;
    let last_ids: Vec<String> = rows.iter().filter_map(|r| r.last_message_id.clone()).collect();
    let last_rows = store::messages_with_ids(c, &last_ids)?;
    let last_views: HashMap<String, MessageView> =
        store::message_views(c, &last_rows)?.into_iter().map(|v| (v.message_id.clone(), v)).collect();
    Ok(rows
        .iter()
        .map(|r| {
            let (first_name, last_name, opted_out, whatsapp_user_id) =
                people.get(&r.customer_id).cloned().unwrap_or_default();
            ConversationView {
                conversation_id: r.id,
                company_id: r.company_id,
                user_id: r.customer_id,
                channel_id: r.channel_id,
                last_update_time: Some(rfc3339(r.last_update_time)),
                last_free_message_time: r.last_free_message_time.map(rfc3339),
                user: ContactView {
                    user_id: r.customer_id,
                    first_name,
                    last_name,
                    phone: phones.get(&r.customer_id).cloned(),
                    email: emails.get(&r.customer_id).cloned(),
                    opted_out,
                    whatsapp_user_id,
                },
                status: r.status.clone(),
                snoozed_until: r.snoozed_until.map(rfc3339),
                assignee_id: r.assignee_id,
                team_id: r.team_id,
                merged_into: r.merged_into,
                labels: serde_json::from_str(&r.labels).unwrap_or_default(),
                unread_count: r.unread_count,
                last_seq: r.last_seq,
                last_message: r.last_message_id.as_ref().and_then(|id| last_views.get(id).cloned()),
            }
        })
        .collect())
}

/// CONTRACT §3 `POST /message/new-chat`: finds or creates the customer by phone, opens the
/// conversation on the given (or default) channel and sends the template.
#[allow(clippy::too_many_arguments)]
pub async fn new_chat(
    st: &AppState,
    agent: &Principal,
    phone: Phone,
    first_name: String,
    last_name: String,
    channel_id: Option<i64>,
    template_id: i64,
    params: Vec<String>,
    client_id: Option<String>,
) -> ApiResult<(ConversationView, Sent)> {
    let company_id = agent.company_id;
    let user_id = st
        .db
        .write(move |c| Ok(store::find_or_create_customer(c, company_id, &phone, &first_name, &last_name, false)?.0))
        .await?;
    let target = Target::Customer { user_id, channel_id };
    let sent = send(
        st,
        agent,
        SendRequest {
            target,
            content: Content::Template { template_id, params },
            client_id,
            private: false,
            schedule: None,
        },
    )
    .await?;
    let conversation_id = sent.message.conversation_id;
    let view = st
        .db
        .run(move |c| {
            let conv = store::conversation(c, company_id, conversation_id)?;
            Ok(conversation_views(c, &[conv])?.remove(0))
        })
        .await?;
    Ok((view, sent))
}
