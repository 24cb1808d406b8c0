//! What the wal-archive tests share: the backup fixture's server (password auth) with the
//! application role given REPLICATION, an age key, a `kind = "wal-archive"` job, WAL written
//! and switched on demand, and the archive read from the outside: `index.jsonl` as JSON, each
//! segment decrypted with the `age` CLI, decompressed with the `zstd` CLI and read by the real
//! `pg_waldump`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::backup_encryption::{keygen, require_age};
use crate::backup_support::{Fixture, ROLE, ctl, ctl_json, quote, shell, shell_status};
use crate::harness::{self, CtlOutput, Daemon, DaemonBuilder, toml_path, toml_str};

/// The job's name in every wal test, and so its slot `atpred_wal`.
pub const JOB: &str = "wal";
pub const SLOT: &str = "atpred_wal";
/// Segments are archived within about a second of completing; a debug build on two busy
/// cores gets more.
pub const ARCHIVE_TIMEOUT: Duration = Duration::from_secs(60);

pub struct WalFixture {
    pub fx: Fixture,
    pub key: PathBuf,
    pub public: String,
}

impl WalFixture {
    pub fn new() -> WalFixture {
        require_age();
        let fx = Fixture::new();
        fx.pg
            .psql("postgres", &format!("ALTER ROLE {ROLE} REPLICATION"));
        let (key, public) = keygen(fx.dir.path());
        WalFixture { fx, key, public }
    }

    pub fn archive_dir(&self) -> PathBuf {
        self.fx.dir.path().join("wal-archive")
    }

    /// The daemon's state-dir as the harness sets it.
    pub fn spool_dir(&self, daemon: &Daemon) -> PathBuf {
        let config = std::fs::read_to_string(daemon.config_path()).expect("config");
        let state = config
            .lines()
            .find_map(|l| l.strip_prefix("state-dir = "))
            .expect("state-dir in the config")
            .trim_matches('"')
            .to_owned();
        Path::new(&state).join("wal-spool").join(JOB)
    }

    /// A daemon with the wal-archive job (archive in [`Self::archive_dir`], encrypted to the
    /// fixture's key) plus `extra` keys of the job.
    pub fn daemon(&self, extra: &str) -> DaemonBuilder {
        self.fx.daemon(&format!(
            "[jobs.{JOB}]\nkind = \"wal-archive\"\narchive-dir = {}\nencrypt-to = [{}]\n{extra}",
            toml_path(&self.archive_dir()),
            toml_str(&self.public)
        ))
    }

    /// Writes `rows` rows of incompressible-ish text into `t_<tag>`, then switches to a new WAL
    /// segment; returns the name of the segment the switch completed.
    pub fn write_and_switch(&self, tag: &str, rows: u32) -> String {
        self.write(tag, rows);
        self.switch()
    }

    /// Writes without switching: the rows stay in the in-flight segment.
    pub fn write(&self, tag: &str, rows: u32) {
        self.fx.sql(&format!(
            "CREATE TABLE IF NOT EXISTS t_{tag} (id int, payload text); \
             INSERT INTO t_{tag} SELECT g, md5(random()::text) || md5(g::text) FROM generate_series(1, {rows}) g"
        ));
    }

    pub fn switch(&self) -> String {
        self.fx
            .pg
            .psql(
                "postgres",
                "SELECT pg_walfile_name(pg_current_wal_lsn()) FROM (SELECT pg_switch_wal()) s",
            )
            .trim()
            .to_owned()
    }

