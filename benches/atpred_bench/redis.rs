//! Group "redis": atpred's Redis backup (the RDB over the replication protocol, zstd, SHA-256,
//! fsync) against `redis-cli --rdb FILE` followed by `zstd -T2 -3` of the file and `sync`, on the
//! dataset `benches/run` loaded into a throw-away redis-server (about 1 GiB of RDB).
//!
//! atpred is timed from `atprectl run JOB --wait` to its exit with verify = "checksum" (the
//! re-read of what it wrote, its cheapest verification); the run record's `duration_ms` is the
//! transfer alone. verify = "full" (redis-check-rdb reads the decoded RDB) is a row of its own.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::Env;
use crate::backup::run_ok;
use crate::daemon::{self, Daemon};
use crate::stats::{cells, list, median, num, verdict};

const MIB: f64 = 1024.0 * 1024.0;

/// The server `benches/run` started (`--redis-socket`, `--redis-password-file`).
pub struct RedisServer {
    pub socket: PathBuf,
    pub password_file: PathBuf,
}

struct Round {
    rdb_bytes: u64,
    zst_bytes: u64,
    /// atpred with verify = "checksum", wall clock.
    atpred_s: f64,
    /// Its run record's `duration_ms`: the transfer into the compressed file.
    transfer_s: f64,
    /// atpred with verify = "full", wall clock.
    full_s: f64,
    /// redis-cli --rdb, then zstd and sync.
    cli_s: f64,
    zstd_s: f64,
}

pub struct Rows {
    rounds: Vec<Round>,
    load: (String, String),
}

pub fn run(env: &Env) -> Result<Rows> {
    let redis = env
        .redis
        .as_ref()
        .context("the redis group needs --redis-socket and --redis-password-file (run it through benches/run)")?;
    let dir = env.work.join("redis-bench");
    let _ = fs::remove_dir_all(&dir);
    let url = format!("redis+unix://{}", redis.socket.display());
    let jobs = format!(
        "[redis]\nurl = {url:?}\npassword-file = {:?}\n\n\
         [jobs.cache]\nkind = \"backup\"\nsource = \"redis\"\nverify = \"checksum\"\n\n\
         [jobs.cache-full]\nkind = \"backup\"\nsource = \"redis\"\nverify = \"full\"\n",
        redis.password_file.display().to_string()
    );
    daemon::write_config(env, &dir, &jobs)?;
    let load_start = crate::loadavg();
    eprintln!("  warm-up: one round of both (not counted)");
    round(env, redis, &dir, false)?;
    let mut rows = Rows {
        rounds: Vec::new(),
        load: (load_start, String::new()),
    };
    for n in 1..=env.runs {
        let r = round(env, redis, &dir, n % 2 == 0).with_context(|| format!("round {n}"))?;
        eprintln!(
            "  round {n}/{}: RDB {:.1} MiB -> {:.1} MiB; atpred {:.2} s (transfer {:.2} s), \
             verify full {:.2} s; redis-cli --rdb {:.2} s + zstd {:.2} s",
            env.runs,
            r.rdb_bytes as f64 / MIB,
            r.zst_bytes as f64 / MIB,
            r.atpred_s,
            r.transfer_s,
            r.full_s,
            r.cli_s,
            r.zstd_s
        );
        rows.rounds.push(r);
    }
    rows.load.1 = crate::loadavg();
    Ok(rows)
}

fn round(env: &Env, redis: &RedisServer, dir: &Path, cli_first: bool) -> Result<Round> {
    let mut cli = (0.0, 0.0, 0);
    if cli_first {
        cli = redis_cli(redis, dir)?;
    }
    let (atpred_s, record) = atpred(env, dir, "cache")?;
    let (full_s, full) = atpred(env, dir, "cache-full")?;
    if full["details"]["verify"]["outcome"] != "passed" {
        bail!("verify full did not pass: {full}");
    }
    if !cli_first {
        cli = redis_cli(redis, dir)?;
    }
    let d = &record["details"];
    let field = |name: &str| {
        d[name]
            .as_u64()
            .with_context(|| format!("no {name} in the run record: {record}"))
    };
    Ok(Round {
        rdb_bytes: field("rdb_bytes")?,
        zst_bytes: field("bytes")?,
        atpred_s,
        transfer_s: field("duration_ms")? as f64 / 1000.0,
        full_s,
        cli_s: cli.0,
        zstd_s: cli.1,
    })
}

