//! `kind = "prune"`: applies a retention policy to the backup catalog on disk.
//!
//! Plan, then act: the plan comes from [`super::retention::plan`] over what is on disk right
//! now (never a side file); a dry run returns it. Removal is crash-safe: a doomed backup is
//! first renamed to `.trash-<id>` (so a crash never leaves a half-deleted folder that looks like
//! a backup), then deleted; leftover trash goes at the next start-up. Then the WAL those
//! backups needed is pruned ([`crate::wal::prune`]).

use std::fmt::Write;
use std::path::Path;

use serde_json::json;

use super::catalog::{self, Entry, State};
use super::retention::{self, Candidate, Plan, Policy};
use super::{JobContext, JobError, JobReport};
use crate::config::Kind;
use crate::ids::JobName;
use crate::offsite::{self, Remote};
use crate::wal::prune as wal;

/// `kind = "prune"` settings.
#[derive(Debug, Clone)]
pub struct PruneSpec {
    pub policy: Policy,
    /// Only backups made by these backup jobs; empty: all.
    pub of: Vec<JobName>,
    /// Which catalog: backup-dir, or the copies at an `[offsite.NAME]` target.
    pub target: Target,
}

/// The catalog a prune job plans over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Local,
    /// The `[offsite.NAME]` target's remote catalog.
    Offsite(String),
}

pub async fn run(ctx: &JobContext, spec: &PruneSpec) -> Result<JobReport, JobError> {
    let dir = ctx.config.daemon.backup_dir.clone();
    if let Some(busy) = ctx
        .running
        .iter()
        .find(|(job, kind)| *kind == Kind::Backup && covers(spec, job))
    {
        return Err(JobError::Transient {
            message: format!("backup job {} is running; pruning its set waits", busy.0),
            details: serde_json::Value::Null,
        });
    }
    if let Target::Offsite(name) = &spec.target {
        return remote(ctx, spec, name).await;
    }
    if !dir.exists() {
        return Ok(JobReport {
            message: format!("{} does not exist yet: nothing to prune", dir.display()),
            details: json!({}),
        });
    }
    let entries = catalog::list(&dir)
        .map_err(|e| JobError::permanent(format!("cannot read the catalog: {e}")))?;
    if let Some(bad) = entries.iter().find(|e| e.state == State::Unreadable) {
        return Err(JobError::permanent(format!(
            "removing nothing: {} cannot be read ({}); fix or move it aside",
            bad.id,
            bad.problem.as_deref().unwrap_or("invalid manifest")
        )));
    }
    let (mine, plan) = plan_over(ctx, spec, &entries);
    if ctx.dry_run {
        let gone: Vec<String> = plan.removals().map(|d| d.id.clone()).collect();
        let wal = wal::local(ctx, &spec.of, &entries, &gone).await?;
        return Ok(wal::report(dry_run(&plan), &wal, true));
    }
    let mut freed = 0u64;
    let mut removed = Vec::new();
    for d in plan.removals() {
        let Some(entry) = mine.iter().find(|e| e.id == d.id) else {
            continue;
        };
        let bytes = entry.manifest.as_ref().map_or(0, |m| m.bytes);
        match remove(&dir, entry, ctx) {
            Ok(()) => {
                tracing::info!(backup = %d.id, bytes, "removed backup {} ({}; {} freed)", d.id, d.reasons.join(", "), super::backup::dump::mib(bytes));
                freed += bytes;
                removed.push(d.id.clone());
            }
            Err(e) => tracing::warn!(backup = %d.id, "kept backup {}: {e}", d.id),
        }
    }
    for stale in catalog::remove_stale_partials(&dir) {
        tracing::warn!("removed {stale}: an unfinished backup with no live writer");
    }
    let kept = plan.decisions.len() - removed.len();
    let wal = wal::local(ctx, &spec.of, &entries, &removed).await?;
    let report = JobReport {
        message: format!(
            "removed {} backup(s), kept {kept}, freed {}",
            removed.len(),
            super::backup::dump::mib(freed)
        ),
        details: json!({ "removed": removed, "kept": kept, "freed_bytes": freed, "plan": plan }),
    };
    Ok(wal::report(report, &wal, false))
}

