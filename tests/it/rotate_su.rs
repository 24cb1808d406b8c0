//! `su = "user:group"` with a root daemon: the job's file work is done as that user, on a
//! thread of its own, while the rest of the daemon stays root. A folder the user cannot write
//! to is therefore refused (naming the user and the folder) where the same job without `su`
//! rotates; and while a rotation with `su` compresses, the thread doing it runs as the user
//! with no supplementary group and no capability (its real and saved uid root, so that the
//! user cannot signal it), and the file it creates is the user's.
//!
//! The daemon that cannot switch users (the hardened unit's case) is covered by
//! `fault_rotate_a_folder_swapped_mid_rotation_changes_nothing_outside_as_a_non_root_daemon`: it rotates with `su` set, as itself.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::harness::{self, Daemon, process, toml_path};

const NOBODY: u32 = 65534;
const NOGROUP: u32 = 65534;

fn job(name: &str, log: &Path, extra: &str) -> String {
    format!(
        "[jobs.{name}]\nkind = \"rotate\"\npaths = [{}]\nmax-size = \"1GiB\"\nreopen-command = [\"true\"]\n{extra}\n",
        toml_path(log)
    )
}

/// `dir/NAME/app.log`, the folder owned by `owner`:nogroup with `mode`, the log by nobody.
fn folder(dir: &Path, name: &str, owner: u32, mode: u32) -> std::path::PathBuf {
    let app = dir.join(name);
    std::fs::create_dir(&app).expect("mkdir");
    std::os::unix::fs::chown(&app, Some(owner), Some(NOGROUP)).expect("chown the folder");
    harness::set_mode(&app, mode);
    let log = app.join("app.log");
    std::fs::write(&log, "a line\n").expect("write the log");
    std::os::unix::fs::chown(&log, Some(NOBODY), Some(NOGROUP)).expect("chown the log");
    harness::set_mode(&log, 0o640);
    log
}

