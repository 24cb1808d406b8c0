//! The last log lines of a run, for the body of its finish ping.
//!
//! A [`TailLayer`] in the global tracing subscriber ([`crate::logging`]) sees every event that
//! passes the log level. Events inside a `run` span (the runner opens one per run, with its
//! `run_id`) are kept, formatted as one line each, for the runs someone [`watch`]es — those
//! with a ping URL — until [`take`]n at the run's end. The store is process-wide because the
//! subscriber is: installed once, before the runtime, and outliving every runner.
//!
//! Bounded twice: [`MAX_LINES`] per run (the oldest drop out) and [`MAX_LINE`] bytes per line.
//! Lines are redacted ([`crate::secret::scrub`]) as they are kept.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::ids::RunId;

/// Lines kept per watched run.
pub const MAX_LINES: usize = 100;
/// Bytes kept of one line.
pub const MAX_LINE: usize = 1000;

/// Kept lines by run id; only watched runs have an entry.
static TAILS: Mutex<BTreeMap<String, Tail>> = Mutex::new(BTreeMap::new());

/// The last lines of one run, and how many earlier ones dropped out.
#[derive(Default)]
pub struct Tail {
    pub lines: VecDeque<String>,
    pub dropped: usize,
}
/// How many runs are watched: while none is, events cost one atomic load.
static WATCHED: AtomicUsize = AtomicUsize::new(0);

/// Starts keeping the log lines of `run`.
pub fn watch(run: &RunId) {
    let mut tails = lock();
    if tails
        .insert(run.as_str().to_owned(), Tail::default())
        .is_none()
    {
        WATCHED.fetch_add(1, Ordering::SeqCst);
    }
}

/// The lines kept for `run`, oldest first, and stops keeping them (empty if never watched).
pub fn take(run: &RunId) -> Tail {
    let mut tails = lock();
    let tail = tails.remove(run.as_str());
    if tail.is_some() {
        WATCHED.fetch_sub(1, Ordering::SeqCst);
    }
    tail.unwrap_or_default()
}

fn lock() -> std::sync::MutexGuard<'static, BTreeMap<String, Tail>> {
    TAILS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The run id a `run` span was opened with, kept in the span's extensions.
struct RunOf(String);

/// The layer; see the module docs.
pub struct TailLayer;

impl<S> Layer<S> for TailLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "run" {
            return;
        }
        let mut visit = RunIdField(None);
        attrs.record(&mut visit);
        if let (Some(run), Some(span)) = (visit.0, ctx.span(id)) {
            span.extensions_mut().insert(RunOf(run));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if WATCHED.load(Ordering::Relaxed) == 0 {
            return;
        }
        let Some(run) = ctx.event_scope(event).and_then(|scope| {
            scope
                .into_iter()
                .find_map(|span| span.extensions().get::<RunOf>().map(|r| r.0.clone()))
        }) else {
            return;
        };
        let mut tails = lock();
        let Some(tail) = tails.get_mut(&run) else {
            return;
        };
        if tail.lines.len() == MAX_LINES {
            tail.lines.pop_front();
            tail.dropped += 1;
        }
        tail.lines.push_back(format_line(event));
    }
}

/// `12:00:01 WARN message key=value`, redacted and bounded.
fn format_line(event: &Event<'_>) -> String {
    let mut visit = LineFields::default();
    event.record(&mut visit);
    let mut line = format!(
        "{} {} {}",
        chrono::Utc::now().format("%H:%M:%S"),
        event.metadata().level(),
        visit.message
    );
    line.push_str(&visit.fields);
    let mut line = crate::secret::scrub(&line);
    if line.len() > MAX_LINE {
        let mut end = MAX_LINE;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
    }
    line
}

struct RunIdField(Option<String>);

impl Visit for RunIdField {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "run_id" {
            self.0 = Some(format!("{value:?}"));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "run_id" {
            self.0 = Some(value.to_owned());
        }
    }
}

#[derive(Default)]
struct LineFields {
    message: String,
    fields: String,
}

impl Visit for LineFields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn keeps_the_lines_of_watched_runs_only() {
        let subscriber = tracing_subscriber::registry().with(TailLayer);
        let now = chrono::Utc::now();
        let (watched, other) = (RunId::new(now), RunId::new(now));
        watch(&watched);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("outside any run");
            let span = tracing::info_span!("run", job = "j", run_id = %watched);
            span.in_scope(|| {
                tracing::info!(stream = "stdout", "hello");
                for i in 0..MAX_LINES + 5 {
                    tracing::warn!("line {i} redis://:pw-secret@h/0");
                }
            });
            tracing::info_span!("run", run_id = %other).in_scope(|| tracing::info!("not mine"));
        });
        let tail = take(&watched);
        assert_eq!(tail.dropped, 6, "hello and lines 0 to 4");
        let lines = tail.lines;
        assert_eq!(lines.len(), MAX_LINES);
        assert!(lines[0].contains("WARN line 5 "), "{}", lines[0]);
        assert!(lines.iter().all(|l| !l.contains("pw-secret")));
        assert!(
            lines
                .iter()
                .all(|l| !l.contains("not mine") && !l.contains("outside"))
        );
        assert!(take(&watched).lines.is_empty(), "taken once");
        assert!(take(&other).lines.is_empty());
    }
}
