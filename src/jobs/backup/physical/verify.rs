//! Verification of a base backup. Level checksum re-reads the stored file against its SHA-256.
//! Level full (and restore, which a physical job refuses in its config) also unpacks it, on
//! the same pass, into a private folder in restore-scratch-dir as a plain data directory and
//! runs `pg_verifybackup --no-parse-wal` there (PostgreSQL 15 verifies plain-format backups
//! only; `-X none` leaves the WAL to the archive): every file's size and checksum against
//! backup_manifest, and the manifest's own checksum. The folder is removed whatever happens.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use super::super::manifest::{Manifest, Verification};
use super::super::verify::{Checked, Found, VerifyEnv, check_sums, identity_for, verdict};
use super::unpack::{Writeback, unpack};
use crate::config::{Compression, FreeSpace, VerifyLevel};
use crate::jobs::JobError;
use crate::pg;
use crate::process::{self, ProcessError, ProcessSpec};

/// Verifies the base backup in `dir` at `level`; only cancellation is an error.
pub(in crate::jobs::backup) async fn verify(
    env: &VerifyEnv<'_>,
    dir: &Path,
    m: &Manifest,
    level: VerifyLevel,
) -> Result<Verification, JobError> {
    verdict(check(env, dir, m, level).await)
}

async fn check(env: &VerifyEnv<'_>, dir: &Path, m: &Manifest, level: VerifyLevel) -> Checked {
    let file = m
        .files
        .first()
        .ok_or(Found::Problem(level, "the manifest lists no file".into()))?
        .clone();
    let (level, note, identity) = identity_for(env, m, level)?;
    let checksum_only = |note: String| async move {
        check_sums(dir, m.files.clone())
            .await
            .map(|d| (VerifyLevel::Checksum, format!("{note}{d}")))
    };
    if level == VerifyLevel::Checksum {
        return checksum_only(note).await;
    }
    let Some(scratch) = env.scratch_dir else {
        return checksum_only(format!("{note}no restore-scratch-dir to unpack in: ")).await;
    };
    // The default restore-scratch-dir is made on first use, as restores do.
    let _ = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(scratch);
    let tar_bytes = m.physical.as_ref().map_or(m.bytes, |p| p.tar_bytes);
    if let Err(why) =
        super::super::partial::preflight(scratch, tar_bytes, None, FreeSpace::Bytes(0))
    {
        return checksum_only(format!("{note}not unpacked ({why}): ")).await;
    }
    let work = crate::scratch::WorkDir::create(scratch, WORK_PREFIX, &m.id).map_err(|e| {
        Found::Problem(
            level,
            format!("creating a folder in {}: {e}", scratch.display()),
        )
    })?;
    let zstd = matches!(m.compression, Compression::Zstd { .. });
    let (from, into) = (dir.join(&file.path), work.path().to_owned());
    // A scratch copy, read once by pg_verifybackup and removed: no writeback to wait for.
    let unpacked =
        tokio::task::spawn_blocking(move || unpack(&from, zstd, identity, &into, Writeback::Leave))
            .await
            .map_err(|e| Found::Problem(level, e.to_string()))?
            .map_err(|e| Found::Problem(level, format!("unpacking {}: {e}", file.path)))?;
    let w = &unpacked.read.written;
    if w.sha256 != file.sha256 || w.bytes != file.bytes {
        return Err(Found::Problem(
            level,
            format!(
                "{}: checksum mismatch ({} bytes, sha256 {}; manifest says {} bytes, {})",
                file.path, w.bytes, w.sha256, file.bytes, file.sha256
            ),
        ));
    }
    if let Some(e) = unpacked.failure() {
        return Err(Found::Problem(
            level,
            format!("unpacking {}: {e}", file.path),
        ));
    }
    let label = same_start(work.path(), m).map_err(|e| Found::Problem(level, e))?;
    let verified = verify_backup(env, work.path(), level).await?;
    Ok((
        level,
        format!(
            "{note}{} re-read (checksum matches), unpacked into restore-scratch-dir; {label}; \
             pg_verifybackup: {verified}",
            file.path
        ),
    ))
}

/// The unpacked backup_label starts where the manifest says.
fn same_start(work: &Path, m: &Manifest) -> Result<String, String> {
    let text = std::fs::read_to_string(work.join("backup_label"))
        .map_err(|e| format!("the unpacked backup has no readable backup_label: {e}"))?;
    let label = super::facts::label(&text)?;
    match &m.physical {
        Some(p) if p.start_lsn == label.start_lsn && p.timeline == label.timeline => Ok(format!(
            "backup_label starts at {} on timeline {}, as recorded",
            label.start_lsn, label.timeline
        )),
        Some(p) => Err(format!(
            "backup_label starts at {} on timeline {}, the manifest says {} on timeline {}",
            label.start_lsn, label.timeline, p.start_lsn, p.timeline
        )),
        None => Err("the manifest has no physical facts".into()),
    }
}

async fn verify_backup(
    env: &VerifyEnv<'_>,
    work: &Path,
    level: VerifyLevel,
) -> Result<String, Found> {
    let tool = pg::tool(env.restore_target, "pg_verifybackup")
        .map_err(|e| Found::Problem(level, e.to_string()))?;
    let spec = ProcessSpec::new(tool)
        .args(["--no-parse-wal", "--exit-on-error"])
        .args([work]);
    match process::run(&spec, env.cancel, |_, _| {}).await {
        Err(ProcessError::Cancelled) => Err(Found::Cancelled),
        Err(e) => Err(Found::Problem(level, format!("pg_verifybackup: {e}"))),
        Ok(out) if !out.status.success() => Err(Found::Problem(
            level,
            format!(
                "pg_verifybackup failed with {}: {}",
                process::describe_status(&out.status),
                out.stderr_summary(10)
            ),
        )),
        Ok(out) => Ok(out.stdout_tail.join(" ").trim().to_owned()),
    }
}

const WORK_PREFIX: &str = ".physical-";
