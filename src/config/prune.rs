//! Settings of `kind = "prune"` jobs: a retention policy and the backup jobs it applies to.

use super::ConfigError;
use super::offsite::OffsiteNames;
use super::raw::RawJob;
use super::validate::Check;
use crate::ids::JobName;
use crate::jobs::calendar_duration::CalendarDuration;
use crate::jobs::prune::{PruneSpec, Target};
use crate::jobs::retention::{Count, Period, Policy};

/// The keys a prune job accepts besides the common ones.
pub(super) const KEYS: &[&str] = &[
    "keep-last",
    "keep-hourly",
    "keep-daily",
    "keep-weekly",
    "keep-monthly",
    "keep-yearly",
    "keep-within",
    "keep-within-hourly",
    "keep-within-daily",
    "keep-within-weekly",
    "keep-within-monthly",
    "keep-within-yearly",
    "min-keep",
    "of",
    "target",
    "offsite",
];

pub(super) fn validate(check: &Check, key: &str, raw: RawJob) -> Result<PruneSpec, ConfigError> {
    let k = |name: &str| format!("{key}.{name}");
    let count = |name: &str, n: Option<i64>| -> Result<Option<Count>, ConfigError> {
        n.map(|n| Count::from_restic(n).map_err(|e| check.err(&k(name), e)))
            .transpose()
    };
    let mut policy = Policy {
        keep_last: count("keep-last", raw.keep_last)?,
        min_keep: raw.min_keep.unwrap_or(1),
        ..Policy::default()
    };
    if policy.min_keep == 0 {
        return Err(check.err(
            &k("min-keep"),
            "must be at least 1: the newest verified backup always stays",
        ));
    }
    for (p, n) in [
        (Period::Hourly, raw.keep_hourly),
        (Period::Daily, raw.keep_daily),
        (Period::Weekly, raw.keep_weekly),
        (Period::Monthly, raw.keep_monthly),
        (Period::Yearly, raw.keep_yearly),
    ] {
        if let Some(n) = count(&format!("keep-{}", p.name()), n)? {
            policy.keep_periods.insert(p, n);
        }
    }
    let within =
        |name: &str, v: &Option<String>| -> Result<Option<CalendarDuration>, ConfigError> {
            v.as_deref()
                .map(|t| CalendarDuration::parse(t).map_err(|e| check.err(&k(name), e.to_string())))
                .transpose()
        };
    policy.keep_within = within("keep-within", &raw.keep_within)?;
    for (period, value) in [
        (Period::Hourly, &raw.keep_within_hourly),
        (Period::Daily, &raw.keep_within_daily),
        (Period::Weekly, &raw.keep_within_weekly),
        (Period::Monthly, &raw.keep_within_monthly),
        (Period::Yearly, &raw.keep_within_yearly),
    ] {
        if let Some(d) = within(&format!("keep-within-{}", period.name()), value)? {
            policy.keep_within_periods.insert(period, d);
        }
    }
    if policy.keeps_nothing() {
        return Err(check.err(
            key,
            "this policy keeps nothing: set at least one of keep-last, keep-daily, ..., keep-within to more than 0",
        ));
    }
    let of = raw
        .of
        .unwrap_or_default()
        .iter()
        .map(|name| name.parse::<JobName>().map_err(|e| check.err(&k("of"), e)))
        .collect::<Result<Vec<_>, _>>()?;
    let offsite = match raw.offsite {
        None => None,
        Some(OffsiteNames::One(name)) => Some(name),
        Some(OffsiteNames::Many(_)) => {
            return Err(check.err(
                &k("offsite"),
                "a prune job prunes one target: give each target its own prune job (and its own retention)",
            ));
        }
    };
    let target = match (raw.target.as_deref().unwrap_or("local"), offsite) {
        ("local", None) => Target::Local,
        ("local", Some(_)) => {
            return Err(check.err(
                &k("offsite"),
                "only with target = \"offsite\" (this job prunes backup-dir)",
            ));
        }
        ("offsite", Some(name)) if !name.is_empty() => Target::Offsite(name),
        ("offsite", _) => {
            return Err(check.err(
                &k("offsite"),
                "missing: target = \"offsite\" needs offsite = \"NAME\" of an [offsite.NAME] table",
            ));
        }
        (other, _) => {
            return Err(check.err(
                &k("target"),
                format!("{other:?} is not \"local\" or \"offsite\""),
            ));
        }
    };
    Ok(PruneSpec { policy, of, target })
}

/// The names in `of` must be backup jobs of the same configuration.
pub(super) fn check_targets(check: &Check, config: &super::Config) -> Result<(), ConfigError> {
    for job in config.jobs.values() {
        let super::JobSpec::Prune(spec) = &job.spec else {
            continue;
        };
        for target in &spec.of {
            let is_backup = config
                .jobs
                .get(target)
                .is_some_and(|j| matches!(j.spec, super::JobSpec::Backup(_)));
            if !is_backup {
                return Err(check.err(
                    &format!("jobs.{}.of", job.name),
                    format!("\"{target}\" is not a backup job of this configuration"),
                ));
            }
        }
    }
    Ok(())
}
