//! What a files backup archives: each of `paths`, and below a folder everything `exclude`
//! leaves in, in name order, never following a symlink and (with `one-file-system`) not
//! descending into other mounts. Only metadata is read here (lstat); each file is opened once,
//! later, by [`super::archive`].

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use super::tree::Skipped;
use crate::config::FilesSpec;

/// A path to archive and its lstat.
pub struct Found {
    pub path: PathBuf,
    pub meta: std::fs::Metadata,
}

/// What the walk found.
#[derive(Default)]
pub struct Walked {
    pub found: Vec<Found>,
    /// Paths that could not be read (a folder not listable, a name not UTF-8, a path
    /// missing).
    pub unreadable: Vec<Skipped>,
    /// Sockets, FIFOs and devices: not archived.
    pub skipped: Vec<Skipped>,
    /// Bytes of the regular files found.
    pub bytes: u64,
}

/// Walks `spec.paths`; `None` when `cancel` fired.
pub fn walk(spec: &FilesSpec, cancel: &CancellationToken) -> Option<Walked> {
    let mut walked = Walked::default();
    for root in &spec.paths {
        if spec.excluded(root) {
            continue;
        }
        let meta = match std::fs::symlink_metadata(root) {
            Ok(meta) => meta,
            Err(e) => {
                walked.unreadable.push(skipped(root, e.to_string()));
                continue;
            }
        };
        if !meta.is_dir() {
            walked.add(root.clone(), meta);
            continue;
        }
        let root_dev = meta.dev();
        let entries = walkdir::WalkDir::new(root)
            .follow_links(false)
            .same_file_system(spec.one_file_system)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| !spec.excluded(e.path()));
        for entry in entries {
            if cancel.is_cancelled() {
                return None;
            }
            match entry.and_then(|e| e.metadata().map(|m| (e.into_path(), m))) {
                Ok((path, meta)) => {
                    // walkdir yields a mount point but does not descend into it: the
                    // folder is archived, what is mounted there is left out, and said so.
                    if spec.one_file_system && meta.is_dir() && meta.dev() != root_dev {
                        walked.skipped.push(skipped(
                            &path,
                            "another file system is mounted here: its contents are left out \
                             (one-file-system = true)"
                                .into(),
                        ));
                    }
                    walked.add(path, meta);
                }
                Err(e) => {
                    let path = e.path().unwrap_or(root).to_owned();
                    let why = e
                        .io_error()
                        .map_or_else(|| e.to_string(), ToString::to_string);
                    walked.unreadable.push(skipped(&path, why));
                }
            }
        }
    }
    Some(walked)
}

impl Walked {
    fn add(&mut self, path: PathBuf, meta: std::fs::Metadata) {
        if path.to_str().is_none() {
            self.unreadable.push(skipped(
                &path,
                "the name is not UTF-8 and cannot be recorded".into(),
            ));
            return;
        }
        let t = meta.file_type();
        let other = if t.is_socket() {
            Some("a socket")
        } else if t.is_fifo() {
            Some("a FIFO")
        } else if t.is_block_device() || t.is_char_device() {
            Some("a device")
        } else {
            None
        };
        if let Some(what) = other {
            self.skipped
                .push(skipped(&path, format!("{what}: not archived")));
            return;
        }
        if t.is_file() {
            // Found now, so the run's list of unreadable files is whole before anything is
            // written; the archive's own open stays the last word.
            let readable = rustix::fs::accessat(
                rustix::fs::CWD,
                &path,
                rustix::fs::Access::READ_OK,
                rustix::fs::AtFlags::EACCESS,
            );
            if let Err(e) = readable {
                self.unreadable
                    .push(skipped(&path, std::io::Error::from(e).to_string()));
                return;
            }
            self.bytes += meta.len();
        }
        self.found.push(Found { path, meta });
    }
}

pub fn skipped(path: &Path, why: String) -> Skipped {
    Skipped {
        path: path.to_string_lossy().into_owned(),
        why,
    }
}
