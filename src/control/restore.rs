//! Handler of `restore`: the plan ([`crate::restore::plan`], or [`crate::restore::remote`]
//! for a copy at an offsite target) and the refusals, then the restore as a run of its own
//! ([`RestoreRun`]: begin, [`exec::run`], finish) in its own task, its steps streamed as
//! `progress` with the run's id.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::Instrument;

use super::backups::error;
use super::peer::Access;
use crate::config::{Config, JobSpec};
use crate::jobs::backup::manifest::Manifest;
use crate::jobs::catalog::{self, Claim};
use crate::offsite::Remote;
use crate::protocol::{ErrorCode, Response};
use crate::restore::database::{self, Target};
use crate::restore::plan::RestorePlan;
use crate::restore::run::RestoreRun;
use crate::restore::{
    Options, RestoreError, evidence, exec, globals, plan, remote, safety, swap, unpack,
};
use crate::runner::Runner;

/// Runs `restore`; every message for the client goes to `out` (progress, then the answer).
/// The restore itself runs in a task of its own: `out` is dropped when it has answered.
/// `--identity` only from root and the daemon's user ([`super::identity`]).
pub async fn restore(
    runner: &Arc<Runner>,
    config: Arc<Config>,
    id: &str,
    options: &Options,
    dry_run: bool,
    access: Access,
    out: mpsc::UnboundedSender<Response>,
) {
    if let Err((code, message)) = super::identity::check(access, options.identity.as_deref()) {
        tracing::warn!(backup = id, "restore of {id} refused: {message}");
        let _ = out.send(error(code, message));
        return;
    }
    if let Some(dir) = &options.redis_dir {
        super::restore_redis::stage(runner, &config, id, options, dir, &out).await;
        return;
    }
    if let Some(dir) = &options.to_dir {
        super::restore_files::restore(runner, &config, id, options, dir, access, &out).await;
        return;
    }
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
    let Prepared {
        manifest,
        plan,
        remote,
        identity,
    } = prepare(&config, id, options).await?;
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
    let source = Source { remote, identity };
    let out = out.clone();
    run.spawn(move |run| execute(run, config, manifest, plan, source, claim, out));
    Ok(())
}

/// What a restore reads: the copy at an offsite target (`remote`) or in backup-dir, and the
/// identity it decrypts with.
struct Source {
    remote: Option<Remote>,
    identity: Option<PathBuf>,
}

/// What [`prepare`] found.
struct Prepared {
    manifest: Manifest,
    plan: RestorePlan,
    remote: Option<Remote>,
    identity: Option<PathBuf>,
}

/// The backup's manifest and the restore's plan (from backup-dir, or from the copy at the
/// offsite target `options.target`), after every refusal.
async fn prepare(config: &Config, id: &str, options: &Options) -> Result<Prepared, RestoreError> {
    let cluster = database::system_identifier(&config.postgres).await?;
    let cluster = cluster.as_deref();
    let (manifest, mut plan, remote) = match &options.target {
        None => {
            let (manifest, plan) = local(config, id, options, cluster)?;
            (manifest, plan, None)
        }
        Some(name) => {
            let (remote, manifest, plan) =
                remote::prepare(config, name, id, options, cluster).await?;
            (manifest, plan, Some(remote))
        }
    };
    plan.estimate = evidence::estimate(&config.daemon.backup_dir, &manifest);
    if options.identity.is_some() && !manifest.encrypted() {
        return Err(RestoreError::BadRequest(format!(
            "{id} is not encrypted: restore it without --identity"
        )));
    }
    if plan.replace {
        swap::check_free(&config.postgres, &plan.to).await?;
    } else if let Target::NotEmpty(tables) = database::target(&config.postgres, &plan.to).await? {
        return Err(RestoreError::TargetNotEmpty {
            db: plan.to.clone(),
            tables,
        });
    }
    exec::preflight(&config.daemon.restore_scratch_dir, plan.scratch_bytes)?;
    // The identity is checked here, so that a dry run already says when it is missing.
    let identity: Option<PathBuf> = options.identity.clone().or_else(|| {
        config.jobs.values().find_map(|j| match &j.spec {
            JobSpec::Backup(b) if j.name.as_str() == manifest.job => b.verify_identity_file.clone(),
            _ => None,
        })
    });
    unpack::identity(id, manifest.encrypted(), identity.as_deref())?;
    if let Some(remote) = &remote {
        remote::check_present(remote, &plan).await?;
    }
    Ok(Prepared {
        manifest,
        plan,
        remote,
        identity,
    })
}

