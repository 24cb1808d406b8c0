//! Control-socket exhaustion by a member of the socket group, through the real daemon: the two
//! floods of issue 14, each run by `nobody` holding the socket group, while root's
//! `atprectl status` must still answer.
//!
//! - 256 connections each sending `hello` and 2,000 `history` requests and never reading: one
//!   user holds at most `PER_UID` connections (the rest are refused with `busy`), and a
//!   connection whose replies go unread is closed after `WRITE_TIMEOUT`.
//! - 256 connections each sending a 4 MiB line without a newline: a request over
//!   `MAX_REQUEST` (64 KiB) is a framing error, so the daemon's memory stays bounded.
//!
//! Each prints the daemon's peak RSS (`VmHWM`) and root's `status` latency, and records a row
//! of the fault summary.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::core_support::{assert_no_panic, sh_job};
use crate::fault_support::{self, Row, open_fds};
use crate::harness::{self, Daemon, process::kill_and_reap};

const NOBODY: u32 = 65534;
/// The socket group the flooder holds (Debian's `daemon`).
const GROUP: &str = "daemon";
const CONNECTIONS: usize = 256;

/// Opens `n` connections, then sends each the payload of `mode`, never reads, prints a JSON
/// line of counts, and holds every connection until its stdin closes.
const FLOODER: &str = r#"
import json, socket, sys
path, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
hello = b'{"type":"hello","protocol":1,"client":"flood"}\n'
if mode == "history":
    payload = hello + b'{"type":"history","limit":10000}\n' * 2000
else:
    payload = hello + b'x' * (4 << 20)
counts = {"connected": 0, "sent": 0, "cut": 0}
socks = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError:
        continue
    s.settimeout(30)
    socks.append(s)
counts["connected"] = len(socks)
for s in socks:
    try:
        s.sendall(payload)
        counts["sent"] += 1
    except OSError:
        counts["cut"] += 1
print(json.dumps(counts), flush=True)
sys.stdin.readline()
"#;

/// The flooder, run as `nobody` with the socket group as its only supplementary group.
struct Flooder {
    child: Child,
    counts: serde_json::Value,
}

impl Flooder {
    fn start(daemon: &Daemon, mode: &str, gid: u32) -> Flooder {
        harness::require_binary("python3", "apt-get install python3");
        harness::require_binary("setpriv", "apt-get install util-linux");
        let mut child = Command::new("setpriv")
            .arg(format!("--reuid={NOBODY}"))
            .arg(format!("--regid={NOBODY}"))
            .arg(format!("--groups={gid}"))
            .args(["/usr/bin/python3", "-c", FLOODER])
            .arg(daemon.socket())
            .arg(mode)
            .arg(CONNECTIONS.to_string())
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the flooder");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the flooder's counts");
        let counts = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the flooder printed {line:?}: {e}"));
        Flooder { child, counts }
    }

    fn stop(mut self) {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        kill_and_reap(&mut self.child);
    }
}

/// `VmHWM` (peak resident set) of `pid` in KiB.
fn peak_rss_kib(pid: nix::unistd::Pid) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// Root's `atprectl status`, `n` times: the slowest, and whether every one answered.
fn root_status(daemon: &Daemon, n: usize) -> (Duration, Vec<String>) {
    let mut slowest = Duration::ZERO;
    let mut failures = Vec::new();
    for _ in 0..n {
        let at = Instant::now();
        let out = daemon.ctl(["status"]);
        slowest = slowest.max(at.elapsed());
        if out.status != 0 {
            failures.push(format!("exit {}: {}", out.status, out.stderr.trim()));
        }
    }
    (slowest, failures)
}

fn socket_gid() -> u32 {
    nix::unistd::Group::from_name(GROUP)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("the system group {GROUP:?} is missing (Debian has it)"))
        .gid
        .as_raw()
}

