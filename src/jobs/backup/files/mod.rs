//! `source = "files"`: files and folders (`paths`, less `exclude`) as one pax tar streamed
//! through the same zstd/age/SHA-256 pipeline and partial folder as a pg_dump, with every
//! entry's metadata and SHA-256 in the manifest's `tree` ([`tree`]), verified by reading the
//! archive back and comparing every entry ([`check`]); [`crate::restore::files_dir`] restores
//! it into a folder.
//!
//! A run: walk the paths (metadata only, [`walk`]) -> free-space preflight on the bytes found
//! -> `.partial-<id>/files.tar[.zst][.age]`, each file opened once and hashed as it is
//! archived ([`archive`]) -> unreadable files fail the run with their list unless
//! `ignore-unreadable` -> manifest, verify, publish: the shared end of every backup. Files that
//! changed while read are recorded and warned about (the run still succeeds).

pub mod archive;
pub mod check;
pub mod drill;
pub mod pax;
pub mod stages;
pub mod tree;
pub mod walk;

use std::time::Instant;

use chrono::Utc;
use serde_json::json;

use self::tree::{Skipped, Tree};
use super::manifest::{
    Encryption, FileSum, Manifest, Server, VERSION, Verification, VerifyOutcome,
};
use super::stream::{self, Layers};
use super::{catalog, dump, effective_level, open_partial};
use crate::config::{BackupSource, BackupSpec, Compression, DumpFormat, FilesSpec};
use crate::jobs::{JobContext, JobError, JobReport};

/// The manifest's `database` of a files backup.
pub const DATABASE: &str = "files";

/// At most this many paths are named in a run's message.
const LISTED: usize = 10;

/// One files backup through the whole pipeline.
pub async fn take(ctx: &JobContext, spec: &BackupSpec) -> Result<JobReport, JobError> {
    let files = spec
        .files
        .clone()
        .ok_or_else(|| JobError::permanent("source = \"files\" without paths"))?;
    let backup_dir = &ctx.config.daemon.backup_dir;
    let id = format!("{}-{}", ctx.now.format("%Y%m%dT%H%M%SZ"), ctx.job.name);
    let level = effective_level(ctx, spec);
    if ctx.dry_run {
        return Ok(JobReport {
            message: format!(
                "would archive {} to {}/{id} ({:?}, verify {level:?})",
                shown(&files),
                backup_dir.display(),
                spec.compress
            ),
            details: json!({ "id": id, "verify": level }),
        });
    }
    catalog::ensure_dir(backup_dir).map_err(|e| JobError::permanent(e.to_string()))?;
    let t0 = Instant::now();
    ctx.progress(format!("walking {}", shown(&files)));
    let (cancel, spec_files) = (ctx.cancel.clone(), files.clone());
    let walked = tokio::task::spawn_blocking(move || walk::walk(&spec_files, &cancel))
        .await
        .map_err(|e| JobError::permanent(e.to_string()))?
        .ok_or(JobError::Cancelled)?;
    refuse_unreadable(&files, &walked.unreadable)?;
    let partial = open_partial(ctx, backup_dir, &id, walked.bytes, spec.min_free_after)?;
    let layers = Layers {
        zstd_level: match spec.compress {
            Compression::Zstd { level } => Some(level),
            _ => None,
        },
        recipients: dump::recipients(spec)?,
    };
    let name = file_name(layers.zstd_level.is_some(), !layers.recipients.is_empty());
    ctx.progress(format!(
        "archiving {} entries, {}",
        walked.found.len(),
        dump::mib(walked.bytes)
    ));
    let (path, cancel) = (partial.path().join(&name), ctx.cancel.clone());
    let found = walked.found;
    let written = tokio::task::spawn_blocking(move || {
        stream::write_with(&path, &layers, |out| archive::archive(out, &found, &cancel))
    })
    .await
    .map_err(|e| JobError::permanent(e.to_string()))?;
    if ctx.cancel.is_cancelled() {
        return Err(JobError::Cancelled);
    }
    let (written, archived) =
        written.map_err(|e| JobError::permanent(format!("writing {name}: {e}")))?;
    let mut unreadable = walked.unreadable;
    unreadable.extend(archived.unreadable);
    refuse_unreadable(&files, &unreadable)?;
    let mut skipped = walked.skipped;
    skipped.extend(archived.skipped);
    skipped.extend(unreadable);
    let tree = Tree {
        paths: files
            .paths
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        exclude: files
            .exclude
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect(),
        one_file_system: files.one_file_system,
        tar_bytes: archived.tar_bytes,
        entries: archived.entries,
        changed: archived.changed,
        skipped,
    };
    let warnings = warnings(&tree);
    for w in &warnings {
        tracing::warn!(job = %ctx.job.name, backup = %id, "{w}");
    }
    let (entries, file_bytes) = tree.counts();
    let finished = Utc::now();
    let manifest = Manifest {
        manifest_version: VERSION,
        source: BackupSource::Files,
        method: Default::default(),
        id: id.clone(),
        job: ctx.job.name.to_string(),
        database: DATABASE.to_owned(),
        server: Server {
            host: hostname::get()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            port: 0,
            version: String::new(),
            system_identifier: None,
        },
        pg_dump_version: String::new(),
        format: DumpFormat::Custom,
        compression: spec.compress,
        encryption: (!spec.encrypt_to.is_empty()).then(|| Encryption {
            recipients: spec.encrypt_to.clone(),
        }),
        options: json!({ "database_bytes": file_bytes }),
        started: ctx.now,
        finished,
        duration_ms: u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX),
        bytes: written.bytes,
        files: vec![FileSum {
            path: name,
            bytes: written.bytes,
            sha256: written.sha256,
        }],
        table_count: 0,
        tables: Default::default(),
        table_bytes: Default::default(),
        verification: Verification {
            level,
            at: finished,
            outcome: VerifyOutcome::Failed,
            details: "not verified yet".into(),
        },
        daemon_version: crate::VERSION.to_owned(),
        safety_for: None,
        redis: None,
        tree: Some(tree),
        physical: None,
    };
    let details = json!({
        "id": id,
        "bytes": written.bytes,
        "entries": entries,
        "file_bytes": file_bytes,
        "warnings": warnings,
    });
    let mut report =
        super::finish::verify_and_publish(ctx, spec, partial, manifest, level, details, None)
            .await?;
    if !warnings.is_empty() {
        report.message = format!("{}; warning: {}", report.message, warnings.join("; "));
    }
    Ok(report)
}

