//! The messages: one `Request` enum and one `Response` enum, shared by daemon and client.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{Kind, VerifyLevel};
use crate::ids::{JobName, RunId};

/// What a client asks. Tagged by `"type"`, e.g. `{"type":"run","job":"nightly","wait":true}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// First message on every connection.
    Hello { protocol: u32, client: String },
    /// Daemon summary.
    Status,
    /// Every configured job with its schedule and last run.
    Jobs,
    /// Start a job now.
    Run {
        job: JobName,
        /// Keep the connection and stream `progress` until `finished`.
        #[serde(default)]
        wait: bool,
        /// Say what the run would do, change nothing.
        #[serde(default)]
        dry_run: bool,
        /// Act even where the job's own triggers say there is nothing to do.
        #[serde(default)]
        force: bool,
    },
    /// Cancel the job's running run.
    Cancel { job: JobName },
    /// Recent runs, newest first.
    History {
        #[serde(default)]
        job: Option<JobName>,
        #[serde(default = "default_history_limit")]
        limit: u32,
    },
    /// Re-read the configuration file.
    Reload,
    /// The backup catalog; with `remote`, the catalog at the offsite `target` (default: the
    /// only one configured).
    Backups {
        #[serde(default)]
        remote: bool,
        #[serde(default)]
        target: Option<String>,
    },
    /// One backup's manifest.
    BackupShow { id: String },
    /// Re-verify a published backup (default level: full).
    BackupVerify {
        id: String,
        #[serde(default)]
        level: Option<VerifyLevel>,
        /// Read the copy at the offsite `target` back and check it against its manifest.
        #[serde(default)]
        remote: bool,
        #[serde(default)]
        target: Option<String>,
    },
    /// Download a backup from the offsite `target`, checking every file, into `to` (default:
    /// backup-dir, where it becomes a catalog entry again); `identity` (an age identity file
    /// the daemon can read; root and the daemon's user only) decrypts it, and needs `to`.
    BackupFetch {
        id: String,
        #[serde(default)]
        to: Option<std::path::PathBuf>,
        #[serde(default)]
        identity: Option<std::path::PathBuf>,
        #[serde(default)]
        target: Option<String>,
    },
    /// Pin a local backup (and its offsite copy): retention never removes it.
    BackupPin {
        id: String,
        #[serde(default)]
        reason: Option<String>,
    },
    /// Remove a backup's pin (at the offsite target first, then locally).
    BackupUnpin { id: String },
    /// Restore backup `id` into a new database (`options.to`); the daemon does it. With
    /// `dry_run`, only the plan (after the same refusals).
    Restore {
        id: String,
        options: crate::restore::Options,
        #[serde(default)]
        dry_run: bool,
    },
    /// Restore the cluster to a point in time into a new data directory
    /// ([`crate::restore::pitr`]); with `dry_run`, only the plan (after the same refusals).
    RestorePitr {
        options: crate::restore::pitr::PitrOptions,
        #[serde(default)]
        dry_run: bool,
    },
    /// The health checks' last results; with `now`, run every health job first and wait.
    Health {
        #[serde(default)]
        now: bool,
    },
    /// Prometheus metrics in the OpenMetrics text format.
    Metrics,
    /// Send a test message on the `[notify.NAME]` channel now and report its answer.
    NotifyTest { channel: String },
}

fn default_history_limit() -> u32 {
    20
}

