//! Verification of a files backup, by level:
//!
//! - checksum: re-read the archive file and compare with the SHA-256 streamed at backup time;
//! - full: also decrypt, decode and parse the tar in the same pass, and compare every entry
//!   (name, type, size, mode, owner, mtime, symlink target, content SHA-256) with the
//!   manifest's `tree`, in order; the first difference is named by its path;
//! - restore: a drill, the archive unpacked as a restore does ([`super::drill`]).

use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::pax;
use super::tree::{Kind, Tree};
use crate::config::{Compression, VerifyLevel};
use crate::jobs::JobError;
use crate::jobs::backup::manifest::{Manifest, Verification};
use crate::jobs::backup::stream::{self, hex};
use crate::jobs::backup::verify::{
    Checked, Found, VerifyEnv, check_sums, identity_for, load_identities, verdict,
};

/// Verifies the files backup in `dir` at `level`; only cancellation is an error.
pub async fn verify(
    env: &VerifyEnv<'_>,
    dir: &Path,
    m: &Manifest,
    level: VerifyLevel,
) -> Result<Verification, JobError> {
    if level == VerifyLevel::Restore {
        return super::drill::verify(env, dir, m).await;
    }
    verdict(checked(env, dir, m, level).await)
}

pub(super) async fn checked(
    env: &VerifyEnv<'_>,
    dir: &Path,
    m: &Manifest,
    level: VerifyLevel,
) -> Checked {
    let level = level.min(VerifyLevel::Full);
    let file = m
        .files
        .first()
        .ok_or(Found::Problem(level, "the manifest lists no file".into()))?
        .clone();
    let tree = m
        .tree
        .clone()
        .ok_or(Found::Problem(level, "the manifest has no tree".into()))?;
    let (level, note, identity) = identity_for(env, m, level)?;
    if level == VerifyLevel::Checksum {
        return check_sums(dir, vec![file])
            .await
            .map(|d| (level, format!("{note}{d}")));
    }
    let path = dir.join(&file.path);
    let zstd = matches!(m.compression, Compression::Zstd { .. });
    let cancel = env.cancel.clone();
    let read = tokio::task::spawn_blocking(
        move || -> Result<(stream::Written, io::Result<usize>), String> {
            let ids = identity.as_deref().map(load_identities).transpose()?;
            let input = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", file.path))?;
            stream::read_with(input, zstd, ids.as_deref(), |r| {
                compare(r, &tree, &|| cancel.is_cancelled())
            })
            .map_err(|e| format!("reading {}: {e}", file.path))
        },
    );
    if env.cancel.is_cancelled() {
        return Err(Found::Cancelled);
    }
    let (written, compared) = read
        .await
        .map_err(|e| Found::Problem(level, e.to_string()))?
        .map_err(|e| Found::Problem(level, e))?;
    if env.cancel.is_cancelled() {
        return Err(Found::Cancelled);
    }
    let m_file = &m.files[0];
    let sum_ok = written.sha256 == m_file.sha256 && written.bytes == m_file.bytes;
    match (sum_ok, compared) {
        (true, Ok(n)) => Ok((
            level,
            format!(
                "{note}{n} entries read back and compared with the manifest (content, mode, \
                 owner, mtime); checksums match"
            ),
        )),
        (false, compared) => Err(Found::Problem(
            level,
            format!(
                "{}: checksum mismatch ({} bytes, sha256 {}; manifest says {} bytes, {}){}",
                m_file.path,
                written.bytes,
                written.sha256,
                m_file.bytes,
                m_file.sha256,
                compared
                    .err()
                    .map_or_else(String::new, |e| format!("; in the archive: {e}"))
            ),
        )),
        (true, Err(e)) => Err(Found::Problem(level, format!("in the archive: {e}"))),
    }
}

/// Reads the tar from `r` and compares it entry by entry with `tree`; the number of entries,
/// or the first difference, named by its path.
pub fn compare(r: &mut dyn Read, tree: &Tree, cancelled: &dyn Fn() -> bool) -> io::Result<usize> {
    let mut archive = tar::Archive::new(r);
    let mut want = tree.entries.iter();
    let mut last = String::from("the start");
    let mut n = 0;
    for entry in archive.entries()? {
        if cancelled() {
            return Err(io::Error::other("cancelled"));
        }
        let mut entry = entry.map_err(|e| after(&last, e))?;
        let mut got = pax::entry_of(&mut entry).map_err(|e| after(&last, e))?;
        if got.kind == Kind::File {
            got.sha256 = Some(hash(&mut entry).map_err(|e| within(&got.path, e))?);
        }
        let Some(w) = want.next() else {
            return Err(io::Error::other(format!(
                "{}: in the archive but not in the manifest",
                got.path
            )));
        };
        if let Some(diff) = pax::differ(w, &got) {
            return Err(io::Error::other(format!("/{}: {diff}", w.path)));
        }
        last = got.path;
        n += 1;
    }
    if let Some(w) = want.next() {
        return Err(io::Error::other(format!(
            "/{}: in the manifest but not in the archive",
            w.path
        )));
    }
    Ok(n)
}

/// SHA-256 of what is left of `r`.
pub fn hash(r: &mut impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(hex(&hasher.finalize())),
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn after(last: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("after {last}: {e}"))
}

fn within(path: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("reading /{path}: {e}"))
}
