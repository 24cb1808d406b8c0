//! A point-in-time restore from an offsite target alone (`restore --pitr --target NAME`): the
//! base backup from the target's catalog, the segments from the index the archiver put beside
//! them (`<prefix>/wal/<job>/index.jsonl`, [`crate::offsite::wal`]), nothing read from
//! backup-dir or archive-dir. A time whose WAL the prune job removed there (its
//! `pruned.json`) is refused, as is a target without an index.
//!
//! [`prepare`] plans from the target (enough for `--dry-run`); [`Source::download`] brings the
//! base and the planned segments into a private folder of restore-scratch-dir, each checked
//! against the remote manifest or the index's size and SHA-256, from where
//! [`super::stage`] writes the data directory exactly as from the local archive (checking
//! each segment against the index again as it decrypts it). The folder goes afterwards.

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use super::plan::{self, PlanError};
use super::{PitrError, PitrOptions, Prepared, archive_job, base_of, identity_for};
use crate::config::Config;
use crate::jobs::backup::manifest::FileSum;
use crate::jobs::catalog::State;
use crate::offsite::{OffsiteError, Remote, catalog, transfer, wal};
use crate::restore::RestoreError;
use crate::wal::index;
use crate::wal::prune::PrunedMark;
use crate::wal::segment::SegmentName;

/// The download folders in restore-scratch-dir: `.pitr-offsite-NANOS-PID`.
const DOWNLOAD_PREFIX: &str = ".pitr-offsite-";

/// Where a planned restore downloads from and into.
pub struct Source {
    remote: Remote,
    job: String,
    /// The private folder the base and the segments are downloaded into.
    scratch: PathBuf,
}

fn failed(e: OffsiteError) -> PitrError {
    PitrError::Failed(e.to_string())
}

/// Plans the restore of `options` from target `name`: its index, its mark, its base backups.
pub async fn prepare(
    config: &Config,
    options: &PitrOptions,
    name: &str,
) -> Result<(Prepared, Source), PitrError> {
    let (job, _) = archive_job(config, options.job.as_deref())?;
    let remote = crate::restore::remote::open(config, name).map_err(|e| match e {
        RestoreError::BadRequest(m) => PitrError::BadRequest(format!("--target: {m}")),
        e => PitrError::Failed(e.to_string()),
    })?;
    let Some(bytes) = wal::get(&remote, &job, wal::INDEX).await.map_err(failed)? else {
        return Err(PitrError::Plan(PlanError::NotArchived(format!(
            "offsite target {name} has no WAL index for job {job} ({} is missing): no segment \
             of it was copied there yet, or only before atpred uploaded the index; restore from \
             the local archive (without --target)",
            wal::key(&remote, &job, wal::INDEX)
        ))));
    };
    let (entries, _) = index::from_bytes(&bytes);
    let mark = match wal::get(&remote, &job, wal::PRUNED).await.map_err(failed)? {
        None => None,
        Some(b) => Some(serde_json::from_slice::<PrunedMark>(&b).map_err(|e| {
            PitrError::Failed(format!(
                "offsite target {name}: {} is unreadable: {e}",
                wal::key(&remote, &job, wal::PRUNED)
            ))
        })?),
    };
    let listed = catalog::list(&remote).await.map_err(failed)?;
    let found: Vec<_> = listed
        .entries
        .into_iter()
        .filter(|e| e.state == State::Verified)
        .filter_map(|e| e.manifest)
        .filter_map(|m| base_of(&m).map(|b| (b, m)))
        .collect();
    let list: Vec<plan::Base> = found.iter().map(|(b, _)| b.clone()).collect();
    let plan = super::latest::plan(&list, &entries, options.goal()?)
        .map_err(|e| PitrError::Plan(at_target(e, name)))?;
    if let Some(m) = &mark {
        refuse_pruned(&plan, &entries, m, name, options)?;
    }
    let manifest = found
        .into_iter()
        .find(|(b, _)| b.id == plan.base)
        .map(|(_, m)| m)
        .ok_or_else(|| PitrError::Failed(format!("base backup {} vanished", plan.base)))?;
    let identity = identity_for(config, &manifest, options.identity.as_deref(), &entries)?;
    let scratch = config.daemon.restore_scratch_dir.join(format!(
        "{DOWNLOAD_PREFIX}{}-{}",
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
        std::process::id()
    ));
    let prepared = Prepared {
        folder: scratch.join(&plan.base),
        archive_dir: scratch.join("wal"),
        plan,
        manifest,
        entries,
        identity,
    };
    let source = Source {
        remote,
        job,
        scratch,
    };
    Ok((prepared, source))
}

/// The planner's refusal, saying it is about the target's copy.
fn at_target(e: PlanError, name: &str) -> PlanError {
    let said = |m: String| format!("at offsite target {name}: {m}");
    match e {
        PlanError::NoBase(m) => PlanError::NoBase(said(m)),
        PlanError::NotArchived(m) => PlanError::NotArchived(said(m)),
        PlanError::Gap(m) => PlanError::Gap(said(m)),
    }
}

