//! Black-box tests: one binary (links once), one module per API family.

mod helpers;

mod accounts;
mod messaging;
mod ops;
mod webhooks;
