//! Scheduling: when each job runs.
//!
//! [`Schedule`] parses a job's schedule text and lists its fire times in the job's time zone.
//! Nothing here reads a clock.

mod schedule;

pub use schedule::{Schedule, ScheduleError};
