//! Group "files": atpred's files backup (a pax tar of a folder, each file hashed as it is
//! archived, zstd, SHA-256, fsync) against `tar -I 'zstd -T2' -cf FILE` and `sync FILE`, on a
//! tree of about 1 GiB made here: 2,560 text files of 256 KiB (compressible) in 16 folders and
//! three files of 128 MiB from /dev/urandom (not).
//!
//! atpred is timed from `atprectl run JOB --wait` to its exit with verify = "checksum" (the
//! re-read of what it wrote); the run record's `duration_ms` is the archiving alone. verify =
//! "full" (decrypt, decode, parse the tar and compare every entry's SHA-256 with the manifest)
//! is a row of its own.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::Env;
use crate::backup::run_ok;
use crate::daemon;
use crate::redis::atpred;
use crate::stats::{cells, list, median, num, verdict};

const MIB: f64 = 1024.0 * 1024.0;

struct Round {
    tree_bytes: u64,
    zst_bytes: u64,
    atpred_s: f64,
    archive_s: f64,
    full_s: f64,
    tar_s: f64,
}

pub struct Rows {
    rounds: Vec<Round>,
    load: (String, String),
}

pub fn run(env: &Env) -> Result<Rows> {
    let dir = env.work.join("files-bench");
    let _ = fs::remove_dir_all(&dir);
    let tree = env.work.join("files-tree");
    make_tree(&tree)?;
    let jobs = format!(
        "[jobs.files]\nkind = \"backup\"\nsource = \"files\"\npaths = [{t:?}]\nverify = \"checksum\"\n\n\
         [jobs.files-full]\nkind = \"backup\"\nsource = \"files\"\npaths = [{t:?}]\nverify = \"full\"\n",
        t = tree.display().to_string()
    );
    daemon::write_config(env, &dir, &jobs)?;
    let load_start = crate::loadavg();
    eprintln!("  warm-up: one round of both (not counted)");
    round(env, &dir, &tree, false)?;
    let mut rows = Rows {
        rounds: Vec::new(),
        load: (load_start, String::new()),
    };
    for n in 1..=env.runs {
        let r = round(env, &dir, &tree, n % 2 == 0).with_context(|| format!("round {n}"))?;
        eprintln!(
            "  round {n}/{}: tree {:.1} MiB -> {:.1} MiB; atpred {:.2} s (archive {:.2} s), \
             verify full {:.2} s; tar -I 'zstd -T2' {:.2} s",
            env.runs,
            r.tree_bytes as f64 / MIB,
            r.zst_bytes as f64 / MIB,
            r.atpred_s,
            r.archive_s,
            r.full_s,
            r.tar_s
        );
        rows.rounds.push(r);
    }
    rows.load.1 = crate::loadavg();
    let _ = fs::remove_dir_all(&tree);
    Ok(rows)
}

/// The tree (see the module docs), made once.
fn make_tree(tree: &Path) -> Result<()> {
    let _ = fs::remove_dir_all(tree);
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for d in 0..16 {
        let folder = tree.join(format!("d{d:02}"));
        fs::create_dir_all(&folder)?;
        for f in 0..160 {
            let mut text = String::with_capacity(270 * 1024);
            while text.len() < 256 * 1024 {
                // xorshift: varied words, compressible as text is.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let _ = writeln!(
                    text,
                    "{d} {f} user-{} event={} value={} status=ok",
                    state % 5000,
                    state % 97,
                    state % 100_000
                );
            }
            fs::File::create(folder.join(format!("f{f:03}.log")))?.write_all(text.as_bytes())?;
        }
    }
    for n in 0..3 {
        run_ok(Command::new("sh").arg("-c").arg(format!(
            "head -c 128M /dev/urandom > '{}'",
            tree.join(format!("blob{n}.bin")).display()
        )))?;
    }
    run_ok(&mut Command::new("sync"))?;
    Ok(())
}

