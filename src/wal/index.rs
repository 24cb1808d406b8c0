//! The archive's segment index, `index.jsonl` in the archive folder: one JSON line per
//! archived file, appended with a single write and `fdatasync` once the file it names is in
//! place. A segment counts as archived when its line is in the index, never before.
//!
//! Crash tolerance: a kill -9 in the middle of an append leaves a torn last line (no newline,
//! or not JSON). [`Index::open`] drops it and rewrites the file atomically, so the next append
//! cannot glue onto it; the segment it named is still in the spool and is archived again.
//!
//! WAL retention rewrites the index ([`rewrite`]: temporary file, fsync, rename, folder fsync)
//! under a lock (`index.jsonl.lock`, flock) that every append also takes; an append finding the
//! file renamed under it reopens it first, so no line is written to the replaced file.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::segment::SegmentName;

pub const INDEX_FILE: &str = "index.jsonl";

/// One archived file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// pg_receivewal's name: a segment (`000000010000000000000003`) or a timeline history file.
    pub name: String,
    /// The archived file, in the same folder (`NAME.zst.age`, `NAME.zst`).
    pub file: String,
    /// Size and SHA-256 of the archived file as stored.
    pub bytes: u64,
    pub sha256: String,
    /// Size of the plain segment (the server's wal_segment_size).
    pub wal_bytes: u64,
    /// When pg_receivewal finished the segment (its last write): the archive's recovery point.
    pub completed: DateTime<Utc>,
    pub archived: DateTime<Utc>,
    /// Set on the line of an in-flight segment archived when its receiver ended
    /// (`name` = `SEGMENT.partial`, see [`super::partial`]): the bytes of WAL it holds, up to
    /// its last non-zero byte (the rest of its `wal_bytes` is pg_receivewal's zero padding).
    /// A later line of the same name replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holds: Option<u64>,
}

/// The index as read at start, kept in memory, appended to as segments are archived.
pub struct Index {
    path: PathBuf,
    file: File,
    entries: BTreeMap<String, Entry>,
}

impl Index {
    /// Opens (or creates) the index in `dir`; returns it and how many torn or unreadable lines
    /// were dropped.
    pub fn open(dir: &Path) -> io::Result<(Index, usize)> {
        Self::open_file(dir.join(INDEX_FILE))
    }

    /// As [`Index::open`], for another file of the same lines (an offsite target's record of
    /// the segments copied there).
    pub fn open_file(path: PathBuf) -> io::Result<(Index, usize)> {
        let _lock = lock(&path)?;
        let (entries, dropped) = parse(&read_or_empty(&path)?);
        if dropped > 0 {
            write_lines(&path, entries.values())?;
        }
        let file = open_append(&path)?;
        Ok((
            Index {
                path,
                file,
                entries,
            },
            dropped,
        ))
    }

    /// The entries in the index file in `dir` as it is on disk now (a torn line left out).
    pub fn read(dir: &Path) -> io::Result<Vec<Entry>> {
        match std::fs::read(dir.join(INDEX_FILE)) {
            Ok(bytes) => Ok(parse(&bytes).0.into_values().collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The line of `name`, if listed.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }

    /// Every line, by name.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Appends `entry` durably, under the lock a [`rewrite`] takes.
    pub fn append(&mut self, entry: Entry) -> io::Result<()> {
        let bytes = line(&entry)?;
        let _lock = lock(&self.path)?;
        self.refresh()?;
        self.file
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))?;
        self.entries.insert(entry.name.clone(), entry);
        Ok(())
    }

    /// Follows a [`rewrite`] made since the file was opened: reopens and rereads it when the
    /// name now holds another file.
    pub fn refresh(&mut self) -> io::Result<()> {
        let named = match std::fs::metadata(&self.path) {
            Ok(m) => Some((m.dev(), m.ino())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("{}: {e}", self.path.display()),
                ));
            }
        };
        let held = self.file.metadata()?;
        if named == Some((held.dev(), held.ino())) {
            return Ok(());
        }
        self.entries = parse(&read_or_empty(&self.path)?).0;
        self.file = open_append(&self.path)?;
        Ok(())
    }

    /// How many files the index lists.
    pub fn count(&self) -> usize {
        self.entries.len()
    }

    /// The newest archived segment (history files aside), by position in the WAL.
    pub fn newest_segment(&self) -> Option<(SegmentName, &Entry)> {
        self.entries
            .values()
            .filter_map(|e| SegmentName::parse(&e.name, e.wal_bytes).map(|s| (s, e)))
            .max_by_key(|(s, _)| (s.timeline, s.number))
    }

    /// Missing ranges between archived segments of each timeline, as `(first, last)` names.
    pub fn gaps(&self) -> Vec<(String, String)> {
        let segments: Vec<SegmentName> = self
            .entries
            .values()
            .filter_map(|e| SegmentName::parse(&e.name, e.wal_bytes))
            .collect();
        super::segment::gaps(&segments)
            .into_iter()
            .map(|(_, first, last)| (first.name(), last.name()))
            .collect()
    }
}

