//! The three-thread archiving against real files: hashes, changes, cancel and a failing output.

use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::{CHUNK, archive};
use crate::jobs::backup::files::walk::Found;
use crate::jobs::backup::stream::hex;

fn found(paths: &[&Path]) -> Vec<Found> {
    paths
        .iter()
        .map(|p| Found {
            path: p.to_path_buf(),
            meta: std::fs::symlink_metadata(p).unwrap(),
        })
        .collect()
}

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn tree(dir: &Path, sizes: &[usize]) -> Vec<std::path::PathBuf> {
    let mut paths = vec![dir.to_path_buf()];
    for (i, n) in sizes.iter().enumerate() {
        let p = dir.join(format!("f{i}"));
        std::fs::write(&p, bytes(*n, i as u8)).unwrap();
        paths.push(p);
    }
    paths
}

#[test]
fn each_files_hash_is_of_its_content_across_chunk_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let sizes = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17, 511, 513];
    let paths = tree(dir.path(), &sizes);
    let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
    let mut out = Vec::new();
    let done = archive(&mut out, &found(&refs), &CancellationToken::new()).unwrap();
    assert_eq!(done.tar_bytes, out.len() as u64);
    assert!(done.changed.is_empty());
    assert_eq!(done.entries.len(), sizes.len() + 1);
    let mut tar = tar::Archive::new(&out[..]);
    let mut seen = 0;
    for (entry, listed) in tar.entries().unwrap().zip(&done.entries) {
        let mut entry = entry.unwrap();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        if listed.kind != super::Kind::File {
            continue;
        }
        let disk = std::fs::read(Path::new("/").join(&listed.path)).unwrap();
        assert_eq!(data, disk, "{}", listed.path);
        assert_eq!(
            listed.sha256.as_deref(),
            Some(&*hex(&Sha256::digest(&disk)))
        );
        seen += 1;
    }
    assert_eq!(seen, sizes.len());
}

#[test]
fn a_file_replaced_after_the_walk_is_listed_as_changed_and_hashed_as_read() {
    let dir = tempfile::tempdir().unwrap();
    let paths = tree(dir.path(), &[CHUNK + 5, 100]);
    let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
    let walked = found(&refs);
    let new = bytes(2 * CHUNK + 3, 99);
    let tmp = dir.path().join("tmp");
    std::fs::write(&tmp, &new).unwrap();
    std::fs::rename(&tmp, &paths[1]).unwrap();
    let mut out = Vec::new();
    let done = archive(&mut out, &walked, &CancellationToken::new()).unwrap();
    let rel = paths[1].to_str().unwrap().trim_start_matches('/');
    assert_eq!(done.changed, vec![rel.to_owned()]);
    let entry = done.entries.iter().find(|e| e.path == rel).unwrap();
    assert_eq!(entry.size, new.len() as u64);
    assert_eq!(entry.sha256.as_deref(), Some(&*hex(&Sha256::digest(&new))));
}

/// Takes `limit` bytes, then cancels `cancel` (when given) or fails like a full disk.
struct Output<'a> {
    taken: usize,
    limit: usize,
    cancel: Option<&'a CancellationToken>,
}

impl Write for Output<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.taken >= self.limit {
            match self.cancel {
                Some(c) => c.cancel(),
                None => return Err(io::Error::other("no space left (test)")),
            }
        }
        self.taken += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_cancel_mid_archive_stops_it_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let paths = tree(dir.path(), &[8 * CHUNK; 6]);
    let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
    let cancel = CancellationToken::new();
    let mut out = Output {
        taken: 0,
        limit: 2 * CHUNK,
        cancel: Some(&cancel),
    };
    let err = archive(&mut out, &found(&refs), &cancel).err().unwrap();
    assert_eq!(err.to_string(), "cancelled");
    assert!(out.taken < 40 * CHUNK, "it went on: {} bytes", out.taken);
}

#[test]
fn a_failing_output_stops_every_stage_and_is_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let paths = tree(dir.path(), &[8 * CHUNK; 6]);
    let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
    let mut out = Output {
        taken: 0,
        limit: CHUNK,
        cancel: None,
    };
    let err = archive(&mut out, &found(&refs), &CancellationToken::new())
        .err()
        .unwrap();
    assert_eq!(err.to_string(), "no space left (test)");
}
