//! The gate in front of a run: `run-on` (is the backup's source the right kind of server?),
//! then the fleet lease of a coordinated job, kept for the run's whole life.
//!
//! Order matters: `run-on` is checked before the lease, so a host whose source is the wrong
//! kind steps aside without taking the tick from the host that should run it. The lease is
//! taken before the run waits for a `max-concurrent-jobs` slot, so the fleet decides a tick at
//! once rather than every host queueing it. Dry runs change nothing and take no lease.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use serde_json::{Value, json};

use super::{Run, Runner, lock};
use crate::config::{Backend, JobSpec, RunOn};
use crate::coordination::{self, Acquired, Claim, Holder, Lease};
use crate::protocol::{LeaseStatus, Outcome};

type Ended = (Outcome, String, Value, u32);

impl Runner {
    pub(super) async fn gated(self: &Arc<Self>, run: &Run) -> Ended {
        if let JobSpec::Backup(b) = &run.job.spec
            && b.run_on != RunOn::Any
        {
            let (pg, dbname) = coordination::source(&run.config, &run.job);
            let checked = tokio::select! {
                c = coordination::run_on::check(&pg, &dbname, b.run_on) => c,
                () = run.token.cancelled() => {
                    return (Outcome::Cancelled, "cancelled while checking run-on".into(), Value::Null, 0);
                }
            };
            match checked {
                Ok(None) => {}
                Ok(Some(mismatch)) => {
                    return self.refused(run, "run-on", Outcome::Skipped, mismatch);
                }
                Err(e) => return self.refused(run, "connection", Outcome::Failed, e),
            }
        }
        let c = &run.config.coordination;
        if run.opts.dry_run || !run.job.coordinated(c) {
            return self.attempts(run).await;
        }
        let claim = Claim {
            job: run.job.name.clone(),
            run_id: run.run_id.clone(),
            slot: run.opts.slot,
        };
        let t0 = Instant::now();
        let acquired = tokio::select! {
            a = coordination::acquire(&run.config, &run.job, &claim) => a,
            () = run.token.cancelled() => {
                return (Outcome::Cancelled, "cancelled while taking the lease".into(), Value::Null, 0);
            }
        };
        let mut lease = match acquired {
            Err(e) => {
                let message = format!("{e}; not run (a coordinated job never runs uncoordinated)");
                return self.refused(run, "connection", Outcome::Failed, message);
            }
            Ok(Acquired::Refused(holder)) => {
                self.note(run, c.backend, &holder, true);
                let mut lease = lease_json(c.backend, &holder, run.opts.slot);
                lease["held"] = json!(false);
                let (outcome, message, _, attempts) =
                    self.refused(run, "lease", Outcome::Skipped, holder.describe());
                return (outcome, message, json!({ "lease": lease }), attempts);
            }
            Ok(Acquired::Held(lease)) => lease,
        };
        let mine = Holder {
            host: c.host.clone(),
            run_id: Some(run.run_id.to_string()),
            fencing_token: lease.fencing_token(),
            tick: None,
            note: None,
        };
        let taken = Utc::now();
        if let Some(t) = mine.fencing_token {
            tracing::Span::current().record("fencing_token", t);
        }
        tracing::info!(
            backend = c.backend.as_str(),
            "lease taken in {} ms{}",
            t0.elapsed().as_millis(),
            mine.fencing_token
                .map(|t| format!(" (fencing token {t})"))
                .unwrap_or_default()
        );
        self.note(run, c.backend, &mine, true);
        let (mut ended, lost) = {
            let attempts = self.attempts(run);
            tokio::pin!(attempts);
            let keep = lease.keep();
            tokio::pin!(keep);
            tokio::select! {
                r = &mut attempts => (r, None),
                reason = &mut keep => {
                    tracing::error!("{reason}: cancelling the run");
                    run.token.cancel();
                    (attempts.await, Some(reason))
                }
            }
        };
        self.release(run, lease);
        self.note(run, c.backend, &mine, false);
        if let Some(reason) = lost
            && !ended.0.is_success()
        {
            ended.0 = Outcome::Cancelled;
            ended.1 = reason;
        }
        let mut lease = lease_json(c.backend, &mine, run.opts.slot);
        lease["held"] = json!(true);
        lease["taken"] = json!(taken.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        ended.2 = with_lease(ended.2, lease);
        ended
    }

    /// The run ends before it began, for `cause`; `[daemon] notify` is told (dry runs tell
    /// nothing).
    fn refused(&self, run: &Run, cause: &str, outcome: Outcome, why: String) -> Ended {
        if !run.opts.dry_run {
            self.notifier.start_refused(&run.job.name, cause, &why);
        }
        (outcome, why, Value::Null, 0)
    }

    /// Releases now, or for a scheduled run on PostgreSQL at its slot plus the window (a host
    /// whose timer fires late then still finds the tick taken); the wait runs as a tracked
    /// task so the run's record is not held back.
    fn release(&self, run: &Run, lease: Lease) {
        let hold = match (lease.backend(), run.opts.slot) {
            (Backend::Postgres, Some(slot)) => {
                let until = slot
                    + chrono::Duration::from_std(coordination::slot_window(
                        run.config.coordination.ttl,
                    ))
                    .unwrap_or_default();
                (until - Utc::now()).to_std().ok()
            }
            _ => None,
        };
        self.tracker.spawn(async move {
            if let Some(wait) = hold {
                tokio::time::sleep(wait).await;
            }
            lease.release().await;
        });
    }

    fn note(&self, run: &Run, backend: Backend, holder: &Holder, held: bool) {
        let status = LeaseStatus {
            job: run.job.name.clone(),
            backend: backend.as_str().to_owned(),
            holder: holder.host.clone(),
            held,
            run_id: holder.run_id.clone(),
            fencing_token: holder.fencing_token,
            seen: Utc::now(),
        };
        lock(&self.leases).insert(run.job.name.clone(), status);
    }

    /// The leases as last seen, for `status`.
    pub fn leases(&self) -> Vec<LeaseStatus> {
        lock(&self.leases).values().cloned().collect()
    }
}

/// `details.lease` of a run record: who held the lease, and the slot the run was for.
fn lease_json(backend: Backend, h: &Holder, slot: Option<chrono::DateTime<Utc>>) -> Value {
    json!({
        "backend": backend.as_str(),
        "host": h.host,
        "run_id": h.run_id,
        "fencing_token": h.fencing_token,
        "slot": slot.map(|s| s.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    })
}

/// The job's details with `lease` added (details that are not an object are kept under `job`).
fn with_lease(details: Value, lease: Value) -> Value {
    match details {
        Value::Object(mut map) => {
            map.insert("lease".into(), lease);
            Value::Object(map)
        }
        Value::Null => json!({ "lease": lease }),
        other => json!({ "job": other, "lease": lease }),
    }
}
