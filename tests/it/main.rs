//! The one integration-test binary of atpred.
//!
//! Every test module shares the harness in `harness/`: throw-away PostgreSQL and Redis servers,
//! a notify socket that captures sd_notify messages, and a builder that runs the real `atpred`
//! and `atprectl` binaries against them. Test modules are declared below.

mod core_config;
mod core_protocol;
mod core_runner;
mod core_shutdown;
mod core_socket;
mod core_support;
mod harness;
mod harness_selftest;
