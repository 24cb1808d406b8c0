//! Carrying out a planned rotation, journaled: the journal ([`Pending`]) is written before the
//! first step, every step can be redone or skipped by looking at the disk, and [`finish`] both
//! completes a fresh rotation and one a crash interrupted.
//!
//! `create`: shift older files, rename the log (only while it is still the journaled inode),
//! create the fresh log with the old owner and mode (`O_EXCL`), tell the writer to reopen, wait
//! (bounded) until it has let go of the rotated file. `copytruncate`: copy to a temp name,
//! catch up with what was appended, truncate, fsync, shift, rename the copy into place.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::copy::{self, CopyReport};
use super::files::{self, Owner};
use super::hands::Hands;
use super::pause;
use super::pidfile;
use super::state::{Pending, PendingMethod};
use crate::config::{Method, Reopen};
use crate::jobs::{JobContext, JobError};
use crate::process::{self, ProcessSpec, Stream};

/// How long a reopen command may run.
const REOPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the writer gets to move to the fresh log before compression is left for later.
const REOPEN_WAIT: Duration = Duration::from_secs(10);

/// One log: its path, directory and file name as configured (for messages and the state
/// file), and its folder's handle once opened ([`super::folder`]), through which every step
/// reaches the disk.
#[derive(Debug, Clone)]
pub struct Log {
    pub path: PathBuf,
    pub dir: PathBuf,
    pub base: String,
    /// The folder through its handle (`/proc/self/fd/N`); empty until opened.
    pub at: PathBuf,
    /// Keeps the handle `at` refers to open.
    pub _handle: Option<std::sync::Arc<super::folder::Folder>>,
    /// Who does the file work: the daemon, or the job's `su` user ([`super::hands`]).
    pub hands: Hands,
}

impl Log {
    /// The log as reached through the folder's handle.
    pub fn current(&self) -> PathBuf {
        self.at.join(&self.base)
    }

    /// The name of a copytruncate's copy until it is renamed into place.
    pub fn copy_temp_name(&self) -> String {
        format!(".{}.atpred-copy", self.base)
    }

    fn copy_temp(&self) -> PathBuf {
        self.at.join(self.copy_temp_name())
    }

    /// Whether `path` (in the folder, through the handle) exists, looked at with this log's
    /// hands.
    pub async fn exists(&self, path: &Path) -> Result<bool, JobError> {
        let path = path.to_path_buf();
        self.work(move || Ok(path.symlink_metadata().is_ok())).await
    }

    /// Runs a file step with this log's hands (the `su` user's when the job has one).
    pub async fn work<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, JobError> {
        self.hands.run(f).await.map_err(failed)
    }
}

fn failed(e: impl std::fmt::Display) -> JobError {
    JobError::permanent(e.to_string())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, JobError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(failed)?
        .map_err(failed)
}

/// The journal entry for rotating `log` now.
pub async fn journal(
    ctx: &JobContext,
    log: &Log,
    method: &Method,
    to: &str,
    shifts: &[(String, String)],
) -> Result<Pending, JobError> {
    let current = log.current();
    let at = log.at.clone();
    // Judged with the hands that will create the files: the `su` user's, when switched (its
    // ids and groups are the thread's own).
    let (meta, kept, uid) = log
        .work(move || {
            let meta = std::fs::symlink_metadata(current)?;
            let kept = Owner::of(&meta).in_dir(&at)?;
            Ok((meta, kept, nix::unistd::geteuid()))
        })
        .await?;
    let found = Owner::of(&meta);
    let Some(owner) = kept else {
        let fix = match log.hands.who() {
            Some(su) => format!("the job works as {su} (its su): name the log's owner there"),
            None => format!(
                "run atpred as that user or as root, or make its folder setgid of group {} with atpred in that group",
                found.gid
            ),
        };
        return Err(failed(format!(
            "{} belongs to uid {} gid {}, which atpred (uid {uid}) cannot give the files it creates: not rotated ({fix})",
            log.base, found.uid, found.gid,
        )));
    };
    Ok(Pending {
        started: ctx.now,
        to: to.to_owned(),
        shifts: shifts.to_vec(),
        inode: meta.ino(),
        uid: owner.uid,
        gid: owner.gid,
        mode: owner.mode,
        method: match method {
            Method::Create(_) => PendingMethod::Create,
            Method::CopyTruncate => PendingMethod::CopyTruncate,
        },
    })
}

/// What finishing a rotation did.
#[derive(Debug, Default)]
pub struct Finished {
    pub copy: Option<CopyReport>,
    pub reopened: Option<String>,
    /// True when the writer still held the rotated file after [`REOPEN_WAIT`].
    pub still_written: bool,
    /// True when an interrupted copytruncate turned out not to have truncated: nothing rotated.
    pub undone: bool,
}

/// Runs (or completes) the journaled rotation `p` of `log`; `fresh` is false when completing one
/// found in the journal.
pub async fn finish(
    ctx: &JobContext,
    method: &Method,
    log: &Log,
    p: &Pending,
    fresh: bool,
) -> Result<Finished, JobError> {
    match (p.method, method) {
        (PendingMethod::Create, Method::Create(reopen)) => create(ctx, reopen, log, p).await,
        (PendingMethod::Create, Method::CopyTruncate) => {
            // The configuration changed since: finish moving the log, nobody is to be told.
            create_steps(ctx, log, p).await?;
            Ok(Finished::default())
        }
        (PendingMethod::CopyTruncate, _) => copy_truncate(ctx, log, p, fresh).await,
    }
}

