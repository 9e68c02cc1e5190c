//! Black-box tests: one binary (links once), one module per API family.

mod helpers;

mod accounts;
mod media;
mod ops;
