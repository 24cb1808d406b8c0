//! Reading a custom archive as pg_dump wrote it to a pipe (`-Fc -Z0 | zstd`, as atpred takes
//! it): the header, the table of contents, then the data blocks in order. [`super::load`]
//! reads the TOC to know which blocks hold which table's rows (and the COPY statement for
//! them), and follows the blocks as they are unpacked.
//!
//! Written to a pipe, the archive has no data offsets in its TOC (pg_dump cannot seek back to
//! fill them in); [`write_offsets`] does what pg_dump does when its output can seek, for the
//! blocks pg_restore still reads itself (large objects), so that `pg_restore -j` seeks to them
//! instead of scanning the archive one chunk header at a time.
//!
//! Only archive versions whose layout is known here (1.12 to 1.15) are read: [`read_toc`]
//! says [`Unsupported`] for any other, and the restore then leaves the whole archive to
//! pg_restore. pg_restore checks the block id at every offset it seeks to ("found unexpected
//! block ID"), so a wrong offset could fail a restore but never restore wrong data.

use std::fs::File;
use std::io::{self, BufRead, ErrorKind};
use std::os::unix::fs::{FileExt, OpenOptionsExt};

/// A block of a table's rows (COPY text, one chunk per row when not compressed).
pub const BLK_DATA: u8 = 1;
/// A block of large objects.
pub const BLK_BLOBS: u8 = 3;
const POS_SET: u8 = 2;

/// A version or layout this reader does not know: the archive is left to pg_restore.
#[derive(Debug)]
pub struct Unsupported(pub String);

/// One TOC entry, the fields a restore uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub dump_id: i64,
    /// It has a data block.
    pub had_dumper: bool,
    pub tag: String,
    /// "TABLE DATA", "SEQUENCE SET", "BLOBS", "ENCODING"...
    pub desc: String,
    pub namespace: Option<String>,
    pub defn: Option<String>,
    /// For TABLE DATA: `COPY schema.table (columns) FROM stdin;`.
    pub copy_stmt: Option<String>,
    /// The section pg_restore's `--section` puts it in: its own, or for an entry of none
    /// (comments, ACLs) the section of the entry before it, as pg_restore decides.
    pub section: Section,
    /// Where this entry's data offset field (a flag byte, then 8 bytes) is in the archive.
    pub offset_field: u64,
    /// The offset field already holds a position.
    pub offset_set: bool,
}

/// An archive section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    PreData,
    Data,
    PostData,
}

/// The table of contents and where the data blocks start.
#[derive(Debug, Clone)]
pub struct Toc {
    pub entries: Vec<Entry>,
    pub end: u64,
    int_size: u8,
}

impl Toc {
    pub fn entry(&self, dump_id: i64) -> Option<&Entry> {
        self.entries.iter().find(|e| e.dump_id == dump_id)
    }

    /// The archive's client encoding (its ENCODING entry: `SET client_encoding = 'UTF8';`).
    pub fn encoding(&self) -> Option<String> {
        let defn = self
            .entries
            .iter()
            .find(|e| e.desc == "ENCODING")?
            .defn
            .as_ref()?;
        let value = defn.split('\'').nth(1)?;
        let plain = !value.is_empty()
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        plain.then(|| value.to_owned())
    }

    /// A reader of the blocks from `inner`, positioned at `pos`.
    pub fn blocks<R: BufRead>(&self, inner: R, pos: u64) -> Reader<R> {
        Reader {
            inner,
            pos,
            int_size: self.int_size,
        }
    }
}

/// Reads an archive's fields, counting the bytes read.
pub struct Reader<R> {
    inner: R,
    pos: u64,
    int_size: u8,
}

impl<R: BufRead> Reader<R> {
    pub fn pos(&self) -> u64 {
        self.pos
    }

    fn byte(&mut self) -> io::Result<u8> {
        let mut b = [0u8];
        self.inner.read_exact(&mut b)?;
        self.pos += 1;
        Ok(b[0])
    }

