//! Configuration: the TOML file plus `ATPRED__SECTION__KEY` environment overrides, validated
//! into typed values at load time.
//!
//! Loading goes: read the file (refusing a world-writable one) -> check its TOML syntax (exact
//! positions) -> layer the environment with the `config` crate -> deserialize into the raw
//! mirror ([`raw`]) with unknown keys rejected -> [`validate`] into [`Config`]. Errors found at
//! any step name the file, the key, and its line and column when the key is in the file.

mod backup;
mod backup_files;
mod backup_method;
mod coordination;
mod drill_sql;
mod error;
mod health;
pub mod health_alias;
mod jobs;
mod locate;
mod metrics;
mod notify;
mod offsite;
mod ping;
mod prune;
mod raw;
mod rotate;
mod validate;
mod wal;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono_tz::Tz;

pub use backup::{
    BackupMethod, BackupSource, BackupSpec, Compression, DumpFormat, FreeSpace, RunOn, VerifyLevel,
};
pub use backup_files::FilesSpec;
pub use backup_method::PitrDrill;
pub use coordination::{Backend, CoordinationConfig};
pub use drill_sql::DrillSql;
pub use error::{ConfigError, Invalid};
pub use health::{CheckKind, HealthSpec, Threshold};
pub use metrics::MetricsConfig;
pub use notify::{
    ChannelKind, DEFAULT_ON as NOTIFY_ON_DEFAULT, JobNotify, NotifyChannel, SmtpChannel, SmtpTls,
};
pub use offsite::OffsiteTarget;
pub use rotate::{Method, Naming, Reopen, RotateSpec, SuUser};
pub use wal::WalArchiveSpec;

use crate::ids::JobName;
use crate::scheduler::Schedule;
use crate::secret::SecretUrl;

/// Where `atpred` looks for its configuration without `--config`.
pub const DEFAULT_PATH: &str = "/etc/atpre/atpred.toml";
/// Environment overrides: `ATPRED__DAEMON__STOP_TIMEOUT=10s` sets `daemon.stop-timeout`.
pub const ENV_PREFIX: &str = "ATPRED";

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: PathBuf,
    pub daemon: DaemonConfig,
    pub postgres: PostgresConfig,
    pub redis: RedisConfig,
    pub jobs: BTreeMap<JobName, JobConfig>,
    pub metrics: MetricsConfig,
    /// `[offsite.NAME]` targets, by name.
    pub offsite: BTreeMap<String, OffsiteTarget>,
    pub coordination: CoordinationConfig,
    /// `[notify.NAME]` channels, by name.
    pub notify: BTreeMap<String, NotifyChannel>,
}

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub state_dir: PathBuf,
    pub backup_dir: PathBuf,
    /// Where `atprectl restore` unpacks a zstd-wrapped or encrypted archive so that
    /// `pg_restore -j` can seek in it (default: state-dir/restore).
    pub restore_scratch_dir: PathBuf,
    pub socket: PathBuf,
    /// Group given access to the control socket; `None` leaves the daemon's own group.
    pub socket_group: Option<String>,
    pub timezone: Tz,
    pub stop_timeout: Duration,
    pub max_concurrent_jobs: usize,
    pub log: LogTarget,
    pub log_level: String,
    /// How many run records `history.jsonl` keeps.
    pub history_size: usize,
    /// Besides backup-dir, where `backups fetch --to` may write (see
    /// [`crate::offsite::destination`]).
    pub fetch_dirs: Vec<PathBuf>,
    /// The daemon's own dead-man ping, sent from the supervisor loop every `heartbeat_every`.
    pub heartbeat_url: Option<SecretUrl>,
    pub heartbeat_every: Duration,
    /// `[notify.NAME]` channels for the daemon's own events (reload refused, unclean stop...).
    pub notify: Vec<String>,
    /// Runs in a row whose copy to an offsite target failed before `[daemon] notify` is told.
    pub offsite_fail_after: u32,
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// journald when stderr is connected to the journal (`JOURNAL_STREAM`), else stderr.
    Auto,
    Journald,
    Stderr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PostgresConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub dbname: String,
    pub passfile: Option<PathBuf>,
    /// Where pg_dump and pg_restore live; `None`: newest /usr/lib/postgresql/*/bin, then PATH.
    pub bin_dir: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: SecretUrl,
    pub password_file: Option<PathBuf>,
}

