//! Executing a [`RestorePlan`]: unpack into restore-scratch-dir ([`super::unpack`], after a
//! free-space preflight) while the restoring database is created, apply the globals, restore
//! into it with `pg_restore -j` (with one job, fed straight from the archive instead:
//! [`super::pipe`]), compare row counts, rename into place. Whatever fails, the restoring
//! database and the scratch file are removed and the target's name was never touched.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::RestoreError;
use super::database::{self, Target};
use super::globals;
use super::plan::{Archive, RestorePlan};
use super::unpack::{self, Scratch, ensure_dir};
use super::{load, pipe, swap};
use crate::config::PostgresConfig;
use crate::jobs::backup::snapshot;
use crate::pg;
use crate::process::{self, ProcessError};

/// Where and with what a restore runs.
pub struct Env<'a> {
    pub server: &'a PostgresConfig,
    pub scratch_dir: &'a Path,
    /// The age identity for encrypted backups.
    pub identity_file: Option<&'a Path>,
    /// The offsite target an [`Archive::Fetch`] is read from.
    pub remote: Option<&'a crate::offsite::Remote>,
    pub cancel: &'a CancellationToken,
    pub progress: &'a (dyn Fn(String) + Send + Sync),
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub id: String,
    pub database: String,
    pub tables: usize,
    pub rows: i64,
    pub jobs: u32,
    /// Bytes written to restore-scratch-dir (0 when pg_restore read the archive directly).
    pub scratch_bytes: u64,
    /// With `--replace`: the name the old database is kept under.
    #[serde(default)]
    pub replaced: Option<String>,
    /// With `--globals`: what was done with each role, setting, membership and tablespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub globals: Option<Vec<globals::Item>>,
    /// With `--replace` over an existing database: the pinned safety backup taken of it first.
    #[serde(default)]
    pub safety_backup: Option<String>,
    pub unpack_ms: u64,
    pub restore_ms: u64,
    pub duration_ms: u64,
}

/// The free-space preflight alone (also used by `--dry-run`).
pub fn preflight(scratch_dir: &Path, need: u64) -> Result<(), RestoreError> {
    if need == 0 {
        return Ok(());
    }
    ensure_dir(scratch_dir)?;
    let s = nix::sys::statvfs::statvfs(scratch_dir)
        .map_err(|e| RestoreError::Failed(format!("{}: {e}", scratch_dir.display())))?;
    let free = s.blocks_available().saturating_mul(s.fragment_size());
    if free < need {
        return Err(RestoreError::NoSpace {
            dir: scratch_dir.display().to_string(),
            need,
            free,
        });
    }
    Ok(())
}

pub async fn run(env: &Env<'_>, plan: &RestorePlan) -> Result<Report, RestoreError> {
    let t0 = Instant::now();
    if plan.replace {
        swap::check_free(env.server, &plan.to).await?;
    } else if let Target::NotEmpty(tables) = database::target(env.server, &plan.to).await? {
        return Err(RestoreError::TargetNotEmpty {
            db: plan.to.clone(),
            tables,
        });
    }
    preflight(env.scratch_dir, plan.scratch_bytes)?;
    let mut applied = None;
    let done = match &plan.archive {
        Archive::Unpack { .. } | Archive::Fetch(_) => {
            overlapped(env, plan, &mut applied, Then::Publish).await
        }
        Archive::Direct { path } => in_order(env, plan, &mut applied, Rows::File(path)).await,
        Archive::Stream { .. } => in_order(env, plan, &mut applied, Rows::Stream).await,
    };
    let done = match done {
        Ok(done) => done,
        Err(e) => {
            if let Some(applied) = &applied {
                globals::undo(env.server, applied).await;
            }
            return Err(e);
        }
    };
    Ok(Report {
        id: plan.id.clone(),
        database: plan.to.clone(),
        tables: done.counts.len(),
        rows: done.counts.values().sum(),
        jobs: plan.jobs,
        scratch_bytes: done.scratch_bytes,
        replaced: done.replaced,
        globals: applied.map(|g| g.items),
        safety_backup: None,
        unpack_ms: done.unpack_ms,
        restore_ms: done.restore_ms,
        duration_ms: millis(t0),
    })
}

/// A restore drill's load: the archive of `plan` (`Archive::Unpack`) unpacked and loaded into
/// the existing, empty `plan.restoring` exactly as a restore loads it, every table's row count
/// checked against the dump's snapshot, and the database left for the drill's own checks (the
/// caller drops it, whatever happened). Returns the row counts and the scratch bytes written.
pub async fn drill(
    env: &Env<'_>,
    plan: &RestorePlan,
) -> Result<(BTreeMap<String, i64>, u64), RestoreError> {
    preflight(env.scratch_dir, plan.scratch_bytes)?;
    let done = overlapped(env, plan, &mut None, Then::Keep).await?;
    Ok((done.counts, done.scratch_bytes))
}

/// What becomes of the restoring database once loaded and checked.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Created here, renamed to the target (or dropped on failure).
    Publish,
    /// A drill's scratch database: created, dropped and checked further by the caller.
    Keep,
}

