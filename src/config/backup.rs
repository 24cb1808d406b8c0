//! Settings of `kind = "backup"` jobs and their validation.

use std::path::PathBuf;
use std::time::Duration;

use super::raw::RawJob;
use super::validate::Check;
use super::{ConfigError, PostgresConfig};

/// The keys a backup job accepts besides the common ones.
pub(super) const KEYS: &[&str] = &[
    "source",
    "method",
    "dbname",
    "format",
    "parallel",
    "compress",
    "compress-level",
    "verify",
    "verify-every",
    "restore-target",
    "encrypt-to",
    "encrypt-to-file",
    "verify-identity-file",
    "min-free-after",
    "offsite",
    "run-on",
    "globals-passwords",
    "drill-sql",
    "pitr-drill",
    "pitr-drill-lag",
    "paths",
    "exclude",
    "one-file-system",
    "ignore-unreadable",
];

/// The keys that mean something to pg_dump only, refused with `source = "redis"`.
const POSTGRES_ONLY: &[&str] = &[
    "dbname",
    "format",
    "parallel",
    "restore-target",
    "run-on",
    "globals-passwords",
    "drill-sql",
];

/// `source`: what a backup job takes. Each source has its module under
/// [`crate::jobs::backup`]; the catalog, manifest, encryption, offsite copy, retention and pins
/// are the same for all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupSource {
    /// One database, by pg_dump (the default).
    #[default]
    Postgres,
    /// The `[redis]` server's whole dataset, an RDB taken over the replication protocol.
    Redis,
    /// Files and folders (`paths`), one pax tar.
    Files,
}

impl BackupSource {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupSource::Postgres => "postgres",
            BackupSource::Redis => "redis",
            BackupSource::Files => "files",
        }
    }
}

/// `method`: how a PostgreSQL backup is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupMethod {
    /// One database, by pg_dump (the default).
    #[default]
    Logical,
    /// The whole cluster, by `pg_basebackup -Ft -X none` ([`crate::jobs::backup::physical`]).
    Physical,
}

impl BackupMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupMethod::Logical => "logical",
            BackupMethod::Physical => "physical",
        }
    }

    pub fn is_logical(&self) -> bool {
        *self == BackupMethod::Logical
    }
}

/// `kind = "backup"`: one database dumped with pg_dump, verified, published atomically.
#[derive(Debug, Clone)]
pub struct BackupSpec {
    pub source: BackupSource,
    /// `logical` (pg_dump) or `physical` (pg_basebackup), for `source = "postgres"`.
    pub method: BackupMethod,
    pub dbname: String,
    pub format: DumpFormat,
    /// pg_dump -j for the directory format.
    pub parallel: u32,
    pub compress: Compression,
    pub verify: VerifyLevel,
    /// Run a restore drill at least this often, whatever `verify` says.
    pub verify_every: Option<Duration>,
    /// Where restore verification restores to (default: the `[postgres]` server).
    pub restore_target: PostgresConfig,
    /// age recipients (public keys, `age1…`), validated.
    pub encrypt_to: Vec<String>,
    pub verify_identity_file: Option<PathBuf>,
    pub min_free_after: FreeSpace,
    /// The `[offsite.NAME]` targets verified backups are copied to, each independently; empty:
    /// none.
    pub offsite: Vec<String>,
    /// Which kind of server the dump may be taken from (`pg_is_in_recovery()`).
    pub run_on: RunOn,
    /// `globals.sql` keeps role passwords (needs a role that can read `pg_authid`).
    pub globals_passwords: bool,
    /// Smoke queries every restore drill runs in its scratch database.
    pub drill_sql: Vec<super::drill_sql::DrillSql>,
    /// `source = "files"`: what is archived; `None` for the other sources.
    pub files: Option<super::backup_files::FilesSpec>,
    /// `method = "physical"`: the point-in-time drill after each backup.
    pub pitr_drill: super::backup_method::PitrDrill,
}

/// `run-on`: a backup runs only when its source server is of this kind; otherwise the tick is
/// skipped (not failed), so an HA pair backs up from whichever host sees the replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOn {
    Any,
    Primary,
    Replica,
}

