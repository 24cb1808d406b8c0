//! Human output of `atprectl`: aligned tables and relative times.

use std::io::Write;

use chrono::{DateTime, Utc};

use crate::protocol::{
    BackupSummary, CheckReport, JobStatus, LeaseStatus, Response, RunRecord, StatusReport,
};
use crate::timefmt;

/// Prints the human form of a response. A closed pipe (`| head`) ends quietly.
pub fn print(response: &Response) {
    let now = Utc::now();
    let text = match response {
        Response::Hello { version, .. } => format!("atpred {version}\n"),
        Response::Status(s) => status(s, now),
        Response::Jobs { jobs } => self::jobs(jobs, now),
        Response::History { runs } => history(runs, now),
        Response::Accepted { run_id, job } => format!("{job}: started run {run_id}\n"),
        Response::Progress { message, .. } => format!("  {message}\n"),
        Response::Finished { run } => finished(run),
        Response::Cancelling { run_id } => format!("cancelling run {run_id}\n"),
        Response::Reloaded { jobs } => format!("configuration reloaded: {jobs} job(s)\n"),
        Response::Backups { backups } => self::backups(backups, now),
        Response::Manifest { manifest, evidence } => {
            serde_json::to_string_pretty(manifest).unwrap_or_default()
                + "\n\n"
                + &super::evidence::render(evidence.as_ref(), manifest, now)
        }
        Response::Fetched {
            id,
            path,
            bytes,
            decrypted,
        } => format!(
            "fetched {id} into {path} ({}, every file checked{})\n",
            crate::jobs::backup::dump::mib(*bytes),
            if *decrypted { ", decrypted" } else { "" }
        ),
        Response::Verified {
            id,
            verification,
            passed,
        } => format!(
            "backup {id}: verification {} ({}): {}\n",
            if *passed { "passed" } else { "FAILED" },
            verification["level"].as_str().unwrap_or("?"),
            verification["details"].as_str().unwrap_or("")
        ),
        Response::Health { checks } => health(checks, now),
        Response::RestorePlan { plan, globals } => {
            restore_plan(plan) + &super::restore::globals_lines(globals.as_deref())
        }
        Response::Restored { report: r } => format!(
            "restored {} into {}: {} tables, {} rows, every row count matches the dump's \
             snapshot ({:.1} s; pg_restore -j {}; {} of scratch space)\n{}{}",
            r.id,
            r.database,
            r.tables,
            r.rows,
            r.duration_ms as f64 / 1000.0,
            r.jobs,
            crate::jobs::backup::dump::mib(r.scratch_bytes),
            kept(r),
            super::restore::globals_lines(r.globals.as_deref())
        ),
        Response::RedisStaged { staged } => redis_staged(staged),
        Response::PitrPlan { plan } => super::pitr::plan(plan),
        Response::PitrRestored { report } => super::pitr::restored(report),
        Response::FilesRestored { restored: r } => format!(
            "restored {} into {}: {} entries, {}{}\n",
            r.id,
            r.dir.display(),
            r.entries,
            crate::jobs::backup::dump::mib(r.bytes),
            if r.replaced {
                " (what was there is replaced)"
            } else {
                ""
            }
        ),
        Response::PinState { id, pin, offsite } => format!(
            "backup {id}: {}{}\n",
            pin.as_ref()
                .map_or_else(|| "not pinned".into(), crate::pins::Pin::label),
            offsite
                .as_ref()
                .map_or_else(String::new, |o| format!(" (offsite {o})"))
        ),
        Response::Metrics { text } => text.clone(),
        Response::NotifySent {
            channel,
            kind,
            answer,
        } => format!("{channel} ({kind}): sent; the channel answered: {answer}\n"),
        Response::Error { .. } => String::new(),
    };
    write_stdout(text.as_bytes());
}

/// The staged RDB of `restore --redis-dir`, then the numbered steps.
fn redis_staged(s: &crate::restore::redis_dir::Staged) -> String {
    let mut out = format!(
        "staged {} in {} ({}, owner {}:{}, mode {:o}); atpred stops no server: to load it,\n",
        s.id,
        s.staged.display(),
        crate::jobs::backup::dump::mib(s.rdb_bytes),
        s.uid,
        s.gid,
        s.mode
    );
    for (i, step) in s.steps.iter().enumerate() {
        out.push_str(&format!("  {}. {step}\n", i + 1));
    }
    out
}

/// What `--replace` kept of the old database: its safety backup and the database itself.
fn kept(r: &crate::restore::exec::Report) -> String {
    let mut out = String::new();
    if let Some(s) = &r.safety_backup {
        out.push_str(&format!(
            "safety backup of the old {}: {s} (pinned; `atprectl backups unpin {s}` hands it \
             to retention)\n",
            r.database
        ));
    }
    if let Some(k) = &r.replaced {
        out.push_str(&format!(
            "the old {} is kept as {k}; drop it when no longer needed\n",
            r.database
        ));
    }
    out
}

