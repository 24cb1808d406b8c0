//! `atprectl restore ID --redis-dir DIR`: the RDB staged beside a fresh server's dump.rdb with
//! that file's owner and mode, and the printed steps — stop, move, AOF off, start, AOF on —
//! followed to the letter give the same keys (values, types, expiries), from the RDB and then
//! from the AOF Redis rewrote.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use crate::backup_support::{backup_ok, ctl, quote, shell};
use crate::harness::{self, RedisServer};
use crate::redis_support::{PASSWORD, RedisFixture, assert_same_keys, dataset};

#[test]
fn redis_restore_into_a_fresh_server_through_the_printed_steps_gives_the_same_keys() {
    let fx = RedisFixture::new(true);
    fx.populate();
    let daemon = fx.daemon("verify = \"full\"").spawn();
    let id = backup_ok(&daemon, "cache");
    let want = dataset(&fx.redis);
    assert!(want.len() > 600, "{}", want.len());

    // A fresh server with AOF on and data of its own in a dump.rdb owned by nobody, 0640.
    let mut fresh = RedisServer::start_with_password_and_aof(PASSWORD);
    fresh.cmd(&["SET", "old", "data"]);
    fresh.cmd(&["SAVE"]);
    let dump = fresh.dir().join("dump.rdb");
    shell(&format!(
        "chown 65534:65534 {0} && chmod 0640 {0}",
        quote(&dump)
    ));

    let out = ctl(
        &daemon,
        &[
            "restore",
            &id,
            "--redis-dir",
            &fresh.dir().display().to_string(),
        ],
    );
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
    let staged = fresh.dir().join(format!("dump.rdb.atpred-{id}"));
    let meta = std::fs::metadata(&staged).expect("the staged RDB");
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (65534, 65534, 0o640)
    );
    assert!(out.stdout.contains("appendonly no"), "{}", out.stdout);
    assert_eq!(
        fresh.cmd(&["GET", "old"]).as_text().as_deref(),
        Some("data"),
        "the server is untouched"
    );

    // 1. Stop Redis.
    fresh.stop();
    // 2. and 3. exactly as printed.
    let moves: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.split_once(": mv -f ").map(|(_, rest)| rest))
        .collect();
    assert_eq!(moves.len(), 2, "{}", out.stdout);
    for m in moves {
        shell(&format!("mv -f {m}"));
    }
    assert!(fresh.dir().join("dump.rdb.before-restore").exists());
    // 4. appendonly no, 5. start.
    fresh.set_aof(false);
    fresh.restart();
    assert_same_keys(&dataset(&fresh), &want, "the keys loaded from the RDB");
    // 6. AOF on again, and once it is written, the next start loads it.
    fresh.cmd(&["CONFIG", "SET", "appendonly", "yes"]);
    let written = harness::wait_until(Duration::from_secs(30), || {
        let info = fresh
            .cmd(&["INFO", "persistence"])
            .as_text()
            .unwrap_or_default();
        info.contains("aof_rewrite_in_progress:0")
            && info.contains("aof_rewrite_scheduled:0")
            && info.contains("aof_enabled:1")
    });
    assert!(written, "Redis did not write its AOF");
    fresh.set_aof(true);
    fresh.restart();
    assert_same_keys(&dataset(&fresh), &want, "the keys loaded from the new AOF");
}

#[test]
fn redis_restore_refuses_a_missing_folder() {
    let fx = RedisFixture::new(false);
    fx.populate();
    let daemon = fx.daemon("verify = \"checksum\"").spawn();
    let id = backup_ok(&daemon, "cache");
    let missing = fx.dir.path().join("no-such-dir");
    let out = ctl(
        &daemon,
        &[
            "restore",
            &id,
            "--redis-dir",
            &missing.display().to_string(),
        ],
    );
    assert_ne!(out.status, 0, "{}", out.stdout);
    assert!(out.stderr.contains("--redis-dir"), "{}", out.stderr);
    assert!(!missing.exists());
}
