//! Group "restore": `atprectl restore` of atpred's default backup (custom + zstd, unpacked into
//! restore-scratch-dir for `pg_restore -j`) against `createdb` + `pg_restore -j2` of a plain
//! `pg_dump -Fc` of the same database, in the same rounds; the restore drill on restore's path
//! against the single-stream pipe drills took before; and the scratch space the unpacking uses.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::Env;
use crate::backup::run_ok;
use crate::daemon::{self, Daemon};
use crate::stats::{cells, list, median, num, verdict};

/// The database every restore row restores into (dropped, untimed, after each one).
const TARGET: &str = "atp_bench_restored";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    /// `createdb` + `pg_restore -j2 -d` of a plain `pg_dump -Fc` file.
    PgRestore,
    /// `atprectl restore ID --to DB --yes` (its default: `pg_restore -j 2`).
    Atpred,
    /// The same with `--jobs 1`.
    AtpredJobs1,
    /// `atprectl backups verify ID --level restore`: the drill, unpacked for `pg_restore -j`.
    Drill,
    /// What a drill did before: `createdb` + `zstd -dc FILE | pg_restore -d` (one stream).
    PipeDrill,
}

const ROWS: &[(&str, Case)] = &[
    (
        "`createdb` + `pg_restore -j2` of a plain `pg_dump -Fc`",
        Case::PgRestore,
    ),
    (
        "`atprectl restore ID --to DB --yes` (default backup: custom + zstd; `-j 2`)",
        Case::Atpred,
    ),
    ("same, `--jobs 1`", Case::AtpredJobs1),
    (
        "restore drill now: `backups verify ID --level restore` (unpacked, `pg_restore -j 2`)",
        Case::Drill,
    ),
    (
        "drill before, its pipe by hand: `createdb` + `zstd -dc \\| pg_restore -d` (one stream)",
        Case::PipeDrill,
    ),
];

/// Every round's seconds per row, and the scratch space one unpacking takes.
pub struct Rows {
    samples: Vec<Vec<f64>>,
    /// The unpacked archive's bytes (what restore-scratch-dir holds during a restore).
    scratch_bytes: u64,
    /// The zstd-wrapped dump's bytes, and the plain `pg_dump -Fc` file's.
    packed_bytes: u64,
    fc_bytes: u64,
}

pub fn run(env: &Env) -> Result<Rows> {
    let dir = env.work.join("restore");
    let _ = fs::remove_dir_all(&dir);
    daemon::write_config(
        env,
        &dir,
        "[jobs.nightly]\nkind = \"backup\"\nverify = \"checksum\"\n",
    )?;
    let (daemon, _) = Daemon::start(env, &dir)?;
    ctl(&daemon, env, &["run", "nightly", "--wait"])?;
    let id = only_backup(&dir.join("backups"))?;
    let packed = dir.join("backups").join(&id).join("database.backup");
    let packed_bytes = fs::metadata(&packed)
        .with_context(|| format!("stat {}", packed.display()))?
        .len();
    let scratch_bytes = unpacked_size(&packed)?;
    let fc = dir.join("plain.backup");
    run_ok(
        Command::new(env.pg_bin.join("pg_dump"))
            .args(pg_conn(env))
            .arg("--format=custom")
            .arg(format!("--file={}", fc.display()))
            .arg(&env.db),
    )?;
    let fc_bytes = fs::metadata(&fc)?.len();
    let mut samples = vec![Vec::new(); ROWS.len()];
    drop_target(env)?;
    settle(env);
    for round in 0..env.runs {
        let mut order: Vec<usize> = (0..ROWS.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (label, case) = ROWS[i];
            let t0 = Instant::now();
            measure(env, &daemon, case, &id, &fc, &packed)
                .with_context(|| format!("round {}: {label}", round + 1))?;
            let secs = t0.elapsed().as_secs_f64();
            eprintln!("  round {}/{}: {secs:.2} s  {label}", round + 1, env.runs);
            samples[i].push(secs);
            drop_target(env)?;
            settle(env);
        }
    }
    daemon.stop()?;
    let _ = fs::remove_dir_all(&dir);
    Ok(Rows {
        samples,
        scratch_bytes,
        packed_bytes,
        fc_bytes,
    })
}

fn measure(
    env: &Env,
    daemon: &Daemon,
    case: Case,
    id: &str,
    fc: &Path,
    packed: &Path,
) -> Result<()> {
    match case {
        Case::PgRestore => {
            createdb(env)?;
            run_ok(
                Command::new(env.pg_bin.join("pg_restore"))
                    .args(pg_conn(env))
                    .args(["--jobs=2", "--no-owner", "--dbname", TARGET])
                    .arg(fc),
            )
        }
        Case::Atpred => ctl(daemon, env, &["restore", id, "--to", TARGET, "--yes"]),
        Case::AtpredJobs1 => ctl(
            daemon,
            env,
            &["restore", id, "--to", TARGET, "--yes", "--jobs", "1"],
        ),
        Case::Drill => ctl(
            daemon,
            env,
            &["backups", "verify", id, "--level", "restore"],
        ),
        Case::PipeDrill => {
            createdb(env)?;
            let mut zstd = Command::new("zstd")
                .args(["-dc", "-q"])
                .arg(packed)
                .stdout(Stdio::piped())
                .spawn()
                .context("run zstd (apt-get install zstd)")?;
            let stdout = zstd.stdout.take().context("zstd's stdout")?;
            let restored = Command::new(env.pg_bin.join("pg_restore"))
                .args(pg_conn(env))
                .args(["--no-owner", "--no-privileges", "--dbname", TARGET])
                .stdin(stdout)
                .output()
                .context("run pg_restore")?;
            let unzipped = zstd.wait()?;
            if !restored.status.success() || !unzipped.success() {
                bail!(
                    "zstd -dc | pg_restore: {unzipped}, {}: {}",
                    restored.status,
                    String::from_utf8_lossy(&restored.stderr)
                );
            }
            Ok(())
        }
    }
}

