//! The in-flight segment, archived when its receiver ends: with `synchronous = true` the
//! primary acknowledges a commit once pg_receivewal has flushed it into the spool's
//! `SEGMENT.partial`, so when the primary dies those commits exist nowhere else. Each time a
//! receiver's life ends (the server went away, the connection broke, the daemon stops) the
//! archiver stores that file like a segment — zstd, age, SHA-256, temporary name, fsync,
//! rename, folder fsync, then the index line, last — as `SEGMENT.partial-HOLDS.zst.age`, its
//! line named `SEGMENT.partial` with `holds` (the bytes of WAL up to its last non-zero byte).
//!
//! The spool keeps its `.partial` (pg_receivewal resumes from it). A later line of the same
//! name replaces the earlier one in the index, so a newer partial supersedes an older one (the
//! older file goes once the new line is in); a partial holding no more than the archived one is
//! not stored again. Once the completed segment is archived its partial is of no more use: the
//! line and the file go ([`drop_superseded`]). Partial lines are not segments to the gap
//! check, the retention plan or `newest_segment` (their names do not parse as segments).

use std::io::{self, Read};
use std::path::Path;

use chrono::{DateTime, Utc};

use super::archive;
use super::index::{self, Entry, Index};
use crate::config::WalArchiveSpec;
use crate::jobs::backup::stream::Layers;

/// The suffix of an in-flight segment, in the spool and in the index's names.
pub const SUFFIX: &str = ".partial";

/// The segment an index line of a partial is the in-flight copy of.
pub fn segment_of(entry: &Entry) -> Option<&str> {
    entry.holds?;
    entry.name.strip_suffix(SUFFIX)
}

/// Stores the spool's in-flight segment when it holds more WAL than the archived copy; the
/// line appended, if one was.
pub fn pass(
    spec: &WalArchiveSpec,
    layers: &Layers,
    index: &mut Index,
    now: DateTime<Utc>,
) -> Result<Option<Entry>, String> {
    let Some(name) = newest_in_spool(&spec.spool_dir)
        .map_err(|e| format!("cannot list {}: {e}", spec.spool_dir.display()))?
    else {
        return Ok(None);
    };
    let Some(segment) = name.strip_suffix(SUFFIX) else {
        return Ok(None);
    };
    if index.contains(segment) {
        return Ok(None);
    }
    let source = spec.spool_dir.join(&name);
    let held = index.get(&name).and_then(|e| e.holds).unwrap_or(0);
    let holds = match scan(&source) {
        Ok(h) => h,
        // pg_receivewal finished and renamed it meanwhile: the segment pass takes it.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {name}: {e}")),
    };
    if holds <= held {
        return Ok(None);
    }
    let entry =
        store(spec, layers, &name, now).map_err(|e| format!("cannot archive {name}: {e}"))?;
    index
        .append(entry.clone())
        .map_err(|e| format!("cannot record {name} in the index: {e}"))?;
    // The older copies: the one the replaced line named, and any a crash left unlisted.
    sweep(&spec.archive_dir, &name, Some(&entry.file))
        .map_err(|e| format!("cannot remove older copies of {name}: {e}"))?;
    Ok(Some(entry))
}

/// Drops the lines (and files) of partials whose completed segment is archived; how many.
pub fn drop_superseded(spec: &WalArchiveSpec, index: &mut Index) -> Result<usize, String> {
    let superseded = |e: &Entry| segment_of(e).is_some_and(|s| index.contains(s));
    if !index.entries().any(superseded) {
        return Ok(0);
    }
    let path = spec.archive_dir.join(index::INDEX_FILE);
    let dropped = index::rewrite(&path, |e| segment_of(e).is_none_or(|s| !index.contains(s)))
        .map_err(|e| format!("cannot rewrite the index: {e}"))?;
    index
        .refresh()
        .map_err(|e| format!("cannot read the index: {e}"))?;
    for e in &dropped {
        sweep(&spec.archive_dir, &e.name, None)
            .map_err(|err| format!("cannot remove the copies of {}: {err}", e.name))?;
    }
    Ok(dropped.len())
}

/// The spool's newest `.partial` (pg_receivewal keeps one; names sort in WAL order).
fn newest_in_spool(spool: &Path) -> io::Result<Option<String>> {
    Ok(std::fs::read_dir(spool)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            n.strip_suffix(SUFFIX)
                .is_some_and(super::segment::is_complete)
        })
        .max())
}

fn store(
    spec: &WalArchiveSpec,
    layers: &Layers,
    name: &str,
    now: DateTime<Utc>,
) -> io::Result<Entry> {
    let input = std::fs::File::open(spec.spool_dir.join(name))?;
    let completed: DateTime<Utc> = input
        .metadata()?
        .modified()
        .map(DateTime::from)
        .unwrap_or(now);
    // The name says what it holds as read while storing (pg_receivewal may be writing to it
    // again): a later, fuller copy gets another name and never overwrites a listed file.
    let mut tracked = Tracked::new(input);
    let tmp = format!("{name}.incoming{}", archive::suffix(layers));
    let (bytes, sha256) = archive::store(spec, layers, &mut tracked, &tmp)?;
    let file = format!("{name}-{:X}{}", tracked.holds, archive::suffix(layers));
    std::fs::rename(spec.archive_dir.join(&tmp), spec.archive_dir.join(&file))
        .and_then(|()| archive::fsync_dir(&spec.archive_dir))?;
    Ok(Entry {
        name: name.to_owned(),
        file,
        bytes,
        sha256,
        wal_bytes: tracked.read,
        completed,
        archived: now,
        holds: Some(tracked.holds),
    })
}

/// The bytes up to the last non-zero one of the file at `path`.
fn scan(path: &Path) -> io::Result<u64> {
    let mut t = Tracked::new(std::fs::File::open(path)?);
    io::copy(&mut t, &mut io::sink())?;
    Ok(t.holds)
}

/// Removes the stored copies of the partial `name` (`NAME-HOLDS.zst…`) other than `keep`.
fn sweep(dir: &Path, name: &str, keep: Option<&str>) -> io::Result<()> {
    let prefix = format!("{name}-");
    let mut removed = false;
    for file in std::fs::read_dir(dir)?.filter_map(|e| e.ok()?.file_name().into_string().ok()) {
        if file.starts_with(&prefix) && Some(file.as_str()) != keep {
            match std::fs::remove_file(dir.join(&file)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => removed = true,
            }
        }
    }
    if removed {
        archive::fsync_dir(dir)?;
    }
    Ok(())
}

/// A reader that counts what passed and where the last non-zero byte was.
struct Tracked<R> {
    inner: R,
    read: u64,
    holds: u64,
}

impl<R> Tracked<R> {
    fn new(inner: R) -> Self {
        Tracked {
            inner,
            read: 0,
            holds: 0,
        }
    }
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(last) = buf[..n].iter().rposition(|b| *b != 0) {
            self.holds = self.read + last as u64 + 1;
        }
        self.read += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_ends_at_the_last_non_zero_byte() {
        let mut data = vec![0u8; 100_000];
        data[10] = 1;
        data[70_000] = 7;
        let mut t = Tracked::new(&data[..]);
        io::copy(&mut t, &mut io::sink()).unwrap();
        assert_eq!((t.read, t.holds), (100_000, 70_001));
    }
}
