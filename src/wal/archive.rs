//! Moving completed files from pg_receivewal's spool into the archive, one at a time and in
//! WAL order: compressed (zstd) and encrypted (age) by the backup pipeline's own writer into a
//! temporary name, fsynced, renamed into place, the folder fsynced, recorded in the index —
//! and only then removed from the spool. A crash at any step leaves the spool file, so the
//! file is archived again (a second copy over the first, the same bytes once decrypted).

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use chrono::{DateTime, Utc};

use super::index::{Entry, Index};
use crate::config::WalArchiveSpec;
use crate::jobs::backup::stream::{self, Layers};

/// What one pass archived, and why it stopped early if it did.
#[derive(Debug, Default)]
pub struct Pass {
    pub archived: Vec<Entry>,
    pub error: Option<String>,
}

/// Archives every completed file now in the spool.
pub fn pass(spec: &WalArchiveSpec, layers: &Layers, index: &mut Index, now: DateTime<Utc>) -> Pass {
    let mut result = Pass::default();
    // A prune may have rewritten the index since the last pass: count and check gaps over it.
    if let Err(e) = index.refresh() {
        result.error = Some(format!("cannot read the index: {e}"));
        return result;
    }
    let names = match complete_files(&spec.spool_dir) {
        Ok(n) => n,
        Err(e) => {
            result.error = Some(format!("cannot list {}: {e}", spec.spool_dir.display()));
            return result;
        }
    };
    for name in names {
        let spooled = spec.spool_dir.join(&name);
        if !index.contains(&name) {
            match one(spec, layers, &name, now) {
                Ok(entry) => {
                    if let Err(e) = index.append(entry.clone()) {
                        result.error = Some(format!("cannot record {name} in the index: {e}"));
                        return result;
                    }
                    result.archived.push(entry);
                }
                Err(e) => {
                    result.error = Some(format!("cannot archive {name}: {e}"));
                    return result;
                }
            }
        }
        if let Err(e) = std::fs::remove_file(&spooled).and_then(|()| fsync_dir(&spec.spool_dir)) {
            result.error = Some(format!("cannot remove {}: {e}", spooled.display()));
            return result;
        }
    }
    result
}

/// The completed files in the spool, segments in WAL order (their names sort that way).
fn complete_files(spool: &Path) -> io::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(spool)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| super::segment::is_complete(n))
        .collect();
    names.sort();
    Ok(names)
}

fn one(
    spec: &WalArchiveSpec,
    layers: &Layers,
    name: &str,
    now: DateTime<Utc>,
) -> io::Result<Entry> {
    let source = spec.spool_dir.join(name);
    let input = std::fs::File::open(&source)?;
    let meta = input.metadata()?;
    let completed: DateTime<Utc> = meta.modified().map(DateTime::from).unwrap_or(now);
    let file = format!("{name}{}", suffix(layers));
    let (bytes, sha256) = store(spec, layers, input, &file)?;
    Ok(Entry {
        name: name.to_owned(),
        file,
        bytes,
        sha256,
        wal_bytes: meta.len(),
        completed,
        archived: now,
        holds: None,
    })
}

/// The archived file's suffix: `.zst.age`, or `.zst` without recipients.
pub(super) fn suffix(layers: &Layers) -> &'static str {
    if layers.recipients.is_empty() {
        ".zst"
    } else {
        ".zst.age"
    }
}

/// Compresses and encrypts `input` into `archive-dir/file`: a temporary name, fsync, rename,
/// folder fsync. The stored file's size and SHA-256.
pub(super) fn store(
    spec: &WalArchiveSpec,
    layers: &Layers,
    input: impl io::Read,
    file: &str,
) -> io::Result<(u64, String)> {
    let tmp = spec.archive_dir.join(format!(".{file}.tmp"));
    // A temporary file a crash left behind.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    // One segment is 16 MiB: zstd on this thread (a few MiB of state) rather than the dump's
    // multi-threaded encoder, then the pipeline's own age layer, hashing and fsync.
    let mut zstd = zstd::stream::read::Encoder::new(input, layers.zstd_level.unwrap_or(3))?;
    zstd.include_checksum(true)?;
    let encrypt_only = Layers {
        zstd_level: None,
        recipients: layers.recipients.clone(),
    };
    let written = stream::write_stream(zstd, &tmp, &encrypt_only, &Arc::new(AtomicU64::new(0)))
        .and_then(|w| {
            std::fs::rename(&tmp, spec.archive_dir.join(file))?;
            fsync_dir(&spec.archive_dir)?;
            Ok(w)
        });
    match written {
        Ok(w) => Ok((w.bytes, w.sha256)),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

pub(super) fn fsync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
