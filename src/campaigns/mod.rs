//! Template campaigns (issue 23 item 3, README "Campaigns"): a company's admins send one
//! template to many phones. Recipients are stored once per campaign and phone; the runner
//! ([`worker`]) holds a lease on a running campaign (one node sends it, at its rate) and sends
//! each recipient in one transaction that claims the recipient (`queued` → `sent`) and writes
//! its message and outbox job (`messaging::service::send_tx`), so a recipient is sent exactly
//! once across pauses, restarts, crashes and several nodes; delivery is the outbox's.

pub mod routes;
pub mod service;
pub mod store;
pub mod worker;
