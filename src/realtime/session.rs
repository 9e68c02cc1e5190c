//! One WebSocket connection: `WsSession`, an actix actor fed by the actix-ws message stream
//! (client frames, heartbeat), and its writer task, which owns the outgoing side and the
//! per-conversation resume state. Frames to the client pass through one bounded queue
//! (CONTRACT §4: 1024 frames by default); a full queue closes with 1013.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use actix::prelude::*;
use actix_ws::{CloseCode, CloseReason, Message, ProtocolError};
use bytestring::ByteString;
use tokio::sync::mpsc;

use crate::{
    core::{
        auth::session::Principal,
        error::ApiError,
        realtime::{
            event::{Event, TYPING},
            hub::{Bus, Connect, Disconnect, Hub, Join, JoinInbox, Leave, Out, Subscriber},
            kill::{self, Kill},
            protocol::{self, ClientFrame},
        },
        state::AppState,
        types::now,
    },
    messaging::{
        service::{self, Content, SendRequest, Target},
        store,
    },
};

/// CONTRACT §4: a ping every 20 s; no traffic from the client for 60 s closes.
pub const HEARTBEAT: Duration = Duration::from_secs(20);
pub const IDLE: Duration = Duration::from_secs(60);
/// CONTRACT §4: frames over 64 KiB close with 1009.
pub const MAX_FRAME: usize = 64 * 1024;
/// Events older than this cannot be replayed: `resync_required` (CONTRACT §4).
pub const RETENTION: chrono::Duration = chrono::Duration::days(30);
const REPLAY_CHUNK: i64 = 500;

pub struct WsSession {
    pub st: AppState,
    pub principal: Principal,
    pub key: u64,
    pub out: mpsc::Sender<Out>,
    pub hub: Addr<Hub>,
    pub session: actix_ws::Session,
    pub kill: Kill,
    pub last_seen: Instant,
    pub subscriptions: HashSet<i64>,
    /// This connection's place under the per-user cap, freed when the actor is dropped.
    pub slot: crate::core::realtime::limit::WsSlot,
}

impl WsSession {
    fn subscriber(&self) -> Subscriber {
        Subscriber { key: self.key, tx: self.out.clone(), kill: self.kill.clone() }
    }

