//! Group "offsite": atpred's upload of a verified, encrypted backup to an S3-compatible server
//! (the throw-away Garage that `benches/run` starts on loopback) against a plain
//! `aws s3 cp` of the very same file to the same server, in the same round (atpred, then aws).
//!
//! atpred's figures come from the run record (`atprectl --json run JOB --wait`, last line,
//! `.run.details.offsite[0]`): `upload_ms` (every file of the backup, multipart), `verify_ms`
//! (read back and hashed, then SHA256SUMS and the manifest put) and `bytes`. aws is timed
//! wall-clock from spawn to exit, Python start-up included (shown on its own as well).

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

/// The server and key `benches/run` created (`--s3-endpoint`, `--s3-bucket`,
/// `--s3-credentials`, `--aws`).
pub struct S3 {
    pub endpoint: String,
    pub bucket: String,
    /// AWS shared-credentials format, mode 0600.
    pub credentials: PathBuf,
    /// The aws CLI (the real script, not pyenv's shim).
    pub aws: PathBuf,
}

const REGION: &str = "garage";
const MIB: f64 = 1024.0 * 1024.0;

/// One round: atpred's copy and aws's copy of the same file.
struct Round {
    bytes: u64,
    upload_s: f64,
    verify_s: f64,
    aws_s: f64,
}

pub struct Rows {
    rounds: Vec<Round>,
    /// `aws --version`, wall-clock seconds, one per round.
    aws_start: Vec<f64>,
    load: (String, String),
}

pub fn run(env: &Env) -> Result<Rows> {
    let s3 = env
        .s3
        .as_ref()
        .context("the offsite group needs --s3-endpoint, --s3-bucket, --s3-credentials and --aws (run it through benches/run)")?;
    let keys = Keys::read(&s3.credentials)?;
    let dir = env.work.join("offsite");
    let _ = fs::remove_dir_all(&dir);
    let recipient = age::x25519::Identity::generate().to_public().to_string();
    let jobs = format!(
        "[jobs.ship]\nkind = \"backup\"\nverify = \"checksum\"\nencrypt-to = [{recipient:?}]\n\
         offsite = \"s3\"\n\n[offsite.s3]\nendpoint = {:?}\nregion = \"{REGION}\"\n\
         bucket = {:?}\nprefix = \"bench/atpred\"\npath-style = true\ncredentials-file = {:?}\n",
        s3.endpoint,
        s3.bucket,
        s3.credentials.display().to_string()
    );
    daemon::write_config(env, &dir, &jobs)?;
    let load_start = crate::loadavg();
    eprintln!("  warm-up: one round of both (not counted)");
    round(env, s3, &keys, &dir, 0)?;
    let mut rows = Rows {
        rounds: Vec::new(),
        aws_start: Vec::new(),
        load: (load_start, String::new()),
    };
    for n in 1..=env.runs {
        let r = round(env, s3, &keys, &dir, n).with_context(|| format!("round {n}"))?;
        eprintln!(
            "  round {n}/{}: {:.1} MiB; atpred upload {:.2} s, read-back {:.2} s; aws s3 cp {:.2} s",
            env.runs,
            r.bytes as f64 / MIB,
            r.upload_s,
            r.verify_s,
            r.aws_s
        );
        rows.rounds.push(r);
        let t0 = Instant::now();
        run_ok(aws(s3, &keys).arg("--version"))?;
        rows.aws_start.push(t0.elapsed().as_secs_f64());
    }
    rows.load.1 = crate::loadavg();
    Ok(rows)
}

/// A backup with its offsite copy, then `aws s3 cp` of its dump; removes both copies and the
/// local backup afterwards (not timed), so every round starts from the same empty bucket.
fn round(env: &Env, s3: &S3, keys: &Keys, dir: &Path, n: usize) -> Result<Round> {
    let (daemon, _) = Daemon::start(env, dir)?;
    let out = Command::new(env.bin.join("atprectl"))
        .args(["--json", "run", "ship", "--wait"])
        .env("ATPRED_SOCKET", &daemon.socket)
        .stdin(Stdio::null())
        .output()
        .context("run atprectl")?;
    daemon.stop()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "atprectl run ship --wait exited with {}: {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let last = stdout.lines().last().unwrap_or_default();
    let record: serde_json::Value =
        serde_json::from_str(last).with_context(|| format!("the run record: {last}"))?;
    let copy = &record["run"]["details"]["offsite"][0];
    if copy["stage"] != "verified" {
        bail!("the offsite copy is not verified: {copy}");
    }
    let field = |name: &str| {
        copy[name]
            .as_u64()
            .with_context(|| format!("no {name} in the run record's offsite copy: {copy}"))
    };
    let id = copy["id"].as_str().context("no id in the offsite copy")?;
    let (bytes, upload_ms, verify_ms) = (field("bytes")?, field("upload_ms")?, field("verify_ms")?);
    let backup = dir.join("backups").join(id);
    let file = backup.join("database.backup.age");
    let size = fs::metadata(&file)
        .with_context(|| format!("stat {}", file.display()))?
        .len();
    if size != bytes {
        bail!(
            "{} has {size} bytes, the run record says {bytes}",
            file.display()
        );
    }
    let t0 = Instant::now();
    run_ok(
        aws(s3, keys)
            .args(["s3", "cp", "--only-show-errors"])
            .arg(&file)
            .arg(format!("s3://{}/bench/aws/{n}", s3.bucket)),
    )?;
    let aws_s = t0.elapsed().as_secs_f64();
    for prefix in ["bench/aws/", "bench/atpred/"] {
        run_ok(
            aws(s3, keys)
                .args(["s3", "rm", "--recursive", "--only-show-errors"])
                .arg(format!("s3://{}/{prefix}", s3.bucket)),
        )?;
    }
    fs::remove_dir_all(&backup)?;
    Ok(Round {
        bytes,
        upload_s: upload_ms as f64 / 1000.0,
        verify_s: verify_ms as f64 / 1000.0,
        aws_s,
    })
}

