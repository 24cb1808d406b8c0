//! Dead-man pings against a real healthchecks-style receiver on loopback: the order and the
//! URLs of a run's pings (`/start`, then the bare URL, `/<exit status>` or `/fail`), their
//! bounded bodies, the daemon's heartbeat stopping while the daemon is frozen with SIGSTOP, runs
//! unaffected by a receiver that is down or hangs, and the ping keys kept out of every output.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};

use crate::alerts_support::{
    HangingReceiver, HttpServer, Thaw, arrivals, closed_port, outputs, pings, sample, unix_now,
};
use crate::core_support::{WAIT, history, sh_job};
use crate::harness::{Daemon, tempdir, toml_path, toml_str, wait_until};

/// `ping-url = "<receiver>/ping/<key>"`.
fn ping_url(port: u16, key: &str) -> String {
    format!(
        "ping-url = {}",
        toml_str(&format!("http://127.0.0.1:{port}/ping/{key}"))
    )
}

/// Waits until the receiver has `n` pings for `key` and returns them.
fn wait_pings(http: &HttpServer, key: &str, n: usize) -> Vec<(String, String)> {
    let mut got = Vec::new();
    let ok = wait_until(WAIT, || {
        got = pings(http, key);
        got.len() >= n
    });
    assert!(ok, "{n} pings for {key} within {WAIT:?}; got {got:?}");
    got
}

#[test]
fn pings_mark_start_then_success_exit_status_or_fail() {
    let dir = tempdir();
    let http = HttpServer::start(dir.path());
    let port = http.port;
    // 150 long lines: more than the 100 kept, and far more than the 10 KiB body.
    let noisy = format!(
        "echo hello-from-bad; for i in $(seq 1 150); do echo bad-line-$i-{}; done; echo boom >&2; exit 3",
        "x".repeat(150)
    );
    let daemon = Daemon::builder(dir.path())
        .toml(&sh_job(
            "ok",
            "echo hello-from-ok",
            &ping_url(port, "OK-KEY"),
        ))
        .toml(&sh_job("bad", &noisy, &ping_url(port, "BAD-KEY")))
        .toml(&sh_job(
            "slow",
            "sleep 30",
            &format!("timeout = \"1s\"\n{}", ping_url(port, "SLOW-KEY")),
        ))
        .spawn();

    // A dry run sends nothing: the first pings are the real run's.
    assert_eq!(daemon.ctl(["run", "ok", "--dry-run"]).status, 0);
    for job in ["ok", "bad", "slow"] {
        daemon.ctl(["run", job, "--wait"]);
    }

    let ok = wait_pings(&http, "OK-KEY", 2);
    let order: Vec<&str> = ok.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(order, ["/start", ""], "{ok:?}");
    assert!(ok[0].1.contains("ok (command) started"), "{}", ok[0].1);
    assert!(ok[1].1.starts_with("ok (command) succeeded"), "{}", ok[1].1);
    assert!(
        ok[1].1.contains("hello-from-ok"),
        "the run's log lines: {}",
        ok[1].1
    );

    let bad = wait_pings(&http, "BAD-KEY", 2);
    let order: Vec<&str> = bad.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        order,
        ["/start", "/3"],
        "a failure with an exit status sends it"
    );
    let body = &bad[1].1;
    assert!(body.starts_with("bad (command) failed"), "{body}");
    assert!(
        body.contains("exit status 3") || body.contains("exit code 3"),
        "{body}"
    );
    assert!(body.len() <= 10 * 1024, "bounded: {} bytes", body.len());
    assert!(
        body.contains("bad-line-150-"),
        "the newest lines are kept: {body}"
    );
    assert!(body.contains("boom"), "stderr too: {body}");
    assert!(
        !body.contains("hello-from-bad"),
        "the oldest lines are left out"
    );
    assert!(body.contains("earlier lines left out"), "{body}");

    let slow = wait_pings(&http, "SLOW-KEY", 2);
    let order: Vec<&str> = slow.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(order, ["/start", "/fail"], "a timeout sends /fail");
    assert!(slow[1].1.contains("timed_out"), "{}", slow[1].1);

    // Nothing more came (the dry run's would have been first in its job's queue).
    assert_eq!(pings(&http, "OK-KEY").len(), 2);
    let metrics = daemon.ctl(["metrics"]).stdout;
    assert_eq!(
        sample(
            &metrics,
            "atpred_pings_total",
            "job=\"bad\",outcome=\"sent\""
        ),
        Some(2.0),
        "{metrics}"
    );
}