async fn still_original(log: &Log, p: &Pending) -> Result<bool, JobError> {
    let (current, inode) = (log.current(), p.inode);
    log.work(move || {
        Ok(std::fs::symlink_metadata(current).is_ok_and(|m| m.is_file() && m.ino() == inode))
    })
    .await
}

/// Each shift whose source is there and whose target is free (a crash may have done some).
fn shift(dir: &Path, shifts: &[(String, String)]) -> std::io::Result<()> {
    for (from, to) in shifts {
        if dir.join(from).symlink_metadata().is_ok() && dir.join(to).symlink_metadata().is_err() {
            files::rename_noreplace(dir, from, to)?;
        }
    }
    crate::publish::sync_dir(dir)
}

async fn create_steps(ctx: &JobContext, log: &Log, p: &Pending) -> Result<(), JobError> {
    if still_original(log, p).await? {
        let (at, shifts) = (log.at.clone(), p.shifts.clone());
        log.work(move || shift(&at, &shifts)).await?;
        pause::at("shifted", &ctx.cancel).await?;
        let (at, base, to) = (log.at.clone(), log.base.clone(), p.to.clone());
        log.work(move || {
            files::rename_noreplace(&at, &base, &to)?;
            crate::publish::sync_dir(&at)
        })
        .await?;
    }
    pause::at("renamed", &ctx.cancel).await?;
    let owner = Owner {
        uid: p.uid,
        gid: p.gid,
        mode: p.mode,
    };
    let current = log.current();
    log.work(move || {
        if std::fs::symlink_metadata(&current).is_err() {
            files::create_log(&current, owner)?;
        }
        Ok(())
    })
    .await?;
    pause::at("created", &ctx.cancel).await
}

async fn create(
    ctx: &JobContext,
    reopen: &Reopen,
    log: &Log,
    p: &Pending,
) -> Result<Finished, JobError> {
    create_steps(ctx, log, p).await?;
    let told = tell(ctx, reopen, p.uid).await?;
    pause::at("reopened", &ctx.cancel).await?;
    let rotated = log.at.join(&p.to);
    let released = blocking(move || Ok(files::wait_unwritten(&rotated, REOPEN_WAIT))).await?;
    Ok(Finished {
        reopened: Some(told),
        still_written: !released,
        ..Finished::default()
    })
}

/// Asks the writer of a log owned by `log_owner` to reopen it.
async fn tell(ctx: &JobContext, reopen: &Reopen, log_owner: u32) -> Result<String, JobError> {
    match reopen {
        Reopen::Signal { pid_file, signal } => {
            let (pid_file, signal) = (pid_file.clone(), *signal);
            tokio::task::spawn_blocking(move || pidfile::send(&pid_file, signal, log_owner))
                .await
                .map_err(failed)?
                .map_err(|why| failed(format!("reopen: {why}")))
        }
        Reopen::Command(argv) => {
            let spec = ProcessSpec::new(&argv[0]).args(&argv[1..]);
            let token = ctx.cancel.child_token();
            let run = process::run(&spec, &token, |stream, line| {
                let stream = match stream {
                    Stream::Stdout => "stdout",
                    Stream::Stderr => "stderr",
                };
                tracing::info!(stream, "reopen-command: {line}");
            });
            let output = tokio::time::timeout(REOPEN_TIMEOUT, run)
                .await
                .map_err(|_| {
                    failed(format!(
                        "reopen-command {} did not finish within {}s",
                        argv[0],
                        REOPEN_TIMEOUT.as_secs()
                    ))
                })?
                .map_err(|e| match e {
                    process::ProcessError::Cancelled => JobError::Cancelled,
                    e => failed(format!("reopen-command: {e}")),
                })?;
            if !output.status.success() {
                return Err(failed(format!(
                    "reopen-command {} failed with {}: {}",
                    argv[0],
                    process::describe_status(&output.status),
                    output.stderr_summary(3)
                )));
            }
            Ok(format!("ran {}", argv[0]))
        }
    }
}

async fn copy_truncate(
    ctx: &JobContext,
    log: &Log,
    p: &Pending,
    fresh: bool,
) -> Result<Finished, JobError> {
    let temp = log.copy_temp();
    let mut finished = Finished::default();
    if fresh {
        let (path, t) = (log.current(), temp.clone());
        let (file, report) = log
            .work(move || {
                let (file, report) = copy::copy_truncate(&path, &t, || pause::blocking("copied"))?;
                Ok((file, report))
            })
            .await?;
        finished.copy = Some(report);
        pause::at("truncated", &ctx.cancel).await?;
        log.work(move || file.sync_all()).await?;
    } else if !log.exists(&temp).await? {
        // Never copied (nothing happened) or already renamed into place (done).
        return Ok(Finished {
            undone: true,
            ..finished
        });
    } else {
        let (t, path) = (temp.clone(), log.current());
        let untruncated = still_original(log, p).await?
            && log.work(move || copy::copy_is_prefix(&t, &path)).await?;
        if untruncated {
            log.work(move || std::fs::remove_file(&temp)).await?;
            return Ok(Finished {
                undone: true,
                ..finished
            });
        }
        let t = temp.clone();
        log.work(move || files::sync_file(&t)).await?;
    }
    let (at, shifts) = (log.at.clone(), p.shifts.clone());
    log.work(move || shift(&at, &shifts)).await?;
    pause::at("shifted", &ctx.cancel).await?;
    let (at, from, to) = (log.at.clone(), log.copy_temp_name(), p.to.clone());
    log.work(move || {
        files::rename_noreplace(&at, &from, &to)?;
        crate::publish::sync_dir(&at)
    })
    .await?;
    Ok(finished)
}
