//! Compressing one rotated file (blocking: run it with `spawn_blocking`).
//!
//! Streams `NAME` into `.NAME.zst.atpred-tmp` (created `O_EXCL | O_NOFOLLOW`, same owner and
//! mode), fsyncs it, renames it to `NAME.zst` without replacing anything, fsyncs the directory,
//! and only then may the caller remove `NAME`. A crash leaves either the temp (removed by the
//! next plan) or both files (the uncompressed twin is removed by the next plan).

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::files::{self, Owner};
use super::names::Ext;
use super::plan::TEMP_SUFFIX;
use crate::config::Compression;

/// zstd's work unit; small jobs keep memory low with the same speed (see backup::stream).
const ZSTD_JOB_SIZE: u32 = 2 << 20;
const READ_BUFFER: usize = 1 << 20;

/// The suffix a compression adds.
pub fn ext(c: Compression) -> Ext {
    match c {
        Compression::None => Ext::None,
        Compression::Zstd { .. } => Ext::Zst,
        Compression::Gzip { .. } => Ext::Gz,
    }
}

/// Writes `NAME<ext>` from `NAME` in `dir` and returns its size; `NAME` stays for the caller to
/// remove. `pause` is the test hook, called once the temp file is complete.
pub fn compress(dir: &Path, name: &str, how: Compression, pause: impl Fn()) -> io::Result<u64> {
    let to = format!("{name}{}", ext(how).suffix());
    let temp = format!(".{to}{TEMP_SUFFIX}");
    let src = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(dir.join(name))?;
    let meta = src.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other(format!("{name} is not a regular file")));
    }
    let owner = Owner::of(&meta).in_dir(dir)?.ok_or_else(|| {
        io::Error::other(format!(
            "{name}: atpred cannot give a compressed copy its owner and group"
        ))
    })?;
    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(dir.join(&temp))?;
    let result = (|| {
        owner.apply(&out)?;
        let out = encode(src, out, how)?;
        out.sync_all()?;
        let size = out.metadata()?.size();
        pause();
        files::rename_noreplace(dir, &temp, &to)?;
        crate::publish::sync_dir(dir)?;
        Ok(size)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(dir.join(&temp));
    }
    result
}

fn encode(src: File, out: File, how: Compression) -> io::Result<File> {
    let mut input = BufReader::with_capacity(READ_BUFFER, src);
    let writer = io::BufWriter::with_capacity(READ_BUFFER, out);
    let mut writer = match how {
        Compression::None => {
            let mut w = writer;
            io::copy(&mut input, &mut w)?;
            w
        }
        Compression::Zstd { level } => {
            let mut z = zstd::stream::write::Encoder::new(writer, level)?;
            z.multithread(threads())?;
            z.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB_SIZE))?;
            z.include_checksum(true)?;
            io::copy(&mut input, &mut z)?;
            z.finish()?
        }
        Compression::Gzip { level } => {
            let mut g =
                flate2::write::GzEncoder::new(writer, flate2::Compression::new(level as u32));
            io::copy(&mut input, &mut g)?;
            g.finish()?
        }
    };
    writer.flush()?;
    writer.into_inner().map_err(|e| e.into_error())
}

fn threads() -> u32 {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trips_with_zstd_and_gzip_keeping_the_mode() {
        let d = tempfile::tempdir().unwrap();
        let text: Vec<u8> = (0..50_000)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        for (how, ext) in [
            (Compression::Zstd { level: 3 }, ".zst"),
            (Compression::Gzip { level: 6 }, ".gz"),
        ] {
            let name = format!("app.log{ext}.src");
            std::fs::write(d.path().join(&name), &text).unwrap();
            std::fs::set_permissions(d.path().join(&name), std::fs::Permissions::from_mode(0o640))
                .unwrap();
            compress(d.path(), &name, how, || {}).unwrap();
            let out = d.path().join(format!("{name}{ext}"));
            let mut back = Vec::new();
            let f = File::open(&out).unwrap();
            match how {
                Compression::Gzip { .. } => {
                    flate2::read::GzDecoder::new(f)
                        .read_to_end(&mut back)
                        .unwrap();
                }
                _ => {
                    zstd::stream::read::Decoder::new(f)
                        .unwrap()
                        .read_to_end(&mut back)
                        .unwrap();
                }
            }
            assert_eq!(back, text);
            let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o640);
        }
    }

    #[test]
    fn an_existing_target_is_never_replaced() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.1"), b"x").unwrap();
        std::fs::write(d.path().join("a.1.zst"), b"other").unwrap();
        assert!(compress(d.path(), "a.1", Compression::Zstd { level: 1 }, || {}).is_err());
        assert_eq!(std::fs::read(d.path().join("a.1.zst")).unwrap(), b"other");
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(left.len(), 2, "the temp file is removed");
    }
}
