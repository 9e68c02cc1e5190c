//! Real-time delivery (CONTRACT §4, §8): the event model, the broker every node publishes
//! committed events to, the hub and rooms that fan them out, and the WebSocket sessions.

pub mod broker;
pub mod event;
pub mod hub;
pub mod kill;
pub mod limit;
pub mod protocol;
pub mod routes;
pub mod session;
pub mod tickets;
