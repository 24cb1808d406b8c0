//! The restore plan: a pure function of the manifest, the backup folder and the options.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{DEFAULT_JOBS, Options, RestoreError};
use crate::config::{Compression, DumpFormat};
use crate::jobs::backup::manifest::Manifest;

/// A zstd-wrapped custom archive is about this many times smaller than the plain archive it
/// unpacks to (pg_dump -Fc -Z0 | zstd -3 on text-heavy data compresses 3-6x); the preflight
/// asks for this multiple of the stored size so a full scratch disk is found before, not
/// during, the unpack (which is also checked: ENOSPC fails the restore cleanly).
pub const UNPACK_FACTOR: u64 = 8;

/// The name suffix of the database a restore goes into before it is renamed.
pub const RESTORING_SUFFIX: &str = "_atpred_restoring";

/// How pg_restore gets the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Archive {
    /// Decrypted and/or zstd-decoded into a seekable file in the scratch dir first, so that
    /// `pg_restore -j` can seek in it.
    Unpack {
        from: PathBuf,
        zstd: bool,
        encrypted: bool,
        sha256: String,
        bytes: u64,
    },
    /// pg_restore reads it as it is (a plain custom archive or a directory-format dump).
    Direct { path: PathBuf },
    /// Read from an offsite copy ([`super::remote`]) and unpacked like [`Archive::Unpack`] in
    /// the same stream: nothing of it is stored but the plain archive in the scratch dir.
    Fetch(super::remote::Fetch),
    /// `--jobs 1`: decrypted and/or zstd-decoded straight into pg_restore's stdin (one job
    /// reads in order, so nothing needs to seek): no scratch file, and the unpacking overlaps
    /// the restore.
    Stream {
        from: PathBuf,
        zstd: bool,
        encrypted: bool,
        sha256: String,
        bytes: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestorePlan {
    pub id: String,
    pub to: String,
    /// Restored into this database first, renamed to `to` after the checks.
    pub restoring: String,
    pub source_database: String,
    pub archive: Archive,
    pub jobs: u32,
    pub schemas: Vec<String>,
    pub tables: Vec<String>,
    /// `--replace`: an existing target is swapped out after the checks, not refused.
    #[serde(default)]
    pub replace: bool,
    /// `--globals`: the backup's globals file, applied before the restore.
    #[serde(default)]
    pub globals: Option<super::globals::GlobalsFile>,
    /// pg_restore keeps owners and grants (with `--globals`); else `--no-owner
    /// --no-privileges` gives everything to the restoring role.
    #[serde(default)]
    pub keep_owners: bool,
    /// The tables restored and their row counts in the dump's snapshot.
    pub expected: BTreeMap<String, i64>,
    /// Size of each of those tables with its indexes on the source (empty for a backup from
    /// before sizes were recorded).
    #[serde(default)]
    pub sizes: BTreeMap<String, u64>,
    /// Schemas created before a filtered pg_restore (which does not create them), unquoted.
    pub create_schemas: Vec<String>,
    /// Scratch space the preflight asks for (0 for a direct archive).
    pub scratch_bytes: u64,
    /// The steps, in words.
    pub steps: Vec<String>,
    /// How long it should take, from the evidence of earlier drills and restores (filled in by
    /// the handler: planning reads no files).
    #[serde(default)]
    pub estimate: Option<super::evidence::Estimate>,
}

/// The plan for restoring the backup in `dir` with `opts` onto the cluster whose system
/// identifier is `target_cluster` (`None`: unknown).
pub fn plan(
    manifest: &Manifest,
    dir: &Path,
    opts: &Options,
    target_cluster: Option<&str>,
) -> Result<RestorePlan, RestoreError> {
    if manifest.method == crate::config::BackupMethod::Physical {
        // Its restore is a data directory plus WAL (point-in-time recovery), not pg_restore.
        return Err(RestoreError::BadRequest(format!(
            "{} is a physical base backup: pg_restore cannot load it; unpack it as a data \
             directory (see the README's physical backups)",
            manifest.id
        )));
    }
    check_name(&opts.to, "--to")?;
    for s in opts.schemas.iter().chain(&opts.tables) {
        check_name(s, "--schema/--table")?;
    }
    if opts.to == manifest.database
        && !opts.replace
        && same_cluster(manifest.server.system_identifier.as_deref(), target_cluster)
    {
        return Err(RestoreError::SourceDatabase(opts.to.clone()));
    }
    let globals = if opts.globals {
        Some(super::globals::file_of(manifest, dir).ok_or_else(|| {
            RestoreError::BadRequest(format!(
                "--globals: backup {} holds no globals.sql (taken before atpred dumped the \
                 roles with every backup); restore without --globals",
                manifest.id
            ))
        })?)
    } else {
        None
    };
    let file = manifest
        .files
        .first()
        .ok_or_else(|| RestoreError::UnknownBackup(format!("{}: lists no file", manifest.id)))?;
    let jobs = if opts.jobs == 0 {
        DEFAULT_JOBS
    } else {
        opts.jobs
    };
    let archive = match manifest.format {
        DumpFormat::Directory => Archive::Direct {
            path: dir.join(crate::jobs::backup::dump::DUMP_NAME),
        },
        DumpFormat::Custom => {
            let zstd = matches!(manifest.compression, Compression::Zstd { .. });
            if (zstd || manifest.encrypted()) && jobs == 1 {
                Archive::Stream {
                    from: dir.join(&file.path),
                    zstd,
                    encrypted: manifest.encrypted(),
                    sha256: file.sha256.clone(),
                    bytes: file.bytes,
                }
            } else if zstd || manifest.encrypted() {
                Archive::Unpack {
                    from: dir.join(&file.path),
                    zstd,
                    encrypted: manifest.encrypted(),
                    sha256: file.sha256.clone(),
                    bytes: file.bytes,
                }
            } else {
                Archive::Direct {
                    path: dir.join(&file.path),
                }
            }
        }
    };
    let scratch_bytes = match &archive {
        Archive::Unpack { bytes, .. } => bytes.saturating_mul(UNPACK_FACTOR),
        Archive::Fetch(fetch) => fetch.scratch_bytes(),
        Archive::Direct { .. } | Archive::Stream { .. } => 0,
    };
    let expected = selected(&manifest.tables, &opts.schemas, &opts.tables);
    let mut create_schemas: Vec<String> = Vec::new();
    if !opts.schemas.is_empty() || !opts.tables.is_empty() {
        let from_tables = expected.keys().map(|k| unquote(split_key(k).0));
        for s in opts.schemas.iter().cloned().chain(from_tables) {
            if !create_schemas.contains(&s) {
                create_schemas.push(s);
            }
        }
    }
    let mut restoring = format!("{}{RESTORING_SUFFIX}", opts.to);
    // PostgreSQL cuts names at 63 bytes; cut on a character boundary.
    while restoring.len() > 63 {
        restoring.pop();
    }
    let mut steps = Vec::new();
    if opts.replace {
        steps.push(format!(
            "if {to} exists: take a safety backup of it first, with job {job}'s settings \
             (verified, pinned, never pruned until unpinned); if that fails, stop here",
            to = opts.to,
            job = manifest.job
        ));
    }
    if let Archive::Unpack {
        zstd, encrypted, ..
    } = &archive
    {
        steps.push(format!(
            "unpack the archive ({}{}) into restore-scratch-dir, checking its SHA-256 (about {} \
             bytes of scratch space)",
            if *encrypted { "decrypt" } else { "" },
            match (*encrypted, *zstd) {
                (true, true) => ", zstd-decode",
                (false, true) => "zstd-decode",
                _ => "",
            },
            scratch_bytes
        ));
    }
    if globals.is_some() {
        steps.push(
            "apply globals.sql: create the backup's roles that the cluster lacks (with their \
             settings and memberships), skip those it has"
                .to_owned(),
        );
    }
    steps.push(format!("create database {restoring}"));
    let fed = match &archive {
        Archive::Stream { encrypted, .. } => format!(
            ", fed the archive as it is {}decoded (checking its SHA-256; no scratch space)",
            if *encrypted { "decrypted and " } else { "" }
        ),
        _ => String::new(),
    };
    steps.push(format!(
        "pg_restore -j {jobs} into {restoring}{}{}{fed}",
        filter_words(&opts.schemas, &opts.tables),
        if opts.globals {
            ", keeping owners and grants"
        } else {
            ", owned by the restoring role (--no-owner --no-privileges)"
        }
    ));
    steps.push(format!(
        "check the row counts of {} table(s) against the dump's snapshot",
        expected.len()
    ));
    if opts.replace {
        steps.push(format!(
            "if {to} exists: close it to new sessions, terminate its other sessions, and keep it \
             as {kept} (not dropped)",
            to = opts.to,
            kept = super::swap::replaced_name(&opts.to)
        ));
    }
    steps.push(format!("rename {restoring} to {}", opts.to));
    Ok(RestorePlan {
        id: manifest.id.clone(),
        to: opts.to.clone(),
        restoring,
        source_database: manifest.database.clone(),
        archive,
        jobs,
        schemas: opts.schemas.clone(),
        tables: opts.tables.clone(),
        replace: opts.replace,
        keep_owners: globals.is_some(),
        globals,
        sizes: expected
            .keys()
            .filter_map(|k| manifest.table_bytes.get(k).map(|b| (k.clone(), *b)))
            .collect(),
        expected,
        create_schemas,
        scratch_bytes,
        steps,
        estimate: None,
    })
}

/// Whether the target may be the backup's own cluster: the same system identifier, or either
/// one unknown (a manifest from before identifiers were recorded).
fn same_cluster(source: Option<&str>, target: Option<&str>) -> bool {
    match (source, target) {
        (Some(s), Some(t)) => s == t,
        _ => true,
    }
}

fn filter_words(schemas: &[String], tables: &[String]) -> String {
    let mut w = String::new();
    if !schemas.is_empty() {
        w.push_str(&format!(", schemas {}", schemas.join(", ")));
    }
    if !tables.is_empty() {
        w.push_str(&format!(", tables {}", tables.join(", ")));
    }
    w
}

/// A database, schema or table name as given: non-empty, at most 63 bytes, no NUL or control
/// characters (it goes on pg_restore's argv and into SQL as a quoted identifier).
fn check_name(name: &str, what: &str) -> Result<(), RestoreError> {
    if name.is_empty() || name.len() > 63 || name.chars().any(char::is_control) {
        return Err(RestoreError::BadRequest(format!(
            "{what} {name:?} is not a valid name (1 to 63 bytes, no control characters)"
        )));
    }
    Ok(())
}

/// The manifest's tables (keys as `quote_ident(schema).quote_ident(table)`) that the filters
/// select: pg_restore's `-n` and `-t` rules (both given: tables of those schemas).
fn selected(
    tables: &BTreeMap<String, i64>,
    schemas: &[String],
    names: &[String],
) -> BTreeMap<String, i64> {
    let schemas: Vec<String> = schemas.iter().map(|s| quote_ident(s)).collect();
    let names: Vec<String> = names.iter().map(|t| quote_ident(t)).collect();
    tables
        .iter()
        .filter(|(key, _)| {
            let (schema, table) = split_key(key);
            (schemas.is_empty() || schemas.iter().any(|s| s == schema))
                && (names.is_empty() || names.iter().any(|t| t == table))
        })
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// `schema.table` of a manifest key, each part as quote_ident left it (a quoted part may hold
/// dots).
fn split_key(key: &str) -> (&str, &str) {
    let mut quoted = false;
    for (i, c) in key.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '.' if !quoted => return (&key[..i], &key[i + 1..]),
            _ => {}
        }
    }
    (key, "")
}

