//! `kind = "rotate"`: the application's log files, rotated like logrotate does, without its lost
//! lines, skipped rotations or a corrupt state file that stops everything.
//!
//! Per log: refuse a shared directory; complete a rotation the journal says was interrupted;
//! list the directory; plan ([`plan::plan`], pure); then act: clean up leftovers, rotate
//! (journaled, [`exec`]), compress off the runtime ([`compress`]), remove what retention drops.
//! A dry run returns the plans. The state file ([`state`]) is rebuilt from the disk when it
//! cannot be read, and the run's message says so. With `su` and a daemon that may switch users,
//! every file step is done as that user ([`hands`]); the state file stays the daemon's.

mod compress;
mod copy;
mod exec;
mod files;
mod folder;
mod hands;
mod names;
mod pause;
mod pidfile;
pub mod plan;
mod state;

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::json;

use self::exec::Log;
use self::hands::Hands;
use self::plan::{Entry, Input, Plan};
use self::state::{JobState, LogState};
use super::{JobContext, JobError, JobReport};
use crate::config::RotateSpec;

pub async fn run(ctx: &JobContext, spec: &RotateSpec) -> Result<JobReport, JobError> {
    let state_path = state::path(&ctx.config.daemon.state_dir, &ctx.job.name);
    let (mut state, rebuilt) = match state::load(&state_path) {
        Ok(s) => (s, None),
        Err(why) => {
            tracing::warn!("{why}: rebuilding it from the files on disk");
            (JobState::default(), Some(why))
        }
    };
    let hands = Hands::for_job(spec.su.as_ref())
        .await
        .map_err(JobError::permanent)?;
    let mut run = Run {
        ctx,
        spec,
        hands,
        state_path,
        rebuilt: rebuilt.is_some(),
        lines: Vec::new(),
        problems: Vec::new(),
        details: Vec::new(),
    };
    if let Some(why) = &rebuilt {
        run.lines
            .push(format!("{why}: rebuilt from the files on disk"));
    }
    for log in select(spec, &mut run.problems) {
        match run.one(&log, &mut state).await {
            Ok(()) => {}
            Err(JobError::Cancelled) => return Err(JobError::Cancelled),
            Err(e) => run.problems.push(format!("{}: {e}", log.path.display())),
        }
    }
    if !ctx.dry_run {
        state::save(&run.state_path, &state).map_err(|e| {
            JobError::permanent(format!("cannot write {}: {e}", run.state_path.display()))
        })?;
    }
    let details = json!({ "logs": run.details, "problems": run.problems });
    let mut message = run.lines.join("\n");
    if run.problems.is_empty() {
        return Ok(JobReport { message, details });
    }
    if !message.is_empty() {
        message.push('\n');
    }
    message.push_str(&run.problems.join("\n"));
    Err(JobError::Permanent { message, details })
}

/// The logs the globs name now (rotated and temporary files excluded), plus literal paths that
/// do not exist (so their rotated files still age out). Missing logs are problems unless
/// `missing-ok`.
fn select(spec: &RotateSpec, problems: &mut Vec<String>) -> Vec<Log> {
    let mut found = BTreeSet::new();
    for pattern in &spec.paths {
        let matched: Vec<PathBuf> = match glob::glob(pattern) {
            Ok(paths) => paths
                .filter_map(|p| p.map_err(|e| problems.push(e.to_string())).ok())
                .collect(),
            Err(e) => {
                problems.push(format!("{pattern}: {e}"));
                continue;
            }
        };
        let literal = glob::Pattern::escape(pattern) == *pattern;
        if matched.is_empty() {
            if !spec.missing_ok {
                problems.push(format!("{pattern}: no such log (missing-ok = false)"));
            }
            if literal {
                found.insert(PathBuf::from(pattern));
            }
        }
        found.extend(matched);
    }
    let bases: BTreeSet<(PathBuf, String)> = found.iter().filter_map(|p| split(p)).collect();
    found
        .iter()
        .filter_map(|p| split(p))
        .filter(|(dir, name)| {
            !name.starts_with('.')
                && !bases.iter().any(|(d, b)| {
                    d == dir && b != name && names::parse(b, spec.naming, name).is_some()
                })
                && !name.ends_with(".zst")
                && !name.ends_with(".gz")
        })
        .map(|(dir, base)| Log {
            path: dir.join(&base),
            dir,
            base,
            at: PathBuf::new(),
            _handle: None,
            hands: Hands::default(),
        })
        .collect()
}

fn split(path: &std::path::Path) -> Option<(PathBuf, String)> {
    Some((
        path.parent()?.to_path_buf(),
        path.file_name()?.to_str()?.to_owned(),
    ))
}

