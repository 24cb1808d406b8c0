//! Unpacking a stored base backup (`base.tar[.zst][.age]`) into a folder as a plain data
//! directory, hashing every stored byte on the way: the full verification and the
//! point-in-time restore and drill ([`crate::restore::pitr`]) share it.

use std::path::{Path, PathBuf};

use super::super::stream;
use super::super::verify::load_identities;
use crate::jobs::backup::manifest::Manifest;

/// What unpacking found: the stored file's bytes, and why decoding or untarring stopped.
pub struct Unpacked {
    pub read: stream::ReadBack,
    pub untar_error: Option<std::io::Error>,
}

/// Reads `from` (hashing every byte), decrypts and decodes it into a pipe, and untars the
/// other end into `into`, on two threads.
pub fn unpack(
    from: &Path,
    zstd: bool,
    identity: Option<PathBuf>,
    into: &Path,
) -> std::io::Result<Unpacked> {
    let ids = identity
        .map(|p| load_identities(&p))
        .transpose()
        .map_err(std::io::Error::other)?;
    let (reader, mut writer) = std::io::pipe()?;
    let into = into.to_owned();
    let untar = std::thread::spawn(move || -> std::io::Result<()> {
        let mut archive = tar::Archive::new(reader);
        archive.set_preserve_permissions(false);
        archive.unpack(&into)?;
        // Whatever follows the trailer is read too, so the writer never meets a closed pipe.
        std::io::copy(&mut archive.into_inner(), &mut std::io::sink())?;
        Ok(())
    });
    let read = stream::read_stream(from, zstd, ids.as_deref(), Some(&mut writer));
    drop(writer);
    let untar_error = match untar.join() {
        Ok(r) => r.err(),
        Err(_) => Some(std::io::Error::other("the untar thread panicked")),
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
) -> Result<(), String> {
    let file = manifest
        .files
        .first()
        .ok_or_else(|| format!("{}: the manifest lists no file", manifest.id))?;
    let zstd = matches!(
        manifest.compression,
        crate::config::Compression::Zstd { .. }
    );
    let unpacked = unpack(&folder.join(&file.path), zstd, identity, into)
        .map_err(|e| format!("unpacking {}/{}: {e}", manifest.id, file.path))?;
    let w = &unpacked.read.written;
    if w.sha256 != file.sha256 || w.bytes != file.bytes {
        return Err(format!(
            "{}/{}: checksum mismatch ({} bytes, sha256 {}; the manifest says {} bytes, {})",
            manifest.id, file.path, w.bytes, w.sha256, file.bytes, file.sha256
        ));
    }
    if let Some(e) = unpacked.read.decode_error.or(unpacked.untar_error) {
        return Err(format!("unpacking {}/{}: {e}", manifest.id, file.path));
    }
    Ok(())
}
