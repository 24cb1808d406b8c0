//! Executing a [`RestorePlan`]: unpack into restore-scratch-dir (after a free-space
//! preflight) while the restoring database is created, restore into it with `pg_restore -j`
//! (with one job, fed straight from the archive instead: [`super::pipe`]), compare row
//! counts, rename into place. Whatever fails, the restoring database and the scratch file are removed
//! and the target's name was never touched.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::RestoreError;
use super::database::{self, Target};
use super::plan::{Archive, RestorePlan};
use super::{pipe, swap, toc};
use crate::config::PostgresConfig;
use crate::jobs::backup::{snapshot, stream, verify};
use crate::pg;
use crate::process::{self, ProcessError};

/// Where and with what a restore runs.
pub struct Env<'a> {
    pub server: &'a PostgresConfig,
    pub scratch_dir: &'a Path,
    /// The age identity for encrypted backups.
    pub identity_file: Option<&'a Path>,
    pub cancel: &'a CancellationToken,
    pub progress: &'a (dyn Fn(String) + Send + Sync),
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub id: String,
    pub database: String,
    pub tables: usize,
    pub rows: i64,
    pub jobs: u32,
    /// Bytes written to restore-scratch-dir (0 when pg_restore read the archive directly).
    pub scratch_bytes: u64,
    /// With `--replace`: the name the old database is kept under.
    #[serde(default)]
    pub replaced: Option<String>,
    /// With `--replace` over an existing database: the pinned safety backup taken of it first.
    #[serde(default)]
    pub safety_backup: Option<String>,
    pub unpack_ms: u64,
    pub restore_ms: u64,
    pub duration_ms: u64,
}

/// The free-space preflight alone (also used by `--dry-run`).
pub fn preflight(scratch_dir: &Path, need: u64) -> Result<(), RestoreError> {
    if need == 0 {
        return Ok(());
    }
    ensure_dir(scratch_dir)?;
    let s = nix::sys::statvfs::statvfs(scratch_dir)
        .map_err(|e| RestoreError::Failed(format!("{}: {e}", scratch_dir.display())))?;
    let free = s.blocks_available().saturating_mul(s.fragment_size());
    if free < need {
        return Err(RestoreError::NoSpace {
            dir: scratch_dir.display().to_string(),
            need,
            free,
        });
    }
    Ok(())
}

pub async fn run(env: &Env<'_>, plan: &RestorePlan) -> Result<Report, RestoreError> {
    let t0 = Instant::now();
    if plan.replace {
        swap::check_free(env.server, &plan.to).await?;
    } else if let Target::NotEmpty(tables) = database::target(env.server, &plan.to).await? {
        return Err(RestoreError::TargetNotEmpty {
            db: plan.to.clone(),
            tables,
        });
    }
    preflight(env.scratch_dir, plan.scratch_bytes)?;
    // The unpacking (zstd, the disk) and CREATE DATABASE (the server) do not wait for each
    // other. Whichever fails, the other's work is undone: the file by its drop, the database
    // here (the restoring name is ours alone).
    let (unpacked, created) = tokio::join!(unpack_if_needed(env, plan), create(env, plan));
    let unpacked = match (unpacked, created) {
        (Ok(u), Ok(())) => u,
        (Err(e), _) | (Ok(_), Err(e)) => {
            database::discard(env.server, &plan.restoring).await;
            return Err(e);
        }
    };
    let unpack_ms = millis(t0);
    let scratch_bytes = unpacked.as_ref().map_or(0, |u| u.bytes);
    let path = match (&plan.archive, &unpacked) {
        (_, Some(u)) => Some(u.path.clone()),
        (Archive::Direct { path }, None) => Some(path.clone()),
        (Archive::Stream { .. }, None) => None,
        (Archive::Unpack { .. }, None) => return Err(RestoreError::Failed("not unpacked".into())),
    };
    let t1 = Instant::now();
    let restored = restore_and_check(env, plan, path.as_deref()).await;
    drop(unpacked);
    let restore_ms = millis(t1);
    let counts = match restored {
        Ok(counts) => counts,
        Err(e) => {
            database::discard(env.server, &plan.restoring).await;
            return Err(e);
        }
    };
    (env.progress)(format!("renaming {} to {}", plan.restoring, plan.to));
    let renamed = if plan.replace {
        swap::swap(env.server, &plan.restoring, &plan.to).await
    } else {
        database::rename(env.server, &plan.restoring, &plan.to)
            .await
            .map(|()| None)
    };
    let replaced = match renamed {
        Ok(r) => r,
        Err(e) => {
            database::discard(env.server, &plan.restoring).await;
            return Err(e);
        }
    };
    Ok(Report {
        id: plan.id.clone(),
        database: plan.to.clone(),
        tables: counts.len(),
        rows: counts.values().sum(),
        jobs: plan.jobs,
        scratch_bytes,
        replaced,
        safety_backup: None,
        unpack_ms,
        restore_ms,
        duration_ms: millis(t0),
    })
}

