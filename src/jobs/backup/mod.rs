//! `kind = "backup"`: one database, dumped by pg_dump in one snapshot, streamed to disk with its
//! checksum, verified, and published atomically.
//!
//! The steps of a run: preflight (backup-dir safe, passfile safe, enough free space) ->
//! snapshot (REPEATABLE READ, exported; rows counted in it while pg_dump runs) -> dump into
//! `.partial-<id>/` -> globals (`globals.sql`) -> verify -> manifest -> rename to `<id>/` and
//! fsync backup-dir. A failed verification renames to `.failed-<id>/` instead. Any other failure, a cancel or a crash
//! leaves no `<id>/`: the partial folder is removed by its guard, or at the next start-up.

mod copy;
mod drill;
pub mod dump;
pub mod files;
mod finish;
pub mod globals;
pub mod manifest;
pub(crate) mod partial;
pub mod physical;
pub mod redis;
mod scratch_db;
pub(crate) mod snapshot;
pub(crate) mod stream;
pub mod verify;
pub(crate) mod writeback;

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::json;

use self::manifest::{Encryption, Manifest, SafetyFor, Server, Verification, VerifyOutcome};
use self::partial::Partial;
use super::catalog::{self, State};
use super::{JobContext, JobError, JobReport};
use crate::config::{BackupMethod, BackupSource, BackupSpec, VerifyLevel};
use crate::pg;

/// The id suffix of a safety backup: `<time>-<job>.safety`.
pub const SAFETY_SUFFIX: &str = ".safety";

/// One run of the job, by its source.
pub async fn run(ctx: &JobContext, spec: &BackupSpec) -> Result<JobReport, JobError> {
    match spec.source {
        BackupSource::Postgres if spec.method == BackupMethod::Physical => {
            physical::take(ctx, spec).await
        }
        BackupSource::Postgres => take(ctx, spec, None).await,
        BackupSource::Redis => redis::take(ctx, spec).await,
        BackupSource::Files => files::take(ctx, spec).await,
    }
}

/// One backup through the whole pipeline. With `safety` it is a safety backup of
/// `spec.dbname` before a `restore --replace` ([`crate::restore::safety`]): id
/// `<time>-<job>.safety`, verified at level full, pinned before it is published (so it is
/// never visible unpinned), and never copied offsite.
pub async fn take(
    ctx: &JobContext,
    spec: &BackupSpec,
    safety: Option<&SafetyFor>,
) -> Result<JobReport, JobError> {
    let backup_dir = &ctx.config.daemon.backup_dir;
    let id = format!(
        "{}-{}{}",
        ctx.now.format("%Y%m%dT%H%M%SZ"),
        ctx.job.name,
        if safety.is_some() { SAFETY_SUFFIX } else { "" }
    );
    let level = match safety {
        Some(_) => VerifyLevel::Full,
        None => effective_level(ctx, spec),
    };
    if ctx.dry_run {
        return Ok(JobReport {
            message: format!(
                "would dump {} to {}/{id} ({:?}, {:?}, verify {level:?})",
                spec.dbname,
                backup_dir.display(),
                spec.format,
                spec.compress
            ),
            details: json!({ "id": id, "verify": level }),
        });
    }
    catalog::ensure_dir(backup_dir).map_err(|e| JobError::permanent(e.to_string()))?;
    let mut source = ctx.config.postgres.clone();
    source.dbname = spec.dbname.clone();
    if let Some(pf) = &source.passfile {
        pg::passfile::check(pf).map_err(|e| JobError::permanent(e.to_string()))?;
    }
    let t0 = Instant::now();
    ctx.progress("connecting to PostgreSQL");
    let client = cancellable(ctx, pg::connect(&source, &spec.dbname))
        .await?
        .map_err(transient)?;
    let system_identifier = cancellable(ctx, pg::identity::system_identifier(&client)).await?;
    let snap = cancellable(ctx, snapshot::begin(client))
        .await?
        .map_err(transient)?;
    let pg_dump = pg::tool(&source, "pg_dump").map_err(|e| JobError::permanent(e.to_string()))?;
    let pg_dump_version = pg::tool_version(&pg_dump).await;
    let partial = open_partial(
        ctx,
        backup_dir,
        &id,
        snap.database_bytes,
        spec.min_free_after,
    )?;

    ctx.progress(format!("dump: {} as of snapshot {}", spec.dbname, snap.id));
    let (files, counts) = tokio::join!(
        dump::dump(ctx, spec, &source, &snap.id, partial.path()),
        cancellable(ctx, async {
            let counts = snapshot::count_rows(&snap.client).await?;
            Ok::<_, crate::pg::PgError>((counts, snapshot::table_bytes(&snap.client).await?))
        }),
    );
    let mut files = files?;
    ctx.progress("globals: pg_dumpall --globals-only");
    // After the dump, so the dump stays files[0], where verify and restore look for it.
    files.push(globals::dump(ctx, spec, &source, partial.path()).await?);
    let (tables, table_bytes) =
        counts?.map_err(|e| JobError::permanent(format!("counting rows in the snapshot: {e}")))?;
    // The snapshot must outlive pg_dump's use of it; only now end the transaction.
    let _ = snap.client.batch_execute("COMMIT").await;
    let finished = Utc::now();
    let bytes: u64 = files.iter().map(|f| f.bytes).sum();
    let manifest = Manifest {
        manifest_version: manifest::VERSION_DB,
        source: BackupSource::Postgres,
        method: Default::default(),
        id: id.clone(),
        job: ctx.job.name.to_string(),
        database: spec.dbname.clone(),
        server: Server {
            host: source.host.clone(),
            port: source.port,
            version: snap.server_version.clone(),
            system_identifier,
        },
        pg_dump_version,
        format: spec.format,
        compression: spec.compress,
        encryption: (!spec.encrypt_to.is_empty()).then(|| Encryption {
            recipients: spec.encrypt_to.clone(),
        }),
        options: json!({ "parallel": spec.parallel, "snapshot": snap.id, "database_bytes": snap.database_bytes }),
        started: ctx.now,
        finished,
        duration_ms: u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX),
        bytes,
        files,
        table_count: tables.len(),
        tables,
        table_bytes,
        verification: Verification {
            level,
            at: finished,
            outcome: VerifyOutcome::Failed,
            details: "not verified yet".into(),
        },
        daemon_version: crate::VERSION.to_owned(),
        safety_for: safety.cloned(),
        redis: None,
        tree: None,
        physical: None,
    };

    let details = json!({
        "id": id,
        "bytes": bytes,
        "database_bytes": snap.database_bytes,
        "tables": manifest.table_count,
    });
    finish::verify_and_publish(ctx, spec, partial, manifest, level, details, safety).await
}

