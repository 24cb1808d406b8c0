//! `atprectl restore ID --redis-dir DIR`: the RDB staged beside a fresh server's dump.rdb with
//! that file's owner and mode, and the printed steps — stop, move, AOF off, start, AOF on —
//! followed to the letter give the same keys (values, types, expiries), from the RDB and then
//! from the AOF Redis rewrote; with `--target` from the encrypted copy at an offsite target,
//! the local copy deleted.

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

/// `--redis-dir DIR --target NAME`: the RDB of the encrypted copy at a Garage bucket, read as
/// it downloads (no local copy left), staged with no encrypted byte stored, and loaded by a
/// fresh server gives the same keys.
#[test]
fn redis_restore_from_an_encrypted_offsite_copy_with_the_local_copy_deleted() {
    crate::backup_encryption::require_age();
    let fx = RedisFixture::new(false);
    fx.populate();
    let garage = crate::harness::Garage::start();
    let (key, public) = crate::backup_encryption::keygen(fx.dir.path());
    let credentials = garage.credentials_file(fx.dir.path());
    let target = garage.offsite_toml("s3", &credentials, "atp-re/cache", "");
    let daemon = fx
        .daemon(&format!(
            "verify = \"checksum\"\nencrypt-to = [\"{public}\"]\nverify-identity-file = {}\n\
             offsite = \"s3\"\n{target}",
            harness::toml_path(&key)
        ))
        .spawn();
    let run = crate::backup_support::run_job(&daemon, "cache");
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    let id = run["details"]["id"].as_str().expect("id").to_owned();
    assert_eq!(run["details"]["offsite"][0]["stage"], "verified", "{run:#}");
    let want = dataset(&fx.redis);
    std::fs::remove_dir_all(fx.backup_dir().join(&id)).expect("delete the local copy");

    let mut fresh = RedisServer::start_with_password(PASSWORD);
    let dir = fresh.dir().display().to_string();
    let local = ctl(&daemon, &["restore", &id, "--redis-dir", &dir]);
    assert_ne!(local.status, 0, "no local copy: {}", local.stdout);
    let out = ctl(
        &daemon,
        &["restore", &id, "--redis-dir", &dir, "--target", "s3"],
    );
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
    let staged = fresh.dir().join(format!("dump.rdb.atpred-{id}"));
    assert!(staged.exists(), "{}", out.stdout);
    let names = crate::backup_support::entries(fresh.dir());
    assert!(
        !names
            .iter()
            .any(|n| n.contains(".age") || n.contains(".tmp")),
        "nothing encrypted or temporary is left: {names:?}"
    );

    fresh.stop();
    std::fs::rename(&staged, fresh.dir().join("dump.rdb")).expect("move the RDB in place");
    fresh.restart();
    assert_same_keys(
        &dataset(&fresh),
        &want,
        "the keys loaded from the offsite copy",
    );
    assert!(
        !daemon.log().contains(PASSWORD),
        "the password is in the log"
    );
}
