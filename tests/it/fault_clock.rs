//! The wall clock jumps under a running daemon: libfaketime (`LD_PRELOAD`, its offset read from
//! a file on every call, the monotonic clock left alone as a real clock step leaves it) moves
//! `CLOCK_REALTIME` 10 minutes forward, then back, under an `every 2s` job and two daily jobs
//! whose slot the forward jump passes (one with catch-up, one without):
//!
//! - forward: the 300 slots of the frequent job jumped over are covered by its newest, on time
//!   (no storm, no catch-up); the daily slot, 5 minutes late, is one catch-up run of the one and
//!   one "missed" record of the other;
//! - back: no slot fires twice — the jobs stay quiet (each one's next slot is after its last,
//!   10 minutes ahead) and the persisted last slots never move back.
//!
//! The decision rules themselves are unit-tested on the pure `JobTimer`
//! (`scheduler/timer_tests.rs`: forward and backward jumps, suspend, far-future last slots).

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

use crate::core_support::{WAIT, history, sh_job, time};
use crate::fault_support::{self, Row};
use crate::harness::{self, Daemon};

const JUMP: i64 = 600;

/// Schedule-triggered and catch-up runs of `job`, oldest first.
fn runs(daemon: &Daemon, job: &str) -> Vec<Value> {
    let mut runs = history(daemon, Some(job));
    runs.reverse();
    runs
}

fn count(runs: &[Value], trigger: &str, after: DateTime<Utc>) -> usize {
    runs.iter()
        .filter(|r| r["trigger"] == trigger && time(&r["started"]) > after)
        .count()
}

/// The last slot of `job` in `state/schedule.json`.
fn persisted_slot(dir: &Path, job: &str) -> Option<DateTime<Utc>> {
    let text = std::fs::read_to_string(dir.join("state/schedule.json")).ok()?;
    let map: Value = serde_json::from_str(&text).ok()?;
    map[job].as_str()?.parse().ok()
}

/// A daily 6-field cron slot `ahead` from now (real time), and that slot.
pub fn daily_slot_in(ahead: TimeDelta) -> (String, DateTime<Utc>) {
    use chrono::Timelike;
    let slot = (Utc::now() + ahead).with_nanosecond(0).expect("valid");
    let schedule = format!("{} {} {} * * *", slot.second(), slot.minute(), slot.hour());
    (schedule, slot)
}

#[test]
fn fault_clock_jumps_fire_no_slot_twice_and_lose_none_beyond_catch_up() {
    let dir = harness::tempdir();
    let clock = harness::FakeClock::new(dir.path());
    // The forward jump passes the daily slot and lands JUMP/2 after it: past the grace of 60 s,
    // so it is a late slot, caught up or missed.
    let (daily, daily_slot) = daily_slot_in(TimeDelta::seconds(JUMP / 2));
    let daemon = clock
        .apply(Daemon::builder(&dir))
        .toml(&sh_job(
            "often",
            "true",
            "schedule = \"every 2s\"\ncatch-up = true",
        ))
        .toml(&sh_job(
            "daily-on",
            "true",
            &format!("schedule = \"{daily}\"\ncatch-up = true"),
        ))
        .toml(&sh_job(
            "daily-off",
            "true",
            &format!("schedule = \"{daily}\"\ncatch-up = false"),
        ))
        .spawn();
    let start = Utc::now() - TimeDelta::seconds(5);
    let settled = harness::wait_until(WAIT, || {
        count(&runs(&daemon, "often"), "schedule", start) >= 2
    });
    assert!(settled, "the frequent job runs on schedule before the jump");

    // Forward.
    let before_jump = Utc::now() + TimeDelta::seconds(JUMP - 1);
    clock.set(JUMP);
    let resumed = harness::wait_until(WAIT, || {
        count(&runs(&daemon, "often"), "schedule", before_jump) >= 3
            && persisted_slot(dir.path(), "daily-off") == Some(daily_slot)
            && !runs(&daemon, "daily-on").is_empty()
    });
    let often = runs(&daemon, "often");
    let often_catch_ups = count(&often, "catch_up", start);
    let daily_on = runs(&daemon, "daily-on");
    let missed = daemon
        .log()
        .lines()
        .filter(|l| l.contains("missed the run") && l.contains("daily-off"))
        .count();
    let daily_off = runs(&daemon, "daily-off");
    eprintln!(
        "fault_clock: +{JUMP} s: `often` (every 2s) went on with {} on-time runs and {often_catch_ups} \
         catch-ups; `daily-on` ran {:?}; `daily-off` missed {missed}, ran {}",
        count(&often, "schedule", before_jump),
        daily_on
            .iter()
            .map(|r| r["trigger"].clone())
            .collect::<Vec<_>>(),
        daily_off.len()
    );
    // The run's own time proves the daemon saw the faked clock.
    let seen_jump = often.last().map(|r| time(&r["started"]) - Utc::now());

    // Back.
    let jobs = ["often", "daily-on", "daily-off"];
    let slots: Vec<_> = jobs.iter().map(|j| persisted_slot(dir.path(), j)).collect();
    let back = Utc::now() - TimeDelta::seconds(1);
    clock.set(0);
    // Proving an absence: nothing may start for a while. A run started after the jump back has a
    // real start time (runs before it carry the clock 10 minutes ahead), and would be a slot
    // already handled: the next slot of each job lies after its last, 10 minutes ahead.
    let fired_again = |daemon: &Daemon| -> Vec<Value> {
        jobs.iter()
            .flat_map(|j| runs(daemon, j))
            .filter(|r| {
                let t = time(&r["started"]);
                t > back && t < back + TimeDelta::seconds(JUMP / 2)
            })
            .collect()
    };
    let fired = harness::wait_until(Duration::from_secs(6), || !fired_again(&daemon).is_empty());
    let slots_after: Vec<_> = jobs.iter().map(|j| persisted_slot(dir.path(), j)).collect();
    eprintln!(
        "fault_clock: -{JUMP} s: runs started again: {:?}; last slots {slots:?} -> {slots_after:?}",
        fired_again(&daemon)
    );
    let moved_back = slots_after.iter().zip(&slots).any(|(a, b)| a < b);
    let twice = usize::from(fired) + usize::from(moved_back) + often_catch_ups;
    let lost = usize::from(daily_on.len() != 1) + usize::from(missed != 1) + daily_off.len();
    fault_support::record(&Row {
        scenario: "clock jump forward and back (libfaketime)",
        seed: None,
        runs: 2,
        faults: 2,
        losses: lost + twice,
        crashes: usize::from(daemon.ctl(["status"]).status != 0),
        notes: format!("+{JUMP} s then -{JUMP} s; every-2s and daily jobs"),
    });
    assert!(resumed, "the jobs go on from the new time");
    assert!(
        seen_jump.is_some_and(|d| (d.num_seconds() - JUMP).abs() < 60),
        "the daemon's clock moved by {JUMP} s: {seen_jump:?}"
    );
    assert_eq!(
        often_catch_ups, 0,
        "a frequent job's newest slot is on time: {often:#?}"
    );
    assert_eq!(
        daily_on.len(),
        1,
        "one late run for the jumped-over daily slot"
    );
    assert_eq!(daily_on[0]["trigger"], "catch_up", "{daily_on:#?}");
    assert_eq!(
        (missed, daily_off.len()),
        (1, 0),
        "one missed record, no run:\n{}",
        daemon.log()
    );
    assert!(!fired, "after the jump back nothing fires again");
    assert!(
        !moved_back,
        "the last slots never move back: {slots:?} -> {slots_after:?}"
    );
}
