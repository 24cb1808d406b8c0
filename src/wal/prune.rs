//! WAL retention applied, by the prune job, to the archive of every wal-archive job whose base
//! backups the prune's set includes (`base-backups`, or every physical backup job), after the
//! backups themselves were pruned: [`local`] for `archive-dir`, [`offsite`] for the copies at
//! a target. The plan is [`super::retention`]'s.
//!
//! Locally the index is rewritten first (atomically, under the archiver's lock) and the files
//! are removed after: a crash in between leaves files the index no longer lists, never a
//! listed segment without its file; the next prune removes such leftovers below the cutoff.
//! At a target, `archive-dir/offsite-<target>.pruned` records the segment below which the
//! target was pruned before anything is deleted there, and is put there as
//! `<prefix>/wal/<job>/pruned.json`, so a restore from that target knows what it cannot find.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::index::{self, Entry as Segment, Index};
use super::partial;
use super::retention::{self, Base, WalPlan};
use super::segment::{self, SegmentName};
use crate::config::{BackupMethod, Config, JobSpec, WalArchiveSpec};
use crate::ids::JobName;
use crate::jobs::catalog::Entry;
use crate::jobs::{JobContext, JobError, JobReport};
use crate::offsite::{Remote, wal as remote_wal};
use crate::trust::{HeldDir, Trusted};

/// Assumed when the local index has no segment to tell the server's segment size.
const DEFAULT_WAL_BYTES: u64 = 16 << 20;

/// What WAL retention did (or, in a dry run, would do) to one job's archive.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub job: String,
    pub plan: WalPlan,
    pub removed: usize,
    pub freed_bytes: u64,
}

/// What `offsite-<target>.pruned` says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrunedMark {
    pub target: String,
    /// Segments before this one were removed at the target.
    pub below: String,
    pub below_lsn: String,
    pub at: DateTime<Utc>,
}

/// The mark's file name in `archive-dir`.
pub fn mark_file(target: &str) -> String {
    format!("offsite-{target}.pruned")
}

/// The physical backup jobs whose base backups count for `wal`'s retention.
pub fn base_jobs(config: &Config, wal: &WalArchiveSpec) -> Vec<JobName> {
    if !wal.base_backups.is_empty() {
        return wal.base_backups.clone();
    }
    config
        .jobs
        .values()
        .filter(|j| matches!(&j.spec, JobSpec::Backup(b) if b.method == BackupMethod::Physical))
        .map(|j| j.name.clone())
        .collect()
}

/// The wal-archive jobs with a base backup job among those a prune over `of` covers.
fn linked<'a>(
    config: &'a Config,
    of: &[JobName],
) -> Vec<(&'a JobName, &'a WalArchiveSpec, Vec<JobName>)> {
    config
        .jobs
        .values()
        .filter_map(|j| {
            let JobSpec::WalArchive(w) = &j.spec else {
                return None;
            };
            let bases = base_jobs(config, w);
            bases
                .iter()
                .any(|b| of.is_empty() || of.contains(b))
                .then_some((&j.name, w, bases))
        })
        .collect()
}

/// The base backups of `jobs` left in the catalog once `gone` are removed.
fn bases(
    entries: &[Entry],
    gone: &[String],
    jobs: &[JobName],
    wal_bytes: u64,
) -> Result<Vec<Base>, String> {
    let mut out = Vec::new();
    for e in entries.iter().filter(|e| !gone.contains(&e.id)) {
        let Some(m) = &e.manifest else { continue };
        let Some(p) = m
            .physical
            .as_ref()
            .filter(|_| jobs.iter().any(|j| j.as_str() == m.job))
        else {
            continue;
        };
        let start = SegmentName::parse(&p.start_wal_file, wal_bytes).ok_or_else(|| {
            format!(
                "base backup {}: its start WAL file {:?} is not a segment name; no WAL removed",
                e.id, p.start_wal_file
            )
        })?;
        out.push(Base {
            id: e.id.clone(),
            start,
            pinned: e.pin.is_some(),
        });
    }
    Ok(out)
}

fn wal_bytes(segments: &[Segment]) -> u64 {
    segments
        .iter()
        .find(|e| SegmentName::parse(&e.name, e.wal_bytes).is_some())
        .map_or(DEFAULT_WAL_BYTES, |e| e.wal_bytes)
}

fn held(wal: &WalArchiveSpec) -> Result<HeldDir, String> {
    HeldDir::open(&wal.archive_dir, &Trusted::daemon())
}

/// Prunes (or plans, in a dry run) the local archive of every linked wal-archive job.
pub async fn local(
    ctx: &JobContext,
    of: &[JobName],
    entries: &[Entry],
    gone: &[String],
) -> Result<Vec<Outcome>, JobError> {
    let mut outcomes = Vec::new();
    for (job, wal, jobs) in linked(&ctx.config, of) {
        if !wal.archive_dir.exists() {
            continue;
        }
        let (wal, entries, gone, dry_run) =
            (wal.clone(), entries.to_vec(), gone.to_vec(), ctx.dry_run);
        let done =
            tokio::task::spawn_blocking(move || local_one(&wal, &jobs, &entries, &gone, dry_run))
                .await
                .map_err(|e| JobError::permanent(e.to_string()))?;
        let (plan, removed, freed_bytes) =
            done.map_err(|e| JobError::permanent(format!("WAL retention of job {job}: {e}")))?;
        outcomes.push(Outcome {
            job: job.to_string(),
            plan,
            removed,
            freed_bytes,
        });
    }
    Ok(outcomes)
}

