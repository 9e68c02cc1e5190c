//! The cap on open WebSockets per user (issue 17, `CONFAB_WS_MAX_PER_USER`): counted per node,
//! held by a [`WsSlot`] for the connection's life and released when it drops, so a crashed
//! or killed connection can never leak a slot. Not shared through Redis: a node that died
//! would leave its counts behind and lock users out, and what the cap protects (sockets,
//! memory, fan-out work) is per node anyway.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

pub struct WsSlots {
    /// 0: no cap.
    max: usize,
    open: Mutex<HashMap<i64, usize>>,
}

impl WsSlots {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { max, open: Mutex::new(HashMap::new()) })
    }

    /// A slot for one more connection of `user_id`, or `None` when the user already holds
    /// the maximum on this node.
    pub fn acquire(self: &Arc<Self>, user_id: i64) -> Option<WsSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(user_id).or_insert(0);
        if self.max > 0 && *n >= self.max {
            return None;
        }
        *n += 1;
        Some(WsSlot { slots: self.clone(), user_id })
    }

    /// Open connections of `user_id` on this node.
    pub fn open(&self, user_id: i64) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).get(&user_id).copied().unwrap_or(0)
    }
}

/// One open connection's claim; dropping it frees the slot.
pub struct WsSlot {
    slots: Arc<WsSlots>,
    user_id: i64,
}

impl Drop for WsSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.user_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.user_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_user_and_freed_on_drop() {
        let slots = WsSlots::new(2);
        let a = slots.acquire(1).unwrap();
        let _b = slots.acquire(1).unwrap();
        assert!(slots.acquire(1).is_none(), "third connection of user 1");
        let _other = slots.acquire(2).expect("another user is not affected");
        drop(a);
        assert_eq!(slots.open(1), 1);
        assert!(slots.acquire(1).is_some());
        assert_eq!(slots.open(3), 0);
    }

    #[test]
    fn zero_means_no_cap() {
        let slots = WsSlots::new(0);
        let held: Vec<_> = (0..100).map(|_| slots.acquire(7).unwrap()).collect();
        assert_eq!(slots.open(7), held.len());
        drop(held);
        assert_eq!(slots.open(7), 0);
    }
}
