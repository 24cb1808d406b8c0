//! The connections that copy a restore's rows ([`super::load`]'s step 3): a scanner thread
//! finds each table's data block as the archive is unpacked, and `jobs` connections each take
//! the next block found, or the next piece of a big table being spread over them
//! ([`super::spread`]), whichever comes first. The row count of every table is COPY's, summed
//! over the pieces of a spread one.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufReader};

use tokio::sync::{Mutex, mpsc};
use tokio_postgres::Client;

use super::RestoreError;
use super::exec::Env;
use super::growing::Follow;
use super::load::session;
use super::plan::RestorePlan;
use super::spread::{self, Piece, unpacking};
use super::toc::{BLK_DATA, Toc};
use super::unpack::Scratch;
use crate::pg;

/// Copies the rows of the `copy` entries: a scanner thread finds each data block as it is
/// unpacked, `jobs` connections copy the blocks it found. Returns the rows per entry and
/// every block's position.
pub(super) async fn copy_rows(
    env: &Env<'_>,
    plan: &RestorePlan,
    scratch: &Scratch,
    toc: &Toc,
    copy: HashSet<i64>,
) -> Result<(HashMap<i64, u64>, Vec<(i64, u64)>), RestoreError> {
    let (found, next) = mpsc::unbounded_channel();
    let (pieces, spread_pieces) = spread::pieces(plan.jobs);
    let mut blocks = toc.blocks(
        BufReader::with_capacity(
            1 << 20,
            Follow::new(scratch.file.clone(), toc.end, scratch.growing.clone()),
        ),
        toc.end,
    );
    let wanted = copy.clone();
    // The scanner holds a sender of pieces, and gives one with each block found, so the
    // pieces end only once every block is found and read.
    let scan = tokio::task::spawn_blocking(move || -> io::Result<Vec<(i64, u64)>> {
        let mut all = Vec::new();
        while let Some((kind, id, at)) = blocks.next_block()? {
            all.push((id, at));
            if kind == BLK_DATA && wanted.contains(&id) {
                // The copiers may have stopped (a failure): the scan still ends.
                let _ = found.send(Found {
                    id,
                    at,
                    pieces: pieces.clone(),
                });
            }
            blocks.skip_block(kind)?;
        }
        Ok(all)
    });
    let mut clients = Vec::new();
    for _ in 0..plan.jobs.max(1) {
        clients.push(session(env, plan).await?);
    }
    let work = Work {
        blocks: Mutex::new(next),
        pieces: Mutex::new(spread_pieces),
        frozen: freezable(&clients[0]).await?,
        spread: clients.len() > 1,
    };
    let copiers = clients
        .into_iter()
        .enumerate()
        .map(|(n, client)| copier(env, client, toc, scratch, &work, n));
    // On a failure the scan is not waited for: it may be waiting for an unpack that is stopped
    // only once this returns, and ends with it.
    let tallies = futures::future::try_join_all(copiers).await?;
    let mut shares = Vec::new();
    for tally in tallies {
        for reader in tally.readers {
            reader.await.map_err(failed)?.map_err(|e| unpacking(&e))?;
        }
        shares.extend(tally.shares);
    }
    let blocks = scan.await.map_err(failed)?.map_err(|e| unpacking(&e))?;
    tell_spread(env, toc, &shares);
    let mut rows: HashMap<i64, u64> = HashMap::new();
    for share in &shares {
        *rows.entry(share.id).or_default() += share.rows;
    }
    if let Some(missing) = copy.iter().find(|id| !rows.contains_key(id)) {
        let tag = toc.entry(*missing).map_or("?", |e| e.tag.as_str());
        return Err(RestoreError::Failed(format!(
            "the archive has no data block for table {tag} (entry {missing})"
        )));
    }
    Ok((rows, blocks))
}

/// A data block the scanner found, and a sender for its pieces should it be spread.
struct Found {
    id: i64,
    at: u64,
    pieces: mpsc::Sender<Piece>,
}

/// What the copiers share.
struct Work {
    blocks: Mutex<mpsc::UnboundedReceiver<Found>>,
    pieces: Mutex<mpsc::Receiver<Piece>>,
    /// The tables copied `FREEZE` ([`freezable`]).
    frozen: HashSet<(String, String)>,
    /// Big tables are spread (there is more than one connection).
    spread: bool,
}