fn local_one(
    wal: &WalArchiveSpec,
    jobs: &[JobName],
    entries: &[Entry],
    gone: &[String],
    dry_run: bool,
) -> Result<(WalPlan, usize, u64), String> {
    let dir = held(wal)?;
    let at = dir.at();
    let shown = |e: std::io::Error| dir.shown(&e.to_string());
    let all = Index::read(&at).map_err(shown)?;
    let size = wal_bytes(&all);
    let segments: Vec<SegmentName> = all
        .iter()
        .filter_map(|e| SegmentName::parse(&e.name, e.wal_bytes))
        .collect();
    let owed = owed(&at, &wal.offsite, &all).map_err(shown)?;
    let plan = retention::plan(&segments, &bases(entries, gone, jobs, size)?, owed);
    let Some(cutoff) = plan
        .keep_from
        .as_deref()
        .and_then(|n| SegmentName::parse(n, size))
    else {
        return Ok((plan, 0, 0));
    };
    if dry_run {
        return Ok((plan, 0, 0));
    }
    let doomed: BTreeSet<&str> = plan.remove.iter().map(String::as_str).collect();
    let below = |n: &str| SegmentName::parse(n, size).is_some_and(|s| s.number < cutoff.number);
    // An in-flight copy below the cutoff goes with its segment's range.
    let dropped = index::rewrite(&at.join(index::INDEX_FILE), |e| {
        !doomed.contains(e.name.as_str()) && !partial::segment_of(e).is_some_and(below)
    })
    .map_err(shown)?;
    let mut freed = 0;
    for e in &dropped {
        remove_file(&at, &e.file).map_err(shown)?;
        freed += e.bytes;
    }
    // Files a crash left behind after an earlier rewrite: below the cutoff and unlisted.
    let listed: BTreeSet<String> = Index::read(&at)
        .map_err(shown)?
        .into_iter()
        .map(|e| e.file)
        .collect();
    for name in std::fs::read_dir(&at).map_err(shown)?.flatten() {
        let name = name.file_name().to_string_lossy().into_owned();
        let stem = name.trim_end_matches(".age").trim_end_matches(".zst");
        let segment = stem.split_once(partial::SUFFIX).map_or(stem, |(s, _)| s);
        if below(segment) && stem != name && !listed.contains(&name) {
            remove_file(&at, &name).map_err(shown)?;
        }
    }
    crate::publish::sync_dir(&at).map_err(shown)?;
    Ok((plan, dropped.len(), freed))
}

