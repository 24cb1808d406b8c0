//! The daemon's own events, for `[daemon] notify`: what each says. Pure.

use super::event::{Event, EventKind, Severity};

/// A reload (SIGHUP, `atprectl reload`) was refused; the old configuration stays in force.
pub fn reload_refused(config: &std::path::Path, why: &str) -> Event {
    Event::new(
        EventKind::ReloadRefused,
        Severity::Warning,
        "configuration reload refused",
        &format!(
            "atpred refused to reload {}; the previous configuration stays in force.\n\
             Why: {why}\n\n\
             Look: atpred --check --config {}\n      journalctl -u atpred",
            config.display(),
            config.display()
        ),
    )
}

/// The previous daemon did not stop cleanly (a crash, a kill, a watchdog abort).
pub fn unclean_stop(previous_pid: &str, ended: &[String]) -> Event {
    let mut message = format!(
        "atpred started after its previous run (pid {previous_pid}) did not stop cleanly: a crash, \
         a kill -9 or a watchdog abort. Unfinished backups were removed, as were process groups \
         it left running ({}).",
        ended.len()
    );
    for line in ended.iter().take(10) {
        message.push_str("\n- ");
        message.push_str(line);
    }
    message.push_str("\n\nLook: journalctl -u atpred --boot; coredumpctl list atpred");
    Event::new(
        EventKind::UncleanStop,
        Severity::Warning,
        "atpred restarted after an unclean stop",
        &message,
    )
}

/// A health check changed state.
pub fn health(job: &str, check: &str, status: &str, previous: &str, message: &str) -> Event {
    let severity = match status {
        "ok" => Severity::Info,
        "warn" => Severity::Warning,
        _ => Severity::Critical,
    };
    let mut e = Event::new(
        EventKind::Health,
        severity,
        &format!("health check {check} is {status} (was {previous})"),
        &format!(
            "Health check {check} of job {job} is now {status} (was {previous}): {message}\n\n\
             Look: atprectl health\n      journalctl -u atpred JOB={job} CHECK={check}"
        ),
    );
    e.job = Some(job.to_owned());
    e.check = Some(check.to_owned());
    e.status = Some(status.to_owned());
    e.previous = Some(previous.to_owned());
    e
}

/// The free-space preflight refused to start a backup.
pub fn preflight_refused(job: &str, why: &str) -> Event {
    let mut e = Event::new(
        EventKind::PreflightRefused,
        Severity::Critical,
        &format!("backup {job} refused: not enough free space"),
        &format!(
            "The backup job {job} did not start its dump: {why}\n\n\
             Look: df -h; atprectl backups\n      journalctl -u atpred JOB={job}"
        ),
    );
    e.job = Some(job.to_owned());
    e
}

/// A run of `job` could not start on this host: `cause` is `run-on`, `lease` or `connection`
/// (the server that decides could not be asked).
pub fn start_refused(job: &str, cause: &str, why: &str) -> Event {
    let (severity, then) = if cause == "connection" {
        (
            Severity::Critical,
            "The run failed before it began: no host may have run it.",
        )
    } else {
        (
            Severity::Warning,
            "This host stepped aside (told once until the job runs here again).",
        )
    };
    let mut e = Event::new(
        EventKind::StartRefused,
        severity,
        &format!("{job} could not start ({cause})"),
        &format!(
            "A run of job {job} could not start on this host ({cause}): {why}\n{then}\n\n\
             Look: atprectl status; atprectl history {job}\n      journalctl -u atpred JOB={job}"
        ),
    );
    e.job = Some(job.to_owned());
    e
}

/// The copies of `job`'s backups to the offsite target `target` failed in `failures` runs in
/// a row since `since`; `last` names the last backup tried and why it failed.
pub fn offsite_failing(
    job: &str,
    target: &str,
    failures: u32,
    since: chrono::DateTime<chrono::Utc>,
    last: &str,
) -> Event {
    let since_text = since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut e = Event::new(
        EventKind::OffsiteFailing,
        Severity::Critical,
        &format!("offsite copies of {job} to {target} keep failing ({failures} runs in a row)"),
        &format!(
            "The copies of job {job}'s backups to the offsite target {target} failed in \
             {failures} run(s) in a row, since {since_text}. The local backups are unaffected; \
             each run tries again.\nLast failure: {last}\n\n\
             Look: atprectl backups --remote\n      journalctl -u atpred JOB={job}"
        ),
    );
    e.job = Some(job.to_owned());
    e.failures = Some(failures);
    e.since = Some(since);
    e
}
