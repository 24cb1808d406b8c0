//! The restore drill of a Redis backup: the RDB loaded by a scratch redis-server that listens
//! on a private Unix socket only (`--port 0`, the socket 0700 in a 0700 folder), then its
//! `INFO keyspace` compared per database with the counts taken at backup time, and the sampled
//! keys looked up (type and absolute expiry).
//!
//! The scratch server is started as a replica of a TCP port the daemon holds and never
//! answers: a replica keeps keys whose TTL has passed (it leaves expiry to its master), so the
//! counts are the snapshot's however long ago it was taken, and no sync ever replaces the data.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use redis::IntoConnectionInfo;
use redis::aio::MultiplexedConnection;
use sha2::{Digest, Sha256};

use super::RedisFacts;
use super::check::RDB;
use super::observe::{self, DbKeys, Keyspace, SampledKey};
use crate::config::VerifyLevel;
use crate::jobs::backup::manifest::Manifest;
use crate::jobs::backup::stream::hex;
use crate::jobs::backup::verify::{Found, VerifyEnv};
use crate::process::{self, ProcessSpec};
use crate::restore::evidence::Loaded;

const LOAD_TIMEOUT: Duration = Duration::from_secs(600);
const POLL: Duration = Duration::from_millis(100);
const SCAN_COUNT: usize = 1000;

