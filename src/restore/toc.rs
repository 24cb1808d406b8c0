//! Data offsets for an unpacked custom archive, so that `pg_restore -j` can seek.
//!
//! pg_dump writes a custom archive to a pipe (as atpred takes it, `-Fc -Z0 | zstd`) without
//! the offsets of its data blocks in the table of contents: it cannot seek back to fill them
//! in. pg_restore then finds each table's block by scanning the archive from where that worker
//! last read, one chunk header per row, and `-j 2` ends up slower than one stream. Once the
//! archive is unpacked into a seekable file, [`add_offsets`] does what pg_dump does when its
//! output can seek: it reads the block headers once and writes each block's position into
//! its TOC entry's fixed-size offset field.
//!
//! Safe by construction: only archive versions whose layout is known here (1.12 to 1.15) are
//! touched, anything unexpected leaves the file as it was, and pg_restore checks the block id
//! at every offset it seeks to ("found unexpected block ID"), so a wrong offset can fail a
//! restore but never restore wrong data.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, ErrorKind, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

const BLK_DATA: u8 = 1;
const BLK_BLOBS: u8 = 3;
const POS_NOT_SET: u8 = 1;
const POS_SET: u8 = 2;

/// Reads an archive's fields, counting the bytes read.
struct Reader {
    inner: BufReader<File>,
    pos: u64,
    int_size: u8,
}

impl Reader {
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
    fn string(&mut self) -> io::Result<Option<Vec<u8>>> {
        let len = self.int()?;
        if len < 0 {
            return Ok(None);
        }
        let mut buf = vec![0u8; usize::try_from(len).map_err(io::Error::other)?];
        self.inner.read_exact(&mut buf)?;
        self.pos += buf.len() as u64;
        Ok(Some(buf))
    }

    fn skip(&mut self, n: i64) -> io::Result<()> {
        if n < 0 {
            return Err(bad("a negative chunk length"));
        }
        self.inner.seek_relative(n)?;
        self.pos += n as u64;
        Ok(())
    }

    /// Data chunks up to their zero-length end.
    fn skip_chunks(&mut self) -> io::Result<()> {
        loop {
            let len = self.int()?;
            if len == 0 {
                return Ok(());
            }
            self.skip(len)?;
        }
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, what.to_owned())
}

/// Writes the data offsets into the TOC of the custom archive at `path`. Returns how many
/// entries got one; `Ok(0)` when the archive is of a version not handled here or already has
/// them.
pub fn add_offsets(path: &Path) -> io::Result<usize> {
    let file = File::open(path)?;
    let mut r = Reader {
        inner: BufReader::with_capacity(256 * 1024, file),
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
        return Ok(0);
    }
    r.int_size = r.byte()?;
    let off_size = r.byte()?;
    let _format = r.byte()?;
    if !(1..=8).contains(&r.int_size) || off_size != 8 {
        return Ok(0);
    }
    if version.1 >= 15 {
        r.byte()?; // compression algorithm
    } else {
        r.int()?; // compression level
    }
    for _ in 0..7 {
        r.int()?; // creation time
    }
    for _ in 0..3 {
        r.string()?; // database name, server and pg_dump versions
    }
    let entries = r.int()?;
    // dumpId -> where its offset field starts, for entries whose data has no offset yet.
    let mut fields: HashMap<i64, u64> = HashMap::new();
    for _ in 0..entries {
        let dump_id = r.int()?;
        r.int()?; // hadDumper
        for _ in 0..4 {
            r.string()?; // tableoid, oid, tag, desc
        }
        r.int()?; // section
        for _ in 0..5 {
            r.string()?; // defn, dropStmt, copyStmt, namespace, tablespace
        }
        if version.1 >= 14 {
            r.string()?; // tableam
        }
        r.string()?; // owner
        r.string()?; // "false" (WITH OIDS)
        while r.string()?.is_some() {} // dependencies
        let field = r.pos;
        let flag = r.byte()?;
        r.skip(8)?;
        if flag == POS_NOT_SET {
            fields.insert(dump_id, field);
        }
    }
    let mut found: Vec<(u64, u64)> = Vec::new();
    loop {
        let at = r.pos;
        let kind = match r.byte() {
            Ok(k) => k,
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        };
        let dump_id = r.int()?;
        match kind {
            BLK_DATA => r.skip_chunks()?,
            BLK_BLOBS => {
                while r.int()? != 0 {
                    r.skip_chunks()?;
                }
            }
            _ => return Err(bad("an unknown block type")),
        }
        if let Some(&field) = fields.get(&dump_id) {
            found.push((field, at));
        }
    }
    // Only once the whole archive was read as expected is anything written.
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    for &(field, at) in &found {
        let mut bytes = [0u8; 9];
        bytes[0] = POS_SET;
        bytes[1..].copy_from_slice(&at.to_le_bytes());
        file.write_all_at(&bytes, field)?;
    }
    Ok(found.len())
}