/// Creates the restoring database (and the schemas a filtered restore needs).
async fn create(env: &Env<'_>, plan: &RestorePlan) -> Result<(), RestoreError> {
    (env.progress)(format!("creating database {}", plan.restoring));
    database::create(env.server, &plan.restoring).await?;
    database::create_schemas(env.server, &plan.restoring, &plan.create_schemas).await
}

async fn unpack_if_needed(
    env: &Env<'_>,
    plan: &RestorePlan,
) -> Result<Option<Unpacked>, RestoreError> {
    match &plan.archive {
        Archive::Unpack { .. } => unpack(env, plan).await.map(Some),
        Archive::Direct { .. } | Archive::Stream { .. } => Ok(None),
    }
}

/// pg_restore from `archive`, or fed from the plan's archive when `None` ([`pipe`]), then the
/// row counts.
async fn restore_and_check(
    env: &Env<'_>,
    plan: &RestorePlan,
    archive: Option<&Path>,
) -> Result<std::collections::BTreeMap<String, i64>, RestoreError> {
    let mut spec = pg::tool_spec(env.server, "pg_restore")
        .map_err(|e| RestoreError::Failed(e.to_string()))?
        .args([
            "--exit-on-error".to_owned(),
            "--no-owner".to_owned(),
            "--no-privileges".to_owned(),
            format!("--jobs={}", plan.jobs),
            format!("--dbname={}", plan.restoring),
        ]);
    for s in &plan.schemas {
        spec = spec.args([format!("--schema={s}")]);
    }
    for t in &plan.tables {
        spec = spec.args([format!("--table={t}")]);
    }
    (env.progress)(format!(
        "pg_restore -j {} into {}{}",
        plan.jobs,
        plan.restoring,
        if archive.is_none() {
            ", fed as the archive is decoded"
        } else {
            ""
        }
    ));
    match archive {
        Some(path) => outcome(process::run(&spec.args([path]), env.cancel, |_, _| {}).await)?,
        None => pipe::restore(env, plan, spec).await?,
    }
    (env.progress)("checking row counts against the dump's snapshot".into());
    let counts = database::count(env.server, &plan.restoring).await?;
    let problems = snapshot::compare(&plan.expected, &counts);
    if !problems.is_empty() {
        return Err(RestoreError::Failed(format!(
            "row counts differ after restore: {}",
            problems.join("; ")
        )));
    }
    Ok(counts)
}

/// What pg_restore's end says about the restore.
pub(super) fn outcome(
    ran: Result<process::ProcessOutput, ProcessError>,
) -> Result<(), RestoreError> {
    match ran {
        Err(ProcessError::Cancelled) => Err(RestoreError::Cancelled),
        Err(e) => Err(RestoreError::Failed(format!("pg_restore: {e}"))),
        Ok(out) if !out.status.success() => Err(RestoreError::Failed(format!(
            "pg_restore failed with {}: {}",
            process::describe_status(&out.status),
            out.stderr_summary(10)
        ))),
        Ok(_) => Ok(()),
    }
}

/// The unpacked archive in restore-scratch-dir, removed when dropped.
pub struct Unpacked {
    path: PathBuf,
    bytes: u64,
}