/// Loads `folder/dump.rdb` into a scratch server and compares; the summary of what matched
/// and what was loaded (for the drill's evidence).
pub(super) async fn drill(
    env: &VerifyEnv<'_>,
    folder: &Path,
    m: &Manifest,
) -> Result<(String, Loaded), Found> {
    let level = VerifyLevel::Restore;
    let problem = |e: String| Found::Problem(level, e);
    let facts = m
        .redis
        .as_ref()
        .ok_or_else(|| problem("the manifest has no redis facts".into()))?;
    // Held until the drill ends: the scratch server's "master" that never answers.
    let master = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| problem(format!("binding the scratch server's master port: {e}")))?;
    let port = master
        .local_addr()
        .map_err(|e| problem(e.to_string()))?
        .port();
    let socket = folder.join("redis.sock");
    let log = folder.join("redis.log");
    let spec = ProcessSpec::new("redis-server")
        .args(["--port", "0", "--unixsocket"])
        .args([&socket])
        .args(["--unixsocketperm", "700", "--dir"])
        .args([folder])
        .args(["--dbfilename", RDB, "--save", "", "--appendonly", "no"])
        .args(["--daemonize", "no", "--logfile"])
        .args([&log])
        .args(["--replicaof", "127.0.0.1", &port.to_string()]);
    let running = process::spawn(&spec)
        .map_err(|e| problem(format!("{e}; install redis-server for restore drills")))?;
    let stop = env.cancel.child_token();
    let server = running.wait(&stop, |_, _| {});
    tokio::pin!(server);
    let work = compare(&socket, facts);
    tokio::pin!(work);
    let result = tokio::select! {
        r = &mut work => r.map_err(problem),
        exited = &mut server => {
            let why = match exited {
                Err(process::ProcessError::Cancelled) => return Err(Found::Cancelled),
                Err(e) => e.to_string(),
                Ok(out) => process::describe_status(&out.status),
            };
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(3).collect();
            return Err(problem(format!(
                "the scratch redis-server exited ({why}) while loading the RDB: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )));
        }
        () = env.cancel.cancelled() => Err(Found::Cancelled),
    };
    stop.cancel();
    let _ = server.await;
    drop(master);
    result
}

async fn compare(socket: &Path, facts: &RedisFacts) -> Result<(String, Loaded), String> {
    let mut conn = loaded(socket).await?;
    let text: String = redis::cmd("INFO")
        .arg("keyspace")
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("INFO keyspace on the scratch server: {e}"))?;
    let got = observe::parse_keyspace(&text);
    let problems = compare_counts(&facts.keyspace, &facts.keyspace_after, &got);
    if !problems.is_empty() {
        return Err(format!(
            "key counts differ after loading the RDB: {}",
            problems.join("; ")
        ));
    }
    let (matched, expired) = check_sample(&mut conn, &facts.sample).await?;
    let keys: u64 = got.values().map(|d| d.keys).sum();
    let loaded = Loaded::Redis {
        databases: got.len(),
        keys,
    };
    let summary = format!(
        "loaded into a scratch redis-server: {keys} keys in {} database(s), every count matches \
         INFO keyspace at backup time; {matched} sampled key(s) match in type and expiry{}",
        got.len(),
        if expired > 0 {
            format!(" ({expired} expired since)")
        } else {
            String::new()
        }
    );
    Ok((summary, loaded))
}

/// A connection once the server has loaded the RDB (it answers LOADING until then).
async fn loaded(socket: &Path) -> Result<MultiplexedConnection, String> {
    let deadline = Instant::now() + LOAD_TIMEOUT;
    let mut last = String::new();
    while Instant::now() < deadline {
        match ping(socket).await {
            Ok(conn) => return Ok(conn),
            Err(e) => last = e,
        }
        tokio::time::sleep(POLL).await;
    }
    Err(format!(
        "the scratch redis-server did not finish loading within {LOAD_TIMEOUT:?}: {last}"
    ))
}

async fn ping(socket: &Path) -> Result<MultiplexedConnection, String> {
    let info = redis::ConnectionAddr::Unix(socket.to_owned())
        .into_connection_info()
        .map_err(|e| e.to_string())?;
    let client = redis::Client::open(info).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

/// Each database's loaded count must lie between the counts before and after the transfer
/// (equal when nothing was written meanwhile).
pub(super) fn compare_counts(before: &Keyspace, after: &Keyspace, got: &Keyspace) -> Vec<String> {
    let dbs: BTreeSet<u32> = before
        .keys()
        .chain(after.keys())
        .chain(got.keys())
        .copied()
        .collect();
    let keys = |ks: &Keyspace, db| ks.get(&db).map_or(0, |d: &DbKeys| d.keys);
    dbs.into_iter()
        .filter_map(|db| {
            let (b, a, g) = (keys(before, db), keys(after, db), keys(got, db));
            let (lo, hi) = (b.min(a), b.max(a));
            (g < lo || g > hi).then(|| {
                if lo == hi {
                    format!("db{db}: {g} keys loaded, INFO keyspace said {b} at backup time")
                } else {
                    format!(
                        "db{db}: {g} keys loaded, INFO keyspace said {b} before and {a} after the transfer"
                    )
                }
            })
        })
        .collect()
}

/// Finds every sampled key by SCAN (the manifest has their hashes only) and compares type and
/// expiry. Returns (matched, expired since the backup).
async fn check_sample(
    conn: &mut MultiplexedConnection,
    sample: &[SampledKey],
) -> Result<(usize, usize), String> {
    let mut by_db: BTreeMap<u32, Vec<&SampledKey>> = BTreeMap::new();
    for s in sample {
        by_db.entry(s.db).or_default().push(s);
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    let (mut matched, mut expired) = (0, 0);
    for (db, wanted) in by_db {
        let found = find(conn, db, &wanted).await?;
        for s in wanted {
            let Some(key) = found.get(&s.key_sha256) else {
                if s.expire_at_ms.is_some_and(|at| at <= now_ms) {
                    expired += 1;
                    continue;
                }
                return Err(format!(
                    "a sampled key of db{db} ({}, sha256 {}) is not in the RDB",
                    s.kind, s.key_sha256
                ));
            };
            let now = observe::look(conn, db, key).await?;
            if now.kind != s.kind {
                return Err(format!(
                    "a sampled key of db{db} (sha256 {}) is a {} in the RDB, was a {}",
                    s.key_sha256, now.kind, s.kind
                ));
            }
            if s.ttl_known && now.ttl_known && now.expire_at_ms != s.expire_at_ms {
                return Err(format!(
                    "a sampled key of db{db} (sha256 {}) expires at {:?} ms in the RDB, was {:?}",
                    s.key_sha256, now.expire_at_ms, s.expire_at_ms
                ));
            }
            matched += 1;
        }
    }
    Ok((matched, expired))
}

/// The names of the keys of `db` whose hashes are wanted.
async fn find(
    conn: &mut MultiplexedConnection,
    db: u32,
    wanted: &[&SampledKey],
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    observe::select(conn, db).await?;
    let hashes: BTreeSet<&str> = wanted.iter().map(|s| s.key_sha256.as_str()).collect();
    let mut found = BTreeMap::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query_async(conn)
            .await
            .map_err(|e| format!("SCAN on the scratch server: {e}"))?;
        for key in keys {
            let h = hex(&Sha256::digest(&key));
            if hashes.contains(h.as_str()) {
                found.insert(h, key);
            }
        }
        if next == 0 || found.len() == hashes.len() {
            return Ok(found);
        }
        cursor = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ks(pairs: &[(u32, u64)]) -> Keyspace {
        pairs
            .iter()
            .map(|&(db, keys)| (db, DbKeys { keys, expires: 0 }))
            .collect()
    }

    #[test]
    fn counts_must_lie_between_the_two_looks() {
        let before = ks(&[(0, 10), (3, 4)]);
        assert!(compare_counts(&before, &before, &before).is_empty());
        let short = compare_counts(&before, &before, &ks(&[(0, 10), (3, 3)]));
        assert_eq!(
            short,
            ["db3: 3 keys loaded, INFO keyspace said 4 at backup time"]
        );
        let extra = compare_counts(&before, &before, &ks(&[(0, 10), (3, 4), (5, 1)]));
        assert_eq!(extra.len(), 1, "{extra:?}");
        let after = ks(&[(0, 12), (3, 4)]);
        assert!(compare_counts(&before, &after, &ks(&[(0, 11), (3, 4)])).is_empty());
        assert_eq!(
            compare_counts(&before, &after, &ks(&[(0, 13), (3, 4)])).len(),
            1
        );
    }
}
