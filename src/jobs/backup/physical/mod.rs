//! `method = "physical"`: a base backup of the whole `[postgres]` cluster by
//! `pg_basebackup -Ft -X none --manifest-checksums=SHA256 -D -`, for point-in-time recovery
//! with the archived WAL.
//!
//! With one tablespace and `-D -`, pg_basebackup writes base.tar to stdout and injects its
//! `backup_manifest` as the archive's last member, so the whole backup is one stream: it goes
//! through the same zstd/age/SHA-256 pipeline and partial folder as a pg_dump, and nothing of
//! the cluster is ever on disk in plain form. On the way, [`tar_watch`] keeps `backup_label` and
//! `backup_manifest`, whose WAL range ([`facts`]) the manifest records for a PITR restore.
//! Tablespaces other than pg_default and pg_global are refused (pg_basebackup cannot write
//! them to one stream). Verification: [`verify`].

mod chunks;
pub mod facts;
mod pitr;
pub mod tar_watch;
pub mod unpack;
mod untar;
mod verify;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::Utc;
use serde_json::json;
use tokio_postgres::Client;

pub use self::facts::PhysicalFacts;
use self::tar_watch::{TarWatch, Watching};
use super::manifest::{
    Encryption, FileSum, Manifest, Server, VERSION, Verification, VerifyOutcome,
};
use super::stream::Layers;
use super::{cancellable, catalog, dump, open_partial};
use crate::config::{BackupMethod, BackupSource, BackupSpec, Compression, DumpFormat};
use crate::jobs::{JobContext, JobError, JobReport};
use crate::pg;
use crate::process;

pub(super) use self::verify::verify;

/// The manifest's `database` of a physical backup: every database of the cluster.
pub const DATABASE: &str = "cluster";

/// What the cluster is, asked before the backup starts.
struct Cluster {
    version: String,
    /// Every database's size together, for the free-space preflight.
    bytes: u64,
    /// Tablespaces besides pg_default and pg_global.
    tablespaces: String,
}

