//! Identifier newtypes: job names and run ids.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A job's name: the `NAME` of its `[jobs.NAME]` table.
///
/// Restricted to `[a-z0-9_-]`, 1 to 64 characters, starting with a letter or digit, because the
/// name ends up in backup folder names, journald fields and metric labels.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobName(String);

impl JobName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A name the daemon reserves for its own runs (`restore`), which the configuration
    /// refuses for jobs. Not checked here: the reserved names are constants, and a unit test
    /// checks each against [`JobName::from_str`].
    pub(crate) fn reserved(name: &'static str) -> JobName {
        JobName(name.to_owned())
    }
}

impl FromStr for JobName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid_char =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
        let starts_well = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        if s.is_empty() || s.len() > 64 || !starts_well || !s.chars().all(valid_char) {
            return Err(format!(
                "invalid job name {s:?}: use 1 to 64 of a-z, 0-9, '-' and '_', starting with a letter or digit"
            ));
        }
        Ok(JobName(s.to_owned()))
    }
}

impl TryFrom<String> for JobName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<JobName> for String {
    fn from(n: JobName) -> String {
        n.0
    }
}

impl fmt::Display for JobName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A run's id: unique per daemon state directory, sortable by start time.
///
/// Formatted as `YYYYMMDDTHHMMSSZ-<4 hex>`, the UTC start second plus randomness, so ids from
/// restarts never collide and read well in logs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(String);

impl RunId {
    pub fn new(start: chrono::DateTime<chrono::Utc>) -> Self {
        let salt: u16 = rand::random();
        RunId(format!("{}-{salt:04x}", start.format("%Y%m%dT%H%M%SZ")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for RunId {
    fn from(s: String) -> Self {
        RunId(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names() {
        for ok in ["nightly", "a", "db-vacuum", "x_1", "9lives"] {
            assert!(ok.parse::<JobName>().is_ok(), "{ok}");
        }
        let long = "a".repeat(65);
        for bad in [
            "",
            "Nightly",
            "-x",
            "_x",
            "a b",
            "a/b",
            "a.b",
            "ä",
            long.as_str(),
        ] {
            assert!(bad.parse::<JobName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn run_ids_sort_by_time() {
        let a = RunId::new("2026-01-01T00:00:00Z".parse().unwrap());
        let b = RunId::new("2026-01-01T00:00:01Z".parse().unwrap());
        assert!(a < b);
        assert!(a.as_str().starts_with("20260101T000000Z-"));
    }
}
