//! The registry of live process groups, so that a daemon restarted after a crash can end the
//! groups its predecessor left running, and only those.
//!
//! - Each group is recorded under `state-dir/groups/` (one file per group: boot id and the
//!   leader's start time, so a recycled pgid is never mistaken for it).
//! - Each start draws a random run marker (128 bits), passed to every child as
//!   `ATPRED_GROUPS=<marker>` and kept in `state-dir/groups.run` with the daemon's pid and boot
//!   id. A clean stop removes that file; a start that finds it knows its predecessor crashed and
//!   sweeps what that run left: a group whose record a kill -9 prevented (between fork and the
//!   record), a child that detached itself (`setsid`). Nothing is swept after a clean stop: a
//!   job's deliberately detached child is the job's business then.
//! - The sweep takes only processes running as the daemon's uid that carry the previous run's
//!   marker — or, under systemd, that are in the service's own cgroup — and ends a group only
//!   when its leader is such a process (or, leaderless, every member is). A stranger who copies
//!   the variable (it cannot guess the marker), or who leads a group one of ours joined, is
//!   never touched. See [`super::leftovers`].

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::leftovers::{self, Source};

/// The registry's folder, once started.
static DIR: OnceLock<PathBuf> = OnceLock::new();
/// This run's marker, once started.
static MARKER: OnceLock<String> = OnceLock::new();

/// The variable every child's environment carries this run's marker in.
pub(super) const MARKER_VAR: &str = "ATPRED_GROUPS";

/// The value of [`MARKER_VAR`] for this daemon's children, once the registry is started.
pub(super) fn marker() -> Option<&'static str> {
    MARKER.get().map(String::as_str)
}

/// The previous run, as its `groups.run` file recorded it (present: it did not stop cleanly).
struct Previous {
    marker: String,
    pid: String,
    same_boot: bool,
}

/// `state-dir/groups.run`, next to the records' folder.
fn run_file(dir: &Path) -> PathBuf {
    dir.with_extension("run")
}

/// Starts recording groups under `dir` after ending those a crashed previous daemon left
/// behind. Returns one log line per group ended, saying what was found and why it was ended.
pub fn start(dir: &Path) -> std::io::Result<Vec<String>> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let run = run_file(dir);
    let previous = read_previous(&run);
    let mut ended = reap(dir, previous.as_ref());
    if let Some(prev) = previous.as_ref().filter(|p| p.same_boot) {
        let source =
            leftovers::own_service_cgroup().unwrap_or_else(|| Source::Marker(prev.marker.clone()));
        ended.extend(
            leftovers::sweep(&source, nix::unistd::geteuid().as_raw())
                .into_iter()
                .map(|found| {
                    format!(
                        "ended {found}, left running by the previous daemon (pid {}), which did \
                         not stop cleanly",
                        prev.pid
                    )
                }),
        );
    }
    let marker = format!("{:032x}", rand::random::<u128>());
    write_run_file(&run, &marker)?;
    let _ = MARKER.set(marker);
    let _ = DIR.set(dir.to_owned());
    Ok(ended)
}

/// The pid of the previous daemon when it did not stop cleanly (its run file is still there);
/// read before [`start`] replaces that file.
pub fn unclean_previous(dir: &Path) -> Option<String> {
    read_previous(&run_file(dir)).map(|p| p.pid)
}

/// Records that this daemon stopped cleanly: every child has ended, and the next start sweeps
/// nothing.
pub fn stopped_cleanly() {
    if let Some(dir) = DIR.get() {
        let _ = std::fs::remove_file(run_file(dir));
    }
}

fn read_previous(run: &Path) -> Option<Previous> {
    let text = std::fs::read_to_string(run).ok()?;
    let mut fields = text.split_whitespace();
    let (marker, pid, boot) = (fields.next()?, fields.next()?, fields.next()?);
    // A marker that is not ours in shape is not looked for (it could match anything).
    if marker.len() != 32 || !marker.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(Previous {
        marker: marker.to_owned(),
        pid: pid.to_owned(),
        same_boot: boot == boot_id(),
    })
}

/// Written to a fresh private file and renamed into place: a crash leaves the old file or the
/// new one.
fn write_run_file(run: &Path, marker: &str) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = run.with_extension(format!("run.tmp-{:016x}", rand::random::<u64>()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    let text = format!("{marker} {} {}\n", std::process::id(), boot_id());
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all());
    match written.and_then(|()| std::fs::rename(&tmp, run)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Records group `pgid`; returns the record's path.
pub(super) fn record(pgid: Pid) -> Option<PathBuf> {
    let dir = DIR.get()?;
    let start = leftovers::start_time(pgid.as_raw())?;
    let path = dir.join(pgid.as_raw().to_string());
    std::fs::write(&path, format!("{} {start}\n", boot_id())).ok()?;
    Some(path)
}

/// Kills every recorded group that still has members started since it was recorded (in this
/// boot), and removes the records.
fn reap(dir: &Path, previous: Option<&Previous>) -> Vec<String> {
    let mut ended = Vec::new();
    let boot = boot_id();
    let by = previous.map_or_else(
        || "the previous daemon".to_owned(),
        |p| {
            format!(
                "the previous daemon (pid {}), which did not stop cleanly",
                p.pid
            )
        },
    );
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let pgid = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok());
        let recorded = std::fs::read_to_string(&path).unwrap_or_default();
        let mut fields = recorded.split_whitespace();
        let (same_boot, since) = (
            fields.next() == Some(boot.as_str()),
            fields.next().and_then(|s| s.parse::<u64>().ok()),
        );
        if let (Some(pgid), true, Some(since)) = (pgid, same_boot, since) {
            let members = leftovers::members(pgid, since);
            if pgid > 1
                && !members.is_empty()
                && killpg(Pid::from_raw(pgid), Signal::SIGKILL).is_ok()
            {
                ended.push(format!(
                    "ended process group {pgid} ({}), recorded in {} by {by} and still running",
                    members.join(", "),
                    dir.display()
                ));
                // Gone before the caller cleans up after them (partial folders).
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
                while !leftovers::members(pgid, since).is_empty()
                    && std::time::Instant::now() < deadline
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    ended
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_run_file_round_trips_and_a_foreign_one_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("groups.run");
        super::write_run_file(&run, "0123456789abcdef0123456789abcdef").unwrap();
        let prev = super::read_previous(&run).unwrap();
        assert_eq!(prev.marker, "0123456789abcdef0123456789abcdef");
        assert_eq!(prev.pid, std::process::id().to_string());
        assert!(prev.same_boot);
        std::fs::write(&run, "/var/lib/atpre/groups 1 x\n").unwrap();
        assert!(super::read_previous(&run).is_none(), "not a marker");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp left"
        );
    }
}
