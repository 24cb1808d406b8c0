//! Unpacking a stored archive into restore-scratch-dir: decrypted and/or zstd-decoded into a
//! new 0600 file, its stored bytes checked against the manifest on the way. A restore reads
//! the file as it grows ([`super::load`]); a drill waits for it whole and gives it the data
//! offsets pg_restore -j needs ([`super::toc`]). Used by restores (local and, through
//! [`super::remote`], offsite) and by restore drills.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::RestoreError;
use super::exec::Env;
use super::growing::{Growing, Sink};
use super::plan::{Archive, RestorePlan};
use crate::jobs::backup::{stream, verify};

/// The decoded archive is written to the scratch file, and announced to the loader's readers,
/// in pieces of this size: the decoder's own 8 KiB writes would wake every reader following
/// right behind the writer 128 times per MiB.
const WRITE_PIECE: usize = 1 << 20;

/// The unpacked archive in restore-scratch-dir, removed when dropped.
pub struct Unpacked {
    path: PathBuf,
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

/// Unpacks the plan's [`Archive::Unpack`] into `sink`; returns the bytes written.
pub(super) async fn unpack(
    env: &Env<'_>,
    plan: &RestorePlan,
    sink: Sink,
    cancel: &CancellationToken,
) -> Result<u64, RestoreError> {
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
    let stored = Stored {
        from,
        zstd: *zstd,
        identity,
        sha256,
        bytes: *bytes,
    };
    unpack_into(env.scratch_dir, stored, sink, cancel).await
}

/// A stored archive to unpack: its file, its layers and what its bytes must be.
struct Stored<'a> {
    from: &'a Path,
    zstd: bool,
    identity: Option<PathBuf>,
    sha256: &'a str,
    bytes: u64,
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

/// Decodes the stored `archive` into `sink` on a blocking thread and checks it; returns the
/// bytes written.
async fn unpack_into(
    scratch_dir: &Path,
    archive: Stored<'_>,
    sink: Sink,
    cancel: &CancellationToken,
) -> Result<u64, RestoreError> {
    let Stored {
        from,
        zstd,
        identity,
        sha256,
        bytes,
    } = archive;
    let shown = from.display().to_string();
    let from = from.to_owned();
    let cancel_feed = cancel.clone();
    let work = tokio::task::spawn_blocking(move || {
        let input = match File::open(&from) {
            Ok(f) => f,
            Err(e) => {
                sink.growing.finish(Some(e.to_string()));
                return Err(e);
            }
        };
        decode_into(input, sink, zstd, identity, cancel_feed)
    });
    let decoded = work
        .await
        .map_err(|e| RestoreError::Failed(e.to_string()))?;
    check_unpacked(decoded, &shown, sha256, bytes, scratch_dir, cancel)
}

/// The scratch file being unpacked: removed when dropped; read (as it grows) through `file`.
pub struct Scratch {
    pub unpacked: Unpacked,
    pub file: Arc<File>,
    pub growing: Arc<Growing>,
}

/// A new 0600 scratch file for backup `id` in `scratch_dir` (created 0700 when missing): the
/// writing end, and the file as read (removed again when that is dropped).
pub(super) fn scratch_file(scratch_dir: &Path, id: &str) -> Result<(Sink, Scratch), RestoreError> {
    ensure_dir(scratch_dir)?;
    let path = scratch_dir.join(format!(".restore-{id}-{}", std::process::id()));
    let scratch_error =
        |e: std::io::Error| RestoreError::Scratch(format!("{}: {e}", path.display()));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&path)
        .map_err(scratch_error)?;
    let unpacked = Unpacked { path: path.clone() };
    let read = file.try_clone().map_err(scratch_error)?;
    let growing = Growing::new();
    let sink = Sink {
        file,
        growing: growing.clone(),
    };
    let scratch = Scratch {
        unpacked,
        file: Arc::new(read),
        growing,
    };
    Ok((sink, scratch))
}

/// What [`decode_into`] read and wrote: the stored bytes' size and hash (and why decoding
/// stopped, if it did), and the bytes written to the scratch file.
pub(super) type Decoded = std::io::Result<(stream::ReadBack, u64)>;

/// Reads the stored bytes from `input` (hashing all of them), decrypting with `identity` and
/// zstd-decoding into `sink`; on a blocking thread. The readers following the sink are told
/// the file is complete, or why it is not. The scratch file is thrown away after the restore,
/// so it is not fsynced: a crash loses nothing that is not read again from the backup.
pub(super) fn decode_into(
    input: impl std::io::Read,
    sink: Sink,
    zstd: bool,
    identity: Option<PathBuf>,
    cancel: CancellationToken,
) -> Decoded {
    let growing = sink.growing.clone();
    let mut sink = std::io::BufWriter::with_capacity(
        WRITE_PIECE,
        Cancellable {
            inner: sink,
            cancel,
        },
    );
    let decoded: Decoded = (|| {
        let ids = identity
            .map(|p| verify::load_identities(&p))
            .transpose()
            .map_err(std::io::Error::other)?;
        let read = stream::read_from(input, zstd, ids.as_deref(), Some(&mut sink))?;
        Ok((read, growing.written()))
    })();
    // Before the sink is dropped, which would say the writer ended short.
    growing.finish(match &decoded {
        Ok((read, _)) => read.decode_error.as_ref().map(ToString::to_string),
        Err(e) => Some(e.to_string()),
    });
    decoded
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
    let (read, written) = decoded.map_err(|e| RestoreError::Failed(format!("unpacking: {e}")))?;
    // Damage first: the bytes are hashed whole even when the decoding stopped, and a restore
    // that failed because of it stopped the decoding.
    if read.written.sha256 != sha256 || read.written.bytes != bytes {
        return Err(RestoreError::Failed(format!(
            "{shown}: checksum mismatch ({} bytes, sha256 {}; the manifest says {bytes} bytes, \
             {sha256})",
            read.written.bytes, read.written.sha256
        )));
    }
    // Cancelled while unpacking: whatever the stream made of the sink's refusal.
    if cancel.is_cancelled() {
        return Err(RestoreError::Cancelled);
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

/// A sink (the scratch file, pg_restore's stdin) that stops at cancellation.
pub(super) struct Cancellable<W> {
    pub(super) inner: W,
    pub(super) cancel: CancellationToken,
}

impl<W: std::io::Write> std::io::Write for Cancellable<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.cancel.is_cancelled() {
            return Err(std::io::Error::other("cancelled"));
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// restore-scratch-dir: created 0700 when missing.
pub fn ensure_dir(dir: &Path) -> Result<(), RestoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| RestoreError::Failed(format!("{}: {e}", dir.display())))
}
