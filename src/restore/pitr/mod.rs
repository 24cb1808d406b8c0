//! Point-in-time restores: `atprectl restore --pitr --time T|--latest --to-dir DIR`, and the PITR drill
//! of a physical backup job ([`drill`]).
//!
//! The daemon (it holds the keys) finds what a restore needs ([`prepare`]: the wal-archive
//! job, the verified physical base backups in backup-dir, the archive's index; [`plan`] picks
//! the base and the segments, or names what is missing), then writes the data directory
//! ([`stage`]): the base unpacked, the segments decrypted into `DIR/atpred-wal/` with their
//! `SHA256SUMS`, `restore_command = 'atpred wal-fetch …'` ([`fetch`]), the target time and
//! `recovery.signal`. Starting the server is atprectl's (`--start`), or the drill's own
//! private one ([`server`]).

pub mod drill;
pub mod fetch;
pub mod latest;
pub mod offsite;
pub mod plan;
pub mod server;
pub mod stage;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use self::latest::Goal;
use self::plan::{Base, PitrPlan, PlanError, Segment};
use crate::config::{BackupMethod, Config, JobSpec, WalArchiveSpec};
use crate::jobs::backup::manifest::Manifest;
use crate::jobs::catalog::{self, State};
use crate::wal::index::{Entry, Index};

/// What the operator asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PitrOptions {
    /// `recovery_target_time`; none with `latest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<DateTime<Utc>>,
    /// No target time: recover to the end of the archive, the in-flight segment's archived copy
    /// included ([`latest`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub latest: bool,
    /// The new data directory (absolute; missing or empty).
    pub to_dir: PathBuf,
    /// The wal-archive job (default: the only one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Who owns the data directory (default: `postgres` when that user exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// An age identity file instead of the base backup job's verify-identity-file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<PathBuf>,
    /// Take the base backup and the WAL from this `[offsite.NAME]` target ([`offsite`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl PitrOptions {
    /// Where recovery stops: `--time T` or `--latest`, exactly one.
    pub fn goal(&self) -> Result<Goal, PitrError> {
        Goal::of(self.time, self.latest).map_err(PitrError::BadRequest)
    }

    /// The goal in words, for logs and run records.
    pub fn goal_text(&self) -> String {
        self.goal()
            .map_or_else(|_| "no target".to_owned(), |g| g.to_string())
    }
}

/// Why a point-in-time restore was refused or failed; each refusal has its own exit code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PitrError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    UnknownJob(String),
    #[error("{0}")]
    NoArchiveJob(String),
    #[error("refusing to restore into {0}: it is not empty; name a new or empty folder")]
    DirNotEmpty(String),
    #[error("{0}")]
    Plan(#[from] PlanError),
    #[error(
        "not enough space in {dir}: about {need} bytes needed (base backup unpacked and WAL \
         staged), {free} free"
    )]
    NoSpace { dir: String, need: u64, free: u64 },
    #[error("point-in-time restore failed: {0}; the folder was left as it was")]
    Failed(String),
    #[error("point-in-time restore cancelled; the folder was left as it was")]
    Cancelled,
    #[error("refusing to restore: {0}")]
    Busy(String),
}

/// Everything a restore or drill reads, found and checked.
pub struct Prepared {
    pub plan: PitrPlan,
    pub folder: PathBuf,
    pub manifest: Manifest,
    pub archive_dir: PathBuf,
    pub entries: Vec<Entry>,
    pub identity: Option<PathBuf>,
}

