//! The serde mirror of the TOML file: kebab-case keys, unknown keys rejected.
//!
//! Nothing here is validated beyond its type; [`super::validate`] turns these into the typed
//! [`super::Config`]. Every job key of every kind lives in the one flat [`RawJob`] so that
//! deserialization is never buffered (buffering would lose the file positions and the typed
//! handling of environment overrides); which keys a kind accepts is checked during validation.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawConfig {
    #[serde(default)]
    pub daemon: RawDaemon,
    #[serde(default)]
    pub postgres: RawPostgres,
    #[serde(default)]
    pub redis: RawRedis,
    #[serde(default)]
    pub jobs: BTreeMap<String, RawJob>,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub offsite: BTreeMap<String, RawOffsite>,
    #[serde(default)]
    pub coordination: RawCoordination,
    #[serde(default)]
    pub notify: BTreeMap<String, RawNotify>,
}

/// One `[notify.NAME]` channel; which keys its kind accepts is checked during validation.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawNotify {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl RawNotify {
    /// The kebab-case names of the keys present in this table.
    pub fn set_keys(&self) -> Vec<String> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }
}

/// One `[offsite.NAME]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawOffsite {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    pub path_style: Option<bool>,
    pub credentials_file: Option<PathBuf>,
    pub allow_plaintext: Option<bool>,
    pub part_size: Option<String>,
    pub concurrency: Option<u32>,
    pub retries: Option<u32>,
    pub retry_timeout: Option<String>,
    pub request_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawCoordination {
    pub backend: Option<String>,
    pub ttl: Option<String>,
    pub host: Option<String>,
    pub key_prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawMetrics {
    pub listen: Option<String>,
    pub allow_remote: Option<bool>,
    pub textfile: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawDaemon {
    pub state_dir: Option<PathBuf>,
    pub backup_dir: Option<PathBuf>,
    pub restore_scratch_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub socket_group: Option<String>,
    pub timezone: Option<String>,
    pub stop_timeout: Option<String>,
    pub max_concurrent_jobs: Option<u32>,
    pub log: Option<String>,
    pub log_level: Option<String>,
    pub history_size: Option<u32>,
    pub fetch_dirs: Option<Vec<PathBuf>>,
    pub heartbeat_url: Option<String>,
    pub heartbeat_every: Option<String>,
    pub notify: Option<Vec<String>>,
    pub offsite_fail_after: Option<u32>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawPostgres {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub dbname: Option<String>,
    pub passfile: Option<PathBuf>,
    pub bin_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawRedis {
    pub url: Option<String>,
    pub password_file: Option<PathBuf>,
}

/// One `[jobs.NAME]` table. `Serialize` lists the keys that were set (see `set_keys`).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawJob {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_delay: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<bool>,
    /// backup, prune, command: take the fleet lease (`[coordination]`) for each run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coordinate: Option<bool>,
    /// Every kind: the dead-man ping URL (healthchecks.io style), see [`crate::alerts::ping`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ping_url: Option<String>,
    /// Every kind: `[notify.NAME]` channels for this job's events (see [`crate::alerts`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify_on: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeat_every: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_after: Option<u32>,
    // kind = "command"
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    // kind = "backup"
    /// What the backup takes: `postgres` (default), `redis` or `files`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dbname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compress: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compress_level: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_every: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_target: Option<RawPostgres>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encrypt_to: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encrypt_to_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_identity_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_free_after: Option<String>,
    /// Backup: copy to this `[offsite.NAME]` (or these); prune (with `target = "offsite"`):
    /// prune there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offsite: Option<super::offsite::OffsiteNames>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_on: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub globals_passwords: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drill_sql: Option<Vec<super::drill_sql::RawDrillSql>>,
    /// A physical backup job: the point-in-time drill after each backup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pitr_drill: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pitr_drill_lag: Option<String>,
    /// `source = "files"`: glob patterns of paths left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclude: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub one_file_system: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignore_unreadable: Option<bool>,
    // kind = "prune"
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_hourly: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_daily: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_weekly: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_monthly: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_yearly: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_keep: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub of: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    // kind = "health"
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checks: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_expect_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_expect_body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_ca_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_paths: Option<Vec<PathBuf>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_min_free: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_min_free_inodes: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_max_age: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_runs: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_change: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    // kind = "rotate" (also `compress` and `compress-level` above)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing_ok: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_size: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_size: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub if_empty: Option<bool>,
    /// rotate: `rename` or `copytruncate`; backup: `logical` (pg_dump) or `physical`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reopen: Option<RawReopen>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reopen_command: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub naming: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_compress: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_keep_age: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_shared_dir: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub su: Option<String>,
    // kind = "wal-archive" (also `encrypt-to`, `encrypt-to-file` and `compress-level` above)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub synchronous: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication_user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot_retained_warn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot_retained_fail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_max_age: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_backups: Option<Vec<String>>,
}

/// `reopen = { pid-file = "...", signal = "HUP" }` of a rotate job.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawReopen {
    pub pid_file: Option<PathBuf>,
    pub signal: Option<String>,
}

impl RawJob {
    /// The kebab-case names of the keys present in this table.
    pub fn set_keys(&self) -> Vec<String> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }
}