/// Removes `name` from the log's folder, with the job's hands.
async fn remove(log: &Log, name: &str) -> Result<(), JobError> {
    let (dir, owned) = (log.at.clone(), name.to_owned());
    log.hands
        .run(move || files::remove(&dir, &owned))
        .await
        .map_err(|e| JobError::permanent(format!("remove {name}: {e}")))
}

/// One run over the job's logs.
struct Run<'a> {
    ctx: &'a JobContext,
    spec: &'a RotateSpec,
    state_path: PathBuf,
    /// Who does the file work ([`hands`]); the state file is always written by the daemon.
    hands: Hands,
    rebuilt: bool,
    /// One or more lines per log, for the run's message.
    lines: Vec<String>,
    problems: Vec<String>,
    details: Vec<serde_json::Value>,
}

impl Run<'_> {
    fn save(&self, state: &JobState) -> Result<(), JobError> {
        state::save(&self.state_path, state).map_err(|e| {
            JobError::permanent(format!("cannot write {}: {e}", self.state_path.display()))
        })
    }

    async fn one(&mut self, log: &Log, state: &mut JobState) -> Result<(), JobError> {
        let (ctx, spec) = (self.ctx, self.spec);
        if !log.dir.is_dir() {
            if spec.missing_ok {
                return Ok(());
            }
            return Err(JobError::permanent("its directory does not exist"));
        }
        let job_key = format!("jobs.{}", ctx.job.name);
        let (dir, shared, trusted) = (
            log.dir.clone(),
            spec.allow_shared_dir,
            folder::trusted(spec),
        );
        let opened = self
            .hands
            .run(move || folder::open(&dir, shared, &trusted, &job_key))
            .await
            .map_err(|e| JobError::permanent(e.to_string()))?;
        let log = &log.opened(opened, self.hands.clone());
        self.steps(log, state).await.map_err(|e| log.shown(e))
    }

    /// [`Self::one`] once the log's folder is open: every step goes through its handle.
    async fn steps(&mut self, log: &Log, state: &mut JobState) -> Result<(), JobError> {
        let (ctx, spec) = (self.ctx, self.spec);
        let mut notes = Vec::new();
        let pending = state.logs.get(&log.path).and_then(|s| s.pending.clone());
        if let Some(p) = pending {
            if ctx.dry_run {
                notes.push(format!(
                    "would complete the interrupted rotation to {}",
                    p.to
                ));
            } else {
                let done = exec::finish(ctx, &spec.method, log, &p, false).await?;
                let entry = state.logs.entry(log.path.clone()).or_default();
                entry.pending = None;
                if done.undone {
                    notes.push("an interrupted rotation had not truncated the log: undone".into());
                } else {
                    entry.last_rotation = Some(p.started);
                    notes.push(format!("completed an interrupted rotation to {}", p.to));
                }
                self.save(state)?;
            }
        } else if !ctx.dry_run {
            self.orphan_copy(log).await?;
        }
        let dir = log.at.clone();
        let found = log
            .hands
            .run(move || files::scan(&dir))
            .await
            .map_err(|e| JobError::permanent(format!("cannot list {}: {e}", log.dir.display())))?;
        let entries = tokio::task::spawn_blocking(move || files::with_writers(found))
            .await
            .map_err(|e| JobError::permanent(e.to_string()))?;
        let (current, others): (Vec<Entry>, Vec<Entry>) =
            entries.into_iter().partition(|e| e.name == log.base);
        let mut last = state.logs.get(&log.path).and_then(|s| s.last_rotation);
        if self.rebuilt && last.is_none() {
            last = others
                .iter()
                .filter(|e| names::parse(&log.base, spec.naming, &e.name).is_some())
                .map(|e| e.mtime)
                .max();
        }
        let input = Input {
            base: &log.base,
            log: current.first(),
            entries: &others,
            last_rotation: last,
            now: ctx.now,
            local_now: ctx
                .now
                .with_timezone(&ctx.config.daemon.timezone)
                .naive_local(),
            force: ctx.force,
        };
        let mut plan = plan::plan(spec, &input);
        plan.log = log.path.display().to_string();
        plan.notes.splice(0..0, notes);
        if ctx.dry_run {
            let mut text = String::new();
            plan::render(&plan, &mut text);
            self.lines.push(text.trim_end().to_owned());
            self.details.push(json!({ "plan": plan }));
            return Ok(());
        }
        if let Some(why) = &plan.refused {
            self.details.push(json!({ "plan": plan }));
            return Err(JobError::permanent(why.clone()));
        }
        let done = self.act(log, &plan, state).await;
        if plan.first_seen {
            let entry = state.logs.entry(log.path.clone()).or_default();
            entry.last_rotation.get_or_insert(ctx.now);
        }
        done
    }

    /// A copytruncate copy with no journal (the state file was lost): if the log still holds
    /// all of it, it goes; otherwise it may hold the only copy of lines, and it stays.
    async fn orphan_copy(&self, log: &Log) -> Result<(), JobError> {
        let temp = log.at.join(log.copy_temp_name());
        if !log.exists(&temp).await? {
            return Ok(());
        }
        let (t, current) = (temp.clone(), log.current());
        let removed = log
            .work(move || {
                if copy::copy_is_prefix(&t, &current).unwrap_or(false) {
                    std::fs::remove_file(&t)?;
                    return Ok(true);
                }
                Ok(false)
            })
            .await?;
        if removed {
            return Ok(());
        }
        Err(JobError::permanent(format!(
            "{} is the copy of an interrupted copytruncate that the (lost) journal no longer describes, and it may hold lines the log no longer has: move it aside, then rotation resumes",
            temp.display()
        )))
    }

    async fn act(&mut self, log: &Log, plan: &Plan, state: &mut JobState) -> Result<(), JobError> {
        let (ctx, spec) = (self.ctx, self.spec);
        for a in &plan.cleanup {
            remove(log, &a.name).await?;
        }
        let mut line = format!("{}: {}", log.path.display(), plan.reason);
        let mut extra = json!({});
        if let Some(r) = &plan.rotation {
            let p = exec::journal(ctx, log, &spec.method, &r.to, &r.shifts).await?;
            state.logs.entry(log.path.clone()).or_default().pending = Some(p.clone());
            self.save(state)?;
            pause::at("journaled", &ctx.cancel).await?;
            let done = exec::finish(ctx, &spec.method, log, &p, true).await?;
            *state.logs.entry(log.path.clone()).or_default() = LogState {
                last_rotation: Some(ctx.now),
                pending: None,
            };
            self.save(state)?;
            line.push_str(&format!("; rotated to {}", r.to));
            if let Some(c) = &done.copy {
                line.push_str(&format!(
                    "; copied {} bytes in {} pass(es), truncated {} µs after the last read",
                    c.bytes, c.passes, c.window_us
                ));
                tracing::info!(
                    bytes = c.bytes,
                    window_us = c.window_us,
                    "copytruncate of {}: lines written in the last {} µs before the truncation are lost",
                    log.path.display(),
                    c.window_us
                );
            }
            if let Some(told) = &done.reopened {
                line.push_str(&format!("; {told}"));
            }
            if done.still_written {
                line.push_str(&format!(
                    "; the writer still holds {} (compressed once it lets go)",
                    r.to
                ));
            }
            extra = json!({ "copy": done.copy, "reopened": done.reopened });
        }
        let mut compressed = Vec::new();
        for a in &plan.compress {
            if self.busy(log, &a.name) {
                line.push_str(&format!(
                    "; {} left uncompressed: still being written",
                    a.name
                ));
                continue;
            }
            let (dir, name, how) = (log.at.clone(), a.name.clone(), spec.compress);
            let size = log
                .hands
                .run(move || {
                    compress::compress(&dir, &name, how, || pause::blocking("compressing"))
                })
                .await
                .map_err(|e| JobError::permanent(format!("compress {}: {e}", a.name)))?;
            pause::at("compressed", &ctx.cancel).await?;
            remove(log, &a.name).await?;
            let dir = log.at.clone();
            log.work(move || crate::publish::sync_dir(&dir)).await?;
            compressed.push(json!({ "name": a.name, "bytes": size }));
        }
        let mut removed = Vec::new();
        for a in &plan.remove {
            remove(log, &a.name).await?;
            tracing::info!("removed {} ({})", log.dir.join(&a.name).display(), a.reason);
            removed.push(a.name.clone());
        }
        if !compressed.is_empty() || !removed.is_empty() {
            line.push_str(&format!(
                "; compressed {}, removed {}",
                compressed.len(),
                removed.len()
            ));
        }
        for n in &plan.notes {
            line.push_str(&format!("; {n}"));
        }
        self.lines.push(line);
        self.details.push(json!({
            "plan": plan, "done": extra, "compressed": compressed, "removed": removed,
        }));
        Ok(())
    }

    /// Whether another process holds `name` open for writing right now.
    fn busy(&self, log: &Log, name: &str) -> bool {
        !files::wait_unwritten(&log.at.join(name), std::time::Duration::ZERO)
    }
}
