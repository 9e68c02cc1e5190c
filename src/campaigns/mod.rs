//! Template campaigns (issue 23 item 3, README "Campaigns"): a company's admins send one
//! template to many phones. Recipients are stored once per campaign and phone; the runner
//! ([`worker`]) holds a lease on each running campaign it sends (one node sends a campaign, at
//! its rate; a node sends several) and sends each recipient in one transaction that claims the
//! recipient (`queued` → `sent`) and writes its message and outbox job
//! (`messaging::service::send_tx`), so a recipient gets one message across pauses, restarts,
//! crashes and several nodes. Delivery is the outbox's, with the job marked at most once: a
//! provider call interrupted by a crash is not repeated (the message fails `outcome_unknown`).

pub mod routes;
pub mod service;
pub mod store;
pub mod worker;
