//! Loading a restore while its archive is still being unpacked.
//!
//! `pg_restore -j` needs the whole archive on a seekable file before it restores a row, so a
//! restore from a zstd-wrapped archive would wait for the unpack and then for pg_restore. Here
//! the restore follows the unpack instead ([`super::growing`]):
//!
//! 1. the table of contents, read as soon as it is unpacked ([`super::toc`]), tells which
//!    entries the restore takes (`pg_restore -l` with the restore's filters) and, for each
//!    table, the block that holds its rows and the COPY statement for them;
//! 2. `pg_restore` creates the schema (the pre-data section; it reads only the TOC);
//! 3. `jobs` connections of our own COPY each table's rows as soon as its block is unpacked,
//!    each block read by its own thread as it grows, and take COPY's row count from the
//!    server's answer;
//! 4. once the archive is whole and checked against the manifest, `pg_restore -j` builds the
//!    rest (indexes, constraints, triggers, sequence values, large objects, grants) from a list
//!    of exactly those entries, with the data offsets written into the file so it seeks.
//!
//! This is pg_restore's own order (schema, data, then what depends on the data; grants last)
//! with the same session settings, so the database is the one `pg_restore -j` makes; only the
//! rows arrive earlier. The row counts checked against the manifest's snapshot are COPY's,
//! rolled up to each parent over `pg_inherits` as `count(*)` counts a parent, so no table is
//! read again to count it. An archive version [`super::toc`] does not know is left whole to
//! pg_restore once unpacked ([`Loaded::Unsupported`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader};
use std::sync::Arc;

use bytes::Bytes;
use futures::SinkExt;
use tokio::sync::{Mutex, mpsc};
use tokio_postgres::Client;

use super::RestoreError;
use super::exec::{self, Env};
use super::growing::Follow;
use super::plan::RestorePlan;
use super::toc::{self, BLK_DATA, Entry, Section, Toc};
use super::unpack::Scratch;
use crate::pg;
use crate::process::{self, Stream};

/// COPY data is sent in pieces of about this size (a block holds one chunk per row).
const PIECE: usize = 256 * 1024;
/// Pieces read ahead of the server, per table being copied.
const AHEAD: usize = 4;

/// The entries pg_restore restores after the rows: the grants (its "ACL" pass) and what must
/// follow them.
const AFTER_DATA: [&str; 5] = [
    "ACL",
    "ACL LANGUAGE",
    "DEFAULT ACL",
    "EVENT TRIGGER",
    "MATERIALIZED VIEW DATA",
];

/// What [`data`] did.
pub enum Loaded {
    /// The schema and the rows are in; [`rest`] finishes.
    Copied(Copied),
    /// The archive's layout is not known here: nothing was restored.
    Unsupported(String),
}

/// The rows copied, and what [`rest`] needs.
pub struct Copied {
    toc: Toc,
    /// `pg_restore -l` lines of the entries restored after the rows.
    after: Vec<String>,
    /// Rows copied per TABLE DATA entry.
    rows: HashMap<i64, u64>,
    /// Every data block's dump id and position in the archive.
    blocks: Vec<(i64, u64)>,
}

/// Steps 1 to 3: reads the TOC as it is unpacked, creates the schema and copies every table's
/// rows into `plan.restoring` (created), each as soon as its block arrives.
pub async fn data(
    env: &Env<'_>,
    plan: &RestorePlan,
    scratch: &Scratch,
) -> Result<Loaded, RestoreError> {
    let (file, growing) = (scratch.file.clone(), scratch.growing.clone());
    let read = tokio::task::spawn_blocking(move || {
        toc::read_toc(BufReader::new(Follow::new(file, 0, growing)))
    });
    let toc = match read.await.map_err(failed)?.map_err(|e| unpacking(&e))? {
        Ok(toc) => toc,
        Err(toc::Unsupported(why)) => return Ok(Loaded::Unsupported(why)),
    };
    let path = scratch.unpacked.path();
    let listed = list(env, plan, path).await?;
    let (mut before, mut after, mut copy) = (Vec::new(), Vec::new(), HashSet::new());
    for (id, line) in listed {
        let Some(entry) = toc.entry(id) else {
            return Err(RestoreError::Failed(format!(
                "pg_restore -l lists entry {id}, which is not in the archive's TOC"
            )));
        };
        if entry.desc == "TABLE DATA" && entry.had_dumper && entry.copy_stmt.is_some() {
            copy.insert(id);
        } else if entry.section == Section::PreData && !AFTER_DATA.contains(&entry.desc.as_str()) {
            before.push(line);
        } else {
            after.push(line);
        }
    }
    (env.progress)(format!(
        "pg_restore into {}: the schema, from the archive's TOC",
        plan.restoring
    ));
    pg_restore(env, plan, path, &before, "--jobs=1").await?;
    (env.progress)(format!(
        "copying {} tables' rows into {} on {} connections as the archive is unpacked",
        copy.len(),
        plan.restoring,
        plan.jobs.max(1)
    ));
    let (rows, blocks) = copy_rows(env, plan, scratch, &toc, copy).await?;
    Ok(Loaded::Copied(Copied {
        toc,
        after,
        rows,
        blocks,
    }))
}

