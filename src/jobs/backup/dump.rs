//! Running pg_dump: the custom format streamed through the daemon, the directory format
//! written by pg_dump itself (in parallel) and hashed afterwards.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::manifest::FileSum;
use super::stream::{self, Layers};
use crate::config::{BackupSpec, Compression, DumpFormat, PostgresConfig};
use crate::jobs::{JobContext, JobError};
use crate::pg;
use crate::process::{self, ProcessError, Stream};

/// The dump inside a backup folder: a file (custom) or a folder (directory format).
pub const DUMP_NAME: &str = "database.backup";
pub const DUMP_NAME_AGE: &str = "database.backup.age";
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Dumps `spec.dbname` as of `snapshot` into `dir`; returns the files written with their sums.
pub async fn dump(
    ctx: &JobContext,
    spec: &BackupSpec,
    pg_config: &PostgresConfig,
    snapshot: &str,
    dir: &Path,
) -> Result<Vec<FileSum>, JobError> {
    let compress = match spec.compress {
        Compression::Gzip { level } => level,
        Compression::None | Compression::Zstd { .. } => 0,
    };
    let proc_spec = pg::tool_spec(pg_config, "pg_dump")
        .map_err(|e| JobError::permanent(e.to_string()))?
        .args([
            format!("--compress={compress}"),
            format!("--snapshot={snapshot}"),
            format!("--dbname={}", spec.dbname),
        ]);
    match spec.format {
        DumpFormat::Custom => custom(ctx, spec, proc_spec.args(["--format=custom"]), dir).await,
        DumpFormat::Directory => {
            let target = dir.join(DUMP_NAME);
            let proc_spec = proc_spec.args([
                "--format=directory".to_owned(),
                format!("--jobs={}", spec.parallel),
                format!("--file={}", target.display()),
            ]);
            directory(ctx, proc_spec, dir, &target).await
        }
    }
}

async fn custom(
    ctx: &JobContext,
    spec: &BackupSpec,
    proc_spec: process::ProcessSpec,
    dir: &Path,
) -> Result<Vec<FileSum>, JobError> {
    let recipients = recipients(spec)?;
    let name = if recipients.is_empty() {
        DUMP_NAME
    } else {
        DUMP_NAME_AGE
    };
    let layers = Layers {
        zstd_level: match spec.compress {
            Compression::Zstd { level } => Some(level),
            _ => None,
        },
        recipients,
    };
    let written = stream_child(ctx, &proc_spec, &dir.join(name), layers, dump_failed).await?;
    Ok(vec![FileSum {
        path: name.to_owned(),
        bytes: written.bytes,
        sha256: written.sha256,
    }])
}

/// The job's age recipients (`encrypt-to`), parsed.
pub(super) fn recipients(spec: &BackupSpec) -> Result<Vec<age::x25519::Recipient>, JobError> {
    spec.encrypt_to
        .iter()
        .map(|r| {
            r.parse::<age::x25519::Recipient>()
                .map_err(|e| JobError::permanent(format!("recipient {r}: {e}")))
        })
        .collect()
}

/// Runs `proc_spec` (pg_dump, pg_dumpall) and streams its stdout through `layers` into `path`,
/// reporting progress; `failed` turns an unsuccessful exit into the job's error.
pub(super) async fn stream_child(
    ctx: &JobContext,
    proc_spec: &process::ProcessSpec,
    path: &Path,
    layers: Layers,
    failed: impl FnOnce(&process::ProcessOutput) -> JobError,
) -> Result<stream::Written, JobError> {
    stream_child_through(ctx, proc_spec, path, layers, failed, |pipe| Box::new(pipe)).await
}

