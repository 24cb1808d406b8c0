//! Issue "backups": atpred's backup runs against bare pg_dump on the same database, in the same
//! rounds, the order reversed every other round.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::Env;
use crate::daemon::{self, Daemon};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Case {
    /// `pg_dump -Fc -Z0 > /dev/null`: what the server needs to send the data.
    Floor,
    /// `pg_dump -Fc -f FILE`, then `sync FILE`.
    PgDumpCustom,
    /// `pg_dump -Fd -j2 -f DIR`, then `sync` of its files.
    PgDumpDir,
    /// `atprectl run JOB --wait` against a fresh daemon.
    Job(&'static str),
}

/// One row of the table: what was run, what it is compared with, every round's sample.
pub struct Row {
    pub label: &'static str,
    pub case: Case,
    pub baseline: Option<Case>,
    pub samples: Vec<Sample>,
}

pub struct Sample {
    pub secs: f64,
    /// The dump's size on disk (the file, or the folder's files); none for the floor.
    pub bytes: Option<u64>,
    /// The daemon's VmHWM after the run, KiB (atpred rows only).
    pub hwm_kib: Option<u64>,
}

const ROWS: &[(&str, Case, Option<Case>)] = &[
    (
        "`pg_dump -Fc -Z0 > /dev/null` (floor: the server sending the data)",
        Case::Floor,
        Some(Case::PgDumpCustom),
    ),
    (
        "`pg_dump -Fc -f FILE` + `sync FILE` (its default gzip)",
        Case::PgDumpCustom,
        None,
    ),
    (
        "atpred custom, zstd, verify = \"checksum\"",
        Case::Job("checksum"),
        Some(Case::PgDumpCustom),
    ),
    (
        "atpred custom, zstd, verify = \"full\"",
        Case::Job("full"),
        Some(Case::PgDumpCustom),
    ),
    (
        "atpred custom, zstd, verify = \"restore\"",
        Case::Job("restore"),
        Some(Case::PgDumpCustom),
    ),
    (
        "atpred custom, compress = \"gzip\", verify = \"checksum\"",
        Case::Job("gzip"),
        Some(Case::PgDumpCustom),
    ),
    (
        "atpred custom, zstd + age (1 recipient), verify = \"checksum\"",
        Case::Job("age"),
        Some(Case::PgDumpCustom),
    ),
    (
        "`pg_dump -Fd -j2 -f DIR` + `sync` of its files (gzip)",
        Case::PgDumpDir,
        None,
    ),
    (
        "atpred directory, parallel = 2 (gzip), verify = \"checksum\"",
        Case::Job("dir"),
        Some(Case::PgDumpDir),
    ),
];

fn jobs(recipient: &str) -> String {
    let job = |name: &str, extra: &str| format!("[jobs.{name}]\nkind = \"backup\"\n{extra}\n");
    [
        job("checksum", "verify = \"checksum\""),
        job("full", "verify = \"full\""),
        job("restore", "verify = \"restore\""),
        job("gzip", "verify = \"checksum\"\ncompress = \"gzip\""),
        job(
            "age",
            &format!("verify = \"checksum\"\nencrypt-to = [{recipient:?}]"),
        ),
        job(
            "dir",
            "verify = \"checksum\"\nformat = \"directory\"\nparallel = 2",
        ),
    ]
    .join("\n")
}

/// Every backup row of the report.
pub fn run(env: &Env) -> Result<Vec<Row>> {
    measure_rows(env, ROWS)
}

/// Only atpred's default backup and bare pg_dump, for the growth series across scales.
pub fn growth(env: &Env) -> Result<Vec<Row>> {
    let wanted: Vec<_> = ROWS
        .iter()
        .copied()
        .filter(|&(_, case, _)| matches!(case, Case::PgDumpCustom | Case::Job("checksum")))
        .collect();
    measure_rows(env, &wanted)
}

fn measure_rows(env: &Env, wanted: &[(&'static str, Case, Option<Case>)]) -> Result<Vec<Row>> {
    let dir = env.work.join("backups");
    // The growth series runs this once per scale in one work directory: start empty.
    let _ = fs::remove_dir_all(&dir);
    let recipient = age::x25519::Identity::generate().to_public().to_string();
    daemon::write_config(env, &dir, &jobs(&recipient))?;
    let bare = env.work.join("bare");
    fs::create_dir_all(&bare)?;
    let mut rows: Vec<Row> = wanted
        .iter()
        .map(|&(label, case, baseline)| Row {
            label,
            case,
            baseline,
            samples: Vec::new(),
        })
        .collect();
    eprintln!("  warm-up: pg_dump -Fc -Z0 > /dev/null (not counted)");
    measure(env, Case::Floor, &dir, &bare)?;
    settle(env);
    for round in 0..env.runs {
        let mut order: Vec<usize> = (0..rows.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let sample = measure(env, rows[i].case, &dir, &bare)
                .with_context(|| format!("round {}: {}", round + 1, rows[i].label))?;
            eprintln!(
                "  round {}/{}: {:.2} s  {}{}",
                round + 1,
                env.runs,
                sample.secs,
                rows[i].label,
                sample
                    .hwm_kib
                    .map(|k| format!(" (VmHWM {:.1} MiB)", k as f64 / 1024.0))
                    .unwrap_or_default()
            );
            rows[i].samples.push(sample);
            settle(env);
        }
    }
    Ok(rows)
}

fn measure(env: &Env, case: Case, dir: &Path, bare: &Path) -> Result<Sample> {
    match case {
        Case::Floor => {
            let t0 = Instant::now();
            // To stdout: with --file, pg_dump 15 fsyncs its output, which /dev/null refuses.
            run_ok(
                pg_dump(env)
                    .args(["--format=custom", "--compress=0"])
                    .stdout(Stdio::null()),
            )?;
            Ok(timed(t0, None))
        }
        Case::PgDumpCustom => {
            let file = bare.join("dump.backup");
            let t0 = Instant::now();
            run_ok(
                pg_dump(env)
                    .arg("--format=custom")
                    .arg(format!("--file={}", file.display())),
            )?;
            run_ok(Command::new("sync").arg(&file))?;
            let sample = timed(t0, Some(size_of(&file)?));
            fs::remove_file(&file)?;
            Ok(sample)
        }
        Case::PgDumpDir => {
            let folder = bare.join("dump.dir");
            let t0 = Instant::now();
            run_ok(
                pg_dump(env)
                    .args(["--format=directory", "--jobs=2"])
                    .arg(format!("--file={}", folder.display())),
            )?;
            let mut files: Vec<PathBuf> = fs::read_dir(&folder)?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            files.push(folder.clone());
            run_ok(Command::new("sync").args(&files))?;
            let sample = timed(t0, Some(size_of(&folder)?));
            fs::remove_dir_all(&folder)?;
            Ok(sample)
        }
        Case::Job(job) => {
            let (daemon, _) = Daemon::start(env, dir)?;
            let t0 = Instant::now();
            let out = Command::new(env.bin.join("atprectl"))
                .args(["run", job, "--wait"])
                .env("ATPRED_SOCKET", &daemon.socket)
                .stdin(Stdio::null())
                .output()
                .context("run atprectl")?;
            let secs = t0.elapsed().as_secs_f64();
            if !out.status.success() {
                bail!(
                    "atprectl run {job} --wait exited with {}: {}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let hwm = daemon.status_kib("VmHWM")?;
            daemon.stop()?;
            let bytes = take_published(&dir.join("backups"))?;
            Ok(Sample {
                secs,
                bytes: Some(bytes),
                hwm_kib: Some(hwm),
            })
        }
    }
}

/// Lets the next measurement start from a quiet server and disk: CHECKPOINT (atp_user has
/// pg_checkpoint) and `sync`, so no run pays for the writes of the one before (a restore drill
/// leaves about a gigabyte of dirty pages behind).
fn settle(env: &Env) {
    if let Err(e) = crate::psql(env, "CHECKPOINT") {
        eprintln!("  (no CHECKPOINT between measurements: {e:#})");
    }
    let _ = Command::new("sync").status();
}

fn timed(t0: Instant, bytes: Option<u64>) -> Sample {
    Sample {
        secs: t0.elapsed().as_secs_f64(),
        bytes,
        hwm_kib: None,
    }
}

fn pg_dump(env: &Env) -> Command {
    let mut cmd = Command::new(env.pg_bin.join("pg_dump"));
    cmd.arg("--host")
        .arg(&env.pg_host)
        .args([
            "--port",
            "5432",
            "--username",
            &env.pg_user,
            "--no-password",
        ])
        .arg(format!("--dbname={}", env.db))
        .env("PGPASSFILE", &env.passfile)
        .stdin(Stdio::null());
    cmd
}

/// Runs `cmd`; an error with its output unless it exits 0.
pub fn run_ok(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} exited with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The size of the one published backup's dump (`database.backup*`), which is then removed so
/// every run starts from the same empty backup-dir.
fn take_published(backups: &Path) -> Result<u64> {
    let mut published = Vec::new();
    for entry in fs::read_dir(backups)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(".failed-") {
            bail!("a backup failed verification: {}", entry.path().display());
        }
        if !name.starts_with('.') && entry.file_type()?.is_dir() {
            published.push(entry.path());
        }
    }
    let [folder] = published.as_slice() else {
        bail!(
            "expected one published backup in {}, found {published:?}",
            backups.display()
        );
    };
    let mut bytes = 0;
    for entry in fs::read_dir(folder)? {
        let entry = entry?;
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("database.backup")
        {
            bytes += size_of(&entry.path())?;
        }
    }
    fs::remove_dir_all(folder)?;
    Ok(bytes)
}

/// Bytes of a file, or of every file under a folder.
fn size_of(path: &Path) -> Result<u64> {
    let meta = fs::metadata(path).with_context(|| format!("stat {}", path.display()))?;
    if !meta.is_dir() {
        return Ok(meta.len());
    }
    let mut total = 0;
    for entry in fs::read_dir(path)? {
        total += size_of(&entry?.path())?;
    }
    Ok(total)
}
