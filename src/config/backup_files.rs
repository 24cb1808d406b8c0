//! Settings of `source = "files"` backup jobs: `paths`, `exclude`, `one-file-system`,
//! `ignore-unreadable`, and the keys the other sources refuse.

use std::path::{Component, PathBuf};

use super::ConfigError;
use super::raw::RawJob;
use super::validate::Check;

/// The keys that mean something to a files backup only.
pub(super) const FILES_ONLY: &[&str] =
    &["paths", "exclude", "one-file-system", "ignore-unreadable"];

/// `source = "files"`: what is archived.
#[derive(Debug, Clone)]
pub struct FilesSpec {
    /// Absolute, normalised, none inside another.
    pub paths: Vec<PathBuf>,
    /// Matched against each absolute path; `*` stays within one name, `**` spans folders. A
    /// folder that matches is left out with everything in it.
    pub exclude: Vec<glob::Pattern>,
    /// Do not descend into other file systems mounted below a path (default true).
    pub one_file_system: bool,
    /// Unreadable files are listed as skipped instead of failing the run.
    pub ignore_unreadable: bool,
}

impl FilesSpec {
    /// The match options of `exclude`: a `*` never matches a `/`.
    pub fn match_options() -> glob::MatchOptions {
        glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: false,
        }
    }

    /// `path` is left out by an `exclude` pattern.
    pub fn excluded(&self, path: &std::path::Path) -> bool {
        let opts = Self::match_options();
        self.exclude.iter().any(|p| p.matches_path_with(path, opts))
    }
}

/// The files settings of backup job `key`; `None` unless `files` (then every files key is
/// refused).
pub(super) fn validate(
    check: &Check,
    key: &str,
    raw: &RawJob,
    files: bool,
) -> Result<Option<FilesSpec>, ConfigError> {
    let k = |name: &str| format!("{key}.{name}");
    if !files {
        if let Some(name) = raw
            .set_keys()
            .into_iter()
            .find(|n| FILES_ONLY.contains(&n.as_str()))
        {
            return Err(check.err(&k(&name), "a setting of source = \"files\" backups"));
        }
        return Ok(None);
    }
    let raw_paths = raw.paths.clone().unwrap_or_default();
    if raw_paths.is_empty() {
        return Err(check.err(
            &k("paths"),
            "source = \"files\" needs at least one path, e.g. [\"/opt/atpre/app/.env\", \"/etc/atpre\"]",
        ));
    }
    let mut paths: Vec<PathBuf> = Vec::new();
    for p in &raw_paths {
        let path = PathBuf::from(p);
        let plain = path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        if !path.is_absolute() || !plain || path.parent().is_none() {
            return Err(check.err(
                &k("paths"),
                format!("{p:?} is not an absolute path without \".\" or \"..\" (and not \"/\")"),
            ));
        }
        let path: PathBuf = path.components().collect();
        if let Some(other) = paths
            .iter()
            .find(|o| o.starts_with(&path) || path.starts_with(o))
        {
            return Err(check.err(
                &k("paths"),
                format!("{p:?} and {:?} overlap: list one of them", other.display()),
            ));
        }
        paths.push(path);
    }
    let mut exclude = Vec::new();
    for p in raw.exclude.clone().unwrap_or_default() {
        let pattern = glob::Pattern::new(&p)
            .map_err(|e| check.err(&k("exclude"), format!("{p:?} is not a valid glob: {e}")))?;
        exclude.push(pattern);
    }
    Ok(Some(FilesSpec {
        paths,
        exclude,
        one_file_system: raw.one_file_system.unwrap_or(true),
        ignore_unreadable: raw.ignore_unreadable.unwrap_or(false),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_star_stays_within_one_name_and_two_span_folders() {
        let spec = FilesSpec {
            paths: vec![],
            exclude: ["/etc/atpre/*.log", "**/cache"]
                .iter()
                .map(|p| glob::Pattern::new(p).unwrap())
                .collect(),
            one_file_system: true,
            ignore_unreadable: false,
        };
        let cases = [
            ("/etc/atpre/app.log", true),
            ("/etc/atpre/sub/app.log", false),
            ("/opt/x/cache", true),
            ("/cache", true),
            ("/opt/x/cache2", false),
        ];
        for (path, want) in cases {
            assert_eq!(spec.excluded(std::path::Path::new(path)), want, "{path}");
        }
    }
}
