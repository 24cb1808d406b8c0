//! Noise control through the real daemon: a job failing 10 times then recovering sends exactly
//! the expected messages (`fail-after`, `repeat-every`), with the daemon's clock moved by
//! libfaketime instead of waiting out `repeat-every`, so no step depends on how fast the runs
//! go; and a streak with the time of its last message survives a restart.

use serde_json::Value;

use crate::alerts_support::{HttpServer, events, kinds, outbox_drained, wait_events, webhook};
use crate::core_support::sh_job;
use crate::harness::{Daemon, FakeClock, tempdir, toml_str};

/// A script failing ("disk full at try N") its first `fails` runs, then succeeding.
fn failing(counter: &std::path::Path, fails: u32) -> String {
    format!(
        "n=$(cat {0} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {0}; \
         if [ $n -le {fails} ]; then echo \"disk full at try $n\" >&2; exit 1; fi; echo fine",
        counter.display()
    )
}

fn summary(got: &[Value]) -> Vec<(String, u64)> {
    got.iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["failures"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_job_failing_ten_times_then_recovering_is_damped() {
    let dir = tempdir();
    let http = HttpServer::start(dir.path());
    let clock = FakeClock::new(dir.path());
    let daemon = clock
        .apply(Daemon::builder(dir.path()))
        .toml(&webhook("ops", http.port, "NOISE"))
        .toml(&sh_job(
            "flap",
            &failing(&dir.path().join("count"), 10),
            &format!(
                "notify = [\"ops\"]\nfail-after = 3\nrepeat-every = {}",
                toml_str("1h")
            ),
        ))
        .spawn();
    let run = |n: usize| {
        for _ in 0..n {
            daemon.ctl(["run", "flap", "--wait"]);
        }
    };
    // Runs 1-5 within the hour after the message at run 3; the clock then moves an hour on:
    // run 6 repeats the message, runs 7-10 are within the hour after it; then the success.
    run(5);
    clock.set(3600 + 60);
    run(6);
    outbox_drained(dir.path());
    let got = events(&http, "NOISE");
    assert_eq!(
        summary(&got),
        [
            ("failure".to_owned(), 3),
            ("failure".to_owned(), 6),
            ("recovery".to_owned(), 10)
        ],
        "{:#?}",
        kinds(&got)
    );
    assert_eq!(got[0]["since"], got[1]["since"], "one streak");
    assert_eq!(got[1]["since"], got[2]["since"]);
    let repeat = got[1]["message"].as_str().unwrap();
    assert!(repeat.contains("6 failed run(s) in a row"), "{repeat}");
    assert!(
        repeat.contains("disk full at try 6"),
        "the last error: {repeat}"
    );
    assert!(
        got[1]["title"]
            .as_str()
            .unwrap()
            .contains("6 times in a row")
    );
}

#[test]
fn a_failure_streak_and_its_last_message_survive_a_restart() {
    let dir = tempdir();
    let http = HttpServer::start(dir.path());
    let mut daemon = Daemon::builder(dir.path())
        .toml(&webhook("ops", http.port, "KEPT"))
        .toml(&sh_job(
            "flap",
            &failing(&dir.path().join("count"), 2),
            "notify = [\"ops\"]\nrepeat-every = \"1h\"",
        ))
        .spawn();
    assert_eq!(daemon.ctl(["run", "flap", "--wait"]).status, 1);
    wait_events(&http, "KEPT", 1, &daemon);
    daemon.restart();
    // Within the hour after the first message: the second failure is quiet, after a restart
    // as before it; the recovery counts both failures.
    assert_eq!(daemon.ctl(["run", "flap", "--wait"]).status, 1);
    assert_eq!(daemon.ctl(["run", "flap", "--wait"]).status, 0);
    wait_events(&http, "KEPT", 2, &daemon);
    outbox_drained(dir.path());
    let got = events(&http, "KEPT");
    assert_eq!(
        summary(&got),
        [("failure".to_owned(), 1), ("recovery".to_owned(), 2)],
        "{:#?}",
        kinds(&got)
    );
    assert_eq!(
        got[0]["since"], got[1]["since"],
        "one streak across the restart"
    );
}
