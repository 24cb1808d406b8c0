//! The events of a job's runs, as [`Event`]s: what each says. Pure.
//!
//! Every failure message says what failed, since when and how often, the last error, and the
//! commands to look further (`journalctl -u atpred JOB=…`, `atprectl history JOB`).

use chrono::{DateTime, SecondsFormat, Utc};

use super::event::{Event, EventKind, Severity};
use super::noise::Verdict;
use crate::config::JobConfig;
use crate::ids::RunId;
use crate::protocol::{Outcome, RunRecord, Trigger};

/// The start of a run (`notify-on = ["start"]`).
pub fn started(job: &JobConfig, run: &RunId, trigger: Trigger) -> Event {
    let mut e = Event::new(
        EventKind::Start,
        Severity::Info,
        &format!("{} started", job.name),
        &format!(
            "Job {} ({}) started: run {run}, trigger {}.\n\n{}",
            job.name,
            job.spec.kind(),
            trigger.as_str(),
            look(job)
        ),
    );
    e.job = Some(job.name.to_string());
    e.run_id = Some(run.to_string());
    e
}

/// A scheduled slot of `job` passed while the daemon was down (or the clock jumped past it):
/// found when the scheduler next looked (`notify-on = ["missed"]`). `caught_up`: a catch-up
/// run starts for it now; otherwise it is not run at all.
pub fn missed(job: &JobConfig, slot: DateTime<Utc>, caught_up: bool) -> Event {
    let then = if caught_up {
        "it runs now, late (catch-up = true)"
    } else {
        "it is not run (catch-up = false); the job runs again at its next slot"
    };
    let mut e = Event::new(
        EventKind::Missed,
        Severity::Warning,
        &format!("{} missed its run due at {}", job.name, stamp(slot)),
        &format!(
            "Job {} ({}) missed the run due at {}: atpred was not running then (or the clock \
             jumped past it); {then}.\n\n\
             Look: journalctl -u atpred --since {}\n      atprectl history {}",
            job.name,
            job.spec.kind(),
            stamp(slot),
            stamp(slot),
            job.name
        ),
    );
    e.job = Some(job.name.to_string());
    e
}

/// The events a finished run raises for `job`, given the noise control's `verdict`.
pub fn finished(job: &JobConfig, record: &RunRecord, verdict: &Verdict) -> Vec<Event> {
    let on = |k: EventKind| job.notify.on.contains(&k);
    let mut events = Vec::new();
    match (record.outcome, verdict) {
        (Outcome::Skipped, _) if on(EventKind::Skipped) => events.push(simple(
            job,
            record,
            EventKind::Skipped,
            Severity::Warning,
            "skipped",
        )),
        (Outcome::Succeeded, _) => {
            if let Verdict::Recovery { failures, since } = verdict
                && on(EventKind::Recovery)
            {
                events.push(recovery(job, record, *failures, *since));
            }
            if on(EventKind::Success) {
                events.push(simple(
                    job,
                    record,
                    EventKind::Success,
                    Severity::Info,
                    "succeeded",
                ));
            }
        }
        (Outcome::Failed | Outcome::TimedOut, _) => {
            if record.outcome == Outcome::TimedOut && on(EventKind::Timeout) {
                events.push(simple(
                    job,
                    record,
                    EventKind::Timeout,
                    Severity::Critical,
                    "timed out",
                ));
            }
            if let Verdict::Failure { failures, since } = verdict
                && on(EventKind::Failure)
            {
                events.push(failure(job, record, *failures, *since));
            }
        }
        _ => {}
    }
    events
}

fn failure(job: &JobConfig, record: &RunRecord, failures: u32, since: DateTime<Utc>) -> Event {
    let mut e = for_run(
        job,
        record,
        EventKind::Failure,
        Severity::Critical,
        &format!(
            "{} failed ({})",
            job.name,
            if failures == 1 {
                "once".to_owned()
            } else {
                format!("{failures} times in a row")
            }
        ),
        &format!(
            "Job {} ({}) failed: {}.\n\
             Failing since {} ({failures} failed run(s) in a row; repeated at most every {} while it keeps failing).\n\
             Last error: {}\n\
             Last run: {}, trigger {}, {}, attempts {}.\n\n{}",
            job.name,
            job.spec.kind(),
            record.outcome.as_str(),
            stamp(since),
            humantime::format_duration(job.notify.repeat_every),
            record.message,
            record.run_id,
            record.trigger.as_str(),
            took(record),
            record.attempts,
            look(job)
        ),
    );
    e.failures = Some(failures);
    e.since = Some(since);
    e
}

fn recovery(job: &JobConfig, record: &RunRecord, failures: u32, since: DateTime<Utc>) -> Event {
    let mut e = for_run(
        job,
        record,
        EventKind::Recovery,
        Severity::Info,
        &format!("{} recovered", job.name),
        &format!(
            "Job {} ({}) succeeded again after {failures} failed run(s) since {}: {}\n\
             Run: {}, trigger {}, {}.\n\n{}",
            job.name,
            job.spec.kind(),
            stamp(since),
            record.message,
            record.run_id,
            record.trigger.as_str(),
            took(record),
            look(job)
        ),
    );
    e.failures = Some(failures);
    e.since = Some(since);
    e
}

/// success, skipped, timeout: the run's summary.
fn simple(
    job: &JobConfig,
    record: &RunRecord,
    kind: EventKind,
    severity: Severity,
    verb: &str,
) -> Event {
    for_run(
        job,
        record,
        kind,
        severity,
        &format!("{} {verb}", job.name),
        &format!(
            "Job {} ({}) {verb}: {}\nRun: {}, trigger {}, {}, attempts {}.\n\n{}",
            job.name,
            job.spec.kind(),
            record.message,
            record.run_id,
            record.trigger.as_str(),
            took(record),
            record.attempts,
            look(job)
        ),
    )
}

fn for_run(
    job: &JobConfig,
    record: &RunRecord,
    kind: EventKind,
    severity: Severity,
    title: &str,
    message: &str,
) -> Event {
    let mut e = Event::new(kind, severity, title, message);
    e.job = Some(job.name.to_string());
    e.run_id = Some(record.run_id.to_string());
    e
}

/// Where to look further.
fn look(job: &JobConfig) -> String {
    format!(
        "Look: journalctl -u atpred JOB={0}\n      atprectl history {0}",
        job.name
    )
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn took(record: &RunRecord) -> String {
    format!(
        "took {}",
        humantime::format_duration(std::time::Duration::from_millis(record.duration_ms))
    )
}
