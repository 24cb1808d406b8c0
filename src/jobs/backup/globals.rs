//! `globals.sql`: the cluster-wide objects a database's dump leaves out (roles, memberships,
//! role settings, tablespaces), dumped by `pg_dumpall --globals-only` beside the dump, written
//! 0600 and encrypted to the same recipients, and listed in the manifest and `SHA256SUMS`.
//!
//! Role passwords are left out (`--no-role-passwords`, which reads `pg_roles` and works for any
//! role) unless the job says `globals-passwords = true`; that reads `pg_authid` and needs a
//! superuser. A globals dump that fails fails the backup: a backup silently without its roles
//! would restore onto a fresh cluster without owners and grants.

use std::path::Path;

use super::dump;
use super::manifest::FileSum;
use super::stream::Layers;
use crate::config::{BackupSpec, PostgresConfig};
use crate::jobs::{JobContext, JobError};
use crate::pg;
use crate::process;

/// The globals file inside a backup folder, plain or encrypted.
pub const GLOBALS_NAME: &str = "globals.sql";
pub const GLOBALS_NAME_AGE: &str = "globals.sql.age";

/// Dumps the globals of `pg_config`'s server into `dir`; returns the file written with its sum.
pub async fn dump(
    ctx: &JobContext,
    spec: &BackupSpec,
    pg_config: &PostgresConfig,
    dir: &Path,
) -> Result<FileSum, JobError> {
    let mut proc_spec = pg::tool_spec(pg_config, "pg_dumpall")
        .map_err(|e| JobError::permanent(e.to_string()))?
        // Connect to the database being backed up: the backup role can surely reach it, while
        // pg_dumpall's default ("postgres", then "template1") may be closed to it.
        .args([
            "--globals-only".to_owned(),
            format!("--database={}", spec.dbname),
        ]);
    if !spec.globals_passwords {
        proc_spec = proc_spec.args(["--no-role-passwords"]);
    }
    let recipients = dump::recipients(spec)?;
    let name = if recipients.is_empty() {
        GLOBALS_NAME
    } else {
        GLOBALS_NAME_AGE
    };
    let layers = Layers {
        zstd_level: None,
        recipients,
    };
    let failed = |out: &process::ProcessOutput| failed(out, spec);
    let written = dump::stream_child(ctx, &proc_spec, &dir.join(name), layers, failed).await?;
    Ok(FileSum {
        path: name.to_owned(),
        bytes: written.bytes,
        sha256: written.sha256,
    })
}

fn failed(out: &process::ProcessOutput, spec: &BackupSpec) -> JobError {
    let tail = out.stderr_summary(10);
    let mut message = format!(
        "pg_dumpall --globals-only failed with {}: {tail}",
        process::describe_status(&out.status)
    );
    if spec.globals_passwords && tail.contains("pg_authid") {
        message.push_str(
            " (globals-passwords = true needs a superuser to read pg_authid; \
             set it to false to dump roles without passwords)",
        );
    } else if let Some(hint) = pg::auth_hint(&tail) {
        message.push_str(&format!(" ({hint})"));
    }
    JobError::permanent(message)
}
