//! Running the decided steps through our own connection (tokio-postgres: no psql child, no SQL
//! or password on any argv): what the target has, the steps, and undoing what was created
//! when the restore after them fails.

use std::collections::BTreeSet;

use tokio_postgres::Client;

use super::decide::{Item, Outcome, Phase, Step, Target};
use crate::pg;

/// What applying did: every item's outcome, and what was created (for [`undo`]).
#[derive(Debug, Default)]
pub struct Applied {
    pub items: Vec<Item>,
    pub roles: Vec<String>,
    pub tablespaces: Vec<String>,
}

/// The roles and tablespaces of the target cluster, and what the connected role may do.
pub async fn target(client: &Client) -> Result<Target, tokio_postgres::Error> {
    let names = |rows: Vec<tokio_postgres::Row>| -> BTreeSet<String> {
        rows.iter().map(|r| r.get::<_, String>(0)).collect()
    };
    let roles = names(
        client
            .query("SELECT rolname::text FROM pg_roles", &[])
            .await?,
    );
    let tablespaces = names(
        client
            .query("SELECT spcname::text FROM pg_tablespace", &[])
            .await?,
    );
    let me = client
        .query_one(
            "SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await?;
    Ok(Target {
        roles,
        tablespaces,
        superuser: me.get(0),
        createrole: me.get(1),
    })
}

/// Runs the planned steps: session settings, then roles, comments, settings and memberships
/// in one transaction with a savepoint each (a statement the server refuses is reported
/// NOT APPLIED with its message and the rest goes on), then each tablespace on its own.
/// An error outside a single statement (the connection, the commit) is returned.
pub async fn apply(client: &mut Client, steps: Vec<Step>) -> Result<Applied, String> {
    let mut applied = Applied::default();
    let e = |what: &str, e: tokio_postgres::Error| format!("{what}: {}", pg::describe(&e));
    // A lock held elsewhere on the role catalog must not hang the restore.
    client
        .batch_execute("SET lock_timeout = '30s'")
        .await
        .map_err(|x| e("setting lock_timeout", x))?;
    let (mut tx_steps, mut rest): (Vec<Step>, Vec<Step>) = steps
        .into_iter()
        .partition(|s| s.phase == Phase::Transaction);
    for s in rest.iter().filter(|s| s.phase == Phase::Session) {
        if let Some(sql) = &s.sql {
            client
                .batch_execute(sql.expose())
                .await
                .map_err(|x| e(sql.expose(), x))?;
        }
    }
    rest.retain(|s| s.phase != Phase::Session);
    let mut tx = client
        .transaction()
        .await
        .map_err(|x| e("starting the transaction", x))?;
    let mut pending_roles = Vec::new();
    for step in &mut tx_steps {
        let Some(sql) = step
            .sql
            .take()
            .filter(|_| step.item.outcome == Outcome::Planned)
        else {
            continue;
        };
        let sp = tx
            .savepoint("atpred_globals")
            .await
            .map_err(|x| e("savepoint", x))?;
        match sp.batch_execute(sql.expose()).await {
            Ok(()) => {
                sp.commit().await.map_err(|x| e("release savepoint", x))?;
                step.item.outcome = Outcome::Applied;
                pending_roles.extend(step.creates.clone());
            }
            Err(x) => {
                sp.rollback()
                    .await
                    .map_err(|x| e("rollback to savepoint", x))?;
                not_applied(&mut step.item, &x);
            }
        }
    }
    tx.commit()
        .await
        .map_err(|x| e("committing the new roles", x))?;
    applied.roles = pending_roles;
    applied.items.extend(tx_steps.into_iter().map(|s| s.item));
    for mut step in rest {
        if let Some(sql) = step
            .sql
            .take()
            .filter(|_| step.item.outcome == Outcome::Planned)
        {
            match client.batch_execute(sql.expose()).await {
                Ok(()) => {
                    step.item.outcome = Outcome::Applied;
                    applied.tablespaces.extend(step.creates.clone());
                }
                Err(x) => not_applied(&mut step.item, &x),
            }
        }
        applied.items.push(step.item);
    }
    Ok(applied)
}

fn not_applied(item: &mut Item, e: &tokio_postgres::Error) {
    item.outcome = Outcome::NotApplied;
    item.reason = pg::describe(e);
}

/// Drops what [`apply`] created (tablespaces, then roles, newest first) after the restore
/// failed, so that a retry finds the cluster as it was. Failures are logged, not raised.
pub async fn undo(client: &Client, applied: &Applied) {
    let drops = applied
        .tablespaces
        .iter()
        .rev()
        .map(|t| {
            (
                t,
                format!("DROP TABLESPACE IF EXISTS {}", pg::quote_ident(t)),
            )
        })
        .chain(
            applied
                .roles
                .iter()
                .rev()
                .map(|r| (r, format!("DROP ROLE IF EXISTS {}", pg::quote_ident(r)))),
        );
    for (name, sql) in drops {
        if let Err(e) = client.batch_execute(&sql).await {
            tracing::warn!(
                "the restore failed, and {name}, created for it from globals.sql, cannot be \
                 dropped: {}",
                pg::describe(&e)
            );
        }
    }
}
