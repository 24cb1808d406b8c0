//! Handler of `restore`: the plan ([`crate::restore::plan`], or [`crate::restore::remote`]
//! for a copy at an offsite target), the refusals, then the restore itself
//! ([`crate::restore::exec`]) with its steps streamed as `progress`.

use std::path::PathBuf;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::backups::error;
use super::peer::Access;
use crate::config::{Config, JobSpec};
use crate::ids::RunId;
use crate::jobs::backup::manifest::Manifest;
use crate::jobs::catalog::{self, InUse};
use crate::protocol::{ErrorCode, Response};
use crate::restore::database::{self, Target};
use crate::restore::plan::RestorePlan;
use crate::restore::{Options, RestoreError, exec, plan, remote, swap};

/// Runs `restore`; every message for the client goes to `out` (progress, then the answer).
/// `--identity` only from root and the daemon's user ([`super::identity`]).
pub async fn restore(
    config: &Config,
    in_use: &std::sync::Arc<InUse>,
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
    let (manifest, plan, remote) = match &options.target {
        None => {
            let (manifest, plan) = local(config, id, options)?;
            (manifest, plan, None)
        }
        Some(name) => {
            let (remote, manifest, plan) = remote::prepare(config, name, id, options).await?;
            (manifest, plan, Some(remote))
        }
    };
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
    exec::identity(id, manifest.encrypted(), identity.as_deref())?;
    if let Some(remote) = &remote {
        remote::check_present(remote, &plan).await?;
    }
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
        remote: remote.as_ref(),
        cancel: &cancel,
        progress: &progress,
    };
    let from = options
        .target
        .as_ref()
        .map_or_else(String::new, |t| format!(" from offsite target {t}"));
    tracing::info!(backup = id, "restoring {id}{from} into {}", plan.to);
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

/// The manifest and plan of backup `id` in backup-dir.
fn local(
    config: &Config,
    id: &str,
    options: &Options,
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
    let plan = plan::plan(&manifest, &dir, options)?;
    Ok((manifest, plan))
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
