//! Messaging providers and outbound delivery. Each channel row names its provider; the
//! delivery worker takes outbox jobs and hands them to it (CONTRACT §6).

pub mod outbox;
pub mod sandbox;
pub mod webhooks;

/// Why a send did not go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Worth retrying with backoff (timeouts, 429, 5xx).
    Transient(String),
    /// Final: the message becomes `FAILED` with this provider error code.
    Permanent { code: String, message: String },
}

/// A provider accepted a message under this id; `then` lists statuses it already reports
/// (the sandbox delivers at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub provider_id: String,
    pub then: Vec<crate::messaging::model::Status>,
}
