//! [`Lanes`]: ordered per-key queues, each served by one task started at the key's first item.
//! The outbox keeps a lane per channel and the pings a lane per job, so what is sent to one
//! receiver keeps its order, and a receiver that is slow or down holds up its own lane only.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// One key's waiting items, oldest first.
pub struct Lane<T> {
    items: Mutex<VecDeque<T>>,
    ready: Notify,
}

impl<T> Lane<T> {
    fn new() -> Lane<T> {
        Lane {
            items: Mutex::default(),
            ready: Notify::new(),
        }
    }

    /// The waiting items, locked.
    pub fn items(&self) -> MutexGuard<'_, VecDeque<T>> {
        lock(&self.items)
    }

    /// Appends `item` and wakes the lane's task; when more than `max` wait, the oldest leaves
    /// the lane and is returned.
    pub fn push(&self, item: T, max: usize) -> Option<T> {
        let dropped = {
            let mut items = self.items();
            items.push_back(item);
            if items.len() > max {
                items.pop_front()
            } else {
                None
            }
        };
        self.ready.notify_one();
        dropped
    }

    /// Waits until an item waits (true), or until `draining` is cancelled while none does
    /// (false: the task may end).
    pub async fn wait(&self, draining: &CancellationToken) -> bool {
        loop {
            if !self.items().is_empty() {
                return true;
            }
            tokio::select! {
                () = self.ready.notified() => {}
                () = draining.cancelled() => return false,
            }
        }
    }
}

/// The lanes by key.
pub struct Lanes<K, T> {
    lanes: Mutex<BTreeMap<K, Arc<Lane<T>>>>,
}

impl<K, T> Default for Lanes<K, T> {
    fn default() -> Self {
        Lanes {
            lanes: Mutex::default(),
        }
    }
}

impl<K: Ord + Clone, T> Lanes<K, T> {
    /// The lane of `key`; at the key's first use `start` gets the new lane to start its task.
    pub fn get(&self, key: &K, start: impl FnOnce(Arc<Lane<T>>)) -> Arc<Lane<T>> {
        let mut lanes = lock(&self.lanes);
        if let Some(lane) = lanes.get(key) {
            return Arc::clone(lane);
        }
        let lane = Arc::new(Lane::new());
        lanes.insert(key.clone(), Arc::clone(&lane));
        start(Arc::clone(&lane));
        lane
    }

    /// How many items wait in all lanes.
    pub fn waiting(&self) -> usize {
        lock(&self.lanes).values().map(|l| l.items().len()).sum()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_lane_drops_its_oldest_item() {
        let lanes: Lanes<&str, u32> = Lanes::default();
        let mut started = 0;
        let lane = lanes.get(&"a", |_| started += 1);
        assert_eq!(lane.push(1, 2), None);
        assert_eq!(lane.push(2, 2), None);
        assert_eq!(lane.push(3, 2), Some(1));
        let again = lanes.get(&"a", |_| started += 1);
        assert_eq!(started, 1, "a lane's task is started once");
        assert_eq!(Vec::from(again.items().clone()), vec![2, 3]);
        assert_eq!(lanes.waiting(), 2);
    }

    #[tokio::test]
    async fn wait_returns_false_only_when_draining_and_empty() {
        let lanes: Lanes<&str, u32> = Lanes::default();
        let lane = lanes.get(&"a", |_| {});
        let draining = CancellationToken::new();
        lane.push(7, 10);
        draining.cancel();
        assert!(lane.wait(&draining).await, "an item still waits");
        lane.items().clear();
        assert!(!lane.wait(&draining).await);
    }
}
