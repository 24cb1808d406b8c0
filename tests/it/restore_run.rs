//! A restore is a run: in the history as job `restore`, kind `restore`, with its outcome,
//! duration, backup and target; its progress carries its run id; a failed restore is a failed
//! run. While one runs, `status` and `jobs` show it, a second is refused (75) naming it, and
//! `atprectl cancel restore` cancels it, leaving the target untouched. A client killed or
//! interrupted (Ctrl-C: it says so, exit 130) mid-restore does not stop it; the daemon's stop ends it at once and cleanly. `[jobs.restore]`
//! is refused (78).

use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::backup_support::{ctl, ctl_json};
use crate::harness::{self, Daemon, wait_until};
use crate::restore_support::{
    SOURCE, backed_up, bulky, fingerprint, fingerprints, leftovers_of, restore, restore_runs,
    spawn_restore, wait_copying_into,
};

fn scratch_entries(scratch: &std::path::Path) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(scratch)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default()
}

#[test]
fn a_restore_is_a_run_in_the_history_and_a_failed_one_a_failed_run() {
    let (fx, daemon, id) = backed_up(|b| b);
    let out = restore(&daemon, &id, &["--json", "--to", "restored", "--yes"]);
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
    let replies: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let progress: Vec<&Value> = replies.iter().filter(|r| r["type"] == "progress").collect();
    assert!(progress.len() >= 3, "{replies:#?}");
    let runs = restore_runs(&daemon);
    assert_eq!(runs.len(), 1, "{runs:#?}");
    let run = &runs[0];
    for p in &progress {
        assert_eq!(p["run_id"], run["run_id"], "progress carries the run's id");
    }
    assert_eq!(run["job"], "restore");
    assert_eq!(run["kind"], "restore");
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    assert!(run["duration_ms"].as_u64().unwrap() > 0, "{run:#}");
    assert_eq!(run["details"]["backup"], id.as_str());
    assert_eq!(run["details"]["database"], "restored");
    assert_eq!(run["details"]["backup_job"], "nightly");
    assert_eq!(fingerprints(&fx, "restored"), fingerprints(&fx, SOURCE));
    let status = ctl_json(&daemon, &["status"]);
    assert_eq!(status["running"], serde_json::json!([]), "{status:#}");

    // A damaged archive: the restore begins, then fails its checksum.
    let archive = fx.backup_dir().join(&id).join("database.backup");
    let mut bytes = std::fs::read(&archive).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&archive, bytes).unwrap();
    let out = restore(&daemon, &id, &["--to", "again", "--yes"]);
    assert_eq!(out.status, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("checksum mismatch"), "{}", out.stderr);
    let runs = restore_runs(&daemon);
    assert_eq!(runs.len(), 2, "{runs:#?}");
    let failed = &runs[0];
    assert_eq!(failed["kind"], "restore");
    assert_eq!(failed["outcome"], "failed", "{failed:#}");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("checksum mismatch"),
        "{failed:#}"
    );
    assert_eq!(failed["details"]["database"], "again");
    assert!(leftovers_of(&fx, "again").is_empty());
}

#[test]
fn cancel_restore_leaves_the_target_untouched_and_a_second_one_is_refused_meanwhile() {
    let (fx, daemon, id, scratch) = bulky(400_000);
    fx.sql("DELETE FROM bulk WHERE id <= 10");
    let before = fingerprint(&fx, SOURCE, "bulk");
    let child = spawn_restore(&daemon, &id, &["--to", SOURCE, "--replace", "--yes"]);
    wait_copying_into(&fx, &format!("{SOURCE}_atpred_restoring"));

    let status = ctl_json(&daemon, &["status"]);
    let running = status["running"].as_array().unwrap();
    assert_eq!(running.len(), 1, "{status:#}");
    assert_eq!(running[0]["job"], "restore");
    let run_id = running[0]["run_id"].as_str().unwrap().to_owned();
    assert!(
        status["summary"]
            .as_str()
            .unwrap()
            .contains("running restore")
    );
    let jobs = ctl_json(&daemon, &["jobs"]);
    let listed = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "restore")
        .unwrap_or_else(|| panic!("jobs lists the running restore: {jobs:#}"));
    assert_eq!(listed["kind"], "restore");
    assert_eq!(listed["running"]["run_id"], run_id.as_str());

    let second = restore(&daemon, &id, &["--to", "elsewhere", "--yes"]);
    assert_eq!(second.status, 75, "{}{}", second.stdout, second.stderr);
    for named in [
        run_id.as_str(),
        id.as_str(),
        SOURCE,
        "atprectl cancel restore",
    ] {
        assert!(second.stderr.contains(named), "{named}: {}", second.stderr);
    }

    let t0 = std::time::Instant::now();
    let cancel = ctl(&daemon, &["cancel", "restore"]);
    assert_eq!(cancel.status, 0, "{}{}", cancel.stdout, cancel.stderr);
    assert!(cancel.stdout.contains(&run_id), "{}", cancel.stdout);
    let out = child.wait_with_output().unwrap();
    eprintln!(
        "cancel restore mid-pg_restore: answered after {:?}",
        t0.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("restore cancelled"), "{stderr}");
    assert!(
        stderr.contains("the target database was not touched"),
        "{stderr}"
    );

    assert_eq!(
        fingerprint(&fx, SOURCE, "bulk"),
        before,
        "the target is untouched"
    );
    assert_eq!(leftovers_of(&fx, SOURCE), vec![SOURCE.to_owned()]);
    let children = harness::process::descendants(daemon.pid());
    assert!(
        children.iter().all(|p| p.comm != "pg_restore"),
        "{children:?}"
    );
    assert!(
        scratch_entries(&scratch).is_empty(),
        "{:?}",
        scratch_entries(&scratch)
    );
    let runs = restore_runs(&daemon);
    assert_eq!(runs[0]["run_id"], run_id.as_str());
    assert_eq!(runs[0]["outcome"], "cancelled", "{:#}", runs[0]);
    assert!(
        !runs.iter().any(|r| r["details"]["database"] == "elsewhere"),
        "a refused restore is not a run: {runs:#?}"
    );
    assert!(leftovers_of(&fx, "elsewhere").is_empty());
}

