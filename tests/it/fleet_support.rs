//! What the fleet tests share: several daemons (`h1`, `h2`, …, each with its own state dir,
//! socket and backup dir) coordinating through one Redis or one PostgreSQL, and the judges of
//! what they did: run records read from each host's `history.jsonl` (so a killed daemon's
//! records count too), verified backups counted on disk, run intervals compared by instants.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::backup_support::{DB, Fixture, PASSWORD, ROLE};
use crate::harness::{Daemon, RedisServer, toml_str};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Via {
    Redis,
    Postgres,
}

/// One PostgreSQL (the `atp_app` database of `atp_user`), maybe one Redis, and the daemons.
pub struct Fleet {
    pub fx: Fixture,
    pub redis: Option<RedisServer>,
    pub hosts: Vec<Daemon>,
}

impl Fleet {
    /// Starts `n` daemons coordinating via `via` with lease `ttl`, each running `jobs`.
    pub fn start(via: Via, n: usize, ttl: &str, jobs: &str) -> Fleet {
        Fleet::start_with(via, n, ttl, jobs, |_, b| b)
    }

    /// Like [`Fleet::start`], each host's builder (host `i`, from 1) passed through `host`.
    pub fn start_with(
        via: Via,
        n: usize,
        ttl: &str,
        jobs: &str,
        host: impl Fn(usize, crate::harness::DaemonBuilder) -> crate::harness::DaemonBuilder,
    ) -> Fleet {
        let fx = Fixture::new();
        fx.create_small_schema();
        let redis = (via == Via::Redis).then(RedisServer::start);
        let mut fleet = Fleet {
            fx,
            redis,
            hosts: Vec::new(),
        };
        for i in 1..=n {
            let daemon = host(i, fleet.builder(via, i, ttl, jobs)).spawn();
            fleet.hosts.push(daemon);
        }
        fleet
    }

    fn builder(&self, via: Via, i: usize, ttl: &str, jobs: &str) -> crate::harness::DaemonBuilder {
        let dir = self.host_dir(i);
        std::fs::create_dir_all(&dir).expect("create the host's directory");
        let backend = match via {
            Via::Redis => "redis",
            Via::Postgres => "postgres",
        };
        let mut b = Daemon::builder(&dir)
            .postgres(&self.fx.pg, ROLE, PASSWORD, DB)
            .set("coordination", "backend", toml_str(backend))
            .set("coordination", "ttl", toml_str(ttl))
            .set("coordination", "host", toml_str(&host(i)))
            .toml(jobs);
        if let Some(r) = &self.redis {
            b = b.redis(r);
        }
        b
    }

    pub fn host_dir(&self, i: usize) -> PathBuf {
        self.fx.dir.path().join(host(i))
    }

    /// Every run record of `job` on every host, as (host, record), oldest first per host.
    pub fn records(&self, job: &str) -> Vec<(String, Value)> {
        (1..=self.hosts.len())
            .flat_map(|i| {
                read_history(&self.host_dir(i).join("state/history.jsonl"))
                    .into_iter()
                    .filter(|r| r["job"] == job)
                    .map(move |r| (host(i), r))
            })
            .collect()
    }

    /// Verified backups (published folders with a manifest) of all hosts.
    pub fn verified_backups(&self) -> usize {
        (1..=self.hosts.len())
            .map(|i| {
                std::fs::read_dir(self.host_dir(i).join("backups"))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .filter(|e| e.path().join("manifest.json").is_file())
                    .count()
            })
            .sum()
    }

    /// SIGTERM to every daemon still running; waits for each to exit.
    pub fn stop_all(&mut self) {
        for d in &mut self.hosts {
            if d.is_running() {
                d.signal(Signal::SIGTERM);
                assert!(
                    d.wait_exit(Duration::from_secs(30)).is_some(),
                    "a daemon did not stop"
                );
            }
        }
    }