/// Refuses a plan that needs a segment below the target's pruned mark.
fn refuse_pruned(
    plan: &plan::PitrPlan,
    entries: &[index::Entry],
    mark: &PrunedMark,
    name: &str,
    options: &PitrOptions,
) -> Result<(), PitrError> {
    // A timeline history file's line carries its own size: a segment's says the WAL's.
    let size = entries
        .iter()
        .find(|e| SegmentName::parse(&e.name, e.wal_bytes).is_some())
        .map_or(16 << 20, |e| e.wal_bytes);
    let below = SegmentName::parse(&mark.below, size).ok_or_else(|| {
        PitrError::Failed(format!(
            "offsite target {name}: pruned.json names {:?}, not a segment",
            mark.below
        ))
    })?;
    let first = SegmentName::parse(plan.first(), size);
    if first.is_some_and(|f| f.number < below.number) {
        return Err(PitrError::Plan(PlanError::NotArchived(format!(
            "the WAL of a restore to {} is gone at offsite target {name}: it needs {} onwards \
             (base backup {}), and the target was pruned below {} ({}) at {}; restore to a \
             later time, or from the local archive (without --target)",
            options.goal_text(),
            plan.first(),
            plan.base,
            mark.below,
            mark.below_lsn,
            mark.at
        ))));
    }
    Ok(())
}

impl Source {
    /// Downloads the base backup and the planned segments into the scratch folder (created
    /// 0700), each checked as it arrives.
    pub async fn download(
        &self,
        prepared: &Prepared,
        cancel: &CancellationToken,
        progress: &(dyn Fn(String) + Sync),
    ) -> Result<(), String> {
        let target = self.remote.name();
        let scratch = &self.scratch;
        let parent = scratch.parent().unwrap_or(scratch);
        // Downloads of a daemon killed mid-way (its pid, the name's last part, is gone).
        for name in crate::scratch::sweep(parent, DOWNLOAD_PREFIX) {
            tracing::warn!("removed {name} from restore-scratch-dir: left by a daemon that died");
        }
        std::fs::create_dir_all(parent)
            .and_then(|()| std::fs::DirBuilder::new().mode(0o700).create(scratch))
            .map_err(|e| format!("creating {}: {e}", scratch.display()))?;
        progress(format!(
            "downloading base backup {} from offsite {target}",
            prepared.plan.base
        ));
        crate::offsite::fetch::fetch(&self.remote, &prepared.plan.base, scratch, None, cancel)
            .await
            .map_err(|e| e.to_string())?;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&prepared.archive_dir)
            .map_err(|e| format!("creating {}: {e}", prepared.archive_dir.display()))?;
        let count = prepared.plan.segments.len();
        for (i, name) in prepared.plan.segments.iter().enumerate() {
            let listed = prepared.plan.index_name(i);
            let entry = prepared
                .entries
                .iter()
                .find(|e| e.name == listed)
                .ok_or_else(|| format!("segment {name} is not in the index at {target}"))?;
            if i % 16 == 0 {
                progress(format!(
                    "downloading WAL from offsite {target}: {name} ({} of {count})",
                    i + 1
                ));
            }
            let key = wal::key(&self.remote, &self.job, &entry.file);
            let want = FileSum {
                path: entry.file.clone(),
                bytes: entry.bytes,
                sha256: entry.sha256.clone(),
            };
            let local = prepared.archive_dir.join(&entry.file);
            match transfer::download(&self.remote, &key, &local, &want, cancel).await {
                Err(e) if e.is_not_found() => {
                    return Err(format!(
                        "segment {name} is in the index at offsite {target} but {key} is missing"
                    ));
                }
                other => other.map_err(|e| format!("segment {name}: {e}"))?,
            }
        }
        Ok(())
    }

    /// Removes the scratch folder, whatever happened.
    pub fn remove(&self) {
        if let Err(e) = std::fs::remove_dir_all(&self.scratch)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("removing {}: {e}", self.scratch.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;

    #[test]
    fn a_time_whose_wal_was_pruned_at_the_target_is_refused_with_the_mark() {
        let at = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        let plan = plan::PitrPlan {
            base: "20270115T080000Z-base".into(),
            base_finished: at,
            timeline: 1,
            segments: vec![
                "000000010000000000000004".into(),
                "000000010000000000000005".into(),
            ],
            reaches: at,
            space_needed: 0,
            target: Some(at),
            partial: None,
        };
        let options = PitrOptions {
            time: Some(at),
            latest: false,
            to_dir: "/x".into(),
            job: None,
            owner: None,
            identity: None,
            target: Some("s3".into()),
        };
        let mark = |below: &str| PrunedMark {
            target: "s3".into(),
            below: below.into(),
            below_lsn: "0/5000000".into(),
            at,
        };
        let refused = refuse_pruned(
            &plan,
            &[],
            &mark("000000010000000000000005"),
            "s3",
            &options,
        )
        .unwrap_err();
        let said = refused.to_string();
        assert!(
            matches!(refused, PitrError::Plan(PlanError::NotArchived(_)))
                && said.contains("is gone at offsite target s3")
                && said.contains("pruned below 000000010000000000000005"),
            "{said}"
        );
        refuse_pruned(
            &plan,
            &[],
            &mark("000000010000000000000004"),
            "s3",
            &options,
        )
        .expect("nothing the plan needs was pruned");
    }
}
