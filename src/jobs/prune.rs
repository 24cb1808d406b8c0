//! `kind = "prune"`: applies a retention policy to the backup catalog on disk.
//!
//! Plan, then act: the plan comes from [`super::retention::plan`] over what is on disk right
//! now (never a side file); a dry run returns it. Removal is crash-safe: a doomed backup is
//! first renamed to `.trash-<id>` (so a crash never leaves a half-deleted folder that looks like
//! a backup), then deleted; leftover trash goes at the next start-up.

use std::fmt::Write;
use std::path::Path;

use serde_json::json;

use super::catalog::{self, Entry, State};
use super::retention::{self, Candidate, Plan, Policy};
use super::{JobContext, JobError, JobReport};
use crate::config::Kind;
use crate::ids::JobName;

/// `kind = "prune"` settings.
#[derive(Debug, Clone)]
pub struct PruneSpec {
    pub policy: Policy,
    /// Only backups made by these backup jobs; empty: all.
    pub of: Vec<JobName>,
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
    let mine: Vec<&Entry> = entries
        .iter()
        .filter(|e| {
            e.manifest
                .as_ref()
                .is_some_and(|m| covers_name(spec, &m.job))
        })
        .collect();
    let candidates: Vec<Candidate> = mine
        .iter()
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
    let plan = retention::plan(
        &candidates,
        &spec.policy,
        ctx.now,
        ctx.config.daemon.timezone,
    );
    for w in &plan.warnings {
        tracing::warn!("{w}");
    }
    if ctx.dry_run {
        return Ok(JobReport {
            message: render(&plan),
            details: serde_json::to_value(&plan).unwrap_or_default(),
        });
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
    Ok(JobReport {
        message: format!(
            "removed {} backup(s), kept {kept}, freed {}",
            removed.len(),
            super::backup::dump::mib(freed)
        ),
        details: json!({ "removed": removed, "kept": kept, "freed_bytes": freed, "plan": plan }),
    })
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
    catalog::move_to_trash(dir, &name, &entry.id).map_err(|e| e.to_string())
}

/// The plan as lines: "keep   20261127T023000Z-nightly  newest verified, daily 2026-11-27".
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
