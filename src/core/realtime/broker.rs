//! The node's broker: services publish committed events here, the hub receives them. In
//! process by default; with `CONFAB_REDIS_URL` every message also goes through Redis pub/sub
//! to the other nodes (CONTRACT §8). A node delivers its own messages locally at once and
//! ignores their echo from Redis. Ordering and gaps never depend on the broker: they come from
//! the database `seq` (ARCHITECTURE "Several nodes").

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

use super::{
    event::{Event, PRESENCE},
    hub::Bus,
};
use crate::core::{auth::session::Principal, db};

/// Messages buffered for a slow hub before it lags (and its subscribers heal from the database).
const CAPACITY: usize = 65_536;
const CHANNEL: &str = "confab:bus";
/// The wait before taking a lost Redis subscription again, doubled up to the maximum.
const RESUBSCRIBE_MIN: Duration = Duration::from_millis(100);
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(5);

async fn resubscribe(client: &redis::Client) -> redis::RedisResult<redis::aio::PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(CHANNEL).await?;
    Ok(pubsub)
}

/// What a commit's after-commit hooks publish on this thread, held back per broker until they
/// have all run ([`Broker::publish_bus`]).
type Held = Vec<(broadcast::Sender<Bus>, Vec<Bus>)>;

thread_local! {
    static HELD: std::cell::RefCell<Held> = const { std::cell::RefCell::new(Vec::new()) };
}

#[derive(Clone)]
pub struct Broker {
    tx: broadcast::Sender<Bus>,
    node: u64,
    redis: Option<Redis>,
    presence: Arc<Mutex<HashMap<i64, usize>>>,
}

#[derive(Clone)]
struct Redis {
    publish: mpsc::UnboundedSender<String>,
    conn: redis::aio::ConnectionManager,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    node: u64,
    bus: Bus,
}

impl Default for Broker {
    fn default() -> Self {
        Self::local()
    }
}

