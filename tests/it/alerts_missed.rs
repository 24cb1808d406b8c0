//! The `missed` event: a daily slot passes while the daemon is stopped, and the daemon that
//! starts after it (its wall clock moved past the slot by libfaketime, as a downtime would)
//! tells the job's channel, whether catch-up then runs it late or not at all; a job that did
//! not ask for `missed` stays quiet.

use std::time::Duration;

use chrono::TimeDelta;
use nix::sys::signal::Signal;

use crate::alerts_support::{HttpServer, events, outbox_drained, webhook};
use crate::core_support::{history, sh_job};
use crate::fault_clock::daily_slot_in;
use crate::harness::{Daemon, FakeClock, tempdir, wait_until};

#[test]
fn a_slot_missed_while_the_daemon_was_down_is_notified_at_start() {
    let dir = tempdir();
    let http = HttpServer::start(dir.path());
    let clock = FakeClock::new(dir.path());
    let (daily, slot) = daily_slot_in(TimeDelta::seconds(30));
    let job = |catch_up: bool, on: &str| {
        format!("schedule = \"{daily}\"\ncatch-up = {catch_up}\nnotify = [\"ops\"]\n{on}")
    };
    let mut daemon = clock
        .apply(Daemon::builder(dir.path()))
        .toml(&webhook("ops", http.port, "MISSED"))
        .toml(&sh_job(
            "late",
            "true",
            &job(true, "notify-on = [\"missed\"]"),
        ))
        .toml(&sh_job(
            "gone",
            "true",
            &job(false, "notify-on = [\"missed\"]"),
        ))
        .toml(&sh_job("quiet", "true", &job(false, "")))
        .spawn();
    // Stopped before the slot; started again 5 minutes after it (past the 60 s grace).
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(30)).is_some());
    assert!(events(&http, "MISSED").is_empty());
    clock.set(330);
    daemon.restart();

    let mut got = Vec::new();
    let arrived = wait_until(Duration::from_secs(20), || {
        got = events(&http, "MISSED");
        got.len() >= 2
    });
    assert!(arrived, "two missed events: {got:#?}\n{}", daemon.log());
    got.sort_by_key(|e| e["job"].as_str().unwrap().to_owned());
    let jobs: Vec<(&str, &str)> = got
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["job"].as_str().unwrap()))
        .collect();
    assert_eq!(jobs, [("missed", "gone"), ("missed", "late")], "{got:#?}");
    let stamp = slot.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for e in &got {
        assert_eq!(e["severity"], "warning");
        assert!(e["title"].as_str().unwrap().contains(&stamp), "{e}");
    }
    let gone = got[0]["message"].as_str().unwrap();
    assert!(gone.contains("it is not run (catch-up = false)"), "{gone}");
    assert!(gone.contains("atprectl history gone"), "{gone}");
    let late = got[1]["message"].as_str().unwrap();
    assert!(late.contains("it runs now, late"), "{late}");
    // What the events say happened: one catch-up run, no run of the others.
    assert!(wait_until(Duration::from_secs(10), || {
        !history(&daemon, Some("late")).is_empty()
    }));
    assert_eq!(history(&daemon, Some("late"))[0]["trigger"], "catch_up");
    assert!(history(&daemon, Some("gone")).is_empty());
    assert!(history(&daemon, Some("quiet")).is_empty());
    // The job that did not ask for `missed` said nothing: the outbox is empty, all was sent.
    outbox_drained(dir.path());
    assert_eq!(events(&http, "MISSED").len(), 2);
}
