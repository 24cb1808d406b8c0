//! Issue "health": one health run (postgres, disk, backup-freshness, jobs) on demand, metrics
//! over the control socket, and the `[metrics] listen` endpoint under concurrent scrapes.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use atpred::client::Client;
use atpred::protocol::{Request, Response};

use crate::Env;
use crate::daemon::{self, Daemon};
use crate::stats::{cells, median, percentile};

/// Health runs and socket scrapes per round.
pub const RUNS_PER_ROUND: usize = 20;
/// Concurrent HTTP scrapers, and the scrapes each makes per round.
pub const SCRAPERS: usize = 10;
pub const SCRAPES_EACH: usize = 50;

#[derive(Default)]
pub struct Health {
    /// `health --now` wall time at the client (ms), every run of every round.
    pub run_ms: Vec<f64>,
    /// `metrics` over the control socket (ms), every request.
    pub socket_ms: Vec<f64>,
    /// HTTP scrapes per second, one per round; and every scrape's latency (ms).
    pub http_rps: Vec<f64>,
    pub http_ms: Vec<f64>,
    /// Bytes of one exposition.
    pub text_bytes: usize,
    pub hwm_mib: f64,
}

pub fn run(env: &Env) -> Result<Health> {
    let dir = env.work.join("health");
    let jobs = format!(
        "[jobs.health]\nkind = \"health\"\nchecks = [\"postgres\", \"disk\", \"backup-freshness\", \"jobs\"]\n\
         disk-paths = [{:?}]\n\n[jobs.nightly]\nkind = \"backup\"\n\n\
         [jobs.vacuum]\nkind = \"command\"\ncommand = [\"/bin/true\"]\n\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n",
        env.work.display().to_string()
    );
    daemon::write_config(env, &dir, &jobs)?;
    let (d, _) = Daemon::start(env, &dir)?;
    let log = std::fs::read_to_string(dir.join("daemon.log"))?;
    let url = log
        .lines()
        .find_map(|l| l.split("metrics served at ").nth(1))
        .context("no metrics address in the daemon log")?
        .trim()
        .to_owned();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut h = Health::default();
    rt.block_on(async {
        let mut client = Client::connect(&d.socket).await?;
        // Warm-up: a first run and a first scrape are not counted.
        request(&mut client, Request::Health { now: true }).await?;
        if let Response::Metrics { text } = request(&mut client, Request::Metrics).await? {
            h.text_bytes = text.len();
        }
        for round in 0..env.runs {
            for _ in 0..RUNS_PER_ROUND {
                let t = Instant::now();
                request(&mut client, Request::Health { now: true }).await?;
                h.run_ms.push(t.elapsed().as_secs_f64() * 1e3);
                let t = Instant::now();
                request(&mut client, Request::Metrics).await?;
                h.socket_ms.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let (rps, latencies) = scrape_round(&url).await?;
            eprintln!(
                "  health round {}: run p50 {:.1} ms, /metrics {rps:.0} req/s",
                round + 1,
                median(&h.run_ms)
            );
            h.http_rps.push(rps);
            h.http_ms.extend(latencies);
        }
        anyhow::Ok(())
    })?;
    h.hwm_mib = d.status_kib("VmHWM")? as f64 / 1024.0;
    d.stop()?;
    Ok(h)
}

async fn request(client: &mut Client, request: Request) -> Result<Response> {
    match client.request(&request).await? {
        Response::Error { message, .. } => bail!("{request:?}: {message}"),
        r => Ok(r),
    }
}

/// [`SCRAPERS`] clients, [`SCRAPES_EACH`] sequential GETs each; scrapes/s over the round and
/// every latency (ms).
async fn scrape_round(url: &str) -> Result<(f64, Vec<f64>)> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..SCRAPERS {
        let (client, url) = (client.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(SCRAPES_EACH);
            for _ in 0..SCRAPES_EACH {
                let t = Instant::now();
                let body = client
                    .get(&url)
                    .send()
                    .await?
                    .error_for_status()?
                    .bytes()
                    .await?;
                if body.is_empty() {
                    bail!("empty scrape");
                }
                latencies.push(t.elapsed().as_secs_f64() * 1e3);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    Ok((all.len() as f64 / t0.elapsed().as_secs_f64(), all))
}

pub fn table(out: &mut String, h: &Health, runs: usize) {
    let _ = writeln!(out, "## Health and metrics (issue \"health\")\n");
    let _ = writeln!(out, "| figure | median | min – max | n |");
    let _ = writeln!(out, "| --- | ---: | ---: | ---: |");
    let mut row = |what: &str, values: &[f64], digits| {
        let (m, range) = cells(values, digits);
        let _ = writeln!(out, "| {what} | {m} | {range} | {} |", values.len());
    };
    row(
        "`health --now` (postgres, disk, backup-freshness, jobs), ms",
        &h.run_ms,
        1,
    );
    row("`metrics` over the control socket, ms", &h.socket_ms, 2);
    row(
        &format!("`GET /metrics`, {SCRAPERS} concurrent scrapers, scrapes/s"),
        &h.http_rps,
        0,
    );
    row("`GET /metrics` latency, ms", &h.http_ms, 2);
    let _ = writeln!(
        out,
        "\np99 of `health --now` {:.1} ms, of `GET /metrics` {:.2} ms; one exposition is {} bytes; \
         the daemon's VmHWM after all rounds {:.1} MiB; {runs} rounds of {RUNS_PER_ROUND} runs.\n",
        percentile(&h.run_ms, 99.0),
        percentile(&h.http_ms, 99.0),
        h.text_bytes,
        h.hwm_mib
    );
}
