//! The wal-archive job's folders are trust-checked when it starts and then used by handle: a
//! spool others may write to, or an archive-dir with a symlink on its path, is refused with the
//! path named (`refused` in `atprectl jobs`, the health check failing); a folder renamed away
//! and replaced by a symlink after the start is never followed, by the archiver or by a
//! restarted pg_receivewal.

use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::backup_support::ctl;
use crate::harness::{self, toml_path};
use crate::wal_support::{
    ARCHIVE_TIMEOUT, JOB, WalFixture, wait_check, wait_receiving, wal_status,
};

fn wait_refused(daemon: &harness::Daemon, needle: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let ok = harness::wait_until(ARCHIVE_TIMEOUT, || {
        last = wal_status(daemon);
        last["receiver"] == "refused" && last["message"].as_str().unwrap_or("").contains(needle)
    });
    assert!(
        ok,
        "not refused with {needle:?}: {last:#}\n{}",
        harness::tail(&daemon.log(), 30)
    );
    last
}

#[test]
fn wal_trust_a_shared_spool_or_a_symlinked_archive_dir_is_refused_with_its_path() {
    let wf = WalFixture::new();
    let state = wf.fx.dir.path().join("state");
    let spool = state.join("wal-spool").join(JOB);
    std::fs::create_dir_all(&spool).expect("spool");
    for dir in [state.as_path(), spool.parent().expect("wal-spool")] {
        harness::set_mode(dir, 0o700);
    }
    harness::set_mode(&spool, 0o777);
    let daemon = wf.daemon("").spawn();
    let shown = spool.display().to_string();
    wait_refused(&daemon, &format!("{shown} is writable by all users"));
    let jobs = ctl(&daemon, &["jobs"]);
    assert!(
        jobs.stdout.contains("refused") && jobs.stdout.contains(&shown),
        "{}",
        jobs.stdout
    );
    wait_check(&daemon, "fail", &format!("refused: {shown}"));
    assert!(
        std::fs::read_dir(&spool).expect("spool").next().is_none(),
        "nothing was received into the refused spool"
    );
    // Made private, the folder is accepted at the next try: the job starts by itself.
    harness::set_mode(&spool, 0o700);
    wait_receiving(&daemon, 1);
    drop(daemon);

    // An archive-dir reached through a symlink: the config check judges the real folder and
    // passes; the job refuses the path.
    let real = wf.fx.dir.path().join("real");
    std::fs::create_dir_all(real.join("archive")).expect("real");
    let link = wf.fx.dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let archive = link.join("archive");
    let daemon = wf
        .fx
        .daemon(&format!(
            "[jobs.{JOB}]\nkind = \"wal-archive\"\narchive-dir = {}\nencrypt-to = [\"{}\"]\n",
            toml_path(&archive),
            wf.public
        ))
        .spawn();
    let status = wait_refused(&daemon, "has a symlink on its path");
    assert!(
        status["message"]
            .as_str()
            .unwrap_or("")
            .contains(&archive.display().to_string()),
        "{status:#}"
    );
    wait_check(&daemon, "fail", "has a symlink on its path");
    assert!(
        std::fs::read_dir(real.join("archive"))
            .expect("real archive")
            .next()
            .is_none(),
        "nothing written through the symlink"
    );
}

fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    n.sort();
    n
}

/// Renames `dir` away to `DIR.moved`, puts a symlink to a new empty folder in its place, and
/// returns (moved, planted).
fn swap(dir: &Path) -> (PathBuf, PathBuf) {
    let moved = dir.with_extension("moved");
    let planted = dir.with_extension("planted");
    std::fs::rename(dir, &moved).expect("rename away");
    std::fs::create_dir(&planted).expect("planted");
    harness::set_mode(&planted, 0o700);
    std::os::unix::fs::symlink(&planted, dir).expect("symlink in its place");
    (moved, planted)
}

#[test]
fn wal_trust_a_folder_swapped_after_start_is_not_followed() {
    let wf = WalFixture::new();
    let daemon = wf.daemon("").spawn();
    let status = wait_receiving(&daemon, 1);
    let first = wf.write_and_switch("a", 5_000);
    wf.wait_archived(&daemon, &first);

    let (archive_moved, archive_planted) = swap(&wf.archive_dir());
    let (spool_moved, spool_planted) = swap(&wf.spool_dir(&daemon));
    // A restarted receiver must find its spool by handle too.
    let pid = status["pid"].as_u64().expect("the receiver's pid") as i32;
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill -9 pg_receivewal");
    wait_receiving(&daemon, 2);
    let next = wf.write_and_switch("b", 5_000);
    let index = archive_moved.join("index.jsonl");
    assert!(
        harness::wait_until(ARCHIVE_TIMEOUT, || std::fs::read_to_string(&index)
            .unwrap_or_default()
            .contains(&next)),
        "{next} not archived in the folder the job holds: {:?}\n{}",
        names(&archive_moved),
        harness::tail(&daemon.log(), 30)
    );
    assert!(names(&archive_moved).contains(&format!("{next}.zst.age")));
    assert_eq!(
        names(&archive_planted),
        Vec::<String>::new(),
        "archive swap followed"
    );
    assert_eq!(
        names(&spool_planted),
        Vec::<String>::new(),
        "spool swap followed"
    );
    // WAL written now streams into the next segment's .partial, in the held spool.
    wf.write("c", 1_000);
    assert!(
        harness::wait_until(ARCHIVE_TIMEOUT, || names(&spool_moved)
            .iter()
            .any(|n| n.ends_with(".partial"))),
        "the restarted receiver writes in the held spool: {:?}",
        names(&spool_moved)
    );
    assert_eq!(
        names(&spool_planted),
        Vec::<String>::new(),
        "spool swap followed"
    );
}