impl RunOn {
    pub fn as_str(self) -> &'static str {
        match self {
            RunOn::Any => "any",
            RunOn::Primary => "primary",
            RunOn::Replica => "replica",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DumpFormat {
    /// `pg_dump -Fc`, one file streamed through the daemon.
    Custom,
    /// `pg_dump -Fd -j N`, a folder written by pg_dump itself.
    Directory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "method")]
pub enum Compression {
    /// `pg_dump -Z0`: no compression.
    None,
    /// pg_dump's own gzip at this level.
    Gzip { level: i32 },
    /// `pg_dump -Z0` piped through multi-threaded zstd at this level.
    Zstd { level: i32 },
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum VerifyLevel {
    /// Re-read every byte and compare with the streamed SHA-256.
    Checksum,
    /// Also have pg_restore read the whole archive.
    Full,
    /// Also restore into a scratch database and compare every table's row count.
    Restore,
}

impl VerifyLevel {
    pub fn parse(s: &str) -> Option<VerifyLevel> {
        match s {
            "checksum" => Some(VerifyLevel::Checksum),
            "full" => Some(VerifyLevel::Full),
            "restore" => Some(VerifyLevel::Restore),
            _ => None,
        }
    }
}

/// Free space that must remain after a backup: a share of the file system or a size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FreeSpace {
    Percent(f64),
    Bytes(u64),
}

impl FreeSpace {
    /// The bytes this means on a file system of `total` bytes.
    pub fn bytes_of(self, total: u64) -> u64 {
        match self {
            FreeSpace::Percent(p) => (total as f64 * p / 100.0) as u64,
            FreeSpace::Bytes(b) => b,
        }
    }
}

pub(super) fn validate(
    check: &Check,
    key: &str,
    raw: RawJob,
    postgres: &PostgresConfig,
) -> Result<BackupSpec, ConfigError> {
    let k = |name: &str| format!("{key}.{name}");
    let source = source(check, key, &raw)?;
    let method = super::backup_method::validate(check, key, &raw, source)?;
    let format = match raw.format.as_deref().unwrap_or("custom") {
        "custom" => DumpFormat::Custom,
        "directory" => DumpFormat::Directory,
        other => {
            return Err(check.err(
                &k("format"),
                format!("{other:?} is not \"custom\" or \"directory\""),
            ));
        }
    };
    let parallel = raw.parallel.unwrap_or(1);
    if !(1..=32).contains(&parallel) {
        return Err(check.err(&k("parallel"), "must be between 1 and 32"));
    }
    if parallel > 1 && format != DumpFormat::Directory {
        return Err(check.err(
            &k("parallel"),
            "needs format = \"directory\" (pg_dump -j writes a folder)",
        ));
    }
    let compress = compression(check, &k, &raw, format)?;
    if source != BackupSource::Postgres && matches!(compress, Compression::Gzip { .. }) {
        return Err(check.err(
            &k("compress"),
            "gzip is pg_dump's; an RDB or a files archive is compressed with \"zstd\" or \"none\"",
        ));
    }
    let files = super::backup_files::validate(check, key, &raw, source == BackupSource::Files)?;
    let verify = match raw.verify.as_deref() {
        None => VerifyLevel::Full,
        Some(v) => VerifyLevel::parse(v).ok_or_else(|| {
            check.err(
                &k("verify"),
                format!("{v:?} is not \"checksum\", \"full\" or \"restore\""),
            )
        })?,
    };
    let drill_sql = super::drill_sql::validate(check, key, raw.drill_sql.clone())?;
    let pitr_drill = super::backup_method::pitr_drill(check, key, &raw, method)?;
    let verify_every = match raw.verify_every.as_deref() {
        None => None,
        Some(v) => Some(check.duration(&k("verify-every"), Some(v), Duration::ZERO)?),
    };
    if source == BackupSource::Files {
        // A files archive's drill is what `full` does: read back and compare every entry.
        if verify == VerifyLevel::Restore {
            return Err(check.err(
                &k("verify"),
                "a files backup is verified at \"checksum\" or \"full\" (full reads every entry back)",
            ));
        }
        if verify_every.is_some() {
            return Err(check.err(&k("verify-every"), "not with source = \"files\""));
        }
    }
    let encrypt_to = recipients(check, key, &raw)?;
    if !encrypt_to.is_empty() && format != DumpFormat::Custom {
        return Err(check.err(&k("encrypt-to"), "encryption needs format = \"custom\""));
    }
    let verify_identity_file =
        check.secret_file(&k("verify-identity-file"), raw.verify_identity_file)?;
    let min_free_after = match raw.min_free_after.as_deref() {
        None => FreeSpace::Percent(5.0),
        Some(v) => free_space(v).ok_or_else(|| {
            check.err(
                &k("min-free-after"),
                format!("{v:?} is neither a percentage (\"5%\") nor a size (\"10GiB\")"),
            )
        })?,
    };
    let restore_target = match raw.restore_target {
        None => postgres.clone(),
        Some(t) => {
            if t.dbname.is_some() {
                return Err(check.err(
                    &k("restore-target.dbname"),
                    "the scratch database is named by atpred",
                ));
            }
            PostgresConfig {
                host: t.host.unwrap_or_else(|| postgres.host.clone()),
                port: t.port.unwrap_or(postgres.port),
                user: t.user.unwrap_or_else(|| postgres.user.clone()),
                dbname: postgres.dbname.clone(),
                passfile: check
                    .secret_file(&k("restore-target.passfile"), t.passfile)?
                    .or_else(|| postgres.passfile.clone()),
                bin_dir: t.bin_dir.or_else(|| postgres.bin_dir.clone()),
            }
        }
    };
    let run_on = match raw.run_on.as_deref().unwrap_or("any") {
        "any" => RunOn::Any,
        "primary" => RunOn::Primary,
        "replica" => RunOn::Replica,
        other => {
            return Err(check.err(
                &k("run-on"),
                format!("{other:?} is not \"primary\", \"replica\" or \"any\""),
            ));
        }
    };
    Ok(BackupSpec {
        source,
        method,
        run_on,
        dbname: raw.dbname.unwrap_or_else(|| postgres.dbname.clone()),
        format,
        parallel,
        compress,
        verify,
        verify_every,
        restore_target,
        encrypt_to,
        verify_identity_file,
        min_free_after,
        // `offsite = ""` (an environment override, say) means no copy, as it always did.
        offsite: raw
            .offsite
            .map(|o| o.into_vec())
            .unwrap_or_default()
            .into_iter()
            .filter(|o| !o.is_empty())
            .collect(),
        globals_passwords: raw.globals_passwords.unwrap_or(false),
        drill_sql,
        files,
        pitr_drill,
    })
}

fn source(check: &Check, key: &str, raw: &RawJob) -> Result<BackupSource, ConfigError> {
    let source = match raw.source.as_deref().unwrap_or("postgres") {
        "postgres" => BackupSource::Postgres,
        "redis" => BackupSource::Redis,
        "files" => BackupSource::Files,
        other => {
            return Err(check.err(
                &format!("{key}.source"),
                format!("{other:?} is not \"postgres\", \"redis\" or \"files\""),
            ));
        }
    };
    if source != BackupSource::Postgres
        && let Some(k) = raw
            .set_keys()
            .into_iter()
            .find(|k| POSTGRES_ONLY.contains(&k.as_str()))
    {
        return Err(check.err(
            &format!("{key}.{k}"),
            format!(
                "a setting of PostgreSQL backups; not with source = {:?}",
                source.as_str()
            ),
        ));
    }
    Ok(source)
}

fn compression(
    check: &Check,
    k: &dyn Fn(&str) -> String,
    raw: &RawJob,
    format: DumpFormat,
) -> Result<Compression, ConfigError> {
    let method = raw
        .compress
        .as_deref()
        .unwrap_or(if format == DumpFormat::Custom {
            "zstd"
        } else {
            "gzip"
        });
    let level = raw.compress_level;
    let check_level =
        |range, default| check.compress_level(&k("compress-level"), level, method, range, default);
    match method {
        "none" => Ok(Compression::None),
        "gzip" => Ok(Compression::Gzip {
            level: check_level(1..=9, 6)?,
        }),
        "zstd" if format == DumpFormat::Directory => Err(check.err(
            &k("compress"),
            "zstd needs format = \"custom\"; pg_dump 15 compresses folders with gzip only",
        )),
        "zstd" => Ok(Compression::Zstd {
            level: check_level(1..=19, 3)?,
        }),
        other => Err(check.err(
            &k("compress"),
            format!("{other:?} is not \"zstd\", \"gzip\" or \"none\""),
        )),
    }
}

fn free_space(s: &str) -> Option<FreeSpace> {
    let s = s.trim();
    if let Some(p) = s.strip_suffix('%') {
        let p: f64 = p.trim().parse().ok()?;
        return (0.0..100.0).contains(&p).then_some(FreeSpace::Percent(p));
    }
    s.parse::<bytesize::ByteSize>()
        .ok()
        .map(|b| FreeSpace::Bytes(b.as_u64()))
}

/// `encrypt-to` and `encrypt-to-file`: the age recipients of a job's files, each checked
/// (backup jobs and wal-archive jobs encrypt to keys given the same way).
pub(super) fn recipients(
    check: &Check,
    key: &str,
    raw: &RawJob,
) -> Result<Vec<String>, ConfigError> {
    let k = |name: &str| format!("{key}.{name}");
    let mut encrypt_to = raw.encrypt_to.clone().unwrap_or_default();
    if let Some(file) = &raw.encrypt_to_file {
        let text = std::fs::read_to_string(file).map_err(|e| {
            check.err(
                &k("encrypt-to-file"),
                format!("cannot read {}: {e}", file.display()),
            )
        })?;
        encrypt_to.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    for r in &encrypt_to {
        if r.parse::<age::x25519::Recipient>().is_err() {
            let key = if raw.encrypt_to_file.is_some() {
                "encrypt-to-file"
            } else {
                "encrypt-to"
            };
            return Err(check.err(&k(key), format!("{r:?} is not an age recipient (age1…)")));
        }
    }
    Ok(encrypt_to)
}
