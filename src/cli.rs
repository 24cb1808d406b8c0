//! Command-line definitions of both binaries; man pages and completions are generated from
//! these.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::jobs::calendar_duration::CalendarDuration;
use crate::jobs::retention::Count;

/// atpred: backups that are proven restorable, retention, health and log rotation for a
/// PostgreSQL + Redis application server.
#[derive(Debug, Parser)]
#[command(name = "atpred", version)]
pub struct DaemonArgs {
    /// The configuration file.
    #[arg(long, short, value_name = "PATH", default_value = crate::config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Validate the configuration, print each job's next three runs, and exit (0 valid, 78 not).
    #[arg(long)]
    pub check: bool,
    /// With --check: list the runs after this time (RFC 3339) instead of after now.
    #[arg(long, requires = "check", value_name = "RFC3339")]
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    #[command(subcommand)]
    pub command: Option<DaemonCommand>,
}

/// What the daemon binary does besides being the daemon.
#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// The restore_command of a point-in-time restore: copies the staged segment FILE to PATH
    /// after checking it against STAGED/SHA256SUMS (exit 1: not staged; 126: damaged).
    #[command(hide = true)]
    WalFetch {
        staged: PathBuf,
        file: String,
        path: PathBuf,
    },
}

/// atprectl: control a running atpred over its socket.
#[derive(Debug, Parser)]
#[command(name = "atprectl", version)]
pub struct CtlArgs {
    /// The daemon's control socket.
    #[arg(
        long,
        global = true,
        env = "ATPRED_SOCKET",
        default_value = "/run/atpred/atpred.sock"
    )]
    pub socket: PathBuf,
    /// Print JSON (the protocol's own messages) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// The daemon's state: version, jobs, running runs, last reload.
    Status,
    /// Every job with its schedule, next run and last run.
    Jobs,
    /// Run a job now.
    Run {
        job: String,
        /// Follow the run and exit with its outcome (0 succeeded, 1 otherwise).
        #[arg(long)]
        wait: bool,
        /// Show what the run would do without doing it.
        #[arg(long)]
        dry_run: bool,
        /// Act even where the job's own triggers say there is nothing to do.
        #[arg(long)]
        force: bool,
    },
    /// Cancel a job's running run (its processes are ended as a group); `cancel restore`
    /// cancels the running restore (the target stays as it was).
    Cancel { job: String },
    /// Recent runs, newest first.
    History {
        job: Option<String>,
        /// How many runs.
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: u32,
    },
    /// Re-read the daemon's configuration (like `systemctl reload atpred`).
    Reload,
    /// The backups in backup-dir (with --remote: at an offsite target); `show ID` prints a
    /// manifest, `verify ID` re-verifies, `fetch ID` downloads an offsite copy.
    Backups {
        /// List the copies at an offsite target instead of backup-dir.
        #[arg(long)]
        remote: bool,
        /// The [offsite.NAME] target (default: the only one configured).
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
        #[command(subcommand)]
        action: Option<BackupsCommand>,
    },
    /// Restore a backup into a new database (the daemon does it): unpacked for pg_restore -j,
    /// every restored table's row count checked, renamed into place only then.
    Restore(RestoreArgs),
    /// The health checks: status, message, since when; exits 1 when any check fails.
    Health {
        /// Run every health job now and wait for its results.
        #[arg(long)]
        now: bool,
    },
    /// Prometheus metrics (OpenMetrics text), as served by `[metrics] listen`.
    Metrics,
    /// The [notify.NAME] channels: `test NAME` sends a test message and shows the answer.
    Notify {
        #[command(subcommand)]
        action: NotifyCommand,
    },
    /// Try a retention policy offline: reads RFC 3339 timestamps (one per line) on stdin and
    /// prints which backups it would keep and why. Needs no daemon.
    Retention(RetentionArgs),
    /// When will this run? The next fire times of a schedule, as the daemon fires them, marked
    /// where a DST change shifts, coalesces or repeats them. Needs no daemon.
    Schedule(ScheduleArgs),
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
    /// Print a man page (roff) for atprectl, or for atpred with --daemon.
    #[command(hide = true)]
    Man {
        #[arg(long)]
        daemon: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Send a test message on a channel now; exits 1 when the channel does not take it.
    Test { name: String },
}

