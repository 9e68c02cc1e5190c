//! The node's hub (one per node) and its conversation rooms (one per active conversation).
//! The hub receives every event from the broker and hands it to the room of its conversation
//! and to the company's inbox subscribers; a room fans an event out to its subscribers'
//! bounded queues with `try_send`: a full queue closes that connection with 1013 and never
//! slows anyone else (CONTRACT §4, STYLE "Actors").

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use actix::prelude::*;
use bytestring::ByteString;
use tokio::sync::mpsc;

use super::{
    event::{CONVERSATION_CREATED, CONVERSATION_UPDATED, Event, MESSAGE_CREATED, PRESENCE, TYPING},
    kill::{self, Kill},
    protocol,
};
use crate::core::metrics::Metrics;

/// What a connection's writer task receives, in order.
#[derive(Debug)]
pub enum Out {
    /// A text frame to send as is.
    Frame(String),
    /// Start buffering live events of this conversation (sent before joining its room).
    Begin(i64),
    /// Joined: replay from the database after `after` (or from now), then go live.
    Replay {
        conversation_id: i64,
        after: Option<i64>,
    },
    /// A live event of a subscribed conversation, with its frame serialised once.
    Event(Arc<Event>, ByteString),
    /// An inbox event (any conversation of the company).
    Inbox(Arc<Event>, ByteString),
    Unsubscribe(i64),
}

#[derive(Clone)]
pub struct Subscriber {
    pub key: u64,
    pub tx: mpsc::Sender<Out>,
    pub kill: Kill,
}