fn restore_plan(plan: &crate::restore::plan::RestorePlan) -> String {
    let mut out = format!(
        "restore {} (from database {}) into {} (dry run):\n",
        plan.id, plan.source_database, plan.to
    );
    for (i, step) in plan.steps.iter().enumerate() {
        out.push_str(&format!("  {}. {step}\n", i + 1));
    }
    let mib = crate::jobs::backup::dump::mib;
    let sized = if plan.sizes.is_empty() {
        " (sizes not recorded in this backup)".to_owned()
    } else {
        format!(
            ", {} with indexes on the source",
            mib(plan.sizes.values().sum())
        )
    };
    out.push_str(&format!(
        "scratch space needed: {}\n{}tables ({}{sized}):\n",
        mib(plan.scratch_bytes),
        super::evidence::estimate(plan.estimate.as_ref()),
        plan.expected.len()
    ));
    let rows: Vec<Vec<String>> = plan
        .expected
        .iter()
        .map(|(table, rows)| {
            let size = plan
                .sizes
                .get(table)
                .map_or_else(|| "-".to_owned(), |b| mib(*b));
            vec![format!("  {table}"), format!("{rows} rows"), size]
        })
        .collect();
    out.push_str(&table(&[], &rows));
    out
}

/// Writes to stdout; a reader that went away (`| head`) ends the program quietly with 0.
pub fn write_stdout(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("atprectl: writing output: {e}");
    }
}

fn status(s: &StatusReport, now: DateTime<Utc>) -> String {
    let mut rows = vec![
        vec!["atpred".into(), format!("{} (pid {})", s.version, s.pid)],
        vec![
            "up".into(),
            format!(
                "since {} ({})",
                local(s.started),
                timefmt::relative(s.started, now)
            ),
        ],
        vec!["config".into(), s.config.display().to_string()],
        vec!["time zone".into(), s.timezone.clone()],
        vec!["jobs".into(), s.jobs.to_string()],
        vec!["summary".into(), s.summary.clone()],
    ];
    for r in &s.running {
        rows.push(vec![
            "running".into(),
            format!(
                "{} (run {}, {})",
                r.job,
                r.run_id,
                timefmt::relative(r.started, now)
            ),
        ]);
    }
    for l in &s.leases {
        rows.push(vec!["lease".into(), lease(l, now)]);
    }
    if let Some(err) = &s.reload_error {
        rows.push(vec![
            "reload".into(),
            format!("FAILED, previous configuration in force: {err}"),
        ]);
    }
    table(&[], &rows)
}

/// `nightly: held by db-b (redis, fencing token 7, run …) seen 3s ago`.
fn lease(l: &LeaseStatus, now: DateTime<Utc>) -> String {
    let mut extra = vec![l.backend.clone()];
    if let Some(t) = l.fencing_token {
        extra.push(format!("fencing token {t}"));
    }
    if let Some(r) = &l.run_id {
        extra.push(format!("run {r}"));
    }
    format!(
        "{}: {} {} ({}), seen {}",
        l.job,
        if l.held { "held by" } else { "last held by" },
        l.holder,
        extra.join(", "),
        timefmt::relative(l.seen, now)
    )
}

fn jobs(jobs: &[JobStatus], now: DateTime<Utc>) -> String {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            let next = j
                .next_run
                .map_or_else(|| "-".into(), |t| timefmt::relative(t, now));
            if let Some(w) = &j.wal {
                return vec![
                    j.name.to_string(),
                    j.kind.to_string(),
                    "continuous".into(),
                    "-".into(),
                    wal_state(w, now),
                ];
            }
            let last = match (&j.running, &j.last_run) {
                (Some(r), _) => format!("running since {}", timefmt::relative(r.started, now)),
                (None, Some(l)) => format!(
                    "{} {}",
                    l.outcome.as_str(),
                    timefmt::relative(l.finished, now)
                ),
                (None, None) => "never".into(),
            };
            vec![
                j.name.to_string(),
                j.kind.to_string(),
                j.schedule.clone().unwrap_or_else(|| "manual".into()),
                next,
                last,
            ]
        })
        .collect();
    table(&["JOB", "KIND", "SCHEDULE", "NEXT", "LAST"], &rows)
}

/// A wal-archive job's LAST column: the receiver, then the archive.
fn wal_state(w: &crate::protocol::WalStatus, now: DateTime<Utc>) -> String {
    let mut text = w.receiver.clone();
    if let Some(m) = &w.message {
        text.push_str(&format!(" ({m})"));
    }
    match (&w.last_segment, w.last_archived) {
        (Some(s), Some(at)) => text.push_str(&format!(
            " · {} segments, last {s} archived {}",
            w.segments,
            timefmt::relative(at, now)
        )),
        _ => text.push_str(" · nothing archived yet"),
    }
    if let Some(at) = w.base_backup_required_since {
        text.push_str(&format!(
            " · slot recreated {}: new base backup required",
            timefmt::relative(at, now)
        ));
    }
    text
}