/// The wal-archive job `job` (or the only one).
pub fn archive_job<'c>(
    config: &'c Config,
    job: Option<&str>,
) -> Result<(String, &'c WalArchiveSpec), PitrError> {
    let jobs: Vec<(String, &WalArchiveSpec)> = config
        .jobs
        .values()
        .filter_map(|j| match &j.spec {
            JobSpec::WalArchive(s) => Some((j.name.to_string(), s)),
            _ => None,
        })
        .collect();
    match job {
        Some(name) => {
            if let Some(found) = jobs.iter().find(|(n, _)| n == name) {
                return Ok(found.clone());
            }
            let what = if config.jobs.values().any(|j| j.name.as_str() == name) {
                "is not a wal-archive job"
            } else {
                "is not a job of the configuration"
            };
            Err(PitrError::UnknownJob(format!("--job {name:?} {what}")))
        }
        None => match jobs.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(PitrError::NoArchiveJob(
                "no wal-archive job is configured: a point-in-time restore replays the WAL \
                 archive of a kind = \"wal-archive\" job"
                    .into(),
            )),
            many => Err(PitrError::UnknownJob(format!(
                "several wal-archive jobs ({}): name one with --job",
                many.iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        },
    }
}

/// The verified physical base backups in `backup_dir`, with their folders and manifests.
pub fn bases(backup_dir: &Path) -> Vec<(Base, PathBuf, Manifest)> {
    catalog::list(backup_dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.state == State::Verified)
        .filter_map(|e| {
            let m = e.manifest?;
            let base = base_of(&m)?;
            let folder = catalog::path_of(backup_dir, &m.id)?;
            Some((base, folder, m))
        })
        .collect()
}

/// `m` as the planner takes a base backup, when it is a verified physical one.
pub fn base_of(m: &Manifest) -> Option<Base> {
    let p = m.physical.clone()?;
    if m.method != BackupMethod::Physical || !m.verified() {
        return None;
    }
    Some(Base {
        id: m.id.clone(),
        finished: m.finished,
        timeline: p.timeline,
        start_wal_file: p.start_wal_file,
        stop_lsn: p.stop_lsn,
        tar_bytes: p.tar_bytes,
    })
}

/// The archive's completed segments as the planner takes them (in-flight copies left out).
pub fn segments(entries: &[Entry]) -> Vec<Segment> {
    latest::segments(entries)
}

/// The archive's index lines.
pub fn read_index(archive_dir: &Path) -> Result<Vec<Entry>, PitrError> {
    Index::read(archive_dir).map_err(|e| {
        PitrError::Failed(format!(
            "reading the archive's index in {}: {e}",
            archive_dir.display()
        ))
    })
}

/// Finds and checks what a restore of `options` reads.
pub fn prepare(config: &Config, options: &PitrOptions) -> Result<Prepared, PitrError> {
    let (_, spec) = archive_job(config, options.job.as_deref())?;
    let entries = read_index(&spec.archive_dir)?;
    let found = bases(&config.daemon.backup_dir);
    let list: Vec<Base> = found.iter().map(|(b, _, _)| b.clone()).collect();
    let plan = latest::plan(&list, &entries, options.goal()?)?;
    let (_, folder, manifest) = found
        .into_iter()
        .find(|(b, _, _)| b.id == plan.base)
        .ok_or_else(|| PitrError::Failed(format!("base backup {} vanished", plan.base)))?;
    let identity = identity_for(config, &manifest, options.identity.as_deref(), &entries)?;
    Ok(Prepared {
        plan,
        folder,
        manifest,
        archive_dir: spec.archive_dir.clone(),
        entries,
        identity,
    })
}

/// The identity to decrypt with: `given`, else the base backup job's verify-identity-file;
/// refused when something is encrypted and there is none.
pub fn identity_for(
    config: &Config,
    manifest: &Manifest,
    given: Option<&Path>,
    entries: &[Entry],
) -> Result<Option<PathBuf>, PitrError> {
    let identity = given.map(Path::to_path_buf).or_else(|| {
        config.jobs.values().find_map(|j| match &j.spec {
            JobSpec::Backup(b) if j.name.as_str() == manifest.job => b.verify_identity_file.clone(),
            _ => None,
        })
    });
    let encrypted = manifest.encrypted() || entries.iter().any(|e| e.file.ends_with(".age"));
    if encrypted && identity.is_none() {
        return Err(PitrError::BadRequest(format!(
            "the base backup {} or the WAL archive is encrypted and there is no identity to \
             decrypt with: give --identity FILE or set verify-identity-file on job {}",
            manifest.id, manifest.job
        )));
    }
    Ok(identity)
}

/// `dir` must be absolute and missing or an empty folder.
pub fn check_dir(dir: &Path) -> Result<(), PitrError> {
    if !dir.is_absolute() {
        return Err(PitrError::BadRequest(format!(
            "--to-dir {} is not an absolute path",
            dir.display()
        )));
    }
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(PitrError::DirNotEmpty(dir.display().to_string()));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match dir.parent() {
            Some(p) if p.is_dir() => Ok(()),
            _ => Err(PitrError::BadRequest(format!(
                "--to-dir {}: its parent folder does not exist",
                dir.display()
            ))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Err(PitrError::BadRequest(
            format!("--to-dir {} is not a folder", dir.display()),
        )),
        Err(e) => Err(PitrError::BadRequest(format!(
            "--to-dir {}: {e}",
            dir.display()
        ))),
    }
}

/// Refuses when the file system of `dir` (or its parent, before it exists) has less than
/// `need` bytes free.
pub fn check_space(dir: &Path, need: u64) -> Result<(), PitrError> {
    let probe = if dir.exists() {
        dir
    } else {
        dir.parent().unwrap_or(dir)
    };
    let s = nix::sys::statvfs::statvfs(probe)
        .map_err(|e| PitrError::Failed(format!("statvfs {}: {e}", probe.display())))?;
    let free = s.blocks_available().saturating_mul(s.fragment_size());
    if free < need {
        return Err(PitrError::NoSpace {
            dir: probe.display().to_string(),
            need,
            free,
        });
    }
    Ok(())
}

/// The uid and gid of `owner`, or of `postgres` when it exists and none was named. A daemon
/// that is not root keeps the files (and can give them to no one else).
pub fn owner(name: Option<&str>) -> Result<Option<(u32, u32)>, PitrError> {
    let root = nix::unistd::geteuid().is_root();
    if !root && name.is_none() {
        return Ok(None);
    }
    let wanted = name.unwrap_or("postgres");
    match nix::unistd::User::from_name(wanted) {
        Ok(Some(u)) if !root && u.uid != nix::unistd::geteuid() => {
            Err(PitrError::BadRequest(format!(
                "--owner {wanted:?}: the daemon does not run as root and cannot give the files \
                 away; restore without --owner (they are then the daemon's user's)"
            )))
        }
        Ok(Some(u)) => Ok(Some((u.uid.as_raw(), u.gid.as_raw()))),
        Ok(None) if name.is_none() => Ok(None),
        Ok(None) => Err(PitrError::BadRequest(format!(
            "--owner {wanted:?}: no such user"
        ))),
        Err(e) => Err(PitrError::BadRequest(format!("--owner {wanted:?}: {e}"))),
    }
}

/// The `atpred` binary (this daemon's own), which recovery runs as `restore_command`.
pub fn atpred_binary() -> Result<PathBuf, PitrError> {
    std::env::current_exe()
        .map_err(|e| PitrError::Failed(format!("cannot find the atpred binary: {e}")))
}

/// What a finished restore reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PitrReport {
    pub plan: PitrPlan,
    pub to_dir: PathBuf,
    pub owner: Option<String>,
    pub staged: stage::Staged,
    pub duration_ms: u64,
}
