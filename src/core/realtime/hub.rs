//! The node's hub (one per node) and its conversation rooms (one per active conversation).
//! The hub receives every event from the broker, encodes its frame once, and hands it to the
//! room of its conversation and to the company's inbox subscribers; a room writes it into each
//! subscriber's socket without blocking ([`Conn::deliver`]): a connection whose queue is full
//! closes with 1013 and never slows anyone else (CONTRACT §4, STYLE "Actors"). The hub also
//! runs the node's one heartbeat timer.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use actix::prelude::*;
use bytes::Bytes;

use super::{
    conn::{self, Conn, Delivered},
    event::{CONVERSATION_CREATED, CONVERSATION_UPDATED, Event, MESSAGE_CREATED, PRESENCE, TYPING},
    kill, protocol,
};
use crate::core::{auth::session::SessionCache, db::Pool, metrics::Metrics};

/// CONTRACT §4: a ping every 20 s; no traffic from the client for 60 s closes.
pub const HEARTBEAT_SECS: u32 = 20;
pub const IDLE_SECS: u32 = 60;

/// Counts what a hand-off did, for the metrics.
fn count(metrics: &Metrics, d: &Delivered) {
    match d {
        Delivered::Sent => metrics.ws_events_out.inc(),
        Delivered::Slow => metrics.ws_slow_closes.inc(),
        Delivered::Skipped | Delivered::Gone => {}
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
    /// This node may have missed events (its Redis subscription was re-established, or the
    /// hub lagged behind the broker): every live subscription catches up from the database.
    /// Local to a node, never published.
    CatchUp,
    /// Several of the above, in order: what one group commit's hooks published
    /// (`Broker::publish_bus`).
    /// Local to a node; other nodes get each one through Redis.
    Batch(Vec<Bus>),
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Join {
    pub conversation_id: i64,
    pub conn: Arc<Conn>,
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
    pub conn: Arc<Conn>,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Connect {
    pub conn: Arc<Conn>,
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

/// One event for a room: its frame, encoded once for every subscriber.
#[derive(Message)]
#[rtype(result = "()")]
struct Deliver {
    seq: Option<i64>,
    origin: Option<u64>,
    frame: Bytes,
}

#[derive(Message)]
#[rtype(result = "()")]
struct RoomLeave(u64);

#[derive(Message)]
#[rtype(result = "()")]
struct StopRoom;

// ---- hub ----

pub struct Hub {
    metrics: Metrics,
    /// For the heartbeat's revocation check (revocations from a node whose broker message
    /// was lost reach this one at most one heartbeat late).
    sessions: SessionCache,
    db: Pool,
    rooms: HashMap<i64, Addr<ConversationRoom>>,
    inbox: HashMap<i64, HashMap<u64, Arc<Conn>>>,
    connections: HashMap<u64, Arc<Conn>>,
    /// Which connections are subscribed where, to clean up on disconnect.
    memberships: HashMap<u64, Vec<i64>>,
    room_members: HashMap<i64, usize>,
    /// The heartbeat wheel: one timer for every connection of the node, ticking each second;
    /// a connection is visited on the tick `key mod HEARTBEAT_SECS` (issue 20: no timer per
    /// connection).
    tick: u64,
    ping: Bytes,
}

impl Hub {
    pub fn new(metrics: Metrics, sessions: SessionCache, db: Pool) -> Self {
        Self {
            metrics,
            sessions,
            db,
            rooms: HashMap::new(),
            inbox: HashMap::new(),
            connections: HashMap::new(),
            memberships: HashMap::new(),
            room_members: HashMap::new(),
            tick: 0,
            ping: conn::ping_frame(),
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

    /// One tick of the heartbeat wheel: this slot's connections get a ping, or close after
    /// 60 s without a frame from the client; their sessions are checked for revocation.
    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        self.tick += 1;
        let slot = self.tick % u64::from(HEARTBEAT_SECS);
        let mut sessions = HashSet::new();
        for c in self.connections.values().filter(|c| c.key % u64::from(HEARTBEAT_SECS) == slot) {
            if c.idle_secs() > IDLE_SECS {
                c.close(kill::IDLE);
                continue;
            }
            if let Err(conn::Slow(true)) = c.send(self.ping.clone()) {
                self.metrics.ws_slow_closes.inc();
            }
            sessions.insert(c.session_id.clone());
        }
        if sessions.is_empty() {
            return;
        }
        let (cache, db, hub) = (self.sessions.clone(), self.db.clone(), ctx.address());
        actix::spawn(async move {
            let mut revoked = Vec::new();
            for sid in sessions {
                if matches!(cache.principal(&db, &sid).await, Ok(None)) {
                    revoked.push(sid);
                }
            }
            if !revoked.is_empty() {
                hub.do_send(Bus::Revoked(revoked));
            }
        });
    }
}

impl Actor for Hub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        ctx.run_interval(Duration::from_secs(1), |hub, ctx| hub.heartbeat(ctx));
    }
}

impl Handler<Bus> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Bus, _: &mut Self::Context) {
        self.route(msg);
    }
}

impl Hub {
    /// Hands a broker message to the rooms, inboxes and connections it is for.
    fn route(&mut self, msg: Bus) {
        match msg {
            Bus::Batch(buses) => {
                for bus in buses {
                    self.route(bus);
                }
            }
            Bus::Event(event) => {
                // Encoded once (JSON and WebSocket framing); every subscriber gets these bytes.
                let frame = conn::frame(&protocol::event_frame(&event));
                if (event.seq.is_some() || event.event == TYPING)
                    && let Some(room) = self.rooms.get(&event.conversation_id)
                    && room.try_send(Deliver { seq: event.seq, origin: event.origin, frame: frame.clone() }).is_err()
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
                    subs.retain(|_, c| {
                        let d = c.inbox(event.conversation_id, event.seq, &frame);
                        count(metrics, &d);
                        d.keep()
                    });
                }
            }
            Bus::Revoked(session_ids) => {
                let revoked: HashSet<String> = session_ids.into_iter().collect();
                for c in self.connections.values().filter(|c| revoked.contains(&c.session_id)) {
                    c.close(kill::REVOKED);
                }
            }
            Bus::CatchUp => {
                for c in self.connections.values() {
                    c.catch_up();
                }
            }
            Bus::ToUser { user_id, event } => {
                let frame = conn::frame(&protocol::event_frame(&event));
                let metrics = &self.metrics;
                for c in self.connections.values() {
                    if c.user_id == user_id && c.company_id == event.company_id {
                        count(metrics, &c.inbox(event.conversation_id, None, &frame));
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
        let joined = self.memberships.entry(msg.conn.key).or_default();
        if joined.contains(&msg.conversation_id) {
            return;
        }
        joined.push(msg.conversation_id);
        let metrics = self.metrics.clone();
        let room = self.rooms.entry(msg.conversation_id).or_insert_with(|| {
            ConversationRoom { metrics, conversation_id: msg.conversation_id, subscribers: HashMap::new() }.start()
        });
        room.do_send(RoomJoin(msg.conn));
        *self.room_members.entry(msg.conversation_id).or_default() += 1;
        self.metrics.ws_subscriptions.inc();
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct RoomJoin(Arc<Conn>);

impl Handler<Leave> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Leave, _: &mut Self::Context) {
        let left = self.memberships.get_mut(&msg.key).and_then(|joined| {
            let i = joined.iter().position(|c| *c == msg.conversation_id)?;
            joined.swap_remove(i);
            Some(())
        });
        if left.is_some() {
            self.leave_room(msg.conversation_id, msg.key);
        }
    }
}

impl Handler<JoinInbox> for Hub {
    type Result = ();

    fn handle(&mut self, msg: JoinInbox, _: &mut Self::Context) {
        self.inbox.entry(msg.conn.company_id).or_default().insert(msg.conn.key, msg.conn);
    }
}

impl Handler<Connect> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Connect, _: &mut Self::Context) {
        self.metrics.ws_open.inc();
        self.connections.insert(msg.conn.key, msg.conn);
    }
}

impl Handler<Disconnect> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Disconnect, _: &mut Self::Context) {
        if let Some(c) = self.connections.remove(&msg.key) {
            self.metrics.ws_open.dec();
            if let Some(subs) = self.inbox.get_mut(&c.company_id) {
                subs.remove(&msg.key);
                if subs.is_empty() {
                    self.inbox.remove(&c.company_id);
                }
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
            c.close(kill::GOING_AWAY);
        }
    }
}

// ---- room ----

pub struct ConversationRoom {
    metrics: Metrics,
    conversation_id: i64,
    subscribers: HashMap<u64, Arc<Conn>>,
}

impl Actor for ConversationRoom {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
    }
}

impl Handler<Deliver> for ConversationRoom {
    type Result = ();

    fn handle(&mut self, Deliver { seq, origin, frame }: Deliver, _: &mut Self::Context) {
        let (metrics, conversation_id) = (&self.metrics, self.conversation_id);
        let mut sent = 0;
        self.subscribers.retain(|key, c| {
            if origin == Some(*key) {
                return true;
            }
            match c.deliver(conversation_id, seq, &frame) {
                Delivered::Sent => {
                    sent += 1;
                    true
                }
                d => {
                    count(metrics, &d);
                    d.keep()
                }
            }
        });
        metrics.ws_events_out.inc_by(sent);
    }
}

impl Handler<RoomJoin> for ConversationRoom {
    type Result = ();

    fn handle(&mut self, RoomJoin(conn): RoomJoin, _: &mut Self::Context) {
        self.subscribers.insert(conn.key, conn);
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