/// Step 4, once the archive is whole and checked: the rest with `pg_restore -j`; returns the
/// row count of every user table.
pub async fn rest(
    env: &Env<'_>,
    plan: &RestorePlan,
    scratch: &Scratch,
    copied: Copied,
) -> Result<BTreeMap<String, i64>, RestoreError> {
    let offsets: Vec<(u64, u64)> = copied
        .blocks
        .iter()
        .filter_map(|&(id, at)| Some((copied.toc.entry(id)?.offset_field, at)))
        .collect();
    toc::write_offsets(&scratch.file, &offsets).map_err(|e| unpacking(&e))?;
    (env.progress)(format!(
        "pg_restore -j {} into {}: indexes, constraints and the rest",
        plan.jobs, plan.restoring
    ));
    let jobs = format!("--jobs={}", plan.jobs.max(1));
    pg_restore(env, plan, scratch.unpacked.path(), &copied.after, &jobs).await?;
    let by_table = copied.rows.iter().filter_map(|(id, rows)| {
        let entry = copied.toc.entry(*id)?;
        Some(((entry.namespace.clone()?, entry.tag.clone()), *rows))
    });
    rolled_up(env, plan, by_table.collect()).await
}

/// The dump ids and `pg_restore -l` lines of the entries this restore takes (its filters).
async fn list(
    env: &Env<'_>,
    plan: &RestorePlan,
    path: &std::path::Path,
) -> Result<Vec<(i64, String)>, RestoreError> {
    let spec = exec::filtered(env, plan)?.args(["--list".as_ref(), path.as_os_str()]);
    let mut lines = Vec::new();
    let ran = process::run(&spec, env.cancel, |stream, line| {
        if stream == Stream::Stdout
            && let Some((id, _)) = line.trim_start().split_once(';')
            && let Ok(id) = id.parse::<i64>()
        {
            lines.push((id, line.to_owned()));
        }
    })
    .await;
    exec::outcome(ran, plan)?;
    Ok(lines)
}

/// Restores the entries of `lines` (a `pg_restore -L` list, written to a private file beside
/// the archive) into the restoring database, with `jobs` (`--jobs=N`).
async fn pg_restore(
    env: &Env<'_>,
    plan: &RestorePlan,
    path: &std::path::Path,
    lines: &[String],
    jobs: &str,
) -> Result<(), RestoreError> {
    if lines.is_empty() {
        return Ok(());
    }
    let list = ListFile::write(path, lines)?;
    let spec = exec::filtered(env, plan)?.args([
        "--exit-on-error".as_ref(),
        jobs.as_ref(),
        format!("--dbname={}", plan.restoring).as_ref(),
        format!("--use-list={}", list.0.display()).as_ref(),
        path.as_os_str(),
    ]);
    exec::outcome(process::run(&spec, env.cancel, |_, _| {}).await, plan)
}

/// A `pg_restore -L` list beside the archive (0600, like it), removed when dropped.
struct ListFile(std::path::PathBuf);

impl ListFile {
    fn write(archive: &std::path::Path, lines: &[String]) -> Result<Self, RestoreError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = archive.with_extension(format!("list{}", rand::random::<u32>()));
        let mut file = File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| RestoreError::Scratch(format!("{}: {e}", path.display())))?;
        let guard = Self(path);
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        file.write_all(text.as_bytes())
            .map_err(|e| RestoreError::Scratch(format!("{}: {e}", guard.0.display())))?;
        Ok(guard)
    }
}