/// One base backup through the whole pipeline.
pub async fn take(ctx: &JobContext, spec: &BackupSpec) -> Result<JobReport, JobError> {
    let backup_dir = &ctx.config.daemon.backup_dir;
    let id = format!("{}-{}", ctx.now.format("%Y%m%dT%H%M%SZ"), ctx.job.name);
    // `verify-every` schedules the PITR drill here (`pitr::after_backup`), not a restore level.
    let level = spec.verify;
    let mut source = ctx.config.postgres.clone();
    source.dbname = spec.dbname.clone();
    if ctx.dry_run {
        return Ok(JobReport {
            message: format!(
                "would take a base backup of {}:{} to {}/{id} ({:?}, verify {level:?})",
                source.host,
                source.port,
                backup_dir.display(),
                spec.compress
            ),
            details: json!({ "id": id, "verify": level }),
        });
    }
    catalog::ensure_dir(backup_dir).map_err(|e| JobError::permanent(e.to_string()))?;
    if let Some(pf) = &source.passfile {
        pg::passfile::check(pf).map_err(|e| JobError::permanent(e.to_string()))?;
    }
    let t0 = Instant::now();
    ctx.progress("connecting to PostgreSQL");
    let client = cancellable(ctx, pg::connect(&source, &spec.dbname))
        .await?
        .map_err(|e| JobError::Transient {
            message: e.to_string(),
            details: serde_json::Value::Null,
        })?;
    let system_identifier = cancellable(ctx, pg::identity::system_identifier(&client)).await?;
    let cluster = cancellable(ctx, inspect(&client)).await??;
    drop(client);
    if !cluster.tablespaces.is_empty() {
        return Err(JobError::permanent(format!(
            "the cluster has tablespaces besides pg_default ({}): a physical backup streams one \
             tablespace only; move them to pg_default or back them up another way",
            cluster.tablespaces
        )));
    }
    let pg_basebackup =
        pg::tool(&source, "pg_basebackup").map_err(|e| JobError::permanent(e.to_string()))?;
    let pg_basebackup_version = pg::tool_version(&pg_basebackup).await;
    let partial = open_partial(ctx, backup_dir, &id, cluster.bytes, spec.min_free_after)?;
    let recipients = dump::recipients(spec)?;
    let zstd_level = match spec.compress {
        Compression::Zstd { level } => Some(level),
        _ => None,
    };
    let name = file_name(zstd_level.is_some(), !recipients.is_empty());
    let proc_spec = pg::tool_spec(&source, "pg_basebackup")
        .map_err(|e| JobError::permanent(e.to_string()))?
        .args([
            "--format=tar".to_owned(),
            "--wal-method=none".to_owned(),
            "--manifest-checksums=SHA256".to_owned(),
            // A scheduled backup starts when it is due, not after a spread checkpoint.
            "--checkpoint=fast".to_owned(),
            format!("--label=atpred {id}"),
            "--pgdata=-".to_owned(),
        ]);
    ctx.progress(format!(
        "pg_basebackup: {}:{} ({})",
        source.host,
        source.port,
        dump::mib(cluster.bytes)
    ));
    let watch = Arc::new(Mutex::new(TarWatch::default()));
    let layers = Layers {
        zstd_level,
        recipients,
    };
    let watching = Arc::clone(&watch);
    let written = dump::stream_child_through(
        ctx,
        &proc_spec,
        &partial.path().join(&name),
        layers,
        basebackup_failed,
        move |pipe| {
            Box::new(Watching {
                inner: pipe,
                watch: watching,
            })
        },
    )
    .await?;
    let watch = std::mem::take(
        &mut *watch
            .lock()
            .map_err(|_| JobError::permanent("the tar watch was poisoned"))?,
    );
    let facts = read_facts(&watch, pg_basebackup_version)?;
    let finished = Utc::now();
    let bytes = written.bytes;
    let manifest = Manifest {
        manifest_version: VERSION,
        source: BackupSource::Postgres,
        method: BackupMethod::Physical,
        id: id.clone(),
        job: ctx.job.name.to_string(),
        database: DATABASE.to_owned(),
        server: Server {
            host: source.host.clone(),
            port: source.port,
            version: cluster.version,
            system_identifier,
        },
        pg_dump_version: String::new(),
        format: DumpFormat::Custom,
        compression: spec.compress,
        encryption: (!spec.encrypt_to.is_empty()).then(|| Encryption {
            recipients: spec.encrypt_to.clone(),
        }),
        options: json!({ "database_bytes": cluster.bytes, "wal_method": "none", "checkpoint": "fast" }),
        started: ctx.now,
        finished,
        duration_ms: u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX),
        bytes,
        files: vec![FileSum {
            path: name,
            bytes,
            sha256: written.sha256,
        }],
        table_count: 0,
        tables: Default::default(),
        table_bytes: Default::default(),
        verification: Verification {
            level,
            at: finished,
            outcome: VerifyOutcome::Failed,
            details: "not verified yet".into(),
        },
        daemon_version: crate::VERSION.to_owned(),
        safety_for: None,
        redis: None,
        tree: None,
        physical: Some(facts.clone()),
    };
    let details = json!({
        "id": id,
        "bytes": bytes,
        "tar_bytes": facts.tar_bytes,
        "database_bytes": cluster.bytes,
        "start_lsn": facts.start_lsn,
        "stop_lsn": facts.stop_lsn,
        "timeline": facts.timeline,
    });
    let report =
        super::finish::verify_and_publish(ctx, spec, partial, manifest, level, details, None)
            .await?;
    crate::wal::base_backup_taken(&ctx.config, &ctx.job.name, ctx.now);
    pitr::after_backup(ctx, spec, &id, report).await
}

