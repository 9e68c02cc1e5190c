//! Real-time delivery (CONTRACT §4, §8): the WebSocket routes, the upgrade that takes the
//! socket over from actix-http, and the connections' sessions. The event model, the broker,
//! the hub, rooms and the connection state they use are in `core::realtime`.

pub mod routes;
pub mod session;
pub mod upgrade;
