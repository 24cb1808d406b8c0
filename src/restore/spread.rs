//! One table's rows into the restoring database, and a big table's rows over every free
//! connection.
//!
//! A table's data block is read (as the scratch file grows) on a blocking thread and sent to
//! one connection's `COPY`, as pg_restore does. A table of many rows would then keep a single
//! connection busy while the others have nothing left to do (pgbench_accounts is most of a
//! pgbench database), so once a block has given its first [`SPREAD_AFTER`] bytes the rest of
//! it is cut into pieces of whole rows of about [`PIECE`] bytes, and any free connection takes
//! the next piece and copies it into the same table in a transaction of its own
//! ([`copy_pieces`], called by [`super::load`]'s copiers).
//!
//! The first part is copied `FREEZE` in the transaction that emptied the table; `FREEZE` needs
//! that, so the pieces after it cannot have it, and they may only start once that transaction
//! has committed (the emptying holds the table's lock until then): the block's reader waits
//! for the commit before it cuts the first piece. Every piece's `COPY` count is returned, so the
//! table's rows are still counted exactly. A piece cut short, or a failed one, fails the whole
//! restore as a failed table did: its database is dropped, so pieces already committed do not
//! matter.
//!
//! Rows are cut only where a row ends: pg_dump writes a table's rows as `COPY ... TO stdout` in
//! the text format, where a newline inside a value is escaped, so every newline byte ends a row
//! (also in the client encodings whose multibyte characters never hold a byte below 0x40). A
//! block in any other format (a `COPY` statement that names one) is never spread.

use std::collections::HashSet;
use std::io::{self, BufReader};
use std::sync::mpsc as sync_mpsc;

use bytes::Bytes;
use futures::SinkExt;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use super::RestoreError;
use super::growing::Follow;
use super::toc::{self, BLK_DATA, Entry, Toc};
use super::unpack::Scratch;
use crate::pg;

/// COPY data is sent in pieces of about this size (a block holds one chunk per row); a spread
/// table's pieces are of this size too.
pub const PIECE: usize = 256 * 1024;
/// Pieces read ahead of the server, per table being copied.
const AHEAD: usize = 4;
/// The bytes of a table's rows its own connection copies (frozen) before the rest is spread.
pub const SPREAD_AFTER: usize = 8 << 20;

/// Whole rows of a spread table, for whichever connection is free.
pub struct Piece {
    /// The table's TABLE DATA entry.
    pub id: i64,
    rows: Bytes,
}

/// The pieces of every table being spread, and their senders (one per block being read, and
/// the scanner's, so the channel ends once no block can be spread any more).
pub fn pieces(connections: u32) -> (mpsc::Sender<Piece>, mpsc::Receiver<Piece>) {
    mpsc::channel(AHEAD * connections.max(1) as usize)
}

/// What one table's own connection copied: its rows, and whether the rest of the block was
/// spread, with the reader that goes on cutting its pieces (its result is the block's).
pub struct Owned {
    pub rows: u64,
    pub spread: Option<JoinHandle<io::Result<()>>>,
}

