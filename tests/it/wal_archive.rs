//! Continuous WAL archiving against a real primary (`wal_level = replica`, PostgreSQL 15's
//! default): a supervised pg_receivewal on its own slot, every completed segment zstd + age,
//! hashed and indexed, proven from the outside with the `age` and `zstd` CLIs and `pg_waldump`;
//! kill -9 of the receiver and of the daemon; the slot dropped behind the daemon's back; a full
//! archive disk; and the replication password nowhere.

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::backup_disturb::Tmpfs;
use crate::backup_secrets::assert_no_password;
use crate::backup_support::ctl;
use crate::harness::{self, process_alive};
use crate::wal_support::{
    ARCHIVE_TIMEOUT, JOB, SLOT, WalFixture, wait_check, wait_receiving, wal_status,
};

#[test]
fn wal_archive_segments_are_encrypted_indexed_and_replay_with_the_clis() {
    let wf = WalFixture::new();
    let mut daemon = wf.daemon("").env("PGPASSWORD", "inherited-canary").spawn();
    let status = wait_receiving(&daemon, 1);
    let pid = status["pid"].as_u64().expect("the receiver's pid") as i32;

    let mut segments = Vec::new();
    for tag in ["a", "b", "c"] {
        let seg = wf.write_and_switch(tag, 20_000);
        wf.wait_archived(&daemon, &seg);
        segments.push(seg);
    }

    // The receiver's argv and environment: the passfile only, no password, no inherited PG*.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("pg_receivewal's cmdline");
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        cmdline.contains("pg_receivewal") && cmdline.contains(SLOT),
        "{cmdline}"
    );
    assert_no_password("pg_receivewal's command line", &cmdline);
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("pg_receivewal's environ");
    let environ = String::from_utf8_lossy(&environ).replace('\0', "\n");
    assert_no_password("pg_receivewal's environment", &environ);
    assert!(environ.contains("PGPASSFILE="), "{environ}");
    assert!(
        !environ.contains("PGPASSWORD") && !environ.contains("NOTIFY_SOCKET"),
        "{environ}"
    );

    // Every file is age-encrypted, 0600, and its index line names its size and SHA-256.
    let index = wf.index();
    for e in &index {
        let file = wf.archive_dir().join(e["file"].as_str().expect("file"));
        assert!(
            e["file"].as_str().expect("file").ends_with(".zst.age"),
            "{e}"
        );
        let meta = std::fs::metadata(&file).expect("archived file");
        assert_eq!(meta.len(), e["bytes"].as_u64().expect("bytes"), "{e}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{e}");
        let head = std::fs::read(&file).expect("read");
        assert!(head.starts_with(b"age-encryption.org/v1"), "{e}");
    }
    // Decrypted with the age CLI and decompressed with zstd, the segments chain for pg_waldump.
    let plain = wf.fx.dir.path().join("plain");
    let names = wf.restore_segments(&plain);
    for s in &segments {
        assert!(names.contains(s), "{s} in {names:?}");
    }
    let dump = wf.waldump(&plain, &names);
    assert_eq!(
        dump.status, 0,
        "pg_waldump over {names:?}: {}{}",
        dump.stdout, dump.stderr
    );

    // Only the in-flight segment stays in the spool, as .partial.
    let spool = wf.spool_dir(&daemon);
    assert!(
        harness::wait_until(ARCHIVE_TIMEOUT, || std::fs::read_dir(&spool)
            .expect("spool")
            .flatten()
            .all(|e| e.file_name().to_string_lossy().ends_with(".partial"))),
        "spool: {:?}",
        std::fs::read_dir(&spool).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );

    // Status, health and metrics.
    let status = wal_status(&daemon);
    assert_eq!(status["last_segment"], segments[2], "{status:#}");
    assert!(
        status["archived_lsn"]
            .as_str()
            .is_some_and(|l| l.contains('/')),
        "{status:#}"
    );
    let jobs = ctl(&daemon, &["jobs"]);
    assert!(
        jobs.stdout.contains("continuous") && jobs.stdout.contains("receiving"),
        "{}",
        jobs.stdout
    );
    let check = wait_check(&daemon, "ok", "receiving");
    assert_no_password("the health reply", &check.to_string());
    let metrics = ctl(&daemon, &["metrics"]).stdout;
    for name in [
        "atpred_wal_receiver_up{job=\"wal\"} 1",
        "atpred_wal_archived_lsn{job=\"wal\"}",
        "atpred_wal_lag_bytes{job=\"wal\"}",
        "atpred_wal_slot_retained_bytes{job=\"wal\"}",
        "atpred_recovery_point_age_seconds{job=\"wal\"}",
    ] {
        assert!(metrics.contains(name), "{name} in\n{metrics}");
    }
    // `run` is refused: the job is continuous.
    let run = ctl(&daemon, &["run", JOB, "--wait"]);
    assert_ne!(run.status, 0, "{}{}", run.stdout, run.stderr);

    // The daemon's peak memory while archiving (the aim: 48 MiB).
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).expect("status");
    let hwm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM");
    eprintln!("daemon peak RSS while archiving: {} KiB", hwm_kib);
    assert!(hwm_kib < 48 * 1024, "peak RSS {hwm_kib} KiB");

    // A clean stop ends the receiver with the daemon.
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(30)).is_some());
    assert!(
        harness::wait_until(Duration::from_secs(10), || !process_alive(Pid::from_raw(
            pid
        ))),
        "pg_receivewal {pid} outlived the daemon"
    );
    assert_no_password("the daemon's log", &daemon.log());
}

