//! The rotation planner: from one log's directory listing, its state and `now`, the actions to
//! take and why (pure; no file system, no clock).
//!
//! Order of execution, which the plan's fields follow: `cleanup` (leftovers of an interrupted
//! compression), the `rotation` (shifts highest first, then the log itself), `compress`, then
//! `remove`. Compression and removal name files as they are *after* the rotation, so the planner
//! simulates it. Any entry that parses as one of this log's rotated names but is not a regular
//! file (a planted symlink) refuses the whole log: nothing is touched next to it.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;

use super::names::{self, Ext, Key, Rotated};
use crate::config::{Compression, Naming, RotateSpec};

/// Suffix of a compressed file being written.
pub const TEMP_SUFFIX: &str = ".atpred-tmp";

/// What a directory entry is (from `lstat`: a symlink is never followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    File,
    Symlink,
    Other,
}

/// One directory entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub kind: EntryKind,
    pub size: u64,
    pub mtime: DateTime<Utc>,
    /// Processes that hold it open for writing.
    pub writers: Vec<u32>,
}

/// Everything the planner looks at for one log.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    /// The log's file name.
    pub base: &'a str,
    /// The log itself; `None` when it does not exist.
    pub log: Option<&'a Entry>,
    /// The rest of its directory.
    pub entries: &'a [Entry],
    pub last_rotation: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
    /// `now` in the daemon's time zone, for date names.
    pub local_now: NaiveDateTime,
    pub force: bool,
}

/// One file acted on, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Action {
    pub name: String,
    pub reason: String,
}

/// Renaming the log to `to`, after shifting older numbered files up by one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rotation {
    pub to: String,
    /// (from, to), to be applied in this order.
    pub shifts: Vec<(String, String)>,
}

/// The plan for one log.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    pub log: String,
    /// Why the log is rotated, or not.
    pub reason: String,
    pub rotation: Option<Rotation>,
    pub cleanup: Vec<Action>,
    pub compress: Vec<Action>,
    pub remove: Vec<Action>,
    /// Files left alone that would otherwise be acted on, and why.
    pub notes: Vec<String>,
    /// Set when nothing is done because the directory looks tampered with.
    pub refused: Option<String>,
    /// No rotation was ever recorded: max-age starts counting now.
    pub first_seen: bool,
}

/// A rotated file during the simulation.
#[derive(Debug, Clone)]
struct Sim {
    rotated: Rotated,
    mtime: DateTime<Utc>,
    writers: Vec<u32>,
    new: bool,
}

pub fn plan(spec: &RotateSpec, input: &Input) -> Plan {
    let base = input.base;
    let mut plan = Plan {
        log: base.to_owned(),
        ..Plan::default()
    };
    if let Some(log) = input.log
        && log.kind != EntryKind::File
    {
        plan.reason = "refused".into();
        plan.refused = Some(format!(
            "{base} is a {}, not a regular file: refusing to rotate it",
            kind_name(log.kind)
        ));
        return plan;
    }
    let mut files = Vec::new();
    for e in input.entries {
        if let Some(r) = names::parse(base, spec.naming, &e.name) {
            if e.kind != EntryKind::File {
                plan.reason = "refused".into();
                plan.refused = Some(format!(
                    "{} is a {} at one of {base}'s rotated names: refusing to rotate next to it (remove it)",
                    e.name,
                    kind_name(e.kind)
                ));
                return plan;
            }
            files.push(Sim {
                rotated: r,
                mtime: e.mtime,
                writers: e.writers.clone(),
                new: false,
            });
        } else if let Some(r) = stale_temp(base, spec.naming, &e.name) {
            plan.cleanup.push(Action {
                name: e.name.clone(),
                reason: format!("unfinished compression of {}", r.name(base)),
            });
        }
    }
    // A compressed file exists only once complete (temp name, fsync, rename): its uncompressed
    // twin is what an interrupted run did not get to remove.
    let twins: Vec<String> = files
        .iter()
        .filter(|f| f.rotated.ext == Ext::None)
        .filter(|f| {
            files
                .iter()
                .any(|g| g.rotated.key == f.rotated.key && g.rotated.ext != Ext::None)
        })
        .map(|f| f.rotated.name(base))
        .collect();
    for name in &twins {
        plan.cleanup.push(Action {
            name: name.clone(),
            reason: "its compressed copy is complete".into(),
        });
    }
    files.retain(|f| !twins.contains(&f.rotated.name(base)));

    plan.reason = trigger(spec, input, &mut plan);
    if plan.reason.starts_with("rotate") {
        plan.rotation = Some(rotate(spec, input, &mut files));
    }
    files.sort_by(|a, b| Key::newest_first(&a.rotated.key, &b.rotated.key));
    retain(spec, input, &files, &mut plan);
    plan
}

fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::File => "regular file",
        EntryKind::Symlink => "symlink",
        EntryKind::Other => "directory or special file",
    }
}

/// `.NAME.zst.atpred-tmp` where NAME.zst is one of this log's rotated names.
fn stale_temp(base: &str, naming: Naming, name: &str) -> Option<Rotated> {
    let inner = name.strip_prefix('.')?.strip_suffix(TEMP_SUFFIX)?;
    names::parse(base, naming, inner).filter(|r| r.ext != Ext::None)
}

