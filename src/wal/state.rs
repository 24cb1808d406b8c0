//! What is known of each job while it runs, shared by its loops and read by `atprectl jobs`,
//! health and the metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};

use super::index::Index;
use super::monitor::SlotView;
use super::{segment, slot};
use crate::protocol::WalStatus;

/// What is known of one job, for `atprectl jobs`, health and metrics.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub status: WalStatus,
    pub archive_error: Option<String>,
    pub recreated: Option<slot::Recreated>,
    pub gaps: Vec<(String, String)>,
    pub newest_completed: Option<DateTime<Utc>>,
    pub archived_lsn: Option<u64>,
    pub slot: Option<SlotView>,
    /// Per offsite target, why its last pass failed.
    pub offsite_errors: BTreeMap<String, String>,
}

/// One job's shared state.
#[derive(Default)]
pub struct JobState {
    inner: Mutex<Snapshot>,
    /// How many lives of the receiver have ended: the archiver stores the in-flight segment
    /// after each ([`super::partial`]).
    ended: AtomicU64,
}

impl JobState {
    pub(super) fn lock(&self) -> MutexGuard<'_, Snapshot> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn set_receiver(&self, receiver: &str, message: Option<String>, pid: Option<u32>) {
        let mut s = self.lock();
        if s.status.receiver != receiver {
            s.status.since = Some(Utc::now());
        }
        s.status.receiver = receiver.to_owned();
        s.status.message = message;
        s.status.pid = pid;
    }

    /// A life of the receiver ended.
    pub(super) fn receiver_ended(&self) {
        self.ended.fetch_add(1, Ordering::SeqCst);
    }

    pub(super) fn receivers_ended(&self) -> u64 {
        self.ended.load(Ordering::SeqCst)
    }

    pub(super) fn started(&self, pid: Option<u32>) {
        self.set_receiver("receiving", None, pid);
        self.lock().status.starts += 1;
    }

    pub(super) fn newest_archived(&self) -> Option<String> {
        self.lock().status.last_segment.clone()
    }

    pub(super) fn slot_recreated(&self, marker: slot::Recreated) {
        let mut s = self.lock();
        s.status.base_backup_required_since = Some(marker.at);
        s.recreated = Some(marker);
    }

    /// Follows the marker on disk: gone once a new base backup cleared it.
    pub(super) fn follow_recreated(&self, marker: Option<slot::Recreated>) {
        match marker {
            Some(m) => self.slot_recreated(m),
            None => {
                let mut s = self.lock();
                s.recreated = None;
                s.status.base_backup_required_since = None;
            }
        }
    }

    pub(super) fn archived(&self, index: &Index, error: Option<String>) {
        let mut s = self.lock();
        s.archive_error = error;
        s.gaps = index.gaps();
        // In-flight copies are not segments.
        s.status.segments = index.entries().filter(|e| e.holds.is_none()).count() as u64;
        if let Some((seg, entry)) = index.newest_segment() {
            s.status.last_segment = Some(entry.name.clone());
            s.status.last_archived = Some(entry.archived);
            s.status.archived_lsn = Some(segment::format_lsn(seg.end_lsn()));
            s.archived_lsn = Some(seg.end_lsn());
            s.newest_completed = Some(entry.completed);
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        self.lock().clone()
    }
}
