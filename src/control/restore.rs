//! Handler of `restore`: the plan ([`crate::restore::plan`]), the refusals, then the restore
//! itself ([`crate::restore::exec`]) with its steps streamed as `progress`.

use std::path::PathBuf;

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
use crate::restore::{Options, RestoreError, exec, globals, plan, swap};

/// Runs `restore`; every message for the client goes to `out` (progress, then the answer).
pub async fn restore(
    config: &Config,
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
    config: &Config,
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
    let target_cluster = database::system_identifier(&config.postgres).await?;
    let plan = plan::plan(&manifest, &dir, options, target_cluster.as_deref())?;
    if plan.replace {
        swap::check_free(&config.postgres, &plan.to).await?;
    } else if let Target::NotEmpty(tables) = database::target(&config.postgres, &plan.to).await? {
        return Err(RestoreError::TargetNotEmpty {
            db: plan.to.clone(),
            tables,
        });
    }
    exec::preflight(&config.daemon.restore_scratch_dir, plan.scratch_bytes)?;
    let identity: Option<PathBuf> = config.jobs.values().find_map(|j| match &j.spec {
        JobSpec::Backup(b) if j.name.as_str() == manifest.job => b.verify_identity_file.clone(),
        _ => None,
    });
    if dry_run {
        let globals = match &plan.globals {
            Some(file) => {
                Some(globals::preview(&config.postgres, file, identity.as_deref()).await?)
            }
            None => None,
        };
        return Ok(Response::RestorePlan {
            plan: Box::new(plan),
            globals,
        });
    }
    // Retention must not remove it while it is read.
    let _claim = in_use.claim(id).ok_or_else(|| {
        RestoreError::Failed(format!(
            "backup {id} is being verified or removed right now"
        ))
    })?;
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
    tracing::info!(backup = id, "restoring {id} into {}", plan.to);
    let report = exec::run(&env, &plan).await?;
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
        RestoreError::Failed(_) | RestoreError::Scratch(_) | RestoreError::Cancelled => {
            ErrorCode::Internal
        }
    };
    error(code, e.to_string())
}