#[derive(Debug, Subcommand)]
pub enum BackupsCommand {
    /// Print a backup's manifest.
    Show { id: String },
    /// Verify a backup again; exits 1 when it fails.
    Verify {
        id: String,
        /// checksum, full (pg_restore reads every byte) or restore (into a scratch database).
        #[arg(long, default_value = "full", value_parser = ["checksum", "full", "restore"])]
        level: String,
        /// Read the offsite copy back and check every file against its manifest instead.
        #[arg(long)]
        remote: bool,
        /// The [offsite.NAME] target (default: the only one configured).
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
    },
    /// Pin a backup: no prune (local or offsite) removes it until `unpin`. The pin is kept in
    /// the backup folder and beside its offsite copy.
    Pin {
        id: String,
        /// Why (shown in prune plans as `pinned: REASON`; one line, at most 200 characters).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Remove a backup's pin, at its offsite target and locally.
    Unpin { id: String },
    /// Download a backup from an offsite target, checking every file against its manifest.
    Fetch {
        id: String,
        /// Where to put `<ID>/` (default: backup-dir, where it is a backup again). The daemon
        /// writes it, so its user must be able to.
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
        /// An age identity file (readable by the daemon, mode 0600): decrypt, keep plaintext.
        #[arg(long, value_name = "FILE", requires = "to")]
        identity: Option<PathBuf>,
        /// The [offsite.NAME] target (default: the only one configured).
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
    },
}

/// `atprectl schedule`.
#[derive(Debug, clap::Args)]
pub struct ScheduleArgs {
    /// A job's `schedule`: a cron pattern, a nickname or `every D`.
    pub expr: String,
    /// The IANA time zone it is read in (the daemon's `timezone`).
    #[arg(long, default_value = "UTC")]
    pub tz: chrono_tz::Tz,
    /// List the runs after this time (RFC 3339); default: now.
    #[arg(long, value_name = "RFC3339")]
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    /// How many runs.
    #[arg(short, default_value_t = 10)]
    pub n: usize,
}

/// `atprectl restore`.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The backup's id (see `atprectl backups`); none with --pitr.
    #[arg(required_unless_present = "pitr")]
    pub id: Option<String>,
    /// The database to restore into: a new name, or an existing empty database.
    #[arg(long, value_name = "DBNAME", required_unless_present_any = ["redis_dir", "to_dir"])]
    pub to: Option<String>,
    /// A Redis backup: stage its RDB in this Redis data folder (owner and mode of its
    /// dump.rdb) and print the steps to load it; no server is stopped or started. With
    /// --target, from the copy at that offsite target.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["to", "replace", "globals", "dry_run"])]
    pub redis_dir: Option<PathBuf>,
    /// A files backup: restore its tree into this folder (absolute; new or empty, or any with
    /// --replace) with owners, modes, mtimes and symlinks; needs a daemon running as root.
    /// With --pitr: the new PostgreSQL data directory (new or empty).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["to", "redis_dir", "globals", "schema", "table", "jobs"])]
    pub to_dir: Option<PathBuf>,
    /// pg_restore -j (default 2).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: Option<u32>,
    /// Only this schema (repeatable).
    #[arg(long, value_name = "S")]
    pub schema: Vec<String>,
    /// Only this table (repeatable).
    #[arg(long, value_name = "T")]
    pub table: Vec<String>,
    /// Restore over an existing database (even the backup's source): a pinned safety backup
    /// of it is taken first, the restore is swapped in after the checks, its other sessions
    /// terminated, the old one kept as DBNAME_atpred_replaced.
    #[arg(long)]
    pub replace: bool,
    /// Apply the backup's globals.sql first (roles the cluster lacks, with their settings and
    /// memberships; existing roles are skipped) and keep owners and grants.
    #[arg(long)]
    pub globals: bool,
    /// Print the plan (tables, row counts, scratch space) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation (needed without a terminal).
    #[arg(long)]
    pub yes: bool,
    /// Restore from the copy at this [offsite.NAME] target (the backup need not be in
    /// backup-dir): fetched, checked and decrypted in one stream into restore-scratch-dir.
    /// With --pitr: the base backup and the WAL both from the target (its uploaded index).
    #[arg(long, value_name = "NAME")]
    pub target: Option<String>,
    /// An age identity file (readable by the daemon, mode 0600) to decrypt with instead of
    /// the job's verify-identity-file; root and the daemon's user only.
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    #[command(flatten)]
    pub pitr: PitrArgs,
}