/// Rewrites the index file at `path` keeping the entries `keep` accepts, atomically and under
/// the appenders' lock; returns the entries dropped (nothing is written when none is).
pub fn rewrite(path: &Path, keep: impl Fn(&Entry) -> bool) -> io::Result<Vec<Entry>> {
    let _lock = lock(path)?;
    let (entries, _) = parse(&read_or_empty(path)?);
    let (kept, dropped): (Vec<Entry>, Vec<Entry>) = entries.into_values().partition(|e| keep(e));
    if !dropped.is_empty() {
        write_lines(path, kept.iter())?;
    }
    Ok(dropped)
}

/// The entries of the index file at `path` (another file of the same lines, such as an
/// offsite target's record), a torn line left out.
pub fn read_path(path: &Path) -> io::Result<Vec<Entry>> {
    Ok(parse(&read_or_empty(path)?).0.into_values().collect())
}

/// The lines of `entries` in name order, as an index file holds them (an offsite target's
/// uploaded index).
pub fn to_bytes<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> io::Result<Vec<u8>> {
    let sorted: BTreeMap<&str, &Entry> =
        entries.into_iter().map(|e| (e.name.as_str(), e)).collect();
    let mut out = Vec::new();
    for e in sorted.values() {
        out.extend(line(e)?);
    }
    Ok(out)
}

/// The entries of index lines read from elsewhere, and how many lines were unreadable.
pub fn from_bytes(bytes: &[u8]) -> (Vec<Entry>, usize) {
    let (entries, dropped) = parse(bytes);
    (entries.into_values().collect(), dropped)
}

/// The exclusive lock on `PATH.lock`, held until the returned file is dropped.
fn lock(path: &Path) -> io::Result<File> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(&name)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", Path::new(&name).display())))?;
    file.lock()?;
    Ok(file)
}

fn read_or_empty(path: &Path) -> io::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn write_lines<'a>(path: &Path, entries: impl Iterator<Item = &'a Entry>) -> io::Result<()> {
    let mut good = Vec::new();
    for e in entries {
        good.extend(line(e)?);
    }
    crate::publish::write_atomic(path, &good, 0o600)
}

fn line(entry: &Entry) -> io::Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec(entry).map_err(io::Error::other)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// The entries of the complete, readable lines, and how many lines were not.
fn parse(text: &[u8]) -> (BTreeMap<String, Entry>, usize) {
    let mut entries = BTreeMap::new();
    let mut dropped = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let Some(end) = rest.iter().position(|b| *b == b'\n') else {
            // A torn last line: no newline.
            dropped += 1;
            break;
        };
        match serde_json::from_slice::<Entry>(&rest[..end]) {
            Ok(e) => {
                entries.insert(e.name.clone(), e);
            }
            Err(_) => dropped += 1,
        }
        rest = &rest[end + 1..];
    }
    (entries, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> Entry {
        Entry {
            name: name.into(),
            file: format!("{name}.zst"),
            bytes: 10,
            sha256: "ab".into(),
            wal_bytes: 16 << 20,
            completed: DateTime::UNIX_EPOCH,
            archived: DateTime::UNIX_EPOCH,
            holds: None,
        }
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_repaired() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut index, dropped) = Index::open(dir.path()).unwrap();
            assert_eq!(dropped, 0);
            index.append(entry("000000010000000000000001")).unwrap();
            index.append(entry("000000010000000000000002")).unwrap();
        }
        let path = dir.path().join(INDEX_FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"name\":\"0000000100000000000").unwrap();
        drop(f);
        let (mut index, dropped) = Index::open(dir.path()).unwrap();
        assert_eq!((dropped, index.count()), (1, 2));
        index.append(entry("000000010000000000000003")).unwrap();
        let (index, dropped) = Index::open(dir.path()).unwrap();
        assert_eq!((dropped, index.count()), (0, 3));
    }

    #[test]
    fn gaps_name_the_missing_range() {
        let dir = tempfile::tempdir().unwrap();
        let (mut index, _) = Index::open(dir.path()).unwrap();
        for n in [
            "000000010000000000000001",
            "000000010000000000000002",
            "000000010000000100000001",
        ] {
            index.append(entry(n)).unwrap();
        }
        assert_eq!(
            index.gaps(),
            vec![(
                "000000010000000000000003".to_owned(),
                "000000010000000100000000".to_owned()
            )]
        );
    }

    #[test]
    fn an_append_after_a_rewrite_lands_in_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let (mut index, _) = Index::open(dir.path()).unwrap();
        for n in ["000000010000000000000001", "000000010000000000000002"] {
            index.append(entry(n)).unwrap();
        }
        let path = dir.path().join(INDEX_FILE);
        let dropped = rewrite(&path, |e| e.name != "000000010000000000000001").unwrap();
        assert_eq!(dropped.len(), 1);
        // The archiver's handle still holds the replaced file: its next append must follow.
        index.append(entry("000000010000000000000003")).unwrap();
        let names: Vec<String> = Index::read(dir.path())
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(
            names,
            ["000000010000000000000002", "000000010000000000000003"]
        );
        assert_eq!(index.count(), 2, "the memory follows the rewrite");
        assert!(rewrite(&path, |_| true).unwrap().is_empty());
    }
}
