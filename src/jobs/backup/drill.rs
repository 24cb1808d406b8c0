//! The scratch-database side of a restore drill: after pg_restore, compare every table's row
//! count with the dump's snapshot, run the job's `drill-sql` smoke queries
//! ([`crate::restore::smoke`]), drop the database, and record the drill in the backup
//! folder's `evidence.json` ([`crate::restore::evidence`]).

use std::path::Path;
use std::time::Instant;

use super::manifest::{Manifest, Verification, VerifyOutcome};
use super::scratch_db::Scratch;
use super::snapshot;
use super::verify::{Checked, Found, VerifyEnv};
use crate::config::VerifyLevel;
use crate::restore::evidence::{self, Drill};
use crate::restore::smoke::{self, SmokeResult};

/// What a restore drill found in its scratch database, for its evidence.
#[derive(Default)]
pub(super) struct Facts {
    tables: usize,
    rows: i64,
    smoke: Vec<SmokeResult>,
    /// Row counts the load already took (COPY's, [`crate::restore::exec::drill`]): the scratch
    /// database is then not counted again.
    pub(super) counted: Option<std::collections::BTreeMap<String, i64>>,
}

/// Checks the scratch database after a restore (row counts, then the smoke queries), then
/// drops it whatever happened.
pub(super) async fn finish(
    env: &VerifyEnv<'_>,
    level: VerifyLevel,
    result: Result<(), Found>,
    scratch: Option<Scratch>,
    m: &Manifest,
    note: String,
    facts: &mut Facts,
) -> Checked {
    let Some(scratch) = scratch else {
        return result.map(|()| {
            (
                level,
                format!("{note}pg_restore read the whole archive; checksums match"),
            )
        });
    };
    let checked = match result {
        Ok(()) => check_drill(env, &scratch, m, facts).await,
        Err(f) => Err(f),
    };
    scratch.drop_db().await;
    checked.map(|summary| (level, format!("{note}{summary}")))
}

/// The row counts against the dump's snapshot, then the job's `drill-sql`.
async fn check_drill(
    env: &VerifyEnv<'_>,
    scratch: &Scratch,
    m: &Manifest,
    facts: &mut Facts,
) -> Result<String, Found> {
    let level = VerifyLevel::Restore;
    let counts = match facts.counted.take() {
        Some(counted) => counted,
        None => scratch
            .count()
            .await
            .map_err(|e| Found::Problem(level, e))?,
    };
    facts.tables = counts.len();
    facts.rows = counts.values().sum();
    let problems = snapshot::compare(&m.tables, &counts);
    if !problems.is_empty() {
        return Err(Found::Problem(
            level,
            format!("row counts differ after restore: {}", problems.join("; ")),
        ));
    }
    facts.smoke = smoke::run(env.restore_target, &scratch.name, env.drill_sql).await;
    let failed: Vec<String> = facts
        .smoke
        .iter()
        .filter(|s| !s.passed)
        .map(SmokeResult::describe)
        .collect();
    if !failed.is_empty() {
        return Err(Found::Problem(
            level,
            format!(
                "restored {} tables and every row count matches, but {} of {} smoke queries \
                 failed: {}",
                counts.len(),
                failed.len(),
                facts.smoke.len(),
                failed.join("; ")
            ),
        ));
    }
    let smoke = match facts.smoke.len() {
        0 => String::new(),
        n => format!(
            "; {n} drill-sql quer{} passed",
            if n == 1 { "y" } else { "ies" }
        ),
    };
    Ok(format!(
        "restored {} tables; every row count matches the dump's snapshot{smoke}",
        counts.len()
    ))
}

/// Records the drill that `verification` concludes (started at `t0`) in `dir`'s evidence.
pub(super) fn record(
    dir: &Path,
    manifest: &Manifest,
    verification: &Verification,
    t0: Instant,
    facts: Facts,
) {
    evidence::drilled(
        dir,
        Drill {
            at: verification.at,
            duration_ms: u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX),
            passed: verification.outcome == VerifyOutcome::Passed,
            tables: facts.tables,
            rows: facts.rows,
            data_age_seconds: evidence::data_age(manifest, verification.at),
            smoke: facts.smoke,
            details: verification.details.clone(),
            loaded: None,
        },
    );
}