    /// The log tails of every host, for a failure message.
    pub fn logs(&self) -> String {
        self.hosts
            .iter()
            .enumerate()
            .map(|(i, d)| {
                format!(
                    "===== {} =====\n{}",
                    host(i + 1),
                    crate::harness::tail(&d.log(), 40)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

pub fn host(i: usize) -> String {
    format!("h{i}")
}

fn read_history(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

pub fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .with_timezone(&Utc)
}

/// The slot a coordinated run was for.
pub fn slot(r: &Value) -> Option<String> {
    r["details"]["lease"]["slot"].as_str().map(str::to_owned)
}

/// Runs that did their job (took the lease and ran), whatever the outcome.
pub fn ran(records: &[(String, Value)]) -> Vec<(String, Value)> {
    records
        .iter()
        .filter(|(_, r)| r["details"]["lease"]["held"] == true)
        .cloned()
        .collect()
}

/// Panics if two runs that held the lease overlap in time (started..finished).
pub fn assert_no_overlap(runs: &[(String, Value)]) {
    let mut spans: Vec<(DateTime<Utc>, DateTime<Utc>, &str, &Value)> = runs
        .iter()
        .map(|(h, r)| (time(&r["started"]), time(&r["finished"]), h.as_str(), r))
        .collect();
    spans.sort_by_key(|s| s.0);
    for w in spans.windows(2) {
        assert!(
            w[0].1 <= w[1].0,
            "runs overlap: {} {:#} and {} {:#}",
            w[0].2,
            w[0].3,
            w[1].2,
            w[1].3
        );
    }
}

/// Groups `records` by slot: slot -> (host, record).
pub fn by_slot(records: &[(String, Value)]) -> BTreeMap<String, Vec<(String, Value)>> {
    let mut map: BTreeMap<String, Vec<(String, Value)>> = BTreeMap::new();
    for (h, r) in records {
        if let Some(s) = slot(r) {
            map.entry(s).or_default().push((h.clone(), r.clone()));
        }
    }
    map
}

/// Checks every slot that all `hosts` recorded: exactly one host ran it and succeeded, every
/// other one skipped it as "held by <a host of the fleet>…" (nearly always the winner; the
/// previous slot's holder when that run ended just as this tick fired); and no slot ever ran
/// twice. Returns the number of such complete slots.
pub fn assert_each_tick_once(records: &[(String, Value)], hosts: usize) -> usize {
    let mut complete = 0;
    for (slot, recs) in by_slot(records) {
        let ran: Vec<_> = recs
            .iter()
            .filter(|(_, r)| r["details"]["lease"]["held"] == true)
            .collect();
        assert!(
            ran.len() <= 1,
            "slot {slot} ran {} times: {recs:#?}",
            ran.len()
        );
        if recs.len() < hosts || ran.is_empty() {
            continue;
        }
        let (winner, run) = ran[0];
        assert_eq!(run["outcome"], "succeeded", "slot {slot}: {run:#}");
        for (h, r) in recs.iter().filter(|(h, _)| h != winner) {
            assert_eq!(r["outcome"], "skipped", "slot {slot} on {h}: {r:#}");
            let msg = r["message"].as_str().unwrap_or_default();
            let named = (1..=hosts).any(|i| {
                msg.starts_with(&format!("held by {} ", host(i)))
                    || msg == format!("held by {}", host(i))
            });
            assert!(
                named,
                "slot {slot} on {h}: {msg:?} should name a host (won by {winner})"
            );
        }
        complete += 1;
    }
    complete
}

/// `[jobs.NAME]`: a backup of `atp_app` every `every`, verified by checksum (quick).
pub fn backup_job(name: &str, every: &str) -> String {
    format!(
        "[jobs.{name}]\nkind = \"backup\"\nschedule = \"every {every}\"\nverify = \"checksum\"\ncompress = \"none\"\ntimeout = \"1m\"\n"
    )
}

/// `[jobs.NAME]`: a command job sleeping `secs` seconds every `every`.
pub fn slow_job(name: &str, every: &str, secs: u32) -> String {
    format!(
        "[jobs.{name}]\nkind = \"command\"\ncommand = [\"sleep\", \"{secs}\"]\nschedule = \"every {every}\"\ntimeout = \"1m\"\n"
    )
}

/// Three hosts of `via` on one `every 2s` backup job, until 21 ticks were each seen by all
/// three and taken by one.
pub fn three_hosts_taking_ticks(via: Via) -> Fleet {
    let fleet = Fleet::start(via, 3, "3s", &backup_job("tick", "2s"));
    let enough = crate::harness::wait_until(std::time::Duration::from_secs(150), || {
        by_slot(&fleet.records("tick"))
            .values()
            .filter(|v| {
                v.len() == 3 && v.iter().any(|(_, r)| r["details"]["lease"]["held"] == true)
            })
            .count()
            >= 21
    });
    assert!(enough, "fewer than 21 ticks taken:\n{}", fleet.logs());
    fleet
}

/// After [`three_hosts_taking_ticks`] and a stop: every tick taken once, no two runs at
/// once, every run a verified backup. Returns the runs.
pub fn judge_each_tick_once(fleet: &Fleet) -> Vec<(String, Value)> {
    let records = fleet.records("tick");
    let complete = assert_each_tick_once(&records, 3);
    assert!(complete >= 20, "{complete} complete ticks");
    let runs = ran(&records);
    assert_no_overlap(&runs);
    assert!(
        runs.iter().all(|(_, r)| r["outcome"] == "succeeded"),
        "{runs:#?}"
    );
    assert_eq!(
        fleet.verified_backups(),
        runs.len(),
        "one verified backup per run"
    );
    eprintln!("{complete} ticks, each taken once");
    runs
}
