//! What the backup tests share: a PostgreSQL server with password auth and the application role,
//! a schema worth backing up, `atprectl` with a deadline fit for backup runs, the real
//! `pg_restore` to check a backup from the outside, and the means to disturb a running dump
//! (a frozen server, a held table lock, a tiny file system).
//!
//! Nothing here trusts the daemon's own view: counts and checksums come from PostgreSQL, processes
//! from `/proc`, files from the file system.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::harness::process::{self, kill_and_reap, run_with_timeout};
use crate::harness::{self, CtlOutput, Daemon, DaemonBuilder, PgServer, proc_children};

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

/// Several tables with jsonb, bytea, numeric, dates, unicode text and names, NULLs, a foreign
/// key, an index, a sequence moved by hand and a view: 225,000 rows.
pub const RICH_SCHEMA: &str = r#"
CREATE TABLE customers (
    id bigserial,
    name text NOT NULL,
    email text,
    created timestamptz NOT NULL,
    profile jsonb
);
CREATE TABLE orders (
    id bigserial,
    customer_id bigint NOT NULL,
    amount numeric(12, 2) NOT NULL,
    note text,
    placed date NOT NULL
);
CREATE TABLE attachments (
    id integer,
    customer_id bigint,
    mime text,
    content bytea NOT NULL
);
CREATE TABLE "Événements ✓" (
    id integer PRIMARY KEY,
    "libellé" text,
    payload jsonb
);
CREATE SEQUENCE invoice_no START 1000;
CREATE VIEW big_spenders AS
    SELECT c.id, c.name, sum(o.amount) AS total
    FROM customers c JOIN orders o ON o.customer_id = c.id
    GROUP BY c.id, c.name HAVING sum(o.amount) > 2000;
INSERT INTO customers (name, email, created, profile)
    SELECT 'Client ' || g || CASE g % 4
               WHEN 0 THEN ' Zoë Ångström'
               WHEN 1 THEN ' 日本語テキスト'
               WHEN 2 THEN ' Ελληνικά 🐘'
               ELSE E' O''Brien, "quoted"\ttab\\slash' END,
           'c' || g || '@example.org',
           timestamptz '2020-01-01 00:00:00+00' + g * interval '17 minutes',
           CASE WHEN g % 10 = 0 THEN NULL ELSE jsonb_build_object(
               'tier', g % 5, 'tags', jsonb_build_array('a', 'β', g), 'score', g * 1.5,
               'active', g % 3 = 0, 'nested', jsonb_build_object('ü', repeat('z', g % 7))) END
    FROM generate_series(1, 50000) g;
INSERT INTO orders (customer_id, amount, note, placed)
    SELECT 1 + g % 50000, (g % 997) * 1.37,
           CASE WHEN g % 3 = 0 THEN NULL ELSE 'note ' || md5(g::text) END,
           date '2021-01-01' + g % 700
    FROM generate_series(1, 150000) g;
INSERT INTO attachments
    SELECT g, 1 + g % 50000, 'application/octet-stream',
           decode(md5(g::text) || md5((-g)::text), 'hex') || '\x00ff0a5c'::bytea
    FROM generate_series(1, 20000) g;
INSERT INTO "Événements ✓"
    SELECT g, 'événement n°' || g || E'\nligne 2', jsonb_build_object('k', repeat('x', g % 50), 'ü', g)
    FROM generate_series(1, 5000) g;
-- Constraints after the data: one index build or join each instead of a check per row.
ALTER TABLE customers ADD PRIMARY KEY (id), ADD UNIQUE (email);
ALTER TABLE orders ADD PRIMARY KEY (id),
    ADD FOREIGN KEY (customer_id) REFERENCES customers (id);
ALTER TABLE attachments ADD PRIMARY KEY (id),
    ADD FOREIGN KEY (customer_id) REFERENCES customers (id);
CREATE INDEX orders_customer ON orders (customer_id);
SELECT setval('invoice_no', 4242);
SELECT nextval('invoice_no');
"#;

/// Six small tables of every kind row counts must cover: empty, partitioned (parent and
/// partitions), a quoted unicode name; 5,503 rows.
pub const SMALL_SCHEMA: &str = r#"
CREATE TABLE accounts (id integer PRIMARY KEY, name text);
INSERT INTO accounts SELECT g, 'account ' || g FROM generate_series(1, 1500) g;
CREATE TABLE "Ünï Tab" (id integer PRIMARY KEY, v jsonb);
INSERT INTO "Ünï Tab" VALUES (1, '{"a": 1}'), (2, '[]'), (3, NULL);
CREATE TABLE empty_one (id integer PRIMARY KEY);
CREATE TABLE events (id integer, at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO events SELECT g, date '2024-06-01' + g % 400 FROM generate_series(1, 2000) g;
"#;

/// Rows of each table of [`RICH_SCHEMA`].
pub const RICH_ROWS: [(&str, i64); 4] = [
    ("public.attachments", 20_000),
    ("public.customers", 50_000),
    ("public.orders", 150_000),
    ("public.\"Événements ✓\"", 5_000),
];

/// Per user table (named as `quote_ident(schema).quote_ident(table)`, as the manifest names
/// them): its row count and the md5 of all its rows as text in `id` order.
pub fn fingerprint(pg: &PgServer, db: &str) -> BTreeMap<String, (i64, String)> {
    let tables = pg.psql(
        db,
        "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables \
         WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
    );
    // One query for all tables: a psql per table costs more than the counting.
    let query = tables
        .lines()
        .map(|table| {
            format!(
                "SELECT {lit}, count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t.id), '')) \
                 FROM {table} t",
                lit = sql_literal(table)
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    pg.psql(db, &query)
        .lines()
        .map(|row| {
            let mut fields = row.rsplitn(3, '|');
            let md5 = fields.next().expect("md5").to_owned();
            let count = fields.next().expect("count").parse().expect("a count");
            let table = fields.next().expect("table").to_owned();
            (table, (count, md5))
        })
        .collect()
}

fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Just the row counts of [`fingerprint`].
pub fn row_counts(pg: &PgServer, db: &str) -> BTreeMap<String, i64> {
    fingerprint(pg, db)
        .into_iter()
        .map(|(t, (n, _))| (t, n))
        .collect()
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
