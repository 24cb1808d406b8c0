//! `run-on`: a backup job checks `pg_is_in_recovery()` on its source before dumping; the wrong
//! kind of server records the tick as skipped (not failed), and a hot standby made with
//! `pg_basebackup -R` is backed up (snapshot exported on the standby) and verified. An HA pair
//! sharing a Redis lease backs up from the replica's host only: `run-on` is asked before the
//! lease, so the primary's host never takes the tick from it.

use std::time::Duration;

use crate::backup_support::{DB, Fixture, PASSWORD, ROLE, run_job};
use crate::harness::{Daemon, PgServer, RedisServer, toml_str, wait_until};

const JOBS: &str = "[jobs.from-replica]\nkind = \"backup\"\nrun-on = \"replica\"\nverify = \"full\"\n\
                    [jobs.from-primary]\nkind = \"backup\"\nrun-on = \"primary\"\nverify = \"checksum\"\n";

#[test]
fn run_on_picks_the_server_kind_and_skips_the_other() {
    let fx = Fixture::new();
    fx.create_small_schema();
    let replica = PgServer::start_replica(&fx.pg);
    assert_eq!(replica.psql(DB, "SELECT pg_is_in_recovery()").trim(), "t");
    let dir = fx.dir.path();
    std::fs::create_dir_all(dir.join("p")).unwrap();
    std::fs::create_dir_all(dir.join("r")).unwrap();
    let on_primary = Daemon::builder(dir.join("p"))
        .postgres(&fx.pg, ROLE, PASSWORD, DB)
        .toml(JOBS)
        .spawn();
    let on_replica = Daemon::builder(dir.join("r"))
        .postgres(&replica, ROLE, PASSWORD, DB)
        .toml(JOBS)
        .spawn();

    let skipped = run_job(&on_primary, "from-replica");
    assert_eq!(skipped["outcome"], "skipped", "{skipped:#}");
    let expected = format!(
        "run-on = replica, but {}:{} is a primary",
        fx.pg.socket_dir().display(),
        fx.pg.port()
    );
    assert_eq!(skipped["message"], expected.as_str());
    assert_eq!(run_job(&on_primary, "from-primary")["outcome"], "succeeded");

    let from_standby = run_job(&on_replica, "from-replica");
    assert_eq!(
        from_standby["outcome"],
        "succeeded",
        "{from_standby:#}\n{}",
        on_replica.log()
    );
    assert!(
        std::fs::read_dir(dir.join("r/backups"))
            .unwrap()
            .flatten()
            .any(|e| e.path().join("manifest.json").is_file()),
        "a verified backup of the standby"
    );
    let wrong = run_job(&on_replica, "from-primary");
    assert_eq!(wrong["outcome"], "skipped", "{wrong:#}");
    assert!(
        wrong["message"].as_str().is_some_and(
            |m| m.starts_with("run-on = primary, but ") && m.ends_with(" is a replica")
        ),
        "{wrong:#}"
    );
}

#[test]
fn coordination_config_errors_name_key_and_line() {
    let dir = crate::harness::tempdir();
    let cases = [
        (
            "[coordination]\nbackend = \"zookeeper\"\n",
            "coordination.backend",
            "backend = ",
        ),
        (
            "[jobs.h]\nkind = \"health\"\nchecks = [\"redis\"]\ncoordinate = false\n",
            "jobs.h.coordinate",
            "coordinate = ",
        ),
    ];
    for (toml, key, line_start) in cases {
        let builder = Daemon::builder(dir.path()).toml(toml);
        let line = 1 + builder
            .render()
            .lines()
            .position(|l| l.starts_with(line_start))
            .expect("the key is in the file");
        let at = format!("atpred.toml:{line}:");
        let out = builder.check();
        assert_eq!(out.status, 78, "{toml}: {out:?}");
        assert!(
            out.stderr.contains(key) && out.stderr.contains(&at),
            "{toml}: {}",
            out.stderr
        );
    }
}

#[test]
fn an_ha_pair_backs_up_from_the_replica_only() {
    let fx = Fixture::new();
    fx.create_small_schema();
    let replica = PgServer::start_replica(&fx.pg);
    let redis = RedisServer::start();
    let dir = fx.dir.path();
    let job = "[jobs.pair]\nkind = \"backup\"\nschedule = \"every 2s\"\nrun-on = \"replica\"\nverify = \"checksum\"\ncompress = \"none\"\n";
    let host = |name: &str, pg: &PgServer| {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        Daemon::builder(dir.join(name))
            .postgres(pg, ROLE, PASSWORD, DB)
            .redis(&redis)
            .set("coordination", "backend", toml_str("redis"))
            .set("coordination", "ttl", toml_str("3s"))
            .set("coordination", "host", toml_str(name))
            .toml(job)
            .spawn()
    };
    let primary_host = host("a", &fx.pg);
    let replica_host = host("b", &replica);
    let runs = |d: &Daemon| crate::core_support::history(d, Some("pair"));
    assert!(
        wait_until(Duration::from_secs(60), || {
            runs(&replica_host)
                .iter()
                .filter(|r| r["outcome"] == "succeeded")
                .count()
                >= 3
        }),
        "the replica's host took no 3 ticks:\n{}",
        replica_host.log()
    );
    let on_primary = runs(&primary_host);
    assert!(!on_primary.is_empty());
    for r in &on_primary {
        assert_eq!(r["outcome"], "skipped", "{r:#}");
        assert!(
            r["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("run-on = replica, but ")),
            "{r:#}"
        );
    }
    // The primary's host never took the lease: every lease record is the replica host's.
    let last = redis
        .cmd(&["GET", "atpred:last:pair"])
        .as_text()
        .unwrap_or_default();
    assert!(last.starts_with("b "), "{last}");
}
