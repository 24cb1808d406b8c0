//! Values that must never be printed: passwords and URLs with credentials.
//!
//! `Debug` and `Display` show a redacted form; the real value is only reachable through
//! `expose`, which makes every use greppable.

use std::fmt;

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

/// A URL that may carry a password (`redis://user:pass@host`). Prints with the password replaced.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(s: impl Into<String>) -> Self {
        SecretUrl(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password in its user-info replaced by `***`.
    pub fn redacted(&self) -> String {
        let url = &self.0;
        let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
            return url.clone();
        };
        let authority_end = url[scheme_end..]
            .find('/')
            .map_or(url.len(), |i| scheme_end + i);
        let Some(at) = url[scheme_end..authority_end]
            .rfind('@')
            .map(|i| scheme_end + i)
        else {
            return url.clone();
        };
        let userinfo = &url[scheme_end..at];
        let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
        format!("{}{user}:***{}", &url[..scheme_end], &url[at..])
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
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

    #[test]
    fn urls_are_redacted() {
        for (url, shown) in [
            (
                "redis://:hunter2@127.0.0.1:6379/0",
                "redis://:***@127.0.0.1:6379/0",
            ),
            ("redis://app:hunter2@h/0", "redis://app:***@h/0"),
            ("redis://h:6379/0", "redis://h:6379/0"),
            ("unix:///run/redis.sock", "unix:///run/redis.sock"),
            ("redis://a:p@ss@h/0", "redis://a:***@h/0"),
        ] {
            let u = SecretUrl::new(url);
            assert_eq!(u.to_string(), shown);
            assert!(!format!("{u:?}").contains("hunter2"));
        }
    }
}
