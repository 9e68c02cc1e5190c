//! The parts of authentication every feature relies on: sessions and their cache, access
//! tokens and signing keys, and the per-address rate limit on auth routes.

pub mod jwt;
pub mod ratelimit;
pub mod session;
