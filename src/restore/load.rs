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
//!    each block read by its own thread as it grows, a big table's over every free connection,
//!    and take COPY's row count from the server's answer ([`super::copiers`],
//!    [`super::spread`]);
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
use std::io::BufReader;

use tokio_postgres::Client;

use super::RestoreError;
use super::copiers;
use super::exec::{self, Env};
use super::growing::Follow;
use super::plan::RestorePlan;
use super::spread::unpacking;
use super::toc::{self, Section, Toc};
use super::unpack::Scratch;
use crate::pg;
use crate::process::{self, Stream};

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
    let (rows, blocks) = copiers::copy_rows(env, plan, scratch, &toc, copy).await?;
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

/// A connection into the restoring database set up as pg_restore sets up its own.
pub(super) async fn session(env: &Env<'_>, plan: &RestorePlan) -> Result<Client, RestoreError> {
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
