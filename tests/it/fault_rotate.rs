//! Rotation against a folder swap racer: a user who owns the log folder's parent watches the
//! folder with inotify and, the moment the log is renamed away, renames the folder and puts a
//! symlink to another folder in its place (root's, or the non-root daemon's own). With the
//! folder opened once and every step taken through that handle, nothing appears, changes or
//! disappears in that folder; both with the daemon as root (the job's `su` names the folder's
//! owner) and as a non-root user (the hardened unit's case: no capability to switch users).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::fault_support::{self, Row};
use crate::harness::{self, Daemon, toml_path};

const NOBODY: u32 = 65534;

/// Watches APP (IN_MOVED_FROM) and, when `app.log` is renamed away, swaps APP for a symlink to
/// TARGET; one line per such event in DONE ("swapped" or "skipped"). ctypes: no package needed.
const RACER: &str = r#"
import ctypes, os, struct, sys
app, target, ready, done = sys.argv[1:5]
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init()
if fd < 0 or libc.inotify_add_watch(fd, app.encode(), 0x40) < 0:
    sys.exit("inotify: errno %d" % ctypes.get_errno())
open(ready, "w").close()
away = app + ".away"
while True:
    buf = os.read(fd, 65536)
    i = 0
    while i < len(buf):
        wd, mask, cookie, length = struct.unpack_from("iIII", buf, i)
        name = buf[i + 16:i + 16 + length].rstrip(b"\0")
        i += 16 + length
        if name != b"app.log":
            continue
        what = "skipped"
        if not os.path.islink(app):
            os.rename(app, away)
            os.symlink(target, app)
            what = "swapped"
        with open(done, "a") as f:
            f.write(what + "\n")
"#;

/// Every entry of `dir` (and `dir` itself) with what would show a change.
fn snapshot(dir: &Path) -> BTreeMap<String, (u64, i64, i64, u32, u32, u32)> {
    let mut out = BTreeMap::new();
    let mut add = |name: String, m: std::fs::Metadata| {
        out.insert(
            name,
            (
                m.ino(),
                m.mtime(),
                m.mtime_nsec(),
                m.mode(),
                m.uid(),
                m.gid(),
            ),
        );
    };
    add(".".into(), std::fs::symlink_metadata(dir).expect("stat"));
    for e in std::fs::read_dir(dir).expect("read outside") {
        let e = e.expect("entry");
        add(
            e.file_name().to_string_lossy().into_owned(),
            e.metadata().expect("stat"),
        );
    }
    out
}

fn as_nobody(cmd: &mut Command) -> &mut Command {
    cmd.uid(NOBODY).gid(NOBODY).current_dir("/")
}

fn start_racer(root: &Path, app: &Path, outside: &Path) -> (Child, std::path::PathBuf) {
    // The system's python: one under root's home (pyenv) is out of nobody's reach.
    let python = Path::new("/usr/bin/python3");
    assert!(
        python.exists(),
        "/usr/bin/python3 is needed for the racer: apt-get install python3 (see .ci/deps)"
    );
    let script = root.join("racer.py");
    std::fs::write(&script, RACER).expect("write racer.py");
    harness::set_mode(&script, 0o644);
    let base = app.parent().expect("base");
    let (ready, done) = (base.join("racer.ready"), base.join("racer.done"));
    let child = as_nobody(
        Command::new(python)
            .arg(&script)
            .arg(app)
            .arg(outside)
            .arg(&ready)
            .arg(&done)
            .stdin(Stdio::null()),
    )
    .spawn()
    .expect("start the racer");
    assert!(
        harness::wait_until(Duration::from_secs(10), || ready.exists()),
        "the racer did not start"
    );
    (child, done)
}

/// Kills and reaps the racer however the test ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        harness::process::kill_and_reap(&mut self.0);
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The user the non-root daemon runs as (Debian's `daemon`, uid 1), standing in for the
/// hardened unit's own user: no capability to switch users, the handle is all there is.
const DAEMON_UID: u32 = 1;

/// `atpred` as uid 1: the test's folder, config and notify socket handed to it first.
fn as_daemon_user(config: &Path) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            r#"d=$(dirname "$1"); chown {DAEMON_UID}:{DAEMON_UID} "$d" "$1" && chmod 666 "$d"/notify-*.sock && exec setpriv --reuid={DAEMON_UID} --regid={DAEMON_UID} --clear-groups -- "$0" --config "$1""#
        ))
        .arg(env!("CARGO_BIN_EXE_atpred"))
        .arg(config);
    cmd
}

#[test]
fn fault_rotate_a_folder_swapped_mid_rotation_changes_nothing_outside_as_root_with_su() {
    race("rotate folder swap race (root, su)", 0);
}

