//! Restores: `atprectl restore ID --to DBNAME`, done by the daemon (it holds the credentials
//! and the age identity).
//!
//! Planning is pure ([`plan::plan`]: a manifest, the backup folder and the options give the
//! steps, the tables expected and the scratch space needed); executing is separate
//! ([`exec::run`]). A restore always goes into a new database named after the target with a
//! `_atpred_restoring` suffix and is renamed to the target only after every restored table's row
//! count matched the manifest's snapshot counts, so a failed, killed or cancelled restore never
//! leaves a half-restored database under the target's name. With `--replace` an existing
//! target is first backed up ([`safety`]: a pinned safety backup), then swapped out only after
//! the checks ([`swap`]) and kept under another name. A restore is a run ([`run`]): in the
//! history as kind `restore`, cancelled by `atprectl cancel restore`, one at a time. With
//! `--globals` ([`globals`]) the backup's roles are applied to the cluster first and owners and
//! grants are kept. `--target` ([`remote`]) restores from an offsite copy. A Redis backup is
//! restored with `--redis-dir` ([`redis_dir`]): its RDB is staged there, the server is the
//! operator's to restart. A files backup is restored with `--to-dir` ([`files_dir`]).

pub mod database;
pub mod evidence;
pub mod exec;
pub mod files_dir;
pub mod globals;
pub mod growing;
pub mod load;
pub mod pipe;
pub mod pitr;
pub mod plan;
pub mod redis_dir;
pub mod remote;
pub mod run;
pub mod safety;
pub mod smoke;
pub mod swap;
pub mod toc;
pub mod unpack;

use serde::{Deserialize, Serialize};

/// What the operator asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    /// The database to restore into.
    pub to: String,
    /// `pg_restore -j`; 0 means the default (2).
    #[serde(default)]
    pub jobs: u32,
    /// Only these schemas (`pg_restore -n`).
    #[serde(default)]
    pub schemas: Vec<String>,
    /// Only these tables (`pg_restore -t`, any schema unless `schemas` narrows it).
    #[serde(default)]
    pub tables: Vec<String>,
    /// `--replace`: the target may exist and hold data (even be the backup's source); it is
    /// swapped out after the checks and kept under [`swap::replaced_name`].
    #[serde(default)]
    pub replace: bool,
    /// `--globals`: apply the backup's `globals.sql` first ([`globals`]) and keep owners and
    /// grants (no `--no-owner --no-privileges`).
    #[serde(default)]
    pub globals: bool,
    /// `--target NAME`: restore from the copy at this `[offsite.NAME]` target ([`remote`]),
    /// not from backup-dir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `--identity FILE`: the age identity to decrypt with instead of the job's
    /// verify-identity-file (root and the daemon's user only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<std::path::PathBuf>,
    /// `--redis-dir DIR`: stage a Redis backup's RDB in this Redis data folder ([`redis_dir`]);
    /// `to` is then empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_dir: Option<std::path::PathBuf>,
    /// `--to-dir DIR`: restore a files backup into this folder ([`files_dir`]); `to` is then
    /// empty, `replace` allows a DIR that is not empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_dir: Option<std::path::PathBuf>,
}

/// Why a restore was refused or failed. The refusals each have their own
/// [`crate::protocol::ErrorCode`] and `atprectl` exit code.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    UnknownBackup(String),
    #[error(
        "refusing to restore into {0:?}: it is the database this backup was taken from (on \
         the cluster it was taken from); restore into another name"
    )]
    SourceDatabase(String),
    #[error(
        "refusing to restore into {db:?}: it exists and holds {tables} table(s); choose a new \
         name, drop it first, or give --replace"
    )]
    TargetNotEmpty { db: String, tables: i64 },
    #[error(
        "refusing to replace: {0:?} still holds the database an earlier --replace swapped out; \
         drop or rename it first"
    )]
    ReplacedExists(String),
    #[error(
        "not enough space in restore-scratch-dir {dir}: about {need} bytes needed to unpack the \
         archive, {free} free"
    )]
    NoSpace { dir: String, need: u64, free: u64 },
    #[error(
        "refusing to replace {db:?}: its safety backup could not be taken: {why}; nothing was \
         touched"
    )]
    SafetyBackup { db: String, why: String },
    #[error("restore failed: {0}; the target database was not touched")]
    Failed(String),
    #[error("restore failed: restore-scratch-dir: {0}; the target database was not touched")]
    Scratch(String),
    #[error("restore cancelled; the target database was not touched")]
    Cancelled,
    #[error("refusing to restore: another restore is running: {0}")]
    Busy(String),
    #[error("refusing to restore: the daemon is shutting down")]
    ShuttingDown,
}

/// The default `pg_restore -j` of a restore.
pub const DEFAULT_JOBS: u32 = 2;

/// The sessions that restore (atpred's and pg_restore's, and a drill's) commit
/// asynchronously: nothing waits for the WAL to be flushed at each of the dozens of commits a
/// restore makes. A server crash before the rename loses at most a restore that had not
/// succeeded yet; the rename commits synchronously ([`database::maintenance`]), and flushing
/// its commit record flushes every commit before it, so a restore reported done is durable.
pub const ASYNC_COMMIT_SQL: &str = "SET synchronous_commit = off";

/// [`ASYNC_COMMIT_SQL`] for a libpq program (pg_restore), in its environment.
pub fn async_commit(spec: crate::process::ProcessSpec) -> crate::process::ProcessSpec {
    spec.env("PGOPTIONS", "-c synchronous_commit=off")
}