impl Drop for ListFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Copies the rows of the `copy` entries: a scanner thread finds each data block as it is
/// unpacked, `jobs` connections copy the blocks it found. Returns the rows per entry and
/// every block's position.
async fn copy_rows(
    env: &Env<'_>,
    plan: &RestorePlan,
    scratch: &Scratch,
    toc: &Toc,
    copy: HashSet<i64>,
) -> Result<(HashMap<i64, u64>, Vec<(i64, u64)>), RestoreError> {
    let (found, next) = mpsc::unbounded_channel();
    let mut blocks = toc.blocks(
        BufReader::with_capacity(
            1 << 20,
            Follow::new(scratch.file.clone(), toc.end, scratch.growing.clone()),
        ),
        toc.end,
    );
    let wanted = copy.clone();
    let scan = tokio::task::spawn_blocking(move || -> io::Result<Vec<(i64, u64)>> {
        let mut all = Vec::new();
        while let Some((kind, id, at)) = blocks.next_block()? {
            all.push((id, at));
            if kind == BLK_DATA && wanted.contains(&id) {
                // The copiers may have stopped (a failure): the scan still ends.
                let _ = found.send((id, at));
            }
            blocks.skip_block(kind)?;
        }
        Ok(all)
    });
    let next = Arc::new(Mutex::new(next));
    let mut copiers = Vec::new();
    let mut frozen = None;
    for _ in 0..plan.jobs.max(1) {
        let client = session(env, plan).await?;
        if frozen.is_none() {
            frozen = Some(Arc::new(freezable(&client).await?));
        }
        let frozen = frozen.clone().unwrap_or_default();
        copiers.push(copier(env, client, toc, scratch, frozen, next.clone()));
    }
    // On a failure the scan is not waited for: it may be waiting for an unpack that is stopped
    // only once this returns, and ends with it.
    let rows: HashMap<i64, u64> = futures::future::try_join_all(copiers)
        .await?
        .into_iter()
        .flatten()
        .collect();
    let blocks = scan.await.map_err(failed)?.map_err(|e| unpacking(&e))?;
    if let Some(missing) = copy.iter().find(|id| !rows.contains_key(id)) {
        let tag = toc.entry(*missing).map_or("?", |e| e.tag.as_str());
        return Err(RestoreError::Failed(format!(
            "the archive has no data block for table {tag} (entry {missing})"
        )));
    }
    Ok((rows, blocks))
}

