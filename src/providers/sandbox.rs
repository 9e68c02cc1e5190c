//! The sandbox provider: a real, local channel for demos, the console and tests. Sending
//! "delivers" at once: the message moves to `SENT` and then `DELIVERED` through the same
//! status path a real provider's callbacks take (issue "Messaging API" §4).

use super::{Accepted, SendError};
use crate::messaging::model::Status;

pub fn send(message_id: &str) -> Result<Accepted, SendError> {
    Ok(Accepted { provider_id: format!("sandbox-{message_id}"), then: vec![Status::Delivered] })
}
