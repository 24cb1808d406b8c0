//! Telling a writer to reopen through its pid-file without trusting the file blindly.
//!
//! The pid-file is only a claim. It is believed when it is a regular file (not a symlink) owned
//! by root, atpred's user or the log's owner, and writable by its owner only; the process it
//! names must run as the log's owner (or as atpred's user, when the file's owner is root or
//! atpred's user, who could signal it anyway). The process is pinned with a pidfd before its
//! owner is read and signalled through that pidfd, so a pid recycled meanwhile is never
//! signalled: the pidfd keeps referring to the process that was checked.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use nix::sys::signal::Signal;
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{Pid, PidfdFlags, pidfd_open, pidfd_send_signal};

/// A pid-file is a few digits: anything longer is not one.
const MAX_PID_FILE: u64 = 64;

/// Sends `signal` to the process `pid_file` names, once the file and the process are trusted
/// for a log owned by `log_owner`. Returns what was done, or why nothing was.
pub fn send(pid_file: &Path, signal: Signal, log_owner: u32) -> Result<String, String> {
    let me = nix::unistd::geteuid().as_raw();
    let shown = pid_file.display();
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(pid_file)
        .map_err(|e| format!("cannot read {shown} (a symlink is never followed): {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    let owner = meta.uid();
    let mode = meta.mode() & 0o7777;
    let trusted_writer = owner == 0 || owner == me;
    check_file(meta.is_file(), owner, mode, trusted_writer, log_owner)
        .map_err(|why| format!("{shown} {why}: not trusted to name the process to signal"))?;
    let mut text = String::new();
    (&mut file)
        .take(MAX_PID_FILE)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    let pid = text
        .trim()
        .parse::<i32>()
        .ok()
        .filter(|p| *p > 1)
        .and_then(Pid::from_raw)
        .ok_or_else(|| format!("{shown} does not hold a process id"))?;
    let raw = pid.as_raw_nonzero();
    let pidfd = pidfd_open(pid, PidfdFlags::empty())
        .map_err(|e| format!("no process {raw} (named by {shown}): {e}"))?;
    let uids = process_uids(raw.get())
        .ok_or_else(|| format!("process {raw} (named by {shown}) ended meanwhile"))?;
    // /proc/PID was read by number: it described the pidfd's process only if that process is
    // still running now (a pidfd becomes readable when its process exits).
    if exited(&pidfd) {
        return Err(format!("process {raw} (named by {shown}) ended meanwhile"));
    }
    let allowed = |uid: u32| uid == log_owner || (trusted_writer && uid == me);
    if let Some(uid) = uids.into_iter().find(|u| !allowed(*u)) {
        return Err(format!(
            "process {raw} (named by {shown}) runs as uid {uid}, not as the log's owner (uid {log_owner}){}: not signalled",
            if trusted_writer {
                format!(" or atpred's user (uid {me})")
            } else {
                String::new()
            }
        ));
    }
    let sig = rustix::process::Signal::from_named_raw(signal as i32)
        .ok_or_else(|| format!("{signal} cannot be sent through a pidfd"))?;
    pidfd_send_signal(&pidfd, sig).map_err(|e| format!("{signal} to pid {raw}: {e}"))?;
    Ok(format!("sent {signal} to pid {raw}"))
}

/// Why the pid-file itself is not to be believed, if it is not.
fn check_file(
    regular: bool,
    owner: u32,
    mode: u32,
    trusted_writer: bool,
    log_owner: u32,
) -> Result<(), String> {
    if !regular {
        return Err("is not a regular file".into());
    }
    if !trusted_writer && owner != log_owner {
        return Err(format!(
            "belongs to uid {owner}, not to root, atpred's user or the log's owner (uid {log_owner})"
        ));
    }
    if mode & 0o022 != 0 {
        return Err(format!(
            "is writable by users other than its owner (mode {mode:04o})"
        ));
    }
    Ok(())
}

/// The real and effective uid of process `pid` (from `/proc/PID/status`).
fn process_uids(pid: i32) -> Option<[u32; 2]> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    let mut ids = line.split_whitespace().map(|t| t.parse::<u32>().ok());
    Some([ids.next()??, ids.next()??])
}

/// Whether the pidfd's process has exited (its pidfd polls readable).
fn exited(pidfd: &impl std::os::fd::AsFd) -> bool {
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match poll(&mut fds, Some(&zero)) {
        Ok(n) => n > 0,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pidfile_owner_and_mode_are_checked() {
        assert!(check_file(true, 0, 0o644, true, 33).is_ok());
        assert!(
            check_file(true, 33, 0o644, false, 33).is_ok(),
            "the log's owner"
        );
        let err = check_file(true, 65534, 0o644, false, 33).unwrap_err();
        assert!(err.contains("belongs to uid 65534"), "{err}");
        let err = check_file(true, 0, 0o666, true, 33).unwrap_err();
        assert!(err.contains("mode 0666"), "{err}");
        assert!(check_file(false, 0, 0o644, true, 33).is_err());
    }

    #[test]
    fn pidfile_own_process_is_found_and_signalled_through_a_pidfd() {
        let me = std::process::id() as i32;
        let uids = process_uids(me).unwrap();
        assert_eq!(uids[0], nix::unistd::getuid().as_raw());
        let fd = pidfd_open(Pid::from_raw(me).unwrap(), PidfdFlags::empty()).unwrap();
        assert!(!exited(&fd), "this process runs");
    }
}