/// One job: what is common to every kind, plus its kind's own settings.
#[derive(Debug, Clone)]
pub struct JobConfig {
    pub name: JobName,
    pub description: Option<String>,
    /// `None`: the job only runs on demand.
    pub schedule: Option<Schedule>,
    pub timeout: Duration,
    pub retries: u32,
    pub retry_delay: Duration,
    pub catch_up: bool,
    /// Runs take the fleet lease when `[coordination]` names a backend (see
    /// [`JobConfig::coordinated`]).
    pub coordinate: bool,
    /// Dead-man pings for each run (`/start`, success, `/fail`); see [`crate::alerts`].
    pub ping_url: Option<SecretUrl>,
    /// Which channels hear of which of its events; see [`crate::alerts`].
    pub notify: JobNotify,
    pub spec: JobSpec,
}

/// The closed set of job kinds, each with its own settings.
#[derive(Debug, Clone)]
pub enum JobSpec {
    Backup(BackupSpec),
    Prune(crate::jobs::prune::PruneSpec),
    Rotate(RotateSpec),
    Command(CommandSpec),
    Health(HealthSpec),
    /// Continuous: supervised by [`crate::wal`], never started by the runner.
    WalArchive(WalArchiveSpec),
}

impl JobConfig {
    /// Whether runs of this job take the lease of `coordination`.
    pub fn coordinated(&self, coordination: &CoordinationConfig) -> bool {
        self.coordinate && coordination.backend != Backend::None
    }
}

impl JobSpec {
    pub fn kind(&self) -> Kind {
        match self {
            JobSpec::Backup(_) => Kind::Backup,
            JobSpec::Prune(_) => Kind::Prune,
            JobSpec::Rotate(_) => Kind::Rotate,
            JobSpec::Command(_) => Kind::Command,
            JobSpec::Health(_) => Kind::Health,
            JobSpec::WalArchive(_) => Kind::WalArchive,
        }
    }
}

/// A job's kind, as written in `kind = "..."`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Backup,
    Prune,
    Rotate,
    Command,
    Health,
    #[serde(rename = "wal-archive")]
    WalArchive,
    /// Not a configurable kind: the kind of `atprectl restore` runs, recorded under the
    /// reserved job name [`RESTORE_JOB`].
    Restore,
}

/// The job name restores are recorded under; `[jobs.restore]` is refused.
pub const RESTORE_JOB: &str = "restore";

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Backup => "backup",
            Kind::Prune => "prune",
            Kind::Rotate => "rotate",
            Kind::Command => "command",
            Kind::Health => "health",
            Kind::WalArchive => "wal-archive",
            Kind::Restore => "restore",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `kind = "command"`: run an argv (no shell) with the job's timeout.
#[derive(Debug, Clone)]
pub struct CommandSpec {
    pub argv: Vec<String>,
    pub working_dir: Option<PathBuf>,
    /// Added to the child's minimal environment (e.g. `PGPASSFILE`); keep secrets in files.
    pub env: BTreeMap<String, String>,
}

impl Config {
    /// Loads and validates `path`, applying overrides from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(path, &vars)
    }

    /// As [`Config::load`], for `atpred --check` run by an administrator outside the unit:
    /// `credential:NAME` paths resolve to where systemd will put them for atpred.service. Who
    /// may write to the folders atpred writes in is not judged: that depends on the user the
    /// unit runs as, which an administrator's check does not run as (the daemon judges it when
    /// it starts and at each reload).
    pub fn load_for_check(path: &Path) -> Result<Config, ConfigError> {
        let mut vars: Vec<(String, String)> = std::env::vars().collect();
        if !vars.iter().any(|(k, _)| k == CREDENTIALS_VAR) {
            vars.push((CREDENTIALS_VAR.to_owned(), UNIT_CREDENTIALS_DIR.to_owned()));
        }
        Self::load_inner(path, &vars, false)
    }

    /// As [`Config::load`], with the environment given explicitly (for tests).
    pub fn load_with_env(path: &Path, env: &[(String, String)]) -> Result<Config, ConfigError> {
        Self::load_inner(path, env, true)
    }

    /// `judge_folders`: refuse folders users other than root and this process's may write to.
    fn load_inner(
        path: &Path,
        env: &[(String, String)],
        judge_folders: bool,
    ) -> Result<Config, ConfigError> {
        let text = read_checked(path)?;
        let vars = our_vars(env);
        let credentials = env
            .iter()
            .find(|(k, _)| k == CREDENTIALS_VAR)
            .map(|(_, v)| PathBuf::from(v));
        let raw = parse(path, &text, &vars)?;
        validate::validate(
            raw,
            path,
            &text,
            &vars,
            credentials.as_deref(),
            judge_folders,
        )
    }
}

