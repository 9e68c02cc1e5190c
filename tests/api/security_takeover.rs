//! Attack tests (issue 17, README "Security"): each performs an attack against the real server
//! and expects the refusal.

#[allow(unused_imports)]
use crate::helpers::*;