impl Drop for Unpacked {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Unpacked {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

async fn unpack(env: &Env<'_>, plan: &RestorePlan) -> Result<Unpacked, RestoreError> {
    let Archive::Unpack {
        from,
        zstd,
        encrypted,
        sha256,
        bytes,
    } = &plan.archive
    else {
        return Err(RestoreError::Failed("nothing to unpack".into()));
    };
    let identity = identity(env, plan, *encrypted)?;
    (env.progress)(format!(
        "unpacking {} into {}",
        plan.id,
        env.scratch_dir.display()
    ));
    let archive = Packed {
        id: &plan.id,
        from,
        zstd: *zstd,
        identity,
        sha256,
        bytes: *bytes,
    };
    unpack_archive(env.scratch_dir, archive, env.cancel).await
}

/// The age identity that decrypts the plan's archive (`None` when it is not encrypted).
pub(super) fn identity(
    env: &Env<'_>,
    plan: &RestorePlan,
    encrypted: bool,
) -> Result<Option<PathBuf>, RestoreError> {
    match (encrypted, env.identity_file) {
        (false, _) => Ok(None),
        (true, Some(p)) => {
            crate::secret::check_private_file(p).map_err(RestoreError::BadRequest)?;
            Ok(Some(p.to_owned()))
        }
        (true, None) => Err(RestoreError::BadRequest(format!(
            "{} is encrypted and its job has no verify-identity-file",
            plan.id
        ))),
    }
}

/// A stored archive to unpack.
pub struct Packed<'a> {
    pub id: &'a str,
    pub from: &'a Path,
    pub zstd: bool,
    pub identity: Option<PathBuf>,
    pub sha256: &'a str,
    pub bytes: u64,
}

/// Decrypts and/or zstd-decodes `archive` into a new 0600 file in `scratch_dir`, checking the
/// stored bytes against the manifest's size and SHA-256 on the way. [`RestoreError::Scratch`]
/// says the scratch side failed (full disk...), not the archive.
pub async fn unpack_archive(
    scratch_dir: &Path,
    archive: Packed<'_>,
    cancel: &CancellationToken,
) -> Result<Unpacked, RestoreError> {
    ensure_dir(scratch_dir)?;
    let Packed {
        id,
        from,
        zstd,
        identity,
        sha256,
        bytes,
    } = archive;
    let path = scratch_dir.join(format!(".restore-{id}-{}", std::process::id()));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| RestoreError::Scratch(format!("{}: {e}", path.display())))?;
    let mut unpacked = Unpacked { path, bytes: 0 };
    let shown = from.display().to_string();
    let from = from.to_owned();
    let cancel_feed = cancel.clone();
    let work = tokio::task::spawn_blocking(move || {
        let ids = identity
            .map(|p| verify::load_identities(&p))
            .transpose()
            .map_err(std::io::Error::other)?;
        let mut sink = Cancellable {
            file,
            cancel: cancel_feed,
        };
        let read = stream::read_stream(&from, zstd, ids.as_deref(), Some(&mut sink))?;
        // No fsync: the file is thrown away after the restore and worthless after a crash;
        // pg_restore reads it back from the page cache either way.
        Ok::<_, std::io::Error>((read, sink.file.metadata()?.len()))
    });
    let (read, written) = work
        .await
        .map_err(|e| RestoreError::Failed(e.to_string()))?
        .map_err(|e| RestoreError::Failed(format!("unpacking: {e}")))?;
    unpacked.bytes = written;
    if cancel.is_cancelled() {
        return Err(RestoreError::Cancelled);
    }
    if read.written.sha256 != sha256 || read.written.bytes != bytes {
        return Err(RestoreError::Failed(format!(
            "{shown}: checksum mismatch ({} bytes, sha256 {}; the manifest says {bytes} bytes, \
             {sha256})",
            read.written.bytes, read.written.sha256
        )));
    }
    // The bytes are the ones written and checked at backup time: a failure to decode them
    // into the scratch file is the scratch side's (a full disk), not the archive's.
    if let Some(e) = read.decode_error {
        return Err(RestoreError::Scratch(format!(
            "unpacking into {}: {e}",
            scratch_dir.display()
        )));
    }
    // With the data offsets in its TOC, pg_restore -j seeks instead of scanning ([`toc`]).
    let path = unpacked.path.clone();
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || toc::add_offsets(&path)).await {
        tracing::warn!("{id}: no data offsets for pg_restore -j (it scans instead): {e}");
    }
    Ok(unpacked)
}

/// A file (the scratch file, pg_restore's stdin) as a sink that stops at cancellation.
pub(super) struct Cancellable {
    pub(super) file: File,
    pub(super) cancel: CancellationToken,
}

impl std::io::Write for Cancellable {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.cancel.is_cancelled() {
            return Err(std::io::Error::other("cancelled"));
        }
        self.file.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// restore-scratch-dir: created 0700 when missing.
fn ensure_dir(dir: &Path) -> Result<(), RestoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| RestoreError::Failed(format!("{}: {e}", dir.display())))
}

fn millis(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}
