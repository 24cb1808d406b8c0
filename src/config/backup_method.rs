//! `method` of a backup job: `logical` (pg_dump, the default) or `physical` (pg_basebackup),
//! the settings a physical backup refuses because they mean something to pg_dump only, and
//! its point-in-time drill (`pitr-drill`, `pitr-drill-lag`).

use std::time::Duration;

use super::ConfigError;
use super::backup::{BackupMethod, BackupSource};
use super::raw::RawJob;
use super::validate::Check;

/// Keys of pg_dump backups that a physical backup cannot honour. (`verify-every` it honours
/// differently: it schedules the PITR drill, [`pitr_drill`].)
const LOGICAL_ONLY: &[&str] = &["format", "parallel", "globals-passwords"];

/// Keys of physical backups only.
const PHYSICAL_ONLY: &[&str] = &["pitr-drill", "pitr-drill-lag"];

/// `pitr-drill` and `pitr-drill-lag` of a physical backup job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PitrDrill {
    /// `None`: on when a wal-archive job exists (decided when the job runs).
    pub enabled: Option<bool>,
    /// The drill replays what was archived by now minus this.
    pub lag: Duration,
}

impl Default for PitrDrill {
    fn default() -> Self {
        PitrDrill {
            enabled: Some(false),
            lag: Duration::from_secs(60),
        }
    }
}

/// The drill settings; refused on a logical job.
pub(super) fn pitr_drill(
    check: &Check,
    key: &str,
    raw: &RawJob,
    method: BackupMethod,
) -> Result<PitrDrill, ConfigError> {
    if method != BackupMethod::Physical {
        if let Some(name) = raw
            .set_keys()
            .into_iter()
            .find(|n| PHYSICAL_ONLY.contains(&n.as_str()))
        {
            return Err(check.err(
                &format!("{key}.{name}"),
                "a setting of physical backups (method = \"physical\")",
            ));
        }
        return Ok(PitrDrill::default());
    }
    let lag = check.duration(
        &format!("{key}.pitr-drill-lag"),
        raw.pitr_drill_lag.as_deref(),
        Duration::from_secs(60),
    )?;
    if raw.pitr_drill == Some(false) && raw.verify_every.is_some() {
        return Err(check.err(
            &format!("{key}.verify-every"),
            "on a physical job it says how often the PITR drill runs, and pitr-drill = false \
             turns the drill off",
        ));
    }
    Ok(PitrDrill {
        enabled: raw.pitr_drill,
        lag,
    })
}

/// The job's method, refusing settings that do not fit it.
pub(super) fn validate(
    check: &Check,
    key: &str,
    raw: &RawJob,
    source: BackupSource,
) -> Result<BackupMethod, ConfigError> {
    let k = |name: &str| format!("{key}.{name}");
    let method = match raw.method.as_deref().unwrap_or("logical") {
        "logical" => BackupMethod::Logical,
        "physical" => BackupMethod::Physical,
        other => {
            return Err(check.err(
                &k("method"),
                format!("{other:?} is not \"logical\" or \"physical\""),
            ));
        }
    };
    if method == BackupMethod::Logical {
        return Ok(method);
    }
    if source != BackupSource::Postgres {
        return Err(check.err(
            &k("method"),
            format!(
                "a physical backup is of PostgreSQL; not with source = {:?}",
                source.as_str()
            ),
        ));
    }
    if let Some(name) = raw
        .set_keys()
        .into_iter()
        .find(|n| LOGICAL_ONLY.contains(&n.as_str()))
    {
        return Err(check.err(
            &k(&name),
            "a setting of logical (pg_dump) backups; not with method = \"physical\"",
        ));
    }
    if raw.verify.as_deref() == Some("restore") {
        return Err(check.err(
            &k("verify"),
            "a physical backup is verified at \"checksum\" or \"full\" (pg_verifybackup on an \
             unpacked copy); its restore drill is the point-in-time drill",
        ));
    }
    if raw.compress.as_deref() == Some("gzip") {
        return Err(check.err(
            &k("compress"),
            "gzip is pg_dump's; a physical backup is compressed with \"zstd\" or \"none\"",
        ));
    }
    Ok(method)
}
