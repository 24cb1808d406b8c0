//! `[offsite.NAME]` tables: S3-compatible targets that verified backups are copied to, and the
//! cross-checks with the jobs that use them (`offsite = "NAME"` or `["NAME", ...]` on backup
//! jobs, `offsite = "NAME"` on prune jobs).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::raw::RawOffsite;
use super::validate::Check;
use super::{Config, ConfigError, JobSpec};

mod names;
pub use names::OffsiteNames;

/// One S3-compatible target.
#[derive(Debug, Clone, PartialEq)]
pub struct OffsiteTarget {
    pub name: String,
    /// `None`: AWS itself, from the region.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    /// Prepended to every key, without a trailing `/`; may be empty.
    pub prefix: String,
    /// Path-style requests (`endpoint/bucket/key`), as Garage and MinIO expect.
    pub path_style: bool,
    /// AWS shared-credentials format; read at each use, never kept in the configuration.
    pub credentials_file: PathBuf,
    /// Accept backups that are not age-encrypted. Off: the deployment guidance says to
    /// encrypt before remote storage.
    pub allow_plaintext: bool,
    /// Multipart part size; memory is bounded by `part_size * (concurrency + 1)`.
    pub part_size: usize,
    /// Parts in flight at once.
    pub concurrency: usize,
    /// Retries of one request (with exponential backoff) before the copy fails.
    pub retries: usize,
    /// No request is retried after this long.
    pub retry_timeout: Duration,
    /// One HTTP request, connect included.
    pub request_timeout: Duration,
}

/// S3's own limits: parts of at least 5 MiB (but the last), at most 10,000 parts.
const MIN_PART: u64 = 5 * 1024 * 1024;
const MAX_PART: u64 = 1024 * 1024 * 1024;

pub(super) fn validate(
    check: &Check,
    raw: BTreeMap<String, RawOffsite>,
) -> Result<BTreeMap<String, OffsiteTarget>, ConfigError> {
    let mut targets = BTreeMap::new();
    for (name, t) in raw {
        let key = format!("offsite.{name}");
        let k = |field: &str| format!("{key}.{field}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(check.err(&key, "a target name uses letters, digits, - and _ only"));
        }
        let endpoint = t
            .endpoint
            .filter(|e| !e.trim().is_empty())
            .map(|e| endpoint(check, &k("endpoint"), e.trim()))
            .transpose()?;
        let Some(bucket) = t.bucket.filter(|b| !b.is_empty()) else {
            return Err(check.err(&k("bucket"), "missing: the bucket to copy backups into"));
        };
        if !bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        {
            return Err(check.err(
                &k("bucket"),
                format!(
                    "{bucket:?} is not an S3 bucket name (lower-case letters, digits, - and .)"
                ),
            ));
        }
        let prefix = t.prefix.unwrap_or_default().trim_matches('/').to_owned();
        if prefix.split('/').any(|s| s == "." || s == "..") {
            return Err(check.err(&k("prefix"), "must not contain . or .. segments"));
        }
        let Some(credentials_file) =
            check.secret_file(&k("credentials-file"), t.credentials_file)?
        else {
            return Err(check.err(
                &k("credentials-file"),
                "missing: a file with aws_access_key_id and aws_secret_access_key (mode 0600), or credential:NAME",
            ));
        };
        let part_size = match t.part_size.as_deref() {
            None => 16 * 1024 * 1024,
            Some(s) => {
                let b = s.parse::<bytesize::ByteSize>().map_err(|_| {
                    check.err(
                        &k("part-size"),
                        format!("{s:?} is not a size such as \"16MiB\""),
                    )
                })?;
                if !(MIN_PART..=MAX_PART).contains(&b.as_u64()) {
                    return Err(check.err(
                        &k("part-size"),
                        "must be between 5MiB (S3's smallest part) and 1GiB",
                    ));
                }
                b.as_u64() as usize
            }
        };
        let concurrency = t.concurrency.unwrap_or(4);
        if !(1..=32).contains(&concurrency) {
            return Err(check.err(&k("concurrency"), "must be between 1 and 32"));
        }
        let retries = t.retries.unwrap_or(10);
        if retries > 20 {
            return Err(check.err(&k("retries"), "at most 20"));
        }
        targets.insert(
            name.clone(),
            OffsiteTarget {
                name,
                path_style: t.path_style.unwrap_or(endpoint.is_some()),
                endpoint,
                region: t.region.unwrap_or_else(|| "us-east-1".to_owned()),
                bucket,
                prefix,
                credentials_file,
                allow_plaintext: t.allow_plaintext.unwrap_or(false),
                part_size,
                concurrency: concurrency as usize,
                retries: retries as usize,
                retry_timeout: check.duration(
                    &k("retry-timeout"),
                    t.retry_timeout.as_deref(),
                    Duration::from_secs(120),
                )?,
                request_timeout: check.duration(
                    &k("request-timeout"),
                    t.request_timeout.as_deref(),
                    Duration::from_secs(300),
                )?,
            },
        );
    }
    Ok(targets)
}