fn pg_conn(env: &Env) -> Vec<String> {
    vec![
        format!("--host={}", env.pg_host.display()),
        "--port=5432".into(),
        format!("--username={}", env.pg_user),
        "--no-password".into(),
    ]
}

fn createdb(env: &Env) -> Result<()> {
    run_ok(
        Command::new(env.pg_bin.join("createdb"))
            .args(pg_conn(env))
            .arg(TARGET)
            .env("PGPASSFILE", &env.passfile),
    )
}

/// Drops the restored database (untimed); atpred's own temporary name too, in case.
fn drop_target(env: &Env) -> Result<()> {
    crate::psql(env, &format!("DROP DATABASE IF EXISTS {TARGET}"))?;
    crate::psql(
        env,
        &format!("DROP DATABASE IF EXISTS {TARGET}_atpred_restoring"),
    )?;
    Ok(())
}

fn settle(env: &Env) {
    if let Err(e) = crate::psql(env, "CHECKPOINT") {
        eprintln!("  (no CHECKPOINT between measurements: {e:#})");
    }
    let _ = Command::new("sync").status();
}

fn ctl(daemon: &Daemon, env: &Env, args: &[&str]) -> Result<()> {
    let out = Command::new(env.bin.join("atprectl"))
        .args(args)
        .env("ATPRED_SOCKET", &daemon.socket)
        .stdin(Stdio::null())
        .output()
        .context("run atprectl")?;
    if !out.status.success() {
        bail!(
            "atprectl {} exited with {}: {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The one published backup's id (its folder's name).
fn only_backup(backups: &Path) -> Result<String> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(backups)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') {
            ids.push(name);
        }
    }
    match ids.as_slice() {
        [id] => Ok(id.clone()),
        _ => bail!(
            "expected one backup in {}, found {ids:?}",
            backups.display()
        ),
    }
}

/// The bytes `zstd -dc` gives: what restore unpacks into restore-scratch-dir.
fn unpacked_size(packed: &Path) -> Result<u64> {
    let out = Command::new("sh")
        .arg("-c")
        .arg("zstd -dc -q -- \"$1\" | wc -c")
        .arg("sh")
        .arg(packed)
        .output()
        .context("run zstd -dc | wc -c")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("zstd -dc | wc -c gave no number")
}

pub fn table(out: &mut String, rows: &Rows) {
    const MIB: f64 = 1024.0 * 1024.0;
    let base = median(&rows.samples[0]);
    let _ = writeln!(out, "## Restore (group \"restore\")\n");
    let _ = writeln!(
        out,
        "The same database restored by atpred from its default backup (custom + zstd, {} MiB; \
         unpacked into restore-scratch-dir: **{} MiB of scratch space**) and by `pg_restore -j2` \
         from a plain `pg_dump -Fc` ({} MiB), into a new database each time.\n",
        num(rows.packed_bytes as f64 / MIB, 1),
        num(rows.scratch_bytes as f64 / MIB, 1),
        num(rows.fc_bytes as f64 / MIB, 1),
    );
    let _ = writeln!(
        out,
        "| what | s | min – max s | ratio to pg_restore -j2 | every run (s) | aim |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | --- | --- |");
    for (i, &(label, case)) in ROWS.iter().enumerate() {
        let secs = &rows.samples[i];
        let (med, range) = cells(secs, 2);
        let ratio = median(secs) / base;
        let aim = match case {
            Case::Atpred => format!("≤ 1.0×: {}", verdict(ratio <= 1.0)),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "| {label} | {med} | {range} | {}× | {} | {aim} |",
            num(ratio, 2),
            list(secs, 2)
        );
    }
    let drill = median(&rows.samples[3]);
    let pipe = median(&rows.samples[4]);
    let _ = writeln!(
        out,
        "\nThe drill now takes {}× the time of its old single-stream pipe (which did not count \
         rows either).\n",
        num(drill / pipe, 2)
    );
}

pub const METHOD: &str = "- **Restore**: one daemon with a backup job at its defaults (custom, \
zstd, verify = \"checksum\") takes one backup, and `pg_dump -Fc -f FILE` makes the plain \
archive (neither timed). Each round times, in an order reversed every other round: `createdb` \
+ `pg_restore -j2 --no-owner` of the plain archive; `atprectl restore ID --to DB --yes` \
(unpack into restore-scratch-dir, `pg_restore -j 2`, every table's row count checked, rename); \
the same with `--jobs 1`; `atprectl backups verify ID --level restore` (the drill on restore's \
path, scratch database created, counted and dropped); and `createdb` + `zstd -dc FILE | \
pg_restore -d`, the single stream drills took before. After each, the restored database is \
dropped, then `CHECKPOINT` and `sync` (not timed). Scratch space is the size of `zstd -dc` of \
the dump, which is what restore unpacks.
";