/// "rotate: ..." when the log is to be rotated, else why not.
fn trigger(spec: &RotateSpec, input: &Input, plan: &mut Plan) -> String {
    let Some(log) = input.log else {
        return "missing".into();
    };
    if log.size == 0 && !spec.if_empty {
        return "empty (if-empty = false)".into();
    }
    if input.force {
        return "rotate: forced".into();
    }
    let mut why_not = Vec::new();
    if let Some(max) = spec.max_size {
        if log.size >= max {
            return format!(
                "rotate: size {} >= max-size {}",
                bytes(log.size),
                bytes(max)
            );
        }
        why_not.push(format!(
            "size {} < max-size {}",
            bytes(log.size),
            bytes(max)
        ));
    }
    if let Some(max_age) = spec.max_age {
        match input.last_rotation {
            None => {
                plan.first_seen = true;
                why_not.push("no rotation recorded yet: max-age counts from now".into());
            }
            Some(last) => {
                let age = (input.now - last).to_std().unwrap_or_default();
                let age_text = humantime::format_duration(round_secs(age));
                let max_text = humantime::format_duration(max_age);
                if age < max_age {
                    why_not.push(format!("last rotated {age_text} ago < max-age {max_text}"));
                } else if log.size < spec.min_size {
                    why_not.push(format!(
                        "size {} < min-size {}",
                        bytes(log.size),
                        bytes(spec.min_size)
                    ));
                } else {
                    return format!("rotate: last rotated {age_text} ago >= max-age {max_text}");
                }
            }
        }
    }
    format!("no trigger met: {}", why_not.join("; "))
}

fn round_secs(d: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_secs(d.as_secs())
}

fn bytes(n: u64) -> String {
    bytesize::ByteSize(n).display().iec().to_string()
}

/// Picks the rotated name, plans the shifts, and updates `files` to the state after both.
fn rotate(spec: &RotateSpec, input: &Input, files: &mut Vec<Sim>) -> Rotation {
    let base = input.base;
    let mut shifts = Vec::new();
    let key = match spec.naming {
        Naming::Number => {
            // Only the run starting at 1 moves: a gap (left by a crash mid-shift, or by hand)
            // absorbs the shift, and the order of the files is kept either way.
            let mut top = 0;
            while files.iter().any(|f| f.rotated.key == Key::Number(top + 1)) {
                top += 1;
            }
            for n in (1..=top).rev() {
                for f in files.iter_mut().filter(|f| f.rotated.key == Key::Number(n)) {
                    let from = f.rotated.name(base);
                    f.rotated.key = Key::Number(n + 1);
                    shifts.push((from, f.rotated.name(base)));
                }
            }
            Key::Number(1)
        }
        Naming::Date => {
            let taken = |stem: &str| {
                input.entries.iter().any(|e| {
                    [Ext::None, Ext::Zst, Ext::Gz]
                        .iter()
                        .any(|x| e.name == format!("{stem}{}", x.suffix()))
                })
            };
            let newest = files
                .iter()
                .map(|f| &f.rotated.key)
                .min_by(|a, b| Key::newest_first(a, b));
            names::next_date_key(input.local_now, taken, base, newest)
        }
    };
    let rotated = Rotated {
        key,
        ext: Ext::None,
    };
    let to = rotated.name(base);
    files.push(Sim {
        rotated,
        mtime: input.now,
        writers: Vec::new(),
        new: true,
    });
    Rotation { to, shifts }
}

/// Compression and removal over `files` (newest first, as they are after the rotation).
fn retain(spec: &RotateSpec, input: &Input, files: &[Sim], plan: &mut Plan) {
    let base = input.base;
    let oldest_kept = spec
        .max_keep_age
        .and_then(|a| chrono::Duration::from_std(a).ok())
        .map(|a| input.now - a);
    for (i, f) in files.iter().enumerate() {
        let name = f.rotated.name(base);
        let removal = if i >= spec.keep as usize {
            Some(format!("beyond keep = {}", spec.keep))
        } else if let Some(limit) = oldest_kept
            && !f.new
            && f.mtime < limit
        {
            Some(format!(
                "older than max-keep-age (modified {})",
                f.mtime.format("%Y-%m-%d %H:%M:%S UTC")
            ))
        } else {
            None
        };
        if let Some(reason) = removal {
            if f.writers.is_empty() {
                plan.remove.push(Action { name, reason });
            } else {
                plan.notes.push(format!(
                    "kept {name} ({reason}): still open for writing by pid {:?}",
                    f.writers
                ));
            }
            continue;
        }
        let method = match spec.compress {
            Compression::None => continue,
            Compression::Zstd { .. } => "zstd",
            Compression::Gzip { .. } => "gzip",
        };
        if f.rotated.ext != Ext::None {
            continue;
        }
        if spec.delay_compress && i == 0 {
            plan.notes.push(format!(
                "{name} stays uncompressed until the next rotation (delay-compress)"
            ));
        } else if !f.writers.is_empty() {
            plan.notes.push(format!(
                "{name} stays uncompressed: still open for writing by pid {:?}",
                f.writers
            ));
        } else {
            plan.compress.push(Action {
                name,
                reason: format!("compress with {method}"),
            });
        }
    }
}

/// The plan as lines for `--dry-run` and the run report.
pub fn render(plan: &Plan, out: &mut String) {
    use std::fmt::Write;
    let _ = writeln!(out, "{}: {}", plan.log, plan.reason);
    if let Some(r) = &plan.refused {
        let _ = writeln!(out, "  refused: {r}");
    }
    for a in &plan.cleanup {
        let _ = writeln!(out, "  remove {} ({})", a.name, a.reason);
    }
    if let Some(r) = &plan.rotation {
        for (from, to) in &r.shifts {
            let _ = writeln!(out, "  rename {from} -> {to}");
        }
        let _ = writeln!(out, "  rename {} -> {}", plan.log, r.to);
    }
    for a in &plan.compress {
        let _ = writeln!(out, "  compress {} ({})", a.name, a.reason);
    }
    for a in &plan.remove {
        let _ = writeln!(out, "  remove {} ({})", a.name, a.reason);
    }
    for n in &plan.notes {
        let _ = writeln!(out, "  note: {n}");
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
