//! Handler of `restore_pitr` (`atprectl restore --pitr --time T|--latest --to-dir DIR`): the refusals
//! (a caller other than root or the daemon's user, a folder that is not empty, what
//! [`pitr::prepare`] finds missing, space), then — unless a dry run — the data directory
//! written by [`pitr::stage`] as a restore run ([`RestoreRun`]), its steps streamed as
//! `progress`. Starting the server is atprectl's (`--start`).

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::Instrument;

use super::backups::error;
use super::peer::Access;
use crate::config::{BackupMethod, Config, VerifyLevel};
use crate::jobs::backup::manifest::{Manifest, Verification, VerifyOutcome};
use crate::jobs::catalog::Claim;
use crate::protocol::{ErrorCode, Outcome, Response};
use crate::restore::RestoreError;
use crate::restore::pitr::{self, PitrError, PitrOptions, PitrReport, Prepared, stage};
use crate::restore::run::RestoreRun;
use crate::runner::Runner;

/// Runs `restore_pitr`; every message for the client goes to `out`.
pub async fn restore(
    runner: &Arc<Runner>,
    config: Arc<Config>,
    options: PitrOptions,
    dry_run: bool,
    access: Access,
    out: mpsc::UnboundedSender<Response>,
) {
    if !access.privileged() {
        let message = "not permitted: only root and the daemon's own user may restore to a \
                       point in time (the daemon writes the data directory with its own rights)";
        tracing::warn!("point-in-time restore refused: {message}");
        let _ = out.send(error(ErrorCode::NotPermitted, message.to_owned()));
        return;
    }
    if let Err((code, message)) = super::identity::check(access, options.identity.as_deref()) {
        let _ = out.send(error(code, message));
        return;
    }
    if let Err(e) = start(runner, config, &options, dry_run, &out).await {
        tracing::warn!(
            "point-in-time restore to {} into {}: {e}",
            options.goal_text(),
            options.to_dir.display()
        );
        let _ = out.send(refusal(&e));
    }
}

async fn start(
    runner: &Arc<Runner>,
    config: Arc<Config>,
    options: &PitrOptions,
    dry_run: bool,
    out: &mpsc::UnboundedSender<Response>,
) -> Result<(), PitrError> {
    if !dry_run {
        RestoreRun::check_free(runner).map_err(busy)?;
    }
    options.goal()?;
    pitr::check_dir(&options.to_dir)?;
    let owner = pitr::owner(options.owner.as_deref())?;
    let (prepared, source) = match options.target.as_deref() {
        Some(name) => {
            let (prepared, source) = pitr::offsite::prepare(&config, options, name).await?;
            (prepared, Some(source))
        }
        None => {
            let (config, options) = (Arc::clone(&config), options.clone());
            let prepared = tokio::task::spawn_blocking(move || pitr::prepare(&config, &options))
                .await
                .map_err(|e| PitrError::Failed(e.to_string()))??;
            (prepared, None)
        }
    };
    pitr::check_space(&options.to_dir, prepared.plan.space_needed)?;
    if dry_run {
        let _ = out.send(Response::PitrPlan {
            plan: prepared.plan,
        });
        return Ok(());
    }
    let base = prepared.plan.base.clone();
    let claim = runner.in_use().claim(&base).ok_or_else(|| {
        PitrError::Failed(format!(
            "base backup {base} is being verified or removed right now"
        ))
    })?;
    let dir = options.to_dir.display().to_string();
    let from = options
        .target
        .as_deref()
        .map(|t| format!(" from offsite {t}"))
        .unwrap_or_default();
    let what = format!(
        "the point-in-time restore to {}{from} into {dir}",
        options.goal_text()
    );
    let run =
        RestoreRun::begin_into(runner, what, &base, &prepared.manifest.job, &dir).map_err(busy)?;
    let (options, out) = (options.clone(), out.clone());
    run.spawn(move |run| execute(run, prepared, source, options, owner, claim, out));
    Ok(())
}

/// The restore's task: the data directory written, the run's record, then the answer.
async fn execute(
    run: RestoreRun,
    prepared: Prepared,
    source: Option<pitr::offsite::Source>,
    options: PitrOptions,
    owner: Option<(u32, u32)>,
    claim: Claim,
    out: mpsc::UnboundedSender<Response>,
) {
    let t0 = Instant::now();
    let (token, run_id, span) = (run.token().clone(), run.run_id().clone(), run.span());
    let plan = prepared.plan.clone();
    span.in_scope(|| {
        tracing::info!(
            "restoring base backup {} and WAL {} to {} into {} (to {})",
            plan.base,
            plan.first(),
            plan.last(),
            options.to_dir.display(),
            options.goal_text()
        )
    });
    let progress_out = out.clone();
    let dir = options.to_dir.clone();
    let downloaded = match &source {
        Some(s) => {
            let (out, run_id) = (out.clone(), run.run_id().clone());
            let progress = move |message: String| {
                let _ = out.send(Response::Progress {
                    run_id: run_id.clone(),
                    message,
                });
            };
            s.download(&prepared, &token, &progress)
                .instrument(span.clone())
                .await
        }
        None => Ok(()),
    };
    let staged = match downloaded {
        Ok(()) => stage_from(prepared, owner, dir, token, run_id, progress_out, &span).await,
        Err(_) if token.is_cancelled() => Err(PitrError::Cancelled),
        Err(e) => Err(PitrError::Failed(e)),
    };
    if let Some(s) = &source {
        s.remove();
    }
    drop(claim);
    let result = staged.map(|staged| PitrReport {
        plan,
        to_dir: options.to_dir.clone(),
        owner: owner.map(|_| options.owner.clone().unwrap_or_else(|| "postgres".into())),
        staged,
        duration_ms: u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX),
    });
    let ended = match &result {
        Ok(r) => Ok((
            format!(
                "restored base backup {} and {} WAL segment(s) ({} to {}) into {}, recovering \
                 to {}",
                r.plan.base,
                r.staged.segments,
                r.plan.first(),
                r.plan.last(),
                r.to_dir.display(),
                options.goal_text()
            ),
            serde_json::to_value(r).unwrap_or_default(),
        )),
        Err(PitrError::Cancelled) => Err((Outcome::Cancelled, PitrError::Cancelled.to_string())),
        Err(e) => Err((Outcome::Failed, e.to_string())),
    };
    run.finish_with(ended).await;
    let answer = match result {
        Ok(report) => Response::PitrRestored { report },
        Err(e) => refusal(&e),
    };
    let _ = out.send(answer);
}

