//! The Markdown report: the machine, the two tables, derived comparisons, every raw value.

use std::fmt::Write;

use crate::backup::{Case, Row};
use crate::core_figures::{CLIENTS, Core, READY_STARTS, REQUESTS_PER_CLIENT};
use crate::stats::{cells, list, median, num, verdict};

const MIB: f64 = 1024.0 * 1024.0;

pub fn core_table(out: &mut String, c: &Core, runs: usize, idle_secs: u64) {
    let _ = writeln!(out, "## Daemon (issue \"core\")\n");
    let _ = writeln!(out, "| figure | median | min – max | n | aim | |");
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | --- | --- |");
    let mut row = |what: String, values: &[f64], digits, n: usize, aim: &str, met: Option<bool>| {
        let (m, range) = cells(values, digits);
        let v = met.map(verdict).unwrap_or("");
        let _ = writeln!(out, "| {what} | {m} | {range} | {n} | {aim} | {v} |");
    };
    let rss = median(&c.rss_mib);
    let hwm = median(&c.hwm_mib);
    row(
        format!("idle VmRSS after {idle_secs} s, 5 jobs (MiB)"),
        &c.rss_mib,
        1,
        runs,
        "< 15 MiB",
        Some(rss < 15.0),
    );
    row(
        "idle VmHWM, peak RSS since exec (MiB)".into(),
        &c.hwm_mib,
        1,
        runs,
        "< 15 MiB",
        Some(hwm < 15.0),
    );
    let cpu = median(&c.cpu_ms);
    row(
        format!(
            "idle CPU, utime+stime over {idle_secs} s (ms; {} % of a core)",
            num(cpu / (idle_secs as f64 * 10.0), 3)
        ),
        &c.cpu_ms,
        0,
        runs,
        "",
        None,
    );
    let sched = median(&c.cpu_sched_ms);
    row(
        format!(
            "idle CPU, schedstat of the live threads (ms, exact; {} % of a core)",
            num(sched / (idle_secs as f64 * 10.0), 3)
        ),
        &c.cpu_sched_ms,
        1,
        runs,
        "",
        None,
    );
    row(
        "exec → READY=1 (ms)".into(),
        &c.ready_ms,
        1,
        READY_STARTS,
        "< 100 ms",
        Some(median(&c.ready_ms) < 100.0),
    );
    row(
        format!("`status`, {CLIENTS} clients × {REQUESTS_PER_CLIENT} requests (req/s)"),
        &c.rps,
        0,
        runs,
        "≥ 20,000 req/s",
        Some(median(&c.rps) >= 20_000.0),
    );
    row(
        "`status` latency p50 (ms)".into(),
        &c.p50_ms,
        3,
        runs,
        "",
        None,
    );
    row(
        "`status` latency p99 (ms)".into(),
        &c.p99_ms,
        3,
        runs,
        "< 2 ms",
        Some(median(&c.p99_ms) < 2.0),
    );
    row(
        "CPU per `status` request: daemon (µs, utime+stime)".into(),
        &c.daemon_us_per_req,
        1,
        runs,
        "",
        None,
    );
    row(
        "CPU per `status` request: the bench's client thread (µs)".into(),
        &c.client_us_per_req,
        1,
        runs,
        "",
        None,
    );
    row(
        "VmHWM of that daemon after the rounds (MiB)".into(),
        &[c.load_hwm_mib],
        1,
        1,
        "",
        None,
    );
    out.push('\n');
    let rps = median(&c.rps);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let busy = (median(&c.daemon_us_per_req) + median(&c.client_us_per_req)) * rps / 1e6;
    let _ = writeln!(
        out,
        "With {CLIENTS} clients each keeping one request in flight, the mean latency is about \
         {CLIENTS} / throughput (Little's law): {} req/s means {} ms on average, so p99 < 2 ms \
         needs more than 50,000 req/s and a tail close to the mean. At that rate daemon and \
         client together keep {} of the {cpus} CPUs busy.\n",
        num(rps, 0),
        num(CLIENTS as f64 / rps * 1e3, 2),
        num(busy, 2),
    );
}