/// The entries of the job's set and the retention plan over them.
fn plan_over<'a>(
    ctx: &JobContext,
    spec: &PruneSpec,
    entries: &'a [Entry],
) -> (Vec<&'a Entry>, Plan) {
    let mine: Vec<&Entry> = entries
        .iter()
        .filter(|e| {
            e.manifest
                .as_ref()
                .is_some_and(|m| covers_name(spec, &m.job))
        })
        .collect();
    // A pinned safety backup takes part in no rule: it would otherwise fill keep-last and the
    // period slots and push real backups out. It is added back below, kept by its pin.
    let set_apart =
        |e: &Entry| e.pin.is_some() && e.manifest.as_ref().is_some_and(|m| m.is_safety());
    let candidates: Vec<Candidate> = mine
        .iter()
        .filter(|e| !set_apart(e))
        .filter_map(|e| {
            let m = e.manifest.as_ref()?;
            Some(Candidate {
                id: e.id.clone(),
                time: m.started,
                verified: e.state == State::Verified,
                in_use: ctx.in_use.contains(&e.id),
            })
        })
        .collect();
    let mut plan = retention::plan(
        &candidates,
        &spec.policy,
        ctx.now,
        ctx.config.daemon.timezone,
    );
    for e in mine.iter().filter(|e| set_apart(e)) {
        plan.decisions.push(retention::Decision {
            id: e.id.clone(),
            time: e.manifest.as_ref().map_or(ctx.now, |m| m.started),
            keep: true,
            reasons: Vec::new(),
        });
    }
    plan.decisions
        .sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));
    // Pins are a step of their own after the planner: whatever the policy, a pinned backup stays.
    crate::pins::apply(&mut plan, |id| {
        mine.iter()
            .find(|e| e.id == id)
            .and_then(|e| e.pin.as_ref())
    });
    for w in &plan.warnings {
        tracing::warn!("{w}");
    }
    (mine, plan)
}

fn dry_run(plan: &Plan) -> JobReport {
    JobReport {
        message: render(plan),
        details: serde_json::to_value(plan).unwrap_or_default(),
    }
}

/// An unfinished remote copy (no manifest) older than this is removed: no upload takes a day,
/// and a younger one may be another host's copy in progress.
const UNFINISHED_AGE: chrono::Duration = chrono::Duration::hours(24);

/// `target = "offsite"`: the same planner and rules over the target's remote catalog. A target
/// that cannot be listed, or a remote manifest that cannot be read, removes nothing.
async fn remote(ctx: &JobContext, spec: &PruneSpec, name: &str) -> Result<JobReport, JobError> {
    let transient = |message: String| JobError::Transient {
        message,
        details: serde_json::Value::Null,
    };
    let target =
        ctx.config.offsite.get(name).ok_or_else(|| {
            JobError::permanent(format!("no [offsite.{name}] in the configuration"))
        })?;
    let remote = Remote::open(target).map_err(|e| JobError::permanent(e.to_string()))?;
    let listing = tokio::select! {
        l = offsite::catalog::list(&remote) => l,
        () = ctx.cancel.cancelled() => return Err(JobError::Cancelled),
    };
    let listing = listing.map_err(|e| transient(format!("removing nothing: {e}")))?;
    if let Some(bad) = listing
        .entries
        .iter()
        .find(|e| e.state == State::Unreadable)
    {
        return Err(JobError::permanent(format!(
            "removing nothing: {} at {name} cannot be read ({}); fix or remove it",
            bad.id,
            bad.problem.as_deref().unwrap_or("invalid manifest")
        )));
    }
    let (_, plan) = plan_over(ctx, spec, &listing.entries);
    let stale = stale_unfinished(ctx, spec, name, &listing.unfinished);
    if ctx.dry_run {
        let gone: Vec<String> = plan.removals().map(|d| d.id.clone()).collect();
        let wal = wal::offsite(ctx, &spec.of, &remote, &listing.entries, &gone).await?;
        let mut report = wal::report(dry_run(&plan), &wal, true);
        for u in &stale {
            report.message.push_str(&format!(
                "remove  {}  unfinished copy (no manifest; last written {})\n",
                u.id, u.modified
            ));
        }
        return Ok(report);
    }
    let mut freed = 0u64;
    let mut removed = Vec::new();
    for d in plan.removals() {
        if ctx.cancel.is_cancelled() {
            return Err(JobError::Cancelled);
        }
        // Pinned since the listing: kept.
        match offsite::pins::get(&remote, &d.id).await {
            Ok(None) => {}
            Ok(Some(pin)) => {
                tracing::info!(backup = %d.id, offsite = name, "kept {} at {name}: {}", d.id, pin.label());
                continue;
            }
            Err(e) => {
                return Err(transient(format!(
                    "removed {} backup(s), then: {e}",
                    removed.len()
                )));
            }
        }
        match offsite::catalog::remove(&remote, &d.id).await {
            Ok(bytes) => {
                tracing::info!(backup = %d.id, offsite = name, bytes, "removed {} at {name} ({})", d.id, d.reasons.join(", "));
                freed += bytes;
                removed.push(d.id.clone());
            }
            Err(e) => {
                return Err(transient(format!(
                    "removed {} backup(s), then: {e}",
                    removed.len()
                )));
            }
        }
    }
    let mut unfinished = Vec::new();
    for u in stale {
        // Committed since the listing (a copy finished meanwhile): not unfinished any more.
        match offsite::catalog::read_manifest(&remote, &u.id).await {
            Err(e) if e.is_not_found() => {}
            _ => continue,
        }
        match offsite::catalog::remove(&remote, &u.id).await {
            Ok(bytes) => {
                tracing::warn!(backup = %u.id, offsite = name, "removed the unfinished copy {} at {name} (no manifest since {})", u.id, u.modified);
                freed += bytes;
                unfinished.push(u.id.clone());
            }
            Err(e) => tracing::warn!("kept the unfinished copy {} at {name}: {e}", u.id),
        }
    }
    let kept = plan.decisions.len() - removed.len();
    let wal = wal::offsite(ctx, &spec.of, &remote, &listing.entries, &removed).await?;
    let report = JobReport {
        message: format!(
            "{name}: removed {} backup(s), kept {kept}, freed {}{}",
            removed.len(),
            super::backup::dump::mib(freed),
            if unfinished.is_empty() {
                String::new()
            } else {
                format!(", {} unfinished copy(ies) cleared", unfinished.len())
            }
        ),
        details: json!({ "target": name, "removed": removed, "unfinished_removed": unfinished, "kept": kept, "freed_bytes": freed, "plan": plan }),
    };
    Ok(wal::report(report, &wal, false))
}

