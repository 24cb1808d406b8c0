//! `restore --globals`: the backup's `globals.sql` (`pg_dumpall --globals-only`) applied to the
//! target cluster before the database is restored, so the restore can keep owners and grants.
//!
//! [`parse`] and [`decide`] are pure (what the dump holds; what to run, skip or report as not
//! applicable on this target, with a reason each); [`apply`] runs it through our own
//! connection. Roles that exist are skipped and never altered. What this restore created is
//! dropped again if the restore fails after it ([`undo`]), so a retry starts from the same
//! cluster.
//!
//! Privileges (PostgreSQL 15): creating roles, their settings and memberships needs CREATEROLE;
//! roles with SUPERUSER, REPLICATION or BYPASSRLS, membership in a superuser role, and
//! tablespaces need a superuser. Without them the item is reported NOT APPLIED and the rest
//! goes on. Keeping owners (what `--globals` turns on) needs pg_restore's role to be a
//! superuser or a member of every owning role; without that pg_restore stops at
//! `must be member of role` and the restore fails, target untouched.

pub mod apply;
pub mod decide;
mod lex;
pub mod parse;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use apply::Applied;
pub use decide::{Item, Kind, Outcome};

use super::RestoreError;
use crate::config::PostgresConfig;
use crate::jobs::backup::globals::{GLOBALS_NAME, GLOBALS_NAME_AGE};
use crate::jobs::backup::manifest::Manifest;
use crate::jobs::backup::{stream, verify};

/// The globals file of a backup, as its manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalsFile {
    pub path: PathBuf,
    pub encrypted: bool,
    pub sha256: String,
    pub bytes: u64,
}

/// The globals file of the backup in `dir`; `None` for a backup taken before globals were
/// dumped.
pub fn file_of(manifest: &Manifest, dir: &Path) -> Option<GlobalsFile> {
    manifest
        .files
        .iter()
        .find(|f| f.path == GLOBALS_NAME || f.path == GLOBALS_NAME_AGE)
        .map(|f| GlobalsFile {
            path: dir.join(&f.path),
            encrypted: f.path == GLOBALS_NAME_AGE,
            sha256: f.sha256.clone(),
            bytes: f.bytes,
        })
}

fn failed(what: &str, e: impl std::fmt::Display) -> RestoreError {
    RestoreError::Failed(format!("globals.sql: {what}: {e}"))
}

/// The text of the globals file: decrypted if need be, and checked against the manifest's
/// size and SHA-256.
pub async fn load(file: &GlobalsFile, identity: Option<&Path>) -> Result<String, RestoreError> {
    let identity = match (file.encrypted, identity) {
        (false, _) => None,
        (true, Some(p)) => {
            crate::secret::check_private_file(p).map_err(RestoreError::BadRequest)?;
            Some(p.to_owned())
        }
        (true, None) => {
            return Err(RestoreError::BadRequest(format!(
                "{} is encrypted and its job has no verify-identity-file",
                file.path.display()
            )));
        }
    };
    let path = file.path.clone();
    let read = tokio::task::spawn_blocking(move || {
        let ids = identity
            .map(|p| verify::load_identities(&p))
            .transpose()
            .map_err(std::io::Error::other)?;
        let mut text = Vec::new();
        let read = stream::read_stream(&path, false, ids.as_deref(), Some(&mut text))?;
        Ok::<_, std::io::Error>((read, text))
    });
    let shown = file.path.display();
    let (read, text) = read
        .await
        .map_err(|e| failed("reading", e))?
        .map_err(|e| failed(&format!("reading {shown}"), e))?;
    if read.written.sha256 != file.sha256 || read.written.bytes != file.bytes {
        return Err(failed(
            &shown.to_string(),
            format!(
                "checksum mismatch ({} bytes, sha256 {}; the manifest says {} bytes, {})",
                read.written.bytes, read.written.sha256, file.bytes, file.sha256
            ),
        ));
    }
    if let Some(e) = read.decode_error {
        return Err(failed(&format!("decrypting {shown}"), e));
    }
    String::from_utf8(text).map_err(|_| failed(&shown.to_string(), "not UTF-8 text"))
}

