//! atpred's benchmark suite, driven by `benches/run` (which builds the release binaries,
//! starts a throw-away PostgreSQL and loads the database). This binary measures and prints a
//! Markdown report to stdout (progress goes to stderr) and writes it to `--out`.
//!
//! Every process it starts is in its process group, which `benches/run` kills on exit.

mod backup;
mod core_figures;
mod daemon;
mod files;
mod health;
mod offsite;
mod redis;
mod report;
mod restore;
mod retention;
mod rotate;
mod stats;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

/// What the driver script tells us.
pub struct Env {
    /// Where `atpred` and `atprectl` are (target/release).
    pub bin: PathBuf,
    /// A scratch directory for daemons and dumps.
    pub work: PathBuf,
    pub pg_host: PathBuf,
    pub pg_bin: PathBuf,
    pub pg_user: String,
    pub db: String,
    pub passfile: PathBuf,
    pub runs: usize,
    pub idle_secs: u64,
    /// Shown in the report.
    pub command: String,
    pub commit: String,
    pub load_note: String,
    pub only: Option<String>,
    pub out: Option<PathBuf>,
    /// The S3-compatible server of the offsite group (all four `--s3-*`/`--aws` arguments).
    pub s3: Option<offsite::S3>,
    /// The redis-server of the redis group (`--redis-socket`, `--redis-password-file`).
    pub redis: Option<redis::RedisServer>,
}

