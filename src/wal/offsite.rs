//! Segments to the job's offsite targets, as they are archived: each file of the index not yet
//! at a target is uploaded to `<prefix>/wal/<job>/<file>` by the offsite module's own transfer
//! (multipart, retries), read back against the index's size and SHA-256, and only then recorded
//! in `archive-dir/offsite-<target>.jsonl`. A target that is down delays its copies and loses
//! none: the next pass takes up what is owed, oldest first. An in-flight segment's copy
//! ([`super::partial`]) goes the same way; a newer one of the same segment is copied again and
//! its line replaces the older one at the target (whose older object stays there).
//!
//! After each batch the target's index, `<prefix>/wal/<job>/index.jsonl`, is written whole
//! ([`crate::offsite::wal`]): the lines of that record merged with the index already there (so
//! an archive-dir started afresh adds to it rather than hides what the target holds). The
//! SHA-256 of the record last described there is kept in `offsite-<target>.indexed`; a pass
//! whose record differs from it (a batch copied, an upload of the index that failed, a new
//! archive-dir) writes the index again.

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use tokio_util::sync::CancellationToken;

use super::index::{self, Entry, Index};
use crate::config::OffsiteTarget;
use crate::jobs::backup::manifest::FileSum;
use crate::offsite::{Remote, transfer, wal};

/// At most this many segments per target and pass, so a long outage catches up in steps.
const BATCH: usize = 32;

/// Copies what `target` still lacks; returns how many were copied, or why it stopped.
pub async fn pass(
    t: &OffsiteTarget,
    job: &str,
    archive_dir: &Path,
    cancel: &CancellationToken,
) -> Result<usize, String> {
    let target = t.name.as_str();
    let dir = archive_dir.to_owned();
    let record = archive_dir.join(format!("offsite-{target}.jsonl"));
    let opened = record.clone();
    let (all, shipped) = tokio::task::spawn_blocking(move || {
        let all = Index::read(&dir)?;
        let (shipped, _) = Index::open_file(opened)?;
        Ok::<_, std::io::Error>((all, shipped))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("offsite {target}: {e}"))?;
    // By file, not name: a newer in-flight partial has the name of the one copied before.
    let mut owed: Vec<Entry> = all
        .into_iter()
        .filter(|e| shipped.get(&e.name).is_none_or(|s| s.file != e.file))
        .collect();
    let stamp = archive_dir.join(format!("offsite-{target}.indexed"));
    if owed.is_empty() {
        return index_pass(t, job, &record, &stamp).await.map(|()| 0);
    }
    owed.sort_by(|a, b| a.name.cmp(&b.name));
    owed.truncate(BATCH);
    let remote = Remote::open(t).map_err(|e| e.to_string())?;
    let mut shipped = shipped;
    let mut copied = 0;
    for entry in owed {
        let key = remote.key("wal", &format!("{job}/{}", entry.file));
        let want = FileSum {
            path: entry.file.clone(),
            bytes: entry.bytes,
            sha256: entry.sha256.clone(),
        };
        transfer::upload(&remote, &archive_dir.join(&entry.file), &key, &want, cancel)
            .await
            .map_err(|e| e.to_string())?;
        transfer::read_back(&remote, &key, &want, cancel)
            .await
            .map_err(|e| e.to_string())?;
        let name = entry.name.clone();
        shipped = tokio::task::spawn_blocking(move || shipped.append(entry).map(|()| shipped))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("offsite {target}: recording {name}: {e}"))?;
        tracing::info!(segment = %name, target, "copied {name} to offsite {target}");
        copied += 1;
    }
    index_pass(t, job, &record, &stamp).await?;
    Ok(copied)
}

/// Writes the target's index when the `record` differs from what `stamp` says was described.
async fn index_pass(
    t: &OffsiteTarget,
    job: &str,
    record: &Path,
    stamp: &Path,
) -> Result<(), String> {
    let target = t.name.as_str();
    let local = |e: std::io::Error| format!("offsite {target}: {e}");
    let ours = index::read_path(record).map_err(local)?;
    if ours.is_empty() {
        return Ok(());
    }
    let sum =
        crate::jobs::backup::stream::hex(&Sha256::digest(index::to_bytes(&ours).map_err(local)?));
    if std::fs::read_to_string(stamp).is_ok_and(|s| s.trim() == sum) {
        return Ok(());
    }
    let remote = Remote::open(t).map_err(|e| e.to_string())?;
    let there = wal::get(&remote, job, wal::INDEX)
        .await
        .map_err(|e| e.to_string())?
        .map(|b| index::from_bytes(&b).0)
        .unwrap_or_default();
    let mut merged: BTreeMap<String, Entry> =
        there.into_iter().map(|e| (e.name.clone(), e)).collect();
    merged.extend(ours.into_iter().map(|e| (e.name.clone(), e)));
    let bytes = index::to_bytes(merged.values()).map_err(local)?;
    wal::put(&remote, job, wal::INDEX, bytes)
        .await
        .map_err(|e| e.to_string())?;
    crate::publish::write_atomic(stamp, format!("{sum}\n").as_bytes(), 0o600).map_err(local)?;
    tracing::debug!(
        target,
        "wrote the WAL index of job {job} at offsite {target}"
    );
    Ok(())
}
