//! The control socket: taken from systemd when it passed one, else bound so that it is never
//! reachable by others, not even for an instant.
//!
//! Under `atpred.socket`, systemd created the socket with its owner, group and mode before we
//! started, and keeps it across restarts (requests wait in the backlog); it is passed as fd 3
//! (`LISTEN_FDS`/`LISTEN_PID`). Without it, the socket is bound inside a fresh 0700 directory
//! next to its final path, given its mode (0660) and group there, and only then renamed into
//! place. A stale socket left by a crash is replaced; a live daemon answering on the path makes
//! us refuse to start.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use nix::unistd::Gid;

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("another atpred is already listening on {0}")]
    InUse(String),
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: String },
    #[error("cannot use the control socket systemd passed (LISTEN_FDS): {0}")]
    Passed(#[source] io::Error),
    #[error("cannot bind the control socket {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

pub const SOCKET_MODE: u32 = 0o660;

/// Where the listening socket came from; it decides who removes the path at exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Passed by systemd socket activation: systemd owns the path.
    Systemd,
    /// Bound by us: we remove the path at exit.
    Bound,
}

/// The control socket: systemd's if it passed one, else our own bound at `path`.
pub fn open(path: &Path, group: Option<Gid>) -> Result<(UnixListener, Origin), BindError> {
    match from_systemd(path)? {
        Some(listener) => Ok((listener, Origin::Systemd)),
        None => Ok((bind(path, group)?, Origin::Bound)),
    }
}

/// The socket systemd passed (the first of `LISTEN_FDS`, for our pid), if any.
fn from_systemd(path: &Path) -> Result<Option<UnixListener>, BindError> {
    let io_err = BindError::Passed;
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() > 1 {
        tracing::warn!(
            "systemd passed {} sockets; only the first is the control socket",
            fds.len()
        );
    }
    let Some(listener) = fds.take_unix_listener(0).map_err(io_err)? else {
        return Ok(None);
    };
    // Passed descriptors are inheritable; no child (pg_dump, hooks) may hold our socket.
    nix::fcntl::fcntl(
        &listener,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| io_err(e.into()))?;
    let bound = listener.local_addr().map_err(io_err)?;
    if bound.as_pathname() != Some(path) {
        let shown = bound.as_pathname().map_or_else(
            || "an unnamed socket".to_owned(),
            |p| p.display().to_string(),
        );
        tracing::warn!(
            "systemd passed {shown}, not daemon.socket = {}: atprectl must be given --socket {shown}",
            path.display()
        );
    }
    Ok(Some(listener))
}

pub fn bind(path: &Path, group: Option<Gid>) -> Result<UnixListener, BindError> {
    let shown = path.display().to_string();
    let io_err = |source| BindError::Io {
        path: shown.clone(),
        source,
    };
    let parent = path
        .parent()
        .ok_or_else(|| io_err(io::Error::other("no parent directory")))?;
    if !parent.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(io_err)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(BindError::InUse(shown));
            }
            std::fs::remove_file(path).map_err(io_err)?;
        }
        Ok(_) => return Err(BindError::NotASocket { path: shown }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let staging = parent.join(format!(".atpred-bind-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(io_err)?;
    let result = (|| {
        let tmp = staging.join("sock");
        let listener = UnixListener::bind(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(SOCKET_MODE))?;
        if let Some(gid) = group {
            nix::unistd::chown(&tmp, None, Some(gid)).map_err(io::Error::from)?;
        }
        std::fs::rename(&tmp, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result.map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_0660_replaces_stale_and_refuses_live() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/atpred.sock");
        let live = bind(&path, None).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, SOCKET_MODE);
        assert!(matches!(bind(&path, None), Err(BindError::InUse(_))));
        drop(live); // the file stays: a stale socket, as after kill -9
        assert!(path.exists());
        let _again = bind(&path, None).unwrap();
        let entries: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(entries.len(), 1, "no staging directory left behind");
        let file = dir.path().join("plain");
        std::fs::write(&file, "x").unwrap();
        assert!(matches!(
            bind(&file, None),
            Err(BindError::NotASocket { .. })
        ));
    }
}