/// Server version, size and extra tablespaces, in one query.
async fn inspect(client: &Client) -> Result<Cluster, JobError> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), \
               (SELECT coalesce(sum(pg_database_size(oid)), 0)::bigint FROM pg_database \
                 WHERE has_database_privilege(oid, 'CONNECT')), \
               (SELECT coalesce(string_agg(spcname, ', ' ORDER BY spcname), '') FROM pg_tablespace \
                 WHERE spcname NOT IN ('pg_default', 'pg_global'))",
            &[],
        )
        .await
        .map_err(|e| JobError::Transient {
            message: format!("inspecting the cluster: {}", pg::describe(&e)),
            details: serde_json::Value::Null,
        })?;
    let get =
        |e: tokio_postgres::Error| JobError::permanent(format!("inspecting the cluster: {e}"));
    let bytes: i64 = row.try_get(1).map_err(get)?;
    Ok(Cluster {
        version: row.try_get(0).map_err(get)?,
        bytes: u64::try_from(bytes).unwrap_or(0),
        tablespaces: row.try_get(2).map_err(get)?,
    })
}

/// The facts of the streamed archive, which must have ended whole with its label and manifest.
fn read_facts(watch: &TarWatch, pg_basebackup_version: String) -> Result<PhysicalFacts, JobError> {
    if let Some(e) = &watch.error {
        return Err(JobError::permanent(format!(
            "pg_basebackup's stream is not a tar archive: {e}"
        )));
    }
    if !watch.complete() {
        return Err(JobError::permanent(
            "pg_basebackup's stream ended before the end of its tar archive",
        ));
    }
    let member = |name: &str| {
        watch.captured.get(name).ok_or_else(|| {
            JobError::permanent(format!(
                "pg_basebackup's stream has no {name} (PostgreSQL 13 or later puts it in base.tar)"
            ))
        })
    };
    // pg_basebackup sends a tablespace_map even when it is empty.
    if watch
        .captured
        .get("tablespace_map")
        .is_some_and(|map| !map.trim_ascii().is_empty())
    {
        return Err(JobError::permanent(
            "pg_basebackup's stream has a tablespace_map: tablespaces are not supported",
        ));
    }
    let (label, stop_lsn, manifest_files) =
        facts::facts(member("backup_label")?, member("backup_manifest")?)
            .map_err(JobError::permanent)?;
    Ok(PhysicalFacts {
        start_lsn: label.start_lsn,
        stop_lsn,
        timeline: label.timeline,
        start_wal_file: label.start_wal_file,
        checkpoint_lsn: label.checkpoint_lsn,
        backup_from: label.backup_from,
        label: label.label,
        manifest_files,
        tar_bytes: watch.bytes,
        pg_basebackup_version,
    })
}

/// `base.tar`, `.zst` when compressed, `.age` when encrypted.
pub fn file_name(zstd: bool, encrypted: bool) -> String {
    format!(
        "base.tar{}{}",
        if zstd { ".zst" } else { "" },
        if encrypted { ".age" } else { "" }
    )
}

fn basebackup_failed(out: &process::ProcessOutput) -> JobError {
    let tail = out.stderr_summary(10);
    let message = format!(
        "pg_basebackup failed with {}: {tail}",
        process::describe_status(&out.status)
    );
    let replication = [
        "replication connection",
        "must be superuser or replication role",
        "permission denied to start WAL sender",
    ];
    if replication.iter().any(|s| tail.contains(s)) {
        return JobError::permanent(format!(
            "{message} (the role needs REPLICATION, a pg_hba.conf line for the \"replication\" \
             database, and a passfile line whose database field is \"replication\" or \"*\")"
        ));
    }
    if let Some(hint) = pg::auth_hint(&tail) {
        return JobError::permanent(format!("{message} ({hint})"));
    }
    let transient = [
        "could not connect",
        "connection to server",
        "server closed the connection",
        "number of requested standby connections exceeds",
    ];
    if transient.iter().any(|s| tail.contains(s)) {
        JobError::Transient {
            message,
            details: serde_json::Value::Null,
        }
    } else {
        JobError::permanent(message)
    }
}
