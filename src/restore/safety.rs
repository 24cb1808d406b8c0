//! The safety backup before `restore --replace`: the database about to be swapped out is
//! backed up first, through the backup job's whole pipeline ([`crate::jobs::backup::take`]:
//! dump, globals, compression, encryption, manifest, `SHA256SUMS`, verification at level
//! full), as `<time>-<job>.safety`, pinned before it is published and never copied offsite.
//!
//! The settings are those of the job that made the backup being restored (its format,
//! compression, encryption and identity), with the target as the database. A safety backup
//! that cannot be taken refuses the restore before anything is touched
//! ([`RestoreError::SafetyBackup`]).

use std::sync::Arc;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::RestoreError;
use crate::config::{Config, JobSpec, VerifyLevel};
use crate::ids::RunId;
use crate::jobs::backup::manifest::{Manifest, SafetyFor};
use crate::jobs::{JobContext, JobError, backup};

/// Takes the safety backup of `to` before `manifest`'s backup replaces it; returns its id.
pub async fn take(
    config: &Arc<Config>,
    manifest: &Manifest,
    to: &str,
    cancel: &CancellationToken,
    progress: &(dyn Fn(String) + Send + Sync),
) -> Result<String, RestoreError> {
    let refused = |why: String| RestoreError::SafetyBackup {
        db: to.to_owned(),
        why,
    };
    let job = config
        .jobs
        .values()
        .find(|j| j.name.as_str() == manifest.job && matches!(j.spec, JobSpec::Backup(_)))
        .ok_or_else(|| {
            refused(format!(
                "the backup job {:?} that made {} is not configured any more, and its settings \
                 are the ones a safety backup uses",
                manifest.job, manifest.id
            ))
        })?;
    let JobSpec::Backup(spec) = &job.spec else {
        return Err(refused("not a backup job".into()));
    };
    let mut spec = spec.clone();
    spec.dbname = to.to_owned();
    spec.offsite = Vec::new();
    spec.verify = VerifyLevel::Full;
    spec.verify_every = None;
    let safety = SafetyFor {
        database: to.to_owned(),
        restore_of: manifest.id.clone(),
    };
    let now = Utc::now();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let ctx = JobContext::new(
        RunId::new(now),
        Arc::new(job.clone()),
        Arc::clone(config),
        cancel.clone(),
        now,
        tx,
    );
    progress(format!(
        "safety backup of {to} (job {}'s settings)",
        job.name
    ));
    let work = backup::take(&ctx, &spec, Some(&safety));
    tokio::pin!(work);
    let taken = loop {
        tokio::select! {
            taken = &mut work => break taken,
            Some(step) = rx.recv() => progress(format!("safety backup: {step}")),
        }
    };
    while let Ok(step) = rx.try_recv() {
        progress(format!("safety backup: {step}"));
    }
    match taken {
        Ok(report) => report.details["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| refused("the backup reported no id".into())),
        Err(JobError::Cancelled) => Err(RestoreError::Cancelled),
        Err(e) => Err(refused(e.to_string())),
    }
}
