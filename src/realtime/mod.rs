//! Real-time delivery (CONTRACT §4, §8): the WebSocket routes and sessions. The event model,
//! the broker, the hub and rooms they use are in `core::realtime`.

pub mod routes;
pub mod session;