/// What `--globals` would do on `server` now (a dry run): every item, nothing changed.
pub async fn preview(
    server: &PostgresConfig,
    file: &GlobalsFile,
    identity: Option<&Path>,
) -> Result<Vec<Item>, RestoreError> {
    let (_, steps) = steps(server, file, identity).await?;
    // The session settings only prepare the session: not an item for operators.
    Ok(steps
        .into_iter()
        .filter(|s| s.phase != decide::Phase::Session)
        .map(|s| s.item)
        .collect())
}

/// Applies the globals file to `server`.
pub async fn apply(
    server: &PostgresConfig,
    file: &GlobalsFile,
    identity: Option<&Path>,
) -> Result<Applied, RestoreError> {
    let (mut client, steps) = steps(server, file, identity).await?;
    apply::apply(&mut client, steps)
        .await
        .map_err(|e| failed("applying", e))
}

/// Drops what [`apply`] created, after the restore failed.
pub async fn undo(server: &PostgresConfig, applied: &Applied) {
    if applied.roles.is_empty() && applied.tablespaces.is_empty() {
        return;
    }
    match super::database::maintenance(server).await {
        Ok(client) => apply::undo(&client, applied).await,
        Err(e) => tracing::warn!("cannot drop the roles created from globals.sql: {e}"),
    }
}

async fn steps(
    server: &PostgresConfig,
    file: &GlobalsFile,
    identity: Option<&Path>,
) -> Result<(tokio_postgres::Client, Vec<decide::Step>), RestoreError> {
    let text = load(file, identity).await?;
    let statements = parse::parse(&text).map_err(|e| RestoreError::Failed(e.to_string()))?;
    let client = super::database::maintenance(server).await?;
    let target = apply::target(&client)
        .await
        .map_err(|e| failed("reading the target's roles", crate::pg::describe(&e)))?;
    Ok((client, decide::decide(&statements, &target)))
}

/// One line of the report on an item: `created role app_owner: LOGIN`.
pub fn line(item: &Item) -> String {
    let creates =
        item.kind == Kind::Role || (item.kind == Kind::Tablespace && !item.what.contains(':'));
    let verb = match (item.outcome, creates) {
        (Outcome::Planned, true) => "would create",
        (Outcome::Planned, false) => "would apply",
        (Outcome::Applied, true) => "created",
        (Outcome::Applied, false) => "applied",
        (Outcome::Skipped, _) => "skipped",
        (Outcome::NotApplied, _) => "NOT APPLIED",
    };
    let kind = match item.kind {
        Kind::Role => "role",
        Kind::Setting => "setting",
        Kind::Comment => "comment on role",
        Kind::Membership => "membership",
        Kind::Tablespace => "tablespace",
        Kind::Other => "statement",
    };
    let reason = if item.reason.is_empty() {
        String::new()
    } else {
        format!(": {}", item.reason)
    };
    format!("{verb} {kind} {}{reason}", item.what)
}

/// The counts of a report in one line.
pub fn summary(items: &[Item]) -> String {
    let count = |f: &dyn Fn(&Item) -> bool| items.iter().filter(|i| f(i)).count();
    let planned = count(&|i| i.outcome == Outcome::Planned);
    let roles = count(&|i| i.kind == Kind::Role && i.outcome == Outcome::Applied);
    let others = count(&|i| i.kind != Kind::Role && i.outcome == Outcome::Applied);
    let skipped = count(&|i| i.outcome == Outcome::Skipped);
    let not = count(&|i| i.outcome == Outcome::NotApplied);
    let head = if planned > 0 {
        format!("globals.sql: {planned} item(s) would be applied")
    } else {
        format!("globals.sql: {roles} role(s) created, {others} other item(s) applied")
    };
    format!("{head}, {skipped} skipped (they exist on the target), {not} not applied")
}
