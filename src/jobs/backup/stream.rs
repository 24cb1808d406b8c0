//! The byte pipelines of a backup, run on blocking threads with bounded buffers, so memory
//! stays flat whatever the database size.
//!
//! Writing: pg_dump's stdout -> [zstd] -> [age] -> file, hashing (SHA-256) and counting the
//! bytes that reach the disk on the way — the file is never written and then re-read to hash.
//! Reading (verification): file -> hash -> [age decrypt] -> [zstd decode] -> a sink such as
//! pg_restore's stdin, so one pass both re-checks the checksum and feeds pg_restore.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use super::writeback::{Kicking, Syncer};

const BUF: usize = 1 << 20;
const ZSTD_JOB_SIZE: u32 = 2 << 20;

/// Compression and encryption of the stream.
#[derive(Clone)]
pub struct Layers {
    pub zstd_level: Option<i32>,
    pub recipients: Vec<age::x25519::Recipient>,
}

/// What reached the disk.
#[derive(Debug, Clone)]
pub struct Written {
    pub bytes: u64,
    pub sha256: String,
}

/// A writer that hashes and counts what passes through it.
pub struct Hashing<W> {
    pub inner: W,
    pub hasher: Sha256,
    pub bytes: u64,
}

impl<W> Hashing<W> {
    pub fn new(inner: W) -> Hashing<W> {
        Hashing {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Takes a pipe from tokio (non-blocking) for use on a blocking thread.
pub fn blocking_pipe(fd: OwnedFd) -> io::Result<File> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL).map_err(io::Error::from)?);
    fcntl(&fd, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK)).map_err(io::Error::from)?;
    Ok(File::from(fd))
}

/// Streams `input` through `layers` into a new file at `path` (mode 0600, must not exist),
/// counting the input bytes in `read`. The file is fsynced before this returns.
pub fn write_stream(
    mut input: impl Read,
    path: &Path,
    layers: &Layers,
    read: &Arc<AtomicU64>,
) -> io::Result<Written> {
    write_with(path, layers, |out| {
        copy_counting(&mut input, &mut *out, read)
    })
    .map(|(w, ())| w)
}

/// Has `produce` write the plain stream (a tar, say) through `layers` into a new file at
/// `path` (mode 0600, must not exist), hashing what reaches the disk. Writeback starts every
/// 32 MiB ([`super::writeback`]), so the disk writes while the CPU compresses; the file is
/// fsynced before this returns.
pub fn write_with<T>(
    path: &Path,
    layers: &Layers,
    produce: impl FnOnce(&mut dyn Write) -> io::Result<T>,
) -> io::Result<(Written, T)> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let syncer = Syncer::new();
    let encoded = encode(Kicking::new(file, Some(&syncer)), layers, produce)
        .map(|(out, written, produced)| (out.into_file(), written, produced));
    let synced = syncer.finish();
    let (file, written, produced) = encoded?;
    synced?;
    file.sync_all()?;
    Ok((written, produced))
}

/// The layers of [`write_with`] over `out`: what `produce` wrote, hashed as it reached `out`.
fn encode<W: Write, T>(
    out: W,
    layers: &Layers,
    produce: impl FnOnce(&mut dyn Write) -> io::Result<T>,
) -> io::Result<(W, Written, T)> {
    let mut sink = Hashing::new(io::BufWriter::with_capacity(BUF, out));
    let produced = {
        let mut encrypted: Box<dyn FinishWrite + '_> = if layers.recipients.is_empty() {
            Box::new(Plain(&mut sink))
        } else {
            let recipients = layers.recipients.iter().map(|r| r as &dyn age::Recipient);
            let encryptor =
                age::Encryptor::with_recipients(recipients).map_err(io::Error::other)?;
            Box::new(encryptor.wrap_output(&mut sink)?)
        };
        let produced = match layers.zstd_level {
            Some(level) => {
                let mut z = zstd::stream::write::Encoder::new(&mut encrypted, level)?;
                z.multithread(zstd_threads())?;
                // zstd's default job size at level 3 is 8 MiB, and with two workers it keeps
                // several jobs in flight (about 50 MiB resident); 2 MiB jobs keep it near 17 MiB
                // at the same speed, for a ratio a fraction of a percent worse.
                z.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB_SIZE))?;
                // A frame checksum lets a plain `zstd -dc | pg_restore` notice damage too.
                z.include_checksum(true)?;
                let produced = produce(&mut z)?;
                z.finish()?;
                produced
            }
            None => produce(&mut encrypted)?,
        };
        encrypted.finish_box()?;
        produced
    };
    sink.flush()?;
    let Hashing {
        inner,
        hasher,
        bytes,
    } = sink;
    let out = inner.into_inner().map_err(|e| e.into_error())?;
    let written = Written {
        bytes,
        sha256: hex(&hasher.finalize()),
    };
    Ok((out, written, produced))
}

/// What reading a backup back found.
pub struct ReadBack {
    /// Hash and size of the whole file, always read to its end.
    pub written: Written,
    /// Why decrypting, decoding or feeding the sink stopped, if it did.
    pub decode_error: Option<io::Error>,
}

