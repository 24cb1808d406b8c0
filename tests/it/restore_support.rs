//! What the restore tests share: a backed-up database, per-table fingerprints,
//! `atprectl restore` with its exit code (or in the background), the restore runs in the
//! history, and a scan of the daemon's children for secrets while a restore runs.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::unistd::Pid;
use serde_json::Value;

use crate::backup_secrets::assert_no_password;
use crate::backup_support::{DB, Fixture, backup_ok, ctl};
use crate::fault_support::pg_tools_naming;
use crate::harness::{CtlOutput, Daemon, DaemonBuilder, process, wait_until};
use crate::prune_support::NIGHTLY;

/// The tables of the small schema, each as `(name as SQL, relation to read)`.
pub const TABLES: [&str; 6] = [
    "accounts",
    "\"Ünï Tab\"",
    "empty_one",
    "events",
    "events_2024",
    "events_2025",
];

/// A small database, a daemon with the `nightly` backup job (default format: zstd-wrapped
/// custom archive) and one backup of it.
pub fn backed_up(
    configure: impl FnOnce(DaemonBuilder) -> DaemonBuilder,
) -> (Fixture, Daemon, String) {
    let fx = Fixture::new();
    fx.create_small_schema();
    let daemon = configure(fx.daemon(NIGHTLY)).spawn();
    let id = backup_ok(&daemon, "nightly");
    (fx, daemon, id)
}

/// An md5 over every row of `table` in `db` (in a stable order), or `absent`.
pub fn fingerprint(fx: &Fixture, db: &str, table: &str) -> String {
    let exists = fx.pg.psql(
        db,
        &format!(
            "SELECT to_regclass('{}') IS NOT NULL",
            table.replace('\'', "''")
        ),
    );
    if exists.trim() != "t" {
        return "absent".into();
    }
    fx.pg
        .psql(
            db,
            &format!(
                "SELECT md5(coalesce(string_agg(r::text, '|' ORDER BY r::text), '')) || ':' || count(*) \
                 FROM {table} r"
            ),
        )
        .trim()
        .to_owned()
}

/// Every table's fingerprint in `db`.
pub fn fingerprints(fx: &Fixture, db: &str) -> Vec<(String, String)> {
    TABLES
        .iter()
        .map(|t| ((*t).to_owned(), fingerprint(fx, db, t)))
        .collect()
}

/// The databases on the server.
pub fn databases(fx: &Fixture) -> Vec<String> {
    fx.pg
        .psql(
            "postgres",
            "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database",
        )
        .trim()
        .split(',')
        .map(str::to_owned)
        .collect()
}

/// `atprectl restore ID ARGS`, stdin not a terminal.
pub fn restore(daemon: &Daemon, id: &str, args: &[&str]) -> CtlOutput {
    let mut all = vec!["restore", id];
    all.extend_from_slice(args);
    ctl(daemon, &all)
}

/// The source database's name.
pub const SOURCE: &str = DB;

/// Kills the running pg_restore (`victims`, from `pg_tools_naming`) of the restore `child` (an
/// `atprectl restore`) and waits for it: it must fail (exit 1) saying that the target database
/// was not touched. Returns its output for more checks.
pub fn kill_pg_restore(victims: &[(Pid, String)], child: Child) -> Output {
    let killed = victims.iter().filter(|(pid, _)| {
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success())
    });
    assert!(killed.count() > 0, "kill -9 of pg_restore");
    let out = child.wait_with_output().expect("atprectl ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the target database was not touched"),
        "{stderr}"
    );
    out
}

/// A database whose `bulk` table of `rows` rows takes a while to restore, backed up; the daemon
/// restores through the returned scratch folder.
pub fn bulky(rows: u32) -> (Fixture, Daemon, String, std::path::PathBuf) {
    let fx = Fixture::new();
    fx.create_bulk_table(rows);
    let scratch = fx.dir.path().join("scratch");
    let daemon = fx
        .daemon(NIGHTLY)
        .env("ATPRED__DAEMON__RESTORE_SCRATCH_DIR", &scratch)
        .spawn();
    let id = backup_ok(&daemon, "nightly");
    (fx, daemon, id, scratch)
}