/// An `http(s)://host[:port][/path]` endpoint. Plain http only to this machine: anything else
/// would send the bucket's traffic, and its signed requests, in the clear. No user-info, query
/// or fragment: object_store prints the endpoint in its errors, so nothing secret may be in it
/// (errors here show the redacted form only).
fn endpoint(check: &Check, key: &str, e: &str) -> Result<String, ConfigError> {
    let shown = crate::secret::SecretUrl::new(e);
    let rest = if let Some(r) = e.strip_prefix("https://") {
        r
    } else if let Some(r) = e.strip_prefix("http://") {
        let host = r.split(['/', ':', '?', '#']).next().unwrap_or_default();
        let host = if r.starts_with('[') {
            r.split(']')
                .next()
                .unwrap_or_default()
                .trim_start_matches('[')
        } else {
            host
        };
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Err(check.err(
                key,
                format!("\"{shown}\" is plain http to another host; use https://"),
            ));
        }
        r
    } else {
        return Err(check.err(
            key,
            format!("\"{shown}\" is not an https:// (or loopback http://) URL"),
        ));
    };
    if rest.is_empty() || rest.contains(['@', '?', '#']) {
        return Err(check.err(
            key,
            "needs a host, and no credentials, query or fragment in the URL (use credentials-file)",
        ));
    }
    Ok(e.trim_end_matches('/').to_owned())
}

/// Every name in the `offsite` of a backup job, and that of a prune job, names a target, once;
/// a backup job copying plaintext needs each target's `allow-plaintext`.
pub(super) fn check_jobs(check: &Check, config: &Config) -> Result<(), ConfigError> {
    for job in config.jobs.values() {
        let key = format!("jobs.{}.offsite", job.name);
        let (names, encrypted) = match &job.spec {
            JobSpec::Backup(b) => (b.offsite.as_slice(), !b.encrypt_to.is_empty()),
            JobSpec::WalArchive(w) => (w.offsite.as_slice(), !w.encrypt_to.is_empty()),
            JobSpec::Prune(p) => match &p.target {
                crate::jobs::prune::Target::Offsite(n) => (std::slice::from_ref(n), true),
                crate::jobs::prune::Target::Local => continue,
            },
            _ => continue,
        };
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                return Err(check.err(&key, format!("{name:?} is listed twice")));
            }
            check_job_target(check, config, &key, name, encrypted)?;
        }
    }
    Ok(())
}

fn check_job_target(
    check: &Check,
    config: &Config,
    key: &str,
    name: &str,
    encrypted: bool,
) -> Result<(), ConfigError> {
    let Some(target) = config.offsite.get(name) else {
        let known: Vec<&str> = config.offsite.keys().map(String::as_str).collect();
        return Err(check.err(
            key,
            format!(
                "no [offsite.{name}] table in this configuration (targets: {})",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        ));
    };
    if !encrypted && !target.allow_plaintext {
        return Err(check.err(
            key,
            format!(
                "target {name:?} refuses plaintext backups: set encrypt-to on this job \
                 (backups are encrypted before remote storage), or allow-plaintext = true \
                 in [offsite.{name}]"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
