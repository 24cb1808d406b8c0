//! The archive's segment index, `index.jsonl` in the archive folder: one JSON line per
//! archived file, appended with a single write and `fdatasync` once the file it names is in
//! place. A segment counts as archived when its line is in the index, never before.
//!
//! Crash tolerance: a kill -9 in the middle of an append leaves a torn last line (no newline,
//! or not JSON). [`Index::open`] drops it and rewrites the file atomically, so the next append
//! cannot glue onto it; the segment it named is still in the spool and is archived again.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
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
        let text = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        };
        let (entries, dropped) = parse(&text);
        if dropped > 0 {
            let mut good = Vec::new();
            for e in entries.values() {
                good.extend(line(e)?);
            }
            crate::publish::write_atomic(&path, &good, 0o600)?;
        }
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
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

    /// Appends `entry` durably.
    pub fn append(&mut self, entry: Entry) -> io::Result<()> {
        let bytes = line(&entry)?;
        self.file
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))?;
        self.entries.insert(entry.name.clone(), entry);
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
        let mut segments: Vec<SegmentName> = self
            .entries
            .values()
            .filter_map(|e| SegmentName::parse(&e.name, e.wal_bytes))
            .collect();
        segments.sort_by_key(|s| (s.timeline, s.number));
        segments
            .windows(2)
            .filter(|w| w[0].timeline == w[1].timeline && w[1].number > w[0].number + 1)
            .map(|w| {
                let first = SegmentName {
                    number: w[0].number + 1,
                    ..w[0]
                };
                let last = SegmentName {
                    number: w[1].number - 1,
                    ..w[0]
                };
                (first.name(), last.name())
            })
            .collect()
    }
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
}
