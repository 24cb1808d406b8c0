//! atpred: backup, retention, health and log-rotation daemon.

pub mod scheduler;
