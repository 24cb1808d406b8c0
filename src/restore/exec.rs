//! Executing a [`RestorePlan`]: unpack into restore-scratch-dir (after a free-space
//! preflight), restore into the restoring database with `pg_restore -j`, compare row counts,
//! rename into place. Whatever fails, the restoring database and the scratch file are removed
//! and the target's name was never touched.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::RestoreError;
use super::database::{self, Target};
use super::globals;
use super::plan::{Archive, RestorePlan};
use super::swap;
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
    /// The offsite target an [`Archive::Fetch`] is read from.
    pub remote: Option<&'a crate::offsite::Remote>,
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
    /// With `--globals`: what was done with each role, setting, membership and tablespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub globals: Option<Vec<globals::Item>>,
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
    let unpacked = match &plan.archive {
        Archive::Unpack { .. } => Some(unpack(env, plan).await?),
        Archive::Fetch(fetch) => Some(super::remote::unpack(env, &plan.id, fetch).await?),
        Archive::Direct { .. } => None,
    };
    let unpack_ms = millis(t0);
    let scratch_bytes = unpacked.as_ref().map_or(0, |u| u.bytes);
    let path = match (&plan.archive, &unpacked) {
        (_, Some(u)) => u.path.clone(),
        (Archive::Direct { path }, None) => path.clone(),
        (Archive::Unpack { .. } | Archive::Fetch(_), None) => {
            return Err(RestoreError::Failed("not unpacked".into()));
        }
    };
    cancelled(env)?;
    let applied = match &plan.globals {
        Some(file) => {
            (env.progress)("applying globals.sql (roles, settings, memberships)".into());
            let applied = globals::apply(env.server, file, env.identity_file).await?;
            (env.progress)(globals::summary(&applied.items));
            Some(applied)
        }
        None => None,
    };
    let placed = restore_into_place(env, plan, &path).await;
    drop(unpacked);
    let (counts, replaced, restore_ms) = match placed {
        Ok(done) => done,
        Err(e) => {
            if let Some(applied) = &applied {
                globals::undo(env.server, applied).await;
            }
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
        globals: applied.map(|g| g.items),
        unpack_ms,
        restore_ms,
        duration_ms: millis(t0),
    })
}

