//! Settings of `kind = "health"` jobs: which checks run, their thresholds, and the alerts sent
//! when a check changes state.

use std::path::PathBuf;
use std::time::Duration;

use super::raw::RawJob;
use super::validate::Check;
use super::{ConfigError, DaemonConfig};
use crate::secret::SecretUrl;

/// The keys a health job accepts besides the common ones.
pub(super) const KEYS: &[&str] = &[
    "checks",
    "http-url",
    "http-expect-status",
    "http-expect-body",
    "http-ca-file",
    "disk-paths",
    "disk-min-free",
    "disk-min-free-inodes",
    "backup-max-age",
    "failing-runs",
    "check-timeout",
    "on-change",
    "webhook",
];

/// The log folder of the ATP-RE application, watched by default beside backup-dir.
const DEFAULT_LOG_DIR: &str = "/var/log/atpre";

/// One kind of check; its name is also the `check` label and the journald `CHECK` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CheckKind {
    Postgres,
    Redis,
    Http,
    Disk,
    BackupFreshness,
    Jobs,
}

impl CheckKind {
    pub const ALL: [CheckKind; 6] = [
        CheckKind::Postgres,
        CheckKind::Redis,
        CheckKind::Http,
        CheckKind::Disk,
        CheckKind::BackupFreshness,
        CheckKind::Jobs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CheckKind::Postgres => "postgres",
            CheckKind::Redis => "redis",
            CheckKind::Http => "http",
            CheckKind::Disk => "disk",
            CheckKind::BackupFreshness => "backup-freshness",
            CheckKind::Jobs => "jobs",
        }
    }

    fn parse(s: &str) -> Option<CheckKind> {
        CheckKind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// A free-space floor: a share of the filesystem or an absolute amount.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    Percent(f64),
    /// Bytes, or inodes for `disk-min-free-inodes`.
    Absolute(u64),
}

impl Threshold {
    /// The floor in units for a filesystem of `total` units.
    pub fn floor(self, total: u64) -> u64 {
        match self {
            Threshold::Percent(p) => (total as f64 * p / 100.0).ceil() as u64,
            Threshold::Absolute(n) => n,
        }
    }
}

/// `kind = "health"`: the checks and what to do when one changes state.
#[derive(Debug, Clone)]
pub struct HealthSpec {
    pub checks: Vec<CheckKind>,
    /// May hold credentials (`user:pass@`, `?token=`): shown redacted only.
    pub http_url: SecretUrl,
    pub http_expect_status: u16,
    pub http_expect_body: Option<String>,
    /// Extra trusted roots (PEM) for an https `http-url` signed by a private CA.
    pub http_ca_file: Option<PathBuf>,
    pub disk_paths: Vec<PathBuf>,
    pub disk_min_free: Threshold,
    pub disk_min_free_inodes: Threshold,
    pub backup_max_age: Option<Duration>,
    pub failing_runs: u32,
    pub check_timeout: Duration,
    pub on_change: Option<Vec<String>>,
    /// Webhook URLs carry their token anywhere (user-info, path, query): shown as scheme
    /// and host only.
    pub webhook: Option<SecretUrl>,
}

