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
use super::unpack::{self, Unpacked, ensure_dir};
use super::{pipe, swap};
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
    // The unpacking (zstd, the disk or the network) and CREATE DATABASE (the server) do not
    // wait for each other. Whichever fails, the other's work is undone: the file by its drop,
    // the database here (the restoring name is ours alone).
    let (unpacked, created) = tokio::join!(unpack_if_needed(env, plan), create(env, plan));
    let unpacked = match (unpacked, created) {
        (Ok(u), Ok(())) => u,
        (Err(e), _) | (Ok(_), Err(e)) => {
            database::discard(env.server, &plan.restoring).await;
            return Err(e);
        }
    };
    let unpack_ms = millis(t0);
    let scratch_bytes = unpacked.as_ref().map_or(0, |u| u.bytes);
    let path = match (&plan.archive, &unpacked) {
        (_, Some(u)) => Some(u.path().to_owned()),
        (Archive::Direct { path }, None) => Some(path.clone()),
        (Archive::Stream { .. }, None) => None,
        (Archive::Unpack { .. } | Archive::Fetch(_), None) => {
            return Err(RestoreError::Failed("not unpacked".into()));
        }
    };
    let applied = match globals_first(env, plan).await {
        Ok(applied) => applied,
        Err(e) => {
            database::discard(env.server, &plan.restoring).await;
            return Err(e);
        }
    };
    let placed = restore_into_place(env, plan, path.as_deref()).await;
    drop(unpacked);
    let (counts, replaced, restore_ms) = match placed {
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
        tables: counts.len(),
        rows: counts.values().sum(),
        jobs: plan.jobs,
        scratch_bytes,
        replaced,
        globals: applied.map(|g| g.items),
        safety_backup: None,
        unpack_ms,
        restore_ms,
        duration_ms: millis(t0),
    })
}

/// Creates the restoring database (and the schemas a filtered restore needs).
async fn create(env: &Env<'_>, plan: &RestorePlan) -> Result<(), RestoreError> {
    (env.progress)(format!("creating database {}", plan.restoring));
    database::create(env.server, &plan.restoring).await?;
    database::create_schemas(env.server, &plan.restoring, &plan.create_schemas).await
}

async fn unpack_if_needed(
    env: &Env<'_>,
    plan: &RestorePlan,
) -> Result<Option<Unpacked>, RestoreError> {
    match &plan.archive {
        Archive::Unpack { .. } => unpack::unpack(env, plan).await.map(Some),
        Archive::Fetch(fetch) => super::remote::unpack(env, &plan.id, fetch).await.map(Some),
        Archive::Direct { .. } | Archive::Stream { .. } => Ok(None),
    }
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
/// target's name; on failure the restoring database is dropped. Returns the counts, the name
/// a replaced database is kept under, and pg_restore's time.
async fn restore_into_place(
    env: &Env<'_>,
    plan: &RestorePlan,
    archive: Option<&Path>,
) -> Result<(BTreeMap<String, i64>, Option<String>, u64), RestoreError> {
    let t1 = Instant::now();
    let restored = restore_and_check(env, plan, archive).await;
    let restore_ms = millis(t1);
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
        Ok(replaced) => Ok((counts, replaced, restore_ms)),
        Err(e) => {
            database::discard(env.server, &plan.restoring).await;
            Err(e)
        }
    }
}

/// pg_restore from `archive`, or fed from the plan's archive when `None` ([`pipe`]), then the
/// row counts.
async fn restore_and_check(
    env: &Env<'_>,
    plan: &RestorePlan,
    archive: Option<&Path>,
) -> Result<BTreeMap<String, i64>, RestoreError> {
    let mut spec = pg::tool_spec(env.server, "pg_restore")
        .map_err(|e| RestoreError::Failed(e.to_string()))?
        .args([
            "--exit-on-error".to_owned(),
            format!("--jobs={}", plan.jobs),
            format!("--dbname={}", plan.restoring),
        ]);
    if !plan.keep_owners {
        spec = spec.args(["--no-owner", "--no-privileges"]);
    }
    for s in &plan.schemas {
        spec = spec.args([format!("--schema={s}")]);
    }
    for t in &plan.tables {
        spec = spec.args([format!("--table={t}")]);
    }
    (env.progress)(format!(
        "pg_restore -j {} into {}{}",
        plan.jobs,
        plan.restoring,
        if archive.is_none() {
            ", fed as the archive is decoded"
        } else {
            ""
        }
    ));
    match archive {
        Some(path) => outcome(
            process::run(&spec.args([path]), env.cancel, |_, _| {}).await,
            plan,
        )?,
        None => pipe::restore(env, plan, spec).await?,
    }
    (env.progress)("checking row counts against the dump's snapshot".into());
    let counts = database::count(env.server, &plan.restoring).await?;
    let problems = snapshot::compare(&plan.expected, &counts);
    if !problems.is_empty() {
        return Err(RestoreError::Failed(format!(
            "row counts differ after restore: {}",
            problems.join("; ")
        )));
    }
    Ok(counts)
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
