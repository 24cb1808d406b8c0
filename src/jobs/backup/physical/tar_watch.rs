//! Watching pg_basebackup's tar stream as it passes on its way to zstd and age: the member
//! boundaries, and the bytes of the few small members the manifest needs (`backup_label`,
//! `backup_manifest`), without buffering the archive or reading it back.
//!
//! pg_basebackup writes ustar headers (names up to 99 bytes, sizes in octal, or base-256 past
//! 8 GiB), each member padded to 512 bytes, two zero blocks at the end.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};

const BLOCK: u64 = 512;
/// A backup_manifest lists every file of the cluster (about 150 bytes each).
const MAX_CAPTURE: u64 = 256 << 20;

/// The members whose content the watcher keeps.
pub const WANTED: &[&str] = &["backup_label", "backup_manifest", "tablespace_map"];

/// The state of the watch; see the module docs.
#[derive(Default)]
pub struct TarWatch {
    header: Vec<u8>,
    /// Data bytes left in the current member.
    remaining: u64,
    /// Padding bytes left after it.
    padding: u64,
    capture: Option<(String, Vec<u8>)>,
    /// The content of the [`WANTED`] members seen so far.
    pub captured: BTreeMap<String, Vec<u8>>,
    /// Members seen (files, folders, links).
    pub members: u64,
    /// Bytes of the stream seen.
    pub bytes: u64,
    /// Zero blocks seen (two end the archive).
    pub zero_blocks: u32,
    /// Why the stream is not a tar archive as pg_basebackup writes it.
    pub error: Option<String>,
}

impl TarWatch {
    /// Takes the next bytes of the stream.
    pub fn feed(&mut self, mut buf: &[u8]) {
        self.bytes += buf.len() as u64;
        while !buf.is_empty() && self.error.is_none() {
            if self.remaining > 0 {
                let n = take(self.remaining, buf.len());
                if let Some((_, data)) = &mut self.capture {
                    data.extend_from_slice(&buf[..n]);
                }
                self.remaining -= n as u64;
                buf = &buf[n..];
                if self.remaining == 0 {
                    self.end_capture();
                }
            } else if self.padding > 0 {
                let n = take(self.padding, buf.len());
                self.padding -= n as u64;
                buf = &buf[n..];
            } else {
                let n = take(BLOCK - self.header.len() as u64, buf.len());
                self.header.extend_from_slice(&buf[..n]);
                buf = &buf[n..];
                if self.header.len() as u64 == BLOCK {
                    let header = std::mem::take(&mut self.header);
                    self.header(&header);
                }
            }
        }
    }

    /// Whether the stream ended where an archive ends (after its trailer, nothing cut short).
    pub fn complete(&self) -> bool {
        self.error.is_none()
            && self.zero_blocks >= 2
            && self.remaining == 0
            && self.padding == 0
            && self.header.is_empty()
    }

    fn header(&mut self, h: &[u8]) {
        if h.iter().all(|b| *b == 0) {
            self.zero_blocks += 1;
            return;
        }
        let name = member_name(h);
        let Some(size) = member_size(&h[124..136]) else {
            self.error = Some(format!("member {name:?}: unreadable size field"));
            return;
        };
        self.members += 1;
        self.remaining = size;
        self.padding = (BLOCK - size % BLOCK) % BLOCK;
        let regular = matches!(h[156], b'0' | 0);
        if regular && WANTED.contains(&name.as_str()) {
            if size > MAX_CAPTURE {
                self.error = Some(format!("{name} is {size} bytes, more than expected"));
                return;
            }
            self.capture = Some((name, Vec::with_capacity(size as usize)));
            if size == 0 {
                self.end_capture();
            }
        }
    }

    fn end_capture(&mut self) {
        if let Some((name, data)) = self.capture.take() {
            self.captured.insert(name, data);
        }
    }
}

fn take(left: u64, available: usize) -> usize {
    usize::try_from(left).map_or(available, |l| l.min(available))
}

/// `prefix/name` of a ustar header (just `name` when there is no prefix).
fn member_name(h: &[u8]) -> String {
    let field = |b: &[u8]| {
        let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    };
    let name = field(&h[0..100]);
    let prefix = if &h[257..262] == b"ustar" {
        field(&h[345..500])
    } else {
        String::new()
    };
    if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    }
}

/// The size field: octal digits, or base-256 (first byte 0x80) for large members.
fn member_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut n: u64 = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            n = n.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        return Some(n);
    }
    let text: String = field
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as char)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

/// A reader that shows every byte it passes to a shared [`TarWatch`].
pub struct Watching<R> {
    pub inner: R,
    pub watch: Arc<Mutex<TarWatch>>,
}

impl<R: Read> Read for Watching<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut watch = self
            .watch
            .lock()
            .map_err(|_| io::Error::other("the tar watch was poisoned"))?;
        watch.feed(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, size: u64, kind: u8) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let size = format!("{size:011o}");
        h[124..135].copy_from_slice(size.as_bytes());
        h[156] = kind;
        h[257..262].copy_from_slice(b"ustar");
        h
    }

    fn member(out: &mut Vec<u8>, name: &str, data: &[u8]) {
        out.extend(header(name, data.len() as u64, b'0'));
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }

    fn archive() -> Vec<u8> {
        let mut a = Vec::new();
        a.extend(header("base", 0, b'5'));
        member(&mut a, "backup_label", b"START WAL LOCATION: 0/2000028\n");
        member(&mut a, "base/1/1234", &vec![7u8; 9000]);
        member(&mut a, "empty", b"");
        member(&mut a, "backup_manifest", &vec![b'{'; 1300]);
        a.extend(vec![0u8; 1024]);
        a
    }

    #[test]
    fn finds_members_whatever_the_chunking() {
        let a = archive();
        for chunk in [1, 7, 511, 512, 513, 4096, a.len()] {
            let mut w = TarWatch::default();
            for piece in a.chunks(chunk) {
                w.feed(piece);
            }
            assert!(w.complete(), "chunk {chunk}");
            assert_eq!(w.members, 5, "chunk {chunk}");
            assert_eq!(
                w.captured["backup_label"],
                b"START WAL LOCATION: 0/2000028\n"
            );
            assert_eq!(w.captured["backup_manifest"].len(), 1300);
            assert!(!w.captured.contains_key("base/1/1234"));
        }
    }

    #[test]
    fn a_cut_stream_is_not_complete() {
        let a = archive();
        let mut w = TarWatch::default();
        w.feed(&a[..a.len() - 600]);
        assert!(!w.complete());
        let mut w = TarWatch::default();
        w.feed(&a[..2000]);
        assert!(!w.complete());
    }

    #[test]
    fn reads_base_256_sizes() {
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[7] = 2; // 2 << 32
        assert_eq!(member_size(&f), Some(2 << 32));
        assert_eq!(member_size(b"00000001750\0"), Some(0o1750));
        assert_eq!(member_size(b"0000000x750\0"), None);
    }
}