/// The unfinished copies this job may clear: older than [`UNFINISHED_AGE`], named as atpred
/// names backups, and of a job in `of` — or, without `of`, of a backup job of this
/// configuration that copies to this target. Anything else under the prefix is not ours.
fn stale_unfinished<'a>(
    ctx: &JobContext,
    spec: &PruneSpec,
    target: &str,
    unfinished: &'a [offsite::catalog::Unfinished],
) -> Vec<&'a offsite::catalog::Unfinished> {
    let ours = |job: &str| {
        if !spec.of.is_empty() {
            return covers_name(spec, job);
        }
        ctx.config.jobs.values().any(|j| {
            j.name.as_str() == job
                && matches!(&j.spec, crate::config::JobSpec::Backup(b) if b.offsite.iter().any(|t| t == target))
        })
    };
    unfinished
        .iter()
        .filter(|u| may_clear(&u.id, u.modified, ctx.now, ours))
        .collect()
}

/// An unfinished copy may go when it is old enough and its id names a job that is `ours`.
fn may_clear(
    id: &str,
    modified: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
    ours: impl Fn(&str) -> bool,
) -> bool {
    now - modified >= UNFINISHED_AGE && offsite::job_of_id(id).is_some_and(ours)
}

fn covers(spec: &PruneSpec, job: &JobName) -> bool {
    spec.of.is_empty() || spec.of.contains(job)
}

fn covers_name(spec: &PruneSpec, job: &str) -> bool {
    spec.of.is_empty() || spec.of.iter().any(|j| j.as_str() == job)
}

/// Renames the backup to `.trash-<id>`, fsyncs backup-dir, then deletes it. Refuses anything
/// that is not a direct, non-symlink child holding our manifest, and anything in use.
fn remove(dir: &Path, entry: &Entry, ctx: &JobContext) -> Result<(), String> {
    let _claim = ctx.in_use.claim(&entry.id).ok_or("in use")?;
    let name = match entry.state {
        State::Failed => format!("{}{}", catalog::FAILED_PREFIX, entry.id),
        _ => entry.id.clone(),
    };
    // Pinned since the plan was made.
    if let Some(pin) = crate::pins::read(&dir.join(&name)) {
        return Err(pin.label());
    }
    catalog::move_to_trash(dir, &name, &entry.id).map_err(|e| e.to_string())
}

/// The plan as lines: "keep   20261127T023000Z-nightly  newest verified, daily snapshot".
pub fn render(plan: &Plan) -> String {
    let mut out = String::new();
    for d in &plan.decisions {
        let _ = writeln!(
            out,
            "{}  {}  {}",
            if d.keep { "keep  " } else { "remove" },
            d.id,
            d.reasons.join(", ")
        );
    }
    for w in &plan.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    if plan.decisions.is_empty() {
        out.push_str("no backups\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone, Utc};

    use super::may_clear;

    #[test]
    fn only_old_unfinished_copies_of_our_jobs_are_cleared() {
        let now = Utc.with_ymd_and_hms(2026, 12, 4, 4, 0, 0).unwrap();
        let old = now - Duration::hours(25);
        let ours = |job: &str| job == "nightly";
        assert!(may_clear("20261201T023000Z-nightly", old, now, ours));
        assert!(
            !may_clear(
                "20261201T023000Z-nightly",
                now - Duration::hours(23),
                now,
                ours
            ),
            "young: maybe in flight"
        );
        assert!(
            !may_clear("20261201T023000Z-other", old, now, ours),
            "another job's"
        );
        for foreign in [
            "test",
            "atp-re",
            "nightly",
            "2026-12-01-nightly",
            "20261201T023000Z-",
        ] {
            assert!(
                !may_clear(foreign, old, now, |_| true),
                "{foreign:?} is not an id of ours"
            );
        }
    }
}
