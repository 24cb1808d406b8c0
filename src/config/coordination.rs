//! `[coordination]`: which shared service the hosts of a fleet use to take each tick of a
//! coordinated job once (see `crate::coordination`), the lease's time-to-live, and the name
//! this host reports to the others.

use std::time::Duration;

use super::ConfigError;
use super::raw::RawCoordination;
use super::validate::Check;

/// The longest host name a lease carries (a DNS name's limit).
const MAX_HOST: usize = 253;
const MAX_PREFIX: usize = 64;

#[derive(Debug, Clone)]
pub struct CoordinationConfig {
    pub backend: Backend,
    /// A lease not renewed for this long is free for another host.
    pub ttl: Duration,
    /// The name this host reports as holder.
    pub host: String,
    /// Prefix of the Redis keys and of the advisory-lock key's hash input.
    pub key_prefix: String,
}

impl CoordinationConfig {
    /// How often a held lease is renewed (or its PostgreSQL connection checked).
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Every host runs every tick (a single host, or jobs that must run everywhere).
    None,
    Redis,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::None => "none",
            Backend::Redis => "redis",
            Backend::Postgres => "postgres",
        }
    }
}

pub(super) fn validate(
    check: &Check,
    raw: RawCoordination,
) -> Result<CoordinationConfig, ConfigError> {
    let backend = match raw.backend.as_deref().unwrap_or("none") {
        "none" => Backend::None,
        "redis" => Backend::Redis,
        "postgres" => Backend::Postgres,
        other => {
            return Err(check.err(
                "coordination.backend",
                format!("{other:?} is not one of \"redis\", \"postgres\", \"none\""),
            ));
        }
    };
    let ttl = check.duration(
        "coordination.ttl",
        raw.ttl.as_deref(),
        Duration::from_secs(30),
    )?;
    // Under a second the renewals (ttl/3) would race the round trips they make.
    if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&ttl) {
        return Err(check.err("coordination.ttl", "must be between 1s and 1h"));
    }
    let host = match raw.host {
        Some(h) => h,
        None if backend == Backend::None => String::new(),
        None => local_hostname().ok_or_else(|| {
            check.err(
                "coordination.host",
                "cannot read this host's name from /proc/sys/kernel/hostname: set it",
            )
        })?,
    };
    if backend != Backend::None {
        word(check, "coordination.host", &host, MAX_HOST)?;
    }
    let key_prefix = raw.key_prefix.unwrap_or_else(|| "atpred".to_owned());
    word(check, "coordination.key-prefix", &key_prefix, MAX_PREFIX)?;
    Ok(CoordinationConfig {
        backend,
        ttl,
        host,
        key_prefix,
    })
}

/// Host names and prefixes go into space-separated lease values and Redis keys: one printable
/// word.
fn word(check: &Check, key: &str, value: &str, max: usize) -> Result<(), ConfigError> {
    if value.is_empty() || value.len() > max {
        return Err(check.err(key, format!("must be 1 to {max} characters")));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(check.err(key, format!("{value:?} must not contain spaces")));
    }
    Ok(())
}

fn local_hostname() -> Option<String> {
    let text = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = text.trim();
    (!name.is_empty()).then(|| name.to_owned())
}
