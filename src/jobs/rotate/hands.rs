//! Whose hands a rotate job's file work is done with: the daemon's, or those of the job's `su`
//! user, like logrotate's `su`.
//!
//! When the job names `su = "user:group"` and atpred may switch users (it holds `CAP_SETUID`
//! and `CAP_SETGID`: it runs as root), the job gets one dedicated OS thread that sets its own
//! credentials, and only its own, with the raw per-thread system calls (not glibc's `setuid`,
//! which changes every thread of the process): no supplementary groups, then the effective
//! (and so file-system) gid, then the effective uid, to the `su` user and group. The kernel
//! clears the thread's effective capabilities with the uid change, which is checked before any
//! work: from then on every access is judged as the user's. The real and saved ids stay root
//! on purpose: the kernel lets a user signal or ptrace a thread whose real or saved uid is
//! theirs, so a thread fully switched to the application's user could be killed (taking the
//! whole daemon with it) or, with `fs.suid_dumpable = 1`, taken over by that user. The thread is
//! never handed back to a pool: it ends with the job's run. Every file step of the job (opening
//! the folder, listing it, renaming, creating, copying, compressing, removing, chmod, chown)
//! runs on that thread. What must stay the
//! daemon's stays on the runtime: the state file (in the state directory), the pid-file and
//! the signal through a pidfd, the reopen command, and the scan of `/proc` for writers.
//!
//! When atpred cannot switch (the hardened unit runs it as its own user, with no capability),
//! the work is done as the daemon, as before: the folder handle ([`super::folder`]) and the
//! trust check are what keep it safe.

use std::io;
use std::sync::Arc;
use std::sync::mpsc;

use rustix::process::{Gid, Uid};
use rustix::thread::CapabilitySet;

use crate::config::SuUser;

type Task = Box<dyn FnOnce() + Send>;

/// Runs a job's file work, as the daemon or on the thread of its `su` user.
#[derive(Debug, Clone, Default)]
pub struct Hands {
    su: Option<Arc<SuThread>>,
}

/// The channel to a thread running as the `su` user; dropping the last one ends the thread.
#[derive(Debug)]
struct SuThread {
    tasks: mpsc::Sender<Task>,
    /// `user:group` as configured, for messages.
    who: String,
}

impl Hands {
    /// The hands for a job with this `su` (if any): the user's own when this process may switch
    /// to it, the daemon's otherwise (not root: the work is done as today, see the module docs).
    pub async fn for_job(su: Option<&SuUser>) -> Result<Hands, String> {
        let Some(su) = su.filter(|su| switch_needed(su) && may_switch()) else {
            return Ok(Hands::default());
        };
        let (tasks, queue) = mpsc::channel::<Task>();
        let (ready, switched) = tokio::sync::oneshot::channel();
        let (uid, gid) = (su.uid, su.gid);
        std::thread::Builder::new()
            .name("atpred-su".into())
            .spawn(move || {
                let result = switch(uid, gid);
                let ok = result.is_ok();
                let _ = ready.send(result);
                if ok {
                    for task in queue {
                        task();
                    }
                }
            })
            .map_err(|e| format!("cannot start the thread for su = {:?}: {e}", su.text))?;
        match switched.await {
            Ok(Ok(())) => Ok(Hands {
                su: Some(Arc::new(SuThread {
                    tasks,
                    who: su.text.clone(),
                })),
            }),
            Ok(Err(e)) => Err(format!("cannot switch to su = {:?}: {e}", su.text)),
            Err(_) => Err(format!("cannot switch to su = {:?}", su.text)),
        }
    }

    /// The `user:group` the work is done as, when not the daemon's.
    pub fn who(&self) -> Option<&str> {
        self.su.as_deref().map(|s| s.who.as_str())
    }

    /// Runs `f` with these hands, off the async runtime. A refusal by the kernel says which
    /// user was refused.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let Some(su) = &self.su else {
            return tokio::task::spawn_blocking(f)
                .await
                .map_err(io::Error::other)?;
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        su.tasks
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| io::Error::other(format!("the thread of su = {:?} ended", su.who)))?;
        let result = rx.await.map_err(|_| {
            io::Error::other(format!("the thread of su = {:?} ended mid-step", su.who))
        })?;
        result.map_err(|e| match e.kind() {
            io::ErrorKind::PermissionDenied => io::Error::new(
                e.kind(),
                format!(
                    "{e} (atpred works in this job's folders as {}, its su)",
                    su.who
                ),
            ),
            _ => e,
        })
    }
}

/// Whether `su` differs from who this process is (root as `su` is the daemon itself).
fn switch_needed(su: &SuUser) -> bool {
    let (uid, gid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    su.uid != 0 && (su.uid, su.gid) != (uid, gid)
}

/// Whether this thread may change its user and group.
fn may_switch() -> bool {
    rustix::thread::capabilities(None).is_ok_and(|c| {
        c.effective
            .contains(CapabilitySet::SETUID | CapabilitySet::SETGID)
    })
}

/// Makes the calling thread (only) act as `uid`:`gid` with no supplementary group and no
/// effective capability; its real and saved ids stay root (see the module docs).
fn switch(uid: u32, gid: u32) -> io::Result<()> {
    let (u, g) = (Uid::from_raw(uid), Gid::from_raw(gid));
    rustix::thread::set_thread_groups(&[])?;
    rustix::thread::set_thread_res_gid(None, g, None)?;
    rustix::thread::set_thread_res_uid(None, u, None)?;
    let caps = rustix::thread::capabilities(None)?;
    let now = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
        nix::unistd::getgroups().map_or(usize::MAX, |g| g.len()),
    );
    if now != (uid, gid, 0) || !caps.effective.is_empty() {
        return Err(io::Error::other(format!(
            "the thread still acts as uid {} gid {} with capabilities {:?}",
            now.0, now.1, caps.effective
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hands_without_su_are_the_daemons() {
        let hands = Hands::for_job(None).await.unwrap();
        assert!(hands.who().is_none());
        let uid = hands
            .run(|| Ok(nix::unistd::geteuid().as_raw()))
            .await
            .unwrap();
        assert_eq!(uid, nix::unistd::geteuid().as_raw());
    }

    #[tokio::test]
    async fn hands_of_su_switch_one_thread_only() {
        if !may_switch() {
            return; // needs root; the integration tests cover both cases
        }
        let su = SuUser {
            uid: 65534,
            gid: 65534,
            text: "65534:65534".into(),
        };
        let hands = Hands::for_job(Some(&su)).await.unwrap();
        assert_eq!(hands.who(), Some("65534:65534"));
        let ids = hands
            .run(|| {
                Ok((
                    nix::unistd::geteuid().as_raw(),
                    nix::unistd::getegid().as_raw(),
                    nix::unistd::getgroups().unwrap().len(),
                ))
            })
            .await
            .unwrap();
        assert_eq!(ids, (65534, 65534, 0));
        assert_eq!(nix::unistd::geteuid().as_raw(), 0, "the rest stays root");
        let denied = hands
            .run(|| std::fs::read_dir("/root").map(|_| ()))
            .await
            .unwrap_err();
        assert!(
            denied.to_string().contains("as 65534:65534, its su"),
            "{denied}"
        );
    }
}
