//! PostgreSQL: where its tools are, how children reach the server, and our own connections.

pub mod identity;
pub mod passfile;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::config::PostgresConfig;
use crate::process::ProcessSpec;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error(transparent)]
    Passfile(#[from] passfile::PassfileError),
    #[error(
        "cannot find {tool}: set [postgres] bin-dir or install the PostgreSQL client (apt-get install postgresql-client)"
    )]
    ToolMissing { tool: String },
    #[error("cannot connect to PostgreSQL at {host}:{port} as {user}: {message}")]
    Connect {
        host: String,
        port: u16,
        user: String,
        message: String,
    },
    #[error("PostgreSQL query failed: {0}")]
    Query(String),
}

/// The path of a PostgreSQL client program (`pg_dump`, `pg_restore`): `bin-dir` when set, else
/// the newest `/usr/lib/postgresql/*/bin`, else `PATH`.
pub fn tool(config: &PostgresConfig, name: &str) -> Result<PathBuf, PgError> {
    if let Some(dir) = &config.bin_dir {
        let p = dir.join(name);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(PgError::ToolMissing {
                tool: p.display().to_string(),
            })
        };
    }
    if let Some(p) = newest_installed(name) {
        return Ok(p);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| PgError::ToolMissing {
            tool: name.to_owned(),
        })
}

/// `name` in the newest `/usr/lib/postgresql/*/bin` that has it (Debian's layout).
pub fn newest_installed(name: &str) -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let p = e.path().join("bin").join(name);
            p.is_file().then_some((v, p))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}

/// A spec for a libpq program reaching `config`'s server: connection on argv (no password),
/// `PGPASSFILE` in its environment, never prompting.
pub fn tool_spec(config: &PostgresConfig, name: &str) -> Result<ProcessSpec, PgError> {
    let mut spec = ProcessSpec::new(tool(config, name)?).args([
        OsString::from("--host"),
        config.host.clone().into(),
        "--port".into(),
        config.port.to_string().into(),
        "--username".into(),
        config.user.clone().into(),
        "--no-password".into(),
    ]);
    if let Some(pf) = &config.passfile {
        passfile::check(pf)?;
        spec = spec.env("PGPASSFILE", pf);
    }
    Ok(spec
        .env("PGAPPNAME", "atpred")
        .env("PGCONNECT_TIMEOUT", "10"))
}

/// Opens our own connection to `dbname` on `config`'s server (password from the passfile).
pub async fn connect(config: &PostgresConfig, dbname: &str) -> Result<Client, PgError> {
    let (client, _connection) = connect_named(config, dbname, "atpred").await?;
    Ok(client)
}

/// As [`connect`], with `application_name` set (what other sessions see in
/// `pg_stat_activity`); the handle ends when the connection closes, e.g. the server went away.
pub async fn connect_named(
    config: &PostgresConfig,
    dbname: &str,
    application_name: &str,
) -> Result<(Client, tokio::task::JoinHandle<()>), PgError> {
    let mut pg = tokio_postgres::Config::new();
    pg.host(&config.host)
        .port(config.port)
        .user(&config.user)
        .dbname(dbname)
        .application_name(application_name)
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(pf) = &config.passfile
        && let Some(pw) = passfile::lookup(pf, &config.host, config.port, dbname, &config.user)?
    {
        pg.password(pw.expose());
    }
    let err = |e: tokio_postgres::Error| PgError::Connect {
        host: config.host.clone(),
        port: config.port,
        user: config.user.clone(),
        message: describe(&e),
    };
    let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, pg.connect(NoTls))
        .await
        .map_err(|_| PgError::Connect {
            host: config.host.clone(),
            port: config.port,
            user: config.user.clone(),
            message: "timed out".into(),
        })?
        .map_err(err)?;
    let handle = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("PostgreSQL connection closed: {e}");
        }
    });
    Ok((client, handle))
}

/// A tokio-postgres error in PostgreSQL's own words: its `Display` is a bare "db error", the
/// server's message is in the source.
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let detail = db.detail().map(|d| format!(" ({d})")).unwrap_or_default();
        return format!("{}: {}{detail}", db.severity(), db.message());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// Authentication failures in a libpq tool's stderr: retrying will not fix them.
const AUTH_FAILURES: &[&str] = &[
    "no password supplied",
    "password authentication failed",
    "Peer authentication failed",
    "no pg_hba.conf entry",
];

/// When a libpq tool's stderr says authentication failed, what to check: `None` otherwise.
pub fn auth_hint(stderr: &str) -> Option<&'static str> {
    if !AUTH_FAILURES.iter().any(|s| stderr.contains(s)) {
        return None;
    }
    Some(if stderr.contains("no password supplied") {
        "no line of the passfile matched: its fields are host:port:dbname:user:password, and for \
         the default socket directory (/var/run/postgresql) libpq looks up the host \"localhost\""
    } else {
        "the server refused the role: check the password in the passfile and pg_hba.conf"
    })
}

/// Quotes an identifier for SQL text (`"name"` with quotes doubled).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The version line of a PostgreSQL program (`pg_dump (PostgreSQL) 15.18`).
pub async fn tool_version(path: &Path) -> String {
    let spec = ProcessSpec::new(path).args(["--version"]);
    match crate::process::run(
        &spec,
        &tokio_util::sync::CancellationToken::new(),
        |_, _| {},
    )
    .await
    {
        Ok(out) => out.stdout_tail.join(" ").trim().to_owned(),
        Err(e) => format!("unknown ({e})"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn authentication_failures_get_a_hint() {
        let stderr = "pg_dump: error: connection to server on socket \"/var/run/postgresql/.s.PGSQL.5432\" failed: fe_sendauth: no password supplied";
        assert!(super::auth_hint(stderr).is_some_and(|h| h.contains("localhost")));
        let refused = "FATAL:  password authentication failed for user \"x\"";
        assert!(super::auth_hint(refused).is_some());
        assert_eq!(
            super::auth_hint("could not connect to server: No such file"),
            None
        );
    }
}