impl Subscriber {
    /// Non-blocking hand-off; a full queue is a slow consumer (1013).
    fn offer(&self, out: Out, metrics: &Metrics) -> bool {
        match self.tx.try_send(out) {
            Ok(()) => {
                metrics.ws_events_out.inc();
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics.ws_slow_closes.inc();
                self.kill.fire(kill::TRY_AGAIN_LATER);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

// ---- messages ----

/// Anything the broker carries between nodes.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Message)]
#[rtype(result = "()")]
pub enum Bus {
    Event(Event),
    /// Sessions revoked (logout, deactivation): their sockets close with 4001.
    Revoked(Vec<String>),
    /// An event for one user's sockets only, on every node (a `mention`; not persisted).
    ToUser {
        user_id: i64,
        event: Event,
    },
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Join {
    pub conversation_id: i64,
    pub sub: Subscriber,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub conversation_id: i64,
    pub key: u64,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct JoinInbox {
    pub company_id: i64,
    pub sub: Subscriber,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Connect {
    pub key: u64,
    pub session_id: String,
    pub company_id: i64,
    pub user_id: i64,
    /// The connection's queue, for events addressed to its user ([`Bus::ToUser`]).
    pub sub: Subscriber,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect {
    pub key: u64,
}

/// Graceful shutdown: every socket closes with 1001.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

#[derive(Message)]
#[rtype(result = "()")]
struct Deliver(Arc<Event>, ByteString);

#[derive(Message)]
#[rtype(result = "()")]
struct RoomLeave(u64);

#[derive(Message)]
#[rtype(result = "()")]
struct StopRoom;

// ---- hub ----

struct Connection {
    session_id: String,
    company_id: i64,
    user_id: i64,
    sub: Subscriber,
}

pub struct Hub {
    metrics: Metrics,
    rooms: HashMap<i64, Addr<ConversationRoom>>,
    inbox: HashMap<i64, HashMap<u64, Subscriber>>,
    connections: HashMap<u64, Connection>,
    /// Which connections are subscribed where, to clean up on disconnect.
    memberships: HashMap<u64, HashSet<i64>>,
    room_members: HashMap<i64, usize>,
}

impl Hub {
    pub fn new(metrics: Metrics) -> Self {
        Self {
            metrics,
            rooms: HashMap::new(),
            inbox: HashMap::new(),
            connections: HashMap::new(),
            memberships: HashMap::new(),
            room_members: HashMap::new(),
        }
    }

    /// The hub counts room members itself (it is the only writer of membership), so a room is
    /// stopped exactly when its last member leaves and a later join starts a fresh one.
    fn leave_room(&mut self, conversation_id: i64, key: u64) {
        let Some(room) = self.rooms.get(&conversation_id) else { return };
        self.metrics.ws_subscriptions.dec();
        // Control messages bypass the mailbox bound: they must not be lost.
        room.do_send(RoomLeave(key));
        let count = self.room_members.entry(conversation_id).or_default();
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.room_members.remove(&conversation_id);
            if let Some(room) = self.rooms.remove(&conversation_id) {
                room.do_send(StopRoom);
            }
        }
    }
}

impl Actor for Hub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
    }
}

impl Handler<Bus> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Bus, _: &mut Self::Context) {
        match msg {
            Bus::Event(event) => {
                // Serialised once; every subscriber's copy shares these bytes (no per-socket copy).
                let frame = ByteString::from(protocol::event_frame(&event));
                let event = Arc::new(event);
                if (event.seq.is_some() || event.event == TYPING)
                    && let Some(room) = self.rooms.get(&event.conversation_id)
                    && room.try_send(Deliver(event.clone(), frame.clone())).is_err()
                {
                    // A gap a subscriber heals from the database on the next event or resume.
                    tracing::warn!(conversation = event.conversation_id, "room mailbox full; event dropped");
                }
                let for_inbox = matches!(
                    event.event.as_str(),
                    MESSAGE_CREATED | CONVERSATION_CREATED | CONVERSATION_UPDATED | PRESENCE
                );
                if for_inbox && let Some(subs) = self.inbox.get_mut(&event.company_id) {
                    let metrics = &self.metrics;
                    subs.retain(|_, s| s.offer(Out::Inbox(event.clone(), frame.clone()), metrics));
                }
            }
            Bus::Revoked(session_ids) => {
                let revoked: HashSet<String> = session_ids.into_iter().collect();
                for c in self.connections.values().filter(|c| revoked.contains(&c.session_id)) {
                    c.sub.kill.fire(kill::REVOKED);
                }
            }
            Bus::ToUser { user_id, event } => {
                let frame = ByteString::from(protocol::event_frame(&event));
                let event = Arc::new(event);
                for c in self.connections.values() {
                    if c.user_id == user_id && c.company_id == event.company_id {
                        c.sub.offer(Out::Inbox(event.clone(), frame.clone()), &self.metrics);
                    }
                }
            }
        }
    }
}

impl Handler<Join> for Hub {
    type Result = ();

    /// The room's `RoomJoin` is queued before this returns, so every event the hub handles
    /// after it reaches the new subscriber (the seam of CONTRACT §4 resume).
    fn handle(&mut self, msg: Join, _: &mut Self::Context) {
        if !self.memberships.entry(msg.sub.key).or_default().insert(msg.conversation_id) {
            return;
        }
        let metrics = self.metrics.clone();
        let room = self
            .rooms
            .entry(msg.conversation_id)
            .or_insert_with(|| ConversationRoom { metrics, subscribers: HashMap::new() }.start());
        room.do_send(RoomJoin(msg.sub));
        *self.room_members.entry(msg.conversation_id).or_default() += 1;
        self.metrics.ws_subscriptions.inc();
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct RoomJoin(Subscriber);

impl Handler<Leave> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Leave, _: &mut Self::Context) {
        if self.memberships.get_mut(&msg.key).is_some_and(|set| set.remove(&msg.conversation_id)) {
            self.leave_room(msg.conversation_id, msg.key);
        }
    }
}

impl Handler<JoinInbox> for Hub {
    type Result = ();

    fn handle(&mut self, msg: JoinInbox, _: &mut Self::Context) {
        self.inbox.entry(msg.company_id).or_default().insert(msg.sub.key, msg.sub);
    }
}

impl Handler<Connect> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Connect, _: &mut Self::Context) {
        self.metrics.ws_open.inc();
        self.connections.insert(
            msg.key,
            Connection { session_id: msg.session_id, company_id: msg.company_id, user_id: msg.user_id, sub: msg.sub },
        );
    }
}

impl Handler<Disconnect> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Disconnect, _: &mut Self::Context) {
        if let Some(c) = self.connections.remove(&msg.key) {
            self.metrics.ws_open.dec();
            if let Some(subs) = self.inbox.get_mut(&c.company_id) {
                subs.remove(&msg.key);
            }
        }
        for conversation_id in self.memberships.remove(&msg.key).unwrap_or_default() {
            self.leave_room(conversation_id, msg.key);
        }
    }
}

impl Handler<Shutdown> for Hub {
    type Result = ();

    fn handle(&mut self, _: Shutdown, _: &mut Self::Context) {
        for c in self.connections.values() {
            c.sub.kill.fire(kill::GOING_AWAY);
        }
    }
}

// ---- room ----

pub struct ConversationRoom {
    metrics: Metrics,
    subscribers: HashMap<u64, Subscriber>,
}

impl Actor for ConversationRoom {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
    }
}

impl Handler<Deliver> for ConversationRoom {
    type Result = ();

    fn handle(&mut self, Deliver(event, frame): Deliver, _: &mut Self::Context) {
        let metrics = &self.metrics;
        self.subscribers.retain(|key, s| {
            if event.origin == Some(*key) {
                return true;
            }
            s.offer(Out::Event(event.clone(), frame.clone()), metrics)
        });
    }
}

impl Handler<RoomJoin> for ConversationRoom {
    type Result = ();

    fn handle(&mut self, RoomJoin(sub): RoomJoin, _: &mut Self::Context) {
        self.subscribers.insert(sub.key, sub);
    }
}

impl Handler<RoomLeave> for ConversationRoom {
    type Result = ();

    fn handle(&mut self, RoomLeave(key): RoomLeave, _: &mut Self::Context) {
        self.subscribers.remove(&key);
    }
}

impl Handler<StopRoom> for ConversationRoom {
    type Result = ();

    fn handle(&mut self, _: StopRoom, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
