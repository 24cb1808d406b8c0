//! The replication slot: looked up on our own connection before each start of the receiver,
//! created by `pg_receivewal --create-slot --if-not-exists` (the replication role's own
//! connection, the same passfile) when missing. A slot missing once segments were archived was
//! dropped behind our back: the server may have recycled WAL nobody archived, so the archive
//! has a gap from there and a new base backup is required. That is recorded in the archive
//! folder (`slot-recreated.json`), reported by health and sent as an alert.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::JobState;
use crate::config::WalArchiveSpec;
use crate::process;

pub const RECREATED_FILE: &str = "slot-recreated.json";

/// What `slot-recreated.json` says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recreated {
    pub slot: String,
    pub at: DateTime<Utc>,
    /// The newest segment archived before the slot went missing.
    pub after_segment: Option<String>,
}

/// A base backup of `job` that started at `started` succeeded: the marker of every
/// wal-archive job counting `job`'s base backups, recreated before then, is cleared (the new
/// base backup does not need the WAL that may be lost). Returns the jobs cleared.
pub fn base_backup_taken(
    config: &crate::config::Config,
    job: &crate::ids::JobName,
    started: DateTime<Utc>,
) -> Vec<crate::ids::JobName> {
    let mut cleared = Vec::new();
    for j in config.jobs.values() {
        let crate::config::JobSpec::WalArchive(wal) = &j.spec else {
            continue;
        };
        if !super::prune::base_jobs(config, wal).contains(job) {
            continue;
        }
        let Some(marker) = recreated(&wal.archive_dir).filter(|m| m.at <= started) else {
            continue;
        };
        let path = wal.archive_dir.join(RECREATED_FILE);
        match std::fs::remove_file(&path).and_then(|()| crate::publish::sync_dir(&wal.archive_dir))
        {
            Ok(()) => {
                tracing::info!(
                    slot = %marker.slot,
                    "base backup of {job} taken after slot {} was recreated: the archive of {} is usable again",
                    marker.slot,
                    j.name
                );
                cleared.push(j.name.clone());
            }
            Err(e) => tracing::error!("cannot remove {}: {e}", path.display()),
        }
    }
    cleared
}

/// Reads the marker, if the slot was ever recreated under this archive.
pub fn recreated(archive_dir: &Path) -> Option<Recreated> {
    let text = std::fs::read(archive_dir.join(RECREATED_FILE)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Makes sure the slot exists; creates it when missing.
pub async fn ensure(
    spec: &WalArchiveSpec,
    state: &JobState,
    cancel: &CancellationToken,
) -> Result<(), String> {
    if exists(spec).await? {
        return Ok(());
    }
    create(spec, cancel).await?;
    let Some(after) = state.newest_archived() else {
        tracing::info!(slot = %spec.slot, "created the replication slot");
        return Ok(());
    };
    let marker = Recreated {
        slot: spec.slot.clone(),
        at: Utc::now(),
        after_segment: Some(after.clone()),
    };
    tracing::error!(
        slot = %spec.slot,
        "the replication slot {} was missing (dropped?) and has been recreated: WAL after segment {after} may be lost from the archive; a new base backup is required",
        spec.slot
    );
    let bytes = serde_json::to_vec(&marker).map_err(|e| e.to_string())?;
    if let Err(e) =
        crate::publish::write_atomic(&spec.archive_dir.join(RECREATED_FILE), &bytes, 0o600)
    {
        tracing::error!("cannot record the recreated slot: {e}");
    }
    state.slot_recreated(marker);
    Ok(())
}

async fn exists(spec: &WalArchiveSpec) -> Result<bool, String> {
    let client = crate::pg::connect(&spec.postgres, &spec.postgres.dbname)
        .await
        .map_err(|e| e.to_string())?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&spec.slot];
    let query = client.query_opt(
        "SELECT slot_type::text FROM pg_replication_slots WHERE slot_name = $1",
        &params,
    );
    let row = tokio::time::timeout(super::QUERY_TIMEOUT, query)
        .await
        .map_err(|_| "looking up the replication slot timed out".to_owned())?
        .map_err(|e| crate::pg::describe(&e))?;
    match row {
        None => Ok(false),
        Some(r) if r.get::<_, String>(0) == "physical" => Ok(true),
        Some(_) => Err(format!(
            "replication slot {} is a logical slot; name a physical one or none (slot = ...)",
            spec.slot
        )),
    }
}

async fn create(spec: &WalArchiveSpec, cancel: &CancellationToken) -> Result<(), String> {
    let tool = crate::pg::tool_spec(&spec.replication, "pg_receivewal")
        .map_err(|e| e.to_string())?
        .args([
            "--slot",
            spec.slot.as_str(),
            "--create-slot",
            "--if-not-exists",
        ]);
    let out = tokio::time::timeout(super::QUERY_TIMEOUT, process::run(&tool, cancel, |_, _| {}))
        .await
        .map_err(|_| "creating the replication slot timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = out.stderr_summary(2);
    let hint = crate::pg::auth_hint(&stderr)
        .map(|h| format!(" ({h})"))
        .unwrap_or_default();
    Err(format!(
        "cannot create replication slot {} ({}): {stderr}{hint}",
        spec.slot,
        process::describe_status(&out.status)
    ))
}
