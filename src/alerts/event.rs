//! [`Event`]: one notification, as every channel renders it and as the outbox keeps it.
//!
//! Its JSON is the `webhook` channel's body, versioned by `version` ([`VERSION`]); fields are
//! only ever added within a version. Version 1:
//!
//! | field | type | |
//! | --- | --- | --- |
//! | `version` | number | 1 |
//! | `id` | string | unique per event (a receiver may drop a resent duplicate by it) |
//! | `kind` | string | `failure`, `recovery`, `success`, `start`, `skipped`, `missed`, `timeout`, `health`, `reload_refused`, `start_refused`, `unclean_stop`, `offsite_failing`, `preflight_refused`, `test` |
//! | `severity` | string | `info`, `warning`, `critical` |
//! | `title` | string | one line |
//! | `message` | string | what happened, since when, the last error, and where to look |
//! | `host` | string | the daemon's host name |
//! | `time` | string | RFC 3339, when it happened |
//! | `job`, `run_id` | string or absent | the job and run it is about |
//! | `failures` | number or absent | failing runs in a row |
//! | `since` | string or absent | RFC 3339, since when the job fails |
//! | `check`, `status`, `previous` | string or absent | a health transition (as health's old `webhook` sent) |

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The version of the JSON format.
pub const VERSION: u32 = 1;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Failure,
    Recovery,
    Success,
    Start,
    Skipped,
    Missed,
    Timeout,
    Health,
    ReloadRefused,
    StartRefused,
    UncleanStop,
    OffsiteFailing,
    PreflightRefused,
    Test,
}

impl EventKind {
    /// The kinds a job may list in `notify-on`.
    pub const JOB: [EventKind; 7] = [
        EventKind::Failure,
        EventKind::Recovery,
        EventKind::Success,
        EventKind::Start,
        EventKind::Skipped,
        EventKind::Missed,
        EventKind::Timeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Failure => "failure",
            EventKind::Recovery => "recovery",
            EventKind::Success => "success",
            EventKind::Start => "start",
            EventKind::Skipped => "skipped",
            EventKind::Missed => "missed",
            EventKind::Timeout => "timeout",
            EventKind::Health => "health",
            EventKind::ReloadRefused => "reload_refused",
            EventKind::StartRefused => "start_refused",
            EventKind::UncleanStop => "unclean_stop",
            EventKind::OffsiteFailing => "offsite_failing",
            EventKind::PreflightRefused => "preflight_refused",
            EventKind::Test => "test",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::JOB.into_iter().find(|k| k.as_str() == s)
    }
}

/// How urgent: ntfy's priority and the mail subject follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub version: u32,
    pub id: String,
    pub kind: EventKind,
    pub severity: Severity,
    pub title: String,
    pub message: String,
    pub host: String,
    pub time: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
}

impl Event {
    /// An event of `kind` now, its title and message scrubbed of URLs' secrets.
    pub fn new(kind: EventKind, severity: Severity, title: &str, message: &str) -> Event {
        let time = Utc::now();
        Event {
            version: VERSION,
            id: format!(
                "{}-{:08x}",
                time.format("%Y%m%dT%H%M%S%.6fZ"),
                rand::random::<u32>()
            ),
            kind,
            severity,
            title: crate::secret::scrub(title),
            message: crate::secret::scrub(message),
            host: host(),
            time,
            job: None,
            run_id: None,
            failures: None,
            since: None,
            check: None,
            status: None,
            previous: None,
        }
    }

    /// The variables a `command` channel's child gets: `ATPRED_EVENT_<FIELD>` for each field
    /// present.
    pub fn env(&self) -> Vec<(String, String)> {
        let Ok(serde_json::Value::Object(map)) = serde_json::to_value(self) else {
            return Vec::new();
        };
        map.into_iter()
            .map(|(k, v)| {
                let value = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                (format!("ATPRED_EVENT_{}", k.to_uppercase()), value)
            })
            .collect()
    }
}

/// This machine's host name, for the reader of a message who watches several.
fn host() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_versioned_and_env_has_every_field() {
        let mut e = Event::new(
            EventKind::Failure,
            Severity::Critical,
            "nightly failed",
            "see https://u:pw@h/x?token=t",
        );
        e.job = Some("nightly".into());
        e.failures = Some(3);
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(json["kind"], "failure");
        assert_eq!(json["severity"], "critical");
        assert!(json.get("check").is_none());
        assert!(!e.message.contains("pw") && !e.message.contains("=t"));
        let env = e.env();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("ATPRED_EVENT_KIND"), Some("failure"));
        assert_eq!(get("ATPRED_EVENT_JOB"), Some("nightly"));
        assert_eq!(get("ATPRED_EVENT_FAILURES"), Some("3"));
        assert_eq!(get("ATPRED_EVENT_VERSION"), Some("1"));
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
    }
}
