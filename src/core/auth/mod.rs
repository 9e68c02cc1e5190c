//! The parts of authentication every feature relies on: sessions and their cache, access
//! tokens and signing keys, the request middleware and role extractors, the per-address rate
//! limit on auth routes and the failed-login lockout.

pub mod guard;
pub mod jwt;
pub mod lockout;
pub mod ratelimit;
pub mod session;
