//! Drill evidence: `evidence.json` in the backup folder, the record of the last restore drill
//! (when, how long, tables, rows, smoke queries, passed or not), the last drill that passed and
//! the last restore made from the backup, each with the data's age at that moment.
//!
//! It lives beside the backup (like `pin.json`), so it survives a lost state-dir and goes
//! when the backup goes. It is not listed in the manifest or `SHA256SUMS`: recording a drill
//! never changes what a verification checks. Evidence is advisory: a failure to write it is
//! logged and never fails the drill or the restore; a file that cannot be read is replaced.
//!
//! Read by `atprectl backups show`, by the metrics ([`crate::metrics`]) and by the restore
//! plan's time estimate ([`estimate`]).

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::exec::Report;
use super::smoke::SmokeResult;
use crate::jobs::backup::manifest::Manifest;
use crate::jobs::catalog::{self, State};

/// The file's name in the backup folder.
pub const EVIDENCE_FILE: &str = "evidence.json";

/// The largest `evidence.json` read; ours are a few kilobytes.
const MAX_BYTES: u64 = 1024 * 1024;

/// One read-modify-write at a time (a drill and a restore of one backup may end together).
static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drill: Option<Drill>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_passed_drill: Option<Drill>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restore: Option<Restore>,
}

/// A restore drill into a scratch database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drill {
    /// When it ended.
    pub at: DateTime<Utc>,
    /// The whole verification at level restore: reading, unpacking, restoring, checking.
    pub duration_ms: u64,
    pub passed: bool,
    pub tables: usize,
    pub rows: i64,
    /// How old the restored data was: `at` minus the backup's snapshot time.
    pub data_age_seconds: i64,
    #[serde(default)]
    pub smoke: Vec<SmokeResult>,
    pub details: String,
    /// What a Redis or files drill loaded (a PostgreSQL drill says it in `tables` and `rows`,
    /// which are 0 here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaded: Option<Loaded>,
}

/// What a drill of a Redis or files backup loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Loaded {
    /// Keys the scratch redis-server loaded, in how many databases.
    Redis { databases: usize, keys: u64 },
    /// Entries (files, folders, symlinks) unpacked into scratch space, and the files' bytes.
    Files { entries: usize, bytes: u64 },
}

/// A restore (`atprectl restore`) made from the backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Restore {
    pub at: DateTime<Utc>,
    pub duration_ms: u64,
    pub database: String,
    pub tables: usize,
    pub rows: i64,
    pub jobs: u32,
    pub data_age_seconds: i64,
}

/// What `--dry-run` says of the time a restore will take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Estimate {
    pub millis: u64,
    /// Where the figure comes from, in words.
    pub basis: String,
}

/// Seconds from the backup's snapshot to `at`.
pub fn data_age(manifest: &Manifest, at: DateTime<Utc>) -> i64 {
    (at - manifest.started).num_seconds().max(0)
}

/// The evidence of the backup folder `dir`; `None` when there is none or it cannot be read.
pub fn read(dir: &Path) -> Option<Evidence> {
    let path = dir.join(EVIDENCE_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(&path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    file.by_ref().take(MAX_BYTES).read_to_end(&mut bytes).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::warn!("{}: unreadable, ignored: {e}", path.display());
            None
        }
    }
}

/// Records a drill of the backup in `dir` (the partial folder during a backup run).
pub fn drilled(dir: &Path, drill: Drill) {
    update(dir, |e| {
        if drill.passed {
            e.last_passed_drill = Some(drill.clone());
        }
        e.last_drill = Some(drill);
    });
}

/// Records the drill of a Redis or files backup that `verification` concludes (started at
/// `t0`; `loaded` is what it loaded when it got that far) in `dir`'s evidence.
pub fn drilled_source(
    dir: &Path,
    manifest: &Manifest,
    verification: &crate::jobs::backup::manifest::Verification,
    t0: std::time::Instant,
    loaded: Option<Loaded>,
) {
    drilled(
        dir,
        Drill {
            at: verification.at,
            duration_ms: u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX),
            passed: verification.outcome == crate::jobs::backup::manifest::VerifyOutcome::Passed,
            tables: 0,
            rows: 0,
            data_age_seconds: data_age(manifest, verification.at),
            smoke: Vec::new(),
            details: verification.details.clone(),
            loaded,
        },
    );
}

/// Records a successful restore of the backup in `dir`.
pub fn restored(dir: &Path, manifest: &Manifest, report: &Report) {
    let at = Utc::now();
    let restore = Restore {
        at,
        duration_ms: report.duration_ms,
        database: report.database.clone(),
        tables: report.tables,
        rows: report.rows,
        jobs: report.jobs,
        data_age_seconds: data_age(manifest, at),
    };
    update(dir, |e| e.last_restore = Some(restore));
}

fn update(dir: &Path, change: impl FnOnce(&mut Evidence)) {
    let _turn = WRITING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut evidence = read(dir).unwrap_or_default();
    change(&mut evidence);
    let written = serde_json::to_vec_pretty(&evidence)
        .map_err(std::io::Error::other)
        .and_then(|mut bytes| {
            bytes.push(b'\n');
            crate::publish::write_atomic(&dir.join(EVIDENCE_FILE), &bytes, 0o600)
        });
    if let Err(e) = written {
        tracing::warn!(
            "cannot record restore evidence in {}: {e} (the drill or restore itself stands)",
            dir.display()
        );
    }
}

