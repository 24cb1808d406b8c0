//! The recovery metrics of each backup job, read at scrape time from the catalog and the
//! backups' `evidence.json` ([`crate::restore::evidence`]), so they survive a restart and
//! the data age grows between scrapes:
//!
//! - `atpred_restore_duration_seconds{job,kind="restore"|"drill"}`: how long the last restore
//!   from, and the last restore drill of, the job's backups took;
//! - `atpred_backup_data_age_seconds{job}`: now minus the snapshot time of the job's newest
//!   verified backup (the recovery point as it stands now);
//! - `atpred_restore_drill_timestamp_seconds{job}`: when a drill of the job's backups last
//!   passed (Unix time); a drill made at backup time before evidence existed counts too.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::{FloatGauge, Labels};
use crate::config::{Config, JobSpec, VerifyLevel};
use crate::jobs::catalog::{self, State};
use crate::restore::evidence::{self, Evidence};

/// The evidence of every verified backup in `catalog` that has some, by id (blocking reads).
pub(super) fn evidence_of(
    backup_dir: &Path,
    catalog: &[catalog::Entry],
) -> BTreeMap<String, Evidence> {
    catalog
        .iter()
        .filter(|e| e.state == State::Verified)
        .filter_map(|e| {
            let dir = catalog::path_of(backup_dir, &e.id)?;
            Some((e.id.clone(), evidence::read(&dir)?))
        })
        .collect()
}

pub(super) fn register(
    config: &Config,
    catalog: &[catalog::Entry],
    evidence: &BTreeMap<String, Evidence>,
    registry: &mut Registry,
    now: DateTime<Utc>,
) {
    let gauge = |name: &str, help: &str, registry: &mut Registry| {
        let g = Family::<Labels, FloatGauge>::default();
        registry.register(name, help, g.clone());
        g
    };
    let duration = gauge(
        "atpred_restore_duration_seconds",
        "how long the last restore (kind=restore) or restore drill (kind=drill) of the job's backups took",
        registry,
    );
    let age = gauge(
        "atpred_backup_data_age_seconds",
        "age of the data in the job's newest verified backup: the recovery point as it stands now",
        registry,
    );
    let drilled = gauge(
        "atpred_restore_drill_timestamp_seconds",
        "when a restore drill of the job's backups last passed (Unix time)",
        registry,
    );
    for job in config.jobs.values() {
        if !matches!(job.spec, JobSpec::Backup(_)) {
            continue;
        }
        let name = job.name.as_str();
        let backups: Vec<(&catalog::Entry, Option<&Evidence>)> = catalog
            .iter()
            .filter(|e| e.state == State::Verified)
            .filter(|e| e.manifest.as_ref().is_some_and(|m| m.job == name))
            .map(|e| (e, evidence.get(&e.id)))
            .collect();
        let labels = |kind: Option<&str>| {
            let mut l = vec![("job".to_owned(), name.to_owned())];
            if let Some(k) = kind {
                l.push(("kind".to_owned(), k.to_owned()));
            }
            l
        };
        let evs = || backups.iter().filter_map(|(_, e)| *e);
        if let Some(r) = evs()
            .filter_map(|e| e.last_restore.as_ref())
            .max_by_key(|r| r.at)
        {
            duration
                .get_or_create(&labels(Some("restore")))
                .set(r.duration_ms as f64 / 1000.0);
        }
        if let Some(d) = evs()
            .filter_map(|e| e.last_drill.as_ref())
            .max_by_key(|d| d.at)
        {
            duration
                .get_or_create(&labels(Some("drill")))
                .set(d.duration_ms as f64 / 1000.0);
        }
        let manifests = || backups.iter().filter_map(|(e, _)| e.manifest.as_ref());
        if let Some(newest) = manifests().max_by_key(|m| m.started) {
            let secs = (now - newest.started).num_milliseconds().max(0) as f64 / 1000.0;
            age.get_or_create(&labels(None)).set(secs);
        }
        let at_backup = manifests()
            .filter(|m| m.verified() && m.verification.level == VerifyLevel::Restore)
            .map(|m| m.verification.at);
        let on_evidence = evs().filter_map(|e| e.last_passed_drill.as_ref().map(|d| d.at));
        if let Some(at) = at_backup.chain(on_evidence).max() {
            drilled
                .get_or_create(&labels(None))
                .set(at.timestamp_millis() as f64 / 1000.0);
        }
    }
}
