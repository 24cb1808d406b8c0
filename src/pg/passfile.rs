//! libpq passfiles: the only way atpred hands a password to PostgreSQL.
//!
//! pg_dump and pg_restore get `PGPASSFILE` pointing at the file (never the password on argv or
//! in their environment). tokio-postgres reads no passfile, so for our own connections the
//! matching line is looked up here. The file must be mode 0600 (or stricter) and owned by the
//! daemon's user, as libpq itself requires before it trusts it.

use std::path::Path;

use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum PassfileError {
    #[error("passfile: {0}")]
    Unsafe(String),
    #[error("cannot read the passfile {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

/// Checks mode and owner of `path` as libpq would (plus the owner check libpq leaves out).
pub fn check(path: &Path) -> Result<(), PassfileError> {
    crate::secret::check_private_file(path).map_err(PassfileError::Unsafe)
}

/// The password for (host, port, dbname, user) in the passfile at `path`, if a line matches.
pub fn lookup(
    path: &Path,
    host: &str,
    port: u16,
    dbname: &str,
    user: &str,
) -> Result<Option<Secret>, PassfileError> {
    check(path)?;
    let text = std::fs::read_to_string(path).map_err(|source| PassfileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    Ok(find(&text, host, port, dbname, user))
}

fn find(text: &str, host: &str, port: u16, dbname: &str, user: &str) -> Option<Secret> {
    let port = port.to_string();
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .find_map(|line| {
            let fields = split(line);
            let [h, p, d, u, pw] = fields.as_slice() else {
                return None;
            };
            // libpq matches a socket directory against "localhost" too when it is the default one;
            // we accept "localhost" for any socket directory.
            let host_ok = h == "*" || h == host || (host.starts_with('/') && h == "localhost");
            let ok = host_ok
                && (p == "*" || *p == port)
                && (d == "*" || d == dbname)
                && (u == "*" || u == user);
            ok.then(|| Secret::new(pw.clone()))
        })
}

/// Splits a passfile line on unescaped ':' and removes the `\` escapes.
fn split(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        let literal = match c {
            '\\' => chars.next(),
            ':' if fields.len() < 5 => {
                fields.push(String::new());
                None
            }
            c => Some(c),
        };
        if let (Some(c), Some(field)) = (literal, fields.last_mut()) {
            field.push(c);
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_matching_line() {
        let text = "# comment\nother:5432:*:atp_user:nope\n/run/pg:5433:*:atp_user:p\\:w\\\\d\n*:*:*:*:fallback\n";
        assert_eq!(
            find(text, "/run/pg", 5433, "atp_re", "atp_user")
                .unwrap()
                .expose(),
            "p:w\\d"
        );
        assert_eq!(
            find(text, "/run/pg", 5432, "atp_re", "atp_user")
                .unwrap()
                .expose(),
            "fallback"
        );
        assert!(find("h:1:d:u:x\n", "h", 1, "d", "other").is_none());
        assert_eq!(
            find("localhost:1:d:u:x\n", "/tmp/s", 1, "d", "u")
                .unwrap()
                .expose(),
            "x"
        );
    }

    #[test]
    fn refuses_readable_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pgpass");
        std::fs::write(&p, "*:*:*:*:pw\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(check(&p), Err(PassfileError::Unsafe(m)) if m.contains("chmod 600")));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(check(&p).is_ok());
    }
}
