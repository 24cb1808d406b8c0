//! Logging: journald when stderr is connected to the journal (or when configured), readable
//! stderr otherwise.
//!
//! Field names are lowercase in the code (`job`, `kind`, `run_id`); journald upper-cases them
//! (`JOB`, `KIND`, `RUN_ID`), and the field prefix is turned off so that
//! `journalctl -u atpred JOB=nightly` works. Span fields (every job line runs inside a `run`
//! span carrying job, kind and run_id) are sent with each event. A [`TailLayer`] also keeps the
//! last lines of runs that send dead-man pings, for the pings' bodies.

use std::os::unix::fs::MetadataExt;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::alerts::tail::TailLayer;
use crate::config::LogTarget;

/// Installs the global subscriber. `level` is an `EnvFilter` directive ("info", "atpred=debug").
/// Returns a note to log once logging is up (e.g. why journald was not used).
pub fn init(target: LogTarget, level: &str) -> Option<String> {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    // tokio-postgres's debug lines quote every SQL text it sends, and `restore --globals`
    // sends `CREATE ROLE … PASSWORD '<hash>'` when the backup kept the hashes: never below info.
    let verbose = level.contains("debug") || level.contains("trace");
    let filter = match "tokio_postgres=info".parse() {
        Ok(directive) if verbose => filter.add_directive(directive),
        _ => filter,
    };
    let want_journald = match target {
        LogTarget::Journald => true,
        LogTarget::Stderr => false,
        LogTarget::Auto => stderr_is_journal(),
    };
    if want_journald {
        match tracing_journald::layer() {
            Ok(layer) => {
                // journalctl's own reading of levels: info is 6, not tracing-journald's 5.
                let priorities = tracing_journald::PriorityMappings {
                    info: tracing_journald::Priority::Informational,
                    debug: tracing_journald::Priority::Debug,
                    ..tracing_journald::PriorityMappings::new()
                };
                let layer = layer
                    .with_priority_mappings(priorities)
                    .with_field_prefix(None)
                    .with_syslog_identifier("atpred".into());
                let _ = tracing_subscriber::registry()
                    .with(filter)
                    .with(layer)
                    .with(TailLayer)
                    .try_init();
                return None;
            }
            Err(e) => {
                init_stderr(filter);
                return Some(format!(
                    "journald is not reachable ({e}); logging to stderr"
                ));
            }
        }
    }
    init_stderr(filter);
    None
}

fn init_stderr(filter: EnvFilter) {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .with(TailLayer)
        .try_init();
}

/// systemd sets `JOURNAL_STREAM=<dev>:<ino>` of the stream it connected; compare with stderr.
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}
