//! The real-time plumbing (CONTRACT §4, §8): the event model and its frames, the broker every
//! node publishes committed events to, the hub and rooms that fan them out, WebSocket tickets,
//! close signals and the per-user socket cap. The WebSocket routes and sessions are the
//! `realtime` feature.

pub mod broker;
pub mod conn;
pub mod event;
pub mod hub;
pub mod kill;
pub mod limit;
pub mod presence;
pub mod protocol;
pub mod tickets;
