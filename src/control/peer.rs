//! Who is on the other end of a control connection, and whether they may use the socket.
//!
//! Root, the daemon's own user and members of `daemon.socket-group` are allowed. Group
//! membership is read from the peer process itself (`/proc/PID/status`, `Groups:`), so it is
//! the caller's real credentials, not what /etc/group says today. Any failure to find out who
//! the caller is denies.

use std::path::PathBuf;

use nix::unistd::{Gid, Uid};

/// The peer's credentials as the kernel reported them at connect time.
#[derive(Debug, Clone, Copy)]
pub struct PeerCred {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

/// Why the caller was let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Root,
    DaemonUser,
    GroupMember,
}

/// Decides access for `peer`, given the daemon's uid and the socket group's gid.
pub fn authorize(
    peer: PeerCred,
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
    if peer.gid == gid.as_raw() {
        return Ok(Access::GroupMember);
    }
    let pid = peer
        .pid
        .ok_or_else(|| format!("uid {}: the kernel gave no pid to check groups", peer.uid))?;
    let groups = supplementary_groups(pid)
        .map_err(|e| format!("uid {}: cannot read its groups: {e}", peer.uid))?;
    if groups.contains(&gid.as_raw()) {
        Ok(Access::GroupMember)
    } else {
        Err(format!(
            "uid {} is not in the socket group (gid {})",
            peer.uid,
            gid.as_raw()
        ))
    }
}

fn supplementary_groups(pid: i32) -> std::io::Result<Vec<u32>> {
    let status = std::fs::read_to_string(PathBuf::from(format!("/proc/{pid}/status")))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .ok_or_else(|| std::io::Error::other("no Groups: line"))?;
    line.split_whitespace()
        .map(|g| g.parse::<u32>().map_err(std::io::Error::other))
        .collect()
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
        let cred = |uid, gid| PeerCred {
            uid,
            gid,
            pid: None,
        };
        assert_eq!(authorize(cred(0, 0), me, None), Ok(Access::Root));
        assert_eq!(authorize(cred(1000, 5), me, None), Ok(Access::DaemonUser));
        assert!(authorize(cred(1001, 5), me, None).is_err());
        assert_eq!(
            authorize(cred(1001, 7), me, Some(Gid::from_raw(7))),
            Ok(Access::GroupMember)
        );
        assert!(
            authorize(cred(1001, 5), me, Some(Gid::from_raw(7))).is_err(),
            "no pid: deny"
        );
    }

    #[test]
    fn reads_our_own_groups() {
        let pid = std::process::id() as i32;
        let groups = supplementary_groups(pid).unwrap();
        let mine: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .iter()
            .map(|g| g.as_raw())
            .collect();
        assert_eq!(groups, mine);
    }
}