/// The manifest and plan of backup `id` in backup-dir.
fn local(
    config: &Config,
    id: &str,
    options: &Options,
    target_cluster: Option<&str>,
) -> Result<(Manifest, RestorePlan), RestoreError> {
    let unknown = || {
        let names: Vec<&str> = config.offsite.keys().map(String::as_str).collect();
        let hint = if names.is_empty() {
            String::new()
        } else {
            format!(
                " (a copy at an offsite target is restored with --target {})",
                names.join("|")
            )
        };
        RestoreError::UnknownBackup(format!(
            "no backup {id:?} in {}{hint}",
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
    let how = match manifest.source {
        crate::config::BackupSource::Postgres => None,
        crate::config::BackupSource::Redis => Some("--redis-dir DIR"),
        crate::config::BackupSource::Files => Some("--to-dir DIR"),
    };
    if let Some(how) = how {
        return Err(RestoreError::BadRequest(format!(
            "{id} is a {} backup: restore it with {how}",
            manifest.source.as_str()
        )));
    }
    let plan = plan::plan(&manifest, &dir, options, target_cluster)?;
    Ok((manifest, plan))
}

/// The restore's task: exec, the run's record, then the answer.
async fn execute(
    run: RestoreRun,
    config: Arc<Config>,
    manifest: Manifest,
    plan: RestorePlan,
    source: Source,
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
        identity_file: source.identity.as_deref(),
        remote: source.remote.as_ref(),
        cancel: run.token(),
        progress: &progress,
    };
    let span = run.span();
    let from = source.remote.as_ref().map_or_else(String::new, |r| {
        format!(" from offsite target {}", r.name())
    });
    span.in_scope(|| tracing::info!("restoring {}{from} into {}", plan.id, plan.to));
    let result = async {
        // First, before anything is touched: a pinned safety backup of what is replaced.
        let safety_backup = safety_first(&config, &manifest, &plan, &env).await?;
        let mut report = exec::run(&env, &plan).await?;
        report.safety_backup = safety_backup;
        Ok(report)
    }
    .instrument(span)
    .await;
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

/// With `--replace` over an existing database: its safety backup, taken and pinned
/// ([`safety`]), or the reason the replace is refused.
async fn safety_first(
    config: &Arc<Config>,
    manifest: &Manifest,
    plan: &RestorePlan,
    env: &exec::Env<'_>,
) -> Result<Option<String>, RestoreError> {
    if !plan.replace || database::target(&config.postgres, &plan.to).await? == Target::Missing {
        return Ok(None);
    }
    let taken = safety::take(config, manifest, &plan.to, env.cancel, env.progress).await?;
    tracing::info!("safety backup {taken} of {} taken and pinned", plan.to);
    Ok(Some(taken))
}

pub(super) fn refusal(e: &RestoreError) -> Response {
    let code = match e {
        RestoreError::BadRequest(_) => ErrorCode::BadRequest,
        RestoreError::UnknownBackup(_) => ErrorCode::UnknownBackup,
        RestoreError::SourceDatabase(_) => ErrorCode::RestoreSourceDatabase,
        RestoreError::TargetNotEmpty { .. } => ErrorCode::RestoreTargetNotEmpty,
        RestoreError::ReplacedExists(_) => ErrorCode::RestoreReplacedExists,
        RestoreError::NoSpace { .. } => ErrorCode::RestoreNoSpace,
        RestoreError::Busy(_) => ErrorCode::RestoreBusy,
        RestoreError::ShuttingDown => ErrorCode::ShuttingDown,
        RestoreError::SafetyBackup { .. } => ErrorCode::RestoreSafetyBackup,
        RestoreError::Failed(_)
        | RestoreError::FolderFailed { .. }
        | RestoreError::Scratch(_)
        | RestoreError::Cancelled => ErrorCode::Internal,
    };
    error(code, e.to_string())
}