fn history(runs: &[RunRecord], now: DateTime<Utc>) -> String {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.run_id.to_string(),
                r.job.to_string(),
                r.trigger.as_str().into(),
                timefmt::relative(r.started, now),
                timefmt::short_span(r.duration_ms / 1000),
                r.outcome.as_str().into(),
                r.message.clone(),
            ]
        })
        .collect();
    table(
        &[
            "RUN", "JOB", "TRIGGER", "STARTED", "TOOK", "OUTCOME", "MESSAGE",
        ],
        &rows,
    )
}

fn backups(backups: &[BackupSummary], now: DateTime<Utc>) -> String {
    let rows: Vec<Vec<String>> = backups
        .iter()
        .map(|b| {
            let dash = || "-".to_owned();
            vec![
                b.id.clone(),
                b.job.clone().unwrap_or_else(dash),
                b.source.clone().unwrap_or_else(dash),
                b.method.clone().unwrap_or_else(dash),
                b.database.clone().unwrap_or_else(dash),
                b.started.map_or_else(dash, |t| timefmt::relative(t, now)),
                b.bytes.map_or_else(dash, crate::jobs::backup::dump::mib),
                b.state.clone(),
                b.verified_level
                    .map_or_else(dash, |l| format!("{l:?}").to_lowercase()),
                if b.encrypted { "yes" } else { "no" }.into(),
                b.offsite.clone().unwrap_or_else(dash),
                b.pinned.as_ref().map_or_else(dash, |_| "yes".into()),
                b.lsn.clone().unwrap_or_else(dash),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "JOB",
            "SOURCE",
            "METHOD",
            "DATABASE",
            "WHEN",
            "SIZE",
            "STATE",
            "VERIFIED",
            "ENCRYPTED",
            "OFFSITE",
            "PINNED",
            "LSN",
        ],
        &rows,
    )
}

fn health(checks: &[CheckReport], now: DateTime<Utc>) -> String {
    if checks.is_empty() {
        return "no health check has run yet (configure a kind = \"health\" job)\n".into();
    }
    let rows: Vec<Vec<String>> = checks
        .iter()
        .map(|c| {
            vec![
                c.check.clone(),
                c.status.as_str().to_uppercase(),
                format!("{} ms", c.latency_ms),
                timefmt::relative(c.since, now),
                c.message.clone(),
            ]
        })
        .collect();
    table(&["CHECK", "STATUS", "LATENCY", "SINCE", "MESSAGE"], &rows)
}

fn finished(run: &RunRecord) -> String {
    let took = format!("{:.1}s", run.duration_ms as f64 / 1000.0);
    let dry = if run.dry_run { " (dry run)" } else { "" };
    let head = format!(
        "{}: run {} {} in {took}{dry}",
        run.job,
        run.run_id,
        run.outcome.as_str()
    );
    if run.message.contains('\n') {
        // A plan: one line per decision, below the summary.
        format!("{head}:\n{}", run.message.trim_end().to_owned() + "\n")
    } else {
        format!("{head}: {}\n", run.message)
    }
}

fn local(t: DateTime<Utc>) -> String {
    t.with_timezone(&chrono::Local)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut all: Vec<Vec<String>> = Vec::new();
    if !header.is_empty() {
        all.push(header.iter().map(|h| (*h).to_owned()).collect());
    }
    all.extend(rows.iter().cloned());
    let columns = all.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            all.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &all {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                out.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn aligns_columns() {
        let rows = vec![
            vec!["a".into(), "bb".into(), "c".into()],
            vec!["dddd".into(), "e".into(), "f".into()],
        ];
        assert_eq!(
            super::table(&["X", "Y", "Z"], &rows),
            "X     Y   Z\na     bb  c\ndddd  e   f\n"
        );
    }

    #[test]
    fn leases_say_who_holds_them() {
        let now = chrono::Utc::now();
        let mut l = crate::protocol::LeaseStatus {
            job: "nightly".parse().unwrap(),
            backend: "redis".into(),
            holder: "db-b".into(),
            held: true,
            run_id: Some("r1".into()),
            fencing_token: Some(17),
            seen: now,
        };
        let text = super::lease(&l, now);
        assert!(
            text.starts_with("nightly: held by db-b (redis, fencing token 17, run r1), seen "),
            "{text}"
        );
        l.held = false;
        assert!(super::lease(&l, now).starts_with("nightly: last held by db-b"));
    }
}