fn read_checked(path: &Path) -> Result<String, ConfigError> {
    let read_err = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if !meta.is_file() {
        return Err(ConfigError::NotAFile {
            path: path.to_owned(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o002 != 0 {
        return Err(ConfigError::WorldWritable {
            path: path.to_owned(),
            mode,
        });
    }
    std::fs::read_to_string(path).map_err(read_err)
}

/// Set by systemd for a unit with `LoadCredential=`: where its credentials are.
const CREDENTIALS_VAR: &str = "CREDENTIALS_DIRECTORY";
/// Where systemd 252+ puts the credentials of atpred.service.
const UNIT_CREDENTIALS_DIR: &str = "/run/credentials/atpred.service";
/// A secret file given as `credential:NAME` is `$CREDENTIALS_DIRECTORY/NAME`.
pub const CREDENTIAL_PREFIX: &str = "credential:";

/// The variables that are ours: `ATPRED__...`, as (variable, value) pairs.
fn our_vars(env: &[(String, String)]) -> BTreeMap<String, String> {
    let prefix = format!("{ENV_PREFIX}__");
    env.iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The environment variable that would set dotted `key`, if one is set.
pub(super) fn env_var_for(key: &str, vars: &BTreeMap<String, String>) -> Option<String> {
    let wanted =
        format!("{ENV_PREFIX}__{}", key.replace('.', "__").replace('-', "_")).to_uppercase();
    vars.keys().find(|k| k.to_uppercase() == wanted).cloned()
}

fn parse(
    path: &Path,
    text: &str,
    vars: &BTreeMap<String, String>,
) -> Result<raw::RawConfig, ConfigError> {
    use config::{Environment, File, FileFormat};

    if let Err(e) = toml::de::DeTable::parse(text) {
        return Err(invalid(
            path,
            None,
            e.span().map(|s| locate::position(text, s.start)),
            None,
            e.message(),
        ));
    }
    let layered = config::Config::builder()
        .add_source(File::from_str(text, FileFormat::Toml))
        .add_source(
            Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .convert_case(config::Case::Kebab)
                .source(Some(vars.clone().into_iter().collect())),
        )
        .build()
        .map_err(|e| invalid(path, None, None, None, &e.to_string()))?;
    serde_path_to_error::deserialize(layered).map_err(|e| {
        let key = e.path().to_string();
        let key = (key != "." && !key.is_empty()).then_some(key);
        let env_var = key.as_deref().and_then(|k| env_var_for(k, vars));
        let position = match (&key, &env_var) {
            (Some(k), None) => locate::locate(text, k),
            _ => None,
        };
        invalid(
            path,
            key,
            position,
            env_var,
            &clean_message(&e.into_inner().to_string()),
        )
    })
}

/// The `config` crate appends its own "for key `x` in ..." tails; we say the key ourselves.
fn clean_message(msg: &str) -> String {
    msg.split(" for key ")
        .next()
        .unwrap_or(msg)
        .trim()
        .to_owned()
}

fn invalid(
    path: &Path,
    key: Option<String>,
    position: Option<(usize, usize)>,
    env_var: Option<String>,
    message: &str,
) -> ConfigError {
    ConfigError::Invalid(Box::new(Invalid {
        file: path.to_owned(),
        key,
        position,
        env_var,
        message: message.to_owned(),
    }))
}

#[cfg(test)]
mod tests;