    /// pg_dump's `ReadInt`: a sign byte, then `int_size` bytes, least significant first.
    fn int(&mut self) -> io::Result<i64> {
        let negative = self.byte()? != 0;
        let mut value: i64 = 0;
        for i in 0..self.int_size {
            value |= i64::from(self.byte()?) << (8 * u32::from(i));
        }
        Ok(if negative { -value } else { value })
    }

    /// pg_dump's `ReadStr`; `None` for a NULL string.
    fn bytes(&mut self) -> io::Result<Option<Vec<u8>>> {
        let len = self.int()?;
        if len < 0 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(io::Error::other)?;
        if len > MAX_STRING {
            return Err(bad("a TOC string longer than 1 GiB"));
        }
        let mut buf = vec![0u8; len];
        self.inner.read_exact(&mut buf)?;
        self.pos += buf.len() as u64;
        Ok(Some(buf))
    }

    fn string(&mut self) -> io::Result<Option<String>> {
        Ok(self
            .bytes()?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    fn skip(&mut self, mut n: u64) -> io::Result<()> {
        while n > 0 {
            let available = self.inner.fill_buf()?.len();
            if available == 0 {
                return Err(ErrorKind::UnexpectedEof.into());
            }
            let k = available.min(usize::try_from(n).unwrap_or(usize::MAX));
            self.inner.consume(k);
            self.pos += k as u64;
            n -= k as u64;
        }
        Ok(())
    }

    /// The next block's kind, dump id and position; `None` at the archive's end.
    pub fn next_block(&mut self) -> io::Result<Option<(u8, i64, u64)>> {
        let at = self.pos;
        let kind = match self.byte() {
            Ok(k) => k,
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        };
        if kind != BLK_DATA && kind != BLK_BLOBS {
            return Err(bad("an unknown block type"));
        }
        Ok(Some((kind, self.int()?, at)))
    }

    /// Skips the rest of a block whose header [`Self::next_block`] read.
    pub fn skip_block(&mut self, kind: u8) -> io::Result<()> {
        if kind == BLK_BLOBS {
            // Each large object: its oid, then its chunks; oid 0 ends the block.
            while self.int()? != 0 {
                while self.chunk_len()? != 0 {}
            }
            return Ok(());
        }
        while self.chunk_len()? != 0 {}
        Ok(())
    }

    /// Skips one chunk and returns its length (0: the block's end).
    fn chunk_len(&mut self) -> io::Result<u64> {
        let len = self.chunk_header()?;
        self.skip(len)?;
        Ok(len)
    }

    fn chunk_header(&mut self) -> io::Result<u64> {
        u64::try_from(self.int()?).map_err(|_| bad("a negative chunk length"))
    }

    /// Appends the next chunk of a data block to `buf`; `false` at the block's end.
    pub fn chunk_into(&mut self, buf: &mut Vec<u8>) -> io::Result<bool> {
        let len = self.chunk_header()?;
        if len == 0 {
            return Ok(false);
        }
        let len = usize::try_from(len).map_err(io::Error::other)?;
        let start = buf.len();
        buf.resize(start + len, 0);
        self.inner.read_exact(&mut buf[start..])?;
        self.pos += len as u64;
        Ok(true)
    }
}

#[cfg(test)]
impl<R> Reader<R> {
    /// A reader of bare blocks whose integers have `int_size` bytes.
    pub fn over(inner: R, int_size: u8) -> Self {
        Self {
            inner,
            pos: 0,
            int_size,
        }
    }
}

const MAX_STRING: usize = 1 << 30;

fn bad(what: &str) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, what.to_owned())
}