#[test]
fn heartbeat_stops_while_the_daemon_is_frozen() {
    let dir = tempdir();
    let http = HttpServer::start(dir.path());
    let url = format!("http://127.0.0.1:{}/ping/BEAT-KEY", http.port);
    let daemon = Daemon::builder(dir.path())
        .set("daemon", "heartbeat-url", toml_str(&url))
        .set("daemon", "heartbeat-every", toml_str("1s"))
        .spawn();
    assert!(
        wait_until(WAIT, || arrivals(&http, "BEAT-KEY").len() >= 3),
        "heartbeats every second: {:?}",
        arrivals(&http, "BEAT-KEY")
    );
    let beats = pings(&http, "BEAT-KEY");
    assert!(beats[0].1.starts_with("atpred "), "{beats:?}");
    let gaps: Vec<f64> = arrivals(&http, "BEAT-KEY")
        .windows(2)
        .map(|w| w[1] - w[0])
        .collect();
    assert!(
        gaps.iter().all(|g| (0.5..2.0).contains(g)),
        "about 1 s apart: {gaps:?}"
    );

    let thaw = Thaw(daemon.pid());
    kill(daemon.pid(), Signal::SIGSTOP).unwrap();
    // A beat already on the wire may still land just after the stop.
    let frozen = unix_now() + 0.5;
    let beat_while_frozen = wait_until(Duration::from_secs(4), || {
        arrivals(&http, "BEAT-KEY").iter().any(|t| *t > frozen)
    });
    assert!(
        !beat_while_frozen,
        "no heartbeat while frozen: {:?} after {frozen}",
        arrivals(&http, "BEAT-KEY")
    );

    kill(daemon.pid(), Signal::SIGCONT).unwrap();
    drop(thaw);
    let thawed = unix_now();
    assert!(
        wait_until(Duration::from_secs(5), || {
            arrivals(&http, "BEAT-KEY")
                .iter()
                .filter(|t| **t > thawed)
                .count()
                >= 2
        }),
        "heartbeats resume: {:?}",
        arrivals(&http, "BEAT-KEY")
    );
}

#[test]
fn a_receiver_that_is_down_or_hangs_never_delays_a_run() {
    let dir = tempdir();
    let hanging = HangingReceiver::start();
    let beats = HangingReceiver::start();
    let down = closed_port();
    let daemon = Daemon::builder(dir.path())
        .set(
            "daemon",
            "heartbeat-url",
            toml_str(&format!("http://127.0.0.1:{}/ping/BEAT", beats.port)),
        )
        .set("daemon", "heartbeat-every", toml_str("1s"))
        .toml(&sh_job(
            "hung",
            "echo fine",
            &ping_url(hanging.port, "HUNG-KEY"),
        ))
        .toml(&sh_job("gone", "echo fine", &ping_url(down, "GONE-KEY")))
        .toml(&sh_job("bad", "exit 4", &ping_url(down, "BAD-KEY")))
        .spawn();
    let started = Instant::now();
    // Twice each: the second run's pings queue behind the first's, which hang for 3 x 10 s.
    for job in ["hung", "gone", "hung", "gone", "bad"] {
        let t0 = Instant::now();
        let out = daemon.ctl(["run", job, "--wait"]);
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "{job} took {:?}: {out:?}",
            t0.elapsed()
        );
    }
    for (job, outcome) in [
        ("hung", "succeeded"),
        ("gone", "succeeded"),
        ("bad", "failed"),
    ] {
        let runs = history(&daemon, Some(job));
        assert!(!runs.is_empty(), "{job}");
        for r in &runs {
            assert_eq!(r["outcome"], outcome, "{job}: {r}");
            assert!(r["duration_ms"].as_u64().unwrap() < 2000, "{job}: {r}");
        }
    }
    assert!(hanging.accepted() >= 1, "the hanging receiver was tried");

    // The pings to the closed port fail after their retries: logged with the origin, counted.
    let mut metrics = String::new();
    assert!(
        wait_until(WAIT, || {
            metrics = daemon.ctl(["metrics"]).stdout;
            sample(
                &metrics,
                "atpred_pings_total",
                "job=\"gone\",outcome=\"failed\"",
            ) >= Some(2.0)
        }),
        "{metrics}"
    );
    let log = daemon.log();
    assert!(
        log.contains(&format!(
            "job gone ping (start) to http://127.0.0.1:{down} failed"
        )),
        "{log}"
    );

    // The heartbeat to a receiver that never answers keeps at most one request in flight.
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        (beats.accepted() as f64) <= elapsed + 1.0,
        "{} heartbeat connections in {elapsed:.1} s",
        beats.accepted()
    );
    assert!(
        sample(&metrics, "atpred_heartbeats_total", "outcome=\"failed\"").is_some(),
        "{metrics}"
    );
    // Still answering, still beating (the supervisor is not held up by the hung sends).
    assert_eq!(daemon.ctl(["status"]).status, 0);
}

