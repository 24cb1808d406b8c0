//! `manifest.json`: what a backup holds and how it was verified. Written last; a folder without
//! a valid manifest is never a backup.
//!
//! Format (`manifest_version` 3, stable field names; new fields may be added without a new
//! version, a field changing meaning or going away takes one). Version 2 added `source`
//! (version 1 manifests are read as `"postgres"`) and the `redis` facts; version 3 added
//! `source = "files"` and its `tree`, and `method = "physical"` with its `physical` facts (a
//! reader of version 2 would take either for a pg_dump, hence the bump; pg_dump and Redis
//! backups are still written as version 2):
//! ```json
//! { "manifest_version": 2, "source": "postgres", "id": "20261128T023000Z-nightly", "job": "nightly",
//!   "database": "atp_re", "server": { "host": "/run/postgresql", "port": 5432, "version": "15.18",
//!     "system_identifier": "7715723601679924271" },
//!   "pg_dump_version": "pg_dump (PostgreSQL) 15.18", "format": "custom",
//!   "compression": { "method": "zstd", "level": 3 }, "encryption": { "recipients": ["age1…"] },
//!   "options": { "parallel": 1, "snapshot": "00000003-0000001B-1" },
//!   "started": "…", "finished": "…", "duration_ms": 4120, "bytes": 73221120,
//!   "files": [ { "path": "database.backup", "bytes": 73221120, "sha256": "…" } ],
//!   "table_count": 9, "tables": { "public.accounts": 5000000, … },
//!   "verification": { "level": "full", "at": "…", "outcome": "passed", "details": "…" },
//!   "daemon_version": "0.1.0" }
//! ```
//! A Redis backup (`"source": "redis"`) has `"database": "redis"`, the server's redacted URL and
//! Redis version in `server`, no `pg_dump_version` and no tables, and
//! `"redis": { "version": "7.0.15", "aof_enabled": false, "transfer": "eof-marker",
//! "rdb_bytes": 1234, "keyspace": { "0": { "keys": 5, "expires": 1 } }, "keyspace_after": {…},
//! "sample": [ { "db": 0, "key_sha256": "…", "type": "hash", "expire_at_ms": null } ] }`
//! ([`super::redis::RedisFacts`]).
//!
//! A files backup (`"source": "files"`) has `"database": "files"`, the host's name in
//! `server.host`, one file `files.tar[.zst][.age]` (a pax tar), and
//! `"tree": { "paths": ["/etc/atpre"], "exclude": [], "one_file_system": true, "tar_bytes": 10240,
//! "entries": [ { "path": "etc/atpre/app.toml", "kind": "file", "size": 12, "mode": 416,
//! "uid": 0, "gid": 0, "user": "root", "group": "root", "mtime": 1764979200, "mtime_nsec": 0,
//! "sha256": "…" }, { "path": "etc/atpre/current", "kind": "symlink", "target": "app.toml", … } ],
//! "changed": ["etc/atpre/app.log"], "skipped": [ { "path": "/etc/atpre/sock", "why": "a socket" } ] }`
//! ([`super::files::tree::Tree`]): entry paths are relative to `/`, in archive order, `mode`
//! is the permission bits (decimal in JSON), `changed` lists files whose size or mtime moved
//! while they were read (their `sha256` is of the bytes archived).
//! A physical backup (`"method": "physical"`, pg_basebackup) has `"database": "cluster"`, one
//! file `base.tar[.zst][.age]` and `"physical": { "start_lsn": "0/2000028", "stop_lsn":
//! "0/2000100", "timeline": 1, "start_wal_file": "000000010000000000000002", … }`
//! ([`super::physical::PhysicalFacts`]).
//!
//! A safety backup (taken before `restore --replace`) also has
//! `"safety_for": { "database": "app", "restore_of": "20261128T023000Z-nightly" }`.
//! `SHA256SUMS` beside it lists the same checksums for `sha256sum -c SHA256SUMS`.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{BackupMethod, BackupSource, Compression, DumpFormat, VerifyLevel};
use crate::publish;