#[test]
fn wal_archive_resumes_from_the_slot_after_kill_9_of_the_receiver_and_the_daemon() {
    let wf = WalFixture::new();
    let mut daemon = wf.daemon("").spawn();
    let first = wait_receiving(&daemon, 1);
    let seg = wf.write_and_switch("a", 10_000);
    wf.wait_archived(&daemon, &seg);

    // kill -9 of pg_receivewal mid-segment: the supervisor starts it again on the same slot.
    wf.write("b", 10_000);
    let pid = first["pid"].as_u64().expect("pid") as i32;
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill -9 pg_receivewal");
    let second = wait_receiving(&daemon, 2);
    assert_ne!(second["pid"], first["pid"]);
    let seg = wf.write_and_switch("c", 10_000);
    wf.wait_archived(&daemon, &seg);

    // kill -9 of the daemon mid-segment: its receiver dies with it (no orphan), and the next
    // daemon resumes from the slot.
    wf.write("d", 10_000);
    let receiver = Pid::from_raw(second["pid"].as_u64().expect("pid") as i32);
    daemon.signal(Signal::SIGKILL);
    assert!(daemon.wait_exit(Duration::from_secs(10)).is_some());
    assert!(
        harness::wait_until(Duration::from_secs(10), || !process_alive(receiver)),
        "pg_receivewal {receiver} outlived the killed daemon"
    );
    daemon.restart();
    wait_receiving(&daemon, 1);
    let last = wf.write_and_switch("e", 10_000);
    wf.wait_archived(&daemon, &last);

    // No gap: the decrypted archive chains from the first segment to the last.
    let plain = wf.fx.dir.path().join("plain");
    let names = wf.restore_segments(&plain);
    let dump = wf.waldump(&plain, &names);
    assert_eq!(
        dump.status, 0,
        "pg_waldump over {names:?}: {}{}",
        dump.stdout, dump.stderr
    );
    let check = wait_check(&daemon, "ok", "receiving");
    assert!(
        !check["message"].as_str().unwrap_or("").contains("gap"),
        "{check:#}"
    );

    // A segment lost from the archive (its line and file gone while the daemon was down): the
    // gap check names exactly the missing range.
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(30)).is_some());
    let index_path = wf.archive_dir().join("index.jsonl");
    let text = std::fs::read_to_string(&index_path).expect("index");
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_by_key(|l| {
        serde_json::from_str::<serde_json::Value>(l).expect("json")["name"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    });
    assert!(lines.len() >= 3, "{lines:?}");
    let lost: serde_json::Value = serde_json::from_str(lines.remove(1)).expect("json");
    let lost_name = lost["name"].as_str().expect("name").to_owned();
    std::fs::remove_file(wf.archive_dir().join(lost["file"].as_str().expect("file")))
        .expect("remove the segment");
    std::fs::write(&index_path, format!("{}\n", lines.join("\n"))).expect("rewrite the index");
    daemon.restart();
    wait_check(
        &daemon,
        "fail",
        &format!("gap in the archive: {lost_name} to {lost_name} missing"),
    );
}