/// `atprectl restore --pitr`: the whole cluster to a point in time, from the newest physical
/// base backup before it and the WAL archive.
#[derive(Debug, clap::Args)]
pub struct PitrArgs {
    /// Restore the cluster to a point in time into --to-dir (a new data directory): the base
    /// backup unpacked, the WAL it needs staged, recovery set up to stop at --time (or to
    /// replay all there is, with --latest).
    #[arg(long, requires = "to_dir", conflicts_with_all = ["id", "to", "redis_dir", "replace", "globals", "schema", "table", "jobs", "yes"])]
    pub pitr: bool,
    /// The time to recover to (RFC 3339, e.g. 2026-12-06T09:30:00Z); or --latest.
    #[arg(long, value_name = "RFC3339", requires = "pitr")]
    pub time: Option<chrono::DateTime<chrono::Utc>>,
    /// Recover to the end of the archive instead of a time: every archived segment and then
    /// the in-flight segment's copy stored when the receiver last stopped (the primary died).
    #[arg(long, requires = "pitr", conflicts_with = "time")]
    pub latest: bool,
    /// The wal-archive job whose archive is replayed (default: the only one).
    #[arg(long = "job", value_name = "WAL_JOB", requires = "pitr")]
    pub wal_job: Option<String>,
    /// Who owns the data directory (default: postgres, when that user exists).
    #[arg(long, value_name = "USER", requires = "pitr")]
    pub owner: Option<String>,
    /// Then start the server on the data directory (as its owner, by pg_ctl) and wait until
    /// it is out of recovery and answers queries.
    #[arg(long, requires = "pitr", conflicts_with = "dry_run")]
    pub start: bool,
    /// With --start: the port it listens on.
    #[arg(long, value_name = "P", requires = "start", default_value_t = 5432)]
    pub port: u16,
}

/// A retention policy, as in a `kind = "prune"` job.
#[derive(Debug, clap::Args)]
pub struct RetentionArgs {
    /// Counts as restic writes them: a number from 0, or -1 to keep all in that bucket.
    #[arg(long, allow_hyphen_values = true)]
    pub keep_last: Option<Count>,
    #[arg(long, allow_hyphen_values = true)]
    pub keep_hourly: Option<Count>,
    #[arg(long, allow_hyphen_values = true)]
    pub keep_daily: Option<Count>,
    #[arg(long, allow_hyphen_values = true)]
    pub keep_weekly: Option<Count>,
    #[arg(long, allow_hyphen_values = true)]
    pub keep_monthly: Option<Count>,
    #[arg(long, allow_hyphen_values = true)]
    pub keep_yearly: Option<Count>,
    /// Keep every backup newer than the newest minus this, in restic's grammar ("2d", "1m14d";
    /// m is months).
    #[arg(long, allow_hyphen_values = true)]
    pub keep_within: Option<CalendarDuration>,
    #[arg(long, allow_hyphen_values = true)]
    pub keep_within_hourly: Option<CalendarDuration>,
    #[arg(long, allow_hyphen_values = true)]
    pub keep_within_daily: Option<CalendarDuration>,
    #[arg(long, allow_hyphen_values = true)]
    pub keep_within_weekly: Option<CalendarDuration>,
    #[arg(long, allow_hyphen_values = true)]
    pub keep_within_monthly: Option<CalendarDuration>,
    #[arg(long, allow_hyphen_values = true)]
    pub keep_within_yearly: Option<CalendarDuration>,
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub min_keep: u32,
    /// The time to plan at (RFC 3339); default: now.
    #[arg(long)]
    pub now: Option<chrono::DateTime<chrono::Utc>>,
    /// Calendar periods are taken in this IANA time zone.
    #[arg(long, default_value = "UTC")]
    pub timezone: chrono_tz::Tz,
}