/// The time a full restore of `manifest`'s backup should take: its own last restore or passed
/// drill (the newer), else the newest such figure of another backup of its job, scaled by size.
pub fn estimate(backup_dir: &Path, manifest: &Manifest) -> Option<Estimate> {
    if let Some((ms, what)) = catalog::path_of(backup_dir, &manifest.id)
        .and_then(|d| read(&d))
        .and_then(|e| timing(&e))
    {
        return Some(Estimate {
            millis: ms,
            basis: format!("the last {what} of this backup"),
        });
    }
    let other = catalog::list(backup_dir)
        .ok()?
        .into_iter()
        .rev()
        .filter(|e| e.state == State::Verified && e.id != manifest.id)
        .filter_map(|e| e.manifest)
        .filter(|m| m.job == manifest.job && m.bytes > 0)
        .find_map(|m| {
            let ev = read(&catalog::path_of(backup_dir, &m.id)?)?;
            timing(&ev).map(|t| (m, t))
        });
    let (m, (ms, what)) = other?;
    let scale = manifest.bytes as f64 / m.bytes as f64;
    Some(Estimate {
        millis: (ms as f64 * scale) as u64,
        basis: format!(
            "the last {what} of {} ({:.1} s), scaled by size ({:.2}x)",
            m.id,
            ms as f64 / 1000.0,
            scale
        ),
    })
}

/// The newer of the last restore and the last passed drill: (milliseconds, what it was).
fn timing(e: &Evidence) -> Option<(u64, &'static str)> {
    let restore = e
        .last_restore
        .as_ref()
        .map(|r| (r.at, r.duration_ms, "restore"));
    let drill = e
        .last_passed_drill
        .as_ref()
        .map(|d| (d.at, d.duration_ms, "drill"));
    [restore, drill]
        .into_iter()
        .flatten()
        .max_by_key(|(at, _, _)| *at)
        .map(|(_, ms, what)| (ms, what))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn drill(passed: bool, minute: u32) -> Drill {
        Drill {
            at: Utc.with_ymd_and_hms(2026, 12, 5, 8, minute, 0).unwrap(),
            duration_ms: 1500,
            passed,
            tables: 3,
            rows: 42,
            data_age_seconds: 60,
            smoke: Vec::new(),
            details: "restored 3 tables".into(),
            loaded: None,
        }
    }

    #[test]
    fn a_failed_drill_keeps_the_last_passed_one() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), None);
        drilled(dir.path(), drill(true, 1));
        drilled(dir.path(), drill(false, 2));
        let e = read(dir.path()).expect("evidence");
        assert_eq!(e.last_drill, Some(drill(false, 2)));
        assert_eq!(e.last_passed_drill, Some(drill(true, 1)));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(EVIDENCE_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_damaged_file_is_replaced_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(EVIDENCE_FILE), b"{ nope").unwrap();
        assert_eq!(read(dir.path()), None);
        drilled(dir.path(), drill(true, 3));
        assert_eq!(read(dir.path()).unwrap().last_drill, Some(drill(true, 3)));
    }

    /// A published backup `id` of job `nightly` holding `bytes` bytes, in `backup_dir`.
    fn backup(backup_dir: &Path, id: &str, bytes: u64) -> Manifest {
        let m: Manifest = serde_json::from_value(serde_json::json!({
            "manifest_version": 1, "id": id, "job": "nightly", "database": "app",
            "server": { "host": "/run/postgresql", "port": 5432, "version": "15" },
            "pg_dump_version": "15", "format": "custom",
            "compression": { "method": "zstd", "level": 3 }, "encryption": null,
            "options": {}, "started": "2026-12-05T08:00:00Z", "finished": "2026-12-05T08:00:01Z",
            "duration_ms": 1000, "bytes": bytes,
            "files": [{ "path": "database.backup", "bytes": bytes, "sha256": "00" }],
            "table_count": 0, "tables": {},
            "verification": { "level": "full", "at": "2026-12-05T08:00:01Z",
                              "outcome": "passed", "details": "" },
            "daemon_version": "0"
        }))
        .unwrap();
        let dir = backup_dir.join(id);
        std::fs::create_dir(&dir).unwrap();
        m.write(&dir).unwrap();
        m
    }

    #[test]
    fn the_estimate_comes_from_this_backup_else_from_another_of_its_job_scaled() {
        let root = tempfile::tempdir().unwrap();
        let old = backup(root.path(), "20261204T080000Z-nightly", 1000);
        let new = backup(root.path(), "20261205T080000Z-nightly", 3000);
        assert_eq!(estimate(root.path(), &new), None, "no drill yet");
        drilled(&root.path().join(&old.id), drill(false, 1));
        assert_eq!(
            estimate(root.path(), &new),
            None,
            "a failed drill is no estimate"
        );
        drilled(&root.path().join(&old.id), drill(true, 2));
        let scaled = estimate(root.path(), &new).unwrap();
        assert_eq!(scaled.millis, 4500, "{scaled:?}");
        assert!(
            scaled.basis.contains("scaled by size (3.00x)"),
            "{scaled:?}"
        );
        drilled(&root.path().join(&new.id), drill(true, 3));
        let own = estimate(root.path(), &new).unwrap();
        assert_eq!(
            (own.millis, own.basis.as_str()),
            (1500, "the last drill of this backup")
        );
    }

    #[test]
    fn timing_takes_the_newer_of_restore_and_passed_drill() {
        let mut e = Evidence {
            last_passed_drill: Some(drill(true, 10)),
            ..Evidence::default()
        };
        assert_eq!(timing(&e), Some((1500, "drill")));
        e.last_restore = Some(Restore {
            at: Utc.with_ymd_and_hms(2026, 12, 5, 8, 20, 0).unwrap(),
            duration_ms: 900,
            database: "x".into(),
            tables: 3,
            rows: 42,
            jobs: 2,
            data_age_seconds: 5,
        });
        assert_eq!(timing(&e), Some((900, "restore")));
        e.last_passed_drill = None;
        e.last_drill = Some(drill(false, 30));
        assert_eq!(timing(&e), Some((900, "restore")));
    }
}