#[test]
fn wal_archive_a_dropped_slot_is_recreated_and_a_new_base_backup_required() {
    let wf = WalFixture::new();
    let daemon = wf.daemon("synchronous = true").spawn();
    let first = wait_receiving(&daemon, 1);
    let pid = first["pid"].as_u64().expect("pid");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    assert!(
        String::from_utf8_lossy(&cmdline).contains("--synchronous"),
        "synchronous = true passes --synchronous"
    );
    let seg = wf.write_and_switch("a", 5_000);
    wf.wait_archived(&daemon, &seg);

    // Behind the daemon's back: end the walsender, drop the slot before the receiver is back.
    let dropped = harness::wait_until(Duration::from_secs(30), || {
        let out = wf.fx.pg.run_psql(
            wf.fx.pg.psql_command("postgres", "postgres"),
            &format!(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '{SLOT}' AND active_pid IS NOT NULL; \
                 SELECT pg_sleep(0.2); SELECT pg_drop_replication_slot('{SLOT}');"
            ),
        );
        out.status == 0
    });
    assert!(dropped, "could not drop the slot");

    let check = wait_check(&daemon, "fail", "new base backup is required");
    assert!(
        check["message"].as_str().unwrap_or("").contains(SLOT),
        "{check:#}"
    );
    let status = wait_receiving(&daemon, 2);
    assert!(
        !status["base_backup_required_since"].is_null(),
        "{status:#}"
    );
    let exists = wf.fx.pg.psql(
        "postgres",
        &format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{SLOT}'"),
    );
    assert_eq!(exists.trim(), "1", "the slot was recreated");
    assert!(
        daemon.log().contains("was missing"),
        "{}",
        harness::tail(&daemon.log(), 30)
    );
    // Archiving goes on on the new slot.
    let seg = wf.write_and_switch("b", 5_000);
    wf.wait_archived(&daemon, &seg);
}

#[test]
fn wal_archive_disk_full_fails_cleanly_and_the_primary_keeps_running() {
    if !harness::is_root() {
        eprintln!("not root: cannot mount a small tmpfs for the archive");
        return;
    }
    let wf = WalFixture::new();
    let tmpfs = Tmpfs::mount(&wf.archive_dir(), "256k");
    let daemon = wf.daemon("").spawn();
    wait_receiving(&daemon, 1);
    let seg = wf.write_and_switch("a", 60_000);

    // Segments are archived in WAL order: the first that does not fit is named, and nothing
    // after it is archived out of order.
    let check = wait_check(&daemon, "fail", "No space left on device");
    assert!(
        check["message"]
            .as_str()
            .unwrap_or("")
            .contains("cannot archive 00000001"),
        "{check:#}"
    );
    assert!(!wf.indexed(&seg));
    // Nothing half-written is left, the segment waits in the spool, the primary writes on.
    // (A retry every 10 s may be writing its temporary file at any one moment.)
    let leftovers = || -> Vec<String> {
        std::fs::read_dir(wf.archive_dir())
            .expect("archive dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    };
    assert!(
        harness::wait_until(Duration::from_secs(20), || leftovers().is_empty()),
        "{:?}",
        leftovers()
    );
    assert!(wf.spool_dir(&daemon).join(&seg).exists());
    wf.write("b", 1_000);
    assert!(
        wf.fx.sql("SELECT count(*) FROM t_b").ends_with("1000"),
        "the primary takes writes"
    );

    // With room again, the waiting segment is archived and the check recovers.
    let out = std::process::Command::new("mount")
        .args(["-o", "remount,size=256m"])
        .arg(wf.archive_dir())
        .status()
        .expect("remount");
    assert!(out.success());
    wf.wait_archived(&daemon, &seg);
    wait_check(&daemon, "ok", "receiving");
    drop(daemon);
    drop(tmpfs);
}

#[test]
fn wal_archive_slot_retention_warns_then_fails_at_its_thresholds() {
    let wf = WalFixture::new();
    let daemon = wf
        // A healthy receiver without --synchronous confirms at segment ends: the slot holds
        // up to one segment (16 MiB) in normal operation.
        .daemon("slot-retained-warn = \"24MiB\"\nslot-retained-fail = \"48MiB\"")
        .spawn();
    let status = wait_receiving(&daemon, 1);
    wait_check(&daemon, "ok", "receiving");
    // A receiver that stops confirming (frozen) makes the slot hold WAL on the server.
    let receiver = Pid::from_raw(status["pid"].as_u64().expect("pid") as i32);
    kill(receiver, Signal::SIGSTOP).expect("SIGSTOP pg_receivewal");
    wf.write("a", 280_000);
    let warn = wait_check(&daemon, "warn", "max_slot_wal_keep_size");
    assert!(
        warn["message"].as_str().unwrap_or("").contains(SLOT),
        "{warn:#}"
    );
    wf.write("b", 280_000);
    wait_check(&daemon, "fail", "holds");
    kill(receiver, Signal::SIGCONT).expect("SIGCONT pg_receivewal");
    wait_check(&daemon, "ok", "receiving");
}