fn flood_daemon(dir: &tempfile::TempDir) -> Daemon {
    assert!(
        harness::is_root(),
        "the flood runs as nobody and needs root"
    );
    Daemon::builder(dir)
        .socket_group(GROUP)
        .toml(&sh_job("noop", "echo a line of output for the history", ""))
        .spawn()
}

#[test]
fn fault_socket_flood_of_unread_history_replies_leaves_root_served() {
    let dir = harness::tempdir();
    let daemon = flood_daemon(&dir);
    let gid = socket_gid();
    // A history worth reading: each reply is several KiB, so unread replies fill the socket.
    for _ in 0..20 {
        assert_eq!(daemon.ctl(["run", "noop", "--wait"]).status, 0);
    }
    let fds_before = open_fds(daemon.pid());
    let flood = Flooder::start(&daemon, "history", gid);
    let (slowest, failures) = root_status(&daemon, 5);
    // The flooder's own user is told plainly that the daemon is busy, with exit code 75.
    let member = daemon.ctl_as(NOBODY, gid, ["status"]);
    // Replies left unread: the daemon gives up on those connections after its write timeout,
    // while the flooder still holds them open.
    let mut fds_during = 0;
    let released = harness::wait_until(Duration::from_secs(30), || {
        fds_during = open_fds(daemon.pid());
        fds_during <= fds_before + 2
    });
    let peak = peak_rss_kib(daemon.pid());
    let counts = flood.counts.clone();
    flood.stop();
    eprintln!(
        "fault_socket_flood history: flooder {counts}; root status slowest {slowest:?}; \
         member got exit {} {:?}; fds {fds_before} before, {fds_during} while held; peak RSS \
         {peak} KiB",
        member.status,
        member.stderr.trim()
    );
    fault_support::record(&Row {
        scenario: "socket flood: 256 connections of unread history replies",
        seed: None,
        runs: 1,
        faults: CONNECTIONS,
        losses: failures.len() + usize::from(!released),
        crashes: usize::from(!failures.is_empty()),
        notes: format!(
            "peak RSS {} MiB, root status slowest {} ms",
            peak / 1024,
            slowest.as_millis()
        ),
    });
    assert!(failures.is_empty(), "root's status failed: {failures:?}");
    assert_eq!(member.status, 75, "{member:?}");
    assert!(
        member
            .stderr
            .starts_with("atprectl: atpred is busy: uid 65534 already has"),
        "a plain sentence: {member:?}"
    );
    assert!(!member.stderr.contains("Error {"), "{member:?}");
    assert!(
        released,
        "connections with unread replies still held: {fds_during} fds, {fds_before} before"
    );
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
    assert_no_panic(&daemon);
}

#[test]
fn fault_socket_flood_of_unterminated_4_mib_lines_keeps_memory_bounded() {
    let dir = harness::tempdir();
    let daemon = flood_daemon(&dir);
    let gid = socket_gid();
    let flood = Flooder::start(&daemon, "line", gid);
    let (slowest, failures) = root_status(&daemon, 5);
    let peak = peak_rss_kib(daemon.pid());
    let counts = flood.counts.clone();
    flood.stop();
    eprintln!(
        "fault_socket_flood line: flooder {counts}; root status slowest {slowest:?}; peak RSS \
         {peak} KiB"
    );
    fault_support::record(&Row {
        scenario: "socket flood: 256 unterminated 4 MiB lines",
        seed: None,
        runs: 1,
        faults: CONNECTIONS,
        losses: failures.len(),
        crashes: usize::from(!failures.is_empty()),
        notes: format!(
            "peak RSS {} MiB, root status slowest {} ms",
            peak / 1024,
            slowest.as_millis()
        ),
    });
    assert!(failures.is_empty(), "root's status failed: {failures:?}");
    assert_eq!(
        counts["cut"].as_u64(),
        Some(CONNECTIONS as u64),
        "every 4 MiB line is cut off by the daemon: {counts}"
    );
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
    assert!(daemon.ctl(["status"]).status == 0);
    assert_no_panic(&daemon);
}
