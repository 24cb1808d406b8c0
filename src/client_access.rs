//! What `atprectl` says when the kernel refuses its connection to the control socket
//! (EACCES/EPERM): who owns the socket, its mode, and which group to ask for. The daemon never
//! sees such an attempt, so it cannot log it; this message is all the caller gets.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// "not permitted: SOCKET is OWNER:GROUP MODE; ask to be added to group GROUP". When a folder
/// on the way is what refuses us (we cannot even look at the socket), that folder is named
/// instead: it is the one whose group to ask for.
pub fn not_permitted(socket: &Path) -> String {
    let mut at = socket;
    loop {
        match std::fs::metadata(at) {
            Ok(meta) => {
                let group = group_name(meta.gid());
                let what = if at == socket {
                    String::new()
                } else {
                    format!(" (on the way to {})", socket.display())
                };
                return format!(
                    "not permitted: {} is {}:{group} {:04o}{what}; ask to be added to group {group}",
                    at.display(),
                    user_name(meta.uid()),
                    meta.permissions().mode() & 0o7777,
                );
            }
            Err(e) => match at.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => at = parent,
                _ => return format!("not permitted: cannot reach {}: {e}", socket.display()),
            },
        }
    }
}

fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(uid.into()) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    }
}

fn group_name(gid: u32) -> String {
    match nix::unistd::Group::from_gid(gid.into()) {
        Ok(Some(g)) => g.name,
        _ => gid.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_owner_group_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let _l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o660))
            .unwrap();
        let text = super::not_permitted(&path);
        let me = super::user_name(nix::unistd::getuid().as_raw());
        let group = super::group_name(nix::unistd::getgid().as_raw());
        assert_eq!(
            text,
            format!(
                "not permitted: {} is {me}:{group} 0660; ask to be added to group {group}",
                path.display()
            )
        );
    }
}
