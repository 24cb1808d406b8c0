//! Configuration errors: every one names the file, and where it can, the key and its position.

use std::fmt;
use std::path::PathBuf;

/// Why a configuration could not be loaded. The daemon exits 78 (EX_CONFIG) on any of these.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the configuration: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}: refused: the configuration is writable by other users (mode {mode:04o}); run `chmod o-w {path}`"
    )]
    WorldWritable { path: PathBuf, mode: u32 },
    #[error("{path}: not a regular file")]
    NotAFile { path: PathBuf },
    #[error("{0}")]
    Invalid(Box<Invalid>),
}

/// A problem with one key (or with the file's syntax, when `key` is `None`).
#[derive(Debug)]
pub struct Invalid {
    pub file: PathBuf,
    /// Dotted key path, e.g. `jobs.nightly.schedule`.
    pub key: Option<String>,
    /// 1-based line and column in the file.
    pub position: Option<(usize, usize)>,
    /// The environment variable the value came from, when it came from one.
    pub env_var: Option<String>,
    pub message: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        if let Some(var) = &self.env_var {
            write!(f, " (from ${var})")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl ConfigError {
    /// The dotted key the error is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid(inv) => inv.key.as_deref(),
            _ => None,
        }
    }
}