/// The name a `quote_ident` result stands for.
fn unquote(part: &str) -> String {
    match part.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => part.to_owned(),
    }
}

/// PostgreSQL's `quote_ident` for the names we compare with: bare when a plain lower-case
/// identifier, else double-quoted (keywords are not special-cased: a table named like a
/// keyword is then matched by no key and the count check reports it missing, never silently).
pub fn quote_ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if plain {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables() -> BTreeMap<String, i64> {
        [
            ("public.users", 3),
            ("public.orders", 5),
            ("sales.orders", 7),
            ("\"Odd.Schema\".\"T\"", 1),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    fn keys(m: &BTreeMap<String, i64>) -> Vec<&str> {
        m.keys().map(String::as_str).collect()
    }

    #[test]
    fn filters_select_like_pg_restore() {
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        assert_eq!(keys(&selected(&tables(), &[], &[])).len(), 4);
        assert_eq!(
            keys(&selected(&tables(), &s(&["sales"]), &[])),
            ["sales.orders"]
        );
        assert_eq!(
            keys(&selected(&tables(), &[], &s(&["orders"]))),
            ["public.orders", "sales.orders"]
        );
        assert_eq!(
            keys(&selected(&tables(), &s(&["public"]), &s(&["orders"]))),
            ["public.orders"]
        );
        assert_eq!(
            keys(&selected(&tables(), &s(&["Odd.Schema"]), &s(&["T"]))),
            ["\"Odd.Schema\".\"T\""]
        );
    }

    #[test]
    fn quoted_parts_unquote() {
        assert_eq!(unquote("public"), "public");
        assert_eq!(unquote("\"Odd.Schema\""), "Odd.Schema");
        assert_eq!(unquote("\"a\"\"b\""), "a\"b");
        assert_eq!(unquote(&quote_ident("Ünï Tab")), "Ünï Tab");
    }

    #[test]
    fn only_the_source_cluster_is_the_source() {
        assert!(same_cluster(Some("7715"), Some("7715")));
        assert!(!same_cluster(Some("7715"), Some("8826")));
        assert!(
            same_cluster(None, Some("8826")),
            "an old manifest: maybe the same"
        );
        assert!(
            same_cluster(Some("7715"), None),
            "the target cannot tell: maybe the same"
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("app_restored", "--to").is_ok());
        for bad in ["", "a\nb", &"x".repeat(64)] {
            assert!(check_name(bad, "--to").is_err(), "{bad:?}");
        }
    }
}
