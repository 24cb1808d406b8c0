//! The lease backends driven in-process against the real servers: the slot rule (a late
//! acquirer of a tick already taken and released is refused), the PostgreSQL holder's name
//! read from pg_locks, and the coordination overhead per run (acquire + release), printed.

use std::path::Path;
use std::time::Instant;

use atpred::config::Config;
use atpred::coordination::{self, Acquired, Claim, Lease};
use chrono::{DateTime, Utc};

use crate::backup_support::{DB, Fixture, PASSWORD, ROLE};
use crate::harness::{Daemon, RedisServer, toml_str};

const ROUNDS: usize = 40;

fn config(dir: &Path, name: &str, builder: crate::harness::DaemonBuilder, backend: &str) -> Config {
    let path = builder
        .name(name)
        .set("coordination", "backend", toml_str(backend))
        .set("coordination", "ttl", toml_str("3s"))
        .set("coordination", "host", toml_str(name))
        .toml("[jobs.j]\nkind = \"command\"\ncommand = [\"true\"]\n")
        .write_config();
    assert!(path.starts_with(dir));
    Config::load_with_env(&path, &[]).expect("the test config loads")
}

fn claim(slot: Option<DateTime<Utc>>) -> Claim {
    Claim {
        job: "j".parse().unwrap(),
        run_id: atpred::ids::RunId::new(Utc::now()),
        slot,
    }
}

async fn take(config: &Config, slot: Option<DateTime<Utc>>) -> Result<Lease, coordination::Holder> {
    let job = &config.jobs[&"j".parse().unwrap()];
    match coordination::acquire(config, job, &claim(slot))
        .await
        .expect("backend reachable")
    {
        Acquired::Held(l) => Ok(l),
        Acquired::Refused(h) => Err(h),
    }
}

/// Median and 90th percentile of `ROUNDS` acquire + release round trips, in ms.
async fn overhead(config: &Config) -> (f64, f64) {
    let mut ms = Vec::new();
    for _ in 0..ROUNDS {
        let t0 = Instant::now();
        let lease = take(config, None).await.expect("free");
        lease.release().await;
        ms.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    (ms[ROUNDS / 2], ms[ROUNDS * 9 / 10])
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn redis_refuses_a_late_acquirer_of_a_tick_already_taken() {
    let dir = crate::harness::tempdir();
    let redis = RedisServer::start();
    let h1 = config(
        dir.path(),
        "h1",
        Daemon::builder(dir.path()).redis(&redis),
        "redis",
    );
    let h2 = config(
        dir.path(),
        "h2",
        Daemon::builder(dir.path()).redis(&redis),
        "redis",
    );
    runtime().block_on(async {
        let slot = DateTime::from_timestamp(1_800_000_000, 0);
        let first = take(&h1, slot).await;
        let refused = first.err().expect("a fleet's first acquisition waits one ttl");
        assert!(refused.describe().contains("no record"), "{}", refused.describe());
        redis.cmd(&["DEL", "atpred:lease:j"]);

        let lease = take(&h1, slot).await.expect("h1 takes the tick");
        let token = lease.fencing_token().expect("redis leases have tokens");
        let held = take(&h2, slot).await.err().expect("held");
        assert_eq!(held.host, "h1");
        lease.release().await;
        let late = take(&h2, slot).await.err().expect("h2 fired late: the tick is taken");
        assert_eq!((late.host.as_str(), late.tick), ("h1", slot), "{}", late.describe());
        assert!(late.describe().starts_with("held by h1 (tick "), "{}", late.describe());

        let next = slot.map(|s| s + chrono::Duration::seconds(60));
        let lease = take(&h2, next).await.expect("the next tick is free");
        assert!(lease.fencing_token() > Some(token));
        lease.release().await;
        let last = redis.cmd(&["GET", "atpred:last:j"]).as_text().unwrap_or_default();
        assert!(last.starts_with("h2 "), "{last}");

        let (median, p90) = overhead(&h1).await;
        eprintln!("fleet_lease: redis acquire+release: median {median:.2} ms, p90 {p90:.2} ms ({ROUNDS} rounds)");
    });
}

#[test]
fn postgres_names_the_holder_and_frees_on_release() {
    let fx = Fixture::new();
    let dir = fx.dir.path();
    let builder = |n: &str| {
        Daemon::builder(dir)
            .name(n)
            .postgres(&fx.pg, ROLE, PASSWORD, DB)
    };
    let h1 = config(dir, "h1", builder("h1"), "postgres");
    let h2 = config(dir, "h2", builder("h2"), "postgres");
    runtime().block_on(async {
        let lease = take(&h1, None).await.expect("free");
        assert_eq!(lease.fencing_token(), None);
        let held = take(&h2, None).await.err().expect("held by h1");
        assert_eq!(held.describe(), "held by h1");
        lease.release().await;
        let lease = take(&h2, None).await.expect("released");
        lease.release().await;

        let (median, p90) = overhead(&h1).await;
        eprintln!(
            "fleet_lease: postgres acquire+release (new connection each run): median {median:.2} ms, p90 {p90:.2} ms ({ROUNDS} rounds)"
        );
    });
}
