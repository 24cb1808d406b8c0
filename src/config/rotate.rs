//! Settings of `kind = "rotate"` jobs and their validation.

use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::raw::RawJob;
use super::validate::Check;
use super::{Compression, ConfigError};

/// The keys a rotate job accepts besides the common ones.
pub(super) const KEYS: &[&str] = &[
    "paths",
    "missing-ok",
    "max-size",
    "max-age",
    "min-size",
    "if-empty",
    "method",
    "reopen",
    "reopen-command",
    "naming",
    "compress",
    "compress-level",
    "delay-compress",
    "keep",
    "max-keep-age",
    "allow-shared-dir",
    "su",
];

/// `kind = "rotate"`: the application's own log files, rotated like logrotate does.
#[derive(Debug, Clone)]
pub struct RotateSpec {
    /// Absolute glob patterns naming the logs.
    pub paths: Vec<String>,
    pub missing_ok: bool,
    /// Rotate once a log is at least this big.
    pub max_size: Option<u64>,
    /// Rotate once this long has passed since the log's last rotation ...
    pub max_age: Option<Duration>,
    /// ... and it has at least this many bytes.
    pub min_size: u64,
    /// Rotate an empty log too (logrotate's `ifempty`).
    pub if_empty: bool,
    pub method: Method,
    pub naming: Naming,
    pub compress: Compression,
    /// Leave the newest rotated file uncompressed.
    pub delay_compress: bool,
    /// How many rotated files to keep.
    pub keep: u32,
    /// Remove rotated files older than this (by modification time).
    pub max_keep_age: Option<Duration>,
    /// Rotate in a directory that users other than root and atpred's own may write to.
    pub allow_shared_dir: bool,
    /// `su = "user:group"`: the owner of the logs' folders, trusted to write there, and, when
    /// atpred may switch users, the user the job's file work is done as.
    pub su: Option<SuUser>,
}

/// The user and group of a rotate job's `su` key, resolved at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuUser {
    pub uid: u32,
    pub gid: u32,
    /// As written: `user:group`.
    pub text: String,
}

/// How the current log is turned into a rotated file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// Rename, create a fresh log, ask the writer to reopen.
    Create(Reopen),
    /// Copy, copy what was appended meanwhile, truncate.
    CopyTruncate,
}

/// How the writer is told to reopen its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reopen {
    /// Send `signal` to the pid written in `pid_file`.
    Signal { pid_file: PathBuf, signal: Signal },
    /// Run this argv (no shell).
    Command(Vec<String>),
}

/// How rotated files are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Naming {
    /// `app.log.1`, `app.log.2.zst`, ...: shifted up at each rotation.
    Number,
    /// `app.log-20261128`, then `app.log-20261128-143005` when that exists.
    Date,
}

pub(super) fn validate(check: &Check, key: &str, raw: RawJob) -> Result<RotateSpec, ConfigError> {
    let k = |name: &str| format!("{key}.{name}");
    let paths = raw.paths.clone().unwrap_or_default();
    if paths.is_empty() {
        return Err(check.err(
            &k("paths"),
            "needs at least one log path or glob, e.g. [\"/var/log/atpre/*.log\"]",
        ));
    }
    for p in &paths {
        if !p.starts_with('/') {
            return Err(check.err(&k("paths"), format!("{p:?} is not an absolute path")));
        }
        if let Err(e) = glob::Pattern::new(p) {
            return Err(check.err(&k("paths"), format!("{p:?} is not a valid glob: {e}")));
        }
    }
    let size = |name: &str, v: &Option<String>| -> Result<Option<u64>, ConfigError> {
        v.as_deref()
            .map(|t| {
                t.trim()
                    .parse::<bytesize::ByteSize>()
                    .map(|b| b.as_u64())
                    .map_err(|_| {
                        check.err(
                            &k(name),
                            format!("{t:?} is not a size (write e.g. \"100MiB\")"),
                        )
                    })
            })
            .transpose()
    };
    let duration = |name: &str, v: &Option<String>| -> Result<Option<Duration>, ConfigError> {
        v.as_deref()
            .map(|t| check.duration(&k(name), Some(t), Duration::ZERO))
            .transpose()
    };
    let max_size = size("max-size", &raw.max_size)?;
    let max_age = duration("max-age", &raw.max_age)?;
    let min_size = size("min-size", &raw.min_size)?;
    if max_size.is_none() && max_age.is_none() {
        return Err(check.err(
            key,
            "a rotate job needs a trigger: set max-size, max-age or both",
        ));
    }
    if min_size.is_some() && max_age.is_none() {
        return Err(check.err(
            &k("min-size"),
            "applies to max-age rotations: set max-age too",
        ));
    }
    let method = method(check, &k, &raw)?;
    let naming = match raw.naming.as_deref().unwrap_or("number") {
        "number" => Naming::Number,
        "date" => Naming::Date,
        other => {
            return Err(check.err(
                &k("naming"),
                format!("{other:?} is not \"number\" or \"date\""),
            ));
        }
    };
    let compress = compression(check, &k, &raw)?;
    let delay_compress = raw.delay_compress.unwrap_or(false);
    if delay_compress && compress == Compression::None {
        return Err(check.err(
            &k("delay-compress"),
            "has no effect with compress = \"none\"",
        ));
    }
    let keep = raw.keep.unwrap_or(7);
    if !(1..=10_000).contains(&keep) {
        return Err(check.err(&k("keep"), "must be between 1 and 10000"));
    }
    Ok(RotateSpec {
        paths,
        missing_ok: raw.missing_ok.unwrap_or(true),
        max_size,
        max_age,
        min_size: min_size.unwrap_or(0),
        if_empty: raw.if_empty.unwrap_or(false),
        method,
        naming,
        compress,
        delay_compress,
        keep,
        max_keep_age: duration("max-keep-age", &raw.max_keep_age)?,
        allow_shared_dir: raw.allow_shared_dir.unwrap_or(false),
        su: raw
            .su
            .as_deref()
            .map(|t| su(check, &k("su"), t))
            .transpose()?,
    })
}

