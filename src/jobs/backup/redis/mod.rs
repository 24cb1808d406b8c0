//! `source = "redis"`: the `[redis]` server's whole dataset as one RDB, taken over the
//! replication protocol ([`sync`]), streamed through the same zstd/age/SHA-256 pipeline and
//! partial folder as a pg_dump, verified by `redis-check-rdb` ([`check`]) and, at level
//! `restore`, loaded into a scratch redis-server ([`drill`]); [`crate::restore::redis_dir`]
//! prepares it for a server's directory.
//!
//! A run: `INFO` (version, AOF, keyspace per database) and a sample of keys over the redis
//! crate's connection -> `.partial-<id>/redis.rdb[.zst][.age]` by SYNC -> `INFO keyspace`
//! again and the sample re-read (keys written meanwhile may be in the RDB either way, so the
//! drill accepts any count between the two looks and only the sample keys that did not change)
//! -> manifest, verify, publish: the shared end of every backup.

pub mod check;
mod drill;
pub mod observe;
mod sync;

use std::time::Instant;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::json;

use self::observe::{Keyspace, SampledKey};
use super::manifest::{Encryption, FileSum, Manifest, Server, Verification, VerifyOutcome};
use super::stream::Layers;
use super::{cancellable, catalog, dump, effective_level, open_partial};
use crate::config::{BackupSource, BackupSpec, Compression, DumpFormat};
use crate::jobs::{JobContext, JobError, JobReport};

/// The manifest's `database` of a Redis backup (the whole server, every database).
pub const DATABASE: &str = "redis";

/// What a Redis backup's manifest says about its server and its RDB.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RedisFacts {
    /// `redis_version` of the source server.
    pub version: String,
    /// The source had AOF on (a restore must turn it off while loading the RDB).
    pub aof_enabled: bool,
    /// `bulk` (disk-based) or `eof-marker` (diskless).
    pub transfer: String,
    /// Size of the RDB itself, before compression and encryption.
    pub rdb_bytes: u64,
    /// `INFO keyspace` just before the transfer.
    pub keyspace: Keyspace,
    /// `INFO keyspace` just after it.
    pub keyspace_after: Keyspace,
    /// Keys that did not change during the transfer, by hash, with type and expiry.
    pub sample: Vec<SampledKey>,
}

/// One Redis backup through the whole pipeline.
pub async fn take(ctx: &JobContext, spec: &BackupSpec) -> Result<JobReport, JobError> {
    let backup_dir = &ctx.config.daemon.backup_dir;
    let id = format!("{}-{}", ctx.now.format("%Y%m%dT%H%M%SZ"), ctx.job.name);
    let level = effective_level(ctx, spec);
    let redis = &ctx.config.redis;
    let shown = redis.url.redacted();
    if ctx.dry_run {
        return Ok(JobReport {
            message: format!(
                "would take an RDB of {shown} to {}/{id} ({:?}, verify {level:?})",
                backup_dir.display(),
                spec.compress
            ),
            details: json!({ "id": id, "verify": level }),
        });
    }
    catalog::ensure_dir(backup_dir).map_err(|e| JobError::permanent(e.to_string()))?;
    let info = crate::redis_login::connection_info(redis).map_err(JobError::permanent)?;
    let port = port_of(&info);
    let t0 = Instant::now();
    ctx.progress("connecting to Redis");
    let mut conn = cancellable(ctx, observe::connect(info.clone(), &redis.url))
        .await?
        .map_err(failed)?;
    let before = cancellable(ctx, observe::before(&mut conn))
        .await?
        .map_err(failed)?;
    let partial = open_partial(
        ctx,
        backup_dir,
        &id,
        before.used_memory,
        spec.min_free_after,
    )?;
    let recipients = dump::recipients(spec)?;
    let zstd_level = match spec.compress {
        Compression::Zstd { level } => Some(level),
        _ => None,
    };
    let name = file_name(zstd_level.is_some(), !recipients.is_empty());
    ctx.progress(format!("SYNC: taking the RDB of {shown}"));
    let layers = Layers {
        zstd_level,
        recipients,
    };
    let got = sync::transfer(
        ctx,
        info,
        shown.clone(),
        &partial.path().join(&name),
        layers,
    )
    .await?;
    let keyspace_after = cancellable(ctx, observe::keyspace(&mut conn))
        .await?
        .map_err(failed)?;
    let sample = cancellable(ctx, observe::still_same(&mut conn, before.sample))
        .await?
        .map_err(failed)?;
    drop(conn);
    let finished = Utc::now();
    let bytes = got.written.bytes;
    let keys: u64 = before.keyspace.values().map(|d| d.keys).sum();
    let manifest = Manifest {
        manifest_version: super::manifest::VERSION_DB,
        source: BackupSource::Redis,
        method: Default::default(),
        id: id.clone(),
        job: ctx.job.name.to_string(),
        database: DATABASE.to_owned(),
        server: Server {
            host: shown,
            port,
            version: before.version.clone(),
            system_identifier: None,
        },
        pg_dump_version: String::new(),
        format: DumpFormat::Custom,
        compression: spec.compress,
        encryption: (!spec.encrypt_to.is_empty()).then(|| Encryption {
            recipients: spec.encrypt_to.clone(),
        }),
        options: json!({ "database_bytes": before.used_memory }),
        started: ctx.now,
        finished,
        duration_ms: u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX),
        bytes,
        files: vec![FileSum {
            path: name,
            bytes,
            sha256: got.written.sha256,
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
        redis: Some(RedisFacts {
            version: before.version,
            aof_enabled: before.aof_enabled,
            transfer: got.form.to_owned(),
            rdb_bytes: got.rdb_bytes,
            keyspace: before.keyspace,
            keyspace_after,
            sample,
        }),
        tree: None,
        physical: None,
    };
    let details = json!({
        "id": id,
        "bytes": bytes,
        "rdb_bytes": got.rdb_bytes,
        "keys": keys,
        "transfer": got.form,
    });
    super::finish::verify_and_publish(ctx, spec, partial, manifest, level, details, None).await
}

/// `redis.rdb`, `.zst` when compressed, `.age` when encrypted.
fn file_name(zstd: bool, encrypted: bool) -> String {
    format!(
        "redis.rdb{}{}",
        if zstd { ".zst" } else { "" },
        if encrypted { ".age" } else { "" }
    )
}

/// The TCP port of the server, 0 for a Unix socket.
fn port_of(info: &redis::ConnectionInfo) -> u16 {
    match info.addr() {
        redis::ConnectionAddr::Tcp(_, p) | redis::ConnectionAddr::TcpTls { port: p, .. } => *p,
        _ => 0,
    }
}

/// A refused login stays refused (permanent); anything else may be an outage (transient).
fn failed(message: String) -> JobError {
    let refused = ["WRONGPASS", "NOAUTH", "NOPERM", "password-file"]
        .iter()
        .any(|s| message.contains(s));
    if refused {
        JobError::permanent(message)
    } else {
        JobError::Transient {
            message,
            details: serde_json::Value::Null,
        }
    }
}

/// Verification of a Redis backup at `level`: see [`check`].
pub(super) use check::verify;
