//! Alerts that leave the machine on their own: dead-man pings (healthchecks.io style) for each
//! run of a job with `ping-url`, and the daemon's heartbeat.
//!
//! - [`ping`]: which URL and body a run's start or end sends (pure).
//! - [`queue`]: [`Pings`], what the runner publishes a run's start and end to. One ordered
//!   queue and one sending task per job, so a job's `/start` always goes before its result,
//!   and a slow or dead receiver never holds up a run: the runner only enqueues.
//! - [`heartbeat`]: the daemon's own ping, sent from the supervisor loop (so a wedged loop
//!   stops it), at most one in flight.
//! - [`deliver`]: the HTTP POST, its timeout and retries.
//! - [`lanes`]: ordered per-key queues with one sending task each, under both the pings and
//!   the notification outbox.
//! - [`tail`]: the tracing layer that keeps a run's last log lines for the body of its ping.
//!
//! A ping URL is a secret (its path is the key): only its origin is ever logged, counted or
//! replied. A ping that fails is logged and counted in `atpred_pings_total{job,outcome}`; it
//! never changes a run's outcome.

pub mod channel;
pub mod daemon_events;
pub mod deliver;
pub mod event;
pub mod events;
pub mod heartbeat;
pub mod lanes;
pub mod memory;
pub mod noise;
pub mod notifier;
pub mod outbox;
pub mod ping;
pub mod queue;
pub mod tail;

pub use heartbeat::Heartbeat;
pub use notifier::Notifier;
pub use queue::Pings;
