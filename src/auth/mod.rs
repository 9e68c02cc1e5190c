//! Authentication: passwords, access tokens and JWKS, sessions with refresh rotation, the
//! request middleware and role extractors, and the account routes.

pub mod extract;
pub mod jwt;
pub mod password;
pub mod routes;
pub mod service;
pub mod session;
