//! CONTRACT §4 close codes. A connection closes once, with the first code fired at it
//! ([`super::conn::Conn::close`]), by its own task, its rooms, the hub or the heartbeat.

pub const GOING_AWAY: u16 = 1001;
pub const TOO_BIG: u16 = 1009;
pub const TRY_AGAIN_LATER: u16 = 1013;
pub const REVOKED: u16 = 4001;
pub const IDLE: u16 = 1000;
