//! The PITR drill: the proof that a base backup and the WAL archive restore. The newest base
//! backup (or the one named) plus every segment archived by now minus `pitr-drill-lag` is
//! staged into a private folder in restore-scratch-dir, exactly as a restore stages it; a
//! private server ([`super::server`]) replays it and is promoted; then the job's `drill-sql`
//! smoke queries and `pg_amcheck --all --install-missing` run against it; then it is stopped
//! and the folder removed, whatever happened. It reports the base, the segments replayed, the
//! LSN reached, the recovery point's age and its duration; its error names the cause (a
//! damaged segment by name, the server's last log lines).
//!
//! As root the server runs as `postgres` (PostgreSQL refuses root), which must be able to
//! reach restore-scratch-dir; otherwise it runs as the daemon's own user.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::server::Private;
use super::{plan, stage};
use crate::config::{Config, DrillSql, PostgresConfig};
use crate::process::{self, ProcessError};
use crate::restore::smoke::{self, SmokeResult};

/// How long the drill waits for the base backup's stop segment to be archived.
const STOP_SEGMENT_WAIT: Duration = Duration::from_secs(120);
/// How long recovery may take.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(1800);
const PREFIX: &str = ".pitr-drill-";

/// What a drill needs besides the configuration.
pub struct DrillEnv<'a> {
    pub config: &'a Config,
    /// The physical backup job's database (the smoke queries run there).
    pub dbname: &'a str,
    pub drill_sql: &'a [DrillSql],
    pub identity: Option<&'a Path>,
    pub lag: Duration,
    pub cancel: &'a CancellationToken,
    pub progress: &'a (dyn Fn(String) + Sync),
}

/// What a passed drill found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillReport {
    pub base: String,
    pub segments_replayed: usize,
    pub first_segment: String,
    pub last_segment: String,
    /// `pg_last_wal_replay_lsn()` once promoted.
    pub reached_lsn: String,
    /// When the last replayed segment was completed, and how long before the drill's end.
    pub recovery_point: DateTime<Utc>,
    pub recovery_point_age_seconds: f64,
    pub smoke: Vec<SmokeResult>,
    pub amcheck: String,
    pub duration_ms: u64,
}

