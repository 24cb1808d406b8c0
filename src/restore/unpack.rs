//! Unpacking a stored archive into restore-scratch-dir: decrypted and/or zstd-decoded into a
//! new 0600 file, its stored bytes checked against the manifest on the way, then given the
//! data offsets pg_restore -j needs ([`super::toc`]). Used by restores (local and, through
//! [`super::remote`], offsite) and by restore drills.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use super::RestoreError;
use super::exec::Env;
use super::plan::{Archive, RestorePlan};
use super::toc;
use crate::jobs::backup::{stream, verify};

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

/// Unpacks the plan's [`Archive::Unpack`].
pub(super) async fn unpack(env: &Env<'_>, plan: &RestorePlan) -> Result<Unpacked, RestoreError> {
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
    with_offsets(unpacked, id).await
}

/// Writes the data offsets into the unpacked archive's TOC, so pg_restore -j seeks instead of
/// scanning ([`toc`]); an archive it cannot read as expected is left as it is (slower, not
/// wrong).
pub(super) async fn with_offsets(unpacked: Unpacked, id: &str) -> Result<Unpacked, RestoreError> {
    let path = unpacked.path.clone();
    match tokio::task::spawn_blocking(move || toc::add_offsets(&path)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!("{id}: no data offsets for pg_restore -j (it scans instead): {e}")
        }
        Err(e) => return Err(RestoreError::Failed(e.to_string())),
    }
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
pub(super) fn ensure_dir(dir: &Path) -> Result<(), RestoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| RestoreError::Failed(format!("{}: {e}", dir.display())))
}
