//! Where the PostgreSQL server binaries are, and which OS user must run them.
//!
//! initdb and postgres refuse to run as root, and CI runs as root: then they run as the `postgres`
//! system user, which the Debian packages create.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The install hint every "PostgreSQL is missing" panic carries.
const INSTALL_HINT: &str =
    "install PostgreSQL server binaries: apt-get install postgresql-15 (or postgresql)";

/// The directory holding `initdb`, `postgres`, `psql`, `pg_dump`: `$ATPRED_PG_BIN` if set, else
/// the newest `/usr/lib/postgresql/<version>/bin`. Panics with an install hint if there is none.
pub fn find_bin_dir() -> PathBuf {
    let from_env = std::env::var_os("ATPRED_PG_BIN").map(PathBuf::from);
    locate_bin_dir(from_env, Path::new("/usr/lib/postgresql")).unwrap_or_else(|e| panic!("{e}"))
}

/// [`find_bin_dir`] with its inputs given: the override, and the root of versioned installs.
pub fn locate_bin_dir(from_env: Option<PathBuf>, root: &Path) -> Result<PathBuf, String> {
    match from_env {
        Some(dir) if has_server_binaries(&dir) => Ok(dir),
        Some(dir) => Err(format!(
            "ATPRED_PG_BIN={} has no initdb/postgres/psql; {INSTALL_HINT}",
            dir.display()
        )),
        None => newest_installed(root).ok_or_else(|| {
            format!(
                "no PostgreSQL server binaries in {}/*/bin (nor ATPRED_PG_BIN); {INSTALL_HINT}",
                root.display()
            )
        }),
    }
}

/// The `<root>/<version>/bin` with the highest version that holds the server binaries.
fn newest_installed(root: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(root).ok()?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((version_key(e.file_name().to_str()?)?, e.path().join("bin"))))
        .filter(|(_, bin)| has_server_binaries(bin))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, bin)| bin)
}

/// "15" -> [15], "9.6" -> [9, 6]; anything else is not a version directory.
fn version_key(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

fn has_server_binaries(dir: &Path) -> bool {
    ["initdb", "postgres", "psql"]
        .iter()
        .all(|b| super::process::is_executable(&dir.join(b)))
}

/// The uid and gid the server runs as: `postgres` when we are root, else `None` (ourselves).
pub fn server_user() -> Option<(u32, u32)> {
    if !super::is_root() {
        return None;
    }
    let user = nix::unistd::User::from_name("postgres")
        .expect("look up the postgres user")
        .unwrap_or_else(|| {
            panic!("running as root needs a `postgres` system user to run initdb/postgres; {INSTALL_HINT} (it creates the user)")
        });
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

/// Makes a libpq client or server command independent of the caller's environment: no `PG*`
/// variable leaks in (PGHOST, PGPASSWORD, ...), and messages are in the C locale.
pub fn scrub_env(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("PG")) {
            cmd.env_remove(&key);
        }
    }
    cmd.env("LC_ALL", "C")
}

/// `name` as a quoted SQL identifier.
pub fn sql_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `value` as a quoted SQL string literal (standard_conforming_strings is on since 9.1).
pub fn sql_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// One libpq passfile field: `:` and `\` are escaped with a backslash.
pub fn passfile_field(value: &str) -> String {
    value.replace('\\', "\\\\").replace(':', "\\:")
}

#[test]
fn version_dirs_sort_numerically() {
    assert!(version_key("10") > version_key("9.6"));
    assert_eq!(version_key("common"), None);
    assert_eq!(passfile_field(r"a:b\c"), r"a\:b\\c");
}
