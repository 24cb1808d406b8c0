//! `atprectl restore ID --redis-dir DIR`: a Redis backup's RDB staged in the server's data
//! folder as `dump.rdb.atpred-<id>` — decrypted and decoded with its checksum checked, owned
//! and moded like the `dump.rdb` already there (else like DIR, mode 0600), written under a
//! temporary name, fsynced and renamed — and the exact steps to load it printed.
//!
//! The daemon never stops or starts a server. It does not write `dump.rdb` itself: a running
//! Redis overwrites `dump.rdb` when it saves on shutdown, so the operator moves the staged
//! file over it (one rename) once Redis is stopped.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::RestoreError;
use crate::jobs::backup::manifest::Manifest;
use crate::jobs::backup::redis::check;

/// The RDB's name in a Redis data folder (`dbfilename`'s default).
pub const DUMP: &str = "dump.rdb";

/// What was staged, and how to load it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staged {
    pub id: String,
    pub redis_dir: PathBuf,
    /// The staged RDB, to be renamed to `dump.rdb`.
    pub staged: PathBuf,
    pub rdb_bytes: u64,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    /// The steps to load it, in order; shell commands are quoted exactly.
    pub steps: Vec<String>,
}

/// Stages the RDB of backup `m` (in folder `backup`) in `redis_dir`. Blocking.
pub fn stage(
    backup: &Path,
    m: &Manifest,
    identity: Option<&Path>,
    redis_dir: &Path,
) -> Result<Staged, RestoreError> {
    let file = first_file(m)?;
    stage_with(m, redis_dir, |tmp| {
        check::unpack(&backup.join(&file.path), m, file, identity, tmp)
    })
}

/// Stages the RDB of backup `m` read from `input` (its copy at an offsite target, as it
/// downloads: hashed, decrypted and decoded in one pass) in `redis_dir`. Blocking.
pub fn stage_from(
    input: impl std::io::Read,
    m: &Manifest,
    identity: Option<&Path>,
    redis_dir: &Path,
) -> Result<Staged, RestoreError> {
    let file = first_file(m)?;
    stage_with(m, redis_dir, |tmp| {
        check::unpack_from(input, m, file, identity, tmp)
    })
}

/// The refusals of `redis_dir`, then `fill` writes the RDB into a temporary file there, which
/// is owned, moded, renamed to the staged name and the folder synced.
fn stage_with(
    m: &Manifest,
    redis_dir: &Path,
    fill: impl FnOnce(&Path) -> Result<u64, String>,
) -> Result<Staged, RestoreError> {
    let dir_meta = check_dir(redis_dir)?;
    let (uid, gid, mode) = match std::fs::symlink_metadata(redis_dir.join(DUMP)) {
        Ok(meta) if meta.is_file() => (meta.uid(), meta.gid(), meta.mode() & 0o777),
        _ => (dir_meta.uid(), dir_meta.gid(), 0o600),
    };
    let staged = redis_dir.join(format!("{DUMP}.atpred-{}", m.id));
    let tmp = redis_dir.join(format!(
        ".{DUMP}.atpred-{}.{}.tmp",
        m.id,
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let written = fill(&tmp).and_then(|bytes| {
        own(&tmp, uid, gid, mode).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &staged).map_err(|e| format!("{}: {e}", staged.display()))?;
        crate::publish::sync_dir(redis_dir).map_err(|e| e.to_string())?;
        Ok(bytes)
    });
    let rdb_bytes = match written {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(RestoreError::FolderFailed {
                dir: redis_dir.display().to_string(),
                why: format!("{e}; nothing was staged, the server's files were not touched"),
            });
        }
    };
    let steps = steps(m, redis_dir, &staged);
    Ok(Staged {
        id: m.id.clone(),
        redis_dir: redis_dir.to_owned(),
        staged,
        rdb_bytes,
        uid,
        gid,
        mode,
        steps,
    })
}

/// `redis_dir` must be an absolute path to a folder (a symlink is not followed).
pub fn check_dir(redis_dir: &Path) -> Result<std::fs::Metadata, RestoreError> {
    let bad = |why: String| {
        RestoreError::BadRequest(format!("--redis-dir {}: {why}", redis_dir.display()))
    };
    if !redis_dir.is_absolute() {
        return Err(bad("not an absolute path".into()));
    }
    let dir_meta = std::fs::symlink_metadata(redis_dir).map_err(|e| bad(e.to_string()))?;
    if !dir_meta.is_dir() {
        return Err(bad("not a folder (a symlink is not followed)".into()));
    }
    Ok(dir_meta)
}

fn first_file(m: &Manifest) -> Result<&crate::jobs::backup::manifest::FileSum, RestoreError> {
    m.files
        .first()
        .ok_or_else(|| RestoreError::Failed(format!("{}: the manifest lists no file", m.id)))
}

/// Owner and mode through a handle opened without following links (the folder may be
/// writable by Redis's user).
fn own(path: &Path, uid: u32, gid: u32, mode: u32) -> std::io::Result<()> {
    let f = File::options()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    let meta = f.metadata()?;
    // Only root may give a file away (and the shipped unit filters chown): skip it when the
    // owner is already right, and say what to do when it cannot be done.
    if (meta.uid(), meta.gid()) != (uid, gid) {
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid)).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot give it to {uid}:{gid} as Redis's dump.rdb is ({e}); the daemon \
                     must run as root for --redis-dir, or stage into a folder of its own user"
                ),
            )
        })?;
    }
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.sync_all()
}

fn steps(m: &Manifest, dir: &Path, staged: &Path) -> Vec<String> {
    let q = |p: &Path| shell_quote(&p.display().to_string());
    let dump = dir.join(DUMP);
    let aof = m
        .redis
        .as_ref()
        .map_or("unknown", |r| if r.aof_enabled { "on" } else { "off" });
    let keys: u64 = m
        .redis
        .as_ref()
        .map_or(0, |r| r.keyspace.values().map(|d| d.keys).sum());
    vec![
        "Stop Redis (e.g. systemctl stop redis-server); it must not run while dump.rdb is \
         replaced, or its shutdown save overwrites it"
            .into(),
        format!(
            "Keep the current data, if any: mv -f {} {}",
            q(&dump),
            q(&dir.join(format!("{DUMP}.before-restore")))
        ),
        format!("Put the backup in place: mv -f {} {}", q(staged), q(&dump)),
        format!(
            "If AOF is on (appendonly yes in redis.conf; the backed-up server had it {aof}): set \
             appendonly no in redis.conf, or Redis loads its AOF and ignores dump.rdb"
        ),
        format!(
            "Start Redis (e.g. systemctl start redis-server); it loads dump.rdb: {keys} keys at \
             backup time (redis-cli INFO keyspace)"
        ),
        "If you turned AOF off: redis-cli CONFIG SET appendonly yes (Redis writes a new AOF from \
         the loaded data; wait until INFO persistence says aof_rewrite_in_progress:0), then set \
         appendonly yes in redis.conf again"
            .into(),
    ]
}

/// Single quotes for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