/// Rows one connection copied into a table.
struct Share {
    id: i64,
    rows: u64,
    /// The connection's number.
    connection: usize,
    /// How: the whole block, the first part of a spread one, or spread pieces.
    how: How,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum How {
    Whole,
    First,
    Pieces,
}

/// What one connection did, and the readers still cutting the pieces of tables it spread.
#[derive(Default)]
struct Tally {
    shares: Vec<Share>,
    readers: Vec<tokio::task::JoinHandle<io::Result<()>>>,
}

/// One connection's loop: copies the next piece of a spread table or the next block found,
/// whichever comes first, until there are none.
async fn copier(
    env: &Env<'_>,
    client: Client,
    toc: &Toc,
    scratch: &Scratch,
    work: &Work,
    connection: usize,
) -> Result<Tally, RestoreError> {
    if let Some(encoding) = toc.encoding() {
        client
            .batch_execute(&format!("SET client_encoding = '{encoding}'"))
            .await
            .map_err(|e| RestoreError::Failed(format!("client_encoding: {}", pg::describe(&e))))?;
    }
    let (mut tally, mut blocks_left, mut carried) = (Tally::default(), true, None);
    loop {
        let next = match carried.take() {
            Some(piece) => Ok(piece),
            None => tokio::select! {
                biased;
                () = env.cancel.cancelled() => return Err(RestoreError::Cancelled),
                piece = async { work.pieces.lock().await.recv().await } => match piece {
                    Some(piece) => Ok(piece),
                    // No block is left to find or to spread.
                    None => return Ok(tally),
                },
                found = async { work.blocks.lock().await.recv().await }, if blocks_left => {
                    match found {
                        Some(found) => Err(found),
                        None => {
                            blocks_left = false;
                            continue;
                        }
                    }
                }
            },
        };
        let share = match next {
            Ok(piece) => {
                let id = piece.id;
                let copied = spread::copy_pieces(&client, toc, piece, &work.pieces);
                let (rows, other) = cancellable(env, copied).await?;
                carried = other;
                (id, rows, How::Pieces)
            }
            Err(found) => {
                let entry = toc
                    .entry(found.id)
                    .ok_or_else(|| failed("a block of no entry"))?;
                let pieces = work.spread.then_some(found.pieces);
                let copied = spread::copy_block(
                    &client,
                    entry,
                    toc,
                    scratch,
                    &work.frozen,
                    found.at,
                    pieces,
                );
                let owned = cancellable(env, copied).await?;
                let how = if owned.spread.is_some() {
                    How::First
                } else {
                    How::Whole
                };
                tally.readers.extend(owned.spread);
                (found.id, owned.rows, how)
            }
        };
        tally.shares.push(Share {
            id: share.0,
            rows: share.1,
            connection,
            how: share.2,
        });
    }
}

/// `copy`, unless the restore is cancelled first.
async fn cancellable<T>(
    env: &Env<'_>,
    copy: impl std::future::Future<Output = Result<T, RestoreError>>,
) -> Result<T, RestoreError> {
    tokio::select! {
        done = copy => done,
        () = env.cancel.cancelled() => Err(RestoreError::Cancelled),
    }
}

/// Says which tables were spread, over how many connections.
fn tell_spread(env: &Env<'_>, toc: &Toc, shares: &[Share]) {
    for first in shares.iter().filter(|s| s.how == How::First) {
        let of_table = shares.iter().filter(|s| s.id == first.id);
        let connections: HashSet<usize> = of_table.clone().map(|s| s.connection).collect();
        let copies = of_table.filter(|s| s.how == How::Pieces).count();
        let Some(entry) = toc.entry(first.id) else {
            continue;
        };
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        (env.progress)(format!(
            "{}.{}: spread over {} connection{} (after its first {} MiB: {copies} COPY{} of \
             whole rows)",
            entry.namespace.as_deref().unwrap_or("public"),
            entry.tag,
            connections.len(),
            plural(connections.len()),
            spread::SPREAD_AFTER >> 20,
            plural(copies),
        ));
    }
}

/// The tables whose rows can be copied already frozen: plain tables that are not partitions
/// (a partition's rows may be routed through its root, `--load-via-partition-root`, and a
/// partitioned table takes no `FREEZE`), by (schema, name).
async fn freezable(client: &Client) -> Result<HashSet<(String, String)>, RestoreError> {
    let rows = client
        .query(
            "SELECT n.nspname, c.relname FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND NOT c.relispartition",
            &[],
        )
        .await
        .map_err(|e| {
            RestoreError::Failed(format!("listing the restored tables: {}", pg::describe(&e)))
        })?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

fn failed(e: impl std::fmt::Display) -> RestoreError {
    RestoreError::Failed(e.to_string())
}