    /// Queues a frame of our own; a full queue means the client is not reading (1013).
    fn reply(&self, frame: String) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.out.try_send(Out::Frame(frame)) {
            self.st.metrics.ws_slow_closes.inc();
            self.kill.fire(kill::TRY_AGAIN_LATER);
        }
    }

    fn handle_frame(&mut self, frame: ClientFrame, ctx: &mut Context<Self>) {
        match frame {
            ClientFrame::Ping => self.reply(protocol::pong()),
            ClientFrame::Subscribe { conversation_id, after_seq } => self.subscribe(conversation_id, after_seq, ctx),
            ClientFrame::Unsubscribe { conversation_id } => {
                if self.subscriptions.remove(&conversation_id) {
                    self.hub.do_send(Leave { conversation_id, key: self.key });
                    let _ = self.out.try_send(Out::Unsubscribe(conversation_id));
                }
            }
            ClientFrame::SubscribeInbox => {
                self.hub.do_send(JoinInbox { company_id: self.principal.company_id, sub: self.subscriber() });
            }
            ClientFrame::Typing { conversation_id, on } => {
                // Only to conversations this connection subscribed to (tenancy checked there).
                if self.subscriptions.contains(&conversation_id) {
                    self.st.broker.publish_bus(Bus::Event(Event {
                        company_id: self.principal.company_id,
                        conversation_id,
                        seq: None,
                        event: TYPING.into(),
                        data: serde_json::json!({"conversationId": conversation_id, "userId": self.principal.user_id, "on": on}),
                        origin: Some(self.key),
                    }));
                } else {
                    self.reply(protocol::error(None, Some(conversation_id), "not_subscribed", "subscribe first"));
                }
            }
            ClientFrame::Read { conversation_id, seq } => {
                let (st, principal) = (self.st.clone(), self.principal.clone());
                ctx.spawn(
                    async move { service::mark_read(&st, &principal, conversation_id, seq).await }
                        .into_actor(self)
                        .map(move |res, act, _| {
                            if let Err(e) = res {
                                let (_, code) = e.status_and_code();
                                act.reply(protocol::error(None, Some(conversation_id), code, &e.body().message));
                            }
                        }),
                );
            }
            ClientFrame::Send { conversation_id, client_id, text, attachment_ids, template_id, params, private } => {
                let content = match (template_id, attachment_ids.is_empty()) {
                    (Some(template_id), _) => Content::Template { template_id, params },
                    (None, false) => Content::Media { attachment_ids, caption: text.filter(|t| !t.trim().is_empty()) },
                    (None, true) => Content::Text(text.unwrap_or_default()),
                };
                let req = SendRequest {
                    target: Target::Conversation(conversation_id),
                    content,
                    client_id: client_id.clone(),
                    private,
                };
                let (st, principal) = (self.st.clone(), self.principal.clone());
                // The same code path as REST `POST /message` (CONTRACT §4 `send`).
                ctx.spawn(async move { service::send(&st, &principal, req).await }.into_actor(self).map(
                    move |res, act, _| match res {
                        Ok(sent) => act.reply(protocol::ack(client_id.as_deref(), &sent.message.message_id, sent.seq)),
                        Err(e) => {
                            let (_, code) = e.status_and_code();
                            act.reply(protocol::error(
                                client_id.as_deref(),
                                Some(conversation_id),
                                code,
                                &e.body().message,
                            ))
                        }
                    },
                ));
            }
        }
    }

    /// Tenancy check, then: tell the writer to buffer, join the room, and tell the writer to
    /// replay. Everything committed before the replay's read is in it; everything after
    /// reaches the room after the join; the writer drops what it has already sent by `seq`.
    fn subscribe(&mut self, conversation_id: i64, after_seq: Option<i64>, ctx: &mut Context<Self>) {
        if self.subscriptions.contains(&conversation_id) {
            self.hub.do_send(Leave { conversation_id, key: self.key });
            let _ = self.out.try_send(Out::Unsubscribe(conversation_id));
            self.subscriptions.remove(&conversation_id);
        }
        let (st, company_id) = (self.st.clone(), self.principal.company_id);
        let (out, hub, sub) = (self.out.clone(), self.hub.clone(), self.subscriber());
        ctx.spawn(
            async move {
                st.db.run(move |c| store::conversation(c, company_id, conversation_id)).await?;
                out.send(Out::Begin(conversation_id)).await.map_err(|_| ApiError::NotFound)?;
                hub.send(Join { conversation_id, sub }).await.map_err(|e| ApiError::Internal(e.into()))?;
                out.send(Out::Replay { conversation_id, after: after_seq }).await.map_err(|_| ApiError::NotFound)?;
                Ok::<_, ApiError>(())
            }
            .into_actor(self)
            .map(move |res, act, _| match res {
                Ok(()) => {
                    act.subscriptions.insert(conversation_id);
                }
                Err(e) => {
                    let (_, code) = e.status_and_code();
                    act.reply(protocol::error(None, Some(conversation_id), code, &e.body().message));
                }
            }),
        );
    }
}

impl Actor for WsSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        self.hub.do_send(Connect {
            key: self.key,
            session_id: self.principal.session_id.clone(),
            company_id: self.principal.company_id,
            user_id: self.principal.user_id,
            sub: self.subscriber(),
        });
        self.st.broker.presence(&self.principal, true);
        let kill = self.kill.clone();
        ctx.spawn(async move { kill.fired().await }.into_actor(self).map(|_, _, ctx| ctx.stop()));
        ctx.run_interval(HEARTBEAT, |act, ctx| {
            if act.last_seen.elapsed() > IDLE {
                act.kill.fire(kill::IDLE);
                return;
            }
            let mut session = act.session.clone();
            ctx.spawn(
                async move {
                    let _ = session.ping(b"").await;
                }
                .into_actor(act),
            );
            // Revocations on another node reach this one at most one heartbeat late.
            let (st, sid, kill) = (act.st.clone(), act.principal.session_id.clone(), act.kill.clone());
            ctx.spawn(
                async move {
                    if matches!(st.sessions.principal(&st.db, &sid).await, Ok(None)) {
                        kill.fire(kill::REVOKED);
                    }
                }
                .into_actor(act),
            );
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        // Ends the writer too (rooms may still hold its queue).
        self.kill.fire(kill::IDLE);
        self.hub.do_send(Disconnect { key: self.key });
        self.st.broker.presence(&self.principal, false);
    }
}

