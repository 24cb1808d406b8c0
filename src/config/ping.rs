//! Validation of dead-man ping URLs: a job's `ping-url` and `[daemon] heartbeat-url`, and
//! `heartbeat-every`.
//!
//! A ping URL holds its secret in the path (`https://hc-ping.com/<uuid>`), so it is kept as a
//! [`SecretUrl::origin_only`] and no error here ever quotes more than its origin.

use std::time::Duration;

use super::ConfigError;
use super::validate::Check;
use crate::secret::SecretUrl;

/// `heartbeat-every` when the key is absent.
const DEFAULT_EVERY: Duration = Duration::from_secs(60);
/// Shorter would be a load on the receiver, not a better watch.
const MIN_EVERY: Duration = Duration::from_secs(1);

/// `None` for an absent or empty value; else an http(s) URL with a host, without user-info
/// or a fragment.
pub(super) fn url(
    check: &Check,
    key: &str,
    value: Option<String>,
) -> Result<Option<SecretUrl>, ConfigError> {
    let Some(raw) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let url = SecretUrl::origin_only(raw);
    if let Err(why) = judge(url.expose()) {
        return Err(check.err(key, format!("{url}: {why}")));
    }
    Ok(Some(url))
}

/// Why `url` cannot be a ping URL. Never quotes it: the caller shows the origin.
fn judge(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("is not an http:// or https:// URL")?;
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains white space or control characters");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err("carries user-info (user:password@); ping URLs keep their secret in the path");
    }
    if authority.is_empty() {
        return Err("has no host");
    }
    if url.contains('#') {
        return Err("has a #fragment, which is never sent to the server");
    }
    Ok(())
}

pub(super) fn every(check: &Check, value: Option<&str>) -> Result<Duration, ConfigError> {
    let key = "daemon.heartbeat-every";
    let every = check.duration(key, value, DEFAULT_EVERY)?;
    if every < MIN_EVERY {
        return Err(check.err(key, "must be at least 1s"));
    }
    Ok(every)
}

#[cfg(test)]
mod tests {
    use super::judge;

    #[test]
    fn ping_urls() {
        for ok in [
            "https://hc-ping.com/5b7e0c9e-0000-4000-8000-000000000000",
            "http://127.0.0.1:8000/ping/abc/",
            "https://hc-ping.com/KEY/slug?create=1",
        ] {
            assert_eq!(judge(ok), Ok(()), "{ok}");
        }
        for bad in [
            "ftp://hc-ping.com/x",
            "hc-ping.com/x",
            "https://user:pw@hc-ping.com/x",
            "https:///x",
            "https://hc-ping.com/x#frag",
            "https://hc-ping.com/x y",
        ] {
            assert!(judge(bad).is_err(), "{bad}");
        }
    }
}
