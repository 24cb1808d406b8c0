//! Raw mirror -> typed [`Config`]: defaults, parsing of schedules, time zones and durations,
//! and the checks that span several keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{RawConfig, RawDaemon, RawPostgres, RawRedis};
use super::{
    Config, ConfigError, DaemonConfig, LogTarget, PostgresConfig, RedisConfig, env_var_for,
    invalid, locate,
};
use crate::ids::JobName;
use crate::secret::SecretUrl;

/// Collects errors with their positions; validation stops at the first one.
pub(super) struct Check<'a> {
    path: &'a Path,
    text: &'a str,
    /// The `ATPRED__*` overrides in force: an error in a value they set names the variable.
    vars: &'a BTreeMap<String, String>,
    /// `$CREDENTIALS_DIRECTORY`, where `credential:NAME` paths point.
    credentials: Option<&'a Path>,
    /// Whether [`Check::safe_folder`] judges (false for an administrator's `--check`).
    judge_folders: bool,
}

impl Check<'_> {
    pub(super) fn err(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let env_var = env_var_for(key, self.vars);
        let position = if env_var.is_some() {
            None
        } else {
            locate::locate(self.text, key)
        };
        invalid(
            self.path,
            Some(key.to_owned()),
            position,
            env_var,
            &message.into(),
        )
    }

    /// Refuses `folder` (where the value of `key` makes atpred write files) when users other
    /// than root and atpred's own may write to it or to a folder above it.
    pub(super) fn safe_folder(&self, key: &str, folder: &Path) -> Result<(), ConfigError> {
        if !self.judge_folders {
            return Ok(());
        }
        crate::trust::check_folder(folder, &crate::trust::Trusted::daemon()).map_err(|why| {
            self.err(
                key,
                format!(
                    "{why}: only root and atpred's user may write where atpred writes its files (anyone else could plant or swap them)"
                ),
            )
        })
    }

    pub(super) fn duration(
        &self,
        key: &str,
        value: Option<&str>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(text) = value else {
            return Ok(default);
        };
        let d = humantime::parse_duration(text.trim()).map_err(|e| {
            self.err(
                key,
                format!("invalid duration {text:?}: {e} (write e.g. \"30s\", \"15m\", \"2h\")"),
            )
        })?;
        if d.is_zero() {
            return Err(self.err(key, "must be greater than zero"));
        }
        Ok(d)
    }

    fn absolute(
        &self,
        key: &str,
        value: Option<PathBuf>,
        default: &str,
    ) -> Result<PathBuf, ConfigError> {
        let p = value.unwrap_or_else(|| PathBuf::from(default));
        if !p.is_absolute() {
            return Err(self.err(
                key,
                format!("must be an absolute path, got {}", p.display()),
            ));
        }
        Ok(p)
    }

    /// A compression level at `key`: `default` when unset, else within `range` for `method`.
    pub(super) fn compress_level(
        &self,
        key: &str,
        level: Option<i32>,
        method: &str,
        range: std::ops::RangeInclusive<i32>,
        default: i32,
    ) -> Result<i32, ConfigError> {
        match level {
            Some(l) if !range.contains(&l) => Err(self.err(
                key,
                format!(
                    "{l} is outside {}..={} for {method}",
                    range.start(),
                    range.end()
                ),
            )),
            Some(l) => Ok(l),
            None => Ok(default),
        }
    }

    /// A file holding a secret: an absolute path, or `credential:NAME` for a credential systemd
    /// passed with `LoadCredential=NAME:…` (read from `$CREDENTIALS_DIRECTORY`, so the original
    /// may stay readable by root only).
    pub(super) fn secret_file(
        &self,
        key: &str,
        value: Option<PathBuf>,
    ) -> Result<Option<PathBuf>, ConfigError> {
        let Some(path) = value.filter(|p| !p.as_os_str().is_empty()) else {
            return Ok(None);
        };
        let Some(name) = path
            .to_str()
            .and_then(|p| p.strip_prefix(super::CREDENTIAL_PREFIX))
        else {
            if !path.is_absolute() {
                return Err(self.err(
                    key,
                    format!(
                        "must be an absolute path or credential:NAME, got {}",
                        path.display()
                    ),
                ));
            }
            return Ok(Some(path));
        };
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(self.err(
                key,
                format!("{name:?} is not a credential name (no \"/\", not empty)"),
            ));
        }
        let Some(dir) = self.credentials else {
            return Err(self.err(
                key,
                format!(
                    "credential:{name} needs $CREDENTIALS_DIRECTORY, which systemd sets for a unit \
                     with LoadCredential={name}:PATH; outside systemd give the file's path"
                ),
            ));
        };
        Ok(Some(dir.join(name)))
    }
}

