//! The scratch database of a restore drill: created empty, counted, dropped whatever
//! happened; one drill at a time.

use tokio_util::sync::CancellationToken;

use super::snapshot;
use super::verify::Found;
use crate::config::{PostgresConfig, VerifyLevel};
use crate::pg;

/// The scratch database of a restore drill.
pub(super) struct Scratch {
    target: PostgresConfig,
    pub(super) name: String,
    maintenance_db: String,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

/// Restore drills run one at a time: they all use `<db>_atpred_verify`, and two at once would
/// drop each other's database (a nightly run and `backups verify --level restore`).
static DRILLS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Scratch {
    pub(super) async fn create(
        target: &PostgresConfig,
        database: &str,
        cancel: &CancellationToken,
        level: VerifyLevel,
    ) -> Result<Scratch, Found> {
        let turn = tokio::select! {
            t = DRILLS.lock() => t,
            () = cancel.cancelled() => return Err(Found::Cancelled),
        };
        let problem = |e: String| Found::Problem(level, e);
        let mut name = format!("{database}_atpred_verify");
        name.truncate(63);
        let (client, maintenance_db) = match pg::connect(target, "postgres").await {
            Ok(c) => (c, "postgres".to_owned()),
            Err(_) => (
                pg::connect(target, &target.dbname)
                    .await
                    .map_err(|e| problem(e.to_string()))?,
                target.dbname.clone(),
            ),
        };
        let quoted = pg::quote_ident(&name);
        for sql in [
            format!("DROP DATABASE IF EXISTS {quoted}"),
            format!("CREATE DATABASE {quoted}"),
        ] {
            client.batch_execute(&sql).await.map_err(|e| {
                problem(format!(
                    "cannot create the scratch database {name} (the role needs CREATEDB): {}",
                    pg::describe(&e)
                ))
            })?;
        }
        Ok(Scratch {
            target: target.clone(),
            name,
            maintenance_db,
            _turn: turn,
        })
    }

    pub(super) async fn count(&self) -> Result<std::collections::BTreeMap<String, i64>, String> {
        let client = pg::connect(&self.target, &self.name)
            .await
            .map_err(|e| e.to_string())?;
        snapshot::count_rows(&client)
            .await
            .map_err(|e| e.to_string())
    }

    pub(super) async fn drop_db(self) {
        let dropped = async {
            let client = pg::connect(&self.target, &self.maintenance_db)
                .await
                .map_err(|e| e.to_string())?;
            client
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {}",
                    pg::quote_ident(&self.name)
                ))
                .await
                .map_err(|e| pg::describe(&e))
        };
        if let Err(e) = dropped.await {
            tracing::warn!("cannot drop the scratch database {}: {e}", self.name);
        }
    }
}