/// Creates the restoring database, restores into it, checks the counts and puts it under the
/// target's name; on failure the restoring database is dropped. Returns the counts, the name
/// a replaced database is kept under, and pg_restore's time.
async fn restore_into_place(
    env: &Env<'_>,
    plan: &RestorePlan,
    archive: &Path,
) -> Result<(BTreeMap<String, i64>, Option<String>, u64), RestoreError> {
    (env.progress)(format!("creating database {}", plan.restoring));
    database::create(env.server, &plan.restoring).await?;
    if let Err(e) =
        database::create_schemas(env.server, &plan.restoring, &plan.create_schemas).await
    {
        database::discard(env.server, &plan.restoring).await;
        return Err(e);
    }
    let t1 = Instant::now();
    let restored = restore_and_check(env, plan, archive).await;
    let restore_ms = millis(t1);
    // The last moment a cancel is heeded: after the rename the target holds the restore.
    let counts = match restored.and_then(|c| cancelled(env).map(|()| c)) {
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
    match renamed {
        Ok(replaced) => Ok((counts, replaced, restore_ms)),
        Err(e) => {
            database::discard(env.server, &plan.restoring).await;
            Err(e)
        }
    }
}

async fn restore_and_check(
    env: &Env<'_>,
    plan: &RestorePlan,
    archive: &Path,
) -> Result<BTreeMap<String, i64>, RestoreError> {
    let mut spec = pg::tool_spec(env.server, "pg_restore")
        .map_err(|e| RestoreError::Failed(e.to_string()))?
        .args([
            "--exit-on-error".to_owned(),
            format!("--jobs={}", plan.jobs),
            format!("--dbname={}", plan.restoring),
        ]);
    if !plan.keep_owners {
        spec = spec.args(["--no-owner", "--no-privileges"]);
    }
    for s in &plan.schemas {
        spec = spec.args([format!("--schema={s}")]);
    }
    for t in &plan.tables {
        spec = spec.args([format!("--table={t}")]);
    }
    spec = spec.args([archive]);
    (env.progress)(format!(
        "pg_restore -j {} into {}",
        plan.jobs, plan.restoring
    ));
    match process::run(&spec, env.cancel, |_, _| {}).await {
        Err(ProcessError::Cancelled) => return Err(RestoreError::Cancelled),
        Err(e) => return Err(RestoreError::Failed(format!("pg_restore: {e}"))),
        Ok(out) if !out.status.success() => {
            let tail = out.stderr_summary(10);
            let hint = if plan.keep_owners && tail.contains("must be member of role") {
                " (keeping owners needs atpred's role to be a superuser or a member of every \
                 owning role; restore without --globals to own everything by atpred's role)"
            } else {
                ""
            };
            return Err(RestoreError::Failed(format!(
                "pg_restore failed with {}: {tail}{hint}",
                process::describe_status(&out.status),
            )));
        }
        Ok(_) => {}
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

fn cancelled(env: &Env<'_>) -> Result<(), RestoreError> {
    if env.cancel.is_cancelled() {
        return Err(RestoreError::Cancelled);
    }
    Ok(())
}

/// The unpacked archive in restore-scratch-dir, removed when dropped.
pub struct Unpacked {
    path: PathBuf,
    pub(super) bytes: u64,
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
    let identity = identity(&plan.id, *encrypted, env.identity_file)?;
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

/// The identity to decrypt backup `id` with, checked to be a private file (none when the
/// backup is not encrypted).
pub fn identity(
    id: &str,
    encrypted: bool,
    given: Option<&Path>,
) -> Result<Option<PathBuf>, RestoreError> {
    match (encrypted, given) {
        (false, _) => Ok(None),
        (true, Some(p)) => {
            crate::secret::check_private_file(p).map_err(RestoreError::BadRequest)?;
            Ok(Some(p.to_owned()))
        }
        (true, None) => Err(RestoreError::BadRequest(format!(
            "{id} is encrypted and its job has no verify-identity-file: give --identity FILE"
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
    let Packed {
        id,
        from,
        zstd,
        identity,
        sha256,
        bytes,
    } = archive;
    let (file, mut unpacked) = scratch_file(scratch_dir, id)?;
    let shown = from.display().to_string();
    let from = from.to_owned();
    let cancel_feed = cancel.clone();
    let work = tokio::task::spawn_blocking(move || {
        decode_into(File::open(&from)?, file, zstd, identity, cancel_feed)
    });
    let decoded = work
        .await
        .map_err(|e| RestoreError::Failed(e.to_string()))?;
    unpacked.bytes = check_unpacked(decoded, &shown, sha256, bytes, scratch_dir, cancel)?;
    Ok(unpacked)
}

/// A new 0600 scratch file for backup `id` in `scratch_dir` (created 0700 when missing),
/// removed again when the returned guard is dropped.
pub(super) fn scratch_file(scratch_dir: &Path, id: &str) -> Result<(File, Unpacked), RestoreError> {
    ensure_dir(scratch_dir)?;
    let path = scratch_dir.join(format!(".restore-{id}-{}", std::process::id()));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| RestoreError::Scratch(format!("{}: {e}", path.display())))?;
    Ok((file, Unpacked { path, bytes: 0 }))
}

/// What [`decode_into`] read and wrote: the stored bytes' size and hash (and why decoding
/// stopped, if it did), and the bytes written to the scratch file.
pub(super) type Decoded = std::io::Result<(stream::ReadBack, u64)>;

/// Reads the stored bytes from `input` (hashing all of them), decrypting with `identity` and
/// zstd-decoding into `file`; on a blocking thread. The scratch file is thrown away after the
/// restore, so it is not fsynced: a crash loses nothing that is not read again from the backup.
pub(super) fn decode_into(
    input: impl std::io::Read,
    file: File,
    zstd: bool,
    identity: Option<PathBuf>,
    cancel: CancellationToken,
) -> Decoded {
    let ids = identity
        .map(|p| verify::load_identities(&p))
        .transpose()
        .map_err(std::io::Error::other)?;
    let mut sink = Cancellable { file, cancel };
    let read = stream::read_from(input, zstd, ids.as_deref(), Some(&mut sink))?;
    Ok((read, sink.file.metadata()?.len()))
}

/// The bytes written, once the stored bytes (`shown`) matched the manifest's `sha256` and
/// `bytes` and decoded whole.
pub(super) fn check_unpacked(
    decoded: Decoded,
    shown: &str,
    sha256: &str,
    bytes: u64,
    scratch_dir: &Path,
    cancel: &CancellationToken,
) -> Result<u64, RestoreError> {
    // Cancelled while unpacking: whatever the stream made of the sink's refusal.
    if cancel.is_cancelled() {
        return Err(RestoreError::Cancelled);
    }
    let (read, written) = decoded.map_err(|e| RestoreError::Failed(format!("unpacking: {e}")))?;
    if read.written.sha256 != sha256 || read.written.bytes != bytes {
        return Err(RestoreError::Failed(format!(
            "{shown}: checksum mismatch ({} bytes, sha256 {}; the manifest says {bytes} bytes, \
             {sha256})",
            read.written.bytes, read.written.sha256
        )));
    }
    // The bytes are the ones written and checked at backup time: a failure to decode them
    // into the scratch file is the scratch side's (a full disk), not the archive's; except
    // for an identity that is not one of the backup's recipients.
    if let Some(e) = read.decode_error {
        if e.get_ref()
            .is_some_and(|inner| inner.is::<age::DecryptError>())
        {
            return Err(RestoreError::Failed(format!(
                "{shown}: cannot decrypt it with the identity file used: {e}"
            )));
        }
        return Err(RestoreError::Scratch(format!(
            "unpacking into {}: {e}",
            scratch_dir.display()
        )));
    }
    Ok(written)
}

/// The scratch file as a sink that stops at cancellation.
struct Cancellable {
    file: File,
    cancel: CancellationToken,
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
