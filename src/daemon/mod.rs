//! The supervisor: starts everything, owns the configuration, and decides shutdown.
//!
//! One loop (`Supervisor::run`) selects over signals, control commands, the watchdog tick and
//! state changes. It owns the root [`CancellationToken`]; every run's token is a child of it.
//! The order at start is: configuration (exit 78 on error) -> state-dir lock -> control socket
//! -> tasks -> READY=1. Signals are registered before READY.

pub mod history;
pub mod state;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_tokio::Signals;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use self::history::History;
use self::state::{Command, Shared};
use crate::alerts::Heartbeat;
use crate::cli::DaemonArgs;
use crate::config::Config;
use crate::control::{self, ControlContext, peer};
use crate::runner::Runner;
use crate::scheduler::Scheduler;
use crate::{logging, notify};

/// sysexits EX_CONFIG: the unit's RestartPreventExitStatus.
pub const EXIT_CONFIG: u8 = 78;
const LOCK_FILE: &str = "atpred.lock";
const HISTORY_FILE: &str = "history.jsonl";
/// After cancelling runs at the stop timeout, how long to wait for their process groups to die.
const CANCEL_WAIT: Duration = Duration::from_secs(10);
/// After the last run ended, how long its dead-man pings may take to go out.
const PING_DRAIN: Duration = Duration::from_secs(5);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot create the state directory {path}: {source}")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("another atpred holds the lock on {0}")]
    Locked(String),
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Group(String),
    #[error("cannot read the run history {path}: {source}")]
    History {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Bind(#[from] control::BindError),
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot register signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// The daemon's `main`: `--check`, or load, log, run, exit code.
pub fn main(args: DaemonArgs) -> ExitCode {
    if let Some(crate::cli::DaemonCommand::WalFetch { staged, file, path }) = &args.command {
        return ExitCode::from(crate::restore::pitr::fetch::run(staged, file, path));
    }
    let loaded = if args.check {
        Config::load_for_check(&args.config)
    } else {
        Config::load(&args.config)
    };
    let config = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("atpred: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.check {
        print!(
            "{}",
            crate::scheduler::describe_jobs(&config, args.from.unwrap_or_else(Utc::now))
        );
        return ExitCode::SUCCESS;
    }
    if let Some(note) = logging::init(config.daemon.log, &config.daemon.log_level) {
        tracing::warn!("{note}");
    }
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(StartupError::Runtime)
        .and_then(|rt| rt.block_on(run(config)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("atpred cannot start: {e}");
            eprintln!("atpred: {e}");
            // A socket group that does not exist is a configuration problem: restarting will
            // not fix it (the unit's RestartPreventExitStatus=78).
            if matches!(e, StartupError::Group(_)) {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Runs the daemon until SIGTERM/SIGINT.
pub async fn run(config: Config) -> Result<(), StartupError> {
    let _lock = lock_state_dir(&config.daemon.state_dir)?;
    let socket_gid = config
        .daemon
        .socket_group
        .as_deref()
        .map(peer::group_gid)
        .transpose()
        .map_err(StartupError::Group)?;
    let history_path = config.daemon.state_dir.join(HISTORY_FILE);
    let (history, dropped) =
        History::open(&history_path, config.daemon.history_size).map_err(|source| {
            StartupError::History {
                path: history_path.display().to_string(),
                source,
            }
        })?;
    if dropped > 0 {
        tracing::warn!(
            "{}: dropped {dropped} torn or unreadable record(s)",
            history_path.display()
        );
    }
    let groups = config.daemon.state_dir.join("groups");
    let unclean = crate::process::registry::unclean_previous(&groups);
    let ended = match crate::process::registry::start(&groups) {
        Ok(ended) => {
            for line in &ended {
                tracing::warn!("{line}");
            }
            ended
        }
        Err(e) => {
            tracing::warn!("cannot keep the process group registry: {e}");
            Vec::new()
        }
    };
    for stale in crate::jobs::catalog::remove_stale_partials(&config.daemon.backup_dir) {
        tracing::warn!("removed {stale}: an unfinished backup left by a crash");
    }
    for trash in crate::jobs::catalog::remove_trash(&config.daemon.backup_dir) {
        tracing::warn!("removed {trash}: a backup whose removal a crash interrupted");
    }
    let (std_listener, socket_origin) = control::open(&config.daemon.socket, socket_gid)?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| control::BindError::Io {
            path: config.daemon.socket.display().to_string(),
            source: e,
        })?;
    let listener =
        tokio::net::UnixListener::from_std(std_listener).map_err(|e| control::BindError::Io {
            path: config.daemon.socket.display().to_string(),
            source: e,
        })?;
    let metrics_server = match config.metrics.listen {
        Some(addr) => Some(
            crate::metrics::MetricsServer::bind(addr)
                .await
                .map_err(|source| StartupError::Metrics { addr, source })?,
        ),
        None => None,
    };
    if let Some(addr) = metrics_server.as_ref().and_then(|m| m.local_addr().ok()) {
        tracing::info!("metrics served at http://{addr}/metrics");
    }
    let signals = Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(StartupError::Signals)?;

    let socket_path = config.daemon.socket.clone();
    let state_dir = config.daemon.state_dir.clone();
    let (config_tx, config_rx) = watch::channel(Arc::new(config));
    let (next_tx, next_rx) = watch::channel(BTreeMap::new());
    let (reload_error_tx, reload_error_rx) = watch::channel(None);
    let (commands_tx, commands_rx) = mpsc::channel(16);
    let root = CancellationToken::new();
    let runner = Runner::new(config_rx.clone(), history, root.clone());
    if let Some(pid) = unclean {
        tracing::warn!("the previous daemon (pid {pid}) did not stop cleanly");
        runner
            .notifier()
            .daemon(&crate::alerts::daemon_events::unclean_stop(&pid, &ended));
    }
    let wal = crate::wal::Archivers::new(Arc::clone(runner.health()), runner.notifier().clone());
    wal.apply(&config_rx.borrow());
    let shared = Arc::new(Shared {
        started: Utc::now(),
        config: config_rx.clone(),
        next_runs: next_rx,
        reload_error: reload_error_rx,
        runner: Arc::clone(&runner),
        commands: commands_tx,
        wal: Arc::clone(&wal),
    });

    let scheduler_stop = CancellationToken::new();
    let config = config_rx.borrow().clone();
    let scheduler = Scheduler::new(
        Arc::clone(&config),
        Arc::clone(&runner),
        next_tx,
        &state_dir,
    );
    scheduler.apply(config).await;
    let scheduler_task = tokio::spawn(Arc::clone(&scheduler).run(scheduler_stop.clone()));
    let control_stop = CancellationToken::new();
    let ctx = Arc::new(ControlContext {
        shared: Arc::clone(&shared),
        daemon_uid: nix::unistd::geteuid(),
        socket_gid,
    });
    let control_task = tokio::spawn(control::serve(listener, ctx, control_stop.clone()));
    let metrics_stop = CancellationToken::new();
    let metrics_tasks = [
        metrics_server.map(|m| tokio::spawn(m.serve(Arc::clone(&shared), metrics_stop.clone()))),
        Some(crate::metrics::spawn_textfile_writer(
            Arc::clone(&shared),
            metrics_stop.clone(),
        )),
    ];

    let mut supervisor = Supervisor {
        shared,
        scheduler,
        config_tx,
        reload_error_tx,
        signals,
        commands: commands_rx,
    };
    notify::ready(&supervisor.shared.summary(Utc::now()));
    tracing::info!(
        pid = std::process::id(),
        socket = %socket_path.display(),
        socket_from = ?socket_origin,
        "atpred {} ready",
        crate::VERSION
    );

    supervisor.run().await;

    notify::stopping("stopping: waiting for running jobs");
    tracing::info!("stopping");
    scheduler_stop.cancel();
    let _ = scheduler_task.await;
    supervisor.finish_runs(&runner, &root).await;
    wal.stop().await;
    runner.pings().close(PING_DRAIN).await;
    runner.notifier().close(PING_DRAIN).await;
    control_stop.cancel();
    let _ = control_task.await;
    metrics_stop.cancel();
    for task in metrics_tasks.into_iter().flatten() {
        let _ = task.await;
    }
    if socket_origin == control::Origin::Bound {
        let _ = std::fs::remove_file(&socket_path);
    }
    // Every child has ended: the next start has nothing to sweep.
    crate::process::registry::stopped_cleanly();
    tracing::info!("stopped");
    Ok(())
}

struct Supervisor {
    shared: Arc<Shared>,
    scheduler: Arc<Scheduler>,
    config_tx: watch::Sender<Arc<Config>>,
    reload_error_tx: watch::Sender<Option<String>>,
    signals: Signals,
    commands: mpsc::Receiver<Command>,
}

impl Supervisor {
    /// The loop; returns on SIGTERM or SIGINT.
    async fn run(&mut self) {
        let mut watchdog = notify::watchdog_interval().map(tokio::time::interval);
        let mut runs = self.shared.runner.subscribe_changes();
        let mut next_runs = self.shared.next_runs.clone();
        let mut refresh = tokio::time::interval(Duration::from_secs(60));
        let mut last_status = String::new();
        let mut heartbeat = Heartbeat::new(
            self.shared.runner.pings().clone(),
            &self.config_tx.borrow().daemon,
        );
        loop {
            tokio::select! {
                signal = self.signals.next() => match signal {
                    Some(SIGHUP) => {
                        let _ = self.reload().await;
                        heartbeat.apply(&self.config_tx.borrow().daemon);
                    }
                    Some(_) | None => return,
                },
                Some(Command::Reload { reply }) = self.commands.recv() => {
                    let _ = reply.send(self.reload().await);
                    heartbeat.apply(&self.config_tx.borrow().daemon);
                }
                _ = tick(&mut watchdog) => notify::watchdog(),
                () = heartbeat.tick() => heartbeat.beat(&self.shared.summary(Utc::now())),
                _ = runs.changed() => {}
                _ = next_runs.changed() => {}
                _ = refresh.tick() => {}
            }
            let status = self.shared.summary(Utc::now());
            if status != last_status {
                notify::status(&status);
                last_status = status;
            }
        }
    }

    /// Re-reads the configuration; an invalid one leaves the old one in force.
    async fn reload(&mut self) -> Result<usize, String> {
        notify::reloading();
        let old = self.config_tx.borrow().clone();
        let result = match Config::load(&old.source) {
            Ok(new) => {
                warn_restart_only(&old, &new);
                self.shared.runner.resize(
                    old.daemon.max_concurrent_jobs,
                    new.daemon.max_concurrent_jobs,
                );
                let jobs = new.jobs.len();
                let new = Arc::new(new);
                self.config_tx.send_replace(Arc::clone(&new));
                self.shared
                    .runner
                    .health()
                    .retain(|check| runs_check(&new, check) || crate::wal::owns_check(&new, check));
                self.shared.wal.apply(&new);
                self.scheduler.apply(new).await;
                self.reload_error_tx.send_replace(None);
                tracing::info!(jobs, "configuration reloaded");
                Ok(jobs)
            }
            Err(e) => {
                let message = e.to_string();
                tracing::error!(
                    "reload refused, the previous configuration stays in force: {message}"
                );
                self.shared.runner.notifier().daemon(
                    &crate::alerts::daemon_events::reload_refused(&old.source, &message),
                );
                self.reload_error_tx.send_replace(Some(message.clone()));
                Err(message)
            }
        };
        notify::ready(&self.shared.summary(Utc::now()));
        result
    }

    /// Lets running jobs finish up to `stop-timeout`, then cancels them; a second signal
    /// cancels at once.
    async fn finish_runs(&mut self, runner: &Runner, root: &CancellationToken) {
        runner.close();
        let stop_timeout = self.config_tx.borrow().daemon.stop_timeout;
        if !runner.running().is_empty() {
            tracing::info!(
                "waiting up to {} for {} running job(s)",
                humantime::format_duration(stop_timeout),
                runner.running().len()
            );
            notify::extend_timeout(stop_timeout + CANCEL_WAIT);
        }
        let cancel_now = tokio::select! {
            () = runner.wait() => false,
            () = tokio::time::sleep(stop_timeout) => true,
            _ = self.signals.next() => true,
        };
        if cancel_now {
            tracing::warn!("cancelling {} running job(s)", runner.running().len());
            root.cancel();
            runner.cancel_all();
            if tokio::time::timeout(CANCEL_WAIT, runner.wait())
                .await
                .is_err()
            {
                tracing::error!(
                    "jobs did not end {}s after cancellation",
                    CANCEL_WAIT.as_secs()
                );
            }
        }
    }
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn warn_restart_only(old: &Config, new: &Config) {
    let (o, n) = (&old.daemon, &new.daemon);
    for (key, changed) in [
        ("daemon.socket", o.socket != n.socket),
        ("daemon.socket-group", o.socket_group != n.socket_group),
        ("daemon.state-dir", o.state_dir != n.state_dir),
        ("daemon.log", o.log != n.log),
        ("daemon.log-level", o.log_level != n.log_level),
        ("daemon.history-size", o.history_size != n.history_size),
        ("metrics.listen", old.metrics.listen != new.metrics.listen),
    ] {
        if changed {
            tracing::warn!("{key} changed: takes effect at the next restart");
        }
    }
}

/// Whether a health job of `config` runs `check`.
fn runs_check(config: &Config, check: &str) -> bool {
    config.jobs.values().any(|j| match &j.spec {
        crate::config::JobSpec::Health(h) => h.checks.iter().any(|k| k.name() == check),
        _ => false,
    })
}

fn lock_state_dir(dir: &Path) -> Result<File, StartupError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(|source| StartupError::StateDir {
            path: dir.display().to_string(),
            source,
        })?;
    let path = dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StartupError::Lock {
            path: path.display().to_string(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(StartupError::Locked(dir.display().to_string()))
        }
        Err(std::fs::TryLockError::Error(source)) => Err(StartupError::Lock {
            path: path.display().to_string(),
            source,
        }),
    }
}
