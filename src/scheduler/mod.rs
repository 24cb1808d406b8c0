//! Scheduling: when each job runs.
//!
//! [`Schedule`] parses a job's schedule text and lists its fire times in the job's time zone;
//! [`JobTimer`] decides, from the time it is given, whether a job fires now, is recorded as
//! missed, or waits. Both are pure: nothing here reads a clock.

mod cron_dow;
mod preview;
mod schedule;
mod timer;

pub use preview::{Dst, Fire, preview};
pub use schedule::{Schedule, ScheduleError};
pub use timer::{GRACE, JobTimer, Tick};
mod describe;
mod task;

pub use describe::describe_jobs;
pub use task::Scheduler;
