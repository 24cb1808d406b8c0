//! The manifest's `tree` of a files backup: every archived entry with its metadata and the
//! SHA-256 of the bytes archived, what was skipped and what changed while it was read. Written
//! at backup time from what was read, compared entry by entry with the archive by the
//! verification and by a restore.

use serde::{Deserialize, Serialize};

/// What a files backup archived.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    /// The job's `paths` when it ran.
    pub paths: Vec<String>,
    /// The job's `exclude` patterns when it ran.
    #[serde(default)]
    pub exclude: Vec<String>,
    pub one_file_system: bool,
    /// Size of the tar stream before compression and encryption.
    pub tar_bytes: u64,
    /// In archive order (a folder before what is in it).
    pub entries: Vec<Entry>,
    /// Entry paths of files whose size or mtime changed while they were read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
    /// Paths not archived, and why (sockets, FIFOs, devices; unreadable files with
    /// `ignore-unreadable`; mount points whose contents `one-file-system` left out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Skipped>,
}

/// One archived file, folder or symlink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative to `/`, as named in the archive.
    pub path: String,
    pub kind: Kind,
    /// Bytes archived (0 for folders and symlinks).
    #[serde(default)]
    pub size: u64,
    /// Permission bits (with setuid, setgid and sticky).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Owner names at backup time (empty when the id has no name).
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub group: String,
    /// Seconds since the epoch, and the nanoseconds.
    pub mtime: i64,
    #[serde(default)]
    pub mtime_nsec: u32,
    /// SHA-256 of the content archived (files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Where a symlink points, as stored (never followed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

/// A path left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub path: String,
    pub why: String,
}

impl Tree {
    /// Files, folders and symlinks, and the bytes of the files.
    pub fn counts(&self) -> (usize, u64) {
        let bytes = self.entries.iter().map(|e| e.size).sum();
        (self.entries.len(), bytes)
    }
}
