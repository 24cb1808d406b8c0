//! After a backup is published: its copy to each of the job's `offsite` targets, then the
//! job's earlier copies still owed there (left `pending` by a crash or `failed` by an outage),
//! a few per run.
//!
//! Each target is its own task, run side by side: a target that is down, or slow to time out,
//! fails or delays only its own copies, and its state (`state-dir/offsite/<target>/`) is its
//! own, so it catches up on the next run after it comes back.

use futures::future::join_all;

use crate::config::{BackupSpec, OffsiteTarget};
use crate::jobs::JobContext;
use crate::jobs::backup::manifest::Manifest;
use crate::jobs::catalog;
use crate::offsite::ship::{self, Shipped};
use crate::offsite::state::{self, Stage};

/// Earlier copies taken up again per run and target, newest first, so one outage does not make
/// a run spend hours catching up.
const OWED_PER_RUN: usize = 3;

pub async fn copy_offsite(ctx: &JobContext, spec: &BackupSpec, id: &str) -> Vec<Shipped> {
    let targets = spec
        .offsite
        .iter()
        .filter_map(|n| ctx.config.offsite.get(n))
        .map(|target| copy_to(ctx, target, id));
    let shipped: Vec<Shipped> = join_all(targets).await.into_iter().flatten().collect();
    crate::alerts::notifier::offsite_copied(ctx, &spec.offsite, &shipped);
    shipped
}

/// The new backup `id` and what is owed to `target`, one after the other.
async fn copy_to(ctx: &JobContext, target: &OffsiteTarget, id: &str) -> Vec<Shipped> {
    let backup_dir = &ctx.config.daemon.backup_dir;
    let state_dir = &ctx.config.daemon.state_dir;
    let progress = |m: String| ctx.progress(m);
    let mut shipped = Vec::new();
    let mut todo = vec![id.to_owned()];
    let mut owed: Vec<String> = state::list(state_dir, &target.name)
        .into_iter()
        .filter(|r| r.job == ctx.job.name.as_str() && r.id != id)
        .filter_map(|r| {
            let local = catalog::path_of(backup_dir, &r.id);
            if local.is_none() {
                // Pruned here: nothing left to copy, nothing to remember.
                state::remove(state_dir, &target.name, &r.id);
            }
            (local.is_some() && r.stage != Stage::Verified).then_some(r.id)
        })
        .collect();
    owed.reverse();
    todo.extend(owed.into_iter().take(OWED_PER_RUN));
    for backup in todo {
        let Some(dir) = catalog::path_of(backup_dir, &backup) else {
            continue;
        };
        let manifest = match Manifest::read(&dir) {
            Ok(m) if m.verified() => m,
            _ => continue,
        };
        let s = ship::copy(state_dir, target, &dir, &manifest, &ctx.cancel, &progress).await;
        let target_failed = s.target_failed;
        shipped.push(s);
        // The target is down or we are told to stop: the rest waits for the next run. A
        // failure of one backup's own (a refused or damaged copy) does not hold up the others.
        if target_failed || ctx.cancel.is_cancelled() {
            break;
        }
    }
    shipped
}

/// "; offsite s3: verified" for the run's message.
pub fn summary(shipped: &[Shipped]) -> String {
    shipped
        .iter()
        .map(|s| match &s.error {
            None => format!("; offsite {}: {} {}", s.target, s.id, s.stage.as_str()),
            Some(e) => format!("; offsite {}: {} FAILED ({e})", s.target, s.id),
        })
        .collect()
}
