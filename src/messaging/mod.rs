//! Conversations, messages, contacts, templates, channels and agents (CONTRACT §3).

pub mod admin;
pub mod canned;
pub mod channel_cache;
pub mod contacts;
pub mod demo;
pub mod model;
pub mod routes;
pub mod service;
pub mod store;
pub mod teams;