/// Reads `path`, hashing every byte, and writes the decoded stream (decrypted with `identities`
/// when given, zstd-decoded when `zstd`) into `sink`. The file is hashed to its end even when
/// decoding fails, so damage is reported as a checksum mismatch, not only as a decoder error.
/// With `sink = None` only the checksum is computed.
pub fn read_stream(
    path: &Path,
    zstd: bool,
    identities: Option<&[Box<dyn age::Identity>]>,
    sink: Option<&mut dyn Write>,
) -> io::Result<ReadBack> {
    read_from(File::open(path)?, zstd, identities, sink)
}

/// [`read_stream`] over any byte source (an offsite object, for a restore from a copy): the
/// same hashing to the end, decrypting and decoding.
pub fn read_from(
    input: impl Read,
    zstd: bool,
    identities: Option<&[Box<dyn age::Identity>]>,
    sink: Option<&mut dyn Write>,
) -> io::Result<ReadBack> {
    let (written, fed) = match sink {
        None => read_with(input, false, None, |_| Ok(()))?,
        Some(sink) => read_with(input, zstd, identities, |decoded| {
            io::copy(decoded, sink)?;
            sink.flush()
        })?,
    };
    Ok(ReadBack {
        written,
        decode_error: fed.err(),
    })
}

/// Reads `input`, hashing every byte, and hands the decoded stream (decrypted with
/// `identities` when given, zstd-decoded when `zstd`) to `consume` (a tar reader, say). The
/// input is hashed to its end whatever `consume` did, so damage is reported as a checksum
/// mismatch, not only as a decoder error; `consume`'s own outcome is the second value.
pub fn read_with<T>(
    input: impl Read,
    zstd: bool,
    identities: Option<&[Box<dyn age::Identity>]>,
    consume: impl FnOnce(&mut dyn Read) -> io::Result<T>,
) -> io::Result<(Written, io::Result<T>)> {
    let mut hashing = HashingReader {
        inner: BufReader::with_capacity(BUF, input),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let consumed = decode(&mut hashing, zstd, identities, consume);
    // Whatever the decoders left unread still counts for the checksum.
    io::copy(&mut hashing, &mut io::sink())?;
    let written = Written {
        bytes: hashing.bytes,
        sha256: hex(&hashing.hasher.finalize()),
    };
    Ok((written, consumed))
}

fn decode<T>(
    input: &mut impl Read,
    zstd: bool,
    identities: Option<&[Box<dyn age::Identity>]>,
    consume: impl FnOnce(&mut dyn Read) -> io::Result<T>,
) -> io::Result<T> {
    let decrypted: Box<dyn Read + '_> = match identities {
        Some(ids) => {
            let decryptor = age::Decryptor::new(input).map_err(io::Error::other)?;
            Box::new(
                decryptor
                    .decrypt(ids.iter().map(|i| i.as_ref()))
                    .map_err(io::Error::other)?,
            )
        }
        None => Box::new(input),
    };
    let mut decoded: Box<dyn Read + '_> = if zstd {
        Box::new(zstd::stream::read::Decoder::new(decrypted)?)
    } else {
        decrypted
    };
    consume(&mut decoded)
}

/// SHA-256 and size of a file, read once.
pub fn hash_file(path: &Path) -> io::Result<Written> {
    read_stream(path, false, None, None).map(|r| r.written)
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

fn copy_counting(input: &mut impl Read, out: &mut dyn Write, read: &AtomicU64) -> io::Result<()> {
    let mut buf = vec![0u8; BUF];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write_all(&buf[..n])?;
        read.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Writers that need an explicit end (age writes its final chunk on finish).
trait FinishWrite: Write {
    fn finish_box(self: Box<Self>) -> io::Result<()>;
}

struct Plain<'a, W: Write>(&'a mut W);

impl<W: Write> Write for Plain<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> FinishWrite for Plain<'_, W> {
    fn finish_box(self: Box<Self>) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> FinishWrite for age::stream::StreamWriter<W> {
    fn finish_box(self: Box<Self>) -> io::Result<()> {
        (*self).finish().map(|_| ())
    }
}

fn zstd_threads() -> u32 {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8) as u32)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_every_layer() {
        let dir = tempfile::tempdir().unwrap();
        let identity = age::x25519::Identity::generate();
        let data: Vec<u8> = (0..3_000_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for (zstd, encrypt) in [(false, false), (true, false), (false, true), (true, true)] {
            let path = dir.path().join(format!("b-{zstd}-{encrypt}"));
            let layers = Layers {
                zstd_level: zstd.then_some(3),
                recipients: if encrypt {
                    vec![identity.to_public()]
                } else {
                    vec![]
                },
            };
            let read = Arc::new(AtomicU64::new(0));
            let written = write_stream(&data[..], &path, &layers, &read).unwrap();
            assert_eq!(read.load(Ordering::Relaxed), data.len() as u64);
            assert_eq!(written.bytes, std::fs::metadata(&path).unwrap().len());
            let ids: Vec<Box<dyn age::Identity>> = vec![Box::new(identity.clone())];
            let mut out = Vec::new();
            let again =
                read_stream(&path, zstd, encrypt.then_some(&ids[..]), Some(&mut out)).unwrap();
            assert!(again.decode_error.is_none());
            assert_eq!(again.written.sha256, written.sha256);
            assert_eq!(out, data, "zstd={zstd} encrypt={encrypt}");
            assert_eq!(hash_file(&path).unwrap().sha256, written.sha256);
        }
    }
}
