//! Media (CONTRACT §7): attachments stored in the blob store of `core::media` (an
//! `object_store` backend, with the rules on types, sizes and names), their rows (`db`), the
//! operations (`service`) and the routes.
//!
//! Inbound provider media is downloaded by `providers::fetcher` (a job of the delivery worker)
//! into the same blob store, with the sniffing, size limits and hashing uploads get. Outbound
//! delivery gets provider-fetchable links from [`signed_url`].

pub mod db;
pub mod routes;
pub mod service;

pub use service::signed_url;
