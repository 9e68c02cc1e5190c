//! One WebSocket connection's state (issue 20): a single object per connection, shared by the
//! connection's own task (`realtime::session`, which reads the socket and runs replays), the
//! rooms it joined, the hub and the heartbeat wheel.
//!
//! Frames to the client are encoded once per event (`frame`) and every subscriber gets the
//! same reference-counted bytes. Whoever hands a connection a frame writes it into the socket
//! at once (a non-blocking `writev`), with no writer task and no channel in between. Only when
//! the socket is full do frames wait here; the connection's task then writes everything that
//! waits in one `writev` as soon as the socket takes more. A connection whose waiting frames
//! reach the queue limit (`CONFAB_WS_QUEUE_FRAMES`, CONTRACT §4) is a slow consumer: 1013.
//!
//! The per-conversation resume state lives here too, so ordering, de-duplication by `seq` and
//! the hand-over from a replay to live events are decided in one place under one lock.

use std::{
    collections::VecDeque,
    io::{self, IoSlice},
    sync::{
        Mutex, MutexGuard, OnceLock,
        atomic::{AtomicU16, AtomicU32, Ordering},
    },
    time::Instant,
};

use actix_http::ws::{CloseCode, CloseReason, OpCode, Parser};
use bytes::{Bytes, BytesMut};
use tokio::{net::TcpStream, sync::Notify};

use super::kill;

/// Frames written per `writev` at most (the kernel takes up to 1024 slices).
const MAX_SLICES: usize = 64;

/// An unmasked server text frame holding `text`, ready to write to any number of sockets.
pub fn frame(text: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(text.len() + 10);
    Parser::write_message(&mut buf, text, OpCode::Text, true, false);
    buf.freeze()
}

fn control(op: OpCode, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(payload.len() + 2);
    Parser::write_message(&mut buf, payload, op, true, false);
    buf.freeze()
}

pub fn ping_frame() -> Bytes {
    control(OpCode::Ping, b"")
}

pub fn pong_frame(payload: &[u8]) -> Bytes {
    control(OpCode::Pong, payload)
}

fn close_frame(code: u16) -> Bytes {
    let mut buf = BytesMut::with_capacity(4);
    Parser::write_close(&mut buf, Some(CloseReason { code: CloseCode::from(code), description: None }), false);
    buf.freeze()
}

/// Seconds since the process's first connection: the coarse clock of `last_seen`.
pub fn clock() -> u32 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs() as u32
}

/// Resume state of one subscribed conversation.
enum Sub {
    /// A replay (after a subscribe, or to fill a gap) is running: live events wait here, and
    /// only the replay with this generation may end the wait.
    Buffering { generation: u32, buffer: Vec<(Option<i64>, Bytes)> },
    /// Live; the last `seq` sent.
    Live(i64),
    /// The client was told `resync_required`: nothing more of this conversation until it
    /// subscribes again.
    Resync,
}

#[derive(Default)]
struct Subs(Vec<(i64, Sub)>);

impl Subs {
    fn get(&self, id: &i64) -> Option<&Sub> {
        self.0.iter().find(|(c, _)| c == id).map(|(_, s)| s)
    }

    fn get_mut(&mut self, id: &i64) -> Option<&mut Sub> {
        self.0.iter_mut().find(|(c, _)| c == id).map(|(_, s)| s)
    }

    fn contains_key(&self, id: &i64) -> bool {
        self.get(id).is_some()
    }

    fn insert(&mut self, id: i64, sub: Sub) {
        match self.get_mut(&id) {
            Some(s) => *s = sub,
            None => {
                // Exactly as many slots as subscriptions: no growth slack in every connection.
                self.0.reserve_exact(1);
                self.0.push((id, sub));
            }
        }
    }

    fn remove(&mut self, id: &i64) -> Option<Sub> {
        let i = self.0.iter().position(|(c, _)| c == id)?;
        let (_, sub) = self.0.swap_remove(i);
        if self.0.is_empty() {
            self.0 = Vec::new();
        }
        Some(sub)
    }

    fn clear(&mut self) {
        self.0 = Vec::new();
    }
}

/// How a replay ended, for [`Conn::finish_replay`].
pub enum Replayed {
    /// Everything up to this `seq` was sent: go live.
    Upto(i64),
    /// `resync_required` was sent.
    Resync,
    /// Filling a gap failed: live again after this `seq`, without the events that waited
    /// (the next event, or a resume, fills the gap).
    Skip(i64),
    /// The replay could not run (the conversation is gone, the database failed).
    Failed,
}