/// The data directory written from `prepared` (the local archive, or a target's download).
async fn stage_from(
    prepared: Prepared,
    owner: Option<(u32, u32)>,
    dir: std::path::PathBuf,
    token: tokio_util::sync::CancellationToken,
    run_id: crate::ids::RunId,
    progress_out: mpsc::UnboundedSender<Response>,
    span: &tracing::Span,
) -> Result<stage::Staged, PitrError> {
    tokio::task::spawn_blocking(move || {
        let atpred = pitr::atpred_binary()?;
        let inputs = stage::Inputs {
            folder: &prepared.folder,
            manifest: &prepared.manifest,
            archive_dir: &prepared.archive_dir,
            entries: &prepared.entries,
            identity: prepared.identity.as_deref(),
            atpred: &atpred,
            owner,
            durable: true,
        };
        let progress = |message: String| {
            let _ = progress_out.send(Response::Progress {
                run_id: run_id.clone(),
                message,
            });
        };
        stage::stage(
            &inputs,
            &prepared.plan,
            &dir,
            &|| token.is_cancelled(),
            &progress,
        )
        .map_err(|e| {
            if token.is_cancelled() {
                PitrError::Cancelled
            } else {
                PitrError::Failed(e)
            }
        })
    })
    .instrument(span.clone())
    .await
    .unwrap_or_else(|e| Err(PitrError::Failed(e.to_string())))
}

/// `backups verify ID --level restore` of a physical backup: after the full verification
/// passed, its point-in-time drill ([`pitr::drill`]), whose outcome becomes the verification's.
pub(super) async fn drill_on_verify(
    config: &Config,
    spec: Option<&crate::config::BackupSpec>,
    manifest: &Manifest,
    level: VerifyLevel,
    mut v: Verification,
    cancel: &tokio_util::sync::CancellationToken,
) -> Verification {
    if manifest.method != BackupMethod::Physical
        || level != VerifyLevel::Restore
        || v.outcome != VerifyOutcome::Passed
    {
        return v;
    }
    let progress = |_: String| {};
    let env = pitr::drill::DrillEnv {
        config,
        dbname: spec.map_or(&config.postgres.dbname, |s| &s.dbname),
        drill_sql: spec.map_or(&[][..], |s| s.drill_sql.as_slice()),
        identity: spec.and_then(|s| s.verify_identity_file.as_deref()),
        lag: spec.map_or(std::time::Duration::from_secs(60), |s| s.pitr_drill.lag),
        cancel,
        progress: &progress,
    };
    match pitr::drill::run(&env, Some(&manifest.id)).await {
        Ok(d) => {
            v.details = format!(
                "{}; PITR drill passed: {} segment(s) ({} to {}) replayed to {}, recovery point \
                 {:.0} s old, {}, {:.1} s",
                v.details,
                d.segments_replayed,
                d.first_segment,
                d.last_segment,
                d.reached_lsn,
                d.recovery_point_age_seconds,
                d.amcheck,
                d.duration_ms as f64 / 1000.0
            );
        }
        Err(e) => {
            v.outcome = VerifyOutcome::Failed;
            v.details = format!("{}; PITR drill FAILED: {e}", v.details);
        }
    }
    v
}

fn busy(e: RestoreError) -> PitrError {
    PitrError::Busy(e.to_string())
}

fn refusal(e: &PitrError) -> Response {
    use crate::restore::pitr::plan::PlanError;
    let code = match e {
        PitrError::BadRequest(_) => ErrorCode::BadRequest,
        PitrError::UnknownJob(_) => ErrorCode::UnknownJob,
        PitrError::NoArchiveJob(_) => ErrorCode::PitrNoArchiveJob,
        PitrError::DirNotEmpty(_) => ErrorCode::RestoreTargetNotEmpty,
        PitrError::Plan(PlanError::NoBase(_)) => ErrorCode::PitrNoBase,
        PitrError::Plan(PlanError::Gap(_)) => ErrorCode::PitrGap,
        PitrError::Plan(PlanError::NotArchived(_)) => ErrorCode::PitrNotArchived,
        PitrError::NoSpace { .. } => ErrorCode::RestoreNoSpace,
        PitrError::Busy(_) => ErrorCode::RestoreBusy,
        PitrError::Failed(_) | PitrError::Cancelled => ErrorCode::Internal,
    };
    let message = match e {
        // The run's own message already says "refusing to restore: …".
        PitrError::Busy(m) => m.clone(),
        e => e.to_string(),
    };
    error(code, message)
}