impl StreamHandler<Result<Message, ProtocolError>> for WsSession {
    fn handle(&mut self, msg: Result<Message, ProtocolError>, ctx: &mut Self::Context) {
        self.last_seen = Instant::now();
        match msg {
            Ok(Message::Text(text)) => match serde_json::from_str::<ClientFrame>(&text) {
                Ok(frame) => self.handle_frame(frame, ctx),
                Err(e) => self.reply(protocol::error(None, None, "invalid_frame", &e.to_string())),
            },
            Ok(Message::Ping(bytes)) => {
                let mut session = self.session.clone();
                ctx.spawn(
                    async move {
                        let _ = session.pong(&bytes).await;
                    }
                    .into_actor(self),
                );
            }
            Ok(Message::Pong(_)) | Ok(Message::Nop) => {}
            Ok(Message::Binary(_)) => self.reply(protocol::error(None, None, "invalid_frame", "text frames only")),
            Ok(Message::Continuation(_)) => {}
            Ok(Message::Close(_)) => ctx.stop(),
            Err(ProtocolError::Overflow) => self.kill.fire(kill::TOO_BIG),
            Err(_) => ctx.stop(),
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// Resume state of one subscribed conversation.
enum Sub {
    /// Between `Begin` and the end of the replay: live events wait here.
    Buffering(Vec<(Arc<Event>, ByteString)>),
    Live(i64),
}

/// The writer: the only task that writes to the socket. Owns resume state, so ordering,
/// de-duplication and gap filling live in one place.
pub async fn writer(
    st: AppState,
    mut session: actix_ws::Session,
    mut rx: mpsc::Receiver<Out>,
    kill: Kill,
    company_id: i64,
) {
    let mut subs: HashMap<i64, Sub> = HashMap::new();
    // Registered once for the connection's life, not once per frame.
    let killed = kill.fired();
    tokio::pin!(killed);
    let code = loop {
        tokio::select! {
            code = &mut killed => break code,
            msg = rx.recv() => {
                let Some(msg) = msg else { break kill.code().unwrap_or(kill::IDLE) };
                if handle_out(&st, &mut session, &mut subs, msg, company_id).await.is_err() {
                    break kill.code().unwrap_or(kill::IDLE);
                }
            }
        }
    };
    kill.fire(code);
    // The first code fired wins (a revocation racing the reader's own stop).
    let code = kill.code().unwrap_or(code);
    let reason = CloseReason { code: CloseCode::from(code), description: None };
    // A client that does not read may never take the close frame: give up after a second, the
    // connection then drops.
    let _ = tokio::time::timeout(Duration::from_secs(1), session.close(Some(reason))).await;
}

type Sent = Result<(), actix_ws::Closed>;

async fn handle_out(
    st: &AppState,
    session: &mut actix_ws::Session,
    subs: &mut HashMap<i64, Sub>,
    msg: Out,
    company_id: i64,
) -> Sent {
    match msg {
        Out::Frame(frame) => session.text(frame).await,
        Out::Begin(conversation_id) => {
            subs.insert(conversation_id, Sub::Buffering(Vec::new()));
            Ok(())
        }
        Out::Unsubscribe(conversation_id) => {
            subs.remove(&conversation_id);
            Ok(())
        }
        // Rare and large futures are boxed so that every idle connection's writer task stays small.
        Out::Replay { conversation_id, after } => {
            Box::pin(replay(st, session, subs, conversation_id, after, company_id)).await
        }
        Out::Event(event, frame) => live(st, session, subs, event, frame).await,
        Out::Inbox(event, frame) => {
            // A subscribed conversation gets its events through its room, in order, once.
            if event.seq.is_some() && subs.contains_key(&event.conversation_id) {
                return Ok(());
            }
            session.text(frame).await
        }
    }
}

async fn replay(
    st: &AppState,
    session: &mut actix_ws::Session,
    subs: &mut HashMap<i64, Sub>,
    conversation_id: i64,
    after: Option<i64>,
    company_id: i64,
) -> Sent {
    let Some(Sub::Buffering(buffer)) = subs.remove(&conversation_id) else { return Ok(()) };
    let last = match after {
        None => match st.db.run(move |c| store::conversation(c, company_id, conversation_id)).await {
            Ok(conv) => conv.last_seq,
            Err(_) => return Ok(()),
        },
        Some(after) => {
            if !replayable(st, conversation_id, after).await {
                return session.text(protocol::resync_required(conversation_id)).await;
            }
            match send_from_db(st, session, conversation_id, after).await? {
                Some(last) => last,
                None => return Ok(()),
            }
        }
    };
    session.text(protocol::subscribed(conversation_id, last)).await?;
    subs.insert(conversation_id, Sub::Live(last));
    let mut buffer = buffer;
    buffer.sort_by_key(|(e, _)| e.seq);
    for (event, frame) in buffer {
        live(st, session, subs, event, frame).await?;
    }
    Ok(())
}

/// Whether the events after `after` are all still stored and younger than the retention.
async fn replayable(st: &AppState, conversation_id: i64, after: i64) -> bool {
    let first = st.db.run(move |c| Ok(store::events_after(c, conversation_id, after, 1)?.into_iter().next())).await;
    match first {
        Ok(None) => true,
        Ok(Some(e)) => {
            let time = st.db.run(move |c| store::first_event_time_after(c, conversation_id, after)).await;
            let fresh = matches!(time, Ok(Some(t)) if t > now() - RETENTION);
            e.seq == Some(after + 1) && fresh
        }
        Err(_) => false,
    }
}

/// Sends every stored event after `after`, in order; returns the last seq sent (or `after`).
async fn send_from_db(
    st: &AppState,
    session: &mut actix_ws::Session,
    conversation_id: i64,
    after: i64,
) -> Result<Option<i64>, actix_ws::Closed> {
    let mut last = after;
    loop {
        let from = last;
        let Ok(events) = st.db.run(move |c| store::events_after(c, conversation_id, from, REPLAY_CHUNK)).await else {
            return Ok(None);
        };
        let n = events.len() as i64;
        for e in events {
            last = e.seq.unwrap_or(last);
            session.text(protocol::event_frame(&e)).await?;
        }
        if n < REPLAY_CHUNK {
            return Ok(Some(last));
        }
    }
}

/// A live event: sent when it is the next `seq`, dropped when already sent, and a gap (a
/// broker message lost or overtaken) is filled from the database first.
async fn live(
    st: &AppState,
    session: &mut actix_ws::Session,
    subs: &mut HashMap<i64, Sub>,
    event: Arc<Event>,
    frame: ByteString,
) -> Sent {
    let conversation_id = event.conversation_id;
    match subs.get_mut(&conversation_id) {
        None => Ok(()),
        Some(Sub::Buffering(buffer)) => {
            buffer.push((event, frame));
            Ok(())
        }
        Some(Sub::Live(last)) => {
            let Some(seq) = event.seq else { return session.text(frame).await };
            if seq <= *last {
                return Ok(());
            }
            if seq == *last + 1 {
                *last = seq;
                return session.text(frame).await;
            }
            let from = *last;
            if let Some(filled) = Box::pin(send_from_db(st, session, conversation_id, from)).await?
                && let Some(Sub::Live(last)) = subs.get_mut(&conversation_id)
            {
                *last = filled.max(*last);
            }
            Ok(())
        }
    }
}