pub(super) fn validate(
    raw: RawConfig,
    path: &Path,
    text: &str,
    vars: &BTreeMap<String, String>,
    credentials: Option<&Path>,
    judge_folders: bool,
) -> Result<Config, ConfigError> {
    let check = Check {
        path,
        text,
        vars,
        credentials,
        judge_folders,
    };
    let daemon = daemon(&check, raw.daemon)?;
    let postgres = postgres(&check, raw.postgres)?;
    let redis = redis(&check, raw.redis)?;
    let metrics = super::metrics::validate(&check, raw.metrics)?;
    let offsite = super::offsite::validate(&check, raw.offsite)?;
    let coordination = super::coordination::validate(&check, raw.coordination)?;
    let notify = super::notify::validate(&check, raw.notify)?;
    let mut jobs = BTreeMap::new();
    for (name, job) in raw.jobs {
        let key = format!("jobs.{name}");
        let name: JobName = name.parse().map_err(|e: String| check.err(&key, e))?;
        if name.as_str() == super::RESTORE_JOB {
            return Err(check.err(
                &key,
                "the job name \"restore\" is reserved: restores are recorded in the history \
                 under it (and `atprectl cancel restore` cancels one); choose another name",
            ));
        }
        jobs.insert(
            name.clone(),
            super::jobs::job(&check, &key, name, job, &postgres, &daemon)?,
        );
    }
    let config = Config {
        source: path.to_owned(),
        daemon,
        postgres,
        redis,
        jobs,
        metrics,
        offsite,
        coordination,
        notify,
    };
    super::prune::check_targets(&check, &config)?;
    super::wal::check_base_backups(&check, &config)?;
    super::offsite::check_jobs(&check, &config)?;
    super::health::check_unique(&check, &config)?;
    super::notify::check_names(&check, &config)?;
    let mut config = config;
    let mut notify = std::mem::take(&mut config.notify);
    super::health_alias::add(&config, &mut notify);
    config.notify = notify;
    Ok(config)
}

fn daemon(check: &Check, raw: RawDaemon) -> Result<DaemonConfig, ConfigError> {
    let state_dir = check.absolute("daemon.state-dir", raw.state_dir, "/var/lib/atpred")?;
    check.safe_folder("daemon.state-dir", &state_dir)?;
    let backup_dir = check.absolute(
        "daemon.backup-dir",
        raw.backup_dir,
        "/var/lib/atpred/backups",
    )?;
    let restore_scratch_dir = match raw.restore_scratch_dir {
        None => state_dir.join("restore"),
        given => check.absolute(
            "daemon.restore-scratch-dir",
            given,
            "/var/lib/atpre/restore",
        )?,
    };
    // Restores and drills unpack archives, data directories and WAL there: a folder others
    // may write to would let them plant or swap what a restore reads or a drill's server runs.
    check.safe_folder("daemon.restore-scratch-dir", &restore_scratch_dir)?;
    let socket = check.absolute("daemon.socket", raw.socket, "/run/atpred/atpred.sock")?;
    let timezone = raw.timezone.as_deref().unwrap_or("UTC");
    let timezone = timezone.parse().map_err(|_| {
        check.err(
            "daemon.timezone",
            format!("unknown time zone {timezone:?}: use an IANA name such as \"UTC\" or \"Europe/Berlin\""),
        )
    })?;
    let stop_timeout = check.duration(
        "daemon.stop-timeout",
        raw.stop_timeout.as_deref(),
        Duration::from_secs(30),
    )?;
    let max_concurrent_jobs = raw.max_concurrent_jobs.unwrap_or(2);
    if !(1..=64).contains(&max_concurrent_jobs) {
        return Err(check.err("daemon.max-concurrent-jobs", "must be between 1 and 64"));
    }
    let log = match raw.log.as_deref().unwrap_or("auto") {
        "auto" => LogTarget::Auto,
        "journald" => LogTarget::Journald,
        "stderr" => LogTarget::Stderr,
        other => {
            return Err(check.err(
                "daemon.log",
                format!("{other:?} is not one of \"auto\", \"journald\", \"stderr\""),
            ));
        }
    };
    let log_level = raw.log_level.unwrap_or_else(|| "info".to_owned());
    if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
        return Err(check.err(
            "daemon.log-level",
            format!("invalid level or filter {log_level:?}"),
        ));
    }
    let history_size = raw.history_size.unwrap_or(1000);
    if !(10..=100_000).contains(&history_size) {
        return Err(check.err("daemon.history-size", "must be between 10 and 100000"));
    }
    let socket_group = raw.socket_group.filter(|g| !g.is_empty());
    let fetch_dirs = fetch_dirs(check, raw.fetch_dirs.unwrap_or_default(), &backup_dir)?;
    let heartbeat_url = super::ping::url(check, "daemon.heartbeat-url", raw.heartbeat_url)?;
    let heartbeat_every = super::ping::every(check, raw.heartbeat_every.as_deref())?;
    let offsite_fail_after = raw.offsite_fail_after.unwrap_or(3);
    if !(1..=1000).contains(&offsite_fail_after) {
        return Err(check.err("daemon.offsite-fail-after", "must be between 1 and 1000"));
    }
    Ok(DaemonConfig {
        state_dir,
        backup_dir,
        restore_scratch_dir,
        socket,
        socket_group,
        timezone,
        stop_timeout,
        max_concurrent_jobs: max_concurrent_jobs as usize,
        log,
        log_level,
        history_size: history_size as usize,
        fetch_dirs,
        heartbeat_url,
        heartbeat_every,
        notify: raw.notify.unwrap_or_default(),
        offsite_fail_after,
    })
}

