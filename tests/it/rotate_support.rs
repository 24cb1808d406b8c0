//! Shared by the `rotate_*` tests: a real writer process appending numbered lines, a daemon with
//! one rotate job, and the count of every number across the current and rotated (decompressed)
//! files.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};

use crate::harness::{self, CtlOutput, Daemon, DaemonBuilder, toml_path};

/// Appends "N\n" for N = FIRST, FIRST + 1, ... (O_APPEND, one write per line) as fast as it can
/// or with PAUSE seconds between lines, reopens its log on SIGHUP, and on SIGTERM writes the last
/// N to its done file. On a full disk it keeps the rest of the line and retries it (like a logger
/// that blocks), so a short write never tears a line and no number is skipped.
const WRITER: &str = r#"
import errno, os, signal, sys, time
path, pidfile, donefile = sys.argv[1:4]
first, pause = int(sys.argv[4]), float(sys.argv[5])
flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
state = {"reopen": False, "stop": False}
signal.signal(signal.SIGHUP, lambda *a: state.__setitem__("reopen", True))
signal.signal(signal.SIGTERM, lambda *a: state.__setitem__("stop", True))
fd = os.open(path, flags, 0o640)
with open(pidfile + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(pidfile + ".tmp", pidfile)
n = first - 1
while not state["stop"]:
    if state["reopen"]:
        state["reopen"] = False
        os.close(fd)
        fd = os.open(path, flags, 0o640)
    n += 1
    line = b"%d\n" % n
    while line:
        try:
            line = line[os.write(fd, line):]
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            time.sleep(0.01)
    if pause:
        time.sleep(pause)
os.close(fd)
with open(donefile, "w") as f:
    f.write(str(n))
"#;

/// A running writer; see [`WRITER`].
pub struct Writer {
    child: Option<Child>,
    pub pid_file: PathBuf,
    done_file: PathBuf,
}

impl Writer {
    /// Starts a writer on `log`, returning once it has written its pid file and a line.
    pub fn start(dir: &Path, log: &Path) -> Writer {
        Writer::start_at(dir, log, 1, Duration::ZERO)
    }

    /// A writer whose first line is `first` (the lines before it are already in `log`), pausing
    /// `pause` after each line.
    pub fn start_at(dir: &Path, log: &Path, first: u64, pause: Duration) -> Writer {
        let already = std::fs::metadata(log).map_or(0, |m| m.len());
        let python = harness::process::find_in_path("python3").unwrap_or_else(|| {
            panic!("python3 is needed for the log writer: apt-get install python3 (see .ci/deps)")
        });
        let script = dir.join("writer.py");
        std::fs::write(&script, WRITER).expect("write writer.py");
        let pid_file = dir.join("writer.pid");
        let done_file = dir.join("writer.done");
        let _ = std::fs::remove_file(&pid_file);
        let _ = std::fs::remove_file(&done_file);
        let child = Command::new(python)
            .arg(&script)
            .arg(log)
            .arg(&pid_file)
            .arg(&done_file)
            .arg(first.to_string())
            .arg(pause.as_secs_f64().to_string())
            .stdin(Stdio::null())
            .spawn()
            .expect("start the writer");
        let started = harness::wait_until(Duration::from_secs(10), || {
            pid_file.exists() && std::fs::metadata(log).is_ok_and(|m| m.len() > already)
        });
        assert!(started, "the writer did not start");
        Writer {
            child: Some(child),
            pid_file,
            done_file,
        }
    }

    /// Stops the writer and returns the last number it wrote.
    pub fn stop(mut self) -> u64 {
        let mut child = self.child.take().expect("running");
        kill(harness::process::pid_of(&child), Signal::SIGTERM).expect("SIGTERM the writer");
        let status = harness::process::wait_timeout(&mut child, Duration::from_secs(10));
        assert!(status.is_some_and(|s| s.success()), "writer: {status:?}");
        std::fs::read_to_string(&self.done_file)
            .expect("the writer's done file")
            .trim()
            .parse()
            .expect("a number")
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            harness::process::kill_and_reap(child);
        }
    }
}

/// A directory for logs (mode 0755, owned by the test's user), inside `root`.
pub fn log_dir(root: &Path) -> PathBuf {
    let dir = root.join("logs");
    std::fs::create_dir_all(&dir).expect("create the log dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// A daemon with `[jobs.logs]` of kind rotate over `log`, plus `extra` TOML lines.
pub fn daemon(root: &Path, log: &Path, extra: &str) -> DaemonBuilder {
    Daemon::builder(root).toml(&format!(
        "[jobs.logs]\nkind = \"rotate\"\npaths = [{}]\ntimeout = \"2m\"\n{extra}",
        toml_path(log)
    ))
}

/// `reopen = { pid-file = ..., signal = "HUP" }` for `writer`.
pub fn reopen(writer: &Writer) -> String {
    format!(
        "reopen = {{ pid-file = {}, signal = \"HUP\" }}",
        toml_path(&writer.pid_file)
    )
}

/// `atprectl run logs ARGS --wait`.
pub fn run(daemon: &Daemon, args: &[&str]) -> CtlOutput {
    let mut all = vec!["run", "logs", "--wait"];
    all.extend_from_slice(args);
    daemon.ctl(all)
}

/// Names in `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The bytes of a log file, decompressed by its suffix.
pub fn contents(path: &Path) -> Vec<u8> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    let name = path.to_string_lossy();
    if name.ends_with(".zst") {
        zstd::stream::read::Decoder::new(file)
            .expect("zstd")
            .read_to_end(&mut out)
            .expect("decompress zstd");
    } else if name.ends_with(".gz") {
        flate2::read::MultiGzDecoder::new(file)
            .read_to_end(&mut out)
            .expect("decompress gzip");
    } else {
        std::io::BufReader::new(file)
            .read_to_end(&mut out)
            .expect("read");
    }
    out
}

/// How often each number 1..=last appears across every file of `base` in `dir` (the log and its
/// rotated files, whatever their naming): `(missing, duplicated, files)`. Panics on a line that
/// is not a number (a torn or zero-filled line).
pub fn tally(dir: &Path, base: &str, last: u64) -> (Vec<u64>, Vec<u64>, usize) {
    let mut seen = vec![0u8; last as usize + 1];
    let mut files = 0;
    for name in names(dir) {
        if !name.starts_with(base) {
            continue;
        }
        files += 1;
        let bytes = contents(&dir.join(&name));
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let n: u64 = std::str::from_utf8(line)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("{name}: not a number: {line:?}"));
            assert!(n >= 1 && n <= last, "{name}: {n} out of 1..={last}");
            seen[n as usize] = seen[n as usize].saturating_add(1);
        }
    }
    let missing = (1..=last).filter(|n| seen[*n as usize] == 0).collect();
    let dup = (1..=last).filter(|n| seen[*n as usize] > 1).collect();
    (missing, dup, files)
}
