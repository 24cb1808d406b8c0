//! The one integration-test binary of atpred.
//!
//! Every test module shares the harness in `harness/`: throw-away PostgreSQL and Redis servers,
//! a notify socket that captures sd_notify messages, and a builder that runs the real `atpred`
//! and `atprectl` binaries against them. Test modules are declared below: `core_*` prove the
//! daemon's core (config, reload, schedules, runner, shutdown, socket, protocol, secrets,
//! atprectl, notify, history) through the real binaries; `backup_*` prove the backup job (round
//! trips through the real pg_restore, manifests, crashes, full disks, damage, secrets, age);
//! `prune_*` prove the retention job on real backup folders (plans, reasons, safety on disk,
//! busy and in-use backups, config errors) and the offline `atprectl retention` planner;
//! `rotate_*` prove log rotation under a live writer (no lost lines with create + reopen, lines
//! lost by copytruncate next to logrotate's), its safety on disk, and crash recovery.
//! `health_*` prove the health job against the real stack (PostgreSQL, Redis, an HTTP server,
//! a tmpfs) and the metrics through a real Prometheus parser.
//! `offsite_*` prove the copies to a real S3-compatible server (Garage): upload, read-back,
//! remote listing, verification, fetch, remote retention, and the target failing mid-copy.
//! `fault_*` inject faults (kill -9, stopped and frozen servers, full and read-only disks,
//! malformed configs, a fuzzed and flooded control socket) and print a summary table.
//! `fleet_*` prove fleet-safe scheduling: several daemons sharing one Redis or PostgreSQL take
//! each tick once, across kill -9, a Redis restart and lost leases; `run-on` and its config.
//! `alerts_*` prove dead-man pings and the heartbeat against a real healthchecks-style
//! receiver, and receivers that are down or hang.

// The crate denies unwrap/expect outside tests (Cargo.toml [lints]); this whole binary is tests,
// where a panic with a message is the way to fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "integration tests fail by panicking"
)]

mod alerts_channels;
mod alerts_daemon;
mod alerts_events;
mod alerts_missed;
mod alerts_noise;
mod alerts_outbox;
mod alerts_ping;
mod alerts_support;
mod backup_crash;
mod backup_disk;
mod backup_disturb;
mod backup_encryption;
mod backup_errors;
mod backup_globals;
mod backup_manifest;
mod backup_progress;
mod backup_roundtrip;
mod backup_schema;
mod backup_secrets;
mod backup_support;
mod backup_verification;
mod core_activation;
mod core_config;
mod core_ctl;
mod core_history;
mod core_journald;
mod core_notify;
mod core_protocol;
mod core_publish;
mod core_reload;
mod core_runner;
mod core_schedule;
mod core_secrets;
mod core_shutdown;
mod core_socket;
mod core_support;
mod core_sweep;
mod fault_clock;
mod fault_config;
mod fault_disk;
mod fault_kill;
mod fault_rotate;
mod fault_socket;
mod fault_socket_flood;
mod fault_support;
mod files_backup;
mod files_offsite;
mod files_restore;
mod files_support;
mod fleet_lease;
mod fleet_postgres;
mod fleet_redis;
mod fleet_run_on;
mod fleet_support;
mod harness;
mod harness_selftest;
mod health_checks;
mod health_disk;
mod health_freshness;
mod health_journald;
mod health_metrics;
mod health_support;
mod health_tls;
mod health_url_secrets;
mod offsite_copy;
mod offsite_faults;
mod offsite_fetch_to;
mod offsite_prune;
mod offsite_support;
mod offsite_targets;
mod physical_backup;
mod physical_support;
mod pin_offsite;
mod pin_prune;
mod prune_busy;
mod prune_config;
mod prune_disk;
mod prune_failed;
mod prune_offline;
mod prune_plan;
mod prune_support;
mod redis_backup;
mod redis_restore;
mod redis_shared;
mod redis_support;
mod restore_drill;
mod restore_evidence;
mod restore_globals;
mod restore_journald;
mod restore_kill;
mod restore_new;
mod restore_offsite;
mod restore_refusals;
mod restore_replace;
mod restore_run;
mod restore_safety;
mod restore_secrets;
mod restore_stream;
mod restore_support;
mod restore_toc;
mod retention_durations;
mod retention_restic;
mod rotate_crash;
mod rotate_disk;
mod rotate_folder;
mod rotate_pidfile;
mod rotate_safety;
mod rotate_su;
mod rotate_support;
mod rotate_writer;
mod schedule_dst;
mod systemd_units;
mod wal_archive;
mod wal_offsite;
mod wal_pitr;
mod wal_pitr_offsite;
mod wal_retention;
mod wal_rpo;
mod wal_support;
mod wal_trust;
