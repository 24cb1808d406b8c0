//! One wal-archive job's task: the receiver's supervision, the archive loop, the monitor and
//! the offsite copies, joined until the job is stopped.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::index::{self, Index};
use super::state::JobState;
use super::{ARCHIVE_EVERY, ARCHIVE_RETRY, CHECK_EVERY, OFFSITE_EVERY};
use super::{archive, check_name, monitor, offsite, partial, receiver, slot};
use crate::alerts::Notifier;
use crate::config::{OffsiteTarget, WalArchiveSpec};
use crate::ids::JobName;
use crate::jobs::backup::stream::Layers;
use crate::jobs::health::board::{Board, Probe};
use crate::protocol::HealthStatus;
use crate::trust::{HeldDir, Trusted};

/// What one job's task holds.
pub(super) struct JobCtx {
    pub(super) job: JobName,
    pub(super) spec: WalArchiveSpec,
    pub(super) targets: Vec<OffsiteTarget>,
    pub(super) state: Arc<JobState>,
    pub(super) board: Arc<Board>,
    pub(super) notifier: Notifier,
    /// The archive and spool folders, held open while the job runs.
    pub(super) held: Vec<HeldDir>,
}

impl JobCtx {
    pub(super) async fn run(mut self, cancel: CancellationToken, previous: Option<JoinHandle<()>>) {
        if let Some(p) = previous {
            let _ = p.await;
        }
        // The folders are checked once and then used only through their handles, held until
        // the job ends: a folder swapped after the check is never followed.
        let Some((archive, spool)) = self.hold_folders(&cancel).await else {
            return;
        };
        self.spec.archive_dir = archive.at();
        self.spec.spool_dir = spool.at();
        self.held = vec![archive, spool];
        if let Some(marker) = slot::recreated(&self.spec.archive_dir) {
            self.state.slot_recreated(marker);
        }
        // The index is read before the receiver starts: whether a missing slot was dropped
        // behind our back depends on what was archived before.
        let (spec, job) = (self.spec.clone(), self.job.clone());
        let index = match tokio::task::spawn_blocking(move || open_archive(&spec, &job)).await {
            Ok(Ok(i)) => {
                self.state.archived(&i, None);
                Some(i)
            }
            Ok(Err(e)) => {
                self.state.lock().archive_error = Some(e);
                None
            }
            Err(e) => {
                self.state.lock().archive_error = Some(e.to_string());
                None
            }
        };
        let receiver_done = CancellationToken::new();
        let receive = async {
            receiver::supervise(&self.spec, &self.state, &cancel).await;
            receiver_done.cancel();
        };
        tokio::join!(
            receive,
            self.archive_loop(index, &receiver_done),
            self.monitor_loop(&cancel),
            self.offsite_loop(&cancel)
        );
    }

