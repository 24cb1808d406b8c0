//! Handler of `restore`: the plan ([`crate::restore::plan`]), the refusals, then the restore
//! itself ([`crate::restore::exec`]) with its steps streamed as `progress`.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::backups::error;
use crate::config::{Config, JobSpec};
use crate::ids::RunId;
use crate::jobs::backup::manifest::Manifest;
use crate::jobs::catalog::{self, InUse};
use crate::protocol::{ErrorCode, Response};
use crate::restore::database::{self, Target};
use crate::restore::{Options, RestoreError, exec, plan, safety, swap};

/// Runs `restore`; every message for the client goes to `out` (progress, then the answer).
pub async fn restore(
    config: &Arc<Config>,
    in_use: &std::sync::Arc<InUse>,
    id: &str,
    options: &Options,
    dry_run: bool,
    out: mpsc::UnboundedSender<Response>,
) {
    let answer = match run(config, in_use, id, options, dry_run, &out).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(backup = id, "restore of {id} into {:?}: {e}", options.to);
            refusal(&e)
        }
    };
    let _ = out.send(answer);
}

async fn run(
    config: &Arc<Config>,
    in_use: &std::sync::Arc<InUse>,
    id: &str,
    options: &Options,
    dry_run: bool,
    out: &mpsc::UnboundedSender<Response>,
) -> Result<Response, RestoreError> {
    let unknown = || {
        RestoreError::UnknownBackup(format!(
            "no backup {id:?} in {}",
            config.daemon.backup_dir.display()
        ))
    };
    let dir = catalog::path_of(&config.daemon.backup_dir, id).ok_or_else(unknown)?;
    let manifest =
        Manifest::read(&dir).map_err(|e| RestoreError::UnknownBackup(format!("{id}: {e}")))?;
    if !manifest.verified() {
        return Err(RestoreError::UnknownBackup(format!(
            "{id} failed its verification; it is not restored"
        )));
    }
    let plan = plan::plan(&manifest, &dir, options)?;
    let target = database::target(&config.postgres, &plan.to).await?;
    if plan.replace {
        swap::check_free(&config.postgres, &plan.to).await?;
    } else if let Target::NotEmpty(tables) = target {
        return Err(RestoreError::TargetNotEmpty {
            db: plan.to.clone(),
            tables,
        });
    }
    exec::preflight(&config.daemon.restore_scratch_dir, plan.scratch_bytes)?;
    if dry_run {
        return Ok(Response::RestorePlan {
            plan: Box::new(plan),
        });
    }
    // Retention must not remove it while it is read.
    let _claim = in_use.claim(id).ok_or_else(|| {
        RestoreError::Failed(format!(
            "backup {id} is being verified or removed right now"
        ))
    })?;
    let identity: Option<PathBuf> = config.jobs.values().find_map(|j| match &j.spec {
        JobSpec::Backup(b) if j.name.as_str() == manifest.job => b.verify_identity_file.clone(),
        _ => None,
    });
    let run_id = RunId::new(Utc::now());
    let progress = |message: String| {
        let _ = out.send(Response::Progress {
            run_id: run_id.clone(),
            message,
        });
    };
    let cancel = CancellationToken::new();
    let env = exec::Env {
        server: &config.postgres,
        scratch_dir: &config.daemon.restore_scratch_dir,
        identity_file: identity.as_deref(),
        cancel: &cancel,
        progress: &progress,
    };
    // First, before anything is touched. (A target created since the look above has no
    // safety backup, but the swap still keeps it whole under its replaced name.)
    let safety_backup = if plan.replace && target != Target::Missing {
        let taken = safety::take(config, &manifest, &plan.to, &cancel, &progress).await?;
        tracing::info!(
            backup = id,
            "safety backup {taken} of {} taken and pinned",
            plan.to
        );
        Some(taken)
    } else {
        None
    };
    tracing::info!(backup = id, "restoring {id} into {}", plan.to);
    let mut report = exec::run(&env, &plan).await?;
    report.safety_backup = safety_backup;
    tracing::info!(
        backup = id,
        "restored {id} into {} ({} tables, {} rows, every count checked){}",
        report.database,
        report.tables,
        report.rows,
        report
            .replaced
            .as_ref()
            .map_or_else(String::new, |k| format!(
                "; the old database is kept as {k}"
            ))
    );
    Ok(Response::Restored { report })
}

fn refusal(e: &RestoreError) -> Response {
    let code = match e {
        RestoreError::BadRequest(_) => ErrorCode::BadRequest,
        RestoreError::UnknownBackup(_) => ErrorCode::UnknownBackup,
        RestoreError::SourceDatabase(_) => ErrorCode::RestoreSourceDatabase,
        RestoreError::TargetNotEmpty { .. } => ErrorCode::RestoreTargetNotEmpty,
        RestoreError::ReplacedExists(_) => ErrorCode::RestoreReplacedExists,
        RestoreError::NoSpace { .. } => ErrorCode::RestoreNoSpace,
        RestoreError::SafetyBackup { .. } => ErrorCode::RestoreSafetyBackup,
        RestoreError::Failed(_) | RestoreError::Scratch(_) | RestoreError::Cancelled => {
            ErrorCode::Internal
        }
    };
    error(code, e.to_string())
}