pub const MANIFEST: &str = "manifest.json";
pub const SUMS: &str = "SHA256SUMS";
/// The newest version this daemon reads, and writes for a files or physical backup.
pub const VERSION: u32 = 3;
/// The version a PostgreSQL or Redis backup is written with: version 3 changed nothing for
/// them, so a daemon of the version before still reads them (and refuses files backups).
pub const VERSION_DB: u32 = 2;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub manifest_version: u32,
    /// What was backed up; version 1 manifests (before Redis backups) say nothing: postgres.
    #[serde(default)]
    pub source: BackupSource,
    /// `physical` for a base backup (pg_basebackup); absent (logical, pg_dump) otherwise.
    #[serde(default, skip_serializing_if = "BackupMethod::is_logical")]
    pub method: BackupMethod,
    pub id: String,
    pub job: String,
    pub database: String,
    pub server: Server,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pg_dump_version: String,
    pub format: DumpFormat,
    pub compression: Compression,
    pub encryption: Option<Encryption>,
    pub options: serde_json::Value,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub duration_ms: u64,
    /// Bytes on disk, all files together.
    pub bytes: u64,
    pub files: Vec<FileSum>,
    pub table_count: usize,
    /// Row count of every table, counted in the snapshot pg_dump dumped.
    pub tables: BTreeMap<String, i64>,
    /// Size of every table with its indexes on the source (`pg_total_relation_size`), for the
    /// restore plan; absent in manifests of older versions.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub table_bytes: BTreeMap<String, u64>,
    pub verification: Verification,
    pub daemon_version: String,
    /// Set on a safety backup (`<time>-<job>.safety`), taken of a database just before a
    /// `restore --replace` swapped it out; absent on every other backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_for: Option<SafetyFor>,
    /// What a Redis backup found on its server (`source = "redis"` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<super::redis::RedisFacts>,
    /// The tree a files backup archived, entry by entry (`source = "files"` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<super::files::tree::Tree>,
    /// What a physical backup's `backup_label` and `backup_manifest` say (`method =
    /// "physical"` only): the WAL range a recovery from it needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical: Option<super::physical::PhysicalFacts>,
}

/// What a safety backup was taken for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SafetyFor {
    /// The database the restore replaced (the one this backup holds).
    pub database: String,
    /// The backup being restored over it.
    pub restore_of: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub version: String,
    /// The cluster's system identifier (`pg_control_system()`), so a restore can tell the
    /// source cluster from another one; absent in manifests of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_identifier: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Encryption {
    /// Public age recipients only.
    pub recipients: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileSum {
    /// Relative to the backup folder.
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verification {
    pub level: VerifyLevel,
    pub at: DateTime<Utc>,
    pub outcome: VerifyOutcome,
    pub details: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyOutcome {
    Passed,
    Failed,
}

impl Manifest {
    /// Writes `SHA256SUMS` and then the manifest into `dir`, each atomically and fsynced.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let sums: String = self
            .files
            .iter()
            .map(|f| format!("{}  {}\n", f.sha256, f.path))
            .collect();
        publish::write_atomic(&dir.join(SUMS), sums.as_bytes(), 0o600)?;
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        publish::write_atomic(&dir.join(MANIFEST), &json, 0o600)
    }

    /// Reads and checks the manifest of the backup folder `dir`.
    pub fn read(dir: &Path) -> Result<Manifest, String> {
        let path = dir.join(MANIFEST);
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&bytes, &path.display().to_string())
    }

    /// Parses and checks a manifest read from `shown` (a path or an object key).
    pub fn parse(bytes: &[u8], shown: &str) -> Result<Manifest, String> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| format!("{shown}: {e}"))?;
        if !(1..=VERSION).contains(&m.manifest_version) {
            return Err(format!(
                "{shown}: manifest version {} is not between 1 and {VERSION}",
                m.manifest_version
            ));
        }
        if m.files.is_empty() {
            return Err(format!("{shown}: lists no files"));
        }
        Ok(m)
    }

    pub fn verified(&self) -> bool {
        self.verification.outcome == VerifyOutcome::Passed
    }

    pub fn encrypted(&self) -> bool {
        self.encryption.is_some()
    }

    /// A safety backup: pinned, and left out of freshness, ratios and retention's counting.
    pub fn is_safety(&self) -> bool {
        self.safety_for.is_some()
    }
}