/// The thread id in a `/proc/PID/task/TID/status`.
fn task_id(status: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .map(|v| v.trim().to_owned())
        .expect("Pid:")
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn rotate_su_works_as_the_user_so_a_folder_it_cannot_write_is_refused() {
    assert!(
        harness::is_root(),
        "this test runs the daemon as root with su = nobody: run it as root (as CI does)"
    );
    let root = harness::tempdir();
    // root:nogroup 0750: trusted (only root writes there), nobody may read but not write.
    let log = folder(root.path(), "app", 0, 0o750);
    let app = log.parent().expect("folder").to_path_buf();
    let daemon = Daemon::builder(root.path())
        .toml(&job("as-su", &log, "su = \"nobody:nogroup\""))
        .toml(&job("as-daemon", &log, ""))
        .spawn();

    let out = daemon.ctl(["run", "as-su", "--wait", "--force"]);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert_eq!(
        out.status,
        1,
        "nobody cannot rename in {}: {out:?}",
        app.display()
    );
    assert!(
        text.contains("as nobody:nogroup, its su")
            && text.contains(&app.display().to_string())
            && text.contains("Permission denied"),
        "the error names the user and the folder: {text}"
    );
    assert_eq!(
        std::fs::read(&log).expect("log"),
        b"a line\n",
        "not rotated"
    );
    assert_eq!(names(&app), ["app.log"], "nothing created");

    let out = daemon.ctl(["run", "as-daemon", "--wait", "--force"]);
    assert_eq!(out.status, 0, "root rotates there: {out:?}");
    assert_eq!(names(&app), ["app.log", "app.log.1.zst"]);
}

#[test]
fn rotate_su_refuses_a_log_the_user_could_not_recreate_before_moving_it() {
    assert!(
        harness::is_root(),
        "this test runs the daemon as root with su = nobody: run it as root (as CI does)"
    );
    let root = harness::tempdir();
    // nobody's folder, but a log of root's: nobody could not give the fresh log that owner.
    let log = folder(root.path(), "app", NOBODY, 0o755);
    std::os::unix::fs::chown(&log, Some(0), Some(0)).expect("chown the log");
    let app = log.parent().expect("folder").to_path_buf();
    let daemon = Daemon::builder(root.path())
        .toml(&job("logs", &log, "su = \"nobody:nogroup\""))
        .spawn();
    let out = daemon.ctl(["run", "logs", "--wait", "--force"]);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert_eq!(out.status, 1, "{out:?}");
    assert!(
        text.contains("belongs to uid 0 gid 0, which atpred (uid 65534) cannot give")
            && text.contains("the job works as nobody:nogroup (its su)"),
        "{text}"
    );
    assert_eq!(names(&app), ["app.log"], "nothing moved");
    assert_eq!(std::fs::read(&log).expect("log"), b"a line\n");
}

#[test]
fn rotate_su_files_are_made_by_the_user_on_its_own_thread() {
    assert!(
        harness::is_root(),
        "this test runs the daemon as root with su = nobody: run it as root (as CI does)"
    );
    let root = harness::tempdir();
    // The application's folder, nobody's own: trusted through su.
    let log = folder(root.path(), "app", NOBODY, 0o750);
    let app = log.parent().expect("folder").to_path_buf();
    let mut daemon = Daemon::builder(root.path())
        .toml(&job("logs", &log, "su = \"nobody:nogroup\""))
        .env("ATPRED_TEST_PAUSE_AT", "compressing")
        .spawn();
    let out = daemon.ctl(["run", "logs", "--force"]);
    assert_eq!(out.status, 0, "{out:?}");
    let paused = harness::wait_until(Duration::from_secs(30), || {
        daemon.log().contains("test hook: paused at compressing")
    });
    assert!(paused, "never reached compressing:\n{}", daemon.log());

    // Stopped inside the compression: the thread doing it is nobody's, nothing else is.
    let pid = daemon.pid();
    let mut su_threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let status =
            std::fs::read_to_string(task.expect("task").path().join("status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default()
        };
        if field("Uid:") == "0 0 0 0" {
            continue;
        }
        let tid = task_id(&status);
        let mut kill = Command::new("sh");
        kill.args(["-c", "kill -0 \"$0\"", &tid]);
        process::command_as(&mut kill, NOBODY, NOGROUP);
        let out = process::run_with_timeout(&mut kill, Duration::from_secs(10));
        assert!(
            out.status != 0 && out.stderr.contains("not permitted"),
            "nobody may not signal the daemon's thread {tid}: {out:?}"
        );
        // Real, effective, saved, file-system: it acts as nobody, its real and saved ids stay
        // root so that the user nobody can neither signal nor ptrace it.
        assert_eq!(field("Uid:"), "0 65534 0 65534", "{status}");
        assert_eq!(field("Gid:"), "0 65534 0 65534", "{status}");
        assert_eq!(field("Groups:"), "", "no supplementary group: {status}");
        assert_eq!(field("CapEff:"), "0000000000000000", "{status}");
        su_threads.push(field("Name:"));
    }
    assert!(
        su_threads.iter().any(|n| n == "atpred-su"),
        "a thread of the daemon runs as nobody while it compresses: {su_threads:?}"
    );
    let main = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    assert!(
        main.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Uid:", "0", "0", "0", "0"]),
        "the daemon itself stays root: {main}"
    );
    // What the thread created, it created as nobody: the fresh log and the compressed temp.
    for name in ["app.log", ".app.log.1.zst.atpred-tmp"] {
        let meta = std::fs::symlink_metadata(app.join(name)).expect(name);
        use std::os::unix::fs::MetadataExt;
        assert_eq!((meta.uid(), meta.gid()), (NOBODY, NOGROUP), "{name}");
    }
    daemon.signal(Signal::SIGKILL);
    assert!(
        daemon.wait_exit(Duration::from_secs(10)).is_some(),
        "SIGKILL ends it"
    );
}
