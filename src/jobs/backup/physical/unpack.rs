//! Unpacking a stored base backup (`base.tar[.zst][.age]`) into a folder as a plain data
//! directory, hashing every stored byte on the way: the full verification and the
//! point-in-time restore and drill ([`crate::restore::pitr`]) share it.
//!
//! Two threads: this one reads the file (hashing every byte to its end, whatever happens
//! later), decrypts and decodes it into 1 MiB buffers ([`chunks`](super::chunks)); the other
//! untars them ([`untar`](super::untar)). The caller decides from the hash and both threads'
//! outcomes whether the unpacked folder is good ([`unpack_checked`]).

use std::io;
use std::path::{Path, PathBuf};

use super::super::stream;
use super::super::verify::load_identities;
use super::chunks;
pub use super::untar::Writeback;
use crate::jobs::backup::manifest::{FileSum, Manifest};

/// What unpacking found: the stored file's bytes, and why decoding or untarring stopped.
pub struct Unpacked {
    pub read: stream::ReadBack,
    pub untar_error: Option<io::Error>,
}

impl Unpacked {
    /// Why the unpacked folder is incomplete, if it is: the first cause. When the untar
    /// stops, the decoder only learns that nobody reads any more; when the decoder stops, the
    /// untar only learns that the stream ended early.
    pub fn failure(self) -> Option<io::Error> {
        match (self.read.decode_error, self.untar_error) {
            (Some(d), Some(u)) if d.kind() == io::ErrorKind::BrokenPipe => Some(u),
            (Some(d), _) => Some(d),
            (None, u) => u,
        }
    }
}

/// Reads `from` (hashing every byte), decrypts and decodes it, and untars it into `into`, on
/// two threads.
pub fn unpack(
    from: &Path,
    zstd: bool,
    identity: Option<PathBuf>,
    into: &Path,
    writeback: Writeback,
) -> io::Result<Unpacked> {
    let ids = identity
        .map(|p| load_identities(&p))
        .transpose()
        .map_err(io::Error::other)?;
    let input = std::fs::File::open(from)?;
    let (mut writer, reader) = chunks::channel();
    let into = into.to_owned();
    let untar = std::thread::spawn(move || super::untar::untar(reader, &into, writeback));
    let read = stream::read_with(input, zstd, ids.as_deref(), |decoded| writer.pour(decoded)).map(
        |(written, fed)| stream::ReadBack {
            written,
            decode_error: fed.err(),
        },
    );
    drop(writer);
    let untar_error = match untar.join() {
        Ok(r) => r.err(),
        Err(_) => Some(io::Error::other("the untar thread panicked")),
    };
    Ok(Unpacked {
        read: read?,
        untar_error,
    })
}

/// Unpacks the base backup of `manifest` in `folder` into `into` (which exists), decrypting
/// with `identity`; an error names what did not match or could not be read.
pub fn unpack_checked(
    folder: &Path,
    manifest: &Manifest,
    identity: Option<PathBuf>,
    into: &Path,
    writeback: Writeback,
) -> Result<(), String> {
    let file = manifest
        .files
        .first()
        .ok_or_else(|| format!("{}: the manifest lists no file", manifest.id))?;
    let zstd = matches!(
        manifest.compression,
        crate::config::Compression::Zstd { .. }
    );
    unpack_file(folder, &manifest.id, file, zstd, identity, into, writeback)
}

