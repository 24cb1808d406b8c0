//! What the prune tests share: job tables, backup folders that span days, and the plan as
//! `atprectl run JOB --dry-run` prints it (as text and as JSON).
//!
//! Backups are made by the real backup job. A catalog spanning days cannot be waited for, so
//! [`craft_copy`] copies a real published backup folder to a new id and rewrites only the
//! manifest's `id`, `started` and `finished`: `SHA256SUMS` lists the data files, which are
//! copied byte for byte, so it stays valid (proved by `sha256sum -c` in [`craft_copy`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Days, NaiveDate, Utc};
use serde_json::Value;

use crate::backup_support::{Fixture, backup_ok, ctl, quote, shell};
use crate::harness::{self, Daemon};

/// A small backup job: the default format, checked by checksum (fast on two busy cores).
pub const NIGHTLY: &str = "[jobs.nightly]\nkind = \"backup\"\nverify = \"checksum\"\n";

/// A small database, a daemon with the `nightly` backup job and a `prune` job with `policy`, and
/// one real backup: (fixture, daemon, backup-dir, the backup's id).
pub fn nightly_with_prune(policy: &str) -> (Fixture, Daemon, PathBuf, String) {
    let fx = Fixture::new();
    fx.create_small_schema();
    let daemon = fx
        .daemon(&format!("{NIGHTLY}\n{}", prune_job("prune", policy)))
        .spawn();
    let dir = fx.backup_dir();
    let r1 = backup_ok(&daemon, "nightly");
    (fx, daemon, dir, r1)
}

/// `[jobs.NAME]` of kind prune with `policy` (TOML lines).
pub fn prune_job(name: &str, policy: &str) -> String {
    format!("[jobs.{name}]\nkind = \"prune\"\n{policy}\n")
}

/// The manifest of the folder `name` in `backup_dir`, as stored.
pub fn stored_manifest(backup_dir: &Path, name: &str) -> Value {
    let path = backup_dir.join(name).join("manifest.json");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `started` of the backup `id`, from its manifest.
pub fn started_of(backup_dir: &Path, id: &str) -> DateTime<Utc> {
    crate::core_support::time(&stored_manifest(backup_dir, id)["started"])
}

/// `bytes` of the backup `id`, from its manifest.
pub fn bytes_of(backup_dir: &Path, id: &str) -> u64 {
    stored_manifest(backup_dir, id)["bytes"]
        .as_u64()
        .expect("bytes is a number")
}

/// `hour`:00 UTC, `days` before `day`.
pub fn at(day: NaiveDate, days: u64, hour: u32) -> DateTime<Utc> {
    (day - Days::new(days))
        .and_hms_opt(hour, 0, 0)
        .expect("a valid hour")
        .and_utc()
}

/// Copies the published backup `source` in `backup_dir` to the folder `name` (mode 0700, files
/// 0600) and rewrites its manifest as a backup of the same job started at `started`. Returns
/// the new id (`YYYYMMDDTHHMMSSZ-job`, as the backup job names them). `name` defaults to the id;
/// give another to build a folder that is not a published backup (`.trash-<id>`, a directory
/// outside backup-dir...).
pub fn craft_copy_as(
    backup_dir: &Path,
    source: &str,
    started: DateTime<Utc>,
    target: Option<&Path>,
) -> String {
    let mut manifest = stored_manifest(backup_dir, source);
    let job = manifest["job"].as_str().expect("job").to_owned();
    let id = format!("{}-{job}", started.format("%Y%m%dT%H%M%SZ"));
    let dir = target.map_or_else(|| backup_dir.join(&id), Path::to_path_buf);
    std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    harness::set_mode(&dir, 0o700);
    for entry in std::fs::read_dir(backup_dir.join(source)).expect("read the source backup") {
        let entry = entry.expect("read_dir entry");
        assert!(entry.file_type().expect("type").is_file(), "{entry:?}");
        let to = dir.join(entry.file_name());
        std::fs::copy(entry.path(), &to).expect("copy a backup file");
        harness::set_mode(&to, 0o600);
    }
    let duration =
        chrono::Duration::milliseconds(manifest["duration_ms"].as_i64().expect("duration_ms"));
    manifest["id"] = Value::from(id.as_str());
    manifest["started"] = Value::from(started.to_rfc3339());
    manifest["finished"] = Value::from((started + duration).to_rfc3339());
    let text = serde_json::to_vec_pretty(&manifest).expect("serialise the manifest");
    harness::write_private(&dir.join("manifest.json"), &text);
    shell(&format!(
        "cd {} && sha256sum -c --quiet SHA256SUMS",
        quote(&dir)
    ));
    id
}

/// [`craft_copy_as`] into `backup_dir/<id>`: a published backup of the same job.
pub fn craft_copy(backup_dir: &Path, source: &str, started: DateTime<Utc>) -> String {
    craft_copy_as(backup_dir, source, started, None)
}

/// One decision of a plan: keep or remove, and the reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub keep: bool,
    pub reasons: Vec<String>,
}

