//! Means to disturb a running backup and to watch it from outside: pg_dump found in `/proc`,
//! the partial folder as it grows, a frozen server, a held table lock, a tiny file system.
//! Each guard undoes itself when dropped, also when the test fails.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::backup_schema::sql_literal;
use crate::backup_support::entries;
use crate::harness::process::{self, kill_and_reap, run_with_timeout};
use crate::harness::{self, Daemon, PgServer, proc_children};

/// Live processes whose command line names pg_dump and this test's server (its socket dir):
/// the dumps of this test, and no other test's.
pub fn pg_dumps_of(pg: &PgServer) -> Vec<(Pid, String)> {
    let socket = pg.socket_dir().to_string_lossy().into_owned();
    process::all_processes()
        .into_iter()
        .filter(|p| p.state != 'Z')
        .filter_map(|p| {
            let raw = std::fs::read(format!("/proc/{}/cmdline", p.pid)).ok()?;
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            (cmdline.contains("pg_dump") && cmdline.contains(&socket)).then_some((p.pid, cmdline))
        })
        .collect()
}

/// The daemon's pg_dump child dumping the database (not `pg_dump --version`), once it runs
/// (10 s at most).
pub fn wait_for_pg_dump(daemon: &Daemon) -> Pid {
    let mut found = None;
    let ok = harness::wait_until(Duration::from_secs(10), || {
        found = proc_children(daemon.pid())
            .into_iter()
            .filter(|p| p.comm == "pg_dump" && p.state != 'Z')
            .find(|p| {
                std::fs::read(format!("/proc/{}/cmdline", p.pid))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("--snapshot="))
            })
            .map(|p| p.pid);
        found.is_some()
    });
    assert!(
        ok,
        "no pg_dump child of the daemon within 10 s:\n{}",
        daemon.log()
    );
    found.expect("found")
}

/// The `.partial-*` folder of the running backup, once the dump has written at least `bytes`
/// into it (a file, or a folder of them); panics if the run ends first or nothing comes in 20 s.
pub fn wait_for_streaming(backup_dir: &Path, bytes: u64) -> PathBuf {
    let mut partial = None;
    let ok = harness::wait_until(Duration::from_secs(20), || {
        partial = entries(backup_dir)
            .into_iter()
            .find(|n| n.starts_with(".partial-"))
            .map(|n| backup_dir.join(n));
        partial.as_ref().is_some_and(|p| tree_size(p) >= bytes)
    });
    assert!(
        ok,
        "no dump streaming {bytes} bytes into {} within 20 s (entries: {:?})",
        backup_dir.display(),
        entries(backup_dir)
    );
    partial.expect("found")
}

/// Bytes of the files under `path` (0 once it is gone).
pub fn tree_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some(if meta.is_dir() {
                tree_size(&e.path())
            } else {
                meta.len()
            })
        })
        .sum()
}

/// Every PostgreSQL process of `pg` stopped with SIGSTOP (postmaster first, so it starts no new
/// backend), continued when dropped — also when the test fails.
pub struct FrozenServer(Vec<Pid>);

impl FrozenServer {
    pub fn freeze(pg: &PgServer) -> FrozenServer {
        let postmaster = pg.pid();
        kill(postmaster, Signal::SIGSTOP).expect("SIGSTOP the postmaster");
        let mut pids = vec![postmaster];
        for p in proc_children(postmaster) {
            if kill(p.pid, Signal::SIGSTOP).is_ok() {
                pids.push(p.pid);
            }
        }
        FrozenServer(pids)
    }
}

impl Drop for FrozenServer {
    fn drop(&mut self) {
        for pid in self.0.iter().rev() {
            let _ = kill(*pid, Signal::SIGCONT);
        }
    }
}

/// A superuser session holding `ACCESS EXCLUSIVE` on a table until dropped: pg_dump (which
/// locks every table before it writes anything) waits on it, so a real pg_dump stays alive for
/// as long as a test needs to inspect it.
pub struct TableLock {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl TableLock {
    pub fn hold(pg: &PgServer, db: &str, table: &str) -> TableLock {
        let mut cmd = pg.psql_command("postgres", db);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn psql");
        let mut stdin = child.stdin.take().expect("psql stdin");
        writeln!(
            stdin,
            "BEGIN;\nLOCK TABLE {table} IN ACCESS EXCLUSIVE MODE;"
        )
        .expect("send");
        stdin.flush().expect("flush psql stdin");
        let lock = TableLock {
            child,
            stdin: Some(stdin),
        };
        let query = format!(
            "SELECT count(*) FROM pg_locks WHERE relation = '{table}'::regclass \
             AND mode = 'AccessExclusiveLock' AND granted"
        );
        let held = harness::wait_until(Duration::from_secs(10), || pg.psql(db, &query) == "1");
        assert!(held, "the lock on {table} was not granted within 10 s");
        lock
    }
}

/// Waits until a session of this server waits for a lock in a statement starting with
/// `statement` (e.g. pg_dump's `LOCK TABLE`): then it has got past everything before it.
pub fn wait_for_lock_waiter(pg: &PgServer, statement: &str) {
    let query = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
         AND query LIKE {}",
        sql_literal(&format!("{statement}%"))
    );
    let waiting = harness::wait_until(Duration::from_secs(10), || {
        pg.psql("postgres", &query) != "0"
    });
    assert!(
        waiting,
        "no session waits for a lock in {statement:?} within 10 s"
    );
}

impl Drop for TableLock {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "COMMIT;");
        }
        if process::wait_timeout(&mut self.child, Duration::from_secs(10)).is_none() {
            kill_and_reap(&mut self.child);
        }
    }
}

/// A tmpfs of `size` mounted on `path` (mode 0700), unmounted when dropped. Needs root.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).expect("create the mount point");
        let out = run_with_timeout(
            Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size},mode=0700"),
                    "tmpfs",
                ])
                .arg(path),
            Duration::from_secs(10),
        );
        assert_eq!(
            out.status,
            0,
            "mount tmpfs on {}: {}",
            path.display(),
            out.stderr
        );
        Tmpfs(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a daemon still holding a file there must not leave the mount behind.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