fn row_of(rows: &[Row], case: Case) -> Option<&Row> {
    rows.iter().find(|r| r.case == case)
}

fn secs(r: &Row) -> Vec<f64> {
    r.samples.iter().map(|s| s.secs).collect()
}

fn mib_of(r: &Row) -> Vec<f64> {
    r.samples
        .iter()
        .filter_map(|s| s.bytes)
        .map(|b| b as f64 / MIB)
        .collect()
}

fn hwm_of(r: &Row) -> Vec<f64> {
    r.samples
        .iter()
        .filter_map(|s| s.hwm_kib)
        .map(|k| k as f64 / 1024.0)
        .collect()
}

fn short(case: Case) -> &'static str {
    match case {
        Case::Floor => "floor",
        Case::PgDumpCustom => "pg_dump -Fc",
        Case::PgDumpDir => "pg_dump -Fd -j2",
        Case::Job(j) => j,
    }
}

/// One line of the growth table: `| scale | database | pg_dump s | atpred s | ratio |`.
pub fn growth_row(out: &mut String, scale: &str, db_size: &str, rows: &[Row]) {
    let (Some(bare), Some(ours)) = (
        row_of(rows, Case::PgDumpCustom),
        row_of(rows, Case::Job("checksum")),
    ) else {
        return;
    };
    let (b, br) = cells(&secs(bare), 2);
    let (o, or) = cells(&secs(ours), 2);
    let ratio = median(&secs(ours)) / median(&secs(bare));
    let _ = writeln!(
        out,
        "| {scale} | {db_size} | {b} ({br}) | {o} ({or}) | **{}×** |",
        num(ratio, 2)
    );
}

pub fn backup_table(out: &mut String, rows: &[Row]) {
    let _ = writeln!(out, "## Backups (issue \"backups\")\n");
    let _ = writeln!(
        out,
        "| what | wall s | min – max | ratio | dump MiB | daemon VmHWM MiB | aim |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: | --- |");
    for r in rows {
        let (m, range) = cells(&secs(r), 2);
        let ratio = match r.baseline.and_then(|b| row_of(rows, b)) {
            Some(b) => format!(
                "{}× {}",
                num(median(&secs(r)) / median(&secs(b)), 2),
                short(b.case)
            ),
            None => "baseline".into(),
        };
        let size = mib_of(r);
        let size = if size.is_empty() {
            "–".into()
        } else {
            num(median(&size), 1)
        };
        let hwm = hwm_of(r);
        let (hwm_cell, aim) = if hwm.is_empty() {
            ("–".into(), String::new())
        } else {
            let peak = median(&hwm);
            let mut aim = format!("≤ 32 MiB: {}", verdict(peak <= 32.0));
            if r.case == Case::Job("checksum")
                && let Some(b) = row_of(rows, Case::PgDumpCustom)
            {
                let ratio = median(&secs(r)) / median(&secs(b));
                aim = format!("≤ 1.05×: {}; {aim}", verdict(ratio <= 1.05));
            }
            (num(peak, 1), aim)
        };
        let _ = writeln!(
            out,
            "| {} | {m} | {range} | {ratio} | {size} | {hwm_cell} | {aim} |",
            r.label
        );
    }
    out.push('\n');
    derived(out, rows);
}

