//! Signed outgoing webhooks (issue 23 item 1, README "Outgoing webhooks"). A company's admins
//! subscribe URLs to conversation events; each event a transaction commits is queued for every
//! matching subscription in that same transaction ([`store::enqueue`], called where events are
//! appended), so delivery is at least once and, per subscription and conversation, in `seq`
//! order. The worker ([`worker`]) sends them through the outbox machinery (`core::outbox`:
//! claims with leases, backoff, dead-letter after 8 attempts), signed with every valid secret
//! of the subscription ([`model::signature_header`]).
//!
//! This part sits below `messaging` (which calls [`store::enqueue`]) and imports only core.

pub mod model;
pub mod routes;
pub mod service;
pub mod store;
pub mod worker;