fn round(env: &Env, dir: &Path, tree: &Path, tar_first: bool) -> Result<Round> {
    let mut tar = (0.0, 0);
    if tar_first {
        tar = gnu_tar(dir, tree)?;
    }
    let (atpred_s, record) = atpred(env, dir, "files")?;
    let (full_s, full) = atpred(env, dir, "files-full")?;
    anyhow::ensure!(
        full["details"]["verify"]["outcome"] == "passed",
        "verify full did not pass: {full}"
    );
    if !tar_first {
        tar = gnu_tar(dir, tree)?;
    }
    let d = &record["details"];
    let field = |name: &str| {
        d[name]
            .as_u64()
            .with_context(|| format!("no {name} in the run record: {record}"))
    };
    Ok(Round {
        tree_bytes: field("file_bytes")?,
        zst_bytes: field("bytes")?,
        atpred_s,
        archive_s: field("duration_ms")? as f64 / 1000.0,
        full_s,
        tar_s: tar.0,
    })
}

/// `tar -I 'zstd -T2' -cf FILE TREE` and `sync FILE`: (seconds, bytes).
fn gnu_tar(dir: &Path, tree: &Path) -> Result<(f64, u64)> {
    let out: PathBuf = dir.join("tar.tar.zst");
    let _ = fs::remove_file(&out);
    let t0 = Instant::now();
    run_ok(
        Command::new("tar")
            .args(["-I", "zstd -T2", "-cf"])
            .arg(&out)
            .arg("-C")
            .arg(tree.parent().context("the tree has a parent")?)
            .arg(tree.file_name().context("the tree has a name")?),
    )?;
    run_ok(Command::new("sync").arg(&out))?;
    let secs = t0.elapsed().as_secs_f64();
    let bytes = fs::metadata(&out)?.len();
    fs::remove_file(&out)?;
    Ok((secs, bytes))
}

/// The Markdown section.
pub fn table(out: &mut String, rows: &Rows) {
    let r = &rows.rounds;
    let series = |f: fn(&Round) -> f64| -> Vec<f64> { r.iter().map(f).collect() };
    let tree = median(&series(|x| x.tree_bytes as f64)) / MIB;
    let zst = median(&series(|x| x.zst_bytes as f64)) / MIB;
    let tar = series(|x| x.tar_s);
    let atpred = series(|x| x.atpred_s);
    let ratio = median(&atpred) / median(&tar);
    let _ = writeln!(out, "## Files backup (group \"files\")\n");
    let _ = writeln!(
        out,
        "A tree of {} MiB (2,560 text files of 256 KiB, three 128 MiB random files), {} MiB \
         once archived and zstd-compressed by atpred.\n",
        num(tree, 0),
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
        "`tar -I 'zstd -T2' -cf FILE` + `sync`",
        &tar,
        "baseline",
        "",
    );
    row(
        "atpred, verify = \"checksum\" (`atprectl run --wait`)",
        &atpred,
        &format!("{}×", num(ratio, 2)),
        &format!("≤ 1.1×: {}", verdict(ratio <= 1.1)),
    );
    let rel = |s: &[f64]| format!("{}×", num(median(s) / median(&tar), 2));
    let archive = series(|x| x.archive_s);
    row(
        "atpred's archiving alone (`duration_ms`)",
        &archive,
        &rel(&archive),
        "",
    );
    let full = series(|x| x.full_s);
    row(
        "atpred, verify = \"full\" (tar read back, every entry compared)",
        &full,
        &rel(&full),
        "",
    );
    let _ = writeln!(
        out,
        "\n- load average (1/5/15 min) at the start of the group: {}; at its end: {}.\n",
        rows.load.0, rows.load.1
    );
}

/// Its bullet of "How it is measured".
pub const METHOD: &str = "- **Files**: the bench makes a tree of about 1 GiB (see the section).
  Each round: atpred in a fresh daemon with verify = \"checksum\" and then verify = \"full\",
  timed from `atprectl run JOB --wait` to its exit, each backup removed after (not timed);
  `tar -I 'zstd -T2' -cf FILE` of the same folder then `sync FILE`, timed from spawn to exit;
  the order alternates, after one uncounted warm-up round.
";