/// `daemon.fetch-dirs`: absolute, plain paths (no `.` or `..`), not `/` itself, and not
/// inside backup-dir (a fetched folder there would be taken for a damaged backup).
fn fetch_dirs(
    check: &Check,
    dirs: Vec<PathBuf>,
    backup_dir: &std::path::Path,
) -> Result<Vec<PathBuf>, ConfigError> {
    for d in &dirs {
        let plain = d.is_absolute()
            && d.parent().is_some()
            && !d.components().any(|c| {
                matches!(
                    c,
                    std::path::Component::ParentDir | std::path::Component::CurDir
                )
            });
        if !plain {
            return Err(check.err(
                "daemon.fetch-dirs",
                format!(
                    "{} is not an absolute folder path without . or .. (and not /)",
                    d.display()
                ),
            ));
        }
        if d.starts_with(backup_dir) {
            return Err(check.err(
                "daemon.fetch-dirs",
                format!(
                    "{} is inside backup-dir: the catalog would take a fetched folder there for a damaged backup",
                    d.display()
                ),
            ));
        }
    }
    Ok(dirs)
}

pub(super) fn postgres(check: &Check, raw: RawPostgres) -> Result<PostgresConfig, ConfigError> {
    let passfile = check.secret_file("postgres.passfile", raw.passfile)?;
    Ok(PostgresConfig {
        host: raw.host.unwrap_or_else(|| "/var/run/postgresql".to_owned()),
        port: raw.port.unwrap_or(5432),
        user: raw.user.unwrap_or_else(|| "atp_user".to_owned()),
        dbname: raw.dbname.unwrap_or_else(|| "atp_re".to_owned()),
        passfile,
        bin_dir: raw.bin_dir.filter(|p| !p.as_os_str().is_empty()),
    })
}

fn redis(check: &Check, raw: RawRedis) -> Result<RedisConfig, ConfigError> {
    let url = SecretUrl::new(
        raw.url
            .unwrap_or_else(|| "redis://127.0.0.1:6379/0".to_owned()),
    );
    let scheme_ok = ["redis://", "rediss://", "unix://", "redis+unix://"]
        .iter()
        .any(|s| url.expose().starts_with(s));
    if !scheme_ok {
        // The URL may hold a password: show only its redacted form.
        return Err(check.err(
            "redis.url",
            format!("{url} is not a redis://, rediss://, unix:// or redis+unix:// URL"),
        ));
    }
    Ok(RedisConfig {
        url,
        password_file: check.secret_file("redis.password-file", raw.password_file)?,
    })
}
