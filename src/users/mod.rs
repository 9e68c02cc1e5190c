//! People and companies: one `users` table for admins, agents and customers (CONTRACT §9
//! "one identity"), with e-mails and phones as child rows carrying primary/verified/active.

pub mod application;
pub mod customer;
pub mod group;
pub mod model;
pub mod store;