/// After a failed restore into `to`: no database under its name or a restoring one, `bulk`
/// on the source as `before`, and nothing in `scratch`.
pub fn nothing_left(fx: &Fixture, to: &str, before: &str, scratch: &Path) {
    let dbs = databases(fx);
    assert!(
        !dbs.iter()
            .any(|d| d == to || d.contains("atpred_restoring")),
        "{dbs:?}"
    );
    assert_eq!(fingerprint(fx, SOURCE, "bulk"), before);
    let left: Vec<_> = std::fs::read_dir(scratch)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

/// Indexes on `bulk` that make pg_restore's pass after the rows (indexes, constraints) last
/// long enough to be caught.
pub fn slow_post_pass(fx: &Fixture) {
    fx.sql(
        "CREATE INDEX bulk_payload ON bulk (payload); \
         CREATE INDEX bulk_payload_md5 ON bulk (md5(payload))",
    );
}

/// Waits until pg_restore builds what follows the rows in `db` (its `-j 2` pass over the
/// indexes and constraints, once atpred has copied the rows) and returns its processes.
pub fn wait_post_pass(fx: &Fixture, db: &str) -> Vec<(Pid, String)> {
    // The database name alone is not enough: tests running beside this one restore into
    // databases of the same name on their own servers (and a kill of theirs fails both). The
    // server's socket folder, pg_restore's --host, is this test's own.
    let marker = format!("--dbname={db}");
    let host = fx.pg.socket_dir().to_string_lossy().into_owned();
    let mut found = Vec::new();
    let seen = wait_until(Duration::from_secs(60), || {
        found = pg_tools_naming(&[Path::new(&marker)])
            .into_iter()
            .filter(|(_, cmdline)| {
                cmdline.contains("--jobs=2")
                    && cmdline.contains("--use-list")
                    && cmdline.split(' ').any(|arg| arg == host)
            })
            .collect();
        !found.is_empty()
    });
    assert!(seen, "pg_restore never started its pass after the rows");
    found
}

/// `atprectl restore ID ARGS` left running in the background (stdin not a terminal).
pub fn spawn_restore(daemon: &Daemon, id: &str, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_atprectl"))
        .env_remove("ATPRED_SOCKET")
        .arg("--socket")
        .arg(daemon.socket())
        .args(["restore", id])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start atprectl restore")
}

/// Waits until pg_restore copies rows into `db` (a restore's `<to>_atpred_restoring`).
pub fn wait_copying_into(fx: &Fixture, db: &str) {
    let copying = || {
        fx.pg
            .psql(
                "postgres",
                &format!(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' \
                     AND query ILIKE 'COPY%'"
                ),
            )
            .trim()
            != "0"
    };
    assert!(
        wait_until(Duration::from_secs(60), copying),
        "pg_restore never started copying into {db}"
    );
}

/// The restore runs in the history (`atprectl --json history restore`), newest first.
pub fn restore_runs(daemon: &Daemon) -> Vec<Value> {
    let out = ctl(daemon, &["--json", "history", "restore"]);
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
    let reply: Value = serde_json::from_str(out.stdout.trim()).expect("a history reply");
    reply["runs"].as_array().expect("runs").clone()
}

/// The databases a restore into `to` could leave behind: the target, its restoring copy.
pub fn leftovers_of(fx: &Fixture, to: &str) -> Vec<String> {
    databases(fx)
        .into_iter()
        .filter(|d| d == to || d.contains("atpred_restoring"))
        .collect()
}

/// What one child of the daemon was, as read from /proc once it had exec'd.
#[derive(Debug, Clone)]
pub struct SeenChild {
    pub pid: i32,
    pub comm: String,
    pub cmdline: String,
    pub environ: String,
}

/// A scan of every descendant of the daemon, running in a thread until [`ChildScan::finish`].
pub struct ChildScan {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<SeenChild>>,
}

/// Starts watching every descendant of `daemon` (polled from /proc every millisecond, so
/// short-lived children are caught too): each one's argv and environment are read once it
/// has exec'd (a forked child that has not, still a copy of the daemon, is skipped until it
/// has). [`ChildScan::finish`] judges what was seen.
pub fn scan_children_for_secrets(daemon: &Daemon) -> ChildScan {
    let root = daemon.pid();
    let daemon_exe = exe_of(root.as_raw());
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = Arc::clone(&stop);
    let thread = std::thread::spawn(move || {
        let mut seen: BTreeMap<(i32, String), SeenChild> = BTreeMap::new();
        while !stopping.load(Ordering::SeqCst) {
            for p in process::descendants(root) {
                let pid = p.pid.as_raw();
                if p.state == 'Z' || seen.contains_key(&(pid, p.comm.clone())) {
                    continue;
                }
                let exe = exe_of(pid);
                if exe.is_none() || exe == daemon_exe {
                    continue;
                }
                let read = |what: &str| {
                    std::fs::read(format!("/proc/{pid}/{what}"))
                        .map(|b| String::from_utf8_lossy(&b).replace('\0', "\n"))
                };
                let (Ok(cmdline), Ok(environ)) = (read("cmdline"), read("environ")) else {
                    continue;
                };
                let child = SeenChild {
                    pid,
                    comm: p.comm.clone(),
                    cmdline,
                    environ,
                };
                seen.insert((pid, p.comm), child);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        seen.into_values().collect()
    });
    ChildScan { stop, thread }
}

fn exe_of(pid: i32) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

impl ChildScan {
    /// Stops the scan and asserts that it saw at least one child of each of `programs` (by
    /// comm), and that no child's argv or environment held any of `canaries` or the
    /// database password. Returns every child seen.
    pub fn finish(self, programs: &[&str], canaries: &[&str]) -> Vec<SeenChild> {
        self.stop.store(true, Ordering::SeqCst);
        let seen = self.thread.join().expect("the scan thread");
        for program in programs {
            assert!(
                seen.iter().any(|c| c.comm == *program),
                "the scan never saw {program}: {:?}",
                seen.iter().map(|c| &c.comm).collect::<Vec<_>>()
            );
        }
        for child in &seen {
            for (what, text) in [("argv", &child.cmdline), ("environment", &child.environ)] {
                let name = format!("the {what} of {} (pid {})", child.comm, child.pid);
                assert_no_password(&name, text);
                for canary in canaries {
                    assert!(!text.contains(canary), "{canary:?} is in {name}:\n{text}");
                }
            }
        }
        seen
    }
}
