//! Every event kind raised for real and received by a webhook on loopback: a job's failure,
//! recovery, start, success and timeout (each only where `notify-on` asks for it), a health
//! transition, a refused reload and an unclean stop, in the order they happened; and the noise
//! control over a job failing 10 times then recovering.

use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::alerts_support::{HttpServer, events, webhook};
use crate::core_support::sh_job;
use crate::harness::{Daemon, tempdir, toml_str, wait_until};

/// Waits until `/hook/<key>` got `n` events; returns them.
fn wait_events(http: &HttpServer, key: &str, n: usize, daemon: &Daemon) -> Vec<Value> {
    let mut got = Vec::new();
    let ok = wait_until(Duration::from_secs(20), || {
        got = events(http, key);
        got.len() >= n
    });
    let kinds: Vec<&Value> = got.iter().map(|e| &e["kind"]).collect();
    assert!(ok, "{n} events; got {kinds:?}\n{}", daemon.log());
    got
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["kind"].as_str().unwrap(),
                e["job"].as_str().unwrap_or("-")
            )
        })
        .collect()
}

#[test]
fn each_event_kind_reaches_the_channel() {
    let dir = tempdir();
    let http = HttpServer::start(dir.path());
    let flag = dir.path().join("flaky.flag");
    let flaky = format!(
        "if [ -f {0} ]; then echo fine; else touch {0}; echo disk full >&2; exit 2; fi",
        flag.display()
    );
    let mut daemon = Daemon::builder(dir.path())
        .set("daemon", "notify", "[\"ops\"]")
        .toml(&webhook("ops", http.port, "EVENTS"))
        .toml(&sh_job("flaky", &flaky, "notify = [\"ops\"]"))
        .toml(&sh_job(
            "ok",
            "echo done",
            "notify = [\"ops\"]\nnotify-on = [\"start\", \"success\"]",
        ))
        .toml(&sh_job(
            "slow",
            "sleep 30",
            "timeout = \"1s\"\nnotify = [\"ops\"]\nnotify-on = [\"timeout\"]",
        ))
        .toml("[jobs.watch]\nkind = \"health\"\nchecks = [\"jobs\"]\nfailing-runs = 1\n")
        .spawn();

    assert_eq!(
        daemon.ctl(["run", "watch", "--wait"]).status,
        0,
        "first ok: no event"
    );
    assert_eq!(daemon.ctl(["run", "flaky", "--wait"]).status, 1);
    daemon.ctl(["run", "watch", "--wait"]);
    assert_eq!(daemon.ctl(["run", "flaky", "--wait"]).status, 0);
    assert_eq!(daemon.ctl(["run", "ok", "--wait"]).status, 0);
    assert_eq!(daemon.ctl(["run", "slow", "--wait"]).status, 1);
    // A dry run raises nothing.
    assert_eq!(daemon.ctl(["run", "ok", "--dry-run"]).status, 0);

    let config = daemon.config_path().to_owned();
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{good}\n[jobs.broken]\nkind = \"nope\"\n")).unwrap();
    assert_ne!(daemon.ctl(["reload"]).status, 0);
    std::fs::write(&config, &good).unwrap();

    let got = wait_events(&http, "EVENTS", 7, &daemon);
    // Delivery is at least once: a kill between a send and the removal of its file would
    // send it again, so the kill waits for the outbox to be empty.
    let outbox = dir.path().join("state/outbox");
    assert!(wait_until(Duration::from_secs(10), || std::fs::read_dir(
        &outbox
    )
    .map(|d| d.count() == 0)
    .unwrap_or(false)));
    daemon.signal(Signal::SIGKILL);
    assert!(daemon.wait_exit(Duration::from_secs(10)).is_some());
    daemon.restart();
    let got = {
        let _ = got;
        wait_events(&http, "EVENTS", 8, &daemon)
    };
    assert_eq!(
        kinds(&got),
        [
            "failure flaky",
            "health watch",
            "recovery flaky",
            "start ok",
            "success ok",
            "timeout slow",
            "reload_refused -",
            "unclean_stop -",
        ],
        "{got:#?}"
    );

    let failure = &got[0];
    assert_eq!(failure["severity"], "critical");
    assert_eq!(failure["failures"], 1);
    assert!(failure["since"].as_str().is_some(), "{failure}");
    let text = failure["message"].as_str().unwrap();
    for want in [
        "Job flaky (command) failed",
        "Failing since ",
        "Last error: ",
        "disk full",
        "journalctl -u atpred JOB=flaky",
        "atprectl history flaky",
    ] {
        assert!(text.contains(want), "{want:?} in:\n{text}");
    }
    let health = &got[1];
    assert_eq!(
        (&health["check"], &health["status"], &health["previous"]),
        (
            &Value::from("jobs"),
            &Value::from("warn"),
            &Value::from("ok")
        ),
        "{health}"
    );
    assert_eq!(health["severity"], "warning");
    assert!(
        health["message"]
            .as_str()
            .unwrap()
            .contains("flaky failed its last 1 run(s)")
    );
    let recovery = &got[2];
    assert_eq!(recovery["severity"], "info");
    assert_eq!(recovery["failures"], 1);
    assert!(
        recovery["message"]
            .as_str()
            .unwrap()
            .contains("succeeded again after 1 failed run(s)")
    );
    assert_eq!(
        got[3]["run_id"], got[4]["run_id"],
        "start and success of one run"
    );
    assert!(got[5]["message"].as_str().unwrap().contains("timed out"));
    assert!(
        got[6]["message"].as_str().unwrap().contains("\"nope\""),
        "the reason: {}",
        got[6]["message"]
    );
    assert!(
        got[7]["message"]
            .as_str()
            .unwrap()
            .contains("did not stop cleanly")
    );
    // Nothing more: the slow job's failure was not asked for, nor was the dry run.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(events(&http, "EVENTS").len(), 8);
}