/// Drills base backup `base` (default: the newest verified one).
pub async fn run(env: &DrillEnv<'_>, base: Option<&str>) -> Result<DrillReport, String> {
    let t0 = Instant::now();
    let (_, spec) = super::archive_job(env.config, None).map_err(|e| e.to_string())?;
    let found = super::bases(&env.config.daemon.backup_dir);
    let (b, folder, manifest) = found
        .into_iter()
        .filter(|(b, _, _)| base.is_none_or(|id| b.id == id))
        .max_by_key(|(b, _, _)| b.finished)
        .ok_or("no verified physical base backup to drill")?;
    (env.progress)(format!("PITR drill of {}: waiting for its WAL", b.id));
    let entries = wait_for_stop(env, &spec.archive_dir, &b).await?;
    let cutoff = Utc::now() - chrono::Duration::from_std(env.lag).unwrap_or_default();
    let plan = plan::drill(&b, &super::segments(&entries), cutoff).map_err(|e| e.to_string())?;
    let owner = drill_owner()?;
    let work = Work::create(&env.config.daemon.restore_scratch_dir, &b.id, owner)?;
    let identity = super::identity_for(env.config, &manifest, env.identity, &entries)
        .map_err(|e| e.to_string())?;
    let atpred = super::atpred_binary().map_err(|e| e.to_string())?;
    let (data, token) = (work.data.clone(), env.cancel.clone());
    let staged_plan = plan.clone();
    let archive_dir = spec.archive_dir.clone();
    (env.progress)(format!(
        "PITR drill: staging {} and WAL {} to {}",
        plan.base,
        plan.first(),
        plan.last()
    ));
    tokio::task::spawn_blocking(move || {
        let inputs = stage::Inputs {
            folder: &folder,
            manifest: &manifest,
            archive_dir: &archive_dir,
            entries: &entries,
            identity: identity.as_deref(),
            atpred: &atpred,
            owner,
            durable: false,
        };
        stage::stage(
            &inputs,
            &staged_plan,
            &data,
            &|| token.is_cancelled(),
            &|_| {},
        )
    })
    .await
    .map_err(|e| e.to_string())??;
    let postgres = crate::pg::tool(&env.config.postgres, "postgres").map_err(|e| e.to_string())?;
    let mut server = Private::start(&postgres, &work.data, &work.socket, owner)?;
    (env.progress)("PITR drill: replaying WAL".into());
    let result = checks(env, &mut server).await;
    server.stop().await;
    drop(work);
    let (reached_lsn, smoke, amcheck) = result?;
    let now = Utc::now();
    Ok(DrillReport {
        base: plan.base.clone(),
        segments_replayed: plan.segments.len(),
        first_segment: plan.first().to_owned(),
        last_segment: plan.last().to_owned(),
        reached_lsn,
        recovery_point: plan.reaches,
        recovery_point_age_seconds: (now - plan.reaches).num_milliseconds().max(0) as f64 / 1000.0,
        smoke,
        amcheck,
        duration_ms: u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// Promotion, the smoke queries and pg_amcheck.
async fn checks(
    env: &DrillEnv<'_>,
    server: &mut Private,
) -> Result<(String, Vec<SmokeResult>, String), String> {
    let me = server.server(&env.config.postgres.user, &env.config.postgres);
    let lsn = server.promoted(&me, RECOVERY_TIMEOUT, env.cancel).await?;
    (env.progress)(format!(
        "PITR drill: promoted at {lsn}; smoke queries, pg_amcheck"
    ));
    let smoke = smoke::run(&me, env.dbname, env.drill_sql).await;
    if let Some(failed) = smoke.iter().find(|s| !s.passed) {
        return Err(failed.describe());
    }
    let superuser = superuser(&me).await?;
    let amcheck = amcheck(&server.server(&superuser, &env.config.postgres), env.cancel).await?;
    Ok((lsn, smoke, amcheck))
}

/// The bootstrap superuser (oid 10), whom pg_amcheck --install-missing needs.
async fn superuser(server: &PostgresConfig) -> Result<String, String> {
    let client = crate::pg::connect(server, "postgres")
        .await
        .map_err(|e| e.to_string())?;
    client
        .query_one("SELECT rolname::text FROM pg_roles WHERE oid = 10", &[])
        .await
        .map(|r| r.get(0))
        .map_err(|e| format!("finding the superuser: {e}"))
}

async fn amcheck(server: &PostgresConfig, cancel: &CancellationToken) -> Result<String, String> {
    let spec = crate::pg::tool_spec(server, "pg_amcheck")
        .map_err(|e| e.to_string())?
        .args(["--all", "--install-missing", "--maintenance-db=postgres"]);
    match process::run(&spec, cancel, |_, _| {}).await {
        Err(ProcessError::Cancelled) => Err("cancelled".into()),
        Err(e) => Err(format!("pg_amcheck: {e}")),
        Ok(out) if !out.status.success() => Err(format!(
            "pg_amcheck found corruption or failed ({}): {} {}",
            process::describe_status(&out.status),
            out.stdout_tail.join(" | "),
            out.stderr_summary(5)
        )),
        Ok(_) => Ok("pg_amcheck --all: no corruption found".into()),
    }
}

/// The index once the base backup's stop segment is in it.
async fn wait_for_stop(
    env: &DrillEnv<'_>,
    archive_dir: &Path,
    base: &plan::Base,
) -> Result<Vec<crate::wal::index::Entry>, String> {
    let t0 = Instant::now();
    loop {
        let entries = super::read_index(archive_dir).map_err(|e| e.to_string())?;
        match plan::drill(base, &super::segments(&entries), Utc::now()) {
            // Not archived yet (the switch at the backup's stop is seconds old), or a hole.
            Err(plan::PlanError::Gap(_)) if t0.elapsed() < STOP_SEGMENT_WAIT => {}
            Err(e) => return Err(e.to_string()),
            Ok(_) => return Ok(entries),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            () = env.cancel.cancelled() => return Err("cancelled".into()),
        }
    }
}

/// As root: the `postgres` user (PostgreSQL refuses root); else the daemon's own user.
fn drill_owner() -> Result<Option<(u32, u32)>, String> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    match super::owner(Some("postgres")) {
        Ok(o) => Ok(o),
        Err(_) => Err(
            "the daemon runs as root and there is no postgres user to run the drill's server as"
                .into(),
        ),
    }
}

/// The drill's folder: `data/` (the restored cluster) and `socket/`, removed when dropped.
struct Work {
    root: crate::scratch::WorkDir,
    data: PathBuf,
    socket: PathBuf,
}

impl Work {
    fn create(scratch: &Path, id: &str, owner: Option<(u32, u32)>) -> Result<Work, String> {
        let err = |e: std::io::Error| format!("restore-scratch-dir {}: {e}", scratch.display());
        let root = crate::scratch::WorkDir::create(scratch, PREFIX, id).map_err(err)?;
        let work = Work {
            data: root.path().join("data"),
            socket: root.path().join("socket"),
            root,
        };
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&work.socket)
            .map_err(err)?;
        if let Some((uid, gid)) = owner {
            for p in [work.root.path(), &work.socket] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).map_err(err)?;
            }
            reachable(scratch, uid)?;
        }
        Ok(work)
    }
}

/// Refuses when user `uid` cannot reach `dir` (a folder on the way without x for others).
fn reachable(dir: &Path, uid: u32) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    for p in dir.ancestors() {
        let Ok(m) = std::fs::metadata(p) else {
            continue;
        };
        if m.uid() != uid && m.mode() & 0o001 == 0 {
            return Err(format!(
                "the drill's server runs as postgres, which cannot reach restore-scratch-dir {}: \
                 {} is mode {:o}; give it o+x (e.g. 0711) or set daemon.restore-scratch-dir to \
                 a folder postgres can reach",
                dir.display(),
                p.display(),
                m.mode() & 0o7777
            ));
        }
    }
    Ok(())
}
