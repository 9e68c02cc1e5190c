//! The node's event broker. Services publish committed events here; subscribers (the hub of
//! this node) receive every event of every company. In-process by default. Ordering and gaps
//! never depend on the broker: they come from the database `seq` (ARCHITECTURE "Several nodes").

use std::sync::Arc;

use tokio::sync::broadcast;

use super::event::Event;

/// Events buffered for a slow subscriber before it lags (and recovers from the database).
const CAPACITY: usize = 65_536;

#[derive(Clone)]
pub struct Broker {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for Broker {
    fn default() -> Self {
        Self { tx: broadcast::channel(CAPACITY).0 }
    }
}

impl Broker {
    /// Hands committed events to every subscriber of this node. Never blocks.
    pub fn publish(&self, events: impl IntoIterator<Item = Event>) {
        for e in events {
            // No subscriber yet is fine: events are durable, clients resume by `seq`.
            let _ = self.tx.send(Arc::new(e));
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}