/// Fails the run naming the unreadable paths, unless `ignore-unreadable`.
fn refuse_unreadable(files: &FilesSpec, unreadable: &[Skipped]) -> Result<(), JobError> {
    if unreadable.is_empty() || files.ignore_unreadable {
        return Ok(());
    }
    Err(JobError::Permanent {
        message: format!(
            "{} path(s) could not be read (ignore-unreadable = true would skip them): {}",
            unreadable.len(),
            listed(unreadable.iter().map(|s| format!("{} ({})", s.path, s.why)))
        ),
        details: json!({ "unreadable": unreadable }),
    })
}

/// The run's warnings: files changed while read, paths skipped.
fn warnings(tree: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    if !tree.changed.is_empty() {
        out.push(format!(
            "{} file(s) changed while they were read (archived as read, recorded in the manifest): {}",
            tree.changed.len(),
            listed(tree.changed.iter().map(|p| format!("/{p}")))
        ));
    }
    if !tree.skipped.is_empty() {
        out.push(format!(
            "{} path(s) skipped: {}",
            tree.skipped.len(),
            listed(
                tree.skipped
                    .iter()
                    .map(|s| format!("{} ({})", s.path, s.why))
            )
        ));
    }
    out
}

fn listed(items: impl ExactSizeIterator<Item = String>) -> String {
    let n = items.len();
    let mut shown: Vec<String> = items.take(LISTED).collect();
    if n > LISTED {
        shown.push(format!("and {} more (see the manifest)", n - LISTED));
    }
    shown.join(", ")
}

fn shown(files: &FilesSpec) -> String {
    let paths: Vec<String> = files
        .paths
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    paths.join(", ")
}

/// `files.tar`, `.zst` when compressed, `.age` when encrypted.
fn file_name(zstd: bool, encrypted: bool) -> String {
    format!(
        "files.tar{}{}",
        if zstd { ".zst" } else { "" },
        if encrypted { ".age" } else { "" }
    )
}

/// Verification of a files backup at `level`: see [`check`].
pub(super) use check::verify;
