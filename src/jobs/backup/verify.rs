//! Verification of a backup folder, before it is published and on demand
//! (`atprectl backups verify`). Every level reads every byte of the dump:
//!
//! - checksum: re-read and compare with the SHA-256 streamed at dump time;
//! - full: also feed the archive to `pg_restore -f /dev/null`, which parses all of it
//!   (`pg_restore --list` alone passes truncated dumps);
//! - restore: also restore into a scratch database, compare every table's row count with
//!   the counts taken in the dump's snapshot, and run the job's `drill-sql` smoke queries there.
//!   Every drill is recorded in the folder's `evidence.json` ([`crate::restore::evidence`]).
//!
//! The checksum and the pg_restore feed come from one pass over the file.

use std::path::Path;
use std::time::Instant;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::drill::{self, Facts, finish};
use super::manifest::{FileSum, Manifest, Verification, VerifyOutcome};
use super::scratch_db::Scratch;
use super::stream;
use crate::config::{
    BackupMethod, BackupSource, Compression, DrillSql, DumpFormat, PostgresConfig, VerifyLevel,
};
use crate::jobs::JobError;
use crate::pg;
use crate::process::{self, ProcessError, ProcessSpec};

/// Where and how to verify.
pub struct VerifyEnv<'a> {
    pub cancel: &'a CancellationToken,
    /// The server to restore into for `restore`.
    pub restore_target: &'a PostgresConfig,
    /// An age identity file to decrypt encrypted backups with.
    pub identity_file: Option<&'a Path>,
    pub parallel: u32,
    /// Where a restore drill unpacks a zstd-wrapped or encrypted archive so that pg_restore -j
    /// can seek in it (restore-scratch-dir); `None` restores through a pipe.
    pub scratch_dir: Option<&'a Path>,
    /// The job's smoke queries, run by a restore drill after the row counts matched.
    pub drill_sql: &'a [DrillSql],
}

/// Verifies the backup in `dir` described by `manifest` at `level`. Only cancellation is an
/// error; every finding is in the returned verification.
pub async fn verify(
    env: &VerifyEnv<'_>,
    dir: &Path,
    manifest: &Manifest,
    level: VerifyLevel,
) -> Result<Verification, JobError> {
    match manifest.source {
        BackupSource::Redis => return super::redis::verify(env, dir, manifest, level).await,
        BackupSource::Files => return super::files::verify(env, dir, manifest, level).await,
        BackupSource::Postgres => {}
    }
    if manifest.method == BackupMethod::Physical {
        return super::physical::verify(env, dir, manifest, level).await;
    }
    let t0 = Instant::now();
    let mut facts = Facts::default();
    let result = match manifest.format {
        DumpFormat::Custom => match side_files(dir, manifest, level).await {
            Ok(()) => custom(env, dir, manifest, level, &mut facts).await,
            Err(found) => Err(found),
        },
        DumpFormat::Directory => directory(env, dir, manifest, level, &mut facts).await,
    };
    let verification = verdict(result)?;
    if verification.level == VerifyLevel::Restore {
        drill::record(dir, manifest, &verification, t0, facts);
    }
    Ok(verification)
}

/// The identity file to decrypt `m`'s backup with above level checksum; without one an
/// encrypted backup is verified at level checksum only, which the note says.
pub(super) fn identity_for(
    env: &VerifyEnv<'_>,
    m: &Manifest,
    level: VerifyLevel,
) -> Result<(VerifyLevel, String, Option<std::path::PathBuf>), Found> {
    if !m.encrypted() || level == VerifyLevel::Checksum {
        return Ok((level, String::new(), None));
    }
    match env.identity_file {
        Some(id) => {
            crate::secret::check_private_file(id).map_err(|e| Found::Problem(level, e))?;
            Ok((level, String::new(), Some(id.to_owned())))
        }
        None => Ok((
            VerifyLevel::Checksum,
            "encrypted and no verify-identity-file: checksum only; ".into(),
            None,
        )),
    }
}

pub(super) enum Found {
    Cancelled,
    Problem(VerifyLevel, String),
}

pub(super) type Checked = Result<(VerifyLevel, String), Found>;

/// What a check found, as the verification a manifest records; only cancellation is an error.
pub(super) fn verdict(checked: Checked) -> Result<Verification, JobError> {
    let (level, outcome, details) = match checked {
        Ok((level, details)) => (level, VerifyOutcome::Passed, details),
        Err(Found::Cancelled) => return Err(JobError::Cancelled),
        Err(Found::Problem(level, details)) => (level, VerifyOutcome::Failed, details),
    };
    Ok(Verification {
        level,
        at: Utc::now(),
        outcome,
        details,
    })
}

