//! Daemon events raised for real against PostgreSQL: a backup that could not start (run-on
//! refusing on a primary, told once until the job runs here again, across a restart too; its
//! database unreachable),
//! a run refused by the fleet lease another host holds (two daemons sharing a Redis), and an
//! offsite target that keeps failing (an endpoint where nothing listens), each to
//! `[daemon] notify`.

use crate::alerts_support::{
    HttpServer, closed_port, events, kinds, outbox_drained, wait_events, webhook,
};
use std::time::Duration;

use crate::backup_support::{Fixture, run_job, wait_past_second_of};
use crate::core_support::{ctl_json, job, start_run};
use crate::fleet_support::{Fleet, Via};
use crate::harness::{set_mode, toml_path, wait_until};

#[test]
fn a_backup_that_could_not_start_is_a_daemon_event() {
    let fx = Fixture::new();
    let http = HttpServer::start(fx.dir.path());
    let mut daemon = fx
        .daemon(&format!(
            "{}[jobs.standby]\nkind = \"backup\"\nrun-on = \"replica\"\n\
             [jobs.lost]\nkind = \"backup\"\nrun-on = \"primary\"\ndbname = \"no_such_db\"\n",
            webhook("ops", http.port, "REFUSED")
        ))
        .set("daemon", "notify", "[\"ops\"]")
        .spawn();
    // Refused by run-on twice, and again after a restart: told once.
    assert_eq!(run_job(&daemon, "standby")["outcome"], "skipped");
    assert_eq!(run_job(&daemon, "standby")["outcome"], "skipped");
    daemon.restart();
    assert_eq!(run_job(&daemon, "standby")["outcome"], "skipped");
    assert_eq!(run_job(&daemon, "lost")["outcome"], "failed");
    let got = wait_events(&http, "REFUSED", 2, &daemon);
    outbox_drained(fx.dir.path());
    let got_all = events(&http, "REFUSED");
    assert_eq!(
        kinds(&got_all),
        ["start_refused standby", "start_refused lost"],
        "{got_all:#?}"
    );
    let standby = got[0]["message"].as_str().unwrap();
    assert_eq!(got[0]["severity"], "warning");
    assert!(got[0]["title"].as_str().unwrap().contains("(run-on)"));
    assert!(
        standby.contains("run-on = replica, but ") && standby.contains(" is a primary"),
        "{standby}"
    );
    assert_eq!(got[1]["severity"], "critical");
    assert!(got[1]["title"].as_str().unwrap().contains("(connection)"));
    let lost = got[1]["message"].as_str().unwrap();
    assert!(lost.contains("no_such_db"), "the server's reason: {lost}");
}

#[test]
fn an_offsite_target_that_keeps_failing_is_a_daemon_event() {
    let fx = Fixture::new();
    fx.sql("CREATE TABLE t AS SELECT g AS n FROM generate_series(1, 100) g");
    let http = HttpServer::start(fx.dir.path());
    let credentials = fx.dir.path().join("s3.credentials");
    std::fs::write(
        &credentials,
        "[default]\naws_access_key_id = KEYID\naws_secret_access_key = S3SECRETKEY\n",
    )
    .unwrap();
    set_mode(&credentials, 0o600);
    let target = format!(
        "[offsite.down]\nendpoint = \"http://127.0.0.1:{}\"\nregion = \"garage\"\nbucket = \"b\"\n\
         prefix = \"p\"\ncredentials-file = {}\nallow-plaintext = true\nretries = 0\n\
         retry-timeout = \"1s\"\nrequest-timeout = \"2s\"\n",
        closed_port(),
        toml_path(&credentials)
    );
    let daemon = fx
        .daemon(&format!(
            "{}{target}[jobs.nightly]\nkind = \"backup\"\noffsite = \"down\"\n",
            webhook("ops", http.port, "OFFSITE")
        ))
        .set("daemon", "notify", "[\"ops\"]")
        .set("daemon", "offsite-fail-after", "2")
        .spawn();
    // The first failed copy is not yet "keeps failing"; the second is.
    let first = run_job(&daemon, "nightly");
    assert_eq!(first["outcome"], "succeeded", "{first:#}");
    assert!(
        first["message"].as_str().unwrap().contains("FAILED"),
        "{first:#}"
    );
    outbox_drained(fx.dir.path());
    assert!(events(&http, "OFFSITE").is_empty());
    wait_past_second_of(first["details"]["id"].as_str().unwrap());
    assert_eq!(run_job(&daemon, "nightly")["outcome"], "succeeded");
    let got = wait_events(&http, "OFFSITE", 1, &daemon);
    assert_eq!(kinds(&got), ["offsite_failing nightly"], "{got:#?}");
    assert_eq!(got[0]["severity"], "critical");
    assert_eq!(got[0]["failures"], 2);
    let text = got[0]["message"].as_str().unwrap();
    assert!(
        text.contains("offsite target down failed in 2 run(s) in a row"),
        "{text}"
    );
    assert!(text.contains("Last failure: "), "{text}");
    assert!(
        !text.contains("S3SECRETKEY") && !text.contains("KEYID"),
        "{text}"
    );
}

#[test]
fn a_run_refused_by_the_fleet_lease_is_a_daemon_event_once() {
    let receiver = crate::harness::tempdir();
    let http = &HttpServer::start(receiver.path());
    let fleet = Fleet::start_with(
        Via::Redis,
        2,
        "2s",
        &job("long", &["sleep", "3"], ""),
        |i, b| {
            b.toml(&webhook("ops", http.port, &format!("LEASE{i}")))
                .set("daemon", "notify", "[\"ops\"]")
        },
    );
    let (h1, h2) = (&fleet.hosts[0], &fleet.hosts[1]);
    // A fresh Redis has no record of the job: no host may take it for one ttl.
    let warm = wait_until(Duration::from_secs(30), || {
        run_job(h1, "long")["outcome"] == "succeeded"
    });
    assert!(
        warm,
        "h1 runs the job once the first ttl passed: {}",
        h1.log()
    );
    start_run(h1, "long");
    let held = wait_until(Duration::from_secs(10), || {
        ctl_json(h1, &["status"])
            .to_string()
            .contains("\"held\":true")
    });
    assert!(held, "h1 holds the lease: {}", h1.log());
    for _ in 0..2 {
        let refused = run_job(h2, "long");
        assert_eq!(refused["outcome"], "skipped", "{refused:#}");
        assert!(
            refused["message"]
                .as_str()
                .unwrap()
                .starts_with("held by h1"),
            "{refused:#}"
        );
    }
    let got = wait_events(http, "LEASE2", 1, h2);
    outbox_drained(&fleet.host_dir(2));
    assert_eq!(
        kinds(&events(http, "LEASE2")),
        ["start_refused long"],
        "told once: {got:#?}"
    );
    assert!(
        got[0]["title"].as_str().unwrap().contains("(lease)"),
        "{got:#?}"
    );
    assert!(
        got[0]["message"].as_str().unwrap().contains("held by h1"),
        "{got:#?}"
    );
}
