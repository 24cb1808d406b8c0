//! Schedules through the real daemon: `every 1s` and 6-field cron jobs fire repeatedly, a job
//! never overlaps itself (ticks while it runs are recorded as skipped), and `catch-up` runs a
//! missed slot exactly once at start-up (or, when off, records it as missed without running).
//! DST arithmetic is unit-tested in `src/scheduler`; `core_config` checks local times end to end.

use std::path::Path;

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use serde_json::Value;

use crate::core_support::{WAIT, history, sh_job, time, wait_for_runs};
use crate::harness::{self, Daemon};

#[test]
fn every_second_and_six_field_cron_jobs_fire_repeatedly() {
    let dir = harness::tempdir();
    let daemon = Daemon::builder(&dir)
        .toml(&sh_job("every", "true", "schedule = \"every 1s\""))
        .toml(&sh_job("cron", "true", "schedule = \"*/1 * * * * *\""))
        .spawn();
    for job in ["every", "cron"] {
        let runs = wait_for_runs(&daemon, job, 3, |r| r["trigger"] == "schedule");
        let mut starts: Vec<DateTime<Utc>> = runs.iter().map(|r| time(&r["started"])).collect();
        starts.reverse();
        // A slot fires at or after its second and before the next one (a later tick would take
        // the newer slot instead), so one run per slot means one start per wall-clock second.
        for pair in starts.windows(2) {
            assert!(
                pair[1].timestamp() > pair[0].timestamp(),
                "{job}: one run per 1 s slot: {starts:?}"
            );
        }
        for r in &runs {
            assert_eq!(
                (&r["trigger"], &r["outcome"]),
                (&"schedule".into(), &"succeeded".into()),
                "{r}"
            );
        }
    }
}

#[test]
fn a_job_never_overlaps_itself_and_extra_ticks_are_skipped() {
    let dir = harness::tempdir();
    let marks = dir.path().join("marks");
    let daemon = Daemon::builder(&dir)
        .toml(&sh_job(
            "busy",
            &format!(
                "echo start >> {m}; sleep 1.5; echo end >> {m}",
                m = marks.display()
            ),
            "schedule = \"every 1s\"",
        ))
        .spawn();
    let runs = wait_for_runs(&daemon, "busy", 2, |r| r["outcome"] == "succeeded");
    let runs = if runs.iter().any(|r| r["outcome"] == "skipped") {
        runs
    } else {
        wait_for_runs(&daemon, "busy", 1, |r| r["outcome"] == "skipped")
    };
    let (skipped, ran): (Vec<&Value>, Vec<&Value>) =
        runs.iter().partition(|r| r["outcome"] == "skipped");
    let mut spans: Vec<(DateTime<Utc>, DateTime<Utc>, &str)> = ran
        .iter()
        .map(|r| {
            (
                time(&r["started"]),
                time(&r["finished"]),
                r["run_id"].as_str().expect("id"),
            )
        })
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "runs overlap: {pair:?}\n{runs:#?}");
    }
    for skip in &skipped {
        assert_eq!(skip["trigger"], "schedule", "{skip}");
        let message = skip["message"].as_str().expect("message");
        let at = time(&skip["started"]);
        let busy_with = spans
            .iter()
            .find(|(_, _, id)| message.contains(id))
            .unwrap_or_else(|| panic!("{message:?} names no run of busy: {runs:#?}"));
        // The run's end time is taken just before its record is written and it leaves the
        // running set, so a tick in that instant may still find it running: allow 200 ms.
        let slack = TimeDelta::milliseconds(200);
        assert!(
            busy_with.0 <= at && at <= busy_with.1 + slack,
            "skipped while {busy_with:?} ran: {skip}"
        );
    }
    let text = std::fs::read_to_string(&marks).expect("marks");
    for (i, mark) in text.lines().enumerate() {
        assert_eq!(
            mark,
            if i % 2 == 0 { "start" } else { "end" },
            "processes overlapped:\n{text}"
        );
    }
}

/// A daily 6-field schedule whose latest slot is 5 minutes ago, and that slot.
fn daily_slot_five_minutes_ago() -> (String, DateTime<Utc>) {
    let slot = (Utc::now() - TimeDelta::minutes(5))
        .with_nanosecond(0)
        .expect("valid");
    let schedule = format!("{} {} {} * * *", slot.second(), slot.minute(), slot.hour());
    (schedule, slot)
}

/// Writes `state/schedule.json` as if `job` last fired two days ago.
fn seed_last_slot(dir: &Path, job: &str) -> DateTime<Utc> {
    let state = dir.join("state");
    std::fs::create_dir_all(&state).expect("create the state dir");
    let old = (Utc::now() - TimeDelta::days(2))
        .with_nanosecond(0)
        .expect("valid");
    let json = serde_json::json!({ job: old.to_rfc3339() });
    harness::write_private(&state.join("schedule.json"), json.to_string().as_bytes());
    old
}

/// The last slot of `job` in `state/schedule.json`.
fn persisted_slot(dir: &Path, job: &str) -> Option<DateTime<Utc>> {
    let text = std::fs::read_to_string(dir.join("state/schedule.json")).ok()?;
    let map: Value = serde_json::from_str(&text).ok()?;
    map[job].as_str()?.parse().ok()
}

#[test]
fn catch_up_runs_a_missed_slot_once_at_start() {
    let dir = harness::tempdir();
    let (schedule, slot) = daily_slot_five_minutes_ago();
    seed_last_slot(dir.path(), "late");
    let daemon = Daemon::builder(&dir)
        .toml(&sh_job(
            "late",
            "true",
            &format!("schedule = \"{schedule}\"\ncatch-up = true"),
        ))
        .spawn();
    let runs = wait_for_runs(&daemon, "late", 1, |_| true);
    let handled = harness::wait_until(WAIT, || persisted_slot(dir.path(), "late") == Some(slot));
    assert!(
        handled,
        "the slot is recorded: {:?}",
        persisted_slot(dir.path(), "late")
    );
    // Two daily slots were missed (yesterday's and today's): they coalesce into one run.
    let runs_now = history(&daemon, Some("late"));
    assert_eq!(runs_now.len(), 1, "exactly one catch-up run: {runs_now:#?}");
    assert_eq!(
        (&runs[0]["trigger"], &runs[0]["outcome"]),
        (&"catch_up".into(), &"succeeded".into())
    );
    let job = crate::core_support::ctl_json(&daemon, &["jobs"])["jobs"][0].clone();
    assert_eq!(time(&job["next_run"]), slot + TimeDelta::days(1), "{job}");
}

#[test]
fn without_catch_up_a_missed_slot_is_recorded_not_run() {
    let dir = harness::tempdir();
    let (schedule, slot) = daily_slot_five_minutes_ago();
    seed_last_slot(dir.path(), "late");
    let daemon = Daemon::builder(&dir)
        .toml(&sh_job(
            "late",
            "true",
            &format!("schedule = \"{schedule}\"\ncatch-up = false"),
        ))
        .spawn();
    let handled = harness::wait_until(WAIT, || persisted_slot(dir.path(), "late") == Some(slot));
    assert!(
        handled,
        "the missed slot is recorded: {:?}",
        persisted_slot(dir.path(), "late")
    );
    assert!(
        daemon.log().contains("missed the run"),
        "{}",
        harness::tail(&daemon.log(), 20)
    );
    let status = crate::core_support::ctl_json(&daemon, &["status"]);
    assert!(
        status["running"].as_array().is_some_and(|r| r.is_empty()),
        "{status}"
    );
    assert!(history(&daemon, Some("late")).is_empty(), "nothing ran");
}