/// What the daemon answers. Tagged by `"type"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Hello {
        protocol: u32,
        version: String,
    },
    Status(StatusReport),
    Jobs {
        jobs: Vec<JobStatus>,
    },
    /// The run was started (it may wait for a free slot under `max-concurrent-jobs`).
    Accepted {
        run_id: RunId,
        job: JobName,
    },
    /// A step of a running job, streamed with `wait`.
    Progress {
        run_id: RunId,
        message: String,
    },
    /// The run ended; with `wait` this is the last message for the request.
    Finished {
        run: Box<RunRecord>,
    },
    /// Cancellation was requested for this run.
    Cancelling {
        run_id: RunId,
    },
    History {
        runs: Vec<RunRecord>,
    },
    /// The configuration was re-read and applied.
    Reloaded {
        jobs: usize,
    },
    Backups {
        backups: Vec<BackupSummary>,
    },
    /// The manifest, as stored (see `jobs::backup::manifest` for its fields), and the backup's
    /// drill and restore evidence when it has some.
    Manifest {
        manifest: serde_json::Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        evidence: Option<crate::restore::evidence::Evidence>,
    },
    /// The answer to `backup_fetch`: where the checked copy now is.
    Fetched {
        id: String,
        path: String,
        bytes: u64,
        decrypted: bool,
    },
    /// The result of `backup_verify`; `passed` says whether it passed.
    Verified {
        id: String,
        verification: serde_json::Value,
        passed: bool,
    },
    /// The answer to `health`: every check that has run, by name.
    Health {
        checks: Vec<CheckReport>,
    },
    /// The answer to `restore` with `dry_run`: what it would do.
    RestorePlan {
        plan: Box<crate::restore::plan::RestorePlan>,
        /// With `--globals`: what applying `globals.sql` would do on the target now.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        globals: Option<Vec<crate::restore::globals::Item>>,
    },
    /// The answer to `restore`: done, every row count checked.
    Restored {
        report: crate::restore::exec::Report,
    },
    /// The answer to `restore` with `to_dir`: the files backup restored there.
    FilesRestored {
        restored: crate::restore::files_dir::Restored,
    },
    /// The answer to `restore` with `redis_dir`: the RDB staged there and the steps to load it.
    RedisStaged {
        staged: crate::restore::redis_dir::Staged,
    },
    /// The answer to `restore_pitr` with `dry_run`: the base backup, the WAL range, the space.
    PitrPlan {
        plan: crate::restore::pitr::plan::PitrPlan,
    },
    /// The answer to `restore_pitr`: the data directory is written, ready to start.
    PitrRestored {
        report: crate::restore::pitr::PitrReport,
    },
    /// The answer to `backup_pin` and `backup_unpin`: the backup's pin now (`None`: unpinned),
    /// and what was done at its offsite target, if its job has one.
    PinState {
        id: String,
        pin: Option<crate::pins::Pin>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offsite: Option<String>,
    },
    /// The answer to `metrics`: the exposition text, as served over HTTP.
    Metrics {
        text: String,
    },
    /// The answer to `notify_test`: the channel took the message and said `answer`.
    NotifySent {
        channel: String,
        kind: String,
        answer: String,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
}

/// Stable error codes; `atprectl` maps them to exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A line too long or not UTF-8; the connection is closed.
    BadFrame,
    /// Valid framing, but not a request we know (or a field of the wrong type).
    BadRequest,
    /// The first message was not `hello`.
    HelloFirst,
    ProtocolMismatch,
    NotPermitted,
    UnknownJob,
    UnknownBackup,
    /// The job is already running (a job never overlaps itself).
    AlreadyRunning,
    NotRunning,
    /// The new configuration is invalid; the old one stays in force.
    ReloadFailed,
    /// Too many connections.
    Busy,
    ShuttingDown,
    Internal,
    /// `restore` refused: the target is the backup's own source database.
    RestoreSourceDatabase,
    /// `restore` refused: the target exists and is not empty.
    RestoreTargetNotEmpty,
    /// `restore --replace` refused: the name the old database would be kept under is taken.
    RestoreReplacedExists,
    /// `restore` refused: not enough free space in restore-scratch-dir.
    RestoreNoSpace,
    /// `restore` refused: another restore is running (one at a time); the message names it.
    RestoreBusy,
    /// `restore --replace` refused: the safety backup of the target could not be taken.
    RestoreSafetyBackup,
    /// No `[notify.NAME]` channel of that name.
    UnknownChannel,
    /// The channel did not take the test message; the message says what it answered.
    NotifyFailed,
    /// `restore_pitr` refused: no verified physical base backup finished before the time.
    PitrNoBase,
    /// `restore_pitr` refused: a segment between the base backup and the time is missing.
    PitrGap,
    /// `restore_pitr` refused: the time is later than what the archive holds.
    PitrNotArchived,
    /// `restore_pitr` refused: no wal-archive job is configured.
    PitrNoArchiveJob,
}

/// How a run was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Schedule,
    Manual,
    CatchUp,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
            Trigger::CatchUp => "catch_up",
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
    /// Not run: the job was still running from an earlier trigger.
    Skipped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::TimedOut => "timed_out",
            Outcome::Skipped => "skipped",
        }
    }

    pub fn is_success(self) -> bool {
        self == Outcome::Succeeded
    }
}

/// One run, as kept in the history and returned by `finished` and `history`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: RunId,
    pub job: JobName,
    pub kind: Kind,
    pub trigger: Trigger,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub duration_ms: u64,
    pub outcome: Outcome,
    pub message: String,
    /// Attempts made (1 + retries used).
    pub attempts: u32,
    #[serde(default)]
    pub dry_run: bool,
    /// Kind-specific details (a command's exit code, a backup's bytes, ...).
    #[serde(default)]
    pub details: serde_json::Value,
}

