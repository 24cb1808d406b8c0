//! `run-on`: whether a backup's source server is the kind the job wants, asked with
//! `pg_is_in_recovery()` just before the run (a failover turns a replica into a primary at any
//! time, so this is never cached).

use std::time::Duration;

use crate::config::{PostgresConfig, RunOn};

const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// `Ok(None)`: go on; `Ok(Some(why))`: skip the tick; `Err`: the server could not be asked.
pub async fn check(
    pg: &PostgresConfig,
    dbname: &str,
    want: RunOn,
) -> Result<Option<String>, String> {
    let client = crate::pg::connect(pg, dbname)
        .await
        .map_err(|e| format!("run-on = {}: {e}", want.as_str()))?;
    let row = tokio::time::timeout(
        QUERY_TIMEOUT,
        client.query_one("SELECT pg_is_in_recovery()", &[]),
    )
    .await
    .map_err(|_| format!("run-on = {}: pg_is_in_recovery() timed out", want.as_str()))?
    .map_err(|e| format!("run-on = {}: {}", want.as_str(), crate::pg::describe(&e)))?;
    let replica: bool = row
        .try_get(0)
        .map_err(|e| format!("run-on = {}: {}", want.as_str(), crate::pg::describe(&e)))?;
    let is = if replica { "replica" } else { "primary" };
    let fits = match want {
        RunOn::Any => true,
        RunOn::Primary => !replica,
        RunOn::Replica => replica,
    };
    Ok((!fits).then(|| {
        format!(
            "run-on = {}, but {}:{} is a {is}",
            want.as_str(),
            pg.host,
            pg.port
        )
    }))
}
