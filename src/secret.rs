//! Values that must never be printed: passwords, and URLs from the configuration ([`url`]).
//!
//! `Debug` and `Display` show a redacted form; the real value is only reachable through
//! `expose`, which makes every use greppable.

use std::fmt;

pub mod url;

pub use url::{SecretUrl, scrub};

/// Refuses a file holding secrets (a passfile, an age identity) unless only its owner, the
/// daemon's user, can read it — as libpq itself requires of a passfile.
pub fn check_private_file(path: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "refusing {shown}: mode {mode:04o} lets others read it; run `chmod 600 {shown}`"
        ));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(format!(
            "refusing {shown}: owned by uid {}, not the daemon's uid {me}",
            meta.uid()
        ));
    }
    Ok(())
}

/// A secret string. Prints as `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(s.expose(), "hunter2");
    }
}