/// The answer to `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub version: String,
    pub pid: u32,
    pub started: DateTime<Utc>,
    pub config: PathBuf,
    pub timezone: String,
    pub jobs: usize,
    pub running: Vec<RunningRun>,
    /// The one-line summary also sent to systemd as STATUS=.
    pub summary: String,
    /// Set while the last reload failed and the previous configuration is still in force.
    pub reload_error: Option<String>,
    /// Fleet leases of coordinated jobs, as this host last saw them (absent from daemons
    /// without coordination, and from older daemons).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leases: Vec<LeaseStatus>,
}

/// Who holds, or last held, the fleet lease of a coordinated job, as this host last saw it
/// (taking it, or refused by it). `status` never asks the backend: it answers when the backend
/// is down, and quickly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseStatus {
    pub job: JobName,
    /// `redis` or `postgres`.
    pub backend: String,
    /// The host that holds or held it.
    pub holder: String,
    /// True while the holder (as last seen) has it; false once it was released.
    pub held: bool,
    pub run_id: Option<String>,
    /// Redis only: the fencing token of that holder's run.
    pub fencing_token: Option<u64>,
    /// When this host saw it.
    pub seen: DateTime<Utc>,
}

/// A run in progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunningRun {
    pub run_id: RunId,
    pub job: JobName,
    pub trigger: Trigger,
    pub started: DateTime<Utc>,
}

/// One entry of the answer to `jobs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobStatus {
    pub name: JobName,
    pub kind: Kind,
    pub description: Option<String>,
    pub schedule: Option<String>,
    pub next_run: Option<DateTime<Utc>>,
    pub running: Option<RunningRun>,
    pub last_run: Option<RunRecord>,
    /// A wal-archive job's receiver and archive (absent for other kinds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal: Option<WalStatus>,
}

/// The state of a wal-archive job (see [`crate::wal`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WalStatus {
    /// `starting`, `receiving`, `backing-off`, `stopped`.
    pub receiver: String,
    /// Since when the receiver is in that state.
    pub since: Option<DateTime<Utc>>,
    /// Why it is down, or what the archiver last failed at.
    pub message: Option<String>,
    /// The receiver's pid while it runs.
    pub pid: Option<u32>,
    /// Receiver starts since the daemon started (the first included).
    pub starts: u64,
    /// The newest archived segment and when it was archived.
    pub last_segment: Option<String>,
    pub last_archived: Option<DateTime<Utc>>,
    /// Segments in the archive's index.
    pub segments: u64,
    /// The end of the newest archived segment, as an LSN (`0/3000000`).
    pub archived_lsn: Option<String>,
    /// Set when the slot had to be recreated: the archive has a gap, and restores from WAL need
    /// a base backup taken after this time.
    pub base_backup_required_since: Option<DateTime<Utc>>,
}

/// One entry of the answer to `backups`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupSummary {
    pub id: String,
    /// `verified`, `failed` (kept apart after a failed verification) or `unreadable`.
    pub state: String,
    pub job: Option<String>,
    /// What the backup holds: `postgres` or `redis` (the manifest's `source`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// How a PostgreSQL backup was taken: `logical` (pg_dump) or `physical` (pg_basebackup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Where a physical backup's WAL starts (`START WAL LOCATION`), with its timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsn: Option<String>,
    pub database: Option<String>,
    pub started: Option<DateTime<Utc>>,
    pub bytes: Option<u64>,
    pub encrypted: bool,
    /// The level of the last verification (`checksum`, `full`, `restore`).
    pub verified_level: Option<VerifyLevel>,
    /// Why the entry is unreadable.
    pub problem: Option<String>,
    /// The offsite copy's stage (`pending`, `uploaded`, `verified`, `failed`, `none`) at each
    /// of the making job's targets, in a local listing: `eu: verified, us: failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offsite: Option<String>,
    /// `pinned: REASON` when the backup is pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
}

/// A health check's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
    Warn,
    Fail,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Ok => "ok",
            HealthStatus::Warn => "warn",
            HealthStatus::Fail => "fail",
        }
    }

    /// The value of `atpred_health_status`: 0 ok, 1 warn, 2 fail.
    pub fn value(self) -> i64 {
        match self {
            HealthStatus::Ok => 0,
            HealthStatus::Warn => 1,
            HealthStatus::Fail => 2,
        }
    }
}

/// One entry of the answer to `health`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckReport {
    /// `postgres`, `redis`, `http`, `disk`, `backup-freshness` or `jobs`.
    pub check: String,
    /// The health job that runs it.
    pub job: JobName,
    pub status: HealthStatus,
    pub message: String,
    pub latency_ms: u64,
    /// When the check entered this status.
    pub since: DateTime<Utc>,
    /// When it last ran.
    pub checked: DateTime<Utc>,
}