/// Reads the header and the table of contents from the archive's start. An archive version
/// not handled here is [`Unsupported`] (inside the `Ok`: it is not damage).
pub fn read_toc<R: BufRead>(inner: R) -> io::Result<Result<Toc, Unsupported>> {
    let mut r = Reader {
        inner,
        pos: 0,
        int_size: 4,
    };
    let mut magic = [0u8; 5];
    r.inner.read_exact(&mut magic)?;
    r.pos = 5;
    if &magic != b"PGDMP" {
        return Err(bad("not a custom archive"));
    }
    let version = (r.byte()?, r.byte()?, r.byte()?);
    if version.0 != 1 || !(12..=15).contains(&version.1) {
        return Ok(Err(Unsupported(format!(
            "archive version {}.{}",
            version.0, version.1
        ))));
    }
    r.int_size = r.byte()?;
    let off_size = r.byte()?;
    let _format = r.byte()?;
    if !(1..=8).contains(&r.int_size) || off_size != 8 {
        return Ok(Err(Unsupported(format!(
            "integers of {} and offsets of {off_size} bytes",
            r.int_size
        ))));
    }
    let compressed = if version.1 >= 15 {
        r.byte()? != 0 // compression algorithm, 0 = none
    } else {
        r.int()? != 0 // compression level
    };
    if compressed {
        return Ok(Err(Unsupported("compressed data blocks".into())));
    }
    for _ in 0..7 {
        r.int()?; // creation time
    }
    for _ in 0..3 {
        r.bytes()?; // database name, server and pg_dump versions
    }
    let count = r.int()?;
    let mut entries = Vec::new();
    let mut section = Section::PreData;
    for _ in 0..count {
        let dump_id = r.int()?;
        let had_dumper = r.int()? != 0;
        r.bytes()?; // tableoid
        r.bytes()?; // oid
        let tag = r.string()?.unwrap_or_default();
        let desc = r.string()?.unwrap_or_default();
        // pg_dump's teSection: 1 none, 2 pre-data, 3 data, 4 post-data.
        section = match r.int()? {
            2 => Section::PreData,
            3 => Section::Data,
            4 => Section::PostData,
            _ => section,
        };
        let defn = r.string()?;
        r.bytes()?; // dropStmt
        let copy_stmt = r.string()?;
        let namespace = r.string()?;
        r.bytes()?; // tablespace
        if version.1 >= 14 {
            r.bytes()?; // tableam
        }
        r.bytes()?; // owner
        r.bytes()?; // "false" (WITH OIDS)
        while r.bytes()?.is_some() {} // dependencies
        let offset_field = r.pos;
        let offset_set = r.byte()? == POS_SET;
        r.skip(8)?;
        entries.push(Entry {
            dump_id,
            had_dumper,
            tag,
            desc,
            namespace,
            defn,
            copy_stmt,
            section,
            offset_field,
            offset_set,
        });
    }
    Ok(Ok(Toc {
        entries,
        end: r.pos,
        int_size: r.int_size,
    }))
}

/// Reads the archive at `path` whole and writes every data block's position into its TOC
/// entry where it is not set yet; returns how many were written.
pub fn add_offsets(path: &std::path::Path) -> io::Result<Result<usize, Unsupported>> {
    let file = File::options()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    let mut inner = io::BufReader::with_capacity(1 << 20, &file);
    let toc = match read_toc(&mut inner)? {
        Ok(toc) => toc,
        Err(unsupported) => return Ok(Err(unsupported)),
    };
    let mut blocks = toc.blocks(inner, toc.end);
    let mut offsets = Vec::new();
    while let Some((kind, dump_id, at)) = blocks.next_block()? {
        if let Some(entry) = toc.entry(dump_id).filter(|e| !e.offset_set) {
            offsets.push((entry.offset_field, at));
        }
        blocks.skip_block(kind)?;
    }
    write_offsets(&file, &offsets)?;
    Ok(Ok(offsets.len()))
}

/// Writes each `(offset field, block position)` into the archive at `file`: pg_restore then
/// seeks to those blocks.
pub fn write_offsets(file: &File, offsets: &[(u64, u64)]) -> io::Result<()> {
    for &(field, at) in offsets {
        let mut bytes = [0u8; 9];
        bytes[0] = POS_SET;
        bytes[1..].copy_from_slice(&at.to_le_bytes());
        file.write_all_at(&bytes, field)?;
    }
    Ok(())
}
