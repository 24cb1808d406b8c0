//! Who is on the other end of a control connection, and whether they may use the socket.
//!
//! Root, the daemon's own user and members of `daemon.socket-group` are allowed. Everything is
//! read from the connection itself, as the kernel recorded it when the peer called `connect`:
//! uid, gid and pid from `SO_PEERCRED`, the supplementary groups from `SO_PEERGROUPS`. Nothing
//! is read from `/proc` (a recycled pid would pass, and the unit hides other users' processes
//! with `ProtectProc=invisible`). Any failure to find out who the caller is denies.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::unistd::{Gid, Uid};

/// The peer's credentials as the kernel recorded them at connect time.
#[derive(Debug, Clone)]
pub struct PeerCred {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
    /// Supplementary groups (`SO_PEERGROUPS`).
    pub groups: Vec<u32>,
}

/// Why the caller was let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Root,
    DaemonUser,
    GroupMember,
}

impl Access {
    /// Root and the daemon's user: they may use the reserved connection slots.
    pub fn privileged(self) -> bool {
        matches!(self, Access::Root | Access::DaemonUser)
    }
}

/// The credentials of the peer of `stream`, read from the socket.
pub fn identify(stream: &tokio::net::UnixStream) -> std::io::Result<PeerCred> {
    let cred = stream.peer_cred()?;
    Ok(PeerCred {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid(),
        groups: peer_groups(stream.as_fd())?,
    })
}

/// Decides access for `peer`, given the daemon's uid and the socket group's gid.
pub fn authorize(
    peer: &PeerCred,
    daemon_uid: Uid,
    socket_gid: Option<Gid>,
) -> Result<Access, String> {
    if peer.uid == 0 {
        return Ok(Access::Root);
    }
    if peer.uid == daemon_uid.as_raw() {
        return Ok(Access::DaemonUser);
    }
    let Some(gid) = socket_gid else {
        return Err(format!("uid {} is not root or the daemon's user", peer.uid));
    };
    if peer.gid == gid.as_raw() || peer.groups.contains(&gid.as_raw()) {
        Ok(Access::GroupMember)
    } else {
        Err(format!(
            "uid {} is not in the socket group (gid {})",
            peer.uid,
            gid.as_raw()
        ))
    }
}

/// The most supplementary groups Linux allows (`NGROUPS_MAX`).
const NGROUPS_MAX: usize = 65536;

/// `getsockopt(SO_PEERGROUPS)`: the groups the peer held when it connected. Neither nix nor
/// rustix wraps this option, so this is the crate's second audited `unsafe` block.
#[allow(unsafe_code)]
fn peer_groups(fd: BorrowedFd<'_>) -> std::io::Result<Vec<u32>> {
    const GID: usize = std::mem::size_of::<libc::gid_t>();
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let capacity = groups.len() * GID;
        let mut len = libc::socklen_t::try_from(capacity).map_err(std::io::Error::other)?;
        // SAFETY: `groups` is a live, initialised buffer of `len` bytes that the kernel
        // writes at most `len` bytes into (it reports a bigger need with ERANGE instead), and
        // `len` is a valid socklen_t it updates to the bytes written.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let needed = usize::try_from(len).map_err(std::io::Error::other)?;
        if rc == 0 {
            groups.truncate(needed.min(capacity) / GID);
            return Ok(groups);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ERANGE)
            && needed > capacity
            && needed <= NGROUPS_MAX * GID
        {
            groups.resize(needed.div_ceil(GID), 0);
            continue;
        }
        return Err(err);
    }
}

/// Resolves `daemon.socket-group` to a gid.
pub fn group_gid(name: &str) -> Result<Gid, String> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid),
        Ok(None) => Err(format!("socket group {name:?} does not exist")),
        Err(e) => Err(format!("cannot look up socket group {name:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        let me = Uid::from_raw(1000);
        let cred = |uid, gid, groups: &[u32]| PeerCred {
            uid,
            gid,
            pid: None,
            groups: groups.to_vec(),
        };
        assert_eq!(authorize(&cred(0, 0, &[]), me, None), Ok(Access::Root));
        assert_eq!(
            authorize(&cred(1000, 5, &[]), me, None),
            Ok(Access::DaemonUser)
        );
        assert!(authorize(&cred(1001, 5, &[7]), me, None).is_err());
        let seven = Some(Gid::from_raw(7));
        assert_eq!(
            authorize(&cred(1001, 7, &[]), me, seven),
            Ok(Access::GroupMember)
        );
        assert_eq!(
            authorize(&cred(1001, 5, &[3, 7]), me, seven),
            Ok(Access::GroupMember)
        );
        assert!(authorize(&cred(1001, 5, &[3]), me, seven).is_err());
    }

    #[test]
    fn reads_the_groups_of_a_connected_peer() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let groups = peer_groups(a.as_fd()).unwrap();
        let mine: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .iter()
            .map(|g| g.as_raw())
            .collect();
        assert_eq!(groups, mine);
    }
}