#[test]
fn fault_rotate_a_folder_swapped_mid_rotation_changes_nothing_outside_as_a_non_root_daemon() {
    race("rotate folder swap race (non-root daemon)", DAEMON_UID);
}

/// 50 rotations by a daemon running as `daemon_uid`, each raced; the folder swapped in is one
/// that user owns (root's own folder, or the non-root daemon's, where it could write anyway).
fn race(scenario: &str, daemon_uid: u32) {
    assert!(
        harness::is_root(),
        "the racer runs as nobody: run this as root (as CI does)"
    );
    harness::require_binary("setpriv", "apt-get install util-linux");
    let rounds = fault_support::rounds(50, 200);
    let root = harness::tempdir();
    // base/ belongs to nobody (the application's user), base/app/ and the log to the daemon's
    // user when it is not root (it can only create files as itself), outside/ to the daemon's.
    let base = root.path().join("base");
    let app = base.join("app");
    let outside = root.path().join("outside");
    for d in [&base, &app, &outside] {
        std::fs::create_dir(d).expect("mkdir");
        harness::set_mode(d, 0o755);
    }
    let owner = if daemon_uid == 0 { NOBODY } else { daemon_uid };
    std::os::unix::fs::chown(&base, Some(NOBODY), Some(NOBODY)).expect("chown");
    std::os::unix::fs::chown(&app, Some(owner), Some(owner)).expect("chown");
    for name in ["precious", "app.log.5"] {
        std::fs::write(outside.join(name), "the daemon user's own\n").expect("write outside");
        harness::set_mode(&outside.join(name), 0o600);
        std::os::unix::fs::chown(outside.join(name), Some(daemon_uid), Some(daemon_uid))
            .expect("chown");
    }
    std::os::unix::fs::chown(&outside, Some(daemon_uid), Some(daemon_uid)).expect("chown");
    let log = app.join("app.log");
    std::fs::write(&log, "").expect("create the log");
    std::os::unix::fs::chown(&log, Some(owner), Some(owner)).expect("chown the log");
    let before = snapshot(&outside);
    let mut builder = Daemon::builder(root.path()).toml(&format!(
        "[jobs.logs]\nkind = \"rotate\"\npaths = [{}]\nmax-size = \"1GiB\"\nreopen-command = [\"true\"]\nkeep = 3\nsu = \"nobody:nogroup\"\ntimeout = \"2m\"\n",
        toml_path(&log)
    ));
    if daemon_uid != 0 {
        builder = builder.launcher(as_daemon_user);
    }
    let daemon = builder.spawn();
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).expect("status");
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("Uid:");
    assert_eq!(
        uid_line.split_whitespace().nth(2),
        Some(daemon_uid.to_string().as_str()),
        "the daemon's effective uid: {uid_line}"
    );
    let (racer, done) = start_racer(root.path(), &app, &outside);
    let mut racer = Reaped(racer);
    let (mut changed, mut failed) = (0, Vec::new());
    for round in 1..=rounds {
        std::fs::write(&log, format!("round {round}\n")).expect("write the log");
        let out = daemon.ctl(["run", "logs", "--wait", "--force"]);
        if out.status != 0 {
            failed.push(format!("round {round}: {}{}", out.stdout, out.stderr));
        }
        let seen = harness::wait_until(Duration::from_secs(10), || lines(&done).len() >= round);
        if snapshot(&outside) != before {
            changed += 1;
        }
        if !seen {
            failed.push(format!("round {round}: the racer saw no rename of app.log"));
            break;
        }
        // Put the folder back for the next round.
        if app
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            std::fs::remove_file(&app).expect("remove the link");
            std::fs::rename(base.join("app.away"), &app).expect("restore the folder");
        }
    }
    harness::process::kill_and_reap(&mut racer.0);
    let swaps = lines(&done).iter().filter(|l| *l == "swapped").count();
    let after = snapshot(&outside);
    fault_support::record(&Row {
        scenario,
        seed: None,
        runs: rounds,
        faults: swaps,
        losses: changed,
        crashes: usize::from(!harness::process_alive(daemon.pid())),
        notes: format!(
            "inotify racer as nobody swaps the log folder for a symlink to a folder of the daemon's user at each rename of the log; {changed} rounds changed that folder, {} runs failed",
            failed.len()
        ),
    });
    assert_eq!(after, before, "the folder outside changed");
    assert_eq!(changed, 0, "the folder outside changed during a round");
    assert_eq!(swaps, rounds, "every rotation was raced");
    assert!(failed.is_empty(), "{failed:#?}");
    let names = crate::rotate_support::names(&app);
    assert!(names.iter().any(|n| n == "app.log.1.zst"), "{names:?}");
}
