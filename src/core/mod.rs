//! The infrastructure every feature uses (issue 19): storage, configuration, keys, errors,
//! shared types and extractors, the application state, metrics, notifications, outbound HTTP,
//! the real-time plumbing (broker, hub, tickets, events), sessions and access tokens, the auth
//! rate limiter and the media blob store.
//!
//! Core imports no feature module (`auth`, `fynd`, `media`, `messaging`, `ops`, `providers`,
//! `realtime`, `users`, …): features depend on core, never the other way round, and no two
//! parts import each other. `tests/module_graph.rs` checks both on every `cargo test`.

pub mod auth;
pub mod config;
pub mod crypto;
pub mod db;
pub mod error;
pub mod extract;
pub mod media;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod outbox;
pub mod query;
pub mod realtime;
pub mod redact;
pub mod state;
pub mod types;
