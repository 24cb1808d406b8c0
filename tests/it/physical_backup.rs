//! `method = "physical"`: a base backup by pg_basebackup, streamed through zstd and age,
//! verified by pg_verifybackup on an unpacked copy, listed with its LSN; damage is found and
//! named; a tablespace is refused; a daemon killed mid-backup leaves nothing behind; the
//! replication password shows nowhere.

use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::backup_disturb::wait_for_streaming;
use crate::backup_secrets::assert_no_password;
use crate::backup_support::{
    Fixture, PASSWORD, backup_ok, backups, ctl, ctl_json, entries, manifest, quote, run_job, shell,
};
use crate::harness::{self, proc_children};
use crate::physical_support::{
    age_key, fixture, job, member_offset, pg_verifybackup, unpack_by_hand,
};
use crate::prune_support::{at, craft_copy, prune_job, started_of};

fn scratch_leftovers(fx: &Fixture) -> Vec<String> {
    entries(&fx.dir.path().join("state").join("restore"))
        .into_iter()
        .filter(|n| n.starts_with(".physical-"))
        .collect()
}

#[test]
fn physical_backup_is_listed_verified_and_unpacks_by_hand_to_a_valid_data_directory() {
    let fx = fixture();
    let (key, recipient) = age_key(fx.dir.path());
    let daemon = fx
        .daemon(&job(&format!(
            "verify = \"full\"\nencrypt-to = [\"{recipient}\"]\nverify-identity-file = {:?}",
            key.display().to_string()
        )))
        .spawn();
    let run = run_job(&daemon, "base");
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    let id = run["details"]["id"].as_str().expect("id").to_owned();
    let verify = &run["details"]["verify"];
    assert_eq!(verify["level"], "full", "{run:#}");
    let said = verify["details"].as_str().expect("details");
    assert!(
        said.contains("pg_verifybackup: backup successfully verified"),
        "{said}"
    );
    assert!(
        scratch_leftovers(&fx).is_empty(),
        "{:?}",
        scratch_leftovers(&fx)
    );

    let m = manifest(&daemon, &id);
    assert_eq!(m["method"], "physical", "{m:#}");
    assert_eq!(m["database"], "cluster");
    assert_eq!(m["files"][0]["path"], "base.tar.zst.age");
    let facts = &m["physical"];
    let (start, stop) = (
        facts["start_lsn"].as_str().expect("start_lsn"),
        facts["stop_lsn"].as_str().expect("stop_lsn"),
    );
    assert_eq!(facts["timeline"], 1, "{m:#}");
    assert!(facts["tar_bytes"].as_u64().unwrap_or(0) > m["bytes"].as_u64().unwrap_or(0));

    let listed = backups(&daemon);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["method"], "physical");
    assert_eq!(listed[0]["lsn"], format!("{start} (timeline 1)"));
    let table = ctl(&daemon, &["backups"]);
    assert!(table.stdout.lines().next().unwrap_or("").contains("METHOD"));
    let row = table
        .stdout
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{}", table.stdout));
    assert!(row.contains("physical") && row.contains(start), "{row}");

    // By hand: checksums, then age | zstd | tar, then pg_verifybackup, as an operator would.
    let folder = fx.backup_dir().join(&id);
    assert_eq!(
        entries(&folder),
        ["SHA256SUMS", "base.tar.zst.age", "manifest.json"],
        "one encrypted file, no plain copy"
    );
    shell(&format!("cd {} && sha256sum -c SHA256SUMS", quote(&folder)));
    let out = fx.dir.path().join("unpacked");
    unpack_by_hand(&folder.join("base.tar.zst.age"), Some(&key), &out);
    let verified = pg_verifybackup(&fx, &out);
    assert!(
        verified.contains("backup successfully verified"),
        "{verified}"
    );
    let label = std::fs::read_to_string(out.join("backup_label")).expect("backup_label");
    assert!(
        label.contains(&format!("START WAL LOCATION: {start} ")),
        "{label}"
    );
    let bm: Value = serde_json::from_slice(
        &std::fs::read(out.join("backup_manifest")).expect("backup_manifest"),
    )
    .expect("backup_manifest is JSON");
    let range = &bm["WAL-Ranges"][0];
    assert_eq!(
        (
            range["Start-LSN"].as_str(),
            range["End-LSN"].as_str(),
            range["Timeline"].as_u64()
        ),
        (Some(start), Some(stop), Some(1)),
        "{range}"
    );
}

