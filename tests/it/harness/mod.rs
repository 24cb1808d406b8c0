//! Test harness: real services and the real daemon, cleaned up by `Drop` even when a test panics.
//!
//! - [`PgServer`]: a throw-away PostgreSQL cluster on a unix socket (run as the `postgres` user when
//!   the tests run as root, because initdb and postgres refuse root).
//! - [`RedisServer`]: a throw-away redis-server on a unix socket.
//! - [`NotifySocket`]: a datagram socket passed as `NOTIFY_SOCKET` that records every message.
//! - [`Daemon`] / [`DaemonBuilder`]: writes a config, runs `atpred`, waits for `READY=1`, drives
//!   `atprectl`, prints the daemon log tail when a test fails.
//! - [`FakeClock`]: the daemon's wall clock moved by libfaketime.
//! - [`wait_until`] and the `/proc` helpers in [`process`]: tests wait on conditions, never on bare
//!   sleeps.
//!
//! A missing service binary panics with an install hint; nothing is skipped silently.
#![allow(
    dead_code,
    unused_imports,
    reason = "shared by every test module; not every module uses every helper"
)]

mod daemon;
mod daemon_config;
mod faketime;
mod garage;
mod notify;
mod pg_install;
mod postgres;
pub mod process;
mod redis;
mod resp;

use std::path::Path;
use std::time::{Duration, Instant};

pub use daemon::{CtlOutput, Daemon, SpawnFailure};
pub use daemon_config::{DaemonBuilder, Launcher, atpred_launcher, toml_path, toml_str};
pub use faketime::FakeClock;
pub use garage::{BUCKET, Garage, block_on, locate_garage};
pub use notify::{NotifySocket, line};
pub use pg_install::locate_bin_dir;
pub use postgres::PgServer;
pub use process::{ProcInfo, proc_children, process_alive, process_group_members};
pub use redis::{RedisServer, locate_redis_server};
pub use resp::{Resp, RespConnection};

/// A temporary directory under `/tmp` that other users can traverse (mode 0711).
///
/// Traversable because `ctl_as` runs the client as another user (e.g. `nobody`) and the daemon's
/// socket lives inside: the directory must not be what refuses that user, the daemon must.
/// `/tmp` rather than `$TMPDIR` keeps unix socket paths short (the limit is 107 bytes).
pub fn tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("atpred-it-")
        .tempdir_in("/tmp")
        .expect("create a temporary directory under /tmp");
    set_mode(dir.path(), 0o711);
    dir
}

/// Polls `condition` every 10 ms until it holds (true) or `timeout` passes (false).
///
/// For conditions nothing notifies us about: a file appearing, a process exiting.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Panics with `hint` unless an executable `name` is on `PATH`: a missing tool fails the test
/// with what to install, it never skips it.
pub fn require_binary(name: &str, hint: &str) {
    assert!(
        process::find_in_path(name).is_some(),
        "{name} is not on PATH: {hint}"
    );
}

/// True when the tests run as root (as CI does).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Sets the permission bits of `path`, panicking with the path on failure.
pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Writes `bytes` to `path`, mode 0600 and owned by us (also when the file existed otherwise).
pub fn write_private(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    file.write_all(bytes)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    set_mode(path, 0o600);
    let (uid, gid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

/// The last `n` lines of `text`, for failure messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
