//! The target's access key, read from its credentials file at each use (so a rotated key is
//! picked up without a reload, and the secret never lives in the configuration).
//!
//! The format is AWS's shared-credentials file, which operators already have:
//! ```text
//! [default]
//! aws_access_key_id = GK31c2f218a2e44f485b94239e
//! aws_secret_access_key = b892c0665f0ada8a4755dae98baa3b133590e11dae3bcc1f
//! # aws_session_token = ...
//! ```
//! The `[default]` section is used when there is one, else the first; a file without sections
//! works too. The file must be mode 0600 and owned by the daemon's user, like every secret.

use std::collections::BTreeMap;
use std::path::Path;

use crate::secret::Secret;

/// Access key id and secret. `Debug` shows the key id only.
pub struct Credentials {
    pub key_id: String,
    pub secret: Secret,
    pub token: Option<Secret>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("key_id", &self.key_id)
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

pub fn read(path: &Path) -> Result<Credentials, String> {
    crate::secret::check_private_file(path)?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse(text: &str) -> Result<Credentials, String> {
    let mut sections: Vec<(String, BTreeMap<String, String>)> =
        vec![(String::new(), BTreeMap::new())];
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            sections.push((name.trim().to_owned(), BTreeMap::new()));
            continue;
        }
        // Never echo the line: it may be the secret.
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {} is not `key = value`", n + 1));
        };
        if let Some((_, keys)) = sections.last_mut() {
            keys.insert(key.trim().to_lowercase(), value.trim().to_owned());
        }
    }
    let chosen = sections
        .iter()
        .find(|(name, _)| name == "default")
        .or_else(|| sections.iter().find(|(_, keys)| !keys.is_empty()))
        .map(|(_, keys)| keys)
        .ok_or("no aws_access_key_id in the file")?;
    let get = |k: &str| chosen.get(k).filter(|v| !v.is_empty()).cloned();
    let key_id = get("aws_access_key_id").ok_or("no aws_access_key_id in the file")?;
    let secret = get("aws_secret_access_key").ok_or("no aws_secret_access_key in the file")?;
    Ok(Credentials {
        key_id,
        secret: Secret::new(secret),
        token: get("aws_session_token").map(Secret::new),
    })
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn reads_the_default_section_or_the_first() {
        let c = parse("[other]\naws_access_key_id=A\naws_secret_access_key=B\n[default]\naws_access_key_id = K\nAWS_SECRET_ACCESS_KEY = S\n").unwrap();
        assert_eq!((c.key_id.as_str(), c.secret.expose()), ("K", "S"));
        let c =
            parse("aws_access_key_id=K2\naws_secret_access_key=S2\naws_session_token=T\n").unwrap();
        assert_eq!((c.key_id.as_str(), c.secret.expose()), ("K2", "S2"));
        assert_eq!(c.token.unwrap().expose(), "T");
    }

    #[test]
    fn errors_never_show_the_secret() {
        let e = parse("aws_access_key_id=K\nsupersecretvalue\n").unwrap_err();
        assert!(e.contains("line 2") && !e.contains("supersecret"), "{e}");
        let e = parse("aws_access_key_id=K\n").unwrap_err();
        assert!(e.contains("aws_secret_access_key"), "{e}");
        let c = parse("aws_access_key_id=K\naws_secret_access_key=hunter2\n").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
