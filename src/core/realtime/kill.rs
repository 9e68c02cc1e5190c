//! A one-shot "close this connection with code N" signal shared by a connection's reader
//! actor, its writer task, its rooms and the hub.

use std::sync::{
    Arc,
    atomic::{AtomicU16, Ordering},
};

use tokio::sync::Notify;

#[derive(Clone, Default)]
pub struct Kill(Arc<Inner>);

#[derive(Default)]
struct Inner {
    code: AtomicU16,
    notify: Notify,
}

/// CONTRACT §4 close codes.
pub const GOING_AWAY: u16 = 1001;
pub const TOO_BIG: u16 = 1009;
pub const TRY_AGAIN_LATER: u16 = 1013;
pub const REVOKED: u16 = 4001;
pub const IDLE: u16 = 1000;

impl Kill {
    /// The first code wins.
    pub fn fire(&self, code: u16) {
        if self.0.code.compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            self.0.notify.notify_waiters();
        }
    }

    pub fn code(&self) -> Option<u16> {
        match self.0.code.load(Ordering::SeqCst) {
            0 => None,
            c => Some(c),
        }
    }

    pub async fn fired(&self) -> u16 {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a fire between the two is not missed.
            notified.as_mut().enable();
            if let Some(c) = self.code() {
                return c;
            }
            notified.await;
        }
    }
}