pub(super) fn validate(
    check: &Check,
    key: &str,
    raw: RawJob,
    daemon: &DaemonConfig,
) -> Result<HealthSpec, ConfigError> {
    let k = |name: &str| format!("{key}.{name}");
    let checks = match raw.checks {
        None => CheckKind::ALL.to_vec(),
        Some(names) => {
            let mut checks = Vec::new();
            for name in &names {
                let kind = CheckKind::parse(name).ok_or_else(|| {
                    check.err(
                        &k("checks"),
                        format!(
                            "unknown check {name:?}: expected some of \"postgres\", \"redis\", \"http\", \"disk\", \"backup-freshness\", \"jobs\""
                        ),
                    )
                })?;
                if checks.contains(&kind) {
                    return Err(check.err(&k("checks"), format!("{name:?} is listed twice")));
                }
                checks.push(kind);
            }
            if checks.is_empty() {
                return Err(check.err(&k("checks"), "lists no check"));
            }
            checks
        }
    };
    let http_url = raw
        .http_url
        .unwrap_or_else(|| "http://127.0.0.1:8000/health".to_owned());
    let http_url = SecretUrl::new(http_url);
    if !http_url.expose().starts_with("http://") && !http_url.expose().starts_with("https://") {
        return Err(check.err(
            &k("http-url"),
            format!("{http_url} is not an http:// or https:// URL"),
        ));
    }
    let http_expect_status = raw.http_expect_status.unwrap_or(200);
    if !(100..=599).contains(&http_expect_status) {
        return Err(check.err(
            &k("http-expect-status"),
            "must be an HTTP status code between 100 and 599",
        ));
    }
    let disk_paths = match raw.disk_paths {
        None => vec![daemon.backup_dir.clone(), PathBuf::from(DEFAULT_LOG_DIR)],
        Some(paths) => {
            if let Some(p) = paths.iter().find(|p| !p.is_absolute()) {
                return Err(check.err(
                    &k("disk-paths"),
                    format!("{} is not an absolute path", p.display()),
                ));
            }
            paths
        }
    };
    let disk_min_free = threshold(check, &k("disk-min-free"), raw.disk_min_free, true)?
        .unwrap_or(Threshold::Percent(10.0));
    let disk_min_free_inodes = threshold(
        check,
        &k("disk-min-free-inodes"),
        raw.disk_min_free_inodes,
        false,
    )?
    .unwrap_or(Threshold::Percent(5.0));
    let backup_max_age = raw
        .backup_max_age
        .as_deref()
        .map(|t| check.duration(&k("backup-max-age"), Some(t), Duration::ZERO))
        .transpose()?;
    let failing_runs = raw.failing_runs.unwrap_or(3);
    if !(1..=100).contains(&failing_runs) {
        return Err(check.err(&k("failing-runs"), "must be between 1 and 100"));
    }
    let check_timeout = check.duration(
        &k("check-timeout"),
        raw.check_timeout.as_deref(),
        Duration::from_secs(10),
    )?;
    let on_change = match raw.on_change {
        None => None,
        Some(argv) if argv.is_empty() || argv[0].is_empty() => {
            return Err(check.err(
                &k("on-change"),
                "needs a program and its arguments, e.g. [\"/usr/local/bin/page-ops\"]",
            ));
        }
        Some(argv) if argv.iter().any(|a| a.contains('\0')) => {
            return Err(check.err(&k("on-change"), "arguments must not contain NUL bytes"));
        }
        Some(argv) => Some(argv),
    };
    let webhook = raw.webhook.map(SecretUrl::origin_only);
    if let Some(url) = &webhook
        && !url.expose().starts_with("http://")
        && !url.expose().starts_with("https://")
    {
        return Err(check.err(&k("webhook"), "is not an http:// or https:// URL"));
    }
    if let Some(p) = &raw.http_ca_file
        && !p.is_absolute()
    {
        return Err(check.err(&k("http-ca-file"), "must be an absolute path"));
    }
    Ok(HealthSpec {
        checks,
        http_url,
        http_expect_status,
        http_expect_body: raw.http_expect_body,
        http_ca_file: raw.http_ca_file,
        disk_paths,
        disk_min_free,
        disk_min_free_inodes,
        backup_max_age,
        failing_runs,
        check_timeout,
        on_change,
        webhook,
    })
}

/// `"10%"`, or an amount: bytes (`"5GiB"`, `"500MB"`) or, for inodes, a plain count.
fn threshold(
    check: &Check,
    key: &str,
    value: Option<String>,
    bytes: bool,
) -> Result<Option<Threshold>, ConfigError> {
    let Some(text) = value else {
        return Ok(None);
    };
    let t = text.trim();
    if let Some(p) = t.strip_suffix('%') {
        return match p.trim().parse::<f64>() {
            Ok(p) if (0.0..100.0).contains(&p) => Ok(Some(Threshold::Percent(p))),
            _ => Err(check.err(
                key,
                format!("{text:?} is not a percentage from 0% to below 100%"),
            )),
        };
    }
    let amount = if bytes {
        t.parse::<bytesize::ByteSize>().map(|b| b.as_u64()).ok()
    } else {
        t.parse::<u64>().ok()
    };
    match amount {
        Some(n) => Ok(Some(Threshold::Absolute(n))),
        None if bytes => Err(check.err(
            key,
            format!("{text:?} is neither a percentage (\"10%\") nor a size (\"5GiB\")"),
        )),
        None => Err(check.err(
            key,
            format!("{text:?} is neither a percentage (\"5%\") nor a number of inodes"),
        )),
    }
}

/// Two health jobs running the same check would overwrite each other's state.
pub(super) fn check_unique(check: &Check, config: &super::Config) -> Result<(), ConfigError> {
    let mut seen: std::collections::BTreeMap<CheckKind, &str> = Default::default();
    for job in config.jobs.values() {
        let super::JobSpec::Health(spec) = &job.spec else {
            continue;
        };
        for kind in &spec.checks {
            if let Some(other) = seen.insert(*kind, job.name.as_str()) {
                return Err(check.err(
                    &format!("jobs.{}.checks", job.name),
                    format!(
                        "check {:?} is already run by health job {other:?}: each check belongs to one job",
                        kind.name()
                    ),
                ));
            }
        }
    }
    Ok(())
}
