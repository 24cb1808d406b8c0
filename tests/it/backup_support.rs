//! What the backup tests share: a PostgreSQL server with password auth and the application role,
//! `atprectl` with a deadline fit for backup runs, the real `pg_restore` and a shell to check a
//! backup from the outside, and the backup folder as the file system sees it.
//!
//! Nothing here trusts the daemon's own view: counts and checksums come from PostgreSQL, files
//! from the file system. The schemas are in `backup_schema`, the means to disturb a running
//! dump in `backup_disturb`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::backup_schema::{RICH_SCHEMA, SMALL_SCHEMA};
use crate::harness::process::{self, kill_and_reap, run_with_timeout};
use crate::harness::{self, CtlOutput, Daemon, DaemonBuilder, PgServer};

/// The application role the daemon logs in as.
pub const ROLE: &str = "atp_user";
/// Distinctive enough to grep for, with the two characters a passfile must escape (`:` and `\`).
pub const PASSWORD: &str = "Pw7f3a9c1e:back\\slash-zq";
/// The application database the daemon backs up.
pub const DB: &str = "atp_app";
/// A backup run with a restore drill, in a debug build, on two busy cores.
const RUN_TIMEOUT: Duration = Duration::from_secs(100);
const SHELL_TIMEOUT: Duration = Duration::from_secs(100);

/// A temporary directory for the daemon's files and a PostgreSQL server where `atp_user` (a
/// password, CREATEDB, CONNECTION LIMIT 20) owns `atp_app`.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub pg: PgServer,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = harness::tempdir();
        let pg = PgServer::start_with_password_auth();
        pg.create_role_with_password(ROLE, PASSWORD);
        pg.psql("postgres", &format!("ALTER ROLE {ROLE} CREATEDB"));
        pg.create_db(DB, ROLE);
        Fixture { dir, pg }
    }

    /// The harness's default `[daemon] backup-dir` (not created until a backup runs).
    pub fn backup_dir(&self) -> PathBuf {
        self.dir.path().join("backups")
    }

    /// A daemon logging in as `atp_user` with a passfile, plus `jobs` (raw TOML).
    pub fn daemon(&self, jobs: &str) -> DaemonBuilder {
        Daemon::builder(self.dir.path())
            .postgres(&self.pg, ROLE, PASSWORD, DB)
            .toml(jobs)
    }

    /// Runs `sql` in `atp_app` as `atp_user` (through the trusted superuser and SET ROLE, so
    /// the objects belong to the role the daemon dumps as). Returns the last statement's output.
    pub fn sql(&self, sql: &str) -> String {
        self.pg.psql(DB, &format!("SET ROLE {ROLE}; {sql}"))
    }

    /// Creates the rich schema ([`RICH_SCHEMA`]) in `atp_app`.
    pub fn create_rich_schema(&self) {
        self.sql(RICH_SCHEMA);
    }

    /// Creates the small schema ([`SMALL_SCHEMA`]) in `atp_app`.
    pub fn create_small_schema(&self) {
        self.sql(SMALL_SCHEMA);
    }

    /// One table `bulk` of `rows` rows of about 140 bytes each in a plain dump: big enough, at a
    /// few hundred thousand rows, for the dump to stream for seconds in a debug build.
    pub fn create_bulk_table(&self, rows: u32) {
        self.sql(&format!(
            "CREATE TABLE bulk (id bigint PRIMARY KEY, payload text NOT NULL); \
             INSERT INTO bulk SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, {rows}) g"
        ));
    }
}

/// `pg_restore` as the superuser into `target`, stopping at the first error, owners dropped:
/// a shell command line missing only its input (append a file or folder, or pipe into it).
pub fn pg_restore_command(pg: &PgServer, target: &str) -> String {
    format!(
        "{} --no-owner --exit-on-error -h {} -p {} -U postgres -d {target}",
        quote(&pg.bin_dir().join("pg_restore")),
        quote(pg.socket_dir()),
        pg.port()
    )
}

/// Single-quotes a path for `bash -c`.
pub fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// Runs `script` with `bash -c` under `set -euo pipefail` (a failing stage of a pipeline fails
/// the whole), no `PG*` variable inherited; panics with its output unless it exits 0.
pub fn shell(script: &str) -> CtlOutput {
    let out = shell_status(script);
    assert_eq!(
        out.status, 0,
        "{script}\nstdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    out
}

/// Like [`shell`], leaving the judgement of the outcome to the caller.
pub fn shell_status(script: &str) -> CtlOutput {
    let mut cmd = Command::new("bash");
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("PG")) {
            cmd.env_remove(&key);
        }
    }
    cmd.env("LC_ALL", "C")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"));
    run_with_timeout(&mut cmd, SHELL_TIMEOUT)
}

/// `atprectl --socket S ARGS` with a deadline long enough for a backup run.
pub fn ctl(daemon: &Daemon, args: &[&str]) -> CtlOutput {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_atprectl"));
    cmd.env_remove("ATPRED_SOCKET")
        .env_remove("NOTIFY_SOCKET")
        .arg("--socket")
        .arg(daemon.socket())
        .args(args);
    run_with_timeout(&mut cmd, RUN_TIMEOUT)
}

