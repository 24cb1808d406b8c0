//! Rotation against a folder swap racer: a user who owns the log folder's parent watches the
//! folder with inotify and, the moment the log is renamed away, renames the folder and puts a
//! symlink to a root-owned folder in its place. With the folder opened once and every step
//! taken through that handle, nothing appears, changes or disappears in the root-owned folder.

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

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn fault_rotate_a_folder_swapped_mid_rotation_changes_nothing_outside() {
    assert!(
        harness::is_root(),
        "the racer runs as nobody: run this as root (as CI does)"
    );
    let rounds = fault_support::rounds(50, 200);
    let root = harness::tempdir();
    // base/ and base/app/ belong to nobody (the application's user); outside/ is root's.
    let base = root.path().join("base");
    let app = base.join("app");
    let outside = root.path().join("outside");
    for d in [&base, &app, &outside] {
        std::fs::create_dir(d).expect("mkdir");
        harness::set_mode(d, 0o755);
    }
    for d in [&base, &app] {
        std::os::unix::fs::chown(d, Some(NOBODY), Some(NOBODY)).expect("chown");
    }
    for name in ["precious", "app.log.5"] {
        std::fs::write(outside.join(name), "root's\n").expect("write outside");
        harness::set_mode(&outside.join(name), 0o600);
    }
    let log = app.join("app.log");
    std::fs::write(&log, "").expect("create the log");
    std::os::unix::fs::chown(&log, Some(NOBODY), Some(NOBODY)).expect("chown the log");
    let before = snapshot(&outside);
    let daemon = Daemon::builder(root.path())
        .toml(&format!(
            "[jobs.logs]\nkind = \"rotate\"\npaths = [{}]\nmax-size = \"1GiB\"\nreopen-command = [\"true\"]\nkeep = 3\nsu = \"nobody:nogroup\"\ntimeout = \"2m\"\n",
            toml_path(&log)
        ))
        .spawn();
    let (mut racer, done) = start_racer(root.path(), &app, &outside);
    let (mut changed, mut failed) = (0, Vec::new());
    for round in 1..=rounds {
        std::fs::write(&log, format!("round {round}\n")).expect("write the log");
        let out = daemon.ctl(["run", "logs", "--wait", "--force"]);
        if out.status != 0 {
            failed.push(format!("round {round}: {}{}", out.stdout, out.stderr));
        }
        let seen = harness::wait_until(Duration::from_secs(10), || lines(&done).len() >= round);
        assert!(seen, "the racer saw no rename of app.log in round {round}");
        if snapshot(&outside) != before {
            changed += 1;
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
    harness::process::kill_and_reap(&mut racer);
    let swaps = lines(&done).iter().filter(|l| *l == "swapped").count();
    let after = snapshot(&outside);
    fault_support::record(&Row {
        scenario: "rotate folder swap race",
        seed: None,
        runs: rounds,
        faults: swaps,
        losses: changed,
        crashes: usize::from(!harness::process_alive(daemon.pid())),
        notes: format!(
            "inotify racer as nobody swaps the log folder for a symlink to a root folder at each rename of the log; {changed} rounds changed the root folder, {} runs failed",
            failed.len()
        ),
    });
    assert_eq!(after, before, "the root-owned folder changed");
    assert_eq!(changed, 0, "the root-owned folder changed during a round");
    assert_eq!(swaps, rounds, "every rotation was raced");
    assert!(failed.is_empty(), "{failed:#?}");
    let names = crate::rotate_support::names(&app);
    assert!(names.iter().any(|n| n == "app.log.1.zst"), "{names:?}");
}