fn parse_args() -> Result<Env> {
    let mut env = Env {
        bin: PathBuf::from("target/release"),
        work: PathBuf::new(),
        pg_host: PathBuf::new(),
        pg_bin: PathBuf::new(),
        pg_user: "atp_user".into(),
        db: "atp_re".into(),
        passfile: PathBuf::new(),
        runs: 3,
        idle_secs: 60,
        command: "bash benches/run".into(),
        commit: String::new(),
        load_note: String::new(),
        only: None,
        out: None,
        s3: None,
        redis: None,
    };
    let mut redis = [None, None];
    let mut s3 = [None, None, None, None];
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--bench" {
            continue; // added by `cargo bench`
        }
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--bin" => env.bin = value.into(),
            "--work" => env.work = value.into(),
            "--pg-host" => env.pg_host = value.into(),
            "--pg-bin" => env.pg_bin = value.into(),
            "--pg-user" => env.pg_user = value,
            "--db" => env.db = value,
            "--passfile" => env.passfile = value.into(),
            "--runs" => env.runs = value.parse().context("--runs")?,
            "--idle-secs" => env.idle_secs = value.parse().context("--idle-secs")?,
            "--command" => env.command = value,
            "--commit" => env.commit = value,
            "--load-note" => env.load_note = value,
            "--only" => env.only = Some(value),
            "--out" => env.out = Some(value.into()),
            "--s3-endpoint" => s3[0] = Some(value),
            "--s3-bucket" => s3[1] = Some(value),
            "--s3-credentials" => s3[2] = Some(value),
            "--aws" => s3[3] = Some(value),
            "--redis-socket" => redis[0] = Some(value),
            "--redis-password-file" => redis[1] = Some(value),
            other => bail!("unknown argument {other}"),
        }
    }
    if env.work.as_os_str().is_empty() || env.pg_host.as_os_str().is_empty() {
        bail!("--work and --pg-host are required (run it through benches/run)");
    }
    if let [Some(endpoint), Some(bucket), Some(credentials), Some(aws)] = s3 {
        env.s3 = Some(offsite::S3 {
            endpoint,
            bucket,
            credentials: credentials.into(),
            aws: aws.into(),
        });
    }
    if let [Some(socket), Some(password_file)] = redis {
        env.redis = Some(redis::RedisServer {
            socket: socket.into(),
            password_file: password_file.into(),
        });
    }
    if env.runs < 3 {
        bail!("--runs must be at least 3 (the report gives medians)");
    }
    Ok(env)
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("atpred_bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let env = parse_args()?;
    let load_start = loadavg();
    let machine = machine(&env)?;
    eprint!("{machine}");
    if env.only.as_deref() == Some("growth") {
        // One row of the growth series; benches/run loops over the scales and adds the header.
        let rows = backup::growth(&env)?;
        let size = psql(
            &env,
            "SELECT pg_size_pretty(pg_database_size(current_database()))",
        )?;
        let mut out = String::new();
        report::growth_row(&mut out, &env.load_note, &size, &rows);
        print!("{out}");
        return Ok(());
    }
    let wanted = |part: &str| env.only.as_deref().is_none_or(|o| o == part);
    let core = if wanted("core") {
        eprintln!("daemon (core): READY, idle, status load");
        Some(core_figures::run(&env)?)
    } else {
        None
    };
    let rows = if wanted("backups") {
        eprintln!("backups: {} rounds", env.runs);
        backup::run(&env)?
    } else {
        Vec::new()
    };
    let rotation = if wanted("rotate") {
        eprintln!("rotate: {} rounds", env.runs);
        Some(rotate::run(&env)?)
    } else {
        None
    };
    let retention = if wanted("retention") {
        eprintln!("retention: {} rounds", env.runs);
        Some(retention::run(&env)?)
    } else {
        None
    };
    let health = if wanted("health") {
        eprintln!("health: {} rounds", env.runs);
        Some(health::run(&env)?)
    } else {
        None
    };
    let offsite = if wanted("offsite") {
        eprintln!("offsite: {} rounds", env.runs);
        Some(offsite::run(&env)?)
    } else {
        None
    };
    let redis = if wanted("redis") && env.redis.is_some() {
        eprintln!("redis: {} rounds", env.runs);
        Some(redis::run(&env)?)
    } else {
        None
    };
    let files = if wanted("files") {
        eprintln!("files: {} rounds", env.runs);
        Some(files::run(&env)?)
    } else {
        None
    };
    let restores = if wanted("restore") {
        eprintln!("restore: {} rounds", env.runs);
        Some(restore::run(&env)?)
    } else {
        None
    };
    let mut out = String::new();
    let _ = writeln!(out, "# atpred benchmarks\n");
    let _ = writeln!(
        out,
        "Written by `{}` on {} (commit {}). Medians of {} runs unless a row says otherwise; \
         every value is in its table's \"every run\" column or under [Every run](#every-run).\n",
        env.command,
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        env.commit,
        env.runs
    );
    out.push_str(&machine);
    let _ = writeln!(
        out,
        "- load average (1/5/15 min) at start: {load_start}; at end: {}\n",
        loadavg()
    );
    if let Some(c) = &core {
        report::core_table(&mut out, c, env.runs, env.idle_secs);
    }
    if !rows.is_empty() {
        report::backup_table(&mut out, &rows);
    }
    if let Some(r) = &rotation {
        rotate::table(&mut out, r);
    }
    if let Some(r) = &retention {
        retention::table(&mut out, r);
    }
    if let Some(h) = &health {
        health::table(&mut out, h, env.runs);
    }
    if let Some(o) = &offsite {
        offsite::table(&mut out, o);
    }
    if let Some(r) = &restores {
        restore::table(&mut out, r);
    }
    if let Some(r) = &redis {
        redis::table(&mut out, r);
    }
    if let Some(f) = &files {
        files::table(&mut out, f);
    }
    report::every_run(&mut out, core.as_ref(), &rows);
    out.push_str(METHOD);
    out.push_str(offsite::METHOD);
    out.push_str(restore::METHOD);
    out.push_str(redis::METHOD);
    out.push_str(files::METHOD);
    print!("{out}");
    if let Some(path) = &env.out {
        std::fs::write(path, &out).with_context(|| format!("write {}", path.display()))?;
        eprintln!("written to {}", path.display());
    }
    Ok(())
}