/// `atprectl --json ARGS` expecting exit 0 and one JSON reply.
pub fn ctl_json(daemon: &Daemon, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = ctl(daemon, &all);
    assert_eq!(
        out.status, 0,
        "atprectl {all:?}: {}{}",
        out.stdout, out.stderr
    );
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

/// `atprectl --json run JOB --wait`: the finished run record, whatever its outcome.
pub fn run_job(daemon: &Daemon, job: &str) -> Value {
    let out = ctl(daemon, &["--json", "run", job, "--wait"]);
    finished_record(job, &out)
}

/// The run record in the last reply of `atprectl --json run JOB --wait`, whose exit status must
/// follow the outcome (0 succeeded, 1 otherwise).
fn finished_record(job: &str, out: &CtlOutput) -> Value {
    let last = out
        .stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| panic!("no reply to run {job}: {}", out.stderr));
    let reply: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}"));
    assert_eq!(reply["type"], "finished", "{}", out.stdout);
    let run = reply["run"].clone();
    let succeeded = run["outcome"] == "succeeded";
    assert_eq!(
        out.status,
        if succeeded { 0 } else { 1 },
        "the exit code follows the outcome: {run}"
    );
    run
}

/// `atprectl --json run JOB --wait` in the background, for tests that disturb the run.
pub struct BackgroundRun {
    job: String,
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl BackgroundRun {
    /// Starts the run; its replies go to files in `scratch`.
    pub fn start(daemon: &Daemon, scratch: &Path, job: &str) -> BackgroundRun {
        let (out, err) = (
            scratch.join(format!("run-{job}.out")),
            scratch.join(format!("run-{job}.err")),
        );
        let child = Command::new(env!("CARGO_BIN_EXE_atprectl"))
            .env_remove("ATPRED_SOCKET")
            .env_remove("NOTIFY_SOCKET")
            .arg("--socket")
            .arg(daemon.socket())
            .args(["--json", "run", job, "--wait"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("create the run's stdout file"))
            .stderr(std::fs::File::create(&err).expect("create the run's stderr file"))
            .spawn()
            .expect("spawn atprectl");
        BackgroundRun {
            job: job.to_owned(),
            child,
            out,
            err,
        }
    }

    /// Whether atprectl still follows the run (it ends when the run does).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the run to end and returns its record.
    pub fn finish(mut self) -> Value {
        let status = process::wait_timeout(&mut self.child, RUN_TIMEOUT)
            .unwrap_or_else(|| panic!("run {} did not finish within {RUN_TIMEOUT:?}", self.job));
        let read =
            |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
        let out = CtlOutput {
            status: process::status_code(status),
            stdout: read(&self.out),
            stderr: read(&self.err),
        };
        finished_record(&self.job, &out)
    }
}

impl Drop for BackgroundRun {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// [`run_job`] expecting success; returns the new backup's id.
pub fn backup_ok(daemon: &Daemon, job: &str) -> String {
    let run = run_job(daemon, job);
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    run["details"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {run:#}"))
        .to_owned()
}

/// The catalog as `atprectl --json backups` reports it.
pub fn backups(daemon: &Daemon) -> Vec<Value> {
    ctl_json(daemon, &["backups"])["backups"]
        .as_array()
        .expect("backups is a list")
        .clone()
}

/// A backup's manifest as `atprectl --json backups show ID` reports it.
pub fn manifest(daemon: &Daemon, id: &str) -> Value {
    ctl_json(daemon, &["backups", "show", id])["manifest"].clone()
}

/// The names in `dir`, sorted (empty when it does not exist).
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| {
                e.expect("read_dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Every file under `dir` (recursively) with its bytes, to prove a backup untouched.
pub fn snapshot_files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = e.expect("read_dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read a backup file");
                files.insert(path, bytes);
            }
        }
    }
    files
}

/// Waits until the UTC clock is past the second of backup `id` (`YYYYMMDDTHHMMSSZ-job`), so a
/// new run of the same job gets a new id: ids have one-second resolution.
pub fn wait_past_second_of(id: &str) {
    let second = &id[..16];
    let moved = harness::wait_until(Duration::from_secs(3), || {
        chrono::Utc::now()
            .format("%Y%m%dT%H%M%SZ")
            .to_string()
            .as_str()
            > second
    });
    assert!(moved, "the clock did not move past {second}");
}

/// After a failed run: backup-dir holds only `older`, byte for byte as `before`, and it is
/// still the one verified backup listed.
pub fn assert_only_older_intact(
    fx: &Fixture,
    daemon: &Daemon,
    older: &str,
    before: &BTreeMap<PathBuf, Vec<u8>>,
    why: &str,
) {
    assert_eq!(
        entries(&fx.backup_dir()),
        [older.to_owned()],
        "{why}: no new folder, no partial"
    );
    assert_eq!(
        &snapshot_files(&fx.backup_dir().join(older)),
        before,
        "{why}: older backup untouched"
    );
    let listed = backups(daemon);
    assert_eq!(listed.len(), 1, "{why}: {listed:?}");
    assert_eq!(
        (listed[0]["id"].as_str(), listed[0]["state"].as_str()),
        (Some(older), Some("verified")),
        "{why}"
    );
}
