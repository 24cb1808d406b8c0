//! Validation of `[jobs.NAME]` tables: the keys every job has, then its kind's own.

use std::time::Duration;

use super::raw::RawJob;
use super::validate::Check;
use super::{CommandSpec, ConfigError, DaemonConfig, JobConfig, JobSpec, PostgresConfig};
use crate::ids::JobName;
use crate::scheduler::Schedule;

/// Keys every job accepts, whatever its kind.
const COMMON_KEYS: &[&str] = &[
    "kind",
    "description",
    "schedule",
    "timeout",
    "retries",
    "retry-delay",
    "catch-up",
    "coordinate",
    "ping-url",
    "notify",
    "notify-on",
    "repeat-every",
    "fail-after",
];
const COMMAND_KEYS: &[&str] = &["command", "working-dir", "env"];
const MAX_RETRIES: u32 = 10;

pub(super) fn job(
    check: &Check,
    key: &str,
    name: JobName,
    mut raw: RawJob,
    postgres: &PostgresConfig,
    daemon: &DaemonConfig,
) -> Result<JobConfig, ConfigError> {
    let Some(kind) = raw.kind.clone() else {
        return Err(check.err(
            &format!("{key}.kind"),
            "missing: say which kind of job this is (e.g. kind = \"command\")",
        ));
    };
    let kind_keys = match kind.as_str() {
        "command" => COMMAND_KEYS,
        "backup" => super::backup::KEYS,
        "prune" => super::prune::KEYS,
        "rotate" => super::rotate::KEYS,
        "health" => super::health::KEYS,
        "wal-archive" => super::wal::KEYS,
        other => {
            return Err(check.err(
                &format!("{key}.kind"),
                format!(
                    "unknown kind {other:?}: expected one of \"backup\", \"prune\", \"health\", \"rotate\", \"command\", \"wal-archive\""
                ),
            ));
        }
    };
    if let Some(foreign) = raw
        .set_keys()
        .into_iter()
        .find(|k| !COMMON_KEYS.contains(&k.as_str()) && !kind_keys.contains(&k.as_str()))
    {
        return Err(check.err(
            &format!("{key}.{foreign}"),
            format!("not a setting of kind {kind:?} jobs"),
        ));
    }
    let schedule = match &raw.schedule {
        None => None,
        Some(text) => Some(
            Schedule::parse(text)
                .map_err(|e| check.err(&format!("{key}.schedule"), with_causes(&e)))?,
        ),
    };
    let catch_up = raw.catch_up.unwrap_or(false);
    if catch_up && schedule.is_none() {
        return Err(check.err(
            &format!("{key}.catch-up"),
            "needs a schedule: a job without one never misses a run",
        ));
    }
    let retries = raw.retries.unwrap_or(0);
    if retries > MAX_RETRIES {
        return Err(check.err(&format!("{key}.retries"), format!("at most {MAX_RETRIES}")));
    }
    let default_timeout = if kind == "backup" { 4 * 3600 } else { 3600 };
    let timeout = check.duration(
        &format!("{key}.timeout"),
        raw.timeout.as_deref(),
        Duration::from_secs(default_timeout),
    )?;
    let retry_delay = check.duration(
        &format!("{key}.retry-delay"),
        raw.retry_delay.as_deref(),
        Duration::from_secs(30),
    )?;
    let coordinate = coordinate(check, key, &kind, raw.coordinate)?;
    let description = raw.description.clone();
    if kind == "wal-archive" && raw.ping_url.is_some() {
        return Err(check.err(
            &format!("{key}.ping-url"),
            "a wal-archive job has no runs to ping about; its state is in the health check wal:<job>",
        ));
    }
    let ping_url = super::ping::url(check, &format!("{key}.ping-url"), raw.ping_url.take())?;
    let notify = super::notify::job(check, key, &mut raw)?;
    let spec = match kind.as_str() {
        "backup" => JobSpec::Backup(super::backup::validate(check, key, raw, postgres)?),
        "prune" => JobSpec::Prune(super::prune::validate(check, key, raw)?),
        "rotate" => JobSpec::Rotate(super::rotate::validate(check, key, raw)?),
        "health" => JobSpec::Health(super::health::validate(check, key, raw, daemon)?),
        "wal-archive" => JobSpec::WalArchive(super::wal::validate(
            check,
            key,
            name.as_str(),
            raw,
            postgres,
            daemon,
        )?),
        _ => command(check, key, raw)?,
    };
    Ok(JobConfig {
        name,
        description,
        schedule,
        timeout,
        retries,
        retry_delay,
        catch_up,
        coordinate,
        ping_url,
        notify,
        spec,
    })
}

/// `coordinate` (default true) applies to the kinds that act on things the fleet shares: a
/// backup of the shared database, a prune of shared storage, a command. Rotation and health
/// checks look at this host only; every host must run them, so they refuse the key.
fn coordinate(
    check: &Check,
    key: &str,
    kind: &str,
    value: Option<bool>,
) -> Result<bool, ConfigError> {
    match (kind, value) {
        ("rotate" | "health" | "wal-archive", Some(_)) => Err(check.err(
            &format!("{key}.coordinate"),
            format!(
                "{kind} jobs act on this host only and are never coordinated across hosts; remove the key"
            ),
        )),
        ("rotate" | "health" | "wal-archive", None) => Ok(false),
        (_, v) => Ok(v.unwrap_or(true)),
    }
}

fn command(check: &Check, key: &str, raw: RawJob) -> Result<JobSpec, ConfigError> {
    let argv = raw.command.unwrap_or_default();
    if argv.is_empty() || argv[0].is_empty() {
        return Err(check.err(
            &format!("{key}.command"),
            "needs a program and its arguments, e.g. [\"vacuumdb\", \"--all\"]",
        ));
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(check.err(
            &format!("{key}.command"),
            "arguments must not contain NUL bytes",
        ));
    }
    if let Some(dir) = &raw.working_dir
        && !dir.is_absolute()
    {
        return Err(check.err(&format!("{key}.working-dir"), "must be an absolute path"));
    }
    let env = raw.env.unwrap_or_default();
    if let Some(bad) = env
        .keys()
        .find(|k| k.is_empty() || k.contains(['=', '\0']) || k.as_str() == "NOTIFY_SOCKET")
    {
        return Err(check.err(
            &format!("{key}.env"),
            format!("{bad:?} is not a variable a job may set"),
        ));
    }
    Ok(JobSpec::Command(CommandSpec {
        argv,
        working_dir: raw.working_dir,
        env,
    }))
}

/// An error and its sources, "outer: inner: innermost".
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}
