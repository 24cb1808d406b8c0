//! Issue "rotate": rotating and compressing a 1 GiB access log, atpred (zstd) against
//! `logrotate -f` with `compresscmd zstd` and with its default gzip, in the same rounds, the order
//! reversed every other round. Every case starts from a fresh copy of the same log (copied and
//! synced, not timed) and ends with its output on disk (atpred fsyncs; logrotate is followed by
//! `sync` of its output, timed).

use std::fmt::Write as _;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rand::{Rng, SeedableRng};

use crate::Env;
use crate::daemon::{self, Daemon};
use crate::stats::{median, min_max, num};

const LOG_BYTES: u64 = 1 << 30;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    Atpred,
    LogrotateZstd,
    LogrotateGzip,
}

const CASES: &[(Case, &str)] = &[
    (
        Case::Atpred,
        "atpred, compress = \"zstd\" (level 3, 2 threads)",
    ),
    (
        Case::LogrotateZstd,
        "`logrotate -f`, `compresscmd zstd`, `-3 -T2`",
    ),
    (Case::LogrotateGzip, "`logrotate -f`, its default gzip -6"),
];

/// Times and output sizes of each case, per round.
pub struct Rows {
    samples: Vec<Vec<(f64, u64)>>,
}

pub fn run(env: &Env) -> Result<Rows> {
    let logrotate = which("logrotate")
        .context("logrotate is needed: apt-get install logrotate (see .ci/deps)")?;
    let zstd = which("zstd").context("zstd is needed: apt-get install zstd")?;
    let root = env.work.join("rotate");
    let logs = root.join("logs");
    fs::create_dir_all(&logs)?;
    let master = root.join("access.log.master");
    eprintln!("  writing a 1 GiB access log");
    generate(&master)?;
    let log = logs.join("access.log");
    let jobs = format!(
        "[jobs.rot]\nkind = \"rotate\"\npaths = [{:?}]\nmax-size = \"1GiB\"\nreopen-command = [\"true\"]\ncompress = \"zstd\"\ncompress-level = 3\nkeep = 5\n",
        log.display().to_string()
    );
    let dir = root.join("daemon");
    daemon::write_config(env, &dir, &jobs)?;
    let lr = |compress: &str| -> Result<PathBuf> {
        let conf = root.join(format!("logrotate-{compress}.conf"));
        let extra = if compress == "zstd" {
            format!(
                "  compresscmd {}\n  uncompresscmd {}\n  compressext .zst\n  compressoptions -3 -T2 -q\n",
                zstd.display(),
                zstd.display()
            )
        } else {
            String::new()
        };
        fs::write(
            &conf,
            format!(
                "{} {{\n  rotate 5\n  compress\n  nodelaycompress\n  create\n{extra}}}\n",
                log.display()
            ),
        )?;
        Ok(conf)
    };
    let confs = [lr("zstd")?, lr("gzip")?];
    let measure = |case: Case| -> Result<(f64, u64)> {
        clear(&logs)?;
        fs::copy(&master, &log)?;
        run_ok(&mut Command::new("sync"))?;
        let t0;
        match case {
            Case::Atpred => {
                let (d, _) = Daemon::start(env, &dir)?;
                t0 = Instant::now();
                run_ok(
                    Command::new(env.bin.join("atprectl"))
                        .args(["run", "rot", "--wait", "--force"])
                        .env("ATPRED_SOCKET", &d.socket),
                )?;
                let secs = t0.elapsed().as_secs_f64();
                d.stop()?;
                return Ok((secs, output_size(&logs)?));
            }
            Case::LogrotateZstd | Case::LogrotateGzip => {
                let conf = if case == Case::LogrotateZstd {
                    &confs[0]
                } else {
                    &confs[1]
                };
                let state = root.join("logrotate.state");
                let _ = fs::remove_file(&state);
                t0 = Instant::now();
                run_ok(
                    Command::new(&logrotate)
                        .arg("-f")
                        .arg("-s")
                        .arg(&state)
                        .arg(conf),
                )?;
                let outputs = compressed(&logs)?;
                run_ok(Command::new("sync").args(&outputs))?;
            }
        }
        Ok((t0.elapsed().as_secs_f64(), output_size(&logs)?))
    };
    eprintln!("  warm-up: atpred (not counted)");
    measure(Case::Atpred)?;
    let mut samples = vec![Vec::new(); CASES.len()];
    for round in 0..env.runs {
        let mut order: Vec<usize> = (0..CASES.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let s = measure(CASES[i].0)?;
            eprintln!(
                "  round {}/{}: {:.2} s, {:.1} MiB  {}",
                round + 1,
                env.runs,
                s.0,
                s.1 as f64 / 1048576.0,
                CASES[i].1
            );
            samples[i].push(s);
        }
    }
    clear(&logs)?;
    let _ = fs::remove_file(&master);
    Ok(Rows { samples })
}

