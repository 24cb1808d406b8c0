//! Finding what a crashed daemon left running, by reading `/proc` (and, under systemd, the
//! service's own cgroup).
//!
//! A process is a candidate only if it runs as the daemon's uid (real and effective) and is
//! known to be ours: it carries the previous run's marker in its environment, or it is in the
//! service's own cgroup. A group is ended only if its leader is a candidate, or, when the
//! leader is gone, every member is: a group led by anyone else (a root-led server whose worker
//! copied the variable) is never signalled.

use std::collections::{BTreeMap, BTreeSet};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::registry::MARKER_VAR;

/// How the previous run's processes are recognised.
pub(super) enum Source {
    /// `ATPRED_GROUPS=<marker>` in the environment.
    Marker(String),
    /// Membership of the service's cgroup (its path, and the pids it held at start).
    Cgroup(String, BTreeSet<i32>),
}

/// One live (not zombie) process.
struct Proc {
    pgid: i32,
    comm: String,
    ours: bool,
}

/// Ends the groups of the previous run's leftovers (see the module docs). Returns one
/// description per group: "process group N (comm, …), found by …".
pub(super) fn sweep(source: &Source, uid: u32) -> Vec<String> {
    let me = std::process::id() as i32;
    let own_group = nix::unistd::getpgrp().as_raw();
    let mut procs = BTreeMap::new();
    for pid in all_pids().filter(|&pid| pid != me) {
        let Some((comm, fields)) = read_stat(pid) else {
            continue;
        };
        let (Some(state), Some(pgid)) = (
            fields.first(),
            fields.get(2).and_then(|g| g.parse::<i32>().ok()),
        ) else {
            continue;
        };
        if *state == "Z" {
            continue;
        }
        let ours = runs_as(pid, uid) && is_ours(pid, source);
        procs.insert(pid, Proc { pgid, comm, ours });
    }
    let groups: BTreeSet<i32> = procs.values().filter(|p| p.ours).map(|p| p.pgid).collect();
    let mut ended = Vec::new();
    for pgid in groups {
        if pgid <= 1 || pgid == me || pgid == own_group {
            continue;
        }
        let members: Vec<&Proc> = procs.values().filter(|p| p.pgid == pgid).collect();
        let eligible = match procs.get(&pgid) {
            Some(leader) => leader.ours,
            None => members.iter().all(|p| p.ours),
        };
        if eligible && killpg(Pid::from_raw(pgid), Signal::SIGKILL).is_ok() {
            let names: Vec<&str> = members.iter().map(|p| p.comm.as_str()).collect();
            let found = match source {
                Source::Marker(_) => format!(
                    "its processes run as uid {uid} and carry that daemon's run marker ({MARKER_VAR})"
                ),
                Source::Cgroup(path, _) => {
                    format!("its processes run as uid {uid} in this service's cgroup {path}")
                }
            };
            ended.push(format!(
                "process group {pgid} ({}): {found}",
                names.join(", ")
            ));
        }
    }
    ended
}

fn is_ours(pid: i32, source: &Source) -> bool {
    match source {
        Source::Cgroup(_, pids) => pids.contains(&pid),
        Source::Marker(marker) => {
            let needle = format!("{MARKER_VAR}={marker}").into_bytes();
            // Readable by its owner and root only: a process we could not signal anyway.
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
                environ
                    .split(|&b| b == 0)
                    .any(|var| var == needle.as_slice())
            })
        }
    }
}

/// True if `pid`'s real and effective uid are `uid`.
fn runs_as(pid: i32, uid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .is_some_and(|ids| {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            let want = uid.to_string();
            ids.len() >= 2 && ids[0] == want && ids[1] == want
        })
}

/// Under systemd (`INVOCATION_ID` set, our cgroup a `.service`), that cgroup's path and the
/// pids in it other than ours: the leftovers of a previous run of the same service, whatever
/// their environment. Read from the unified hierarchy, or the named `systemd` one on a hybrid
/// layout.
pub(super) fn own_service_cgroup() -> Option<Source> {
    std::env::var_os("INVOCATION_ID")?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let (path, roots): (&str, &[&str]) = if let Some(p) = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .filter(|p| p.ends_with(".service"))
    {
        (p, &["/sys/fs/cgroup", "/sys/fs/cgroup/unified"])
    } else {
        let p = own
            .lines()
            .find_map(|l| l.split_once(":name=systemd:").map(|(_, p)| p))
            .filter(|p| p.ends_with(".service"))?;
        (p, &["/sys/fs/cgroup/systemd"])
    };
    let me = std::process::id() as i32;
    roots.iter().find_map(|root| {
        let procs = std::fs::read_to_string(format!("{root}{path}/cgroup.procs")).ok()?;
        let pids = procs
            .lines()
            .filter_map(|l| l.trim().parse::<i32>().ok())
            .filter(|&pid| pid != me)
            .collect();
        Some(Source::Cgroup(path.to_owned(), pids))
    })
}

fn all_pids() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
}

fn read_stat(pid: i32) -> Option<(String, Vec<String>)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (comm, fields) = parse_stat(&stat)?;
    Some((comm, fields.into_iter().map(str::to_owned).collect()))
}

/// Names of the live (not zombie) processes in group `pgid` that started at or after
/// `since` (clock ticks).
pub(super) fn members(pgid: i32, since: u64) -> Vec<String> {
    all_pids()
        .filter_map(|pid| {
            let (comm, fields) = read_stat(pid)?;
            let alive = fields.first().is_some_and(|state| state != "Z");
            let group: i32 = fields.get(2)?.parse().ok()?;
            let start: u64 = fields.get(19)?.parse().ok()?;
            (alive && group == pgid && start >= since).then_some(comm)
        })
        .collect()
}

/// When `pid` started (clock ticks since boot).
pub(super) fn start_time(pid: i32) -> Option<u64> {
    read_stat(pid)?.1.get(19)?.parse().ok()
}

/// `(comm, fields after the comm)` of a /proc/PID/stat line; the comm may hold spaces.
fn parse_stat(stat: &str) -> Option<(String, Vec<&str>)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    Some((comm, stat.get(close + 1..)?.split_whitespace().collect()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_stat_with_spaces_in_comm() {
        let (comm, f) = super::parse_stat(
            "42 (my (odd) cmd) S 1 42 42 0 -1 4194304 1 2 3 4 5 6 7 8 20 0 1 0 12345 0",
        )
        .unwrap();
        assert_eq!(comm, "my (odd) cmd");
        assert_eq!(f[2], "42");
        assert_eq!(f[19], "12345");
    }

    #[test]
    fn our_own_uid_is_recognised() {
        let me = std::process::id() as i32;
        let uid = nix::unistd::getuid().as_raw();
        assert!(super::runs_as(me, uid));
        assert!(!super::runs_as(me, uid + 1));
    }
}
