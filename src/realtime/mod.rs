//! Real-time delivery: the event model and the broker every node publishes committed events to.

pub mod broker;
pub mod event;
