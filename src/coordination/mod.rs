//! Fleet-safe scheduling: each run of a coordinated job (backup, prune, command) first takes a
//! lease in a service every host of the fleet shares, so a tick that fires on every host runs on
//! one of them.
//!
//! Two backends, one contract ([`acquire`] -> [`Acquired`]; [`Lease::keep`] until the run ends
//! or the lease is lost; [`Lease::release`]):
//! - [`redis`]: a key per job set with NX PX, its value naming host, run and a fencing token;
//!   renewed and released by compare-then-act Lua scripts. The last slot taken is recorded in
//!   the same script, so a host whose timer fires late cannot take the same tick again.
//! - [`postgres`]: a session advisory lock on a dedicated connection held for the whole run;
//!   after a scheduled run it is kept until its slot plus [`slot_window`], since PostgreSQL has
//!   no shared record of slots without a table (and we create none in the application database).
//!
//! A lease that cannot be kept ends the run: [`Lease::keep`] returns why, the runner cancels the
//! run's token and records "lease lost: ...". Nothing here runs a job uncoordinated.

pub mod postgres;
pub mod redis;
pub mod run_on;

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::{Backend, Config, JobConfig, JobSpec, PostgresConfig};
use crate::ids::{JobName, RunId};

/// The coordination backend could not be asked: the run fails (it never runs uncoordinated).
#[derive(Debug, thiserror::Error)]
#[error("coordination backend {backend} unreachable: {message}")]
pub struct CoordError {
    pub backend: &'static str,
    pub message: String,
}

/// What a run asks for.
#[derive(Debug, Clone)]
pub struct Claim {
    pub job: JobName,
    pub run_id: RunId,
    /// The scheduled slot this run is for; `None` for a manual run.
    pub slot: Option<DateTime<Utc>>,
}

/// Who holds (or took) a lease, as another host sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub host: String,
    pub run_id: Option<String>,
    pub fencing_token: Option<u64>,
    /// Set when the lease was free but this tick had already been taken.
    pub tick: Option<DateTime<Utc>>,
    /// Why no host may take it now, when that is not another host's run.
    pub note: Option<String>,
}

impl Holder {
    /// The message of a skipped tick: always starts "held by <host>".
    pub fn describe(&self) -> String {
        let mut text = format!("held by {}", self.host);
        let mut extra = Vec::new();
        if let Some(tick) = self.tick {
            extra.push(format!("tick {} already taken", tick.format("%FT%TZ")));
        }
        if let Some(r) = &self.run_id {
            extra.push(format!("run {r}"));
        }
        if let Some(t) = self.fencing_token {
            extra.push(format!("fencing token {t}"));
        }
        if let Some(n) = &self.note {
            extra.push(n.clone());
        }
        if !extra.is_empty() {
            text = format!("{text} ({})", extra.join(", "));
        }
        text
    }
}

/// The answer to [`acquire`].
pub enum Acquired {
    Held(Lease),
    Refused(Holder),
}

/// A lease this host holds.
pub enum Lease {
    Redis(redis::RedisLease),
    Postgres(postgres::PgLease),
}

impl Lease {
    pub fn backend(&self) -> Backend {
        match self {
            Lease::Redis(_) => Backend::Redis,
            Lease::Postgres(_) => Backend::Postgres,
        }
    }

    /// The fencing token (Redis only): strictly increasing per job across the fleet.
    pub fn fencing_token(&self) -> Option<u64> {
        match self {
            Lease::Redis(l) => Some(l.token()),
            Lease::Postgres(_) => None,
        }
    }

    /// Renews the lease every ttl/3 and returns only when it is lost, saying why.
    pub async fn keep(&mut self) -> String {
        match self {
            Lease::Redis(l) => l.keep().await,
            Lease::Postgres(l) => l.keep().await,
        }
    }

    /// Gives the lease up; best effort (an unreachable backend lets it expire).
    pub async fn release(self) {
        match self {
            Lease::Redis(l) => l.release().await,
            Lease::Postgres(l) => l.release().await,
        }
    }
}

/// Takes the lease of `job` for `claim` from the configured backend.
pub async fn acquire(
    config: &Config,
    job: &JobConfig,
    claim: &Claim,
) -> Result<Acquired, CoordError> {
    let c = &config.coordination;
    match c.backend {
        Backend::Redis => redis::acquire(c, &config.redis, claim).await,
        Backend::Postgres => {
            let (pg, dbname) = source(config, job);
            postgres::acquire(c, &pg, &dbname, claim).await
        }
        Backend::None => Err(CoordError {
            backend: "none",
            message: "no coordination backend configured".into(),
        }),
    }
}

/// The server a job's advisory lock lives on: a backup's own database, else `[postgres]`.
pub fn source(config: &Config, job: &JobConfig) -> (PostgresConfig, String) {
    let dbname = match &job.spec {
        JobSpec::Backup(b) => b.dbname.clone(),
        _ => config.postgres.dbname.clone(),
    };
    (config.postgres.clone(), dbname)
}

/// How long after its slot a scheduled run keeps a PostgreSQL lease (see the module docs): the
/// hosts' timers fire within milliseconds of each other, a third of the ttl covers them with a
/// wide margin and stays below any sensible schedule's interval.
pub fn slot_window(ttl: Duration) -> Duration {
    ttl / 3
}

/// The key shared by every host for `job`.
pub fn key(prefix: &str, kind: &str, job: &JobName) -> String {
    format!("{prefix}:{kind}:{job}")
}

/// Errors of the backends, as one line without secrets.
fn unreachable(backend: &'static str, message: impl Into<String>) -> CoordError {
    CoordError {
        backend,
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::Holder;

    #[test]
    fn refusals_always_say_held_by() {
        let h = Holder {
            host: "db-b".into(),
            run_id: Some("r1".into()),
            fencing_token: Some(7),
            tick: None,
            note: None,
        };
        assert_eq!(h.describe(), "held by db-b (run r1, fencing token 7)");
        let t = Holder {
            tick: Some(chrono::DateTime::UNIX_EPOCH),
            fencing_token: None,
            ..h
        };
        assert_eq!(
            t.describe(),
            "held by db-b (tick 1970-01-01T00:00:00Z already taken, run r1)"
        );
    }
}
