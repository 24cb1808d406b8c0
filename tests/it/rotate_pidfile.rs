//! The reopen pid-file is a claim, not an order: one written by another user, or naming a
//! process that does not run as the log's owner, is refused and nothing is signalled; a
//! trusted one is signalled through a pidfd.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use crate::harness::{self, toml_path};
use crate::rotate_support::{daemon, log_dir, run};

const NOBODY: u32 = 65534;

/// `sleep 300`, as `uid` (root or nobody): the process a pid-file names.
fn sleeper(uid: u32) -> Child {
    Command::new("sleep")
        .arg("300")
        .uid(uid)
        .gid(uid)
        .spawn()
        .expect("start sleep")
}

/// A folder owned by nobody with `app.pid` written by nobody, holding `pid`.
fn pid_file_by_nobody(root: &Path, pid: u32) -> PathBuf {
    let run_dir = root.join("run");
    std::fs::create_dir(&run_dir).expect("create run dir");
    std::os::unix::fs::chown(&run_dir, Some(NOBODY), Some(NOBODY)).expect("chown run dir");
    let pid_file = run_dir.join("app.pid");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("echo {pid} > '{}'", pid_file.display()))
        .uid(NOBODY)
        .gid(NOBODY)
        .status()
        .expect("run sh as nobody");
    assert!(status.success(), "nobody writes the pid-file");
    assert_eq!(
        std::fs::metadata(&pid_file).expect("pid-file").uid(),
        NOBODY
    );
    pid_file
}

fn job(pid_file: &Path) -> String {
    format!(
        "max-size = \"1GiB\"\nreopen = {{ pid-file = {}, signal = \"TERM\" }}",
        toml_path(pid_file)
    )
}

fn alive(child: &mut Child) -> bool {
    matches!(child.try_wait(), Ok(None))
}

#[test]
fn rotate_pidfile_written_by_nobody_never_gets_a_root_process_signalled() {
    assert!(
        harness::is_root(),
        "this test hands files to nobody: run it as root (as CI does)"
    );
    let root = harness::tempdir();
    let dir = log_dir(root.path());
    let log = dir.join("app.log");
    std::fs::write(&log, "line\n").expect("write the log");
    let mut victim = sleeper(0);
    let pid_file = pid_file_by_nobody(root.path(), victim.id());
    let other = dir.join("other.log");
    std::fs::write(&other, "line\n").expect("write the other log");
    std::os::unix::fs::chown(&other, Some(NOBODY), Some(NOBODY)).expect("chown the log");
    let daemon = daemon(root.path(), &log, &job(&pid_file))
        .toml(&format!(
            "[jobs.other]\nkind = \"rotate\"\npaths = [{}]\n{}",
            toml_path(&other),
            job(&pid_file)
        ))
        .spawn();

    // app.log is root's: a pid-file of nobody's is not believed.
    let out = run(&daemon, &["--force"]);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert_ne!(out.status, 0, "{out:?}");
    assert!(
        text.contains(
            "belongs to uid 65534, not to root, atpred's user or the log's owner (uid 0)"
        ) && text.contains("not trusted to name the process to signal"),
        "{text}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(alive(&mut victim), "the root process was signalled");

    // other.log is nobody's, so nobody's pid-file is believed, but the process it names is
    // root's: not signalled either.
    let out = daemon.ctl(["run", "other", "--wait", "--force"]);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert_ne!(out.status, 0, "{out:?}");
    assert!(
        text.contains(&format!(
            "process {} (named by {}) runs as uid 0, not as the log's owner (uid 65534)",
            victim.id(),
            pid_file.display()
        )),
        "{text}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(alive(&mut victim), "the root process was signalled");
    harness::process::kill_and_reap(&mut victim);
}

#[test]
fn rotate_pidfile_of_the_logs_owner_naming_its_process_is_signalled() {
    assert!(
        harness::is_root(),
        "this test hands files to nobody: run it as root (as CI does)"
    );
    let root = harness::tempdir();
    let dir = log_dir(root.path());
    let log = dir.join("app.log");
    std::fs::write(&log, "line\n").expect("write the log");
    std::os::unix::fs::chown(&log, Some(NOBODY), Some(NOBODY)).expect("chown the log");
    let mut writer = sleeper(NOBODY);
    let pid_file = pid_file_by_nobody(root.path(), writer.id());
    let daemon = daemon(root.path(), &log, &job(&pid_file)).spawn();
    let out = run(&daemon, &["--force"]);
    assert_eq!(out.status, 0, "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("sent SIGTERM to pid {}", writer.id())),
        "{out:?}"
    );
    let ended = harness::process::wait_timeout(&mut writer, Duration::from_secs(10));
    assert!(ended.is_some(), "nobody's own process got the signal");
}