/// The machine and the database, as a Markdown list.
fn machine(env: &Env) -> Result<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown".into(), |(_, m)| m.trim().to_owned());
    let mem_kib = crate::daemon::status_kib_in("/proc/meminfo", "MemTotal").unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let version = psql(env, "SHOW server_version")?;
    let fsync = psql(env, "SHOW fsync")?;
    let size = psql(
        env,
        "SELECT pg_size_pretty(pg_database_size(current_database()))",
    )?;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "- machine: {nproc} CPUs ({model}), {:.1} GiB RAM, Linux {}",
        mem_kib as f64 / (1024.0 * 1024.0),
        kernel.trim()
    );
    let _ = writeln!(
        s,
        "- PostgreSQL {version} on a unix socket, fsync = {fsync}, as a throw-away cluster in {}",
        env.work.display()
    );
    let _ = writeln!(s, "- database: {} of {size}{}", env.db, env.load_note);
    Ok(s)
}

pub fn psql(env: &Env, query: &str) -> Result<String> {
    let out = Command::new(env.pg_bin.join("psql"))
        .arg("--host")
        .arg(&env.pg_host)
        .args(["--username", &env.pg_user, "--no-password", "-tAc", query])
        .arg(&env.db)
        .env("PGPASSFILE", &env.passfile)
        .output()
        .context("run psql")?;
    if !out.status.success() {
        bail!("psql: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" / ")
}

const METHOD: &str = "## How it is measured

- **Idle**: daemons started with four command jobs whose next runs are months away and one
  `every 10s` job running `/bin/true`; the idle daemons run side by side, one per run. CPU is
  utime+stime of the daemon from /proc/PID/stat over the window that starts at READY=1
  (children's time not included; counted in 10 ms clock ticks, so an idle daemon often shows
  0), and the exact on-CPU time of its live threads from /proc/PID/task/*/schedstat; VmRSS
  and VmHWM from /proc/PID/status at the end of the window.
- **READY**: wall time from just before spawn to the arrival of the `READY=1` datagram on a
  unix datagram socket the bench binds and passes as `NOTIFY_SOCKET`; ten starts in a row on
  the same state directory, each stopped with SIGTERM before the next.
- **status**: 100 tokio tasks on one thread of the bench process (sharing the CPUs with the
  daemon), each with its own connection and `hello`; the clock runs from when all are connected until the
  last of their 200 sequential `status` requests is answered. Latency is per request, at the
  client, including JSON decoding; after one uncounted warm-up round.
- **Backups**: each atpred row starts a fresh daemon (so VmHWM is that run's peak, start-up
  included), times `atprectl run JOB --wait` from spawn to exit, then stops the daemon and
  removes the published backup. pg_dump rows time `pg_dump` and then `sync` of what it wrote
  (atpred fsyncs its files too). All rows of a round run one after the other, each after a
  `CHECKPOINT` and a `sync` (not timed); the order is reversed every other round, after one
  uncounted warm-up dump. `dump MiB` is the dump itself
  (`database.backup*`), without manifest and SHA256SUMS.
- **Log rotation**: every case starts from a fresh copy of the same generated 1 GiB log
  (copied and `sync`ed, not timed). atpred: a daemon already started, timed from
  `atprectl run JOB --wait --force` to its exit (rename, fresh log, reopen command `true`,
  zstd into a temp file, fsync, rename, remove). logrotate: `logrotate -f` with create and
  compress, then `sync` of the compressed file. The order is reversed every other round,
  after one uncounted warm-up of atpred.
- **Health**: one daemon with a health job (postgres, disk, backup-freshness, jobs), a backup
  and a command job, and `[metrics] listen` on loopback. Each round makes 20 `health --now`
  requests (each runs the job and waits for it) and 20 `metrics` requests over one control
  connection, timed at the client, then 10 tokio tasks scrape `GET /metrics` 50 times each
  with reqwest, timed from the first request to the last answer; after one uncounted run.
";