/// What a restore that reached its target did.
struct Done {
    counts: BTreeMap<String, i64>,
    replaced: Option<String>,
    scratch_bytes: u64,
    unpack_ms: u64,
    restore_ms: u64,
}

/// How the rows get into the restoring database.
enum Rows<'a> {
    /// `pg_restore -j` from this archive file.
    File(&'a Path),
    /// pg_restore fed from the plan's archive as it is decoded ([`pipe`]).
    Stream,
    /// Copied while unpacking ([`load::data`]); [`load::rest`] finishes.
    Loaded(load::Copied, &'a Scratch),
}

/// A zstd-wrapped or encrypted archive, local or offsite: unpacked into restore-scratch-dir
/// while the restoring database is created and loaded from the file as it grows ([`load`]).
/// Whichever side fails first stops the other; the unpack's own failure (damage, a full disk)
/// is the one reported, as the load's is then only its consequence.
async fn overlapped(
    env: &Env<'_>,
    plan: &RestorePlan,
    applied: &mut Option<globals::Applied>,
    then: Then,
) -> Result<Done, RestoreError> {
    let t0 = Instant::now();
    let (sink, scratch) = unpack::scratch_file(env.scratch_dir, &plan.id)?;
    let stop = env.cancel.child_token();
    let unpacking = async {
        let unpacked = match &plan.archive {
            Archive::Fetch(fetch) => super::remote::unpack(env, &plan.id, fetch, sink, &stop).await,
            _ => unpack::unpack(env, plan, sink, &stop).await,
        };
        (unpacked, millis(t0))
    };
    let loading = async {
        let loaded = async {
            if then == Then::Publish {
                create(env, plan).await?;
            }
            *applied = globals_first(env, plan).await?;
            load::data(env, plan, &scratch).await
        }
        .await;
        if loaded.is_err() {
            stop.cancel();
        }
        loaded
    };
    let ((unpacked, unpack_ms), loaded) = tokio::join!(unpacking, loading);
    let both = match (unpacked, loaded) {
        _ if env.cancel.is_cancelled() => Err(RestoreError::Cancelled),
        (Ok(bytes), Ok(loaded)) => Ok((bytes, loaded)),
        // Stopped because the load failed.
        (Err(RestoreError::Cancelled), Err(e)) => Err(e),
        (Err(e), _) | (Ok(_), Err(e)) => Err(e),
    };
    let (scratch_bytes, loaded) = match both {
        Ok(both) => both,
        Err(e) => {
            if then == Then::Publish {
                database::discard(env.server, &plan.restoring).await;
            }
            return Err(e);
        }
    };
    let rows = match loaded {
        load::Loaded::Copied(copied) => Rows::Loaded(copied, &scratch),
        load::Loaded::Unsupported(why) => {
            tracing::info!("{}: restored by pg_restore alone: {why}", plan.id);
            Rows::File(scratch.unpacked.path())
        }
    };
    let (counts, replaced) = match then {
        Then::Publish => restore_into_place(env, plan, rows).await?,
        Then::Keep => (restore_and_check(env, plan, rows).await?, None),
    };
    drop(scratch);
    Ok(Done {
        counts,
        replaced,
        scratch_bytes,
        unpack_ms,
        restore_ms: millis(t0),
    })
}

/// An archive pg_restore reads as it is (a plain custom archive, a directory), or `--jobs 1`
/// fed from the archive as it is decoded: the database first, then pg_restore.
async fn in_order(
    env: &Env<'_>,
    plan: &RestorePlan,
    applied: &mut Option<globals::Applied>,
    rows: Rows<'_>,
) -> Result<Done, RestoreError> {
    let t0 = Instant::now();
    let prepared = async {
        create(env, plan).await?;
        *applied = globals_first(env, plan).await?;
        Ok(())
    };
    if let Err(e) = prepared.await {
        database::discard(env.server, &plan.restoring).await;
        return Err(e);
    }
    let (counts, replaced) = restore_into_place(env, plan, rows).await?;
    Ok(Done {
        counts,
        replaced,
        scratch_bytes: 0,
        unpack_ms: 0,
        restore_ms: millis(t0),
    })
}

/// Creates the restoring database (and the schemas a filtered restore needs).
async fn create(env: &Env<'_>, plan: &RestorePlan) -> Result<(), RestoreError> {
    (env.progress)(format!("creating database {}", plan.restoring));
    database::create(env.server, &plan.restoring).await?;
    database::create_schemas(env.server, &plan.restoring, &plan.create_schemas).await
}

/// With `--globals`: the backup's roles, applied before pg_restore needs them as owners.
async fn globals_first(
    env: &Env<'_>,
    plan: &RestorePlan,
) -> Result<Option<globals::Applied>, RestoreError> {
    cancelled(env)?;
    let Some(file) = &plan.globals else {
        return Ok(None);
    };
    (env.progress)("applying globals.sql (roles, settings, memberships)".into());
    let applied = globals::apply(env.server, file, env.identity_file).await?;
    (env.progress)(globals::summary(&applied.items));
    Ok(Some(applied))
}

/// Restores into the (created) restoring database, checks the counts and puts it under the
/// target's name; on failure the restoring database is dropped. Returns the counts and the
/// name a replaced database is kept under.
async fn restore_into_place(
    env: &Env<'_>,
    plan: &RestorePlan,
    rows: Rows<'_>,
) -> Result<(BTreeMap<String, i64>, Option<String>), RestoreError> {
    let restored = restore_and_check(env, plan, rows).await;
    // The last moment a cancel is heeded: after the rename the target holds the restore.
    let counts = match restored.and_then(|c| cancelled(env).map(|()| c)) {
        Ok(counts) => counts,
        Err(e) => {
            database::discard(env.server, &plan.restoring).await;
            return Err(e);
        }
    };
    (env.progress)(format!("renaming {} to {}", plan.restoring, plan.to));
    let renamed = if plan.replace {
        swap::swap(env.server, &plan.restoring, &plan.to).await
    } else {
        database::rename(env.server, &plan.restoring, &plan.to)
            .await
            .map(|()| None)
    };
    match renamed {
        Ok(replaced) => Ok((counts, replaced)),
        Err(e) => {
            database::discard(env.server, &plan.restoring).await;
            Err(e)
        }
    }
}

/// The rows into the restoring database (what is left of them, after [`load::data`]), then
/// the row counts, checked against the dump's snapshot.
async fn restore_and_check(
    env: &Env<'_>,
    plan: &RestorePlan,
    rows: Rows<'_>,
) -> Result<BTreeMap<String, i64>, RestoreError> {
    let counts = match rows {
        Rows::Loaded(copied, scratch) => {
            let counts = load::rest(env, plan, scratch, copied).await?;
            (env.progress)("checking COPY's row counts against the dump's snapshot".into());
            counts
        }
        Rows::File(path) => {
            (env.progress)(format!(
                "pg_restore -j {} into {}",
                plan.jobs, plan.restoring
            ));
            let spec = whole(env, plan)?.args([path]);
            outcome(process::run(&spec, env.cancel, |_, _| {}).await, plan)?;
            counted(env, plan).await?
        }
        Rows::Stream => {
            (env.progress)(format!(
                "pg_restore -j {} into {}, fed as the archive is decoded",
                plan.jobs, plan.restoring
            ));
            pipe::restore(env, plan, whole(env, plan)?).await?;
            counted(env, plan).await?
        }
    };
    let problems = snapshot::compare(&plan.expected, &counts);
    if !problems.is_empty() {
        return Err(RestoreError::Failed(format!(
            "row counts differ after restore: {}",
            problems.join("; ")
        )));
    }
    Ok(counts)
}

/// pg_restore of the whole archive (less the plan's filters) into the restoring database.
fn whole(env: &Env<'_>, plan: &RestorePlan) -> Result<process::ProcessSpec, RestoreError> {
    Ok(filtered(env, plan)?.args([
        "--exit-on-error".to_owned(),
        format!("--jobs={}", plan.jobs),
        format!("--dbname={}", plan.restoring),
    ]))
}

/// pg_restore with the connection, the owner flags and the plan's filters.
pub(super) fn filtered(
    env: &Env<'_>,
    plan: &RestorePlan,
) -> Result<process::ProcessSpec, RestoreError> {
    let mut spec = super::async_commit(
        pg::tool_spec(env.server, "pg_restore").map_err(|e| RestoreError::Failed(e.to_string()))?,
    );
    if !plan.keep_owners {
        spec = spec.args(["--no-owner", "--no-privileges"]);
    }
    for s in &plan.schemas {
        spec = spec.args([format!("--schema={s}")]);
    }
    for t in &plan.tables {
        spec = spec.args([format!("--table={t}")]);
    }
    Ok(spec)
}

/// Every user table's row count, by `count(*)`.
async fn counted(env: &Env<'_>, plan: &RestorePlan) -> Result<BTreeMap<String, i64>, RestoreError> {
    (env.progress)("checking row counts against the dump's snapshot".into());
    database::count(env.server, &plan.restoring).await
}

/// What pg_restore's end says about the restore.
pub(super) fn outcome(
    ran: Result<process::ProcessOutput, ProcessError>,
    plan: &RestorePlan,
) -> Result<(), RestoreError> {
    match ran {
        Err(ProcessError::Cancelled) => Err(RestoreError::Cancelled),
        Err(e) => Err(RestoreError::Failed(format!("pg_restore: {e}"))),
        Ok(out) if !out.status.success() => {
            let tail = out.stderr_summary(10);
            let hint = if plan.keep_owners && tail.contains("must be member of role") {
                " (keeping owners needs atpred's role to be a superuser or a member of every \
                 owning role; restore without --globals to own everything by atpred's role)"
            } else {
                ""
            };
            Err(RestoreError::Failed(format!(
                "pg_restore failed with {}: {tail}{hint}",
                process::describe_status(&out.status),
            )))
        }
        Ok(_) => Ok(()),
    }
}

fn cancelled(env: &Env<'_>) -> Result<(), RestoreError> {
    if env.cancel.is_cancelled() {
        return Err(RestoreError::Cancelled);
    }
    Ok(())
}

fn millis(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}
