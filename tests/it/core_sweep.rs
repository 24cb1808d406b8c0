//! The start-up sweep ends what a crashed daemon left running, and nothing else: not a
//! stranger's group that copied the marker variable (the nginx shape: a root-led group with a
//! `nobody` worker), not a group led by a process without the marker, and nothing at all after
//! a clean stop (a `command` job's deliberately detached child lives on). Under systemd (a
//! `.service` cgroup made by the test, `INVOCATION_ID` set) the cgroup is the source of truth:
//! a leftover that shed the marker is still found. Needs root and a cgroup2 hierarchy.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::core_support::{assert_group_gone, sh_job, start_run, wait_for_pids};
use crate::harness::{self, Daemon, process_alive};

/// Kills the groups it holds when dropped, so a failing test leaves nothing running.
struct Groups(Vec<Pid>, Vec<Child>);

impl Drop for Groups {
    fn drop(&mut self) {
        for pgid in &self.0 {
            let _ = killpg(*pgid, Signal::SIGKILL);
        }
        for child in &mut self.1 {
            let _ = child.wait();
        }
    }
}

/// The value of `ATPRED_GROUPS` in `pid`'s environment.
fn marker_of(pid: Pid) -> String {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    environ
        .split(|&b| b == 0)
        .find_map(|var| var.strip_prefix(b"ATPRED_GROUPS="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_else(|| panic!("no ATPRED_GROUPS in the environment of {pid}"))
}

/// A group led by a root `sleep` that carries no marker, with one worker (run as `worker_uid`)
/// carrying `ATPRED_GROUPS=marker`. Returns the group (its leader's pid) and the worker's pid.
fn stranger_group(dir: &Path, name: &str, worker_uid: u32, marker: &str) -> (Child, Pid, Pid) {
    let pidfile = dir.join(name);
    let script = "setpriv --reuid=$1 --regid=$1 --clear-groups env ATPRED_GROUPS=$2 sleep 1000 & \
                  echo $! > $3; exec sleep 1000";
    let child = Command::new("sh")
        .args(["-c", script, "sh"])
        .arg(worker_uid.to_string())
        .arg(marker)
        .arg(&pidfile)
        .env_remove("ATPRED_GROUPS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn the stranger's group");
    let leader = Pid::from_raw(child.id() as i32);
    let worker = wait_for_pids(&pidfile)[0];
    assert!(
        harness::wait_until(Duration::from_secs(5), || {
            std::fs::read(format!("/proc/{worker}/environ"))
                .is_ok_and(|e| e.windows(14).any(|w| w == b"ATPRED_GROUPS="))
        }),
        "the worker carries the variable"
    );
    (child, leader, worker)
}

#[test]
fn the_sweep_spares_strangers_carrying_the_marker_and_groups_they_do_not_lead() {
    assert!(
        harness::is_root(),
        "this test runs processes as nobody and needs root"
    );
    let dir = harness::tempdir();
    let pids = dir.path().join("pids");
    let script = format!(
        "trap '' TERM; sleep 1000 & echo $$ $! > {}; wait",
        pids.display()
    );
    let mut daemon = Daemon::builder(&dir)
        .toml(&sh_job("hold", &script, "timeout = \"10m\""))
        .spawn();
    start_run(&daemon, "hold");
    let job = wait_for_pids(&pids);
    // The marker exactly as this daemon's children carry it: a stranger who read it.
    let marker = marker_of(job[0]);
    let (nobody_child, nobody_leader, nobody_worker) =
        stranger_group(dir.path(), "nobody", 65534, &marker);
    let (root_child, root_leader, root_worker) = stranger_group(dir.path(), "root", 0, &marker);
    let _cleanup = Groups(
        vec![nobody_leader, root_leader, job[0]],
        vec![nobody_child, root_child],
    );

    daemon.signal(Signal::SIGKILL);
    assert!(daemon.wait_exit(Duration::from_secs(10)).is_some());
    daemon.restart();

    for (what, pid) in [
        ("the root leader of the nobody worker", nobody_leader),
        ("the nobody worker", nobody_worker),
        ("the root leader without the marker", root_leader),
        ("its root worker carrying the marker", root_worker),
    ] {
        assert!(
            process_alive(pid),
            "{what} ({pid}) was killed:\n{}",
            daemon.log()
        );
    }
    // A real crash still gets its own leftovers ended, and says why.
    assert_group_gone(job[0]);
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains(&format!("ended process group {}", job[0])))
        .unwrap_or_else(|| panic!("no line for the job's group:\n{log}"));
    assert!(line.contains("did not stop cleanly"), "{line}");
    for pgid in [nobody_leader, root_leader] {
        assert!(
            !log.contains(&format!("process group {pgid} ")),
            "a stranger's group is named:\n{log}"
        );
    }
}

/// A job whose shell starts a detached child (`setsid`, its own session and group) and writes
/// its pid to `det`.
fn detaching_daemon(dir: &Path, det: &Path) -> Daemon {
    let script = format!(
        "setsid sh -c 'echo $$ > {det}; exec sleep 1000' </dev/null >/dev/null 2>&1 & \
         while [ ! -s {det} ]; do sleep 0.05; done",
        det = det.display()
    );
    Daemon::builder(dir)
        .toml(&sh_job("detach", &script, ""))
        .spawn()
}

#[test]
fn a_detached_child_survives_a_clean_stop_and_restart() {
    let dir = harness::tempdir();
    let det = dir.path().join("detached");
    let mut daemon = detaching_daemon(dir.path(), &det);
    let out = daemon.ctl(["run", "detach", "--wait"]);
    assert_eq!(out.status, 0, "{out:?}");
    let detached = wait_for_pids(&det)[0];
    let _cleanup = Groups(vec![detached], Vec::new());
    assert!(process_alive(detached));

    daemon.restart(); // SIGTERM: a clean stop, then a start
    assert!(
        process_alive(detached),
        "the detached child was killed after a clean stop:\n{}",
        daemon.log()
    );
    let log = daemon.log();
    for false_claim in ["ended process group", "crashed", "did not stop cleanly"] {
        assert!(!log.contains(false_claim), "{false_claim:?} in:\n{log}");
    }
}

#[test]
fn a_detached_child_is_ended_after_a_crash() {
    let dir = harness::tempdir();
    let det = dir.path().join("detached");
    let mut daemon = detaching_daemon(dir.path(), &det);
    let out = daemon.ctl(["run", "detach", "--wait"]);
    assert_eq!(out.status, 0, "{out:?}");
    let detached = wait_for_pids(&det)[0];
    let _cleanup = Groups(vec![detached], Vec::new());

    daemon.signal(Signal::SIGKILL);
    assert!(daemon.wait_exit(Duration::from_secs(10)).is_some());
    daemon.restart();
    assert_group_gone(detached);
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains(&format!("ended process group {detached} (sleep)")))
        .unwrap_or_else(|| panic!("no line for the detached child:\n{log}"));
    assert!(
        line.contains("run marker") && line.contains("did not stop cleanly"),
        "the line says what was found and why: {line}"
    );
}