/// [`stream_child`], with the child's stdout wrapped by `wrap` before the layers (a reader
/// that watches the bytes pass, say).
pub(super) async fn stream_child_through(
    ctx: &JobContext,
    proc_spec: &process::ProcessSpec,
    path: &Path,
    layers: Layers,
    failed: impl FnOnce(&process::ProcessOutput) -> JobError,
    wrap: impl FnOnce(std::fs::File) -> Box<dyn std::io::Read + Send> + Send + 'static,
) -> Result<stream::Written, JobError> {
    let program = Path::new(&proc_spec.program);
    let tool = program
        .file_name()
        .unwrap_or(program.as_os_str())
        .to_string_lossy()
        .into_owned();
    let mut running = process::spawn(proc_spec).map_err(|e| JobError::permanent(e.to_string()))?;
    let stdout = running
        .take_stdout()
        .ok_or_else(|| JobError::permanent(format!("{tool} has no stdout")))?;
    let pipe = stdout
        .into_owned_fd()
        .and_then(stream::blocking_pipe)
        .map_err(|e| JobError::permanent(format!("{tool}'s pipe: {e}")))?;
    let read = Arc::new(AtomicU64::new(0));
    let writer = {
        let (path, read) = (path.to_owned(), Arc::clone(&read));
        tokio::task::spawn_blocking(move || stream::write_stream(wrap(pipe), &path, &layers, &read))
    };
    // A failing writer (disk full) must stop the child, or it blocks on a full pipe forever.
    let stop_child = ctx.cancel.child_token();
    let write = async {
        let r = writer.await.map_err(std::io::Error::other).and_then(|r| r);
        if r.is_err() {
            stop_child.cancel();
        }
        r
    };
    let log_stderr = |stream: Stream, line: &str| {
        if stream == Stream::Stderr {
            tracing::warn!("{tool}: {line}");
        }
    };
    let count = || read.load(Ordering::Relaxed);
    let (waited, written) = with_progress(ctx, count, async {
        tokio::join!(running.wait(&stop_child, log_stderr), write)
    })
    .await;
    match (waited, written) {
        _ if ctx.cancel.is_cancelled() => Err(JobError::Cancelled),
        (_, Err(e)) => Err(JobError::permanent(format!(
            "writing {}: {e}",
            path.display()
        ))),
        (Err(e), _) => Err(JobError::permanent(format!("{tool}: {e}"))),
        (Ok(out), Ok(_)) if !out.status.success() => Err(failed(&out)),
        (Ok(_), Ok(w)) => Ok(w),
    }
}

async fn directory(
    ctx: &JobContext,
    proc_spec: process::ProcessSpec,
    dir: &Path,
    target: &Path,
) -> Result<Vec<FileSum>, JobError> {
    let running = process::spawn(&proc_spec).map_err(|e| JobError::permanent(e.to_string()))?;
    let size = || dir_size(target);
    let out = match with_progress(ctx, size, running.wait(&ctx.cancel, log_stderr)).await {
        Err(ProcessError::Cancelled) => return Err(JobError::Cancelled),
        Err(e) => return Err(JobError::permanent(format!("pg_dump: {e}"))),
        Ok(out) if !out.status.success() => return Err(dump_failed(&out)),
        Ok(out) => out,
    };
    drop(out);
    let (target, dir) = (target.to_owned(), dir.to_owned());
    tokio::task::spawn_blocking(move || hash_folder(&dir, &target))
        .await
        .map_err(|e| JobError::permanent(e.to_string()))?
        .map_err(|e| JobError::permanent(format!("reading the dump folder: {e}")))
}

/// Hashes every file of the dump folder (pg_dump wrote them; there is no stream to hash) and
/// tightens their modes to 0600/0700 whatever pg_dump's umask was.
pub fn hash_folder(dir: &Path, target: &Path) -> std::io::Result<Vec<FileSum>> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(target, std::fs::Permissions::from_mode(0o700))?;
    let mut names: Vec<_> = std::fs::read_dir(target)?.collect::<Result<Vec<_>, _>>()?;
    names.sort_by_key(|e| e.file_name());
    let mut sums = Vec::new();
    for entry in names {
        let path = entry.path();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        std::fs::File::open(&path)?.sync_all()?;
        let w = stream::hash_file(&path)?;
        let rel = path.strip_prefix(dir).map_err(std::io::Error::other)?;
        sums.push(FileSum {
            path: rel.display().to_string(),
            bytes: w.bytes,
            sha256: w.sha256,
        });
    }
    crate::publish::sync_dir(target)?;
    Ok(sums)
}

fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn log_stderr(stream: Stream, line: &str) {
    if stream == Stream::Stderr {
        tracing::warn!("pg_dump: {line}");
    }
}

fn dump_failed(out: &process::ProcessOutput) -> JobError {
    let tail = out.stderr_summary(10);
    let message = format!(
        "pg_dump failed with {}: {tail}",
        process::describe_status(&out.status)
    );
    if let Some(hint) = crate::pg::auth_hint(&tail) {
        return JobError::permanent(format!("{message} ({hint})"));
    }
    let transient = [
        "could not connect",
        "connection to server",
        "server closed the connection",
    ]
    .iter()
    .any(|s| tail.contains(s));
    if transient {
        JobError::Transient {
            message,
            details: serde_json::Value::Null,
        }
    } else {
        JobError::permanent(message)
    }
}

/// Runs `work`, reporting `bytes()` as progress every second.
pub async fn with_progress<T>(
    ctx: &JobContext,
    bytes: impl Fn() -> u64,
    work: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(work);
    let start = Instant::now();
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.tick().await;
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => {
                let b = bytes();
                let secs = start.elapsed().as_secs_f64().max(0.001);
                ctx.progress(format!("dump: {} at {}/s, {:.0}s", mib(b), mib((b as f64 / secs) as u64), secs));
            }
        }
    }
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
