//! Handlers of `health` and `metrics`.

use crate::config::JobSpec;
use crate::daemon::state::Shared;
use crate::protocol::{Response, Trigger};
use crate::runner::{RunEvent, RunOptions, StartError};

/// The board; with `now`, after running every health job (or waiting for its running run).
pub async fn health(shared: &Shared, now: bool) -> Response {
    if now {
        let config = shared.config.borrow().clone();
        let jobs = config
            .jobs
            .values()
            .filter(|j| matches!(j.spec, JobSpec::Health(_)));
        let mut waits = Vec::new();
        for job in jobs {
            let name = job.name.clone();
            let started =
                shared
                    .runner
                    .start(name.as_str(), Trigger::Manual, RunOptions::default());
            waits.push(async move {
                match started {
                    Ok(mut s) => {
                        while let Ok(event) = s.events.recv().await {
                            if matches!(event, RunEvent::Finished(_)) {
                                break;
                            }
                        }
                    }
                    Err(StartError::AlreadyRunning { .. }) => {
                        let mut changes = shared.runner.subscribe_changes();
                        while shared.runner.running_of(&name).is_some() {
                            if changes.changed().await.is_err() {
                                break;
                            }
                        }
                    }
                    Err(_) => {}
                }
            });
        }
        futures::future::join_all(waits).await;
    }
    Response::Health {
        checks: shared.runner.health().reports(),
    }
}

pub async fn metrics(shared: &Shared) -> Response {
    Response::Metrics {
        text: crate::metrics::render(shared).await,
    }
}