/// [`unpack_checked`] of the stored `file` of backup `id`: good only when every stored byte
/// hashed as the manifest says and both threads finished.
fn unpack_file(
    folder: &Path,
    id: &str,
    file: &FileSum,
    zstd: bool,
    identity: Option<PathBuf>,
    into: &Path,
    writeback: Writeback,
) -> Result<(), String> {
    let unpacked = unpack(&folder.join(&file.path), zstd, identity, into, writeback)
        .map_err(|e| format!("unpacking {id}/{}: {e}", file.path))?;
    let w = &unpacked.read.written;
    if w.sha256 != file.sha256 || w.bytes != file.bytes {
        return Err(format!(
            "{id}/{}: checksum mismatch ({} bytes, sha256 {}; the manifest says {} bytes, {})",
            file.path, w.bytes, w.sha256, file.bytes, file.sha256
        ));
    }
    if let Some(e) = unpacked.failure() {
        return Err(format!("unpacking {id}/{}: {e}", file.path));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    use super::*;

    /// A base-backup-like tar.zst in `dir`: a folder, small files, and one file of 40 MiB (past
    /// the writeback threshold); its manifest line.
    fn stored(dir: &Path) -> (FileSum, Vec<(String, Vec<u8>)>) {
        let mut files = vec![
            ("PG_VERSION".to_owned(), b"15\n".to_vec()),
            ("global/pg_control".to_owned(), vec![7u8; 8192]),
        ];
        let big: Vec<u8> = (0..40u32 << 20).map(|i| (i / 4096 % 251) as u8).collect();
        files.push(("base/1/16384".to_owned(), big));
        let mut tar = tar::Builder::new(Vec::new());
        let mut d = tar::Header::new_gnu();
        d.set_entry_type(tar::EntryType::Directory);
        d.set_mode(0o700);
        d.set_size(0);
        tar.append_data(&mut d, "global", io::empty()).unwrap();
        for (name, data) in &files {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o600);
            h.set_size(data.len() as u64);
            tar.append_data(&mut h, name, &data[..]).unwrap();
        }
        let tar = tar.into_inner().unwrap();
        let layers = stream::Layers {
            zstd_level: Some(1),
            recipients: vec![],
        };
        let path = dir.join("base.tar.zst");
        let w =
            stream::write_stream(&tar[..], &path, &layers, &Arc::new(AtomicU64::new(0))).unwrap();
        let sum = FileSum {
            path: "base.tar.zst".into(),
            bytes: w.bytes,
            sha256: w.sha256,
        };
        (sum, files)
    }

    fn into(dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::create_dir(&p).unwrap();
        p
    }

    #[test]
    fn a_good_archive_unpacks_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (sum, files) = stored(dir.path());
        let out = into(dir.path(), "good");
        unpack_file(dir.path(), "b", &sum, true, None, &out, Writeback::Start).unwrap();
        for (name, data) in files {
            assert!(std::fs::read(out.join(&name)).unwrap() == data, "{name}");
        }
    }

    /// The error of unpacking `sum` of backup `b` in `dir` into a new folder there.
    fn refused(dir: &Path, sum: &FileSum) -> String {
        unpack_file(dir, "b", sum, true, None, &into(dir, "x"), Writeback::Start).unwrap_err()
    }

    #[test]
    fn a_damaged_byte_is_a_checksum_mismatch_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (sum, _) = stored(dir.path());
        let path = dir.path().join(&sum.path);
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x55;
        std::fs::write(&path, bytes).unwrap();
        let err = refused(dir.path(), &sum);
        assert!(err.contains("b/base.tar.zst: checksum mismatch"), "{err}");
    }

    #[test]
    fn a_stream_that_decodes_fine_but_hashes_differently_is_refused() {
        // The hash is taken on the reading thread while the other one untars: a file whose
        // bytes all decode must still be held against the manifest's checksum.
        let dir = tempfile::tempdir().unwrap();
        let (mut sum, _) = stored(dir.path());
        sum.sha256 = "0".repeat(64);
        let err = refused(dir.path(), &sum);
        assert!(err.contains("checksum mismatch"), "{err}");
    }

    #[test]
    fn a_truncated_stream_fails_even_with_a_matching_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let (sum, _) = stored(dir.path());
        let path = dir.path().join(&sum.path);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() * 2 / 3]).unwrap();
        // A manifest that agrees with the cut file: only decoding and untarring can tell.
        let cut = stream::hash_file(&path).unwrap();
        let sum = FileSum {
            bytes: cut.bytes,
            sha256: cut.sha256,
            ..sum
        };
        let err = refused(dir.path(), &sum);
        assert!(err.starts_with("unpacking b/base.tar.zst: "), "{err}");
    }

    #[test]
    fn an_entry_leaving_the_folder_is_named_not_hidden_behind_the_decoder() {
        // The untar stops at the first entry; the decoder then only meets a closed channel.
        // The error reported is the untar's, and nothing is written outside.
        let dir = tempfile::tempdir().unwrap();
        let mut h = tar::Header::new_old();
        let name = b"../evil";
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o600);
        h.set_size(16 << 20);
        h.set_cksum();
        let mut tar = tar::Builder::new(Vec::new());
        tar.append(&h, &vec![1u8; 16 << 20][..]).unwrap();
        let tar = tar.into_inner().unwrap();
        let path = dir.path().join("evil.tar");
        std::fs::write(&path, &tar).unwrap();
        let out = into(dir.path(), "x");
        let unpacked = unpack(&path, false, None, &out, Writeback::Start).unwrap();
        assert_eq!(unpacked.read.written.bytes, tar.len() as u64);
        let err = unpacked.failure().unwrap().to_string();
        assert!(err.contains("../evil") && err.contains("refusing"), "{err}");
        assert!(!dir.path().join("evil").exists());
    }

    #[test]
    fn a_symlink_from_an_earlier_entry_leads_no_file_or_folder_outside() {
        // An entry `link` -> an outside folder, then `link/made/file`: the folders above the
        // file are made one name at a time beneath the root, so nothing appears outside.
        let dir = tempfile::tempdir().unwrap();
        let outside = into(dir.path(), "outside");
        let mut tar = tar::Builder::new(Vec::new());
        let mut l = tar::Header::new_gnu();
        l.set_entry_type(tar::EntryType::Symlink);
        l.set_size(0);
        l.set_mode(0o777);
        tar.append_link(&mut l, "link", &outside).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o600);
        h.set_size(4);
        tar.append_data(&mut h, "link/made/file", &b"evil"[..])
            .unwrap();
        let tar = tar.into_inner().unwrap();
        let path = dir.path().join("link.tar");
        std::fs::write(&path, &tar).unwrap();
        let out = into(dir.path(), "x");
        let unpacked = unpack(&path, false, None, &out, Writeback::Start).unwrap();
        let err = unpacked.failure().unwrap().to_string();
        assert!(err.contains("link/made"), "{err}");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "{err}");
    }
}