/// `"user:group"`, both names (or numbers) that exist on this machine.
fn su(check: &Check, key: &str, text: &str) -> Result<SuUser, ConfigError> {
    let Some((user, group)) = text
        .split_once(':')
        .filter(|(u, g)| !u.is_empty() && !g.is_empty())
    else {
        return Err(check.err(key, format!("{text:?} is not \"user:group\"")));
    };
    let uid = match user.parse::<u32>() {
        Ok(n) => Some(n),
        Err(_) => nix::unistd::User::from_name(user)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw()),
    };
    let gid = match group.parse::<u32>() {
        Ok(n) => Some(n),
        Err(_) => nix::unistd::Group::from_name(group)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw()),
    };
    match (uid, gid) {
        (Some(uid), Some(gid)) => Ok(SuUser {
            uid,
            gid,
            text: text.to_owned(),
        }),
        (None, _) => Err(check.err(key, format!("no user {user:?} on this machine"))),
        (_, None) => Err(check.err(key, format!("no group {group:?} on this machine"))),
    }
}

fn method(check: &Check, k: &dyn Fn(&str) -> String, raw: &RawJob) -> Result<Method, ConfigError> {
    let reopen = match (&raw.reopen, &raw.reopen_command) {
        (Some(_), Some(_)) => {
            return Err(check.err(
                &k("reopen-command"),
                "set either reopen or reopen-command, not both",
            ));
        }
        (Some(r), None) => {
            let Some(pid_file) = r.pid_file.clone().filter(|p| p.is_absolute()) else {
                return Err(check.err(
                    &k("reopen.pid-file"),
                    "needs the absolute path of the writer's pid file",
                ));
            };
            let name = r.signal.as_deref().unwrap_or("HUP");
            let signal = parse_signal(name).ok_or_else(|| {
                check.err(
                    &k("reopen.signal"),
                    format!("{name:?} is not a signal name (e.g. \"HUP\", \"USR1\")"),
                )
            })?;
            Some(Reopen::Signal { pid_file, signal })
        }
        (None, Some(argv)) => {
            if argv.is_empty() || argv[0].is_empty() || argv.iter().any(|a| a.contains('\0')) {
                return Err(check.err(
                    &k("reopen-command"),
                    "needs a program and its arguments, e.g. [\"systemctl\", \"kill\", \"-s\", \"HUP\", \"atpre-api\"]",
                ));
            }
            Some(Reopen::Command(argv.clone()))
        }
        (None, None) => None,
    };
    match (raw.method.as_deref().unwrap_or("create"), reopen) {
        ("create", Some(reopen)) => Ok(Method::Create(reopen)),
        ("create", None) => Err(check.err(
            &k("method"),
            "\"create\" needs reopen = { pid-file = ..., signal = \"HUP\" } or reopen-command so the writer moves to the new file (or use method = \"copytruncate\")",
        )),
        ("copytruncate", None) => Ok(Method::CopyTruncate),
        ("copytruncate", Some(_)) => Err(check.err(
            &k("method"),
            "\"copytruncate\" never asks the writer to reopen: remove reopen / reopen-command",
        )),
        (other, _) => Err(check.err(
            &k("method"),
            format!("{other:?} is not \"create\" or \"copytruncate\""),
        )),
    }
}

/// "HUP", "SIGHUP" or "hup".
fn parse_signal(name: &str) -> Option<Signal> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse()
        .ok()
        .filter(|s| *s != Signal::SIGKILL && *s != Signal::SIGSTOP)
}

fn compression(
    check: &Check,
    k: &dyn Fn(&str) -> String,
    raw: &RawJob,
) -> Result<Compression, ConfigError> {
    let method = raw.compress.as_deref().unwrap_or("zstd");
    let level = |range, default| {
        check.compress_level(
            &k("compress-level"),
            raw.compress_level,
            method,
            range,
            default,
        )
    };
    match method {
        "none" if raw.compress_level.is_some() => Err(check.err(
            &k("compress-level"),
            "has no effect with compress = \"none\"",
        )),
        "none" => Ok(Compression::None),
        "gzip" => Ok(Compression::Gzip {
            level: level(1..=9, 6)?,
        }),
        "zstd" => Ok(Compression::Zstd {
            level: level(1..=19, 3)?,
        }),
        other => Err(check.err(
            &k("compress"),
            format!("{other:?} is not \"zstd\", \"gzip\" or \"none\""),
        )),
    }
}

#[cfg(test)]
mod tests;
