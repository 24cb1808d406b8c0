//! [`Container`]: a Debian root booted with systemd as PID 1 under `systemd-nspawn`, driven
//! with `nsenter` (no systemd on the host, so no machinectl).
//!
//! The root is the cached one `tests/system/rootfs` builds; `--volatile=overlay` keeps it
//! unchanged (every write goes to a tmpfs). nspawn runs in cgroups made for it beforehand (one
//! per hierarchy the host mounts), as nothing on the host hands one out; they are removed when
//! the container is dropped, which stops it with SIGTERM (SIGKILL after 20 s).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What a command printed and its exit code (128 + signal when a signal ended it).
#[derive(Debug)]
pub struct Output {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

pub struct Container {
    nspawn: Child,
    init_pid: u32,
    cgroups: Vec<PathBuf>,
    log: PathBuf,
}

const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

impl Container {
    /// Boots `root` with `bind` mounted read-only at /opt/atpred; returns once systemd inside
    /// reports the system running (or degraded) and `dbus` answers.
    pub fn boot(root: &Path, bind: &Path, scratch: &Path) -> Container {
        let name = format!("atpred-test-{}", std::process::id());
        let cgroups = make_cgroups(&name);
        let log = scratch.join("nspawn.log");
        let out = std::fs::File::create(&log).expect("create nspawn.log");
        let joins: String = cgroups
            .iter()
            .map(|c| format!("echo $$ > {}/cgroup.procs && ", c.display()))
            .collect();
        let nspawn = Command::new("sh")
            .arg("-c")
            .arg(format!("{joins}exec \"$@\""))
            .arg("sh")
            .arg("systemd-nspawn")
            .arg("-D")
            .arg(root)
            .args([
                "--volatile=overlay",
                "-b",
                "--register=no",
                "--keep-unit",
                "--private-network",
                "--console=passive",
            ])
            .arg(format!("--machine={name}"))
            .arg(format!("--bind-ro={}:/opt/atpred", bind.display()))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone log"))
            .stderr(out)
            .spawn()
            .expect("spawn systemd-nspawn");
        let mut container = Container {
            init_pid: 0,
            nspawn,
            cgroups,
            log,
        };
        let deadline = Instant::now() + BOOT_TIMEOUT;
        while container.init_pid == 0 {
            if let Some(status) = container.nspawn.try_wait().expect("wait nspawn") {
                panic!(
                    "systemd-nspawn exited ({status}) before booting:\n{}",
                    container.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no systemd inside the container after {BOOT_TIMEOUT:?}:\n{}",
                container.log()
            );
            container.init_pid = find_init(container.nspawn.id()).unwrap_or(0);
            std::thread::sleep(Duration::from_millis(50));
        }
        loop {
            let state = container.exec(&["systemctl", "is-system-running"]);
            let state = state.stdout.trim();
            if state == "running" || state == "degraded" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the container's systemd is {state:?} after {BOOT_TIMEOUT:?}:\n{}",
                container.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        container
    }

    /// Runs `argv` inside the container (all its namespaces) as root.
    pub fn exec(&self, argv: &[&str]) -> Output {
        self.exec_input(argv, None)
    }

    /// Runs `argv` inside the container with `input` on its stdin.
    pub fn exec_input(&self, argv: &[&str], input: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = Command::new("nsenter")
            .arg("-t")
            .arg(self.init_pid.to_string())
            .args(["-a", "--"])
            .args(argv)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nsenter");
        if let Some(text) = input {
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(text.as_bytes()).expect("write stdin");
        }
        let out = child.wait_with_output().expect("wait for nsenter");
        use std::os::unix::process::ExitStatusExt;
        Output {
            status: out
                .status
                .code()
                .unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0)),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs a shell script inside; panics with its output unless it exits 0.
    pub fn sh(&self, script: &str) -> String {
        let out = self.exec(&["sh", "-ec", script]);
        assert_eq!(out.status, 0, "in the container: {script}\n{out:?}");
        out.stdout
    }

    /// One property of a unit, as `systemctl show -p NAME --value` prints it.
    pub fn property(&self, unit: &str, name: &str) -> String {
        let out = self.exec(&["systemctl", "show", "-p", name, "--value", unit]);
        out.stdout.trim().to_owned()
    }

    /// Polls `condition` every 100 ms for up to `timeout`.
    pub fn wait_for(
        &self,
        timeout: Duration,
        mut condition: impl FnMut(&Container) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if condition(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// nspawn's own output (the container's console).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.nspawn.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.nspawn.try_wait().ok().flatten().is_none() {
            if Instant::now() >= deadline {
                let _ = self.nspawn.kill();
                let _ = self.nspawn.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for cgroup in &self.cgroups {
            remove_cgroup(cgroup);
        }
    }
}

/// One cgroup per mounted hierarchy that systemd inside needs: the named `systemd` one and the
/// unified (v2) one on a hybrid host, or the root of a pure v2 host.
fn make_cgroups(name: &str) -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    let dirs: Vec<PathBuf> = if base.join("cgroup.controllers").exists() {
        vec![base.join(name)]
    } else {
        ["systemd", "unified"]
            .iter()
            .map(|h| base.join(h))
            .filter(|p| p.exists())
            .map(|p| p.join(name))
            .collect()
    };
    assert!(!dirs.is_empty(), "no cgroup hierarchy under /sys/fs/cgroup");
    for dir in &dirs {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    }
    dirs
}

/// Removes a cgroup tree, innermost first (systemd inside made sub-cgroups).
fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// The container's PID 1: the child of nspawn whose comm is `systemd`.
fn find_init(nspawn: u32) -> Option<u32> {
    let children =
        std::fs::read_to_string(format!("/proc/{nspawn}/task/{nspawn}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "systemd")
        })
}
