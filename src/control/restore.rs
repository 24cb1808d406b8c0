//! Handler of `restore`: the plan ([`crate::restore::plan`]) and the refusals, then the
//! restore as a run of its own ([`RestoreRun`]: begin, [`exec::run`], finish) in its own task,
//! its steps streamed as `progress` with the run's id.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::Instrument;

use super::backups::error;
use crate::config::{Config, JobSpec};
use crate::jobs::backup::manifest::Manifest;
use crate::jobs::catalog::{self, Claim};
use crate::protocol::{ErrorCode, Response};
use crate::restore::database::{self, Target};
use crate::restore::plan::RestorePlan;
use crate::restore::run::RestoreRun;
use crate::restore::{Options, RestoreError, evidence, exec, globals, plan, swap};
use crate::runner::Runner;

/// Runs `restore`; every message for the client goes to `out` (progress, then the answer).
/// The restore itself runs in a task of its own: `out` is dropped when it has answered.
pub async fn restore(
    runner: &Arc<Runner>,
    config: Arc<Config>,
    id: &str,
    options: &Options,
    dry_run: bool,
    out: mpsc::UnboundedSender<Response>,
) {
    if let Err(e) = start(runner, config, id, options, dry_run, &out).await {
        tracing::warn!(backup = id, "restore of {id} into {:?}: {e}", options.to);
        let _ = out.send(refusal(&e));
    }
}

/// The plan and refusals; with `dry_run` the plan is the answer, else the restore is begun.
async fn start(
    runner: &Arc<Runner>,
    config: Arc<Config>,
    id: &str,
    options: &Options,
    dry_run: bool,
    out: &mpsc::UnboundedSender<Response>,
) -> Result<(), RestoreError> {
    if !dry_run {
        RestoreRun::check_free(runner)?;
    }
    let (manifest, plan) = prepare(&config, id, options).await?;
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
        let _ = out.send(Response::RestorePlan {
            plan: Box::new(plan),
            globals,
        });
        return Ok(());
    }
    // Retention must not remove it while it is read.
    let claim = runner.in_use().claim(id).ok_or_else(|| {
        RestoreError::Failed(format!(
            "backup {id} is being verified or removed right now"
        ))
    })?;
    let run = RestoreRun::begin(runner, &plan, &manifest.job)?;
    let out = out.clone();
    run.spawn(move |run| execute(run, config, manifest, plan, identity, claim, out));
    Ok(())
}

/// The backup's manifest and the restore's plan, after every refusal.
async fn prepare(
    config: &Config,
    id: &str,
    options: &Options,
) -> Result<(Manifest, RestorePlan), RestoreError> {
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
    let mut plan = plan::plan(&manifest, &dir, options, target_cluster.as_deref())?;
    plan.estimate = evidence::estimate(&config.daemon.backup_dir, &manifest);
    if plan.replace {
        swap::check_free(&config.postgres, &plan.to).await?;
    } else if let Target::NotEmpty(tables) = database::target(&config.postgres, &plan.to).await? {
        return Err(RestoreError::TargetNotEmpty {
            db: plan.to.clone(),
            tables,
        });
    }
    exec::preflight(&config.daemon.restore_scratch_dir, plan.scratch_bytes)?;
    Ok((manifest, plan))
}

/// The restore's task: exec, the run's record, then the answer.
async fn execute(
    run: RestoreRun,
    config: Arc<Config>,
    manifest: Manifest,
    plan: RestorePlan,
    identity: Option<PathBuf>,
    claim: Claim,
    out: mpsc::UnboundedSender<Response>,
) {
    let run_id = run.run_id().clone();
    let progress = |message: String| {
        let _ = out.send(Response::Progress {
            run_id: run_id.clone(),
            message,
        });
    };
    let env = exec::Env {
        server: &config.postgres,
        scratch_dir: &config.daemon.restore_scratch_dir,
        identity_file: identity.as_deref(),
        cancel: run.token(),
        progress: &progress,
    };
    let span = run.span();
    span.in_scope(|| tracing::info!("restoring {} into {}", plan.id, plan.to));
    let result = exec::run(&env, &plan).instrument(span).await;
    drop(claim);
    if let (Ok(report), Some(dir)) = (
        &result,
        catalog::path_of(&config.daemon.backup_dir, &plan.id),
    ) {
        evidence::restored(&dir, &manifest, report);
    }
    run.finish(&result).await;
    let answer = match result {
        Ok(report) => Response::Restored { report },
        Err(e) => refusal(&e),
    };
    let _ = out.send(answer);
}

fn refusal(e: &RestoreError) -> Response {
    let code = match e {
        RestoreError::BadRequest(_) => ErrorCode::BadRequest,
        RestoreError::UnknownBackup(_) => ErrorCode::UnknownBackup,
        RestoreError::SourceDatabase(_) => ErrorCode::RestoreSourceDatabase,
        RestoreError::TargetNotEmpty { .. } => ErrorCode::RestoreTargetNotEmpty,
        RestoreError::ReplacedExists(_) => ErrorCode::RestoreReplacedExists,
        RestoreError::NoSpace { .. } => ErrorCode::RestoreNoSpace,
        RestoreError::Busy(_) => ErrorCode::RestoreBusy,
        RestoreError::ShuttingDown => ErrorCode::ShuttingDown,
        RestoreError::Failed(_) | RestoreError::Scratch(_) | RestoreError::Cancelled => {
            ErrorCode::Internal
        }
    };
    error(code, e.to_string())
}
