//! `atprectl restore --pitr`: the request, the rendering of its plan and report, and `--start`:
//! `pg_ctl start` on the restored data directory as its owner, then waiting until the server
//! is out of recovery (`pg_is_in_recovery()` is false) and answers queries.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::RestoreArgs;
use crate::protocol::Request;
use crate::restore::pitr::latest::Goal;
use crate::restore::pitr::plan::PitrPlan;
use crate::restore::pitr::{PitrOptions, PitrReport};

/// Refused by the daemon: no verified physical base backup finished before the time.
pub const EXIT_NO_BASE: u8 = 20;
/// Refused by the daemon: a gap in the archive between the base backup and the time.
pub const EXIT_GAP: u8 = 21;
/// Refused by the daemon: the time is later than what is archived.
pub const EXIT_NOT_ARCHIVED: u8 = 22;
/// Refused by the daemon: no wal-archive job.
pub const EXIT_NO_ARCHIVE_JOB: u8 = 23;
/// `--start`: the server did not start, or did not leave recovery in time.
pub const EXIT_START_FAILED: u8 = 24;

/// How long `--start` waits for the end of recovery, and how often it asks.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(600);
const RECOVERY_POLL: Duration = Duration::from_millis(50);

/// The request of `restore --pitr`.
pub fn request(args: &RestoreArgs) -> Option<Request> {
    let dir = args.to_dir.as_deref()?;
    if let Err(e) = Goal::of(args.pitr.time, args.pitr.latest) {
        eprintln!("atprectl: restore --pitr: {e}");
        return None;
    }
    Some(Request::RestorePitr {
        options: PitrOptions {
            time: args.pitr.time,
            latest: args.pitr.latest,
            to_dir: super::absolute(dir),
            job: args.pitr.wal_job.clone(),
            owner: args.pitr.owner.clone(),
            identity: args.identity.as_deref().map(super::absolute),
            target: args.target.clone(),
        },
        dry_run: args.dry_run,
    })
}

/// The dry run's answer.
pub fn plan(plan: &PitrPlan) -> String {
    format!(
        "base backup: {} (finished {})\nWAL: {} to {} ({} segment(s), timeline {}; reaches {})\n\
         recovery target: {}\nspace needed: {}\n",
        plan.base,
        plan.base_finished,
        plan.first(),
        plan.last(),
        plan.segments.len(),
        plan.timeline,
        plan.reaches,
        plan.target
            .map_or_else(|| "the end of the WAL".to_owned(), |t| t.to_string()),
        crate::jobs::backup::dump::mib(plan.space_needed),
    ) + &in_flight(plan)
}

/// The dry run's line on the in-flight segment's copy, when the plan ends in one.
fn in_flight(plan: &PitrPlan) -> String {
    plan.partial.as_ref().map_or_else(String::new, |t| {
        format!(
            "in-flight segment: {} staged from {} ({} bytes of WAL, last written {})\n",
            plan.last(),
            t.name,
            t.holds,
            t.completed
        )
    })
}

/// The restore's answer.
pub fn restored(r: &PitrReport) -> String {
    format!(
        "restored base backup {} into {} with {} WAL segment(s) ({} to {}) staged in \
         atpred-wal/, recovering to {} ({:.1} s){}\nstart it with: pg_ctl -D {} start\n",
        r.plan.base,
        r.to_dir.display(),
        r.staged.segments,
        r.plan.first(),
        r.plan.last(),
        r.plan
            .target
            .map_or_else(|| "the end of the WAL".to_owned(), |t| t.to_string()),
        r.duration_ms as f64 / 1000.0,
        r.owner
            .as_ref()
            .map_or_else(String::new, |o| format!("; owned by {o}")),
        r.to_dir.display(),
    )
}

/// `--start`: pg_ctl on `dir` as `owner` on `port`, then the wait for promotion. The exit code.
pub fn start(dir: &Path, owner: Option<&str>, port: u16) -> u8 {
    match try_start(dir, owner, port) {
        Ok(()) => {
            println!(
                "the server on {} is out of recovery and answers queries (port {port})",
                dir.display()
            );
            0
        }
        Err(e) => {
            eprintln!("atprectl: --start: {e}");
            EXIT_START_FAILED
        }
    }
}

fn try_start(dir: &Path, owner: Option<&str>, port: u16) -> Result<(), String> {
    let log = dir.join("atpred-start.log");
    let out = as_owner(owner, &tool("pg_ctl")?)
        .arg("-D")
        .arg(dir)
        .arg("-l")
        .arg(&log)
        .args(["-o", &server_options(dir, port), "-w", "-t", "600", "start"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running pg_ctl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "pg_ctl start failed ({}): {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            tail(&log)
        ));
    }
    let socket = socket_dir(dir)?;
    let t0 = Instant::now();
    loop {
        let q = as_owner(owner, &tool("psql")?)
            .args(["-X", "-A", "-t", "-h"])
            .arg(&socket)
            .args([
                "-p",
                &port.to_string(),
                "-d",
                "postgres",
                "-U",
                owner.unwrap_or("postgres"),
            ])
            .args(["-c", "SELECT pg_is_in_recovery()"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running psql: {e}"))?;
        if q.status.success() && String::from_utf8_lossy(&q.stdout).trim() == "f" {
            return Ok(());
        }
        if !dir.join("postmaster.pid").exists() {
            return Err(format!(
                "the server stopped during recovery:\n{}",
                tail(&log)
            ));
        }
        if t0.elapsed() > RECOVERY_TIMEOUT {
            return Err(format!(
                "still in recovery after {} s: {}\n{}",
                RECOVERY_TIMEOUT.as_secs(),
                String::from_utf8_lossy(&q.stderr).trim(),
                tail(&log)
            ));
        }
        std::thread::sleep(RECOVERY_POLL);
    }
}

/// The options of the first start: the port, and on PostgreSQL 14 and later
/// `recovery_init_sync_method = syncfs`. The daemon synced the staged folder's file system
/// before it reported success, so the start's own pass over the data directory (by default an
/// fsync of every file, seconds on a big cluster) needs one `syncfs` rather than a walk. For
/// this start only: pg_ctl does not write it into the configuration.
fn server_options(dir: &Path, port: u16) -> String {
    let major = std::fs::read_to_string(dir.join("PG_VERSION"))
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok());
    match major {
        Some(m) if m >= 14 => format!("-p {port} -c recovery_init_sync_method=syncfs"),
        _ => format!("-p {port}"),
    }
}

/// The socket folder the server wrote in postmaster.pid (line 5).
fn socket_dir(dir: &Path) -> Result<String, String> {
    let pid = std::fs::read_to_string(dir.join("postmaster.pid"))
        .map_err(|e| format!("reading postmaster.pid: {e}"))?;
    pid.lines()
        .nth(4)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| "postmaster.pid names no socket folder (listen on a Unix socket)".into())
}

/// `runuser -u OWNER -- program` when an owner is named and we are root, else the program.
fn as_owner(owner: Option<&str>, program: &Path) -> Command {
    match owner {
        Some(user) if nix::unistd::geteuid().is_root() => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(program);
            c
        }
        _ => Command::new(program),
    }
}

/// A PostgreSQL server program: the newest /usr/lib/postgresql/*/bin, else PATH.
fn tool(name: &str) -> Result<std::path::PathBuf, String> {
    Ok(crate::pg::newest_installed(name).unwrap_or_else(|| std::path::PathBuf::from(name)))
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