/// Copies one table's block: its rows are read (waiting for the unpack) on a blocking thread
/// and sent in pieces; COPY's answer is the row count. As pg_restore -j does, the table is
/// emptied in the same transaction first, so that with `wal_level = minimal` the COPY writes
/// no WAL. That also lets a plain table's rows be copied `FREEZE` (which pg_restore does not
/// do): they arrive frozen and all-visible, so the index builds that read them next, and the
/// first queries and vacuums after the restore, find no hint bits to set and write no page
/// again. With `spread` (a sender of [`Piece`]s), a block past [`SPREAD_AFTER`] bytes is
/// spread once this transaction commits.
pub async fn copy_block(
    client: &Client,
    entry: &Entry,
    toc: &Toc,
    scratch: &Scratch,
    frozen: &HashSet<(String, String)>,
    at: u64,
    spread: Option<mpsc::Sender<Piece>>,
) -> Result<Owned, RestoreError> {
    let namespace = entry.namespace.as_deref().unwrap_or("public");
    let table = format!(
        "{}.{}",
        pg::quote_ident(namespace),
        pg::quote_ident(&entry.tag)
    );
    client
        .batch_execute(&format!("BEGIN; TRUNCATE ONLY {table}"))
        .await
        .map_err(|e| sql(entry, "emptying", &e))?;
    let statement = entry.copy_stmt.as_deref().unwrap_or_default();
    let freeze = frozen.contains(&(namespace.to_owned(), entry.tag.clone()));
    let statement = match statement.trim_end().strip_suffix(';') {
        Some(bare) if freeze && bare.ends_with("FROM stdin") => format!("{bare} WITH (FREEZE)"),
        _ => statement.to_owned(),
    };
    let sink = client
        .copy_in(&statement)
        .await
        .map_err(|e| sql(entry, "COPY into", &e))?;
    let mut sink = std::pin::pin!(sink);
    let (parts, mut arriving) = mpsc::channel::<Part>(AHEAD);
    let (go, wait) = sync_mpsc::channel();
    let spread = spread
        .filter(|_| text_rows(entry))
        .map(|pieces| Spread { pieces, go: wait });
    let block = toc.blocks(
        BufReader::with_capacity(
            PIECE,
            Follow::new(scratch.file.clone(), at, scratch.growing.clone()),
        ),
        at,
    );
    let dump_id = entry.dump_id;
    let reader = tokio::task::spawn_blocking(move || read_block(block, dump_id, &parts, spread));
    let mut spreading = false;
    while let Some(part) = arriving.recv().await {
        match part {
            Part::Rows(rows) => sink
                .send(rows)
                .await
                .map_err(|e| sql(entry, "COPY into", &e))?,
            Part::Spread => {
                spreading = true;
                break;
            }
        }
    }
    let reader = if spreading {
        Some(reader)
    } else {
        // A block cut short (the unpack failed) must not be committed as a whole table.
        reader.await.map_err(failed)?.map_err(|e| unpacking(&e))?;
        None
    };
    let rows = sink
        .as_mut()
        .finish()
        .await
        .map_err(|e| sql(entry, "COPY into", &e))?;
    client
        .batch_execute("COMMIT")
        .await
        .map_err(|e| sql(entry, "committing", &e))?;
    let Some(reader) = reader else {
        return Ok(Owned { rows, spread: None });
    };
    // The reader waits for this before it cuts the first piece; it is gone only if it failed,
    // which its result says.
    let _ = go.send(());
    Ok(Owned {
        rows,
        spread: Some(reader),
    })
}

/// Copies `first` and, in the same `COPY` (one transaction of its own), the pieces of the same
/// table that are ready at once; returns the rows per table copied and a piece of another
/// table taken on the way, which the caller copies next. `pieces` is shared by every
/// connection: while another waits on it, the next piece is theirs, and this `COPY` ends.
pub async fn copy_pieces(
    client: &Client,
    toc: &Toc,
    first: Piece,
    pieces: &Mutex<mpsc::Receiver<Piece>>,
) -> Result<(u64, Option<Piece>), RestoreError> {
    let entry = toc
        .entry(first.id)
        .ok_or_else(|| failed("a piece of no entry"))?;
    let statement = entry.copy_stmt.as_deref().unwrap_or_default();
    let sink = client
        .copy_in(statement)
        .await
        .map_err(|e| sql(entry, "COPY into", &e))?;
    let mut sink = std::pin::pin!(sink);
    sink.send(first.rows)
        .await
        .map_err(|e| sql(entry, "COPY into", &e))?;
    let other = loop {
        let ready = match pieces.try_lock() {
            Ok(mut pieces) => pieces.try_recv().ok(),
            Err(_) => None,
        };
        match ready {
            Some(piece) if piece.id == entry.dump_id => {
                sink.send(piece.rows)
                    .await
                    .map_err(|e| sql(entry, "COPY into", &e))?;
            }
            other => break other,
        }
    };
    let rows = sink
        .as_mut()
        .finish()
        .await
        .map_err(|e| sql(entry, "COPY into", &e))?;
    Ok((rows, other))
}