/// An nginx-style access log of [`LOG_BYTES`], the same every time (fixed seed).
fn generate(path: &Path) -> Result<()> {
    const PATHS: &[&str] = &[
        "/api/v1/items",
        "/api/v1/users",
        "/api/v1/search",
        "/api/v1/orders",
        "/static/app.js",
        "/static/app.css",
        "/health",
        "/api/v1/reports/daily",
    ];
    const AGENTS: &[&str] = &[
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
        "curl/8.5.0",
        "python-requests/2.31.0",
        "atpre-mobile/4.2.1 (Android 14)",
    ];
    const STATUS: &[u16] = &[200, 200, 200, 200, 201, 204, 301, 304, 400, 404, 500];
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261128);
    let mut out = BufWriter::with_capacity(1 << 20, fs::File::create(path)?);
    let mut written = 0u64;
    let mut t = 1_795_000_000u64;
    let mut line = String::with_capacity(400);
    while written < LOG_BYTES {
        t += rng.random_range(0..2);
        line.clear();
        let _ = writeln!(
            line,
            "10.{}.{}.{} - - [{}] \"{} {}/{}?page={}&q={:x} HTTP/1.1\" {} {} \"-\" \"{}\" rt={:.3} req={:016x}",
            rng.random_range(0..4),
            rng.random_range(0..256),
            rng.random_range(1..255),
            chrono::DateTime::from_timestamp(t as i64, 0)
                .unwrap_or_default()
                .format("%d/%b/%Y:%H:%M:%S +0000"),
            if rng.random_bool(0.8) { "GET" } else { "POST" },
            PATHS[rng.random_range(0..PATHS.len())],
            rng.random_range(1..100_000),
            rng.random_range(1..20),
            rng.random::<u32>() & 0xffff,
            STATUS[rng.random_range(0..STATUS.len())],
            rng.random_range(0..60_000),
            AGENTS[rng.random_range(0..AGENTS.len())],
            rng.random_range(0.0..2.0f64),
            rng.random::<u64>(),
        );
        out.write_all(line.as_bytes())?;
        written += line.len() as u64;
    }
    out.flush()?;
    Ok(())
}

fn which(name: &str) -> Result<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(name))
        .chain([PathBuf::from("/usr/sbin").join(name)])
        .find(|p| p.is_file())
        .with_context(|| format!("{name} not found"))
}

fn run_ok(cmd: &mut Command) -> Result<()> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn clear(dir: &Path) -> Result<()> {
    for e in fs::read_dir(dir)? {
        fs::remove_file(e?.path())?;
    }
    Ok(())
}

fn compressed(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        let name = p.to_string_lossy();
        if name.ends_with(".zst") || name.ends_with(".gz") {
            v.push(p);
        }
    }
    if v.is_empty() {
        bail!("no compressed output in {}", dir.display());
    }
    Ok(v)
}

fn output_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for p in compressed(dir)? {
        total += fs::metadata(p)?.len();
    }
    Ok(total)
}

/// The Markdown section.
pub fn table(out: &mut String, rows: &Rows) {
    let _ = writeln!(out, "## Log rotation (issue \"rotate\")\n");
    let _ = writeln!(
        out,
        "Rotating and compressing a 1 GiB nginx-style access log (method create, then compress).\n"
    );
    let _ = writeln!(
        out,
        "| what | wall s | min – max | ratio to logrotate+zstd | output MiB | every run (s) | aim |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | --- | --- |");
    let secs = |i: usize| -> Vec<f64> { rows.samples[i].iter().map(|s| s.0).collect() };
    let base = median(&secs(1));
    let atpred = median(&secs(0));
    for (i, (case, label)) in CASES.iter().enumerate() {
        let s = secs(i);
        let (lo, hi) = min_max(&s);
        let mib: Vec<f64> = rows.samples[i]
            .iter()
            .map(|s| s.1 as f64 / 1048576.0)
            .collect();
        let every: Vec<String> = s.iter().map(|x| num(*x, 2)).collect();
        let aim = match case {
            Case::Atpred => format!(
                "≤ 1.1× logrotate+zstd: {}; ≥ 3× faster than logrotate+gzip: {}",
                verdict(atpred <= 1.1 * base),
                verdict(median(&secs(2)) >= 3.0 * atpred)
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "| {label} | {} | {} – {} | {}× | {} | {} | {aim} |",
            num(median(&s), 2),
            num(lo, 2),
            num(hi, 2),
            num(median(&s) / base, 2),
            num(median(&mib), 1),
            every.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "\n- atpred against logrotate+gzip: {}× faster.\n",
        num(median(&secs(2)) / atpred, 1)
    );
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}
