//! What the server says about the slot (WAL it holds back, how far the receiver lags) and the
//! job's health check, `wal:<job>`, judged from that and from the archive itself.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Snapshot;
use crate::config::WalArchiveSpec;
use crate::protocol::HealthStatus;

/// The slot as the server sees it.
#[derive(Debug, Clone, Default)]
pub struct SlotView {
    pub exists: bool,
    /// WAL the slot holds back on the server (current position minus its restart_lsn).
    pub retained_bytes: u64,
    /// Current position minus what the receiver flushed.
    pub lag_bytes: u64,
    /// pg_stat_replication's flush_lag; 0 when caught up.
    pub lag_seconds: f64,
}

/// Reads the slot's numbers on a fresh connection (`[postgres]`, its passfile).
pub async fn observe(spec: &WalArchiveSpec) -> Result<SlotView, String> {
    let client = crate::pg::connect(&spec.postgres, &spec.postgres.dbname)
        .await
        .map_err(|e| e.to_string())?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&spec.slot];
    let query = client.query_opt(
        "WITH here AS (SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() \
                                   ELSE pg_current_wal_lsn() END AS lsn) \
         SELECT coalesce((here.lsn - s.restart_lsn)::int8, 0), \
                coalesce((here.lsn - coalesce(r.flush_lsn, s.restart_lsn))::int8, 0), \
                coalesce(extract(epoch FROM r.flush_lag)::float8, 0) \
         FROM pg_replication_slots s CROSS JOIN here \
         LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid \
         WHERE s.slot_name = $1",
        &params,
    );
    let row = tokio::time::timeout(super::QUERY_TIMEOUT, query)
        .await
        .map_err(|_| "the slot query timed out".to_owned())?
        .map_err(|e| crate::pg::describe(&e))?;
    Ok(match row {
        None => SlotView::default(),
        Some(r) => SlotView {
            exists: true,
            retained_bytes: u64::try_from(r.get::<_, i64>(0)).unwrap_or(0),
            lag_bytes: u64::try_from(r.get::<_, i64>(1)).unwrap_or(0),
            lag_seconds: r.get::<_, f64>(2),
        },
    })
}

/// The check's verdict: the worst finding decides, every finding is in the message.
pub fn judge(
    spec: &WalArchiveSpec,
    snap: &Snapshot,
    slot: &Result<SlotView, String>,
    now: DateTime<Utc>,
) -> (HealthStatus, String) {
    let mut findings: Vec<(HealthStatus, String)> = Vec::new();
    let mut fail = |m: String| findings.push((HealthStatus::Fail, m));
    if snap.status.receiver == "refused" {
        fail(format!(
            "refused: {}",
            snap.status.message.clone().unwrap_or_default()
        ));
    }
    if snap.status.receiver == "backing-off" {
        fail(format!(
            "receiver down: {}",
            snap.status.message.clone().unwrap_or_default()
        ));
    }
    if let Some(e) = &snap.archive_error {
        fail(format!("archiving failed: {e}"));
    }
    if let Some(r) = &snap.recreated {
        fail(format!(
            "slot {} was recreated at {} (it was missing): WAL after {} may be missing; a new base backup is required",
            r.slot,
            r.at.format("%Y-%m-%dT%H:%M:%SZ"),
            r.after_segment
                .as_deref()
                .unwrap_or("the last archived segment")
        ));
    }
    for (first, last) in &snap.gaps {
        fail(format!("gap in the archive: {first} to {last} missing"));
    }
    match slot {
        Err(e) => fail(format!("cannot read the slot: {e}")),
        Ok(v) if !v.exists && snap.status.receiver == "receiving" => {
            fail(format!("replication slot {} does not exist", spec.slot));
        }
        Ok(v) => {
            let retained = v.retained_bytes;
            let text = format!(
                "slot {} holds {} of WAL on the server (max_slot_wal_keep_size caps it)",
                spec.slot,
                bytesize::ByteSize(retained)
            );
            if retained >= spec.retained_fail {
                fail(text);
            } else if retained >= spec.retained_warn {
                findings.push((HealthStatus::Warn, text));
            }
        }
    }
    for (target, e) in &snap.offsite_errors {
        findings.push((
            HealthStatus::Warn,
            format!("offsite {target}: segments not copied yet: {e}"),
        ));
    }
    if let (Some(max), Some(last)) = (spec.archive_max_age, snap.newest_completed) {
        let age = (now - last).to_std().unwrap_or(Duration::ZERO);
        if age > max {
            findings.push((
                HealthStatus::Fail,
                format!(
                    "newest archived segment is {} old (archive-max-age {})",
                    humantime::format_duration(Duration::from_secs(age.as_secs())),
                    humantime::format_duration(max)
                ),
            ));
        }
    }
    let worst = findings
        .iter()
        .map(|(s, _)| *s)
        .max()
        .unwrap_or(HealthStatus::Ok);
    if worst == HealthStatus::Ok {
        let lag = slot.as_ref().map(|v| v.lag_bytes).unwrap_or(0);
        return (
            HealthStatus::Ok,
            format!(
                "{}, {} segments archived (newest {}), lag {}",
                snap.status.receiver,
                snap.status.segments,
                snap.status.last_segment.as_deref().unwrap_or("none yet"),
                bytesize::ByteSize(lag)
            ),
        );
    }
    let text: Vec<String> = findings
        .into_iter()
        .filter(|(s, _)| *s != HealthStatus::Ok)
        .map(|(_, m)| m)
        .collect();
    (worst, text.join("; "))
}
