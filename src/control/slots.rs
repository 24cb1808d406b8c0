//! Connection slots: how many control connections are served at once, in all and per user.
//!
//! A member of the socket group is one user among several: it may hold at most
//! [`PER_UID`] connections, and the last [`RESERVED`] of the [`MAX_CONNECTIONS`] slots are
//! kept for root and the daemon's own user, so that one member's flood never locks out the
//! administrator's `atprectl status`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Connections served at once; further ones get a `busy` error and are closed.
pub const MAX_CONNECTIONS: usize = 256;
/// Slots only root and the daemon's own user may take.
pub const RESERVED: usize = 16;
/// Connections one other user (a socket-group member) may hold at once.
pub const PER_UID: usize = 32;

#[derive(Default)]
struct Counts {
    total: usize,
    per_uid: HashMap<u32, usize>,
}

/// The slot table shared by the accept loop and every connection.
#[derive(Clone, Default)]
pub struct Slots(Arc<Mutex<Counts>>);

/// Why no slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every slot this caller may use is taken.
    Full,
    /// This user already holds [`PER_UID`] connections.
    UserFull,
}

impl Refusal {
    /// The sentence the client is sent (and `atprectl` prints).
    pub fn message(self, uid: u32) -> String {
        match self {
            Refusal::Full => format!(
                "the daemon is serving its maximum of {MAX_CONNECTIONS} connections; try again shortly"
            ),
            Refusal::UserFull => format!(
                "uid {uid} already has {PER_UID} connections open, the most one user may hold; \
                 try again once one has ended"
            ),
        }
    }
}

/// One taken slot; given back when dropped.
pub struct Slot {
    counts: Arc<Mutex<Counts>>,
    uid: Option<u32>,
}

impl Slots {
    /// Takes a slot for `uid`; `privileged` (root, the daemon's user) may use the reserved
    /// slots and has no per-user cap.
    pub fn take(&self, uid: u32, privileged: bool) -> Result<Slot, Refusal> {
        let mut counts = lock(&self.0);
        let limit = if privileged {
            MAX_CONNECTIONS
        } else {
            MAX_CONNECTIONS - RESERVED
        };
        if counts.total >= limit {
            return Err(Refusal::Full);
        }
        if !privileged {
            let mine = counts.per_uid.entry(uid).or_default();
            if *mine >= PER_UID {
                return Err(Refusal::UserFull);
            }
            *mine += 1;
        }
        counts.total += 1;
        Ok(Slot {
            counts: Arc::clone(&self.0),
            uid: (!privileged).then_some(uid),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        counts.total = counts.total.saturating_sub(1);
        if let Some(uid) = self.uid
            && let Some(n) = counts.per_uid.get_mut(&uid)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_uid.remove(&uid);
            }
        }
    }
}

/// The counts stay consistent even if a holder panicked: every update is a single step.
fn lock(m: &Mutex<Counts>) -> MutexGuard<'_, Counts> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_each_user_and_keeps_slots_for_root() {
        let slots = Slots::default();
        let mine: Vec<Slot> = (0..PER_UID)
            .map(|_| slots.take(1000, false).unwrap())
            .collect();
        assert_eq!(slots.take(1000, false).err(), Some(Refusal::UserFull));
        // Other members fill what is left for non-privileged users...
        let mut others = Vec::new();
        let mut uid = 2000;
        while let Ok(s) = slots.take(uid, false) {
            others.push(s);
            if others.len() % PER_UID == 0 {
                uid += 1;
            }
        }
        assert_eq!(mine.len() + others.len(), MAX_CONNECTIONS - RESERVED);
        assert_eq!(slots.take(4000, false).err(), Some(Refusal::Full));
        // ...and root still gets the reserved ones.
        let root: Vec<Slot> = (0..RESERVED)
            .map(|_| slots.take(0, true).unwrap())
            .collect();
        assert_eq!(slots.take(0, true).err(), Some(Refusal::Full));
        drop(root);
        drop(mine);
        assert!(slots.take(1000, false).is_ok(), "slots are given back");
    }
}
