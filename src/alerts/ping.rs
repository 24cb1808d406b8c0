//! What a dead-man ping says: which URL a run's start or end goes to, and its body. Pure.
//!
//! The URLs follow healthchecks.io's ping API, which self-hosted Healthchecks and compatible
//! receivers share:
//!
//! | run | URL |
//! | --- | --- |
//! | starts working (past run-on, the lease and a free slot) | `<url>/start` |
//! | succeeded | `<url>` |
//! | failed with a child's exit status 1–255 (`details.exit_code`) | `<url>/<status>` |
//! | failed otherwise, timed out, cancelled | `<url>/fail` |
//! | skipped (still running, another host's tick, run-on) | nothing |
//!
//! A query (`?create=1`) stays at the end: the suffix goes into the path. The body is plain
//! text — the run's summary, then its last log lines — at most [`MAX_BODY`] bytes, with every
//! URL in it redacted.

use crate::protocol::{Outcome, RunRecord};

/// Bytes of a ping body; healthchecks.io keeps the first 100 kB.
pub const MAX_BODY: usize = 10 * 1024;
/// Bytes of the summary at the head of the body (a failure message may be long).
const MAX_SUMMARY: usize = 2 * 1024;

/// Which of the receiver's endpoints a ping goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Start,
    Success,
    Fail,
    /// A failure with a child's exit status (never 0: `/0` means success).
    Exit(u8),
}

impl Signal {
    /// The signal a finished run sends; `None` for a skipped one (it never started, and the run
    /// it was skipped for sends its own).
    pub fn of(record: &RunRecord) -> Option<Signal> {
        match record.outcome {
            Outcome::Succeeded => Some(Signal::Success),
            Outcome::Skipped => None,
            Outcome::TimedOut | Outcome::Cancelled | Outcome::Interrupted => Some(Signal::Fail),
            Outcome::Failed => {
                let code = record.details.get("exit_code").and_then(|c| c.as_u64());
                Some(match code.and_then(|c| u8::try_from(c).ok()) {
                    Some(c) if c > 0 => Signal::Exit(c),
                    _ => Signal::Fail,
                })
            }
        }
    }

    /// The path suffix, `""` for success.
    pub fn suffix(self) -> String {
        match self {
            Signal::Start => "/start".into(),
            Signal::Success => String::new(),
            Signal::Fail => "/fail".into(),
            Signal::Exit(c) => format!("/{c}"),
        }
    }

    /// For logs and metrics: `start`, `success`, `fail`, `exit 3`.
    pub fn name(self) -> String {
        match self {
            Signal::Start => "start".into(),
            Signal::Success => "success".into(),
            Signal::Fail => "fail".into(),
            Signal::Exit(c) => format!("exit {c}"),
        }
    }
}

/// `base` with the signal's suffix appended to its path (before a query; a trailing `/` of the
/// path is not doubled).
pub fn url(base: &str, signal: Signal) -> String {
    let (path, query) = match base.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (base, None),
    };
    let suffix = signal.suffix();
    if suffix.is_empty() {
        return base.to_owned();
    }
    let mut out = path.trim_end_matches('/').to_owned();
    out.push_str(&suffix);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// The body of a finish ping: the summary, then as many of the last `lines` as fit (`earlier`
