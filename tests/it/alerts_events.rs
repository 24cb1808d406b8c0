//! Every event kind raised for real and received by a webhook on loopback: a job's failure,
//! recovery, start, success and timeout (each only where `notify-on` asks for it), a health
//! transition, a refused reload and an unclean stop, in the order they happened; and the noise
//! control over a job failing 10 times then recovering.

use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::alerts_support::{HttpServer, events, kinds, outbox_drained, wait_events, webhook};
use crate::core_support::sh_job;
use crate::harness::{Daemon, tempdir};

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
    outbox_drained(dir.path());
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

/// Every backup source opens its folder through the one preflight that alerts: a Redis backup
/// refused for space is an event as a pg_dump one is.
#[test]
fn a_redis_backup_refused_by_the_free_space_preflight_is_a_daemon_event_too() {
    let fx = crate::redis_support::RedisFixture::new(false);
    let http = HttpServer::start(fx.dir.path());
    let daemon = fx
        .daemon("min-free-after = \"99.99%\"")
        .toml(&webhook("ops", http.port, "PREFLIGHT"))
        .set("daemon", "notify", "[\"ops\"]")
        .spawn();
    assert_eq!(daemon.ctl(["run", "cache", "--wait"]).status, 1);
    let got = wait_events(&http, "PREFLIGHT", 1, &daemon);
    assert_eq!(kinds(&got), ["preflight_refused cache"], "{got:#?}");
}

#[test]
fn a_health_transition_reaches_the_health_jobs_channels_and_its_deprecated_webhook() {
    let dir = tempdir();
    let http = HttpServer::start(dir.path());
    let legacy = format!("http://127.0.0.1:{}/hook/LEGACY", http.port);
    let daemon = Daemon::builder(dir.path())
        .toml(&webhook("hc", http.port, "HEALTH"))
        .toml(&sh_job("broken", "exit 3", ""))
        .toml(&format!(
            "[jobs.watch]\nkind = \"health\"\nchecks = [\"jobs\"]\nfailing-runs = 1\n\
             notify = [\"hc\"]\nnotify-on = []\nwebhook = {}\n",
            crate::harness::toml_str(&legacy)
        ))
        .spawn();
    assert_eq!(daemon.ctl(["run", "watch", "--wait"]).status, 0);
    assert_eq!(daemon.ctl(["run", "broken", "--wait"]).status, 1);
    daemon.ctl(["run", "watch", "--wait"]);
    let got = wait_events(&http, "HEALTH", 1, &daemon);
    outbox_drained(dir.path());
    assert_eq!(
        kinds(&events(&http, "HEALTH")),
        ["health watch"],
        "{got:#?}"
    );
    assert_eq!(
        (&got[0]["check"], &got[0]["status"], &got[0]["previous"]),
        (
            &Value::from("jobs"),
            &Value::from("warn"),
            &Value::from("ok")
        )
    );
    // The old key is a channel like any other: the same event, through the same outbox,
    // counted in the same metric.
    let old = events(&http, "LEGACY");
    assert_eq!(old.len(), 1, "{old:#?}");
    assert_eq!(old[0]["id"], got[0]["id"]);
    assert_eq!(old[0]["job"], "watch");
    let metrics = daemon.ctl(["metrics"]).stdout;
    for channel in ["hc", "health.watch.webhook"] {
        assert_eq!(
            crate::alerts_support::sample(
                &metrics,
                "atpred_notifications_total",
                &format!("channel=\"{channel}\",outcome=\"sent\"")
            ),
            Some(1.0),
            "{channel}: {metrics}"
        );
    }
}
