//! Offsite copies: verified backups copied to an S3-compatible target (`[offsite.NAME]`).
//!
//! Layout at the target: `<prefix>/<id>/<file>` for every file the manifest lists, then
//! `<prefix>/<id>/SHA256SUMS`, then `<prefix>/<id>/manifest.json` — **uploaded last, after every
//! file was read back and matched the manifest's size and SHA-256**. The remote manifest is the
//! commit marker: a prefix without one is an unfinished copy, never a backup.
//!
//! The S3 protocol is `object_store`'s (Apache Arrow's client: signing, multipart, retries with
//! exponential backoff); this module owns what goes where and when a copy counts.
//! A copy never touches the local backup: whatever fails, the local catalog is as it was, and
//! the copy's state (`pending`, `uploaded`, `verified`, `failed`) is recorded per backup under
//! `state-dir/offsite/<target>/` ([`state`]) so that a later run finishes what one left.

pub mod catalog;
mod credentials;
pub mod fetch;
mod remote;
pub mod ship;
pub mod state;
mod transfer;

pub use remote::Remote;

/// Why an offsite operation failed. Never carries a credential: keys and secrets stay in
/// [`credentials`], and object_store's errors name the URL of the object, not the signature.
#[derive(Debug, thiserror::Error)]
pub enum OffsiteError {
    #[error("offsite {target}: credentials-file: {message}")]
    Credentials { target: String, message: String },
    #[error("offsite {target}: {op} {key}: {source}")]
    Store {
        target: String,
        op: &'static str,
        key: String,
        source: Box<object_store::Error>,
    },
    #[error("offsite {target}: {key}: {message}")]
    Mismatch {
        target: String,
        key: String,
        message: String,
    },
    #[error("offsite {target}: {message}")]
    Other { target: String, message: String },
    #[error("cancelled")]
    Cancelled,
}

impl OffsiteError {
    /// The object was not there (as opposed to the target failing to answer).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            OffsiteError::Store { source, .. }
                if matches!(**source, object_store::Error::NotFound { .. })
        )
    }
}

/// A file path from a manifest, checked before it names a local file or a key: relative, no
/// `..`, no empty or `.` segment. A remote manifest is read from a bucket others may write.
pub fn safe_relative(path: &str) -> Option<&str> {
    let ok = !path.is_empty()
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != ".." && !s.contains('\0'));
    ok.then_some(path)
}

#[cfg(test)]
mod tests {
    use super::safe_relative;

    #[test]
    fn manifest_paths_must_stay_inside_the_backup() {
        for good in ["database.backup", "database.backup/toc.dat", "a/b/c.gz"] {
            assert_eq!(safe_relative(good), Some(good));
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "./a",
            "a/.",
            "a\0b",
        ] {
            assert_eq!(safe_relative(bad), None, "{bad:?}");
        }
    }
}
