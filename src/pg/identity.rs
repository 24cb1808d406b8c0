//! Which cluster a connection reaches: its system identifier, fixed at initdb and shared by
//! its physical standbys, so "the same server" does not depend on host names or ports.

use tokio_postgres::Client;

/// The cluster's system identifier as text (`pg_control_system()`, executable by any role),
/// or `None` when the server cannot tell (logged; callers treat unknown as "maybe the same").
pub async fn system_identifier(client: &Client) -> Option<String> {
    match client
        .query_one(
            "SELECT system_identifier::text FROM pg_control_system()",
            &[],
        )
        .await
    {
        Ok(row) => row.try_get(0).ok(),
        Err(e) => {
            tracing::debug!(
                "cannot read the cluster's system identifier: {}",
                super::describe(&e)
            );
            None
        }
    }
}