#[test]
fn physical_backup_verify_names_a_damaged_file_and_a_damaged_data_file() {
    let fx = fixture();
    let daemon = fx
        .daemon(&job("compress = \"none\"\nverify = \"checksum\""))
        .spawn();
    let id = backup_ok(&daemon, "base");
    let folder = fx.backup_dir().join(&id);
    let file = folder.join("base.tar");
    let good = std::fs::read(&file).expect("read base.tar");
    // What a daemon killed while unpacking leaves (its pid gone): swept by the next unpack.
    let stale = fx
        .dir
        .path()
        .join("state/restore/.physical-20200101T000000Z-base-4194300");
    std::fs::create_dir_all(stale.join("base")).expect("a stale unpacked folder");
    let passed = ctl(&daemon, &["backups", "verify", &id, "--level", "full"]);
    assert_eq!(passed.status, 0, "{}{}", passed.stdout, passed.stderr);
    assert!(
        passed.stdout.contains("pg_verifybackup"),
        "{}",
        passed.stdout
    );

    // One byte of a data file changed, and the stored checksums made to match: only
    // pg_verifybackup, against backup_manifest, can find it, and it names the file.
    let at = member_offset(&good, "PG_VERSION").expect("PG_VERSION in base.tar");
    let mut bad = good.clone();
    bad[at] ^= 0x01;
    std::fs::write(&file, &bad).expect("damage base.tar");
    let sum = shell(&format!("sha256sum {}", quote(&file))).stdout;
    let sum = sum.split_whitespace().next().expect("a sum").to_owned();
    let path = folder.join("manifest.json");
    let mut m: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("manifest")).expect("JSON");
    m["files"][0]["sha256"] = Value::String(sum.clone());
    std::fs::write(&path, serde_json::to_vec_pretty(&m).expect("JSON")).expect("manifest");
    std::fs::write(folder.join("SHA256SUMS"), format!("{sum}  base.tar\n")).expect("sums");
    let checksum = ctl(&daemon, &["backups", "verify", &id, "--level", "checksum"]);
    assert_eq!(
        checksum.status, 0,
        "the checksum level cannot see it: {}",
        checksum.stdout
    );
    let full = ctl(&daemon, &["backups", "verify", &id, "--level", "full"]);
    let said = format!("{}{}", full.stdout, full.stderr);
    assert_eq!(full.status, 1, "{said}");
    assert!(
        said.contains("pg_verifybackup failed") && said.contains("PG_VERSION"),
        "{said}"
    );

    // The stored file itself damaged: the checksum names it, at every level.
    std::fs::write(&file, &good).expect("restore base.tar");
    let mut flipped = good.clone();
    let half = flipped.len() / 2;
    flipped[half] ^= 0x10;
    std::fs::write(&file, &flipped).expect("flip a bit");
    for level in ["checksum", "full"] {
        let out = ctl(&daemon, &["backups", "verify", &id, "--level", level]);
        let said = format!("{}{}", out.stdout, out.stderr);
        assert_eq!(out.status, 1, "{level}: {said}");
        assert!(
            said.contains("base.tar: checksum mismatch"),
            "{level}: {said}"
        );
    }
    assert!(
        scratch_leftovers(&fx).is_empty(),
        "{:?}",
        scratch_leftovers(&fx)
    );
}

#[test]
fn physical_backup_refuses_a_tablespace_and_a_role_without_replication() {
    let fx = fixture();
    let daemon = fx.daemon(&job("verify = \"checksum\"")).spawn();
    fx.pg.psql(
        "postgres",
        &format!("ALTER ROLE {} NOREPLICATION", crate::backup_support::ROLE),
    );
    let refused = run_job(&daemon, "base");
    assert_eq!(refused["outcome"], "failed", "{refused:#}");
    let message = refused["message"].as_str().expect("message");
    assert!(message.contains("the role needs REPLICATION"), "{message}");
    fx.pg.psql(
        "postgres",
        &format!("ALTER ROLE {} REPLICATION", crate::backup_support::ROLE),
    );

    let location = fx.pg.socket_dir().join("ts");
    std::fs::create_dir(&location).expect("tablespace folder");
    let owner = std::fs::metadata(fx.pg.socket_dir()).expect("pg dir");
    std::os::unix::fs::chown(
        &location,
        Some(std::os::unix::fs::MetadataExt::uid(&owner)),
        Some(std::os::unix::fs::MetadataExt::gid(&owner)),
    )
    .expect("chown the tablespace folder");
    fx.pg.psql(
        "postgres",
        &format!("CREATE TABLESPACE extra LOCATION '{}'", location.display()),
    );
    let refused = run_job(&daemon, "base");
    assert_eq!(refused["outcome"], "failed", "{refused:#}");
    let message = refused["message"].as_str().expect("message");
    assert!(
        message.contains("tablespaces besides pg_default (extra)"),
        "{message}"
    );
    assert!(backups(&daemon).is_empty());
    assert!(
        entries(&fx.backup_dir()).is_empty(),
        "{:?}",
        entries(&fx.backup_dir())
    );
}