/// A gap to fill from the database: `(conversation, after seq, generation)`.
pub type Fill = (i64, i64, u32);

#[derive(Default)]
struct Inner {
    /// Frames not yet (completely) written, oldest first; `written` bytes of the first are out.
    queue: VecDeque<Bytes>,
    written: usize,
    /// The socket is full: the connection's task flushes when it takes more.
    blocked: bool,
    closing: bool,
    /// Subscribed conversations; a connection has a few, so a vector (no hash table per
    /// connection) searched linearly.
    subs: Subs,
    fills: Vec<Fill>,
    generation: u32,
}

pub struct Conn {
    pub key: u64,
    pub company_id: i64,
    /// The signed-in user: events addressed to them (`Bus::ToUser`) reach this connection.
    pub user_id: i64,
    pub session_id: String,
    io: TcpStream,
    limit: usize,
    inner: Mutex<Inner>,
    code: AtomicU16,
    last_seen: AtomicU32,
    /// Wakes the connection's task: the socket is full, a gap needs filling, or it closes.
    wake: Notify,
    /// Wakes replays waiting for the queue to drain.
    drained: Notify,
}

/// Returned when a frame could not be queued: the connection is (now) closing.
pub struct Closed;

impl Conn {
    pub fn new(key: u64, company_id: i64, user_id: i64, session_id: String, io: TcpStream, limit: usize) -> Self {
        Self {
            key,
            company_id,
            user_id,
            session_id,
            io,
            limit: limit.max(1),
            inner: Mutex::new(Inner::default()),
            code: AtomicU16::new(0),
            last_seen: AtomicU32::new(clock()),
            wake: Notify::new(),
            drained: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn io(&self) -> &TcpStream {
        &self.io
    }

    // ---- liveness ----

    pub fn seen(&self) {
        self.last_seen.store(clock(), Ordering::Relaxed);
    }

    /// Seconds since the client last sent anything.
    pub fn idle_secs(&self) -> u32 {
        clock().saturating_sub(self.last_seen.load(Ordering::Relaxed))
    }

    /// The close code, once the connection closes.
    pub fn code(&self) -> Option<u16> {
        match self.code.load(Ordering::SeqCst) {
            0 => None,
            c => Some(c),
        }
    }

    /// Closes with `code` (the first code wins): what waits to be sent is dropped, except the
    /// rest of a frame already partly written, and the close frame goes out next.
    pub fn close(&self, code: u16) {
        if self.code.compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            return;
        }
        let mut inner = self.lock();
        inner.closing = true;
        let keep = usize::from(inner.written > 0);
        inner.queue.truncate(keep);
        inner.queue.push_back(close_frame(code));
        inner.subs.clear();
        inner.fills.clear();
        self.flush_locked(&mut inner);
        drop(inner);
        self.wake.notify_one();
        self.drained.notify_waiters();
    }

    /// The connection's task waits here for work besides reading.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    // ---- writing ----

    /// Writes what waits, without blocking; a full socket leaves the rest waiting (`blocked`).
    fn flush_locked(&self, inner: &mut Inner) {
        while !inner.queue.is_empty() {
            let result = {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let mut n = 0;
                for (i, f) in inner.queue.iter().take(MAX_SLICES).enumerate() {
                    slices[i] = IoSlice::new(if i == 0 { &f[inner.written..] } else { f });
                    n += 1;
                }
                self.io.try_write_vectored(&slices[..n])
            };
            match result {
                Ok(0) => {
                    // The peer is gone; the reader sees it too.
                    inner.queue.clear();
                    inner.written = 0;
                    break;
                }
                Ok(mut n) => {
                    while n > 0 {
                        let left = inner.queue[0].len() - inner.written;
                        if n >= left {
                            n -= left;
                            inner.queue.pop_front();
                            inner.written = 0;
                        } else {
                            inner.written += n;
                            n = 0;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !inner.blocked {
                        inner.blocked = true;
                        self.wake.notify_one();
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    inner.queue.clear();
                    inner.written = 0;
                    break;
                }
            }
        }
        inner.blocked = false;
        if inner.queue.capacity() > 0 {
            // An idle connection holds no queue memory.
            inner.queue = VecDeque::new();
        }
        self.drained.notify_waiters();
    }

    /// Whether frames wait for the socket (the task then waits until it is writable).
    pub fn blocked(&self) -> bool {
        self.lock().blocked
    }

    /// The socket takes more: write what waits. Returns whether the queue is now empty.
    pub fn flush(&self) -> bool {
        let mut inner = self.lock();
        inner.blocked = false;
        self.flush_locked(&mut inner);
        inner.queue.is_empty()
    }

    /// Whether the close frame is out (or can never be).
    pub fn closed_and_flushed(&self) -> bool {
        let inner = self.lock();
        inner.closing && inner.queue.is_empty()
    }

    /// Queues a frame under the slow-consumer rule.
    fn push(&self, inner: &mut Inner, frame: Bytes) -> Result<(), Closed> {
        if inner.closing {
            return Err(Closed);
        }
        if inner.queue.len() >= self.limit {
            return Err(Closed);
        }
        self.write_or_queue(inner, frame);
        Ok(())
    }

    /// The common case, nothing waiting: one `write` of the frame, queued only if the socket
    /// does not take all of it.
    fn write_or_queue(&self, inner: &mut Inner, frame: Bytes) {
        if inner.queue.is_empty() && !inner.blocked {
            loop {
                match self.io.try_write(&frame) {
                    Ok(n) if n == frame.len() => return,
                    Ok(0) => return,
                    Ok(n) => {
                        inner.written = n;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // The peer is gone; the reader sees it too.
                    Err(_) => return,
                }
            }
        }
        inner.queue.push_back(frame);
        if !inner.blocked {
            self.flush_locked(inner);
        }
    }

    /// A frame of the connection's own (a reply, a ping); a full queue closes with 1013.
    pub fn send(&self, frame: Bytes) -> Result<(), Slow> {
        let mut inner = self.lock();
        let closing = inner.closing;
        match self.push(&mut inner, frame) {
            Ok(()) => Ok(()),
            Err(Closed) if closing => Err(Slow(false)),
            Err(Closed) => {
                drop(inner);
                self.close(kill::TRY_AGAIN_LATER);
                Err(Slow(true))
            }
        }
    }

    /// Waits until what waits was written (or the connection closes): replays write in
    /// bounded steps instead of filling the queue.
    pub async fn until_drained(&self) -> Result<(), Closed> {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let inner = self.lock();
                if inner.closing {
                    return Err(Closed);
                }
                if inner.queue.is_empty() {
                    return Ok(());
                }
            }
            notified.await;
        }
    }

    /// How many replayed frames may be queued between two waits for the queue to drain, so
    /// that live frames of other conversations always find room.
    pub fn replay_step(&self) -> usize {
        (self.limit / 2).max(1)
    }

    /// A replayed frame (the replay waits with [`Self::until_drained`] between steps).
    pub fn send_replayed(&self, frame: Bytes) -> Result<(), Closed> {
        let mut inner = self.lock();
        if inner.closing {
            return Err(Closed);
        }
        self.write_or_queue(&mut inner, frame);
        Ok(())
    }

    // ---- events ----

    /// A live event of a conversation this connection joined. Returns false when the
    /// connection should leave the room (it closes, or was just closed as a slow consumer).
    pub fn deliver(&self, conversation_id: i64, seq: Option<i64>, frame: &Bytes) -> Delivered {
        let mut inner = self.lock();
        if inner.closing {
            return Delivered::Gone;
        }
        match self.live(&mut inner, conversation_id, seq, frame) {
            Ok(sent) => sent,
            Err(Closed) => {
                drop(inner);
                self.close(kill::TRY_AGAIN_LATER);
                Delivered::Slow
            }
        }
    }

    fn live(
        &self,
        inner: &mut Inner,
        conversation_id: i64,
        seq: Option<i64>,
        frame: &Bytes,
    ) -> Result<Delivered, Closed> {
        let Some(sub) = inner.subs.get_mut(&conversation_id) else { return Ok(Delivered::Skipped) };
        match sub {
            Sub::Resync => Ok(Delivered::Skipped),
            Sub::Buffering { buffer, .. } => {
                buffer.push((seq, frame.clone()));
                Ok(Delivered::Sent)
            }
            Sub::Live(last) => {
                let Some(seq) = seq else {
                    self.push(inner, frame.clone())?;
                    return Ok(Delivered::Sent);
                };
                if seq <= *last {
                    return Ok(Delivered::Skipped);
                }
                if seq == *last + 1 {
                    *last = seq;
                    self.push(inner, frame.clone())?;
                    return Ok(Delivered::Sent);
                }
                // A gap (a broker message lost or overtaken): wait for this event while the
                // connection's task fills the gap from the database.
                let after = *last;
                inner.generation = inner.generation.wrapping_add(1);
                let generation = inner.generation;
                inner
                    .subs
                    .insert(conversation_id, Sub::Buffering { generation, buffer: vec![(Some(seq), frame.clone())] });
                inner.fills.push((conversation_id, after, generation));
                self.wake.notify_one();
                Ok(Delivered::Sent)
            }
        }
    }

    /// An inbox event (any conversation of the company). A subscribed conversation gets its
    /// persisted events through its room, in order, once.
    pub fn inbox(&self, conversation_id: i64, seq: Option<i64>, frame: &Bytes) -> Delivered {
        let mut inner = self.lock();
        if inner.closing {
            return Delivered::Gone;
        }
        if seq.is_some() && matches!(inner.subs.get(&conversation_id), Some(Sub::Live(_) | Sub::Buffering { .. })) {
            return Delivered::Skipped;
        }
        match self.push(&mut inner, frame.clone()) {
            Ok(()) => Delivered::Sent,
            Err(Closed) => {
                drop(inner);
                self.close(kill::TRY_AGAIN_LATER);
                Delivered::Slow
            }
        }
    }

    // ---- subscriptions ----

    pub fn subscribed(&self, conversation_id: i64) -> bool {
        self.lock().subs.contains_key(&conversation_id)
    }

    /// Starts buffering the conversation's live events (before joining its room); the
    /// replay that follows ends the wait with [`Self::finish_replay`] and this generation.
    pub fn begin(&self, conversation_id: i64) -> Option<u32> {
        let mut inner = self.lock();
        if inner.closing {
            return None;
        }
        inner.generation = inner.generation.wrapping_add(1);
        let generation = inner.generation;
        inner.subs.insert(conversation_id, Sub::Buffering { generation, buffer: Vec::new() });
        Some(generation)
    }

    pub fn unsubscribe(&self, conversation_id: i64) -> bool {
        self.lock().subs.remove(&conversation_id).is_some()
    }

    /// Events may have been missed without a later one showing the gap (the broker's link to
    /// the other nodes was down, or the hub lagged): every live subscription reads the
    /// database after its last `seq`, as a gap fill does, and goes live again after it.
    pub fn catch_up(&self) {
        let mut inner = self.lock();
        if inner.closing {
            return;
        }
        let live: Vec<(i64, i64)> = inner
            .subs
            .0
            .iter()
            .filter_map(|(c, s)| match s {
                Sub::Live(last) => Some((*c, *last)),
                _ => None,
            })
            .collect();
        for (conversation_id, after) in live {
            inner.generation = inner.generation.wrapping_add(1);
            let generation = inner.generation;
            inner.subs.insert(conversation_id, Sub::Buffering { generation, buffer: Vec::new() });
            inner.fills.push((conversation_id, after, generation));
        }
        if !inner.fills.is_empty() {
            self.wake.notify_one();
        }
    }

    /// Gaps the connection's task should fill from the database.
    pub fn take_fills(&self) -> Vec<Fill> {
        std::mem::take(&mut self.lock().fills)
    }

    /// Ends a replay: go live after `seq` and send the buffered events past it, in order
    /// (a new gap among them starts a fill); or stop after `resync_required`.
    pub fn finish_replay(&self, conversation_id: i64, generation: u32, outcome: Replayed) {
        let mut inner = self.lock();
        let current =
            matches!(inner.subs.get(&conversation_id), Some(Sub::Buffering { generation: g, .. }) if *g == generation);
        if !current || inner.closing {
            return;
        }
        let Some(Sub::Buffering { mut buffer, .. }) = inner.subs.remove(&conversation_id) else { return };
        match outcome {
            Replayed::Failed => {}
            Replayed::Resync => {
                inner.subs.insert(conversation_id, Sub::Resync);
            }
            Replayed::Skip(last) => {
                inner.subs.insert(conversation_id, Sub::Live(last));
            }
            Replayed::Upto(last) => {
                inner.subs.insert(conversation_id, Sub::Live(last));
                buffer.sort_by_key(|(seq, _)| *seq);
                for (seq, frame) in buffer {
                    if self.live(&mut inner, conversation_id, seq, &frame).is_err() {
                        drop(inner);
                        self.close(kill::TRY_AGAIN_LATER);
                        return;
                    }
                }
            }
        }
    }
}

/// What became of a frame handed to a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivered {
    Sent,
    /// Not for this connection (already sent, not subscribed, or its own typing).
    Skipped,
    /// The queue was full: the connection now closes with 1013.
    Slow,
    /// The connection is closing.
    Gone,
}

impl Delivered {
    /// Whether the room keeps the connection.
    pub fn keep(&self) -> bool {
        matches!(self, Delivered::Sent | Delivered::Skipped)
    }
}

/// A reply that could not be queued; `Slow(true)` when it closed the connection with 1013.
pub struct Slow(pub bool);
