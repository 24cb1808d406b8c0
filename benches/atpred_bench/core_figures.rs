//! Issue "core": the idle daemon's memory and CPU, exec to READY=1, and the control socket
//! under 100 concurrent `status` clients.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use atpred::client::Client;
use atpred::protocol::{Request, Response};

use crate::Env;
use crate::daemon::{self, Daemon};

/// Four command jobs whose next run is months away and one that runs `true` every 10 s.
const JOBS: &str = r#"
[jobs.yearly-a]
kind = "command"
schedule = "0 3 1 1 *"
command = ["/bin/true"]

[jobs.yearly-b]
kind = "command"
schedule = "@yearly"
command = ["/bin/true"]

[jobs.leap-day]
kind = "command"
schedule = "30 4 29 2 *"
command = ["/bin/true"]

[jobs.new-year-seconds]
kind = "command"
schedule = "15 0 5 1 1 *"
command = ["/bin/true"]

[jobs.tick]
kind = "command"
schedule = "every 10s"
command = ["/bin/true"]
"#;

pub const READY_STARTS: usize = 10;
pub const CLIENTS: usize = 100;
pub const REQUESTS_PER_CLIENT: usize = 200;

#[derive(Default)]
pub struct Core {
    /// VmRSS and VmHWM (MiB) at the end of the idle window, one per daemon.
    pub rss_mib: Vec<f64>,
    pub hwm_mib: Vec<f64>,
    /// utime + stime (ms) spent in the idle window, one per daemon.
    pub cpu_ms: Vec<f64>,
    /// The same from the live threads' schedstat (ns precision).
    pub cpu_sched_ms: Vec<f64>,
    pub ready_ms: Vec<f64>,
    /// One per load round.
    pub rps: Vec<f64>,
    pub p50_ms: Vec<f64>,
    pub p99_ms: Vec<f64>,
    /// CPU time (µs) per `status` request of the daemon and of the bench's client thread.
    pub daemon_us_per_req: Vec<f64>,
    pub client_us_per_req: Vec<f64>,
    /// The status daemon's VmHWM (MiB) after all load rounds.
    pub load_hwm_mib: f64,
}

pub fn run(env: &Env) -> Result<Core> {
    let mut core = Core::default();
    ready(env, &mut core)?;
    idle(env, &mut core)?;
    load(env, &mut core)?;
    Ok(core)
}

/// exec to READY=1, [`READY_STARTS`] times in a row on the same state directory (as a restart).
fn ready(env: &Env, core: &mut Core) -> Result<()> {
    let dir = env.work.join("core-ready");
    daemon::write_config(env, &dir, JOBS)?;
    for i in 0..READY_STARTS {
        let (d, took) = Daemon::start(env, &dir)?;
        d.stop()?;
        core.ready_ms.push(took.as_secs_f64() * 1e3);
        eprintln!(
            "  exec -> READY=1 #{}: {:.1} ms",
            i + 1,
            took.as_secs_f64() * 1e3
        );
    }
    Ok(())
}

/// `env.runs` daemons idle side by side for `env.idle_secs`, measured from READY=1.
fn idle(env: &Env, core: &mut Core) -> Result<()> {
    let mut daemons = Vec::new();
    for i in 0..env.runs {
        let dir = env.work.join(format!("core-idle-{i}"));
        daemon::write_config(env, &dir, JOBS)?;
        let (d, _) = Daemon::start(env, &dir)?;
        let cpu0 = (d.cpu_ticks()?, d.cpu_ns_live_threads()?);
        daemons.push((d, cpu0));
    }
    eprintln!(
        "  {} daemons idle for {} s (5 jobs, one every 10 s)...",
        env.runs, env.idle_secs
    );
    std::thread::sleep(Duration::from_secs(env.idle_secs));
    let hz = daemon::clock_ticks() as f64;
    for (d, (ticks0, ns0)) in daemons {
        let ticks = d.cpu_ticks()? - ticks0;
        core.cpu_ms.push(ticks as f64 * 1e3 / hz);
        let ns = d.cpu_ns_live_threads()?.saturating_sub(ns0);
        core.cpu_sched_ms.push(ns as f64 / 1e6);
        core.rss_mib.push(d.status_kib("VmRSS")? as f64 / 1024.0);
        core.hwm_mib.push(d.status_kib("VmHWM")? as f64 / 1024.0);
        d.stop()?;
    }
    eprintln!(
        "  idle: VmRSS {:?} MiB, CPU {:?} ms (schedstat {:?} ms)",
        core.rss_mib, core.cpu_ms, core.cpu_sched_ms
    );
    Ok(())
}

/// [`CLIENTS`] connections, each `hello` then [`REQUESTS_PER_CLIENT`] `status` requests one
/// after another; `env.runs` rounds against one daemon, after a short warm-up round.
fn load(env: &Env, core: &mut Core) -> Result<()> {
    let dir = env.work.join("core-status");
    daemon::write_config(env, &dir, JOBS)?;
    let (d, _) = Daemon::start(env, &dir)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(round(&d.socket, CLIENTS, 20))?;
    let hz = daemon::clock_ticks() as f64;
    for i in 0..env.runs {
        let cpu0 = (d.cpu_ticks()?, daemon::cpu_ticks_of(std::process::id())?);
        let (elapsed, mut latencies) =
            rt.block_on(round(&d.socket, CLIENTS, REQUESTS_PER_CLIENT))?;
        let cpu1 = (d.cpu_ticks()?, daemon::cpu_ticks_of(std::process::id())?);
        let total = latencies.len() as f64;
        let per_req = |ticks: u64| ticks as f64 * 1e6 / hz / total;
        core.daemon_us_per_req.push(per_req(cpu1.0 - cpu0.0));
        core.client_us_per_req.push(per_req(cpu1.1 - cpu0.1));
        latencies.sort_by(f64::total_cmp);
        let rps = total / elapsed.as_secs_f64();
        let p50 = crate::stats::percentile(&latencies, 50.0);
        let p99 = crate::stats::percentile(&latencies, 99.0);
        eprintln!(
            "  status round {}: {rps:.0} req/s, p50 {p50:.3} ms, p99 {p99:.3} ms",
            i + 1
        );
        core.rps.push(rps);
        core.p50_ms.push(p50);
        core.p99_ms.push(p99);
    }
    core.load_hwm_mib = d.status_kib("VmHWM")? as f64 / 1024.0;
    d.stop()
}

/// One round: every client connects (and says hello) first; the clock starts when all are
/// connected and stops when the last answer arrived. Latencies in ms.
async fn round(socket: &Path, clients: usize, requests: usize) -> Result<(Duration, Vec<f64>)> {
    let barrier = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (barrier, socket) = (Arc::clone(&barrier), socket.to_owned());
        tasks.push(tokio::spawn(async move {
            let connected = Client::connect(&socket).await;
            barrier.wait().await;
            let mut client = connected.context("connect to the control socket")?;
            let mut latencies = Vec::with_capacity(requests);
            for _ in 0..requests {
                let t = Instant::now();
                match client.request(&Request::Status).await? {
                    Response::Status(_) => latencies.push(t.elapsed().as_secs_f64() * 1e3),
                    other => bail!("status answered with {other:?}"),
                }
            }
            Ok(latencies)
        }));
    }
    barrier.wait().await;
    let t0 = Instant::now();
    let mut all = Vec::with_capacity(clients * requests);
    let mut first_error = None;
    for task in tasks {
        match task.await.context("client task")? {
            Ok(l) => all.extend(l),
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    let elapsed = t0.elapsed();
    match first_error {
        Some(e) => Err(e),
        None => Ok((elapsed, all)),
    }
}
