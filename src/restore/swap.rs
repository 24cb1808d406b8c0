//! `--replace`: swapping a checked restore in under an existing database's name.
//!
//! The old database is never dropped: it is kept under [`replaced_name`] (connections allowed
//! again) until the operator drops it, so a replace loses nothing even when the restored data
//! turns out to be the wrong one. Other sessions on the target are terminated only here, after
//! the restore and its row-count checks passed, so a failed or cancelled restore leaves the
//! old database and its sessions untouched.

use tokio_postgres::Client;

use super::RestoreError;
use crate::config::PostgresConfig;
use crate::pg;

/// The suffix of the name the replaced database is kept under.
pub const REPLACED_SUFFIX: &str = "_atpred_replaced";

/// The name `to`'s old database is kept under after a replace (cut to PostgreSQL's 63 bytes
/// on a character boundary).
pub fn replaced_name(to: &str) -> String {
    let mut name = format!("{to}{REPLACED_SUFFIX}");
    while name.len() > 63 {
        // Cut the target's part, keeping the suffix whole so the name says what it is.
        let cut = name.len() - REPLACED_SUFFIX.len();
        let mut head = name[..cut].to_owned();
        head.pop();
        name = format!("{head}{REPLACED_SUFFIX}");
    }
    name
}

fn failed(what: &str, e: impl std::fmt::Display) -> RestoreError {
    RestoreError::Failed(format!("{what}: {e}"))
}

async fn exists(client: &Client, db: &str) -> Result<bool, RestoreError> {
    Ok(client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])
        .await
        .map_err(|e| failed("looking up a database", pg::describe(&e)))?
        .is_some())
}

/// Refuses a replace whose keep-name is taken (by an earlier replace): it is never overwritten.
pub async fn check_free(config: &PostgresConfig, to: &str) -> Result<(), RestoreError> {
    let kept = replaced_name(to);
    let client = super::database::maintenance(config).await?;
    if exists(&client, &kept).await? {
        return Err(RestoreError::ReplacedExists(kept));
    }
    Ok(())
}

/// Puts `restoring` under the name `to`. A database under `to` is closed to new connections,
/// its other sessions are terminated, and it is renamed to [`replaced_name`]; then `restoring`
/// takes the name. If that last rename fails, the old database gets its name back. Returns the
/// name the old database is kept under, if there was one.
pub async fn swap(
    config: &PostgresConfig,
    restoring: &str,
    to: &str,
) -> Result<Option<String>, RestoreError> {
    let client = super::database::maintenance(config).await?;
    let (q_to, q_restoring) = (pg::quote_ident(to), pg::quote_ident(restoring));
    let kept = if exists(&client, to).await? {
        let kept = replaced_name(to);
        if exists(&client, &kept).await? {
            return Err(RestoreError::ReplacedExists(kept));
        }
        let q_kept = pg::quote_ident(&kept);
        // Closed first, so that no session comes back between the terminate and the rename.
        client
            .batch_execute(&format!("ALTER DATABASE {q_to} ALLOW_CONNECTIONS false"))
            .await
            .map_err(|e| failed(&format!("closing {to} to new sessions"), pg::describe(&e)))?;
        let moved = async {
            client
                .execute(
                    "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_backend_pid()",
                    &[&to],
                )
                .await
                .map_err(|e| failed(&format!("ending the sessions on {to}"), pg::describe(&e)))?;
            client
                .batch_execute(&format!("ALTER DATABASE {q_to} RENAME TO {q_kept}"))
                .await
                .map_err(|e| failed(&format!("renaming {to} to {kept}"), pg::describe(&e)))
        };
        if let Err(e) = moved.await {
            reopen(&client, &q_to).await;
            return Err(e);
        }
        reopen(&client, &q_kept).await;
        Some(kept)
    } else {
        None
    };
    let renamed = client
        .batch_execute(&format!("ALTER DATABASE {q_restoring} RENAME TO {q_to}"))
        .await
        .map_err(|e| failed(&format!("renaming {restoring} to {to}"), pg::describe(&e)));
    if let Err(e) = renamed {
        if let Some(kept) = &kept {
            let back = format!("ALTER DATABASE {} RENAME TO {q_to}", pg::quote_ident(kept));
            if let Err(b) = client.batch_execute(&back).await {
                tracing::error!(
                    "the database {to} is kept as {kept}: renaming it back failed: {}",
                    pg::describe(&b)
                );
            }
        }
        return Err(e);
    }
    Ok(kept)
}

/// Allows connections again (the old database stays usable for inspection).
async fn reopen(client: &Client, quoted: &str) {
    if let Err(e) = client
        .batch_execute(&format!("ALTER DATABASE {quoted} ALLOW_CONNECTIONS true"))
        .await
    {
        tracing::warn!(
            "cannot allow connections to {quoted} again: {}",
            pg::describe(&e)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaced_names_fit_postgres() {
        assert_eq!(replaced_name("app"), "app_atpred_replaced");
        let long = "é".repeat(40);
        let n = replaced_name(&long);
        assert!(n.len() <= 63, "{n}");
        assert!(n.ends_with(REPLACED_SUFFIX), "{n}");
    }
}
