//! One WebSocket connection after the upgrade (issue 20). The socket was taken over from
//! actix-http after the 101 (`upgrade.rs`), so no HTTP buffers stay behind; one task per
//! connection reads client frames with a stack buffer (a partial frame is the only thing
//! kept between reads) and runs replays. Frames to the client are written by whoever has
//! them ([`Conn`]): rooms, the hub, the heartbeat, this task. Everything a connection holds
//! while idle is its [`Conn`], this task and its room and hub entries.

use std::{io, sync::Arc};

use actix_codec::Decoder;
use actix_http::ws::{Codec, Frame, ProtocolError};
use actix_web::web::Data;
use bytes::BytesMut;
use tokio::net::TcpStream;

use crate::{
    core::{
        auth::session::Principal,
        error::ApiError,
        realtime::{
            conn::{self, Closed, Conn, Replayed, Slow},
            event::{Event, TYPING},
            hub::{Bus, Connect, Disconnect, IDLE_SECS, Join, JoinInbox, Leave},
            kill,
            limit::WsSlot,
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

/// CONTRACT §4: frames over 64 KiB close with 1009.
pub const MAX_FRAME: usize = 64 * 1024;
/// Events older than this cannot be replayed: `resync_required` (CONTRACT §4).
pub const RETENTION: chrono::Duration = chrono::Duration::days(30);
const REPLAY_CHUNK: i64 = 500;
/// Bytes read from the socket per `read`, into a buffer on the stack.
const READ_CHUNK: usize = 4096;
/// Reads per wake-up at most, so that a flooding client cannot hold the worker.
const READS_PER_WAKE: usize = 16;

/// What the `/ws` handler hands to the upgrade: who connected, and their place under the
/// per-user cap (held for the connection's life).
pub struct Accepted {
    pub st: Data<AppState>,
    pub principal: Principal,
    pub slot: WsSlot,
}

struct Session {
    /// Shared, not copied: an idle connection holds a pointer, not the state.
    st: Data<AppState>,
    principal: Principal,
    conn: Arc<Conn>,
    codec: Codec,
    /// A partial client frame; empty (and unallocated) between frames.
    partial: BytesMut,
}

enum Read {
    More,
    Eof,
}

/// Serves one upgraded connection until it closes. `read` holds whatever the client sent
/// after its upgrade request.
pub async fn run(io: TcpStream, read: BytesMut, accepted: Accepted) {
    let Accepted { st, principal, slot } = accepted;
    let _ = io.set_nodelay(true);
    let key = u64::from_le_bytes(crate::core::crypto::random_bytes::<8>());
    let conn = Arc::new(Conn::new(
        key,
        principal.company_id,
        principal.user_id,
        principal.session_id.clone(),
        io,
        st.config.ws_queue_frames,
    ));
    st.hub.do_send(Connect { conn: conn.clone() });
    st.broker.presence(&principal, true);
    st.presence.opened(&principal);
    let mut session =
        Session { st, principal, conn, codec: Codec::new().max_size(MAX_FRAME), partial: BytesMut::new() };
    // Copied, not kept: `read` is a view into actix-http's 8 KiB read buffer, which would stay
    // allocated (and mostly resident) for the connection's whole life (issue 20: it was most
    // of an idle connection's bytes).
    if !read.is_empty() {
        session.partial = BytesMut::from(&read[..]);
    }
    drop(read);
    if !session.partial.is_empty() {
        session.decode();
    }
    // Boxed: the rare paths' state does not sit in every idle connection's task.
    Box::pin(session.serve()).await;
    session.st.hub.do_send(Disconnect { key });
    session.st.broker.presence(&session.principal, false);
    session.st.presence.closed(&session.principal);
    drop(slot);
}

impl Session {
    async fn serve(&mut self) {
        let conn = self.conn.clone();
        while conn.code().is_none() {
            let blocked = conn.blocked();
            tokio::select! {
                biased;
                () = conn.woken() => self.on_wake(),
                ready = conn.io().writable(), if blocked => {
                    if ready.is_err() {
                        return;
                    }
                    conn.flush();
                }
                ready = conn.io().readable() => {
                    if ready.is_err() {
                        return;
                    }
                    if let Read::Eof = self.read() {
                        return;
                    }
                }
            }
        }
        // Closing: the close frame goes out when the client takes it (a slow consumer may
        // take a while), then the client's own close frame or its end of the stream is
        // awaited; neither waits longer than the idle timeout.
        let closing = async {
            while !conn.closed_and_flushed() {
                if conn.io().writable().await.is_err() {
                    return;
                }
                conn.flush();
            }
            loop {
                if conn.io().readable().await.is_err() || !discard(&conn) {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(u64::from(IDLE_SECS)), closing).await;
    }

    fn on_wake(&mut self) {
        for (conversation_id, after, generation) in self.conn.take_fills() {
            let (st, conn) = (self.st.clone(), self.conn.clone());
            let company_id = self.principal.company_id;
            actix_web::rt::spawn(async move {
                replay(&st, &conn, company_id, conversation_id, Mode::Fill(after), generation).await;
            });
        }
    }

    fn read(&mut self) -> Read {
        let mut chunk = [0u8; READ_CHUNK];
        for _ in 0..READS_PER_WAKE {
            match self.conn.io().try_read(&mut chunk) {
                Ok(0) => return Read::Eof,
                Ok(n) => {
                    self.partial.extend_from_slice(&chunk[..n]);
                    if n < READ_CHUNK {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Read::Eof,
            }
        }
        self.conn.seen();
        self.decode();
        Read::More
    }

    fn decode(&mut self) {
        while self.conn.code().is_none() {
            match self.codec.decode(&mut self.partial) {
                Ok(Some(frame)) => self.on_frame(frame),
                Ok(None) => break,
                Err(e) => self.conn.close(close_code(&e)),
            }
        }
        if self.partial.is_empty() && self.partial.capacity() > 0 {
            self.partial = BytesMut::new();
        }
    }

    fn on_frame(&mut self, frame: Frame) {
        match frame {
            Frame::Text(text) => match protocol::client_frame(&text) {
                Ok(frame) => self.on_client_frame(frame),
                Err(e) => reply(&self.st, &self.conn, protocol::error(None, None, "invalid_frame", &e.to_string())),
            },
            Frame::Binary(_) => {
                reply(&self.st, &self.conn, protocol::error(None, None, "invalid_frame", "text frames only"))
            }
            Frame::Ping(payload) => {
                let _ = self.conn.send(conn::pong_frame(&payload));
            }
            Frame::Pong(_) | Frame::Continuation(_) => {}
            Frame::Close(_) => self.conn.close(kill::IDLE),
        }
    }

    fn on_client_frame(&mut self, frame: ClientFrame) {
        let (st, conn) = (&self.st, &self.conn);
        match frame {
            ClientFrame::Ping => reply(st, conn, protocol::pong()),
            ClientFrame::Subscribe { conversation_id, after_seq } => self.subscribe(conversation_id, after_seq),
            ClientFrame::Unsubscribe { conversation_id } => {
                if conn.unsubscribe(conversation_id) {
                    st.hub.do_send(Leave { conversation_id, key: conn.key });
                }
            }
            ClientFrame::SubscribeInbox => st.hub.do_send(JoinInbox { conn: conn.clone() }),
            ClientFrame::Typing { conversation_id, on } => {
                // Only to conversations this connection subscribed to (tenancy checked there).
                if conn.subscribed(conversation_id) {
                    st.broker.publish_bus(Bus::Event(Event {
                        company_id: self.principal.company_id,
                        conversation_id,
                        seq: None,
                        event: TYPING.into(),
                        data: serde_json::json!({"conversationId": conversation_id, "userId": self.principal.user_id, "on": on}),
                        origin: Some(conn.key),
                    }));
                } else {
                    reply(st, conn, protocol::error(None, Some(conversation_id), "not_subscribed", "subscribe first"));
                }
            }
            ClientFrame::Read { conversation_id, seq } => {
                let (st, conn, principal) = (st.clone(), conn.clone(), self.principal.clone());
                actix_web::rt::spawn(async move {
                    if let Err(e) = service::mark_read(&st, &principal, conversation_id, seq).await {
                        reply_error(&st, &conn, None, Some(conversation_id), &e);
                    }
                });
            }
            ClientFrame::Send {
                conversation_id,
                client_id,
                text,
                attachment_ids,
                template_id,
                params,
                private,
                send_at,
                fallback_template_id,
            } => {
                let schedule = match service::schedule(send_at.as_deref(), fallback_template_id, &params) {
                    Ok(s) => s,
                    Err(e) => return reply_error(st, conn, client_id.as_deref(), Some(conversation_id), &e),
                };
                let content = match (template_id, attachment_ids.is_empty()) {
                    (Some(template_id), _) => Content::Template { template_id, params },
                    (None, false) => {
                        Content::Media { attachment_ids, kind: None, caption: text.filter(|t| !t.trim().is_empty()) }
                    }
                    (None, true) => Content::Text(text.unwrap_or_default()),
                };
                let req = SendRequest {
                    target: Target::Conversation(conversation_id),
                    content,
                    client_id: client_id.clone(),
                    private,
                    schedule,
                };
                let (st, conn, principal) = (st.clone(), conn.clone(), self.principal.clone());
                // The same code path as REST `POST /message` (CONTRACT §4 `send`).
                actix_web::rt::spawn(async move {
                    match service::send(&st, &principal, req).await {
                        Ok(sent) => {
                            reply(&st, &conn, protocol::ack(client_id.as_deref(), &sent.message.message_id, sent.seq))
                        }
                        Err(e) => reply_error(&st, &conn, client_id.as_deref(), Some(conversation_id), &e),
                    }
                });
            }
        }
    }

    /// Tenancy check, then: buffer the conversation's live events, join its room, replay.
    /// Everything committed before the replay's read is in it; everything after reaches the
    /// room after the join; [`Conn`] drops what was already sent by `seq`.
    fn subscribe(&mut self, conversation_id: i64, after_seq: Option<i64>) {
        let (st, conn) = (self.st.clone(), self.conn.clone());
        if conn.unsubscribe(conversation_id) {
            st.hub.do_send(Leave { conversation_id, key: conn.key });
        }
        let company_id = self.principal.company_id;
        actix_web::rt::spawn(async move {
            let joined = async {
                st.db.run(move |c| store::conversation(c, company_id, conversation_id)).await?;
                let Some(generation) = conn.begin(conversation_id) else { return Ok(None) };
                st.hub
                    .send(Join { conversation_id, conn: conn.clone() })
                    .await
                    .map_err(|e| ApiError::Internal(e.into()))?;
                Ok::<_, ApiError>(Some(generation))
            };
            match joined.await {
                Ok(Some(generation)) => {
                    replay(&st, &conn, company_id, conversation_id, Mode::Subscribe(after_seq), generation).await
                }
                Ok(None) => {}
                Err(e) => reply_error(&st, &conn, None, Some(conversation_id), &e),
            }
        });
    }
}

/// Reads and drops what the client sends after the close; false at its end of the stream.
fn discard(conn: &Conn) -> bool {
    let mut chunk = [0u8; 512];
    loop {
        match conn.io().try_read(&mut chunk) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// A frame of the connection's own; a full queue is a slow consumer (1013).
fn reply(st: &AppState, conn: &Conn, text: String) {
    if let Err(Slow(true)) = conn.send(conn::frame(&text)) {
        st.metrics.ws_slow_closes.inc();
    }
}

fn reply_error(st: &AppState, conn: &Conn, client_id: Option<&str>, conversation_id: Option<i64>, e: &ApiError) {
    let (_, code) = e.status_and_code();
    reply(st, conn, protocol::error(client_id, conversation_id, code, &e.body().message));
}

enum Mode {
    /// After a subscribe: from `afterSeq`, or from now; ends with `subscribed`.
    Subscribe(Option<i64>),
    /// A gap among live events, after this `seq`.
    Fill(i64),
}

/// The close code for bytes the frame decoder refuses: 1009 for a frame over [`MAX_FRAME`]
/// (CONTRACT §4), 1000 for anything else that is no WebSocket.
pub fn close_code(e: &ProtocolError) -> u16 {
    match e {
        ProtocolError::Overflow => kill::TOO_BIG,
        _ => kill::IDLE,
    }
}

/// Sends the stored events a subscription or a gap needs, then lets [`Conn`] go live.
async fn replay(st: &AppState, conn: &Conn, company_id: i64, conversation_id: i64, mode: Mode, generation: u32) {
    let outcome = match mode {
        Mode::Subscribe(None) => match st.db.run(move |c| store::conversation(c, company_id, conversation_id)).await {
            Ok(conv) => Replayed::Upto(conv.last_seq),
            Err(_) => Replayed::Failed,
        },
        Mode::Subscribe(Some(after)) => {
            if replayable(st, conversation_id, after).await {
                match send_from_db(st, conn, conversation_id, after).await {
                    Ok(Some(last)) => Replayed::Upto(last),
                    Ok(None) => Replayed::Failed,
                    Err(Closed) => return,
                }
            } else if conn.send_replayed(conn::frame(&protocol::resync_required(conversation_id))).is_ok() {
                Replayed::Resync
            } else {
                return;
            }
        }
        Mode::Fill(after) => match send_from_db(st, conn, conversation_id, after).await {
            Ok(Some(last)) => Replayed::Upto(last),
            // The events that triggered the fill wait for the next event or a resume.
            Ok(None) => Replayed::Skip(after),
            Err(Closed) => return,
        },
    };
    if let (Mode::Subscribe(_), Replayed::Upto(last)) = (&mode, &outcome)
        && conn.send_replayed(conn::frame(&protocol::subscribed(conversation_id, *last))).is_err()
    {
        return;
    }
    conn.finish_replay(conversation_id, generation, outcome);
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

/// Sends every stored event after `after`, in order, a bounded step at a time; returns the
/// last seq sent (or `after`), or `None` when the database failed.
async fn send_from_db(st: &AppState, conn: &Conn, conversation_id: i64, after: i64) -> Result<Option<i64>, Closed> {
    let step = conn.replay_step();
    let mut last = after;
    loop {
        let from = last;
        let Ok(events) = st.db.run(move |c| store::events_after(c, conversation_id, from, REPLAY_CHUNK)).await else {
            return Ok(None);
        };
        let n = events.len() as i64;
        for (i, e) in events.iter().enumerate() {
            last = e.seq.unwrap_or(last);
            conn.send_replayed(conn::frame(&protocol::event_frame(e)))?;
            if (i + 1) % step == 0 {
                conn.until_drained().await?;
            }
        }
        if n < REPLAY_CHUNK {
            return Ok(Some(last));
        }
        conn.until_drained().await?;
    }
}
