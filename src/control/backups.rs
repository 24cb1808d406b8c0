//! Handlers of the backup requests on the local catalog: `backups`, `backup_show`,
//! `backup_verify` (the offsite ones are in [`super::offsite`]).

use tokio_util::sync::CancellationToken;

use crate::config::{Config, JobSpec, VerifyLevel};
use crate::jobs::backup::manifest::Manifest;
use crate::jobs::backup::verify::{self, VerifyEnv};
use crate::jobs::catalog::{self, State};
use crate::protocol::{BackupSummary, ErrorCode, Response};

pub fn list(config: &Config) -> Response {
    match catalog::list(&config.daemon.backup_dir) {
        Ok(entries) => Response::Backups {
            backups: entries
                .into_iter()
                .map(|e| {
                    let offsite = e.manifest.as_ref().and_then(|m| offsite_stage(config, m));
                    summary(e, offsite)
                })
                .collect(),
        },
        Err(e) if !config.daemon.backup_dir.exists() => {
            let _ = e;
            Response::Backups {
                backups: Vec::new(),
            }
        }
        Err(e) => error(ErrorCode::Internal, e.to_string()),
    }
}

/// One catalog entry (local or remote) as `backups` lists it.
pub(super) fn summary(e: catalog::Entry, offsite: Option<String>) -> BackupSummary {
    let m = e.manifest.as_ref();
    BackupSummary {
        id: e.id.clone(),
        state: match e.state {
            State::Verified => "verified",
            State::Failed => "failed",
            State::Unreadable => "unreadable",
        }
        .into(),
        job: m.map(|m| m.job.clone()),
        source: m.map(|m| m.source.as_str().to_owned()),
        method: m
            .filter(|m| m.source == crate::config::BackupSource::Postgres)
            .map(|m| m.method.as_str().to_owned()),
        lsn: m
            .and_then(|m| m.physical.as_ref())
            .map(|p| format!("{} (timeline {})", p.start_lsn, p.timeline)),
        database: m.map(|m| m.database.clone()),
        started: m.map(|m| m.started),
        bytes: m.map(|m| m.bytes),
        encrypted: m.is_some_and(Manifest::encrypted),
        verified_level: m.map(|m| m.verification.level),
        offsite,
        pinned: e.pin.as_ref().map(crate::pins::Pin::label),
        problem: e.problem,
    }
}

/// The stage of the backup's copy at each of its job's offsite targets, in the job's order:
/// `eu: verified, us: failed` (`none`: no copy tried yet); `None` when the job has no target.
fn offsite_stage(config: &Config, m: &Manifest) -> Option<String> {
    let targets = config.jobs.values().find_map(|j| match &j.spec {
        JobSpec::Backup(b) if j.name.as_str() == m.job && !b.offsite.is_empty() => Some(&b.offsite),
        _ => None,
    })?;
    let stages: Vec<String> = targets
        .iter()
        .map(|target| {
            let stage = crate::offsite::state::read(&config.daemon.state_dir, target, &m.id)
                .map_or("none", |r| r.stage.as_str());
            format!("{target}: {stage}")
        })
        .collect();
    Some(stages.join(", "))
}

pub fn show(config: &Config, id: &str) -> Response {
    let Some(dir) = catalog::path_of(&config.daemon.backup_dir, id) else {
        return error(
            ErrorCode::UnknownBackup,
            format!("no backup {id:?} in {}", config.daemon.backup_dir.display()),
        );
    };
    match std::fs::read(dir.join(crate::jobs::backup::manifest::MANIFEST))
        .map(|b| serde_json::from_slice(&b))
    {
        Ok(Ok(manifest)) => Response::Manifest {
            manifest,
            evidence: crate::restore::evidence::read(&dir),
        },
        Ok(Err(e)) => error(ErrorCode::Internal, format!("{id}: invalid manifest: {e}")),
        Err(e) => error(ErrorCode::Internal, format!("{id}: {e}")),
    }
}

pub async fn verify(
    config: &Config,
    in_use: &std::sync::Arc<catalog::InUse>,
    id: &str,
    level: Option<VerifyLevel>,
    cancel: &CancellationToken,
) -> Response {
    let Some(dir) = catalog::path_of(&config.daemon.backup_dir, id) else {
        return error(
            ErrorCode::UnknownBackup,
            format!("no backup {id:?} in {}", config.daemon.backup_dir.display()),
        );
    };
    // Retention must not remove it while we read it.
    let Some(_claim) = in_use.claim(id) else {
        return error(
            ErrorCode::AlreadyRunning,
            format!("backup {id} is being verified or removed right now"),
        );
    };
    let manifest = match Manifest::read(&dir) {
        Ok(m) => m,
        Err(e) => {
            return error(
                ErrorCode::UnknownBackup,
                format!("{id} is not a backup: {e}"),
            );
        }
    };
    // The job that made it, if it is still configured, says how to decrypt and where to restore.
    let spec = config.jobs.values().find_map(|j| match &j.spec {
        JobSpec::Backup(b) if j.name.as_str() == manifest.job => Some(b),
        _ => None,
    });
    let mut target = config.postgres.clone();
    target.dbname = manifest.database.clone();
    let env = VerifyEnv {
        cancel,
        restore_target: spec.map_or(&target, |s| &s.restore_target),
        identity_file: spec.and_then(|s| s.verify_identity_file.as_deref()),
        parallel: spec.map_or(1, |s| s.parallel),
        scratch_dir: Some(&config.daemon.restore_scratch_dir),
        drill_sql: spec.map_or(&[][..], |s| s.drill_sql.as_slice()),
    };
    let level = level.unwrap_or(VerifyLevel::Full);
    tracing::info!(backup = id, "verifying backup {id} ({level:?}) on request");
    let verified = verify::verify(&env, &dir, &manifest, level).await;
    // A physical backup's restore drill is its point-in-time drill.
    let verified = match verified {
        Ok(v) => Ok(super::restore_pitr::drill_on_verify(
            config, spec, &manifest, level, v, cancel,
        )
        .await),
        Err(e) => Err(e),
    };
    match verified {
        Ok(v) => {
            let passed = v.outcome == crate::jobs::backup::manifest::VerifyOutcome::Passed;
            if passed {
                tracing::info!(backup = id, "backup {id} verified: {}", v.details);
            } else {
                tracing::error!(
                    backup = id,
                    "backup {id} FAILED verification: {}",
                    v.details
                );
            }
            Response::Verified {
                id: id.to_owned(),
                verification: serde_json::to_value(&v).unwrap_or_default(),
                passed,
            }
        }
        Err(_) => error(ErrorCode::ShuttingDown, "verification cancelled".into()),
    }
}

pub(super) fn error(code: ErrorCode, message: String) -> Response {
    Response::Error { code, message }
}