impl Broker {
    pub fn local() -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
            node: u64::from_le_bytes(crate::core::crypto::random_bytes::<8>()),
            redis: None,
            presence: Default::default(),
        }
    }

    /// Connects to Redis: one task publishes in order, one forwards other nodes' messages.
    /// Redis may go away (a restart, a failover): publishing goes on through the reconnecting
    /// connection manager, and the subscription is taken again with a bounded backoff, after
    /// which every live subscription of this node catches up from the database (the events
    /// published while it was down never arrive through Redis).
    pub async fn with_redis(url: &str) -> anyhow::Result<Self> {
        let mut broker = Self::local();
        let client = redis::Client::open(url)?;
        let conn = redis::aio::ConnectionManager::new(client.clone()).await?;
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(CHANNEL).await?;
        let (publish, mut queue) = mpsc::unbounded_channel::<String>();
        let mut out = conn.clone();
        actix_web::rt::spawn(async move {
            while let Some(payload) = queue.recv().await {
                let sent: redis::RedisResult<()> =
                    redis::cmd("PUBLISH").arg(CHANNEL).arg(payload).query_async(&mut out).await;
                if let Err(e) = sent {
                    tracing::warn!(error = %e, "publishing to Redis; other nodes catch up when their link is back");
                }
            }
        });
        let (tx, node) = (broker.tx.clone(), broker.node);
        actix_web::rt::spawn(async move {
            let mut pubsub = Some(pubsub);
            let mut backoff = RESUBSCRIBE_MIN;
            loop {
                let Some(sub) = pubsub.take() else {
                    actix_web::rt::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RESUBSCRIBE_MAX);
                    match resubscribe(&client).await {
                        Ok(sub) => {
                            tracing::info!("Redis subscription re-established; live subscriptions catch up");
                            backoff = RESUBSCRIBE_MIN;
                            pubsub = Some(sub);
                            if tx.send(Bus::CatchUp).is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "Redis subscription: reconnecting"),
                    }
                    continue;
                };
                let mut messages = sub.into_on_message();
                while let Some(msg) = messages.next().await {
                    let Ok(payload) = msg.get_payload::<String>() else { continue };
                    match serde_json::from_str::<Envelope>(&payload) {
                        Ok(env) if env.node != node => {
                            let _ = tx.send(env.bus);
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "undecodable bus message"),
                    }
                }
                tracing::warn!("Redis subscription lost; live events from other nodes resume after reconnecting");
            }
        });
        broker.redis = Some(Redis { publish, conn });
        Ok(broker)
    }

    pub fn redis(&self) -> Option<redis::aio::ConnectionManager> {
        self.redis.as_ref().map(|r| r.conn.clone())
    }

    /// Hands committed events to this node's hub and the other nodes. Never blocks.
    pub fn publish(&self, events: impl IntoIterator<Item = Event>) {
        for e in events {
            self.publish_bus(Bus::Event(e));
        }
    }

    pub fn publish_bus(&self, bus: Bus) {
        if let Some(r) = &self.redis
            && let Ok(payload) = serde_json::to_string(&Envelope { node: self.node, bus: bus.clone() })
        {
            let _ = r.publish.send(payload);
        }
        if !db::in_after_commit() {
            // No subscriber yet is fine: events are durable, clients resume by `seq`.
            let _ = self.tx.send(bus);
            return;
        }
        // Published by a group commit's after-commit hook: held back until the commit's hooks
        // have all run, then handed to this node's hub in one message ([`Bus::Batch`], in
        // publishing order), so the hub's thread is woken once per commit, not once per event
        // (on a busy core each wake-up switched threads twice; bench/README.md, issue 21).
        // Other nodes got each message through Redis above, as it was published.
        let first = HELD.with_borrow_mut(|held| match held.iter_mut().find(|(tx, _)| tx.same_channel(&self.tx)) {
            Some((_, buses)) => {
                buses.push(bus);
                false
            }
            None => {
                held.push((self.tx.clone(), vec![bus]));
                true
            }
        });
        if first {
            let tx = self.tx.clone();
            db::later(move || {
                let mut buses = HELD.with_borrow_mut(|held| {
                    let at = held.iter().position(|(t, _)| t.same_channel(&tx));
                    at.map(|at| held.swap_remove(at).1).unwrap_or_default()
                });
                let _ = tx.send(if buses.len() == 1 { buses.remove(0) } else { Bus::Batch(buses) });
            });
        }
    }

    /// Sessions revoked: their sockets close with 4001 on every node.
    pub fn revoked(&self, session_ids: Vec<String>) {
        if !session_ids.is_empty() {
            self.publish_bus(Bus::Revoked(session_ids));
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Bus> {
        self.tx.subscribe()
    }

    /// An agent's connection opened or closed: `presence` goes to the company's inbox
    /// subscribers when the agent's first connection opens or last one closes (counted in
    /// Redis across nodes when configured).
    pub fn presence(&self, p: &Principal, online: bool) {
        let event = move |online: bool| {
            Bus::Event(Event {
                company_id: p.company_id,
                conversation_id: 0,
                seq: None,
                event: PRESENCE.into(),
                data: serde_json::json!({"userId": p.user_id, "online": online}),
                origin: None,
            })
        };
        match &self.redis {
            None => {
                let transition = {
                    let mut counts = self.presence.lock().unwrap_or_else(|e| e.into_inner());
                    let n = counts.entry(p.user_id).or_default();
                    if online {
                        *n += 1;
                        *n == 1
                    } else {
                        *n = n.saturating_sub(1);
                        let last = *n == 0;
                        if last {
                            counts.remove(&p.user_id);
                        }
                        last
                    }
                };
                if transition {
                    self.publish_bus(event(online));
                }
            }
            Some(r) => {
                let (mut conn, this, bus) = (r.conn.clone(), self.clone(), event(online));
                let key = format!("confab:presence:{}", p.user_id);
                actix_web::rt::spawn(async move {
                    let cmd = if online { "INCR" } else { "DECR" };
                    let n: redis::RedisResult<i64> = redis::cmd(cmd).arg(&key).query_async(&mut conn).await;
                    if matches!(n, Ok(n) if (online && n == 1) || (!online && n <= 0)) {
                        this.publish_bus(bus);
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(bus: Bus) -> Vec<String> {
        match bus {
            Bus::Revoked(ids) => ids,
            Bus::Batch(buses) => buses.into_iter().flat_map(names).collect(),
            _ => panic!("unexpected {bus:?}"),
        }
    }

    #[test]
    fn coalesced_publishes_reach_each_hub_as_one_message_in_order() {
        let (a, b) = (Broker::local(), Broker::local());
        let (mut rx_a, mut rx_b) = (a.subscribe(), b.subscribe());
        db::after_commit(|| {
            a.revoked(vec!["1".into()]);
            b.revoked(vec!["x".into()]);
            db::after_commit(|| a.revoked(vec!["2".into()]));
            a.revoked(vec!["3".into()]);
            assert!(rx_a.try_recv().is_err(), "held back until the end");
        });
        let got = rx_a.try_recv().unwrap();
        assert!(matches!(got, Bus::Batch(_)));
        assert_eq!(names(got), ["1", "2", "3"]);
        assert!(rx_a.try_recv().is_err(), "one message");
        // Alone in the scope: handed over as itself.
        assert!(matches!(rx_b.try_recv().unwrap(), Bus::Revoked(ids) if ids == ["x"]));
        // Outside a scope: at once.
        a.revoked(vec!["4".into()]);
        assert!(matches!(rx_a.try_recv().unwrap(), Bus::Revoked(ids) if ids == ["4"]));
    }
}