    /// Archives what the spool holds every second, and once more after the receiver ended.
    async fn archive_loop(&self, mut index: Option<Index>, receiver_done: &CancellationToken) {
        let layers = match self.layers() {
            Ok(l) => l,
            Err(e) => {
                self.state.lock().archive_error = Some(e);
                return;
            }
        };
        let mut ended = 0;
        loop {
            let last = receiver_done.is_cancelled();
            // Read before the pass: a life that ends during it is taken by the next one.
            let now_ended = self.state.receivers_ended();
            index = self.archive_once(index, &layers, now_ended != ended).await;
            // A failed pass stores the in-flight segment again at the next.
            if self.state.lock().archive_error.is_none() {
                ended = now_ended;
            }
            if last {
                return;
            }
            let failed = self.state.lock().archive_error.is_some();
            let wait = if failed { ARCHIVE_RETRY } else { ARCHIVE_EVERY };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = receiver_done.cancelled() => {}
            }
        }
    }

    fn layers(&self) -> Result<Layers, String> {
        let recipients = self
            .spec
            .encrypt_to
            .iter()
            .map(|r| {
                r.parse::<age::x25519::Recipient>()
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Layers {
            zstd_level: Some(self.spec.zstd_level),
            recipients,
        })
    }

    /// One pass over the spool; with `in_flight`, the in-flight segment is stored too.
    async fn archive_once(
        &self,
        index: Option<Index>,
        layers: &Layers,
        in_flight: bool,
    ) -> Option<Index> {
        let spec = self.spec.clone();
        let layers = layers.clone();
        let job = self.job.clone();
        let done = tokio::task::spawn_blocking(move || {
            let mut index = match index {
                Some(i) => i,
                None => match open_archive(&spec, &job) {
                    Ok(i) => i,
                    Err(e) => {
                        return (
                            None,
                            archive::Pass {
                                archived: Vec::new(),
                                error: Some(e),
                            },
                        );
                    }
                },
            };
            let mut pass = archive::pass(&spec, &layers, &mut index, Utc::now());
            if pass.error.is_none() {
                pass.error = partial::drop_superseded(&spec, &mut index).err();
            }
            if pass.error.is_none() && in_flight {
                match partial::pass(&spec, &layers, &mut index, Utc::now()) {
                    Ok(stored) => pass.archived.extend(stored),
                    Err(e) => pass.error = Some(e),
                }
            }
            (Some(index), pass)
        })
        .await;
        let (index, mut pass) = match done {
            Ok(d) => d,
            Err(e) => {
                self.state.lock().archive_error = Some(format!("the archiver failed: {e}"));
                return None;
            }
        };
        pass.error = pass.error.map(|e| self.shown(e));
        for e in &pass.archived {
            tracing::info!(segment = %e.name, bytes = e.bytes, "archived {}", e.name);
        }
        // Said once while the same failure lasts, not at every retry.
        let repeated = pass.error.is_some() && self.state.lock().archive_error == pass.error;
        if let (Some(e), false) = (&pass.error, repeated) {
            tracing::error!("{e}");
        }
        match &index {
            Some(i) => self.state.archived(i, pass.error),
            None => self.state.lock().archive_error = pass.error,
        }
        index
    }

    /// Offers the archived segments to each offsite target every [`OFFSITE_EVERY`].
    async fn offsite_loop(&self, cancel: &CancellationToken) {
        if self.targets.is_empty() {
            return;
        }
        loop {
            tokio::select! {
                () = tokio::time::sleep(OFFSITE_EVERY) => {}
                () = cancel.cancelled() => return,
            }
            for t in &self.targets {
                let result =
                    offsite::pass(t, self.job.as_str(), &self.spec.archive_dir, cancel).await;
                let mut s = self.state.lock();
                match result {
                    Ok(_) => {
                        s.offsite_errors.remove(&t.name);
                    }
                    Err(e) => {
                        if s.offsite_errors.get(&t.name) != Some(&e) {
                            tracing::warn!("offsite {}: copying segments failed: {e}", t.name);
                        }
                        s.offsite_errors.insert(t.name.clone(), e);
                    }
                }
            }
        }
    }

    /// Observes the slot and records the job's health check every [`CHECK_EVERY`].
    async fn monitor_loop(&self, cancel: &CancellationToken) {
        let mut first = true;
        loop {
            let wait = if first {
                Duration::from_secs(2)
            } else {
                CHECK_EVERY
            };
            first = false;
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = cancel.cancelled() => return,
            }
            self.state
                .follow_recreated(slot::recreated(&self.spec.archive_dir));
            let view = monitor::observe(&self.spec).await;
            if let Ok(v) = &view {
                self.state.lock().slot = Some(v.clone());
            }
            let now = Utc::now();
            let (status, message) = monitor::judge(&self.spec, &self.state.snapshot(), &view, now);
            self.record(status, message);
        }
    }

    /// Records the job's check on the board, with an alert on a transition.
    fn record(&self, status: HealthStatus, message: String) {
        let now = Utc::now();
        let check = check_name(&self.job);
        let probe = Probe::new(status, message);
        if let Some(t) = self.board.record(&self.job, &check, probe, now)
            && t.alerts()
        {
            tracing::warn!(
                check = %t.check,
                status = t.status.as_str(),
                previous = t.previous_str(),
                "health check {} is {}: {}",
                t.check,
                t.status.as_str(),
                t.message
            );
            self.notifier.daemon(&crate::alerts::daemon_events::health(
                self.job.as_str(),
                &t.check,
                t.status.as_str(),
                t.previous_str(),
                &t.message,
            ));
        }
    }

    /// Opens the archive and spool folders (made 0700 when missing) once they pass the trust
    /// check; until they do, the job is `refused` and its check fails, tried again every
    /// [`CHECK_EVERY`]. `None` when cancelled first.
    async fn hold_folders(&self, cancel: &CancellationToken) -> Option<(HeldDir, HeldDir)> {
        let mut said: Option<String> = None;
        loop {
            if cancel.is_cancelled() {
                return None;
            }
            let dirs = [self.spec.archive_dir.clone(), self.spec.spool_dir.clone()];
            let opened = tokio::task::spawn_blocking(move || {
                let [archive, spool] = dirs;
                Ok::<_, String>((hold(&archive)?, hold(&spool)?))
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            let why = match opened {
                Ok(held) => {
                    if said.is_some() {
                        self.state.set_receiver("starting", None, None);
                    }
                    return Some(held);
                }
                Err(why) => why,
            };
            if said.as_ref() != Some(&why) {
                tracing::error!("wal-archive job refused: {why}");
            }
            self.state.set_receiver("refused", Some(why.clone()), None);
            self.record(HealthStatus::Fail, format!("refused: {why}"));
            said = Some(why);
            tokio::select! {
                () = tokio::time::sleep(CHECK_EVERY) => {}
                () = cancel.cancelled() => return None,
            }
        }
    }

    /// `text` with the held folders' handle paths shown as their names.
    fn shown(&self, text: String) -> String {
        self.held.iter().fold(text, |t, d| d.shown(&t))
    }
}

/// `dir`, made (0700) when missing, then trust-checked and held by handle.
fn hold(dir: &std::path::Path) -> Result<HeldDir, String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    HeldDir::open(dir, &Trusted::daemon())
}

/// The archive folder (made 0700 if missing) and its index, repaired if a crash tore it.
fn open_archive(spec: &WalArchiveSpec, job: &JobName) -> Result<Index, String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&spec.archive_dir)
        .map_err(|e| format!("cannot create {}: {e}", spec.archive_dir.display()))?;
    let (index, dropped) = Index::open(&spec.archive_dir).map_err(|e| e.to_string())?;
    if dropped > 0 {
        tracing::warn!(
            job = %job,
            "{}: dropped {dropped} torn or unreadable line(s) of the segment index; their segments are archived again from the spool",
            spec.archive_dir.join(index::INDEX_FILE).display()
        );
    }
    Ok(index)
}
