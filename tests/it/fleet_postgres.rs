//! Fleet-safe scheduling through PostgreSQL advisory locks: three daemons take each tick once
//! and never overlap; the lock of a holder killed with -9 is freed when its connection closes
//! and a survivor takes the next tick; a lock connection that dies cancels the run.

use std::time::Duration;

use chrono::Utc;
use nix::sys::signal::Signal;

use crate::core_support::{start_run, wait_for_run};
use crate::fleet_support::{
    Fleet, Via, assert_no_overlap, judge_each_tick_once, ran, slow_job, three_hosts_taking_ticks,
    time,
};
use crate::harness::wait_until;

/// The host holding an advisory lock now, from the lock connection's application_name.
fn lock_holder(fleet: &Fleet) -> Option<String> {
    let out = fleet.fx.pg.psql(
        "postgres",
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted",
    );
    out.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("atpred:"))
        .map(str::to_owned)
}

#[test]
fn each_tick_runs_once_on_three_hosts() {
    let mut fleet = three_hosts_taking_ticks(Via::Postgres);
    fleet.stop_all();
    judge_each_tick_once(&fleet);
}

#[test]
fn kill_9_of_the_holder_frees_the_lock_for_the_next_tick() {
    let mut fleet = Fleet::start(Via::Postgres, 3, "3s", &slow_job("slow", "3s", 4));
    let mut holder = None;
    assert!(
        wait_until(Duration::from_secs(30), || {
            holder = lock_holder(&fleet);
            holder.is_some()
        }),
        "no host took the lock:\n{}",
        fleet.logs()
    );
    let victim = holder.unwrap_or_default();
    let index: usize = victim[1..].parse().expect("hN");
    fleet.hosts[index - 1].signal(Signal::SIGKILL);
    let killed = Utc::now();
    assert!(
        fleet.hosts[index - 1]
            .wait_exit(Duration::from_secs(10))
            .is_some()
    );
    assert!(
        wait_until(Duration::from_secs(15), || lock_holder(&fleet).as_deref()
            != Some(victim.as_str())),
        "the killed holder's lock was not freed"
    );
    let survivor_ran = |fleet: &Fleet| {
        ran(&fleet.records("slow"))
            .into_iter()
            .filter(|(h, r)| *h != victim && time(&r["details"]["lease"]["taken"]) > killed)
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(Duration::from_secs(30), || !survivor_ran(&fleet).is_empty()),
        "no survivor took a later tick:\n{}",
        fleet.logs()
    );
    fleet.stop_all();
    assert_no_overlap(&ran(&fleet.records("slow")));
}

#[test]
fn a_dead_lock_connection_cancels_the_run() {
    let fleet = Fleet::start(
        Via::Postgres,
        1,
        "3s",
        "[jobs.slow]\nkind = \"command\"\ncommand = [\"sleep\", \"30\"]\ntimeout = \"1m\"\n",
    );
    let run_id = start_run(&fleet.hosts[0], "slow");
    assert!(wait_until(Duration::from_secs(15), || lock_holder(&fleet).is_some()));
    fleet.fx.pg.psql(
        "postgres",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'atpred:h1'",
    );
    let record = wait_for_run(&fleet.hosts[0], "slow", &run_id);
    assert_eq!(record["outcome"], "cancelled", "{record:#}");
    let message = record["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("lease lost: the PostgreSQL lock connection"),
        "{message:?}"
    );
    assert!(record["duration_ms"].as_u64().unwrap_or(u64::MAX) < 25_000);
}
