//! Fleet-safe scheduling through Redis: three daemons with the same schedule take each tick
//! once, never overlap, survive the holder's kill -9 and a Redis restart without running a
//! tick twice, and a run whose lease is taken away is cancelled with the reason.

use std::time::Duration;

use chrono::Utc;
use nix::sys::signal::Signal;

use crate::core_support::{ctl_json, start_run, wait_for_run};
use crate::fleet_support::{
    Fleet, Via, assert_no_overlap, judge_each_tick_once, ran, slow_job, three_hosts_taking_ticks,
    time,
};
use crate::harness::{Resp, wait_until};

const LEASE: &str = "atpred:lease:";

fn lease_value(fleet: &Fleet, job: &str) -> Option<String> {
    let redis = fleet.redis.as_ref().expect("a redis fleet");
    match redis.try_cmd(&["GET", &format!("{LEASE}{job}")]) {
        Ok(Resp::Bulk(Some(v))) => Some(String::from_utf8_lossy(&v).into_owned()),
        _ => None,
    }
}

/// The host index (1-based) named by a lease value `hN run token`, if a host holds it.
fn holder_index(value: &str) -> Option<usize> {
    value.strip_prefix('h')?.split(' ').next()?.parse().ok()
}

#[test]
fn each_tick_runs_once_on_three_hosts() {
    let mut fleet = three_hosts_taking_ticks(Via::Redis);
    let status = ctl_json(&fleet.hosts[0], &["status"]);
    let lease = &status["leases"][0];
    assert_eq!(lease["job"], "tick", "{status:#}");
    assert!(
        lease["holder"].as_str().is_some_and(|h| h.starts_with('h')),
        "{status:#}"
    );
    let human = fleet.hosts[1].ctl(["status"]);
    assert!(
        human
            .stdout
            .lines()
            .any(|l| l.starts_with("lease") && l.contains("tick: ") && l.contains("fencing token")),
        "{}",
        human.stdout
    );
    fleet.stop_all();
    let mut runs = judge_each_tick_once(&fleet);
    // Fencing tokens grow with the slots, whoever took them.
    runs.sort_by_key(|(_, r)| time(&r["details"]["lease"]["slot"]));
    let tokens: Vec<u64> = runs
        .iter()
        .map(|(_, r)| {
            r["details"]["lease"]["fencing_token"]
                .as_u64()
                .expect("token")
        })
        .collect();
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
    let hosts: std::collections::BTreeSet<_> = runs.iter().map(|(h, _)| h.clone()).collect();
    eprintln!(
        "fleet_redis: {} runs, fencing tokens rising; runs spread over {hosts:?}",
        runs.len()
    );
}

/// The lease value of `job` once some host holds it (30 s at most).
fn wait_for_holder(fleet: &Fleet, job: &str) -> String {
    let mut value = None;
    assert!(
        wait_until(Duration::from_secs(30), || {
            value = lease_value(fleet, job).filter(|v| holder_index(v).is_some());
            value.is_some()
        }),
        "no host took the lease:\n{}",
        fleet.logs()
    );
    value.unwrap_or_default()
}