async fn custom(
    env: &VerifyEnv<'_>,
    dir: &Path,
    m: &Manifest,
    level: VerifyLevel,
    facts: &mut Facts,
) -> Checked {
    let file = m
        .files
        .first()
        .ok_or(Found::Problem(level, "the manifest lists no file".into()))?;
    let path = dir.join(&file.path);
    let zstd = matches!(m.compression, Compression::Zstd { .. });
    let (level, note, identities) = identity_for(env, m, level)?;
    if level == VerifyLevel::Checksum {
        let sums = vec![file.clone()];
        return check_sums(dir, sums)
            .await
            .map(|d| (level, format!("{note}{d}")));
    }
    if level == VerifyLevel::Restore
        && (zstd || identities.is_some())
        && let Some(drilled) =
            drill_unpacked(env, dir, m, identities.as_deref(), &note, facts).await
    {
        return drilled;
    }
    let restore_db = if level == VerifyLevel::Restore {
        Some(Scratch::create(env.restore_target, &m.database, env.cancel, level).await?)
    } else {
        None
    };
    let mut spec = restore_spec(env, restore_db.as_ref(), level)?;
    spec.stdin = true;
    let mut running = process::spawn(&spec).map_err(|e| Found::Problem(level, e.to_string()))?;
    let stdin = running
        .take_stdin()
        .ok_or(Found::Problem(level, "pg_restore has no stdin".into()))?;
    let pipe = stdin
        .into_owned_fd()
        .and_then(stream::blocking_pipe)
        .map_err(|e| Found::Problem(level, e.to_string()))?;
    let feed = tokio::task::spawn_blocking(move || {
        let mut pipe = pipe;
        let ids = identities
            .map(|p| load_identities(&p))
            .transpose()
            .map_err(std::io::Error::other)?;
        stream::read_stream(&path, zstd, ids.as_deref(), Some(&mut pipe))
    });
    let (waited, fed) = tokio::join!(running.wait(env.cancel, |_, _| {}), feed);
    let fed = fed.map_err(|e| Found::Problem(level, e.to_string()))?;
    let fed = fed.map_err(|e| Found::Problem(level, format!("reading {}: {e}", file.path)))?;
    let restored = restore_outcome(level, waited);
    let w = &fed.written;
    // Damage is named first as what it is: the bytes differ from what was written.
    let result = if w.sha256 != file.sha256 || w.bytes != file.bytes {
        let also = match (&fed.decode_error, &restored) {
            (Some(e), _) => format!("; decoding failed too: {e}"),
            (None, Err(Found::Problem(_, p))) => format!("; {p}"),
            _ => String::new(),
        };
        Err(Found::Problem(
            level,
            format!(
                "{}: checksum mismatch ({} bytes, sha256 {}; manifest says {} bytes, {}){also}",
                file.path, w.bytes, w.sha256, file.bytes, file.sha256
            ),
        ))
    } else {
        match (restored, fed.decode_error) {
            (Err(f), _) => Err(f),
            (Ok(()), Some(e)) => Err(Found::Problem(level, format!("reading {}: {e}", file.path))),
            (Ok(()), None) => Ok(()),
        }
    };
    finish(env, level, result, restore_db, m, note, facts).await
}

/// The restore drill of a zstd-wrapped or encrypted custom archive through restore's own path
/// ([`crate::restore::exec::drill`]): unpacked into restore-scratch-dir (checksum checked on
/// the way) while the rows are copied from the growing file, then `pg_restore -j` for the rest.
/// `None` when the scratch side cannot take it (too little space, a full disk): the caller
/// then drills through a pipe as before, so a full scratch disk never fails a good backup.
async fn drill_unpacked(
    env: &VerifyEnv<'_>,
    dir: &Path,
    m: &Manifest,
    identity: Option<&Path>,
    note: &str,
    facts: &mut Facts,
) -> Option<Checked> {
    use crate::restore::{self, RestoreError, exec};
    let level = VerifyLevel::Restore;
    let scratch = env.scratch_dir?;
    let jobs = env.parallel.max(restore::DEFAULT_JOBS);
    let db = match Scratch::create(env.restore_target, &m.database, env.cancel, level).await {
        Ok(db) => db,
        Err(f) => return Some(Err(f)),
    };
    let options = restore::Options {
        to: db.name.clone(),
        jobs,
        ..restore::Options::default()
    };
    let plan = restore::plan::plan(m, dir, &options, None).map(|mut plan| {
        plan.restoring = db.name.clone();
        plan
    });
    let quiet = |_: String| {};
    let restore_env = exec::Env {
        server: env.restore_target,
        scratch_dir: scratch,
        identity_file: identity,
        remote: None,
        cancel: env.cancel,
        progress: &quiet,
    };
    let drilled = match plan {
        Ok(plan) => exec::drill(&restore_env, &plan).await,
        Err(e) => Err(e),
    };
    let counts = match drilled {
        Ok((counts, _)) => counts,
        Err(e @ (RestoreError::Scratch(_) | RestoreError::NoSpace { .. })) => {
            tracing::info!("restore drill through a pipe: {e}");
            db.drop_db().await;
            return None;
        }
        Err(e) => {
            db.drop_db().await;
            return Some(Err(match e {
                RestoreError::Cancelled => Found::Cancelled,
                RestoreError::Failed(why) => Found::Problem(level, why),
                e => Found::Problem(level, e.to_string()),
            }));
        }
    };
    let note = format!(
        "{note}loaded as it was unpacked into restore-scratch-dir (COPY on {jobs} connections, \
         pg_restore -j {jobs} for the rest), as a restore loads it; "
    );
    facts.counted = Some(counts);
    Some(finish(env, level, Ok(()), Some(db), m, note, facts).await)
}