/// The key pair, for aws's environment (no profile or config file of this machine is read).
struct Keys {
    id: String,
    secret: String,
}

impl Keys {
    fn read(path: &Path) -> Result<Keys> {
        let text = fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let value = |key: &str| {
            text.lines()
                .find_map(|l| {
                    let (k, v) = l.split_once('=')?;
                    (k.trim() == key).then(|| v.trim().to_owned())
                })
                .with_context(|| format!("no {key} in {}", path.display()))
        };
        Ok(Keys {
            id: value("aws_access_key_id")?,
            secret: value("aws_secret_access_key")?,
        })
    }
}

fn aws(s3: &S3, keys: &Keys) -> Command {
    let mut cmd = Command::new(&s3.aws);
    cmd.args(["--endpoint-url", &s3.endpoint, "--region", REGION])
        .env("AWS_ACCESS_KEY_ID", &keys.id)
        .env("AWS_SECRET_ACCESS_KEY", &keys.secret)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .stdin(Stdio::null());
    cmd
}

/// The Markdown section.
pub fn table(out: &mut String, rows: &Rows) {
    let r = &rows.rounds;
    let series = |f: fn(&Round) -> f64| -> Vec<f64> { r.iter().map(f).collect() };
    let mib = median(&series(|x| x.bytes as f64)) / MIB;
    let aws = series(|x| x.aws_s);
    let upload = series(|x| x.upload_s);
    let verify = series(|x| x.verify_s);
    let whole = series(|x| x.upload_s + x.verify_s);
    let ratio = median(&upload) / median(&aws);
    let per_round: Vec<f64> = r.iter().map(|x| x.upload_s / x.aws_s).collect();
    // aws's transfer alone: its time less `aws --version` measured right after, same round.
    let aws_net: Vec<f64> = r
        .iter()
        .zip(&rows.aws_start)
        .map(|(x, start)| x.aws_s - start)
        .collect();
    let _ = writeln!(out, "## Offsite upload (group \"offsite\")\n");
    let _ = writeln!(
        out,
        "One backup's dump (`database.backup.age`: zstd + age, {} MiB) to a one-node Garage on \
         loopback, over plain HTTP; atpred and `aws s3 cp` copy the same file in every round.\n",
        num(mib, 1)
    );
    let _ = writeln!(
        out,
        "| what | MiB/s | s | min – max s | ratio to aws s3 cp | every run (s) | aim |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | --- | --- |");
    let mut row = |label: &str, secs: &[f64], ratio: &str, aim: &str| {
        let (med, range) = cells(secs, 2);
        let _ = writeln!(
            out,
            "| {label} | {} | {med} | {range} | {} | {} | {aim} |",
            num(mib / median(secs), 1),
            ratio,
            list(secs, 2)
        );
    };
    row(
        "`aws s3 cp FILE s3://…` (its defaults: 8 MiB parts, 10 in flight)",
        &aws,
        "baseline",
        "",
    );
    row(
        "atpred upload (`upload_ms`; part-size 16 MiB, concurrency 4)",
        &upload,
        &format!("{}×", num(ratio, 2)),
        &format!("≤ 1.1×: {}", verdict(ratio <= 1.1)),
    );
    row(
        "atpred read-back + manifest (`verify_ms`)",
        &verify,
        "–",
        "",
    );
    row(
        "atpred whole copy (upload + read-back)",
        &whole,
        &format!("{}×", num(median(&whole) / median(&aws), 2)),
        "",
    );
    let _ = writeln!(
        out,
        "\n- atpred upload against aws s3 cp in the same round: {}× (median of {}); lower is \
         better.",
        num(median(&per_round), 2),
        list(&per_round, 2)
    );
    let _ = writeln!(
        out,
        "- aws's times include its start-up: `aws --version` alone takes {} s (median; {}). \
         Less that, aws's transfer takes {} s ({} MiB/s), and atpred's upload is {}× of it.",
        num(median(&rows.aws_start), 2),
        list(&rows.aws_start, 2),
        num(median(&aws_net), 2),
        num(mib / median(&aws_net), 1),
        num(median(&upload) / median(&aws_net), 2)
    );
    let _ = writeln!(
        out,
        "- load average (1/5/15 min) at the start of the group: {}; at its end: {}.\n",
        rows.load.0, rows.load.1
    );
}

/// Its bullet of "How it is measured".
pub const METHOD: &str =
    "- **Offsite**: `benches/run` starts a one-node Garage (v2.5, sqlite metadata) on
  loopback with one bucket and key. Each round starts a fresh daemon and runs a backup job
  (zstd, age to one recipient, verify = \"checksum\", `offsite = \"s3\"` with the default
  part-size 16 MiB and concurrency 4) with `atprectl --json run JOB --wait`; its figures are
  the run record's `upload_ms` and `verify_ms`. Then, with the daemon stopped, `aws s3 cp` of
  that backup's `database.backup.age` to the same bucket (its defaults; keys in its
  environment, no config file), timed from spawn to exit. Both copies and the local backup are
  removed after each round (not timed); one uncounted warm-up round first.
";
