//! Who may name an age identity file for the daemon to read (`restore --identity`, `backups
//! fetch --identity`).
//!
//! The daemon reads the file with its own rights and decrypts with it. A member of the socket
//! group who could name any path would make the daemon open files they cannot open themselves
//! (and learn from the error whether a path exists, is private, or parses as an identity), so
//! only root and the daemon's own user may name one; everyone else gets the configured
//! identity of the backup's job (`verify-identity-file`), chosen by whoever wrote the config.

use std::path::Path;

use super::peer::Access;
use crate::protocol::ErrorCode;

/// Refuses an `identity` the caller may not name: not permitted for a socket-group member, a
/// bad request when it is not an absolute path (the daemon has another working directory).
pub fn check(access: Access, identity: Option<&Path>) -> Result<(), (ErrorCode, String)> {
    let Some(path) = identity else {
        return Ok(());
    };
    if !access.privileged() {
        return Err((
            ErrorCode::NotPermitted,
            "not permitted: only root and the daemon's own user may give --identity (it makes \
             the daemon read the file named); without it, a restore decrypts with the backup's \
             job's verify-identity-file"
                .into(),
        ));
    }
    if !path.is_absolute() {
        return Err((
            ErrorCode::BadRequest,
            "--identity must be an absolute path".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_and_the_daemon_user_name_an_identity() {
        let key = Some(Path::new("/etc/atpre/backup.key"));
        assert_eq!(check(Access::Root, key), Ok(()));
        assert_eq!(check(Access::DaemonUser, key), Ok(()));
        let refused = check(Access::GroupMember, key).unwrap_err();
        assert_eq!(refused.0, ErrorCode::NotPermitted);
        assert!(refused.1.contains("--identity"), "{}", refused.1);
        // Without --identity everyone may go on (the configured identity is used).
        assert_eq!(check(Access::GroupMember, None), Ok(()));
        let relative = check(Access::Root, Some(Path::new("backup.key"))).unwrap_err();
        assert_eq!(relative.0, ErrorCode::BadRequest);
    }
}
