//! Media (CONTRACT §7): attachments stored in an `object_store` backend (`store`), their rows
//! (`db`), the rules on types, sizes and names (`model`), the operations (`service`) and the
//! routes.
//!
//! Not built here yet: the `MediaFetcher` of ARCHITECTURE (inbound provider media: WhatsApp
//! `GET /{media-id}` then the short-lived URL with the bearer token, Twilio `MediaUrlN` with
//! basic auth, retries with backoff, pending → ready/failed, `message.updated`). It should
//! stream each download into [`store::MediaStore::save_stream`], which already enforces the
//! sniffing, size limits and hashing uploads get, then fill in the pending attachment row.
//! Outbound delivery gets provider-fetchable links from [`signed_url`].

pub mod db;
pub mod fetcher;
pub mod model;
pub mod routes;
pub mod service;
pub mod store;

pub use service::signed_url;
pub use store::MediaStore;