/// The block's rows are COPY's text format (pg_dump's `COPY ... FROM stdin;`, no options), in
/// which a newline byte always ends a row.
fn text_rows(entry: &Entry) -> bool {
    entry
        .copy_stmt
        .as_deref()
        .is_some_and(|s| s.trim_end().ends_with(" FROM stdin;"))
}

/// What a block's reader gives its table's own connection.
enum Part {
    Rows(Bytes),
    /// The rest goes to the [`Piece`]s once this connection's transaction has committed.
    Spread,
}

/// How a block's rest is spread: where its pieces go, and the signal that the first part's
/// transaction committed.
struct Spread {
    pieces: mpsc::Sender<Piece>,
    go: sync_mpsc::Receiver<()>,
}

/// Reads the block at the reader's position: to `parts` whole, or with `spread` its first
/// [`SPREAD_AFTER`] bytes and then, once told, the rest as [`Piece`]s. A receiver that is gone
/// (the copy stopped) ends it quietly; the copy's own error is the one reported.
fn read_block(
    mut block: toc::Reader<BufReader<Follow>>,
    dump_id: i64,
    parts: &mpsc::Sender<Part>,
    spread: Option<Spread>,
) -> io::Result<()> {
    match block.next_block()? {
        Some((BLK_DATA, id, _)) if id == dump_id => {}
        _ => return Err(io::Error::other("the block found is not there")),
    }
    let mut rows = Rows::new(block);
    let whole = spread.is_some();
    let mut sent = 0;
    loop {
        let Some(piece) = rows.next_piece(whole)? else {
            return Ok(());
        };
        sent += piece.len();
        if parts.blocking_send(Part::Rows(Bytes::from(piece))).is_err() {
            return Ok(());
        }
        if whole && sent >= SPREAD_AFTER && rows.more() {
            break;
        }
    }
    let Some(spread) = spread else {
        return Ok(());
    };
    if parts.blocking_send(Part::Spread).is_err() || spread.go.recv().is_err() {
        return Ok(());
    }
    while let Some(piece) = rows.next_piece(true)? {
        let piece = Piece {
            id: dump_id,
            rows: Bytes::from(piece),
        };
        if spread.pieces.blocking_send(piece).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// A data block's rows, read chunk by chunk and cut into pieces.
struct Rows<R> {
    block: toc::Reader<R>,
    buf: Vec<u8>,
    /// Where the last newline in `buf` is.
    last_newline: Option<usize>,
    /// The block has chunks left.
    left: bool,
}

impl<R: io::BufRead> Rows<R> {
    fn new(block: toc::Reader<R>) -> Self {
        Self {
            block,
            buf: Vec::with_capacity(PIECE + 8192),
            last_newline: None,
            left: true,
        }
    }

    /// Bytes are left to give.
    fn more(&self) -> bool {
        self.left || !self.buf.is_empty()
    }

    /// The next piece of about [`PIECE`] bytes (more if a row is longer), ending where a row
    /// ends when `whole`, or the block's last bytes; `None` at the block's end.
    fn next_piece(&mut self, whole: bool) -> io::Result<Option<Vec<u8>>> {
        while self.left && (self.buf.len() < PIECE || (whole && self.last_newline.is_none())) {
            let start = self.buf.len();
            self.left = self.block.chunk_into(&mut self.buf)?;
            if let Some(at) = self.buf[start..].iter().rposition(|&b| b == b'\n') {
                self.last_newline = Some(start + at);
            }
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        let end = match self.last_newline {
            Some(at) if whole && self.left => at + 1,
            _ => self.buf.len(),
        };
        let mut rest = Vec::with_capacity(PIECE + 8192);
        rest.extend_from_slice(&self.buf[end..]);
        let mut piece = std::mem::replace(&mut self.buf, rest);
        piece.truncate(end);
        self.last_newline = None;
        Ok(Some(piece))
    }
}

/// A failed statement about `entry`'s table, as an error of the restore.
fn sql(entry: &Entry, what: &str, e: &tokio_postgres::Error) -> RestoreError {
    RestoreError::Failed(format!("{what} {}: {}", entry.tag, pg::describe(e)))
}

fn failed(e: impl std::fmt::Display) -> RestoreError {
    RestoreError::Failed(e.to_string())
}

/// An error reading the scratch file: the unpack's own error says more, and is preferred
/// ([`super::exec`]).
pub fn unpacking(e: &io::Error) -> RestoreError {
    RestoreError::Failed(format!("reading the archive as it is unpacked: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data block's chunks after its header, as pg_dump writes them (4-byte integers).
    fn chunks(parts: &[&[u8]]) -> Vec<u8> {
        let int = |n: usize| {
            let mut b = vec![0u8];
            b.extend_from_slice(&u32::try_from(n).unwrap().to_le_bytes());
            b
        };
        let mut out = Vec::new();
        for part in parts {
            out.extend(int(part.len()));
            out.extend_from_slice(part);
        }
        out.extend(int(0));
        out
    }

    fn cut(parts: &[&[u8]], whole: bool) -> Vec<Vec<u8>> {
        let bytes = chunks(parts);
        let mut rows = Rows::new(toc::Reader::over(&bytes[..], 4));
        let mut pieces = Vec::new();
        while let Some(piece) = rows.next_piece(whole).unwrap() {
            pieces.push(piece);
        }
        assert!(!rows.more());
        pieces
    }

    #[test]
    fn pieces_end_where_rows_end_whatever_the_chunks() {
        // Rows of every length, one per chunk, then chunks that hold several rows or half of one.
        let rows: Vec<Vec<u8>> = (0..20_000)
            .map(|i| format!("{i}\t{}\n", "x".repeat(i % 97)).into_bytes())
            .collect();
        let all: Vec<u8> = rows.concat();
        let mut parts: Vec<&[u8]> = rows.iter().map(Vec::as_slice).collect();
        parts.extend(all.chunks(1000));
        let pieces = cut(&parts, true);
        assert!(pieces.len() > 4, "{}", pieces.len());
        for piece in &pieces {
            assert_eq!(piece.last(), Some(&b'\n'));
            assert!(piece.len() < PIECE + 8192, "{}", piece.len());
        }
        assert!(
            pieces[..pieces.len() - 1]
                .iter()
                .all(|p| p.len() >= PIECE - 200)
        );
        assert_eq!(pieces.concat(), [all.clone(), all].concat());
    }

    #[test]
    fn a_row_longer_than_a_piece_stays_whole() {
        let long = [vec![b'y'; PIECE * 2], b"\n".to_vec()].concat();
        let halves: Vec<&[u8]> = long.chunks(PIECE / 3).collect();
        let parts: Vec<&[u8]> = [&[b"1\ta\n".as_slice()], halves.as_slice(), &[b"2\tb\n"]].concat();
        let pieces = cut(&parts, true);
        assert_eq!(pieces, [b"1\ta\n".to_vec(), long, b"2\tb\n".to_vec()]);
    }

    #[test]
    fn without_whole_rows_pieces_are_cut_by_size_and_a_last_row_may_lack_its_newline() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        let mut parts: Vec<&[u8]> = data.chunks(777).collect();
        parts.push(b"last");
        let pieces = cut(&parts, false);
        assert_eq!(pieces.concat(), [data.as_slice(), b"last"].concat());
        let whole = cut(&parts, true);
        assert_eq!(whole.last().map(|p| p.ends_with(b"last")), Some(true));
        assert_eq!(whole.concat(), [data.as_slice(), b"last"].concat());
    }

    #[test]
    fn only_text_copies_are_spread() {
        let entry = |stmt: &str| Entry {
            dump_id: 1,
            had_dumper: true,
            tag: "t".into(),
            desc: "TABLE DATA".into(),
            namespace: Some("public".into()),
            defn: None,
            copy_stmt: Some(stmt.into()),
            section: toc::Section::Data,
            offset_field: 0,
            offset_set: false,
        };
        assert!(text_rows(&entry("COPY public.t (a, b) FROM stdin;\n")));
        assert!(!text_rows(&entry(
            "COPY public.t (a) FROM stdin WITH (FORMAT binary);"
        )));
        assert!(!text_rows(&entry("COPY public.t (a) FROM stdin CSV;")));
    }
}