/// Pins the safety backup in its partial folder, so the published backup is pinned from its
/// first moment.
pub(super) fn pin_safety(
    dir: &std::path::Path,
    safety: &SafetyFor,
    now: DateTime<Utc>,
) -> Result<(), JobError> {
    let reason = format!(
        "safety backup before restore of {} into {}",
        safety.restore_of, safety.database
    );
    let pin = crate::pins::Pin::new(Some(reason), now)
        .map_err(|e| JobError::permanent(format!("pinning the safety backup: {e}")))?;
    crate::pins::write(dir, &pin)
        .map_err(|e| JobError::permanent(format!("pinning the safety backup: {e}")))
}

/// `verify`, raised to a restore drill when `verify-every` says one is due.
pub(super) fn effective_level(ctx: &JobContext, spec: &BackupSpec) -> VerifyLevel {
    let Some(every) = spec.verify_every else {
        return spec.verify;
    };
    let last_drill = catalog::list(&ctx.config.daemon.backup_dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.state == State::Verified)
        .filter_map(|e| e.manifest)
        .filter(|m| m.job == ctx.job.name.as_str() && m.verification.level == VerifyLevel::Restore)
        .map(|m| m.verification.at)
        .max();
    let due = last_drill
        .is_none_or(|at: DateTime<Utc>| (ctx.now - at).to_std().is_ok_and(|age| age >= every));
    if due {
        VerifyLevel::Restore
    } else {
        spec.verify
    }
}

/// The partial folder of backup `id`, after the free-space preflight for about `estimate`
/// bytes of source data (scaled by the job's last ratio) passed; a refusal is also an alert.
pub(super) fn open_partial(
    ctx: &JobContext,
    backup_dir: &std::path::Path,
    id: &str,
    estimate: u64,
    min_free_after: crate::config::FreeSpace,
) -> Result<Partial, JobError> {
    partial::preflight(
        backup_dir,
        estimate,
        last_ratio(backup_dir, &ctx.job.name),
        min_free_after,
    )
    .inspect_err(|why| crate::alerts::notifier::preflight_refused(ctx, why))
    .map_err(JobError::permanent)?;
    // The io error alone ("Read-only file system") would not say where.
    Partial::create(backup_dir, id).map_err(|e| {
        JobError::permanent(format!(
            "creating the backup folder in {}: {e}",
            backup_dir.display()
        ))
    })
}

/// Backup bytes per database byte of the job's newest verified backup.
fn last_ratio(dir: &std::path::Path, job: &crate::ids::JobName) -> Option<f64> {
    let newest = catalog::list(dir)
        .ok()?
        .into_iter()
        .rev()
        .filter(|e| e.state == State::Verified)
        .filter_map(|e| e.manifest)
        .find(|m| m.job == job.as_str() && !m.is_safety())?;
    let db = newest.options.get("database_bytes")?.as_u64()?;
    (db > 0).then(|| newest.bytes as f64 / db as f64)
}

fn transient(e: pg::PgError) -> JobError {
    JobError::Transient {
        message: e.to_string(),
        details: serde_json::Value::Null,
    }
}

/// Awaits `fut` unless the run is cancelled first.
pub(super) async fn cancellable<T>(
    ctx: &JobContext,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, JobError> {
    tokio::select! {
        out = fut => Ok(out),
        () = ctx.cancel.cancelled() => Err(JobError::Cancelled),
    }
}