    /// The archive's index, one JSON value per line (what `index.jsonl` holds).
    pub fn index(&self) -> Vec<Value> {
        std::fs::read_to_string(self.archive_dir().join("index.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("an index line is JSON"))
            .collect()
    }

    pub fn indexed(&self, segment: &str) -> bool {
        self.index().iter().any(|e| e["name"] == segment)
    }

    /// Waits until `segment` is in the index.
    pub fn wait_archived(&self, daemon: &Daemon, segment: &str) {
        assert!(
            harness::wait_until(ARCHIVE_TIMEOUT, || self.indexed(segment)),
            "{segment} was not archived; index: {:?}\n{}",
            self.index(),
            harness::tail(&daemon.log(), 40)
        );
    }

    /// Decrypts (age CLI) and decompresses (zstd CLI) every indexed segment into `out`, after
    /// checking each file's SHA-256 against its index line; returns the segment names in order.
    pub fn restore_segments(&self, out: &Path) -> Vec<String> {
        std::fs::create_dir_all(out).expect("create the decrypted folder");
        let mut names = Vec::new();
        // An in-flight segment's copy (a line with `holds`) is not a segment of the chain.
        for e in self
            .index()
            .into_iter()
            .filter(|e| e.get("holds").is_none())
        {
            let name = e["name"].as_str().expect("name").to_owned();
            let file = self.archive_dir().join(e["file"].as_str().expect("file"));
            let sum = shell(&format!("sha256sum {}", quote(&file)));
            assert_eq!(
                sum.stdout.split_whitespace().next(),
                e["sha256"].as_str(),
                "{name}: the index's SHA-256 is the file's"
            );
            shell(&format!(
                "age -d -i {} {} | zstd -d -q -o {}",
                quote(&self.key),
                quote(&file),
                quote(&out.join(&name))
            ));
            names.push(name);
        }
        names.sort();
        names
    }

    /// `pg_waldump` from the first to the last of `names` in `dir`: exit 0 means every
    /// segment between them is there and the records chain (the error names the first one
    /// missing or broken).
    pub fn waldump(&self, dir: &Path, names: &[String]) -> CtlOutput {
        let (first, last) = (
            names.first().expect("a segment"),
            names.last().expect("a segment"),
        );
        shell_status(&format!(
            "{} --quiet -p {} {first} {last}",
            quote(&self.fx.pg.bin_dir().join("pg_waldump")),
            quote(dir)
        ))
    }
}

/// The job's entry of `atprectl --json jobs`: its `wal` status.
pub fn wal_status(daemon: &Daemon) -> Value {
    let jobs = ctl_json(daemon, &["jobs"]);
    let list = jobs["jobs"].as_array().cloned().unwrap_or_default();
    list.into_iter()
        .find(|j| j["name"] == JOB)
        .map(|j| j["wal"].clone())
        .unwrap_or_else(|| panic!("no job {JOB} in {jobs:#}"))
}

/// Waits until the receiver streams (after `starts` starts at least).
pub fn wait_receiving(daemon: &Daemon, starts: u64) -> Value {
    let mut last = Value::Null;
    let ok = harness::wait_until(ARCHIVE_TIMEOUT, || {
        last = wal_status(daemon);
        last["receiver"] == "receiving" && last["starts"].as_u64().unwrap_or(0) >= starts
    });
    assert!(
        ok,
        "receiver not streaming: {last:#}\n{}",
        harness::tail(&daemon.log(), 40)
    );
    last
}

/// The `wal:wal` check of `atprectl --json health`, once it has run.
pub fn wal_check(daemon: &Daemon) -> Value {
    let mut found = Value::Null;
    harness::wait_until(ARCHIVE_TIMEOUT, || {
        // Exit 1 while a check fails; the reply is the same JSON.
        let out = ctl(daemon, &["--json", "health"]);
        let health: Value = serde_json::from_str(out.stdout.trim()).unwrap_or(Value::Null);
        found = health["checks"]
            .as_array()
            .and_then(|c| {
                c.iter()
                    .find(|c| c["check"] == format!("wal:{JOB}"))
                    .cloned()
            })
            .unwrap_or(Value::Null);
        !found.is_null()
    });
    found
}

/// Waits until the `wal:wal` check says `status` with a message containing `needle`.
pub fn wait_check(daemon: &Daemon, status: &str, needle: &str) -> Value {
    let mut last = Value::Null;
    let ok = harness::wait_until(ARCHIVE_TIMEOUT, || {
        last = wal_check(daemon);
        last["status"] == status && last["message"].as_str().unwrap_or("").contains(needle)
    });
    assert!(
        ok,
        "wal check never {status} with {needle:?}: {last:#}\n{}",
        harness::tail(&daemon.log(), 40)
    );
    last
}