/// Comparisons between rows, one sentence each.
fn derived(out: &mut String, rows: &[Row]) {
    let get = |c| row_of(rows, c);
    let med = |r: &Row| median(&secs(r));
    let size = |r: &Row| median(&mib_of(r));
    for (job, base) in [("checksum", Case::PgDumpCustom), ("dir", Case::PgDumpDir)] {
        if let (Some(r), Some(b)) = (get(Case::Job(job)), get(base)) {
            let paired: Vec<f64> = r
                .samples
                .iter()
                .zip(&b.samples)
                .map(|(r, b)| r.secs / b.secs)
                .collect();
            let _ = writeln!(
                out,
                "- {} against {} in the same round: {}× (median of {})",
                r.label,
                short(base),
                num(median(&paired), 2),
                list(&paired, 2)
            );
        }
    }
    if let (Some(z), Some(g)) = (get(Case::Job("checksum")), get(Case::Job("gzip"))) {
        let _ = writeln!(
            out,
            "- zstd vs gzip (atpred, custom, checksum): zstd takes {}× gzip's time and writes {}× \
             its bytes ({} vs {} MiB).",
            num(med(z) / med(g), 2),
            num(size(z) / size(g), 2),
            num(size(z), 1),
            num(size(g), 1)
        );
    }
    if let (Some(g), Some(p)) = (get(Case::Job("gzip")), get(Case::PgDumpCustom)) {
        let extra = med(g) - med(p);
        let _ = writeln!(
            out,
            "- atpred's own cost at the same compression as bare pg_dump (gzip): {} s ({} %) \
             for the snapshot, row counts, streaming with SHA-256, fsync, checksum re-read, \
             manifest and publish.",
            signed(extra),
            signed(extra / med(p) * 100.0)
        );
    }
    if let (Some(a), Some(z)) = (get(Case::Job("age")), get(Case::Job("checksum"))) {
        let extra = med(a) - med(z);
        let _ = writeln!(
            out,
            "- age encryption: {} s ({} %) over the same zstd/checksum job; {} MiB vs {} MiB.",
            signed(extra),
            signed(extra / med(z) * 100.0),
            num(size(a), 1),
            num(size(z), 1)
        );
    }
    for (level, name) in [("full", "full"), ("restore", "restore")] {
        if let (Some(v), Some(z)) = (get(Case::Job(level)), get(Case::Job("checksum"))) {
            let _ = writeln!(
                out,
                "- verify = \"{name}\" adds {} s to the checksum-only run.",
                signed(med(v) - med(z))
            );
        }
    }
    out.push('\n');
}

fn signed(x: f64) -> String {
    let digits = if x.abs() < 10.0 { 2 } else { 1 };
    if x >= 0.0 {
        format!("+{}", num(x, digits))
    } else {
        num(x, digits)
    }
}

pub fn every_run(out: &mut String, core: Option<&Core>, rows: &[Row]) {
    if core.is_none() && rows.is_empty() {
        // The groups that ran list every run in their own tables.
        return;
    }
    let _ = writeln!(out, "## Every run\n");
    if let Some(c) = core {
        let _ = writeln!(out, "- idle VmRSS MiB: {}", list(&c.rss_mib, 1));
        let _ = writeln!(out, "- idle VmHWM MiB: {}", list(&c.hwm_mib, 1));
        let _ = writeln!(out, "- idle CPU ms: {}", list(&c.cpu_ms, 0));
        let _ = writeln!(
            out,
            "- idle CPU ms (schedstat): {}",
            list(&c.cpu_sched_ms, 1)
        );
        let _ = writeln!(out, "- exec → READY=1 ms: {}", list(&c.ready_ms, 1));
        let _ = writeln!(out, "- status req/s: {}", list(&c.rps, 0));
        let _ = writeln!(out, "- status p50 ms: {}", list(&c.p50_ms, 3));
        let _ = writeln!(out, "- status p99 ms: {}", list(&c.p99_ms, 3));
        let _ = writeln!(
            out,
            "- status CPU µs per request, daemon: {}; client: {}",
            list(&c.daemon_us_per_req, 1),
            list(&c.client_us_per_req, 1)
        );
    }
    for r in rows {
        let hwm = hwm_of(r);
        let hwm = if hwm.is_empty() {
            String::new()
        } else {
            format!("; VmHWM MiB: {}", list(&hwm, 1))
        };
        let _ = writeln!(out, "- {}: s {}{hwm}", r.label, list(&secs(r), 2));
    }
    if !rows.is_empty() {
        let _ = writeln!(
            out,
            "\nRounds alternate the order (odd rounds top to bottom, even rounds bottom to top)."
        );
    }
    out.push('\n');
}