#[test]
fn a_client_killed_or_interrupted_mid_restore_does_not_stop_it() {
    let (fx, daemon, id, scratch) = bulky(400_000);
    for (n, (to, signal)) in [("killed", Signal::SIGKILL), ("interrupted", Signal::SIGINT)]
        .into_iter()
        .enumerate()
    {
        let child = spawn_restore(&daemon, &id, &["--to", to, "--yes"]);
        wait_copying_into(&fx, &format!("{to}_atpred_restoring"));
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
        nix::sys::signal::kill(pid, signal).unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if signal == Signal::SIGINT {
            // Ctrl-C: atprectl says that the restore goes on, and how to stop it.
            assert_eq!(out.status.code(), Some(130), "{stderr}");
            assert!(stderr.contains("goes on in the daemon"), "{stderr}");
            assert!(stderr.contains("atprectl cancel restore"), "{stderr}");
        }
        let finished = || restore_runs(&daemon).len() > n;
        assert!(
            wait_until(Duration::from_secs(120), finished),
            "the restore into {to} never finished"
        );
        let run = &restore_runs(&daemon)[0];
        assert_eq!(run["details"]["database"], to, "{run:#}");
        assert_eq!(run["outcome"], "succeeded", "{run:#}");
        assert_eq!(
            fingerprint(&fx, to, "bulk"),
            fingerprint(&fx, SOURCE, "bulk")
        );
        assert_eq!(leftovers_of(&fx, to), vec![to.to_owned()]);
        assert!(scratch_entries(&scratch).is_empty());
    }
}

#[test]
fn the_daemons_stop_ends_a_restore_at_once_and_cleanly() {
    let (fx, mut daemon, id, scratch) = bulky(400_000);
    let before = fingerprint(&fx, SOURCE, "bulk");
    let child = spawn_restore(&daemon, &id, &["--to", "stopped", "--yes"]);
    wait_copying_into(&fx, "stopped_atpred_restoring");
    let t0 = std::time::Instant::now();
    daemon.signal(Signal::SIGTERM);
    let exit = daemon
        .wait_exit(Duration::from_secs(30))
        .expect("the daemon stops");
    assert_eq!(exit.code(), Some(0), "{}", daemon.log());
    // Cancelled at once, not after stop-timeout (30 s by default) and then cancelled.
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    eprintln!(
        "SIGTERM mid-restore: the daemon exited after {:?}",
        t0.elapsed()
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        leftovers_of(&fx, "stopped").is_empty(),
        "{:?}",
        leftovers_of(&fx, "stopped")
    );
    assert_eq!(fingerprint(&fx, SOURCE, "bulk"), before);
    assert!(scratch_entries(&scratch).is_empty());
    let history = std::fs::read_to_string(fx.dir.path().join("state/history.jsonl")).unwrap();
    let record: Value = history
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["job"] == "restore")
        .unwrap_or_else(|| panic!("no restore in the history:\n{history}"));
    assert_eq!(record["outcome"], "cancelled", "{record:#}");
    assert!(
        record["message"]
            .as_str()
            .unwrap()
            .contains("the daemon is stopping"),
        "{record:#}"
    );
}

#[test]
fn a_job_named_restore_is_refused() {
    let dir = harness::tempdir();
    let builder =
        Daemon::builder(&dir).toml("[jobs.restore]\nkind = \"command\"\ncommand = [\"true\"]\n");
    let out = builder.check();
    assert_eq!(out.status, 78, "{out:?}");
    assert!(out.stderr.contains("jobs.restore"), "{}", out.stderr);
    assert!(out.stderr.contains("reserved"), "{}", out.stderr);
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_atpred"));
    daemon.arg("--config").arg(builder.config_path());
    let ran = harness::process::run_with_timeout(&mut daemon, Duration::from_secs(30));
    assert_eq!(ran.status, 78, "the daemon itself refuses it: {ran:?}");
}