#[test]
fn a_job_failing_ten_times_then_recovering_is_damped() {
    let dir = tempdir();
    let http = HttpServer::start(dir.path());
    let counter = dir.path().join("count");
    let script = format!(
        "n=$(cat {0} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {0}; \
         if [ $n -le 10 ]; then echo \"disk full at try $n\" >&2; exit 1; fi; echo fine",
        counter.display()
    );
    let daemon = Daemon::builder(dir.path())
        .toml(&webhook("ops", http.port, "NOISE"))
        .toml(&sh_job(
            "flap",
            &script,
            &format!(
                "notify = [\"ops\"]\nfail-after = 3\nrepeat-every = {}",
                toml_str("5s")
            ),
        ))
        .spawn();
    let run = |n: usize| {
        for _ in 0..n {
            daemon.ctl(["run", "flap", "--wait"]);
        }
    };
    // Runs 1-5 well within repeat-every of the message at run 3, a pause past it, runs 6-10
    // (the message at run 6 repeats, 7-10 are again within 5s of it), then the success.
    run(5);
    std::thread::sleep(Duration::from_millis(5500));
    run(5);
    run(1);
    let got = wait_events(&http, "NOISE", 3, &daemon);
    std::thread::sleep(Duration::from_millis(500));
    let got_all = events(&http, "NOISE");
    assert_eq!(got_all.len(), 3, "{:#?}", kinds(&got_all));
    let summary: Vec<(String, u64)> = got
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["failures"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("failure".to_owned(), 3),
            ("failure".to_owned(), 6),
            ("recovery".to_owned(), 10)
        ]
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
fn a_tick_skipped_while_the_job_still_runs_is_notified_when_asked() {
    let dir = tempdir();
    let http = HttpServer::start(dir.path());
    let daemon = Daemon::builder(dir.path())
        .toml(&webhook("ops", http.port, "SKIPS"))
        .toml(&sh_job(
            "busy",
            "sleep 3",
            "schedule = \"every 1s\"\nnotify = [\"ops\"]\nnotify-on = [\"skipped\"]",
        ))
        .spawn();
    let got = wait_events(&http, "SKIPS", 1, &daemon);
    assert_eq!(got[0]["kind"], "skipped", "{got:#?}");
    assert_eq!(got[0]["job"], "busy");
    assert_eq!(got[0]["severity"], "warning");
    assert!(
        got[0]["message"]
            .as_str()
            .unwrap()
            .contains("still running from run"),
        "{}",
        got[0]["message"]
    );
    assert!(
        events(&http, "SKIPS")
            .iter()
            .all(|e| e["kind"] == "skipped"),
        "nothing else was asked for"
    );
}

#[test]
fn a_backup_refused_by_the_free_space_preflight_is_a_daemon_event() {
    let fx = crate::backup_support::Fixture::new();
    let http = HttpServer::start(fx.dir.path());
    let daemon = fx
        .daemon(&format!(
            "{}[jobs.nightly]\nkind = \"backup\"\nmin-free-after = \"99.99%\"",
            webhook("ops", http.port, "PREFLIGHT")
        ))
        .set("daemon", "notify", "[\"ops\"]")
        .spawn();
    assert_eq!(daemon.ctl(["run", "nightly", "--wait"]).status, 1);
    let got = wait_events(&http, "PREFLIGHT", 1, &daemon);
    assert_eq!(kinds(&got), ["preflight_refused nightly"], "{got:#?}");
    assert_eq!(got[0]["severity"], "critical");
    let text = got[0]["message"].as_str().unwrap();
    assert!(text.contains("not enough space in"), "{text}");
    assert!(text.contains("min-free-after"), "{text}");
}
