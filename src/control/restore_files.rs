//! Handler of `restore --to-dir DIR`: the refusals (a caller other than root or the daemon's
//! user, another restore running, then those of [`super::restore_redis`]'s [`local_backup`]
//! for a files backup, then DIR's own), then the restore as a run under the reserved job name
//! `restore` (in `status`, cancelled by `atprectl cancel restore`, in the history), in a task
//! of its own: the tree is restored by [`crate::restore::files_dir`] while retention is kept
//! off the backup. Its in-flight marker ([`crate::runner::inflight`]) names the temporary
//! folder, so a restore cut short by kill -9 is recorded as interrupted at the next start and
//! its temporary folder removed; DIR stays as it was.
//!
//! Only root and the daemon's own user may ask: the daemon writes the tree with its own rights
//! (as root: any owner, setuid bits included) into any folder named, which a member of the
//! socket group could not do themselves.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::backups::error;
use super::peer::Access;
use super::restore::refusal;
use super::restore_redis::{claim, local_backup};
use crate::config::{BackupSource, Config, Kind};
use crate::jobs::backup::manifest::Manifest;
use crate::jobs::catalog::Claim;
use crate::protocol::{ErrorCode, Outcome, Response, Trigger};
use crate::restore::files_dir::{self, Restored, Target};
use crate::restore::run::{job_name, refused};
use crate::restore::{Options, RestoreError};
use crate::runner::Runner;
use crate::runner::external::ExternalRun;
use crate::runner::inflight::{InFlight, Marker};

/// Restores backup `id` into `dir`; progress, then the answer (or refusal), go to `out`.
pub async fn restore(
    runner: &Arc<Runner>,
    config: &Config,
    id: &str,
    options: &Options,
    dir: &Path,
    access: Access,
    out: &mpsc::UnboundedSender<Response>,
) {
    if !access.privileged() {
        let message = "not permitted: only root and the daemon's own user may restore a files \
                       backup (--to-dir writes with the daemon's rights into the folder named)";
        tracing::warn!(backup = id, "restore of {id} refused: {message}");
        let _ = out.send(error(ErrorCode::NotPermitted, message.to_owned()));
        return;
    }
    if let Err(e) = start(runner, config, id, options, dir, out) {
        tracing::warn!(backup = id, "restore of {id} into {}: {e}", dir.display());
        let _ = out.send(refusal(&e));
    }
}

/// What the restore's task works on.
struct Work {
    folder: PathBuf,
    manifest: Manifest,
    identity: Option<PathBuf>,
    target: Target,
    temp: PathBuf,
    claim: Claim,
    marker: Option<InFlight>,
    details: serde_json::Value,
}

/// The refusals, then the run begun and handed to its task.
fn start(
    runner: &Arc<Runner>,
    config: &Config,
    id: &str,
    options: &Options,
    dir: &Path,
    out: &mpsc::UnboundedSender<Response>,
) -> Result<(), RestoreError> {
    runner.check_free(&job_name()).map_err(refused)?;
    let (folder, manifest, identity) =
        local_backup(config, id, options, BackupSource::Files, "--to-dir")?;
    let target = Target::inspect(dir, options.replace)?;
    let claim = claim(runner, id)?;
    let what = format!("the restore of {id} into {}", dir.display());
    let run = runner
        .begin_external(job_name(), Kind::Restore, Trigger::Manual, what.clone())
        .map_err(refused)?;
    let temp = target.temp_path(&run.run_id().to_string());
    let details = json!({
        "backup": id,
        "backup_job": manifest.job,
        "folder": dir.display().to_string(),
    });
    let marker = Marker {
        run_id: run.run_id().clone(),
        job: run.job().clone(),
        kind: run.kind(),
        trigger: Trigger::Manual,
        started: chrono::Utc::now(),
        what,
        details: details.clone(),
        leftovers: vec![temp.clone()],
    };
    // Advisory, like the evidence: a full state-dir must not stop a restore in an incident.
    let marker = InFlight::write(&config.daemon.state_dir, &marker)
        .inspect_err(|e| tracing::warn!("cannot write the restore's in-flight marker: {e}"))
        .ok();
    let work = Work {
        folder,
        manifest,
        identity,
        target,
        temp,
        claim,
        marker,
        details,
    };
    let out = out.clone();
    run.spawn(move |run| execute(run, work, out));
    Ok(())
}

/// The restore's task: the tree restored, the run's record, then the answer.
async fn execute(run: ExternalRun, work: Work, out: mpsc::UnboundedSender<Response>) {
    let span = tracing::info_span!("run", job = %run.job(), kind = %run.kind(),
        run_id = %run.run_id(), backup = %work.manifest.id,
        folder = %work.details["folder"].as_str().unwrap_or_default());
    let dir = work.details["folder"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    span.in_scope(|| {
        tracing::info!(trigger = Trigger::Manual.as_str(), "run started");
        tracing::info!("restoring {} into {dir}", work.manifest.id);
    });
    let _ = out.send(Response::Progress {
        run_id: run.run_id().clone(),
        message: format!("restoring {} into {dir}", work.manifest.id),
    });
    let cancel = run.token().clone();
    // The closure takes only the fields it names; the claim, marker and details stay here.
    let result = tokio::task::spawn_blocking(move || {
        files_dir::restore(
            &work.folder,
            &work.manifest,
            work.identity.as_deref(),
            &work.target,
            &work.temp,
            &cancel,
        )
    })
    .await
    .unwrap_or_else(|e| Err(RestoreError::Failed(e.to_string())));
    drop(work.claim);
    let mut details = work.details;
    let (outcome, message) = match &result {
        Ok(r) => (Outcome::Succeeded, describe(r)),
        Err(e) if run.token().is_cancelled() => (Outcome::Cancelled, e.to_string()),
        Err(e) => (Outcome::Failed, e.to_string()),
    };
    if let Ok(r) = &result {
        details["entries"] = json!(r.entries);
        details["bytes"] = json!(r.bytes);
        details["replaced"] = json!(r.replaced);
    }
    run.finish(outcome, message, details).instrument(span).await;
    // The record is in the history: the marker goes.
    drop(work.marker);
    let answer = match result {
        Ok(restored) => Response::FilesRestored { restored },
        Err(e) => refusal(&e),
    };
    let _ = out.send(answer);
}

fn describe(r: &Restored) -> String {
    format!(
        "restored {} into {}: {} entries, {} bytes{}",
        r.id,
        r.dir.display(),
        r.entries,
        r.bytes,
        if r.replaced {
            " (what was there is replaced)"
        } else {
            ""
        }
    )
}
