#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The one integration-test binary of atpred.
//!
//! Every test module shares the harness in `harness/`: throw-away PostgreSQL and Redis servers,
//! a notify socket that captures sd_notify messages, and a builder that runs the real `atpred`
//! and `atprectl` binaries against them. Test modules are declared below.

mod backup_crash;
mod backup_disk;
mod backup_disturb;
mod backup_encryption;
mod backup_errors;
mod backup_manifest;
mod backup_progress;
mod backup_roundtrip;
mod backup_schema;
mod backup_secrets;
mod backup_support;
mod backup_verification;
mod harness;
mod harness_selftest;