async fn directory(
    env: &VerifyEnv<'_>,
    dir: &Path,
    m: &Manifest,
    level: VerifyLevel,
    facts: &mut Facts,
) -> Checked {
    let sums = check_sums(dir, m.files.clone())
        .await
        .map_err(|f| match f {
            Found::Problem(_, d) => Found::Problem(level, d),
            c => c,
        })?;
    if level == VerifyLevel::Checksum {
        return Ok((level, sums));
    }
    let restore_db = if level == VerifyLevel::Restore {
        Some(Scratch::create(env.restore_target, &m.database, env.cancel, level).await?)
    } else {
        None
    };
    let mut spec = restore_spec(env, restore_db.as_ref(), level)?;
    if level == VerifyLevel::Restore {
        spec = spec.args([format!("--jobs={}", env.parallel)]);
    }
    spec = spec.args([dir.join(super::dump::DUMP_NAME)]);
    let waited = process::run(&spec, env.cancel, |_, _| {}).await;
    let result = restore_outcome(level, waited);
    finish(env, level, result, restore_db, m, String::new(), facts).await
}

/// pg_restore into /dev/null (full) or into the scratch database (restore).
fn restore_spec(
    env: &VerifyEnv<'_>,
    scratch: Option<&Scratch>,
    level: VerifyLevel,
) -> Result<ProcessSpec, Found> {
    let problem = |e: pg::PgError| Found::Problem(level, e.to_string());
    match scratch {
        None => Ok(
            ProcessSpec::new(pg::tool(env.restore_target, "pg_restore").map_err(problem)?)
                .args(["--file=/dev/null"]),
        ),
        Some(db) => Ok(crate::restore::async_commit(
            pg::tool_spec(env.restore_target, "pg_restore").map_err(problem)?,
        )
        .args([
            "--no-owner".to_owned(),
            "--no-privileges".to_owned(),
            "--exit-on-error".to_owned(),
            format!("--dbname={}", db.name),
        ])),
    }
}

fn restore_outcome(
    level: VerifyLevel,
    waited: Result<process::ProcessOutput, ProcessError>,
) -> Result<(), Found> {
    match waited {
        Err(ProcessError::Cancelled) => Err(Found::Cancelled),
        Err(e) => Err(Found::Problem(level, format!("pg_restore: {e}"))),
        Ok(out) if !out.status.success() => Err(Found::Problem(
            level,
            format!(
                "pg_restore failed with {}: {}",
                process::describe_status(&out.status),
                out.stderr_summary(10)
            ),
        )),
        Ok(_) => Ok(()),
    }
}

/// Re-reads the files listed after a custom dump (`globals.sql`): the dump's own pass below
/// covers only the dump. (A directory dump's pass covers every listed file.)
async fn side_files(dir: &Path, m: &Manifest, level: VerifyLevel) -> Result<(), Found> {
    let side = m.files.get(1..).unwrap_or_default().to_vec();
    if side.is_empty() {
        return Ok(());
    }
    check_sums(dir, side).await.map(drop).map_err(|f| match f {
        Found::Problem(_, d) => Found::Problem(level, d),
        c => c,
    })
}

pub(super) async fn check_sums(dir: &Path, files: Vec<FileSum>) -> Result<String, Found> {
    let dir = dir.to_owned();
    let level = VerifyLevel::Checksum;
    let checked = tokio::task::spawn_blocking(move || -> Result<usize, String> {
        for f in &files {
            let w =
                stream::hash_file(&dir.join(&f.path)).map_err(|e| format!("{}: {e}", f.path))?;
            if w.sha256 != f.sha256 || w.bytes != f.bytes {
                return Err(format!(
                    "{}: checksum mismatch ({} bytes read, manifest says {})",
                    f.path, w.bytes, f.bytes
                ));
            }
        }
        Ok(files.len())
    })
    .await
    .map_err(|e| Found::Problem(level, e.to_string()))?;
    let n = checked.map_err(|e| Found::Problem(level, e))?;
    Ok(format!("{n} file(s) re-read; checksums match"))
}

pub(crate) fn load_identities(path: &Path) -> Result<Vec<Box<dyn age::Identity>>, String> {
    age::IdentityFile::from_file(path.display().to_string())
        .map_err(|e| format!("{}: {e}", path.display()))?
        .into_identities()
        .map_err(|e| format!("{}: {e}", path.display()))
}
