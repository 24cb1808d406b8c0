//! Settings of `kind = "wal-archive"` jobs: continuous WAL archiving by a supervised
//! `pg_receivewal` (see [`crate::wal`]).

use std::path::PathBuf;
use std::time::Duration;

use super::raw::RawJob;
use super::validate::Check;
use super::{ConfigError, DaemonConfig, PostgresConfig};
use crate::ids::JobName;

/// The keys a wal-archive job accepts besides the common ones.
pub(super) const KEYS: &[&str] = &[
    "slot",
    "synchronous",
    "archive-dir",
    "replication-user",
    "encrypt-to",
    "encrypt-to-file",
    "compress-level",
    "slot-retained-warn",
    "slot-retained-fail",
    "archive-max-age",
    "offsite",
    "base-backups",
];

/// Common keys that mean nothing to a job that never runs on a schedule or on demand.
const REFUSED_COMMON: &[&str] = &["schedule", "catch-up", "timeout", "retries", "retry-delay"];

/// PostgreSQL's limit on a replication slot's name.
const MAX_SLOT_NAME: usize = 63;

/// `kind = "wal-archive"`: one supervised `pg_receivewal` on a replication slot, every completed
/// segment compressed, encrypted and recorded in the archive's index.
#[derive(Debug, Clone, PartialEq)]
pub struct WalArchiveSpec {
    /// The physical replication slot (default `atpred_<job>`), created when missing.
    pub slot: String,
    /// `pg_receivewal --synchronous`: flush and report each write at once.
    pub synchronous: bool,
    /// Where the archived segments and `index.jsonl` live.
    pub archive_dir: PathBuf,
    /// pg_receivewal's own folder (the in-flight `.partial` segment): `state-dir/wal-spool/JOB`.
    pub spool_dir: PathBuf,
    /// The server, as the replication role (`replication-user`, default `[postgres] user`).
    pub replication: PostgresConfig,
    /// The server as `[postgres]` gives it, for the monitoring queries.
    pub postgres: PostgresConfig,
    /// age recipients; empty: segments are only compressed.
    pub encrypt_to: Vec<String>,
    pub zstd_level: i32,
    /// WAL held back by the slot (bytes) beyond which health warns, and fails.
    pub retained_warn: u64,
    pub retained_fail: u64,
    /// Health fails when the newest archived segment is older than this.
    pub archive_max_age: Option<Duration>,
    /// `[offsite.NAME]` targets every archived segment is copied to.
    pub offsite: Vec<String>,
    /// `base-backups`: the physical backup jobs whose base backups size the WAL retention;
    /// empty: every physical backup job of the configuration.
    pub base_backups: Vec<JobName>,
}

pub(super) fn validate(
    check: &Check,
    key: &str,
    name: &str,
    raw: RawJob,
    postgres: &PostgresConfig,
    daemon: &DaemonConfig,
) -> Result<WalArchiveSpec, ConfigError> {
    let k = |field: &str| format!("{key}.{field}");
    if let Some(refused) = raw
        .set_keys()
        .into_iter()
        .find(|s| REFUSED_COMMON.contains(&s.as_str()))
    {
        return Err(check.err(
            &k(&refused),
            "a wal-archive job runs continuously while the daemon runs; it has no schedule, runs, timeout or retries (remove the key)",
        ));
    }
    let slot = raw
        .slot
        .clone()
        .unwrap_or_else(|| format!("atpred_{}", name.to_lowercase().replace('-', "_")));
    if slot.is_empty()
        || slot.len() > MAX_SLOT_NAME
        || !slot
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(check.err(
            &k("slot"),
            format!(
                "{slot:?} is not a replication slot name (lower-case letters, digits and _, at most {MAX_SLOT_NAME})"
            ),
        ));
    }
    let archive_dir = match raw.archive_dir.clone() {
        None => daemon.state_dir.join("wal-archive").join(name),
        Some(p) if p.is_absolute() => p,
        Some(p) => {
            return Err(check.err(
                &k("archive-dir"),
                format!("must be an absolute path, got {}", p.display()),
            ));
        }
    };
    if archive_dir.starts_with(&daemon.backup_dir) {
        return Err(check.err(
            &k("archive-dir"),
            "must not be inside daemon.backup-dir (the backup catalog would list it as an unreadable backup)",
        ));
    }
    check.safe_folder(&k("archive-dir"), &archive_dir)?;
    let encrypt_to = super::backup::recipients(check, key, &raw)?;
    let zstd_level =
        check.compress_level(&k("compress-level"), raw.compress_level, "zstd", 1..=19, 3)?;
    let retained_warn = size(
        check,
        &k("slot-retained-warn"),
        raw.slot_retained_warn.as_deref(),
        1 << 30,
    )?;
    let retained_fail = size(
        check,
        &k("slot-retained-fail"),
        raw.slot_retained_fail.as_deref(),
        4 << 30,
    )?;
    if retained_warn > retained_fail {
        return Err(check.err(
            &k("slot-retained-warn"),
            "must not be above slot-retained-fail",
        ));
    }
    let archive_max_age = raw
        .archive_max_age
        .as_deref()
        .map(|v| check.duration(&k("archive-max-age"), Some(v), Duration::ZERO))
        .transpose()?;
    let base_backups = raw
        .base_backups
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|n| {
            n.parse::<JobName>()
                .map_err(|e| check.err(&k("base-backups"), e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut replication = postgres.clone();
    if let Some(user) = raw.replication_user.clone() {
        replication.user = user;
    }
    Ok(WalArchiveSpec {
        slot,
        synchronous: raw.synchronous.unwrap_or(false),
        archive_dir,
        spool_dir: daemon.state_dir.join("wal-spool").join(name),
        replication,
        postgres: postgres.clone(),
        encrypt_to,
        zstd_level,
        retained_warn,
        retained_fail,
        archive_max_age,
        offsite: raw
            .offsite
            .map(|o| o.into_vec())
            .unwrap_or_default()
            .into_iter()
            .filter(|o| !o.is_empty())
            .collect(),
        base_backups,
    })
}

/// The names in each wal-archive job's `base-backups` must be physical backup jobs of the same
/// configuration.
pub(super) fn check_base_backups(check: &Check, config: &super::Config) -> Result<(), ConfigError> {
    for job in config.jobs.values() {
        let super::JobSpec::WalArchive(spec) = &job.spec else {
            continue;
        };
        for named in &spec.base_backups {
            let why = match config.jobs.get(named).map(|j| &j.spec) {
                Some(super::JobSpec::Backup(b)) if b.method == super::BackupMethod::Physical => {
                    continue;
                }
                Some(super::JobSpec::Backup(_)) => format!(
                    "\"{named}\" is not a physical backup job (method = \"physical\"): only base backups hold WAL"
                ),
                Some(_) => format!("\"{named}\" is not a backup job"),
                None => format!("\"{named}\" is not a job of this configuration"),
            };
            return Err(check.err(&format!("jobs.{}.base-backups", job.name), why));
        }
    }
    Ok(())
}

fn size(check: &Check, key: &str, value: Option<&str>, default: u64) -> Result<u64, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<bytesize::ByteSize>()
            .map(|b| b.as_u64())
            .map_err(|_| check.err(key, format!("{v:?} is not a size (e.g. \"1GiB\")"))),
    }
}