#[test]
fn ping_keys_stay_out_of_every_output() {
    const KEYS: [&str; 4] = [
        "Uuid-Ok-9f3c",
        "Uuid-Down-4d1a",
        "Uuid-Beat-7b2e",
        "Uuid-Bad-2k8x",
    ];
    let dir = tempdir();
    let http = HttpServer::start(dir.path());
    let port = http.port;
    let down = closed_port();
    let textfile = dir.path().join("metrics.prom");
    let daemon = Daemon::builder(dir.path())
        .set("daemon", "log-level", toml_str("debug"))
        .set("metrics", "textfile", toml_path(&textfile))
        .set(
            "daemon",
            "heartbeat-url",
            toml_str(&format!("http://127.0.0.1:{port}/ping/{}", KEYS[2])),
        )
        .set("daemon", "heartbeat-every", toml_str("1s"))
        .toml(&sh_job("ok", "echo fine", &ping_url(port, KEYS[0])))
        .toml(&sh_job("down", "exit 3", &ping_url(down, KEYS[1])))
        .spawn();
    daemon.ctl(["run", "ok", "--wait"]);
    daemon.ctl(["run", "down", "--wait"]);
    wait_pings(&http, KEYS[0], 2);
    assert!(wait_until(WAIT, || arrivals(&http, KEYS[2]).len() >= 2));
    // Both of down's pings failed after their retries (so their errors were logged).
    assert!(
        wait_until(WAIT, || {
            let m = daemon.ctl(["metrics"]).stdout;
            sample(&m, "atpred_pings_total", "job=\"down\",outcome=\"failed\"") == Some(2.0)
        }),
        "{}",
        daemon.log()
    );
    assert!(wait_until(WAIT, || textfile.exists()));
    let texts = outputs(&daemon, &dir.path().join("state"), &textfile);
    for (what, text) in &texts {
        for key in KEYS {
            assert!(!text.contains(key), "{what} shows {key}:\n{text}");
        }
    }
    let log = &texts.last().unwrap().1;
    assert!(
        log.contains(&format!("http://127.0.0.1:{down}")),
        "the origin is named: {log}"
    );

    // A refused ping-url is named by its key and shown by its origin only.
    let out = Daemon::builder(dir.path())
        .name("refused")
        .toml(&sh_job(
            "x",
            "true",
            &format!(
                "ping-url = \"https://user:{}@hc-ping.com/{}\"",
                KEYS[3], KEYS[3]
            ),
        ))
        .check();
    assert_eq!(out.status, 78, "{out:?}");
    assert!(out.stderr.contains("jobs.x.ping-url"), "{}", out.stderr);
    assert!(
        !format!("{}{}", out.stdout, out.stderr).contains(KEYS[3]),
        "{}",
        out.stderr
    );
}
