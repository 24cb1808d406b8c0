//! atpred: a systemd-supervised daemon that keeps a PostgreSQL + Redis application server safe.
//!
//! # Architecture
//! One process, a few tasks, channels between them:
//!
//! ```text
//!   supervisor (daemon::run): signals, control commands, watchdog, STATUS=
//!      owns the root CancellationToken and the current Arc<Config>
//!        |                    |                        |
//!   scheduler --start-->    runner    <--start--   control server <-- atprectl
//!   (JobTimer per job,      (limits, timeouts,      (Unix socket, peer creds,
//!    catch-up, skip)         retries, history)       NDJSON protocol)
//! ```
//!
//! - [`config`]: the TOML file and environment overrides, validated into typed values.
//! - [`scheduler`]: cron and interval schedules in a time zone, and the task that fires them.
//! - [`runner`]: runs jobs: concurrency, no overlap, timeouts, retries, cancellation, history;
//!   and records external runs (a restore, see [`restore`]) the same way.
//! - [`coordination`]: fleet leases in Redis or PostgreSQL, so a tick fired on several hosts
//!   runs on one of them; the runner takes one before each coordinated run.
//! - [`jobs`]: the job kinds behind one contract (health jobs record their checks on the
//!   runner's health board).
//! - [`metrics`]: Prometheus metrics for `atprectl metrics`, `[metrics] listen` and a textfile.
//! - [`process`]: child processes in their own process groups.
//! - [`control`] and [`protocol`]: the control socket and its wire format; [`client`] and
//!   [`ctl`] are the other end.
//! - [`notify`] and [`logging`]: systemd integration.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod alerts;
pub mod cli;
pub mod client;
pub mod client_access;
pub mod config;
pub mod control;
pub mod coordination;
pub mod ctl;
pub mod daemon;
pub mod ids;
pub mod jobs;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod offsite;
pub mod pg;
pub mod pins;
pub mod process;
pub mod protocol;
pub mod publish;
pub mod redis_login;
pub mod restore;
pub mod runner;
pub mod scheduler;
pub mod scratch;
pub mod secret;
pub mod timefmt;
pub mod trust;
pub mod wal;

/// The daemon's and client's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
