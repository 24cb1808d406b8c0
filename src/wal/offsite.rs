//! Segments to the job's offsite targets, as they are archived: each file of the index not yet
//! at a target is uploaded to `<prefix>/wal/<job>/<file>` by the offsite module's own transfer
//! (multipart, retries), read back against the index's size and SHA-256, and only then recorded
//! in `archive-dir/offsite-<target>.jsonl`. A target that is down delays its copies and loses
//! none: the next pass takes up what is owed, oldest first.

use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::index::{Entry, Index};
use crate::config::OffsiteTarget;
use crate::jobs::backup::manifest::FileSum;
use crate::offsite::{Remote, transfer};

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
    let (all, shipped) = tokio::task::spawn_blocking(move || {
        let all = Index::read(&dir)?;
        let (shipped, _) = Index::open_file(record)?;
        Ok::<_, std::io::Error>((all, shipped))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("offsite {target}: {e}"))?;
    let mut owed: Vec<Entry> = all
        .into_iter()
        .filter(|e| !shipped.contains(&e.name))
        .collect();
    if owed.is_empty() {
        return Ok(0);
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
    Ok(copied)
}