/// lines came before them and were not kept), all redacted, at most [`MAX_BODY`] bytes. `hide`
/// is the ping URL itself, replaced by `shown` wherever it appears.
pub fn body(summary: &str, lines: &[String], earlier: usize, hide: &str, shown: &str) -> String {
    let clean = |s: &str| {
        let s = if hide.is_empty() {
            s.to_owned()
        } else {
            s.replace(hide, shown)
        };
        crate::secret::scrub(&s)
    };
    let mut out = truncate(&clean(summary), MAX_SUMMARY);
    if lines.is_empty() {
        return out;
    }
    out.push_str("\n\nlast log lines of the run:\n");
    let header = out.len();
    let mut kept: Vec<String> = Vec::new();
    let mut used = 0;
    // Newest first, so the end of the run (where a failure shows) always fits.
    for line in lines.iter().rev() {
        let line = clean(line);
        let cost = line.len() + 1;
        if header + used + cost + NOTE_ROOM > MAX_BODY {
            break;
        }
        used += cost;
        kept.push(line);
    }
    let left_out = earlier + lines.len() - kept.len();
    if left_out > 0 {
        out.push_str(&format!("({left_out} earlier lines left out)\n"));
    }
    for line in kept.iter().rev() {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Room kept for the "(N earlier lines left out)" note.
const NOTE_ROOM: usize = 48;

/// `s` cut to at most `max` bytes, on a character boundary, marked with `…` when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The first line of a finish ping: `nightly (backup) failed after 1.2s, attempt(s) 1, run
/// <id>: <message>`.
pub fn summary(record: &RunRecord) -> String {
    let took = humantime::format_duration(std::time::Duration::from_millis(record.duration_ms));
    format!(
        "{} ({}) {} after {took}, attempts {}, run {}: {}",
        record.job,
        record.kind,
        record.outcome.as_str(),
        record.attempts,
        record.run_id,
        record.message
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Kind;
    use crate::protocol::Trigger;

    fn record(outcome: Outcome, details: serde_json::Value) -> RunRecord {
        let now = chrono::Utc::now();
        RunRecord {
            run_id: crate::ids::RunId::new(now),
            job: "nightly".parse().unwrap(),
            kind: Kind::Command,
            trigger: Trigger::Manual,
            started: now,
            finished: now,
            duration_ms: 1200,
            outcome,
            message: "m".into(),
            attempts: 1,
            dry_run: false,
            details,
        }
    }

    #[test]
    fn signals_of_outcomes() {
        use serde_json::json;
        for (outcome, details, want) in [
            (
                Outcome::Succeeded,
                json!({"exit_code": 0}),
                Some(Signal::Success),
            ),
            (
                Outcome::Failed,
                json!({"exit_code": 3}),
                Some(Signal::Exit(3)),
            ),
            (
                Outcome::Failed,
                json!({"exit_code": 255}),
                Some(Signal::Exit(255)),
            ),
            (Outcome::Failed, json!({"exit_code": 0}), Some(Signal::Fail)),
            (
                Outcome::Failed,
                json!({"exit_code": 300}),
                Some(Signal::Fail),
            ),
            (
                Outcome::Failed,
                json!({"exit_code": null}),
                Some(Signal::Fail),
            ),
            (Outcome::Failed, serde_json::Value::Null, Some(Signal::Fail)),
            (
                Outcome::TimedOut,
                json!({"exit_code": 3}),
                Some(Signal::Fail),
            ),
            (
                Outcome::Cancelled,
                serde_json::Value::Null,
                Some(Signal::Fail),
            ),
            (Outcome::Skipped, serde_json::Value::Null, None),
        ] {
            assert_eq!(
                Signal::of(&record(outcome, details.clone())),
                want,
                "{outcome:?} {details}"
            );
        }
    }

    #[test]
    fn urls_per_signal() {
        let base = "https://hc-ping.com/5b7e";
        for (base, signal, want) in [
            (base, Signal::Start, "https://hc-ping.com/5b7e/start"),
            (base, Signal::Success, "https://hc-ping.com/5b7e"),
            (base, Signal::Fail, "https://hc-ping.com/5b7e/fail"),
            (base, Signal::Exit(3), "https://hc-ping.com/5b7e/3"),
            ("http://h/p/", Signal::Fail, "http://h/p/fail"),
            ("http://h/p/", Signal::Success, "http://h/p/"),
            (
                "http://h/k/slug?create=1",
                Signal::Start,
                "http://h/k/slug/start?create=1",
            ),
        ] {
            assert_eq!(url(base, signal), want);
        }
    }

    #[test]
    fn bodies_are_bounded_and_keep_the_newest_lines() {
        let lines: Vec<String> = (0..2000)
            .map(|i| format!("line {i:04} {}", "x".repeat(40)))
            .collect();
        let b = body(
            &"s".repeat(5000),
            &lines,
            7,
            "https://hc/UUID",
            "https://hc",
        );
        assert!(b.len() <= MAX_BODY, "{}", b.len());
        assert!(b.starts_with(&"s".repeat(100)));
        assert!(b.contains("…"));
        assert!(b.contains("line 1999"), "the newest line is kept");
        assert!(!b.contains("line 0000"));
        assert!(b.contains("earlier lines left out"));
        let multibyte = body(&"é".repeat(3000), &[], 0, "x", "y");
        assert!(multibyte.len() <= MAX_SUMMARY);
    }

    #[test]
    fn bodies_hide_the_ping_url_and_other_secrets() {
        let lines = vec![
            "GET https://hc/ping/UUID-123/start failed".to_owned(),
            "connect redis://:pw-secret@h/0".to_owned(),
        ];
        let b = body(
            "ping https://hc/ping/UUID-123 x",
            &lines,
            0,
            "https://hc/ping/UUID-123",
            "https://hc",
        );
        assert!(!b.contains("UUID-123"), "{b}");
        assert!(!b.contains("pw-secret"), "{b}");
        assert!(b.contains("GET https://hc/start failed"), "{b}");
    }
}
