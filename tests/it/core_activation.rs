//! Socket activation through the real daemon: a listening socket passed the way systemd passes
//! one (fd 3, `LISTEN_FDS=1`, `LISTEN_PID` = the daemon's pid) is used instead of binding; the
//! daemon leaves the path to its owner at exit; no child inherits the socket; the peer check
//! still refuses other users; and a passed descriptor that is not a listening Unix socket stops
//! the start with an error that says so.
//!
//! The launcher is a few lines of python3 that bind, listen, move the socket to fd 3 and exec
//! atpred in the same process (so `LISTEN_PID` is right), as systemd's socket units do.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use crate::core_support::{WAIT, sh_job};
use crate::harness::{self, Daemon};

const NOBODY: u32 = 65534;
const NOGROUP: u32 = 65534;

/// Binds `<config dir>/atpred.sock` (mode 0666, so only the daemon's peer check can refuse),
/// passes it as fd 3 with `LISTEN_FDS`/`LISTEN_PID`, then execs atpred.
fn activated(config: &Path) -> Command {
    let socket = config.with_file_name("atpred.sock");
    let mut cmd = Command::new("python3");
    cmd.args([
        "-c",
        "import os, socket, sys\n\
         path, exe, config = sys.argv[1:4]\n\
         s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n\
         s.bind(path); os.chmod(path, 0o666); s.listen(16)\n\
         os.dup2(s.fileno(), 3); os.set_inheritable(3, True)\n\
         os.environ['LISTEN_FDS'] = '1'\n\
         os.environ['LISTEN_PID'] = str(os.getpid())\n\
         os.execv(exe, [exe, '--config', config])\n",
    ])
    .arg(&socket)
    .arg(env!("CARGO_BIN_EXE_atpred"))
    .arg(config);
    cmd
}

/// Passes a regular file as fd 3, claiming it is a socket.
fn not_a_socket(config: &Path) -> Command {
    let mut cmd = Command::new("python3");
    cmd.args([
        "-c",
        "import os, sys\n\
         exe, config = sys.argv[1:3]\n\
         fd = os.open(config, os.O_RDONLY)\n\
         os.dup2(fd, 3); os.set_inheritable(3, True)\n\
         os.environ['LISTEN_FDS'] = '1'\n\
         os.environ['LISTEN_PID'] = str(os.getpid())\n\
         os.execv(exe, [exe, '--config', config])\n",
    ])
    .arg(env!("CARGO_BIN_EXE_atpred"))
    .arg(config);
    cmd
}

#[test]
fn a_passed_socket_is_used_kept_at_exit_and_not_inherited() {
    harness::require_binary("python3", "apt-get install python3");
    let dir = harness::tempdir();
    let fds = dir.path().join("fds.txt");
    let script = format!("ls -l /proc/self/fd/ > {}", fds.display());
    let mut daemon = Daemon::builder(&dir)
        .toml(&sh_job("fds", &script, ""))
        .launcher(activated)
        .spawn();
    assert!(
        harness::wait_until(WAIT, || daemon.log().contains("socket_from=Systemd")),
        "the daemon says it uses the passed socket:\n{}",
        harness::tail(&daemon.log(), 20)
    );
    // The daemon did not bind its own: the path still has the launcher's mode, not 0660.
    let mode = std::fs::metadata(daemon.socket())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(
        mode, 0o666,
        "the passed socket was replaced by one the daemon bound"
    );

    let status = daemon.ctl(["status"]);
    assert_eq!(status.status, 0, "{status:?}");

    let run = daemon.ctl(["run", "fds", "--wait"]);
    assert_eq!(run.status, 0, "{run:?}");
    let open = std::fs::read_to_string(&fds).unwrap();
    assert!(
        open.contains(" 0 -> ") && open.contains(" 2 -> "),
        "the listing is of the child's descriptors:\n{open}"
    );
    assert!(
        !open.contains("socket:"),
        "a job's child inherited a socket of the daemon:\n{open}"
    );

    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(daemon.wait_exit(WAIT).is_some(), "atpred did not stop");
    let meta = std::fs::symlink_metadata(daemon.socket())
        .expect("the passed socket's path belongs to whoever passed it: the daemon keeps it");
    assert!(meta.file_type().is_socket());
}

#[test]
fn the_peer_check_refuses_others_on_a_passed_socket() {
    if !harness::is_root() {
        panic!("this test needs root to connect as another user (CI runs it as root)");
    }
    let dir = harness::tempdir();
    let daemon = Daemon::builder(&dir)
        .toml(&sh_job("x", "true", ""))
        .launcher(activated)
        .spawn();
    // The file mode (0666) lets everyone connect: the daemon's own check is what refuses.
    let outsider = daemon.ctl_as(NOBODY, NOGROUP, ["status"]);
    assert_eq!(outsider.status, 77, "{outsider:?}");
    assert!(outsider.stderr.contains("not permitted"), "{outsider:?}");
    assert_eq!(daemon.ctl(["status"]).status, 0);
}

#[test]
fn a_passed_descriptor_that_is_not_a_socket_stops_the_start() {
    harness::require_binary("python3", "apt-get install python3");
    let dir = harness::tempdir();
    let failure = match Daemon::builder(&dir)
        .toml(&sh_job("x", "true", ""))
        .launcher(not_a_socket)
        .try_spawn()
    {
        Ok(_) => panic!("atpred started with a regular file as its control socket"),
        Err(f) => f,
    };
    assert!(
        failure.status.is_some(),
        "it exits rather than hangs: {failure}"
    );
    assert!(
        failure.log.contains("LISTEN_FDS") && failure.log.contains("not a socket"),
        "the error names the passed descriptor and what is wrong with it:\n{failure}"
    );
}