#[test]
fn physical_backup_daemon_killed_mid_backup_leaves_nothing_listed_and_no_temp_files() {
    let fx = fixture();
    fx.create_bulk_table(600_000);
    let mut daemon = fx
        .daemon(&job("compress = \"none\"\nverify = \"checksum\""))
        .spawn();
    let started = ctl(&daemon, &["run", "base"]);
    assert_eq!(started.status, 0, "{}", started.stderr);
    let partial = wait_for_streaming(&fx.backup_dir(), 1 << 20);
    let child = proc_children(daemon.pid())
        .into_iter()
        .find(|p| p.comm == "pg_basebackup" && p.state != 'Z')
        .map(|p| p.pid);
    daemon.signal(Signal::SIGKILL);
    assert!(daemon.wait_exit(Duration::from_secs(10)).is_some());
    assert!(
        !daemon.log().contains("published"),
        "the backup finished before the kill; raise the rows:\n{}",
        daemon.log()
    );
    if let Some(pid) = child {
        let gone = harness::wait_until(Duration::from_secs(10), || !harness::process_alive(pid));
        assert!(gone, "pg_basebackup {pid} outlived the daemon");
    }
    daemon.restart();
    assert!(
        !partial.exists(),
        "the partial folder is removed at start-up"
    );
    assert!(backups(&daemon).is_empty(), "nothing listed");
    assert!(
        entries(&fx.backup_dir()).is_empty(),
        "{:?}",
        entries(&fx.backup_dir())
    );
    // The server let go of the backup: a new one runs at once.
    let run = run_job(&daemon, "base");
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
}

#[test]
fn physical_backup_never_shows_the_replication_password() {
    let fx = fixture();
    let daemon = fx
        .daemon(&job("verify = \"full\""))
        .env("PGPASSWORD", "inherited-canary")
        .spawn();
    let run = crate::backup_support::BackgroundRun::start(&daemon, fx.dir.path(), "base");
    let mut seen = None;
    harness::wait_until(Duration::from_secs(30), || {
        seen = proc_children(daemon.pid())
            .into_iter()
            .find(|p| p.comm == "pg_basebackup" && p.state != 'Z')
            .and_then(|p| {
                let cmdline = std::fs::read(format!("/proc/{}/cmdline", p.pid)).ok()?;
                // Not `pg_basebackup --version`, asked first.
                if !String::from_utf8_lossy(&cmdline).contains("--wal-method") {
                    return None;
                }
                let environ = std::fs::read(format!("/proc/{}/environ", p.pid)).ok()?;
                Some((cmdline, environ))
            });
        seen.is_some()
    });
    let record = run.finish();
    assert_eq!(record["outcome"], "succeeded", "{record:#}");
    let (cmdline, environ) = seen.expect("saw pg_basebackup running");
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(cmdline.contains("--wal-method=none"), "{cmdline}");
    assert_no_password("pg_basebackup's command line", &cmdline);
    let environ = String::from_utf8_lossy(&environ).replace('\0', " ");
    assert_no_password("pg_basebackup's environment", &environ);
    assert!(environ.contains("PGPASSFILE="), "{environ}");
    assert!(!environ.contains("inherited-canary"), "{environ}");
    let id = record["details"]["id"].as_str().expect("id");
    assert_no_password("the run's record", &record.to_string());
    for args in [
        vec!["backups"],
        vec!["backups", "show", id],
        vec!["history"],
    ] {
        let out = ctl(&daemon, &args);
        assert_no_password(
            &format!("atprectl {args:?}"),
            &format!("{}{}", out.stdout, out.stderr),
        );
    }
    let shown = ctl_json(&daemon, &["backups", "show", id]);
    assert_no_password("the manifest", &shown.to_string());
    assert_no_password("the daemon's log", &daemon.log());
    assert!(PASSWORD.contains(':'));
}

#[test]
fn physical_backup_is_pruned_and_pinned_like_any_backup_and_not_restored_by_pg_restore() {
    let fx = fixture();
    let daemon = fx
        .daemon(&format!(
            "{}\n{}",
            job("verify = \"checksum\""),
            prune_job("prune", "keep-last = 1\nof = [\"base\"]")
        ))
        .spawn();
    let dir = fx.backup_dir();
    let r1 = backup_ok(&daemon, "base");
    let today = started_of(&dir, &r1).date_naive();
    let old = craft_copy(&dir, &r1, at(today, 2, 3));
    let older = craft_copy(&dir, &r1, at(today, 3, 3));
    let pinned = ctl(&daemon, &["backups", "pin", &old, "--reason", "pitr base"]);
    assert_eq!(pinned.status, 0, "{}{}", pinned.stdout, pinned.stderr);
    let run = run_job(&daemon, "prune");
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    assert_eq!(
        run["details"]["removed"],
        serde_json::json!([older]),
        "{run:#}"
    );
    let mut left = vec![r1.clone(), old.clone()];
    left.sort();
    assert_eq!(
        entries(&dir),
        left,
        "the newest kept by the policy, the pinned one by its pin"
    );

    let out = crate::restore_support::restore(&daemon, &r1, &["--to", "copy", "--yes"]);
    let said = format!("{}{}", out.stdout, out.stderr);
    assert_ne!(out.status, 0, "{said}");
    assert!(said.contains("is a physical base backup"), "{said}");
}
