//! The PostgreSQL backend: a session advisory lock per job on a dedicated connection that lives
//! as long as the run.
//!
//! The lock key is the first 8 bytes of SHA-256(`<prefix>:lease:<job>`), so every host derives
//! the same key without a shared table. The connection's `application_name` is
//! `atpred:<host>`, which is how a refused host names the holder (`pg_locks` joined with
//! `pg_stat_activity`). The lock is the session's: when the holder dies or its connection
//! breaks, the server frees it, and the holder, whose liveness query fails or whose connection
//! task ends, cancels its run.

use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use super::{Acquired, Claim, CoordError, Holder, Lease, key, unreachable};
use crate::config::{CoordinationConfig, PostgresConfig};
use crate::ids::JobName;

const BACKEND: &str = "postgres";
/// `application_name` of lock connections: `atpred:<host>`.
pub const APP_PREFIX: &str = "atpred:";

/// A lock held on a dedicated connection.
pub struct PgLease {
    client: Client,
    connection: JoinHandle<()>,
    lock_key: i64,
    every: Duration,
}

/// The advisory-lock key of `job`.
pub fn lock_key(prefix: &str, job: &JobName) -> i64 {
    let digest = Sha256::digest(key(prefix, "lease", job).as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

pub(super) async fn acquire(
    c: &CoordinationConfig,
    pg: &PostgresConfig,
    dbname: &str,
    claim: &Claim,
) -> Result<Acquired, CoordError> {
    let every = c.renew_every();
    let app = format!("{APP_PREFIX}{}", c.host);
    let (client, connection) = crate::pg::connect_named(pg, dbname, &app)
        .await
        .map_err(|e| unreachable(BACKEND, e.to_string()))?;
    let lock_key = lock_key(&c.key_prefix, &claim.job);
    let got: bool = bounded(
        every,
        client.query_one("SELECT pg_try_advisory_lock($1)", &[&lock_key]),
    )
    .await?
    .try_get(0)
    .map_err(|e| unreachable(BACKEND, crate::pg::describe(&e)))?;
    if got {
        return Ok(Acquired::Held(Lease::Postgres(PgLease {
            client,
            connection,
            lock_key,
            every,
        })));
    }
    let holder = holder(&client, lock_key, every).await;
    drop(client);
    Ok(Acquired::Refused(holder.unwrap_or(Holder {
        host: "another session".into(),
        run_id: None,
        fencing_token: None,
        tick: None,
        note: None,
    })))
}

/// Who holds `lock_key` now, from `pg_locks` and `pg_stat_activity` (needs no privilege for
/// sessions of the same role; others show as "another session").
async fn holder(client: &Client, lock_key: i64, every: Duration) -> Option<Holder> {
    // A bigint advisory key shows as classid = high 32 bits, objid = low 32 bits, objsubid = 1.
    let bits = lock_key.cast_unsigned();
    let hi = (bits >> 32).to_string();
    let lo = (bits & 0xffff_ffff).to_string();
    let rows = bounded(
        every,
        client.query(
            "SELECT coalesce(a.application_name, '') FROM pg_locks l \
             LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
               AND l.classid::text = $1 AND l.objid::text = $2",
            &[&hi, &lo],
        ),
    )
    .await
    .ok()?;
    let app: String = rows.first()?.try_get(0).ok()?;
    let host = app.strip_prefix(APP_PREFIX).unwrap_or("another session");
    Some(Holder {
        host: if host.is_empty() {
            "another session"
        } else {
            host
        }
        .to_owned(),
        run_id: None,
        fencing_token: None,
        tick: None,
        note: None,
    })
}

impl PgLease {
    /// Checks the connection every ttl/3 with a bounded query; returns when it is gone (the
    /// server has then freed the lock, or will as soon as it notices).
    pub async fn keep(&mut self) -> String {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.every) => {}
                _ = &mut self.connection => {
                    return "lease lost: the PostgreSQL lock connection closed".into();
                }
            }
            if let Err(e) = bounded(self.every, self.client.simple_query("SELECT 1")).await {
                return format!(
                    "lease lost: the PostgreSQL lock connection failed ({})",
                    e.message
                );
            }
        }
    }

    pub async fn release(self) {
        let unlock = "SELECT pg_advisory_unlock($1)";
        if let Err(e) = bounded(self.every, self.client.query_one(unlock, &[&self.lock_key])).await
        {
            tracing::warn!("cannot unlock (closing the connection frees it): {e}");
        }
        // Dropping the client ends the session, which frees any lock left.
        drop(self.client);
        self.connection.abort();
    }
}

async fn bounded<T>(
    timeout: Duration,
    fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, CoordError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(unreachable(BACKEND, crate::pg::describe(&e))),
        Err(_) => Err(unreachable(
            BACKEND,
            format!("no reply within {}ms", timeout.as_millis()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use crate::ids::JobName;

    #[test]
    fn lock_keys_are_stable_and_distinct() {
        let a: JobName = "nightly".parse().unwrap();
        let b: JobName = "hourly".parse().unwrap();
        assert_eq!(super::lock_key("atpred", &a), super::lock_key("atpred", &a));
        assert_ne!(super::lock_key("atpred", &a), super::lock_key("atpred", &b));
        assert_ne!(super::lock_key("atpred", &a), super::lock_key("team2", &a));
    }
}