/// A connection into the restoring database set up as pg_restore sets up its own.
async fn session(env: &Env<'_>, plan: &RestorePlan) -> Result<Client, RestoreError> {
    let (client, _) = pg::connect_named(env.server, &plan.restoring, "atpred restore")
        .await
        .map_err(|e| RestoreError::Failed(format!("connecting to {}: {e}", plan.restoring)))?;
    client
        .batch_execute(&format!(
            "SET statement_timeout = 0; SET lock_timeout = 0; \
             SET idle_in_transaction_session_timeout = 0; SET row_security = off; \
             SET standard_conforming_strings = on; SET search_path = ''; {}",
            super::ASYNC_COMMIT_SQL
        ))
        .await
        .map_err(|e| RestoreError::Failed(format!("setting up a session: {}", pg::describe(&e))))?;
    Ok(client)
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

/// One connection's loop: takes the next block found and copies it, until there are none.
async fn copier(
    env: &Env<'_>,
    client: Client,
    toc: &Toc,
    scratch: &Scratch,
    frozen: Arc<HashSet<(String, String)>>,
    next: Arc<Mutex<mpsc::UnboundedReceiver<(i64, u64)>>>,
) -> Result<Vec<(i64, u64)>, RestoreError> {
    if let Some(encoding) = toc.encoding() {
        client
            .batch_execute(&format!("SET client_encoding = '{encoding}'"))
            .await
            .map_err(|e| RestoreError::Failed(format!("client_encoding: {}", pg::describe(&e))))?;
    }
    let mut done = Vec::new();
    loop {
        let found = tokio::select! {
            found = async { next.lock().await.recv().await } => found,
            () = env.cancel.cancelled() => return Err(RestoreError::Cancelled),
        };
        let Some((id, at)) = found else {
            return Ok(done);
        };
        let entry = toc.entry(id).ok_or_else(|| failed("a block of no entry"))?;
        let rows = tokio::select! {
            rows = copy_block(&client, toc, entry, scratch, &frozen, at) => rows?,
            () = env.cancel.cancelled() => return Err(RestoreError::Cancelled),
        };
        done.push((id, rows));
    }
}

/// Copies one table's block: its rows are read (waiting for the unpack) on a blocking thread
/// and sent in pieces; COPY's answer is the row count. As pg_restore -j does, the table is
/// emptied in the same transaction first, so that with `wal_level = minimal` the COPY writes
/// no WAL. That also lets a plain table's rows be copied `FREEZE` (which pg_restore does not
/// do): they arrive frozen and all-visible, so the index builds that read them next, and the
/// first queries and vacuums after the restore, find no hint bits to set and write no page
/// again, and no anti-wraparound vacuum has to rewrite the whole table later.
async fn copy_block(
    client: &Client,
    toc: &Toc,
    entry: &Entry,
    scratch: &Scratch,
    frozen: &HashSet<(String, String)>,
    at: u64,
) -> Result<u64, RestoreError> {
    let sql = |what: &str| {
        let what = what.to_owned();
        move |e: tokio_postgres::Error| {
            RestoreError::Failed(format!("{what} {}: {}", entry.tag, pg::describe(&e)))
        }
    };
    let namespace = entry.namespace.as_deref().unwrap_or("public");
    let table = format!(
        "{}.{}",
        pg::quote_ident(namespace),
        pg::quote_ident(&entry.tag)
    );
    client
        .batch_execute(&format!("BEGIN; TRUNCATE ONLY {table}"))
        .await
        .map_err(sql("emptying"))?;
    let statement = entry.copy_stmt.as_deref().unwrap_or_default();
    let freeze = frozen.contains(&(namespace.to_owned(), entry.tag.clone()));
    let statement = match statement.trim_end().strip_suffix(';') {
        Some(bare) if freeze && bare.ends_with("FROM stdin") => format!("{bare} WITH (FREEZE)"),
        _ => statement.to_owned(),
    };
    let sink = client.copy_in(&statement).await.map_err(sql("COPY into"))?;
    let mut sink = std::pin::pin!(sink);
    let (pieces, mut arriving) = mpsc::channel::<Bytes>(AHEAD);
    let mut block = toc.blocks(
        BufReader::with_capacity(
            PIECE,
            Follow::new(scratch.file.clone(), at, scratch.growing.clone()),
        ),
        at,
    );
    let dump_id = entry.dump_id;
    let reader = tokio::task::spawn_blocking(move || -> io::Result<()> {
        match block.next_block()? {
            Some((BLK_DATA, id, _)) if id == dump_id => {}
            _ => return Err(io::Error::other("the block found is not there")),
        }
        let mut piece = Vec::with_capacity(PIECE + 8192);
        loop {
            let more = block.chunk_into(&mut piece)?;
            if piece.len() >= PIECE || (!more && !piece.is_empty()) {
                let full = std::mem::replace(&mut piece, Vec::with_capacity(PIECE + 8192));
                if pieces.blocking_send(Bytes::from(full)).is_err() {
                    return Ok(()); // the copy stopped
                }
            }
            if !more {
                return Ok(());
            }
        }
    });
    while let Some(piece) = arriving.recv().await {
        sink.send(piece).await.map_err(sql("COPY into"))?;
    }
    // A block cut short (the unpack failed) must not be committed as a whole table.
    reader.await.map_err(failed)?.map_err(|e| unpacking(&e))?;
    let rows = sink.as_mut().finish().await.map_err(sql("COPY into"))?;
    client
        .batch_execute("COMMIT")
        .await
        .map_err(sql("committing"))?;
    Ok(rows)
}

/// Every user table's row count as `count(*)` gives it: its own rows and those of every table
/// that inherits from it, from the rows copied per (schema, table).
async fn rolled_up(
    env: &Env<'_>,
    plan: &RestorePlan,
    own: HashMap<(String, String), u64>,
) -> Result<BTreeMap<String, i64>, RestoreError> {
    let client = session(env, plan).await?;
    let query = |e: tokio_postgres::Error| {
        RestoreError::Failed(format!("listing the restored tables: {}", pg::describe(&e)))
    };
    let tables = client
        .query(
            "SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname), \
             n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'",
            &[],
        )
        .await
        .map_err(query)?;
    let inherits = client
        .query("SELECT inhrelid, inhparent FROM pg_inherits", &[])
        .await
        .map_err(query)?;
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for row in &inherits {
        let (child, parent): (u32, u32) = (row.get(0), row.get(1));
        children.entry(parent).or_default().push(child);
    }
    let mut own_by_oid = HashMap::new();
    let mut names = Vec::new();
    for row in &tables {
        let (oid, key, nsp, rel): (u32, String, String, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let rows = own.get(&(nsp, rel)).copied().unwrap_or(0);
        own_by_oid.insert(oid, i64::try_from(rows).unwrap_or(i64::MAX));
        names.push((oid, key));
    }
    let total = |root: u32| {
        let (mut sum, mut stack, mut seen) = (0i64, vec![root], HashSet::new());
        while let Some(oid) = stack.pop() {
            if seen.insert(oid) {
                sum += own_by_oid.get(&oid).copied().unwrap_or(0);
                stack.extend(children.get(&oid).into_iter().flatten());
            }
        }
        sum
    };
    Ok(names
        .into_iter()
        .map(|(oid, key)| (key, total(oid)))
        .collect())
}

fn failed(e: impl std::fmt::Display) -> RestoreError {
    RestoreError::Failed(e.to_string())
}

/// An error reading the scratch file: the unpack's own error says more, and is preferred
/// ([`super::exec`]).
fn unpacking(e: &io::Error) -> RestoreError {
    RestoreError::Failed(format!("reading the archive as it is unpacked: {e}"))
}