fn remove_file(dir: &Path, name: &str) -> std::io::Result<()> {
    match std::fs::remove_file(dir.join(name)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The oldest indexed segment one of the job's offsite `targets` has not recorded yet.
fn owed(dir: &Path, targets: &[String], all: &[Segment]) -> std::io::Result<Option<SegmentName>> {
    let mut oldest: Option<SegmentName> = None;
    for target in targets {
        let shipped: BTreeSet<String> =
            index::read_path(&dir.join(format!("offsite-{target}.jsonl")))?
                .into_iter()
                .map(|e| e.name)
                .collect();
        let first = all
            .iter()
            .filter(|e| !shipped.contains(&e.name))
            .filter_map(|e| SegmentName::parse(&e.name, e.wal_bytes))
            .min_by_key(|s| s.number);
        oldest = match (oldest, first) {
            (Some(a), Some(b)) => Some(if b.number < a.number { b } else { a }),
            (a, b) => a.or(b),
        };
    }
    Ok(oldest)
}

/// Prunes (or plans) the copies at `remote` of every linked wal-archive job copying there.
pub async fn offsite(
    ctx: &JobContext,
    of: &[JobName],
    remote: &Remote,
    entries: &[Entry],
    gone: &[String],
) -> Result<Vec<Outcome>, JobError> {
    let mut outcomes = Vec::new();
    for (job, wal, jobs) in linked(&ctx.config, of) {
        // Nothing archived yet: nothing was copied either.
        if !wal.offsite.iter().any(|t| t == remote.name()) || !wal.archive_dir.exists() {
            continue;
        }
        let outcome = offsite_one(ctx, job, wal, &jobs, remote, entries, gone)
            .await
            .map_err(|e| JobError::Transient {
                message: format!("WAL retention of job {job} at {}: {e}", remote.name()),
                details: serde_json::Value::Null,
            })?;
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

async fn offsite_one(
    ctx: &JobContext,
    job: &JobName,
    wal: &WalArchiveSpec,
    jobs: &[JobName],
    remote: &Remote,
    entries: &[Entry],
    gone: &[String],
) -> Result<Outcome, String> {
    let dir = held(wal)?;
    let size = wal_bytes(&Index::read(&dir.at()).unwrap_or_default());
    let prefix = remote.key("wal", job.as_str());
    let objects = crate::offsite::catalog::list_under(remote, &prefix)
        .await
        .map_err(|e| e.to_string())?;
    let named: Vec<(SegmentName, &object_store::ObjectMeta)> = objects
        .iter()
        .filter_map(|o| {
            let file = o.location.filename()?;
            let stem = file.trim_end_matches(".age").trim_end_matches(".zst");
            (stem != file).then_some(())?;
            Some((SegmentName::parse(stem, size)?, o))
        })
        .collect();
    let segments: Vec<SegmentName> = named.iter().map(|(s, _)| *s).collect();
    let plan = retention::plan(&segments, &bases(entries, gone, jobs, size)?, None);
    let mut outcome = Outcome {
        job: job.to_string(),
        plan,
        removed: 0,
        freed_bytes: 0,
    };
    if ctx.dry_run || outcome.plan.remove.is_empty() {
        return Ok(outcome);
    }
    let (Some(below), Some(lsn)) = (outcome.plan.keep_from.clone(), outcome.plan.keep_from_lsn)
    else {
        return Ok(outcome);
    };
    write_mark(&dir, remote.name(), &below, lsn, size, ctx.now)?;
    // The target says it too, before anything goes: a restore from it alone reads the mark.
    let mark = dir.at().join(mark_file(remote.name()));
    remote_wal::put_file(remote, job.as_str(), remote_wal::PRUNED, &mark).await?;
    let doomed: BTreeSet<String> = outcome.plan.remove.iter().cloned().collect();
    for (s, o) in named.iter().filter(|(s, _)| doomed.contains(&s.name())) {
        crate::offsite::catalog::delete(remote, &o.location)
            .await
            .map_err(|e| format!("{}: {e}", s.name()))?;
        outcome.removed += 1;
        outcome.freed_bytes += o.size;
    }
    Ok(outcome)
}

/// Records (durably, before any deletion) that `target` holds nothing below `below`; a mark
/// already further on stays.
fn write_mark(
    dir: &HeldDir,
    target: &str,
    below: &str,
    lsn: u64,
    size: u64,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let path = dir.at().join(mark_file(target));
    let earlier: Option<PrunedMark> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let number = |n: &str| SegmentName::parse(n, size).map(|s| s.number);
    if earlier.is_some_and(|m| number(&m.below) >= number(below)) {
        return Ok(());
    }
    let mark = PrunedMark {
        target: target.to_owned(),
        below: below.to_owned(),
        below_lsn: segment::format_lsn(lsn),
        at: now,
    };
    let bytes = serde_json::to_vec_pretty(&mark).map_err(|e| e.to_string())?;
    crate::publish::write_atomic(&path, &bytes, 0o600).map_err(|e| dir.shown(&e.to_string()))
}

/// `report` with the WAL outcomes: the plans (dry run) or what went, and `details.wal`.
pub fn report(mut report: JobReport, outcomes: &[Outcome], dry_run: bool) -> JobReport {
    for o in outcomes {
        if dry_run {
            report.message.push_str(&retention::render(&o.job, &o.plan));
        } else if o.removed > 0 {
            report.message.push_str(&format!(
                "; WAL of {}: removed {} segment(s) below {}, freed {}",
                o.job,
                o.removed,
                o.plan.keep_from.as_deref().unwrap_or("-"),
                crate::jobs::backup::dump::mib(o.freed_bytes)
            ));
        }
    }
    if !outcomes.is_empty()
        && let serde_json::Value::Object(map) = &mut report.details
    {
        map.insert("wal".into(), json!(outcomes));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(n: u64) -> Segment {
        let name = SegmentName {
            timeline: 1,
            number: n,
            wal_bytes: DEFAULT_WAL_BYTES,
        }
        .name();
        Segment {
            file: format!("{name}.zst.age"),
            name,
            bytes: 1,
            sha256: String::new(),
            wal_bytes: DEFAULT_WAL_BYTES,
            completed: DateTime::UNIX_EPOCH,
            archived: DateTime::UNIX_EPOCH,
            holds: None,
        }
    }

    #[test]
    fn wal_retention_owes_the_oldest_segment_a_target_has_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let all: Vec<Segment> = (1..=5).map(segment).collect();
        let record = |target: &str, upto: u64| {
            let (mut shipped, _) =
                Index::open_file(dir.path().join(format!("offsite-{target}.jsonl"))).unwrap();
            for e in all.iter().take(upto as usize) {
                shipped.append(e.clone()).unwrap();
            }
        };
        record("a", 5);
        record("b", 2);
        let targets = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(owed(dir.path(), &[], &all).unwrap(), None);
        assert_eq!(owed(dir.path(), &targets(&["a"]), &all).unwrap(), None);
        let first = owed(dir.path(), &targets(&["a", "b"]), &all).unwrap();
        assert_eq!(first.map(|s| s.number), Some(3), "b has 1 and 2 only");
        let never = owed(dir.path(), &targets(&["a", "c"]), &all).unwrap();
        assert_eq!(never.map(|s| s.number), Some(1), "c has no record yet");
    }
}
