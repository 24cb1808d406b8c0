//! The restore drill of a files backup (`verify = "restore"`): the archive unpacked into a
//! private folder in restore-scratch-dir by the restore's own code
//! ([`crate::restore::files_unpack`]: every entry checked against the manifest as it is
//! written, beneath the folder's handle), the stored file's checksum compared, the folder
//! removed, and the drill recorded in the backup folder's `evidence.json` like a PostgreSQL
//! drill. Owners are set only when the daemon is root (as a restore needs).
//!
//! Without restore-scratch-dir, or without room in it for the tree, the archive is read and
//! compared as at level `full` instead ([`super::check`]), which the details say; that is not
//! a drill and records no evidence.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rustix::fs::{Mode, OFlags};

use super::check;
use crate::config::{Compression, VerifyLevel};
use crate::jobs::JobError;
use crate::jobs::backup::manifest::{Manifest, Verification};
use crate::jobs::backup::stream;
use crate::jobs::backup::verify::{
    Checked, Found, VerifyEnv, identity_for, load_identities, verdict,
};
use crate::restore::evidence::{self, Loaded};
use crate::restore::files_unpack;

/// Room left beside the tree in restore-scratch-dir.
const MARGIN: u64 = 64 << 20;

/// Verifies the files backup in `dir` at level restore (see the module docs).
pub async fn verify(
    env: &VerifyEnv<'_>,
    dir: &Path,
    m: &Manifest,
) -> Result<Verification, JobError> {
    let t0 = Instant::now();
    let mut loaded = None;
    let checked = match drilled(env, dir, m, &mut loaded).await {
        Ok(Some(found)) => found,
        Ok(None) => Err(Found::Cancelled),
        Err(note) => check::checked(env, dir, m, VerifyLevel::Full)
            .await
            .map(|(level, details)| (level, format!("{note}{details}"))),
    };
    let verification = verdict(checked)?;
    if verification.level == VerifyLevel::Restore {
        evidence::drilled_source(dir, m, &verification, t0, loaded);
    }
    Ok(verification)
}

/// The drill's finding (`Ok(None)` when cancelled), or why it fell back to level full.
async fn drilled(
    env: &VerifyEnv<'_>,
    dir: &Path,
    m: &Manifest,
    loaded: &mut Option<Loaded>,
) -> Result<Option<Checked>, String> {
    let level = VerifyLevel::Restore;
    let (Some(tree), Some(file)) = (m.tree.clone(), m.files.first().cloned()) else {
        return Err(String::new());
    };
    let (got, note, identity) = identity_for(env, m, level).map_err(|_| String::new())?;
    if got != level {
        return Err(note);
    }
    let scratch = env
        .scratch_dir
        .ok_or("no restore-scratch-dir to unpack into: read and compared instead; ")?;
    crate::restore::unpack::ensure_dir(scratch)
        .map_err(|e| format!("{e}: read and compared instead; "))?;
    let (_, bytes) = tree.counts();
    let free = nix::sys::statvfs::statvfs(scratch)
        .map(|s| s.blocks_available().saturating_mul(s.fragment_size()))
        .map_err(|e| {
            format!(
                "restore-scratch-dir {}: {e}: read and compared instead; ",
                scratch.display()
            )
        })?;
    if free < bytes + MARGIN {
        return Err(format!(
            "restore-scratch-dir {} has {free} bytes free, the tree needs {bytes}: read and \
             compared instead; ",
            scratch.display()
        ));
    }
    let folder = DrillDir::create(scratch, &m.id)?;
    let path = dir.join(&file.path);
    let zstd = matches!(m.compression, Compression::Zstd { .. });
    let cancel = env.cancel.clone();
    let owners = rustix::process::geteuid().is_root();
    let root_path = folder.0.clone();
    let read = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let ids = identity.as_deref().map(load_identities).transpose()?;
        let input = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", file.path))?;
        let root = rustix::fs::open(
            &root_path,
            OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY,
            Mode::empty(),
        )
        .map_err(|e| format!("{}: {e}", root_path.display()))?;
        let cancelled = || cancel.is_cancelled();
        stream::read_with(input, zstd, ids.as_deref(), |r| {
            files_unpack::unpack(r, &root, &tree, &cancelled, owners)
        })
        .map_err(|e| format!("reading {}: {e}", file.path))
    })
    .await;
    drop(folder);
    if env.cancel.is_cancelled() {
        return Ok(None);
    }
    let problem = |why: String| Ok(Some(Err(Found::Problem(level, why))));
    let (written, unpacked) = match read {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return problem(e),
        Err(e) => return problem(e.to_string()),
    };
    let want = &m.files[0];
    if written.sha256 != want.sha256 || written.bytes != want.bytes {
        return problem(format!(
            "{}: checksum mismatch ({} bytes, sha256 {}; manifest says {} bytes, {})",
            want.path, written.bytes, written.sha256, want.bytes, want.sha256
        ));
    }
    let (entries, bytes) = match unpacked {
        Ok(counts) => counts,
        Err(e) => return problem(format!("unpacking: {e}")),
    };
    *loaded = Some(Loaded::Files { entries, bytes });
    let owners = if owners {
        ""
    } else {
        " (owners not set: the daemon is not root)"
    };
    Ok(Some(Ok((
        level,
        format!(
            "{note}unpacked into restore-scratch-dir as a restore does: {entries} entries, {}, \
             each checked against the manifest as written{owners}; checksums match",
            crate::jobs::backup::dump::mib(bytes)
        ),
    ))))
}

/// A private folder (0700) in restore-scratch-dir, removed with what is in it when dropped.
struct DrillDir(PathBuf);

impl DrillDir {
    fn create(scratch: &Path, id: &str) -> Result<DrillDir, String> {
        let path = scratch.join(format!(".files-drill-{id}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(DrillDir(path))
    }
}

impl Drop for DrillDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
