//! The databases a restore touches, through our own connection to the maintenance database:
//! is the target free, create the restoring database, rename it into place, drop it on failure.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio_postgres::Client;

use super::RestoreError;
use crate::config::PostgresConfig;
use crate::jobs::backup::snapshot;
use crate::pg;

/// What is under the target's name now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Missing,
    /// Exists with no user table: taken over (dropped just before the rename).
    Empty,
    NotEmpty(i64),
}

fn failed(what: &str, e: impl std::fmt::Display) -> RestoreError {
    RestoreError::Failed(format!("{what}: {e}"))
}

/// A connection to the `postgres` database, or to the configured one when that is refused.
///
/// Its commits are synchronous whatever the server's default: the restore's own sessions
/// commit asynchronously ([`super::ASYNC_COMMIT_SQL`]), and the rename that publishes a restore
/// is what makes their work durable, since flushing its commit record flushes all the WAL
/// before it.
pub(super) async fn maintenance(config: &PostgresConfig) -> Result<Client, RestoreError> {
    let client = match pg::connect(config, "postgres").await {
        Ok(c) => c,
        Err(_) => pg::connect(config, &config.dbname)
            .await
            .map_err(|e| failed("connecting to the server", e))?,
    };
    client
        .batch_execute("SET synchronous_commit = on")
        .await
        .map_err(|e| failed("setting up a session", pg::describe(&e)))?;
    Ok(client)
}

/// The system identifier of the cluster restored onto (`None` when it cannot tell).
pub async fn system_identifier(config: &PostgresConfig) -> Result<Option<String>, RestoreError> {
    let client = maintenance(config).await?;
    Ok(pg::identity::system_identifier(&client).await)
}

pub async fn target(config: &PostgresConfig, db: &str) -> Result<Target, RestoreError> {
    let client = maintenance(config).await?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])
        .await
        .map_err(|e| failed("looking up the target", pg::describe(&e)))?
        .is_some();
    if !exists {
        return Ok(Target::Missing);
    }
    let inside = pg::connect(config, db)
        .await
        .map_err(|e| failed(&format!("connecting to {db}"), e))?;
    let tables: i64 = inside
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') \
             AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'",
            &[],
        )
        .await
        .map_err(|e| failed(&format!("looking into {db}"), pg::describe(&e)))?
        .get(0);
    Ok(if tables == 0 {
        Target::Empty
    } else {
        Target::NotEmpty(tables)
    })
}

/// Creates the restoring database, replacing a leftover of an interrupted restore.
pub async fn create(config: &PostgresConfig, name: &str) -> Result<(), RestoreError> {
    let client = maintenance(config).await?;
    let quoted = pg::quote_ident(name);
    for sql in [
        format!("DROP DATABASE IF EXISTS {quoted}"),
        format!("CREATE DATABASE {quoted}"),
    ] {
        client.batch_execute(&sql).await.map_err(|e| {
            failed(
                &format!("creating {name} (the role needs CREATEDB)"),
                pg::describe(&e),
            )
        })?;
    }
    Ok(())
}

/// Creates `schemas` in `db`: pg_restore `-n`/`-t` restore the objects named, not the schema
/// that holds them.
pub async fn create_schemas(
    config: &PostgresConfig,
    db: &str,
    schemas: &[String],
) -> Result<(), RestoreError> {
    if schemas.is_empty() {
        return Ok(());
    }
    let client = pg::connect(config, db)
        .await
        .map_err(|e| failed(&format!("connecting to {db}"), e))?;
    for s in schemas {
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {}",
                pg::quote_ident(s)
            ))
            .await
            .map_err(|e| failed(&format!("creating schema {s}"), pg::describe(&e)))?;
    }
    Ok(())
}

/// Row counts of every user table of `db`, on two connections at once: after a restore each
/// count reads (and sets the hint bits of) a whole table, so two tables are read at a time,
/// the biggest first, each connection taking the next table when it is done.
pub async fn count(
    config: &PostgresConfig,
    db: &str,
) -> Result<BTreeMap<String, i64>, RestoreError> {
    let connect = || async {
        pg::connect(config, db)
            .await
            .map_err(|e| failed(&format!("connecting to {db}"), e))
    };
    let (a, b) = tokio::try_join!(connect(), connect())?;
    let query = |e: tokio_postgres::Error| failed("counting rows", pg::describe(&e));
    let tables: Vec<String> = a
        .query(
            &format!("{} ORDER BY 2 DESC, 1", snapshot::USER_TABLES),
            &[],
        )
        .await
        .map_err(query)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let next = AtomicUsize::new(0);
    let worker = |client: Client| {
        let (tables, next) = (&tables, &next);
        async move {
            let mut counts = Vec::new();
            while let Some(table) = tables.get(next.fetch_add(1, Ordering::Relaxed)) {
                // The name comes from quote_ident, so it is safe to splice.
                let n: i64 = client
                    .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                    .await
                    .map_err(query)?
                    .get(0);
                counts.push((table.clone(), n));
            }
            Ok::<_, RestoreError>(counts)
        }
    };
    let (x, y) = tokio::try_join!(worker(a), worker(b))?;
    Ok(x.into_iter().chain(y).collect())
}

/// Renames `from` to `to`; an empty database under `to` (checked again here, in the same
/// transaction-free order: check, drop, rename) is dropped first.
pub async fn rename(config: &PostgresConfig, from: &str, to: &str) -> Result<(), RestoreError> {
    match target(config, to).await? {
        Target::NotEmpty(tables) => {
            return Err(RestoreError::TargetNotEmpty {
                db: to.to_owned(),
                tables,
            });
        }
        Target::Empty => {
            let client = maintenance(config).await?;
            client
                .batch_execute(&format!("DROP DATABASE {}", pg::quote_ident(to)))
                .await
                .map_err(|e| failed(&format!("dropping the empty {to}"), pg::describe(&e)))?;
        }
        Target::Missing => {}
    }
    let client = maintenance(config).await?;
    client
        .batch_execute(&format!(
            "ALTER DATABASE {} RENAME TO {}",
            pg::quote_ident(from),
            pg::quote_ident(to)
        ))
        .await
        .map_err(|e| failed(&format!("renaming {from} to {to}"), pg::describe(&e)))
}

/// Drops the restoring database after a failure; a failure to drop is logged, not raised.
pub async fn discard(config: &PostgresConfig, name: &str) {
    let dropped = async {
        let client = maintenance(config).await?;
        client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                pg::quote_ident(name)
            ))
            .await
            .map_err(|e| failed("drop", pg::describe(&e)))
    };
    if let Err(e) = dropped.await {
        tracing::warn!("cannot drop the unfinished restore database {name}: {e}");
    }
}