#[test]
fn kill_9_of_the_holder_frees_the_tick_only_at_expiry() {
    let mut fleet = Fleet::start(Via::Redis, 3, "6s", &slow_job("slow", "3s", 4));
    let value = wait_for_holder(&fleet, "slow");
    let victim = holder_index(&value).expect("a host");
    fleet.hosts[victim - 1].signal(Signal::SIGKILL);
    let before = Utc::now();
    let pttl = match fleet
        .redis
        .as_ref()
        .unwrap()
        .cmd(&["PTTL", &format!("{LEASE}slow")])
    {
        Resp::Integer(ms) => ms,
        other => panic!("PTTL: {other:?}"),
    };
    assert!(
        pttl > 0,
        "the killed holder's lease should still be there: {pttl}"
    );
    let expiry = before + chrono::Duration::milliseconds(pttl);
    assert!(
        fleet.hosts[victim - 1]
            .wait_exit(Duration::from_secs(10))
            .is_some()
    );
    let survivor_ran = |fleet: &Fleet| {
        ran(&fleet.records("slow"))
            .into_iter()
            .filter(|(h, r)| *h != format!("h{victim}") && time(&r["started"]) > before)
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(Duration::from_secs(40), || !survivor_ran(&fleet).is_empty()),
        "no survivor took a later tick:\n{}",
        fleet.logs()
    );
    fleet.stop_all();
    let later = survivor_ran(&fleet);
    for (h, r) in &later {
        let taken = time(&r["details"]["lease"]["taken"]);
        assert!(
            taken >= expiry,
            "{h} took the lease at {taken}, before its expiry {expiry}: {r:#}"
        );
    }
    let refused = fleet
        .records("slow")
        .into_iter()
        .filter(|(_, r)| time(&r["started"]) > before && r["outcome"] == "skipped")
        .filter(|(_, r)| {
            r["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(&format!("held by h{victim}")))
        })
        .count();
    assert!(
        refused >= 1,
        "survivors should have seen the dead holder's lease"
    );
    assert_no_overlap(&ran(&fleet.records("slow")));
}

#[test]
fn a_redis_restart_mid_run_never_runs_a_tick_twice() {
    let mut fleet = Fleet::start(Via::Redis, 3, "6s", &slow_job("slow", "3s", 5));
    let value = wait_for_holder(&fleet, "slow");
    let victim = holder_index(&value).expect("a host");
    let run_id = value.split(' ').nth(1).expect("a run id").to_owned();
    let restarted = Utc::now();
    fleet.redis.as_mut().unwrap().restart();
    let record = wait_for_run(&fleet.hosts[victim - 1], "slow", &run_id);
    let message = record["message"].as_str().unwrap_or_default();
    assert!(
        record["outcome"] == "succeeded"
            || (record["outcome"] == "cancelled" && message.starts_with("lease lost")),
        "{record:#}"
    );
    assert!(
        wait_until(Duration::from_secs(40), || {
            ran(&fleet.records("slow"))
                .iter()
                .any(|(_, r)| time(&r["details"]["lease"]["taken"]) > restarted)
        }),
        "no tick taken after the restart:\n{}",
        fleet.logs()
    );
    fleet.stop_all();
    assert_no_overlap(&ran(&fleet.records("slow")));
    eprintln!(
        "fleet_redis: the holder's run after the restart: {} {message:?}",
        record["outcome"]
    );
}

#[test]
fn a_lease_taken_away_cancels_the_run_with_the_reason() {
    let fleet = Fleet::start(
        Via::Redis,
        1,
        "3s",
        "[jobs.slow]\nkind = \"command\"\ncommand = [\"sleep\", \"30\"]\ntimeout = \"1m\"\n",
    );
    let redis = fleet.redis.as_ref().unwrap();
    // A fleet's very first acquisition waits one ttl (Redis has no record yet): seed it.
    redis.cmd(&["SET", "atpred:fence:slow", "100"]);
    let run_id = start_run(&fleet.hosts[0], "slow");
    assert!(wait_until(Duration::from_secs(15), || lease_value(
        &fleet, "slow"
    )
    .is_some()));
    redis.cmd(&[
        "SET",
        &format!("{LEASE}slow"),
        "intruder r0 999",
        "PX",
        "60000",
    ]);
    let record = wait_for_run(&fleet.hosts[0], "slow", &run_id);
    assert_eq!(record["outcome"], "cancelled", "{record:#}");
    let message = record["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("lease lost: the lease is now held by intruder"),
        "{message:?}"
    );
    assert_eq!(
        record["details"]["lease"]["fencing_token"], 101,
        "{record:#}"
    );
    assert!(
        record["details"]["lease"]["slot"].is_null(),
        "a manual run has no slot"
    );
    assert!(fleet.hosts[0].log().contains("fencing token 101"));
    // The lease is not ours any more: the release left the intruder's value alone.
    assert_eq!(
        lease_value(&fleet, "slow").as_deref(),
        Some("intruder r0 999")
    );
}

#[test]
fn redis_gone_mid_run_cancels_before_the_lease_could_expire() {
    let mut fleet = Fleet::start(
        Via::Redis,
        1,
        "3s",
        "[jobs.slow]\nkind = \"command\"\ncommand = [\"sleep\", \"30\"]\ntimeout = \"1m\"\n",
    );
    fleet
        .redis
        .as_ref()
        .unwrap()
        .cmd(&["SET", "atpred:fence:slow", "1"]);
    let run_id = start_run(&fleet.hosts[0], "slow");
    assert!(wait_until(Duration::from_secs(15), || lease_value(
        &fleet, "slow"
    )
    .is_some()));
    fleet.redis.as_mut().unwrap().stop();
    let record = wait_for_run(&fleet.hosts[0], "slow", &run_id);
    assert_eq!(record["outcome"], "cancelled", "{record:#}");
    let message = record["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("lease lost: Redis unreachable for"),
        "{message:?}"
    );
    // A backend that cannot be asked at the start fails the run: never uncoordinated.
    let failed = crate::backup_support::run_job(&fleet.hosts[0], "slow");
    assert_eq!(failed["outcome"], "failed", "{failed:#}");
    let message = failed["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("coordination backend redis unreachable: ")
            && message.ends_with("never runs uncoordinated)"),
        "{message:?}"
    );
}