/// The plan of `atprectl run JOB --dry-run`, as printed (`keep  ID  reason, reason`) and as
/// JSON (`--json`, the finished run's details); panics unless both say the same, exit 0.
pub fn dry_run(daemon: &Daemon, job: &str) -> BTreeMap<String, Decision> {
    let out = ctl(daemon, &["run", job, "--dry-run"]);
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("(dry run)"), "{}", out.stdout);
    let json = finished(&ctl(daemon, &["--json", "run", job, "--dry-run"]));
    assert_eq!(json["dry_run"], true, "{json:#}");
    assert_eq!(json["outcome"], "succeeded", "{json:#}");
    let plan = parse_plan_json(&json["details"]);
    assert_eq!(
        parse_plan(&out.stdout),
        as_text(&plan),
        "the text and the JSON plan agree:\n{}",
        out.stdout
    );
    plan
}

/// The plan as [`parse_plan`] reads it back from text: a reason may itself hold ", " (the
/// separator), so text is compared as text.
pub fn as_text(plan: &BTreeMap<String, Decision>) -> BTreeMap<String, (bool, String)> {
    plan.iter()
        .map(|(id, d)| (id.clone(), (d.keep, d.reasons.join(", "))))
        .collect()
}

/// The decisions of a plan printed as text (`keep  ID  reason, reason`), by id.
pub fn parse_plan(text: &str) -> BTreeMap<String, (bool, String)> {
    let mut plan = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.splitn(2, char::is_whitespace);
        let keep = match words.next() {
            Some("keep") => true,
            Some("remove") => false,
            _ => continue,
        };
        let rest = words.next().unwrap_or_default().trim_start();
        let (id, reasons) = rest.split_once("  ").unwrap_or((rest, ""));
        plan.insert(id.to_owned(), (keep, reasons.trim().to_owned()));
    }
    plan
}

/// The decisions of a plan as JSON (`{"decisions": [...], "warnings": [...]}`), by id.
pub fn parse_plan_json(plan: &Value) -> BTreeMap<String, Decision> {
    let decisions = plan["decisions"].as_array();
    let decisions = decisions.unwrap_or_else(|| panic!("no decisions in {plan:#}"));
    decisions
        .iter()
        .map(|d| {
            let reasons = d["reasons"].as_array().expect("reasons");
            let reasons = reasons.iter().map(|r| r.as_str().expect("text").to_owned());
            let keep = d["keep"].as_bool().expect("keep");
            let id = d["id"].as_str().expect("id").to_owned();
            let reasons = reasons.collect();
            (id, Decision { keep, reasons })
        })
        .collect()
}

/// The run record in the last line of `atprectl --json run ...`.
pub fn finished(out: &harness::CtlOutput) -> Value {
    let last = out.stdout.lines().rev().find(|l| !l.trim().is_empty());
    let last = last.unwrap_or_else(|| panic!("no reply: {}", out.stderr));
    let reply: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}"));
    assert_eq!(reply["type"], "finished", "{}", out.stdout);
    reply["run"].clone()
}

/// A decision with these reasons (in any order).
pub fn decision(keep: bool, reasons: &[&str]) -> Decision {
    let mut reasons: Vec<String> = reasons.iter().map(|r| (*r).to_owned()).collect();
    reasons.sort();
    Decision { keep, reasons }
}

/// The plan with every decision's reasons sorted, to compare with [`decision`]s.
pub fn sorted(plan: &BTreeMap<String, Decision>) -> BTreeMap<String, Decision> {
    plan.iter()
        .map(|(id, d)| {
            let mut d = d.clone();
            d.reasons.sort();
            (id.clone(), d)
        })
        .collect()
}

/// Lines of the daemon log that contain every one of `needles`.
pub fn log_lines(daemon: &Daemon, needles: &[&str]) -> Vec<String> {
    daemon
        .log()
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_owned)
        .collect()
}

/// `bytes` as the daemon shows them ("0.1 MiB").
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
