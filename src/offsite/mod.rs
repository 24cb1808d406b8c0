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
pub mod destination;
pub mod fetch;
pub mod pins;
pub mod reader;
mod remote;
pub mod ship;
pub mod state;
pub(crate) mod transfer;
pub mod wal;

pub use remote::Remote;

/// Why an offsite operation failed. Never carries a credential: keys and secrets stay in
/// [`credentials`], and a store error is cut to its first line before any response body
/// ([`brief`]): an S3 error body can echo the canonical request, session token included.
#[derive(Debug, thiserror::Error)]
pub enum OffsiteError {
    #[error("offsite {target}: credentials-file: {message}")]
    Credentials { target: String, message: String },
    #[error("offsite {target}: {op} {key}: {message}")]
    Store {
        target: String,
        op: &'static str,
        key: String,
        message: String,
        not_found: bool,
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
            OffsiteError::Store {
                not_found: true,
                ..
            }
        )
    }

    /// The target itself failed (down, refusing us, told to stop): no other copy would fare
    /// better now. Otherwise the failure belongs to one backup.
    pub fn is_target_level(&self) -> bool {
        matches!(
            self,
            OffsiteError::Store { .. } | OffsiteError::Credentials { .. } | OffsiteError::Cancelled
        )
    }
}

/// object_store's message without the response body it may append, and with S3's error
/// `<Code>` kept when there is one; at most 300 characters. The request URL it prints is
/// redacted ([`crate::secret::scrub`]).
pub fn brief(e: &object_store::Error) -> String {
    let text = crate::secret::scrub(&e.to_string());
    let code = text
        .split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map(|(code, _)| code.to_owned());
    let head = text.split('<').next().unwrap_or_default().trim_end();
    let mut short: String = head.chars().take(300).collect();
    if let Some(code) = code.filter(|c| c.len() < 64 && c.chars().all(char::is_alphanumeric)) {
        short = format!("{short} (S3 error {code})");
    }
    short
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

/// A backup id as atpred makes them (`20261128T023000Z-nightly`): the job it belongs to, or
/// `None` for any other name — a prefix not of that shape is never ours to touch.
pub fn job_of_id(id: &str) -> Option<&str> {
    let (stamp, job) = id.split_once('-')?;
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ").ok()?;
    job.parse::<crate::ids::JobName>().ok()?;
    Some(job)
}

#[cfg(test)]
mod tests {
    use super::{job_of_id, safe_relative};

    #[test]
    fn only_backup_shaped_ids_name_a_job() {
        assert_eq!(job_of_id("20261128T023000Z-nightly"), Some("nightly"));
        assert_eq!(job_of_id("20261128T023000Z-api-db"), Some("api-db"));
        for other in [
            "test",
            "atp-re",
            "2026-11-28",
            "20261328T023000Z-x",
            "20261128T023000Z-",
            "x-nightly",
        ] {
            assert_eq!(job_of_id(other), None, "{other:?}");
        }
    }

    #[test]
    fn store_errors_lose_the_response_body() {
        let e = object_store::Error::Generic {
            store: "S3",
            source: "Client error with status 403 Forbidden: <?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code><CanonicalRequest>x-amz-security-token:SECRET</CanonicalRequest></Error>".into(),
        };
        let b = super::brief(&e);
        assert!(
            !b.contains("SECRET") && !b.contains("CanonicalRequest"),
            "{b}"
        );
        assert!(
            b.contains("403") && b.contains("SignatureDoesNotMatch"),
            "{b}"
        );
    }

    #[test]
    fn store_errors_show_urls_redacted() {
        let e = object_store::Error::Generic {
            store: "S3",
            source:
                "Error performing GET https://k:SECRET@s3.example/b/x?X-Amz-Signature=SECRET in 1s"
                    .into(),
        };
        let b = super::brief(&e);
        assert!(!b.contains("SECRET"), "{b}");
        assert!(
            b.contains("https://***@s3.example/b/x?X-Amz-Signature=***"),
            "{b}"
        );
    }

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