/// One run of `job` in a fresh daemon: wall seconds and its run record; the backup is removed.
pub(crate) fn atpred(env: &Env, dir: &Path, job: &str) -> Result<(f64, serde_json::Value)> {
    let (daemon, _) = Daemon::start(env, dir)?;
    let t0 = Instant::now();
    let out = Command::new(env.bin.join("atprectl"))
        .args(["--json", "run", job, "--wait"])
        .env("ATPRED_SOCKET", &daemon.socket)
        .stdin(Stdio::null())
        .output()
        .context("run atprectl")?;
    let secs = t0.elapsed().as_secs_f64();
    daemon.stop()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "atprectl run {job} --wait exited with {}: {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let last = stdout.lines().last().unwrap_or_default();
    let record: serde_json::Value =
        serde_json::from_str(last).with_context(|| format!("the run record: {last}"))?;
    let run = record["run"].clone();
    let id = run["details"]["id"].as_str().context("no id")?;
    fs::remove_dir_all(dir.join("backups").join(id))?;
    Ok((secs, run))
}

/// `redis-cli --rdb FILE`, then `zstd -T2 -3 FILE` and `sync`: (cli s, zstd + sync s, bytes).
fn redis_cli(redis: &RedisServer, dir: &Path) -> Result<(f64, f64, u64)> {
    let rdb = dir.join("cli.rdb");
    let zst = dir.join("cli.rdb.zst");
    let _ = fs::remove_file(&rdb);
    let _ = fs::remove_file(&zst);
    let password = fs::read_to_string(&redis.password_file)?;
    let t0 = Instant::now();
    run_ok(
        Command::new("redis-cli")
            .arg("-s")
            .arg(&redis.socket)
            .env("REDISCLI_AUTH", password.trim())
            .arg("--rdb")
            .arg(&rdb)
            .stdin(Stdio::null()),
    )?;
    let cli_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    run_ok(
        Command::new("zstd")
            .args(["-q", "-T2", "-3", "-o"])
            .arg(&zst)
            .arg(&rdb),
    )?;
    run_ok(Command::new("sync").arg(&zst))?;
    let zstd_s = t1.elapsed().as_secs_f64();
    let bytes = fs::metadata(&zst)?.len();
    fs::remove_file(&rdb)?;
    fs::remove_file(&zst)?;
    Ok((cli_s, zstd_s, bytes))
}

/// The Markdown section.
pub fn table(out: &mut String, rows: &Rows) {
    let r = &rows.rounds;
    let series = |f: fn(&Round) -> f64| -> Vec<f64> { r.iter().map(f).collect() };
    let rdb = median(&series(|x| x.rdb_bytes as f64)) / MIB;
    let zst = median(&series(|x| x.zst_bytes as f64)) / MIB;
    let cli = series(|x| x.cli_s + x.zstd_s);
    let atpred = series(|x| x.atpred_s);
    let ratio = median(&atpred) / median(&cli);
    let _ = writeln!(out, "## Redis backup (group \"redis\")\n");
    let _ = writeln!(
        out,
        "A redis-server with about {} MiB of RDB ({} MiB zstd-compressed by atpred), on a unix \
         socket with requirepass and repl-diskless-sync-delay 0.\n",
        num(rdb, 0),
        num(zst, 0)
    );
    let _ = writeln!(
        out,
        "| what | s | min – max s | ratio | every run (s) | aim |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | --- | --- |");
    let mut row = |label: &str, secs: &[f64], ratio: &str, aim: &str| {
        let (med, range) = cells(secs, 2);
        let _ = writeln!(
            out,
            "| {label} | {med} | {range} | {ratio} | {} | {aim} |",
            list(secs, 2)
        );
    };
    row(
        "`redis-cli --rdb FILE` + `zstd -T2 -3` + `sync`",
        &cli,
        "baseline",
        "",
    );
    row(
        "atpred, verify = \"checksum\" (`atprectl run --wait`)",
        &atpred,
        &format!("{}×", num(ratio, 2)),
        &format!("≤ 1.1×: {}", verdict(ratio <= 1.1)),
    );
    row(
        "atpred's transfer alone (`duration_ms`)",
        &series(|x| x.transfer_s),
        &format!(
            "{}×",
            num(median(&series(|x| x.transfer_s)) / median(&cli), 2)
        ),
        "",
    );
    row(
        "atpred, verify = \"full\" (also redis-check-rdb)",
        &series(|x| x.full_s),
        &format!("{}×", num(median(&series(|x| x.full_s)) / median(&cli), 2)),
        "",
    );
    row("(redis-cli --rdb alone)", &series(|x| x.cli_s), "–", "");
    let _ = writeln!(
        out,
        "\n- load average (1/5/15 min) at the start of the group: {}; at its end: {}.\n",
        rows.load.0, rows.load.1
    );
}

/// Its bullet of "How it is measured".
pub const METHOD: &str =
    "- **Redis**: `benches/run` starts a redis-server (unix socket, requirepass,
  repl-diskless-sync-delay 0 so neither side waits 5 s) and fills it with 1,000,000 keys of
  1,000 hex characters. Each round: atpred in a fresh daemon with verify = \"checksum\" and
  then verify = \"full\", timed from `atprectl run JOB --wait` to its exit, each backup removed
  after (not timed); `redis-cli --rdb FILE` then `zstd -T2 -3` of it and `sync`, timed from
  spawn to exit; the order alternates, after one uncounted warm-up round.
";