/// A cgroup named like a systemd service on the unified hierarchy, removed (its processes
/// killed first) when dropped.
struct ServiceCgroup(std::path::PathBuf);

impl ServiceCgroup {
    fn new() -> ServiceCgroup {
        let root = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.join("cgroup.procs").exists() && p.join("cgroup.subtree_control").exists())
            .unwrap_or_else(|| panic!("no writable unified cgroup hierarchy (cgroup2) mounted"));
        let path = root.join(format!("atpred-sweep-{}.service", std::process::id()));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        ServiceCgroup(path)
    }
}

impl Drop for ServiceCgroup {
    fn drop(&mut self) {
        let procs = std::fs::read_to_string(self.0.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        harness::wait_until(Duration::from_secs(5), || {
            std::fs::remove_dir(&self.0).is_ok()
        });
    }
}

/// The daemon as systemd would start it: `INVOCATION_ID` set, inside a `.service` cgroup
/// (`ATPRED_TEST_CGROUP`), which the shell joins before it becomes the daemon.
fn in_service_cgroup(config: &Path) -> Command {
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "echo $$ > \"$ATPRED_TEST_CGROUP/cgroup.procs\" && exec \"$0\" --config \"$1\"",
        env!("CARGO_BIN_EXE_atpred"),
    ])
    .arg(config);
    cmd
}

/// Under systemd the service's cgroup decides: a leftover that shed the marker from its
/// environment is still ended, because it is in the crashed service's cgroup.
#[test]
fn under_systemd_the_services_cgroup_finds_leftovers_without_the_marker() {
    assert!(
        harness::is_root(),
        "this test makes a cgroup and needs root"
    );
    let cgroup = ServiceCgroup::new();
    let dir = harness::tempdir();
    let det = dir.path().join("detached");
    let script = format!(
        "env -u ATPRED_GROUPS setsid sh -c 'echo $$ > {det}; exec sleep 1000' \
         </dev/null >/dev/null 2>&1 & while [ ! -s {det} ]; do sleep 0.05; done",
        det = det.display()
    );
    let mut daemon = Daemon::builder(&dir)
        .toml(&sh_job("detach", &script, ""))
        .env("INVOCATION_ID", "0123456789abcdef0123456789abcdef")
        .env("ATPRED_TEST_CGROUP", &cgroup.0)
        .launcher(in_service_cgroup)
        .spawn();
    let out = daemon.ctl(["run", "detach", "--wait"]);
    assert_eq!(out.status, 0, "{out:?}");
    let detached = wait_for_pids(&det)[0];
    let _cleanup = Groups(vec![detached], Vec::new());
    let environ = std::fs::read(format!("/proc/{detached}/environ")).expect("environ");
    assert!(
        !environ.windows(14).any(|w| w == b"ATPRED_GROUPS="),
        "the leftover carries no marker"
    );

    daemon.signal(Signal::SIGKILL);
    assert!(daemon.wait_exit(Duration::from_secs(10)).is_some());
    daemon.restart();
    assert_group_gone(detached);
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains(&format!("ended process group {detached} (sleep)")))
        .unwrap_or_else(|| panic!("no line for the leftover:\n{log}"));
    assert!(line.contains("in this service's cgroup"), "{line}");
    drop(daemon);
}
