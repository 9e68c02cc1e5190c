//! Media (CONTRACT §7): attachments stored in the blob store of `core::media` (an
//! `object_store` backend, with the rules on types, sizes and names), their rows (`db`), the
//! operations (`service`) and the routes.
//!
//! Not built here yet: the `MediaFetcher` of ARCHITECTURE (inbound provider media: WhatsApp
//! `GET /{media-id}` then the short-lived URL with the bearer token, Twilio `MediaUrlN` with
//! basic auth, retries with backoff, pending → ready/failed, `message.updated`). It should
//! stream each download into [`crate::core::media::MediaStore::save_stream`], which already enforces the
//! sniffing, size limits and hashing uploads get, then fill in the pending attachment row.
//! Outbound delivery gets provider-fetchable links from [`signed_url`].

pub mod db;
pub mod fetcher;
pub mod routes;
pub mod service;

pub use service::signed_url;
