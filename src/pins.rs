//! Pins: a backup that retention never removes, whatever its policy says.
//!
//! A pin is a `pin.json` in the backup folder itself (and the same object beside the offsite
//! copy), not a record in state-dir: it survives a lost state-dir, travels with the backup and
//! is honoured by local and offsite pruning alike. It is not listed in the manifest or
//! `SHA256SUMS`, so pinning never changes what a verification checks.
//!
//! Pins are applied as a separate step after the retention planner ([`apply`]), so the planner
//! stays a pure function of the policy. Reading fails safe: a `pin.json` that is there but
//! cannot be read or parsed still pins (a hostile or damaged file can keep a backup, never
//! cause a removal).

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::jobs::retention::Plan;

/// The pin's file name, in the backup folder and at the offsite copy.
pub const PIN_FILE: &str = "pin.json";

/// The longest reason accepted, in characters.
pub const MAX_REASON: usize = 200;

/// The largest `pin.json` read; ours are a few hundred bytes.
const MAX_PIN_BYTES: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("the pin reason is longer than {MAX_REASON} characters")]
    ReasonTooLong,
    #[error("the pin reason contains a control character (newline, tab, escape...)")]
    ReasonControl,
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Why and since when a backup is pinned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// The operator's words; `None` when none were given.
    pub reason: Option<String>,
    pub pinned_at: DateTime<Utc>,
}

impl Pin {
    /// A new pin; refuses a reason that is too long or holds control characters (it is shown
    /// in plans and logs, one line per backup).
    pub fn new(reason: Option<String>, now: DateTime<Utc>) -> Result<Pin, PinError> {
        let reason = reason
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty());
        if let Some(r) = &reason {
            if r.chars().count() > MAX_REASON {
                return Err(PinError::ReasonTooLong);
            }
            if r.chars().any(char::is_control) {
                return Err(PinError::ReasonControl);
            }
        }
        Ok(Pin {
            reason,
            pinned_at: now,
        })
    }

    /// The pin as a plan shows it: `pinned: REASON`.
    pub fn label(&self) -> String {
        format!(
            "pinned: {}",
            self.reason.as_deref().unwrap_or("no reason given")
        )
    }

    /// Reads a stored pin; bytes that do not parse still pin, saying so.
    pub fn parse(bytes: &[u8], now: DateTime<Utc>) -> Pin {
        serde_json::from_slice(bytes).unwrap_or_else(|e| Pin::unreadable(&e.to_string(), now))
    }

    /// A pin file that exists but cannot be read: the backup stays pinned.
    pub fn unreadable(why: &str, now: DateTime<Utc>) -> Pin {
        Pin {
            reason: Some(format!("{PIN_FILE} cannot be read ({why}); kept")),
            pinned_at: now,
        }
    }

    /// The bytes stored.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }
}

/// The pin of the backup folder `dir`, if any. Never follows a symlink; anything other than
/// "no such file" counts as pinned.
pub fn read(dir: &Path) -> Option<Pin> {
    let path = dir.join(PIN_FILE);
    let now = Utc::now();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(&path);
    let mut file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(Pin::unreadable(&e.to_string(), now)),
    };
    let mut bytes = Vec::new();
    match file.by_ref().take(MAX_PIN_BYTES).read_to_end(&mut bytes) {
        Ok(_) => Some(Pin::parse(&bytes, now)),
        Err(e) => Some(Pin::unreadable(&e.to_string(), now)),
    }
}

/// Records `pin` in the backup folder `dir` (atomically, mode 0600).
pub fn write(dir: &Path, pin: &Pin) -> Result<(), PinError> {
    let path = dir.join(PIN_FILE);
    crate::publish::write_atomic(&path, &pin.to_bytes(), 0o600).map_err(|source| PinError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Removes the pin of the backup folder `dir`; `false` when there was none.
pub fn remove(dir: &Path) -> Result<bool, PinError> {
    let path = dir.join(PIN_FILE);
    let io = |source| PinError::Io {
        path: path.display().to_string(),
        source,
    };
    match std::fs::remove_file(&path) {
        Ok(()) => {
            crate::publish::sync_dir(dir).map_err(io)?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io(e)),
    }
}

/// Keeps every pinned backup of `plan`: a removal becomes a keep with the reason
/// `pinned: REASON`; a keep gains it beside its own reasons.
pub fn apply<'a>(plan: &mut Plan, pin_of: impl Fn(&str) -> Option<&'a Pin>) {
    for d in &mut plan.decisions {
        let Some(pin) = pin_of(&d.id) else {
            continue;
        };
        if !d.keep {
            d.keep = true;
            d.reasons.clear();
        }
        d.reasons.push(pin.label());
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::jobs::retention::Decision;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 4, 12, 0, 0).unwrap()
    }

    fn decision(id: &str, keep: bool, reason: &str) -> Decision {
        Decision {
            id: id.into(),
            time: now(),
            keep,
            reasons: vec![reason.into()],
        }
    }

    #[test]
    fn pins_turn_removals_into_keeps_and_add_their_reason_to_keeps() {
        let mut plan = Plan {
            decisions: vec![
                decision("a", true, "last 1"),
                decision("b", false, "no rule keeps it"),
                decision("c", false, "no rule keeps it"),
            ],
            warnings: Vec::new(),
        };
        let incident = Pin::new(Some("incident 42".into()), now()).unwrap();
        let bare = Pin::new(None, now()).unwrap();
        apply(&mut plan, |id| match id {
            "a" => Some(&bare),
            "b" => Some(&incident),
            _ => None,
        });
        let got: Vec<(bool, Vec<String>)> = plan
            .decisions
            .iter()
            .map(|d| (d.keep, d.reasons.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    true,
                    vec!["last 1".into(), "pinned: no reason given".into()]
                ),
                (true, vec!["pinned: incident 42".into()]),
                (false, vec!["no rule keeps it".into()]),
            ]
        );
        assert_eq!(plan.removals().count(), 1);
    }

    #[test]
    fn reasons_are_checked() {
        assert!(matches!(
            Pin::new(Some("a\nb".into()), now()),
            Err(PinError::ReasonControl)
        ));
        assert!(matches!(
            Pin::new(Some("x".repeat(MAX_REASON + 1)), now()),
            Err(PinError::ReasonTooLong)
        ));
        assert_eq!(Pin::new(Some("  ".into()), now()).unwrap().reason, None);
        assert_eq!(
            Pin::new(Some("é".repeat(MAX_REASON)), now())
                .unwrap()
                .reason
                .map(|r| r.chars().count()),
            Some(MAX_REASON)
        );
    }

    #[test]
    fn a_pin_file_that_cannot_be_read_still_pins() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), None);
        std::fs::write(dir.path().join(PIN_FILE), b"{ not json").unwrap();
        let pin = read(dir.path()).expect("pinned");
        assert!(pin.label().contains("cannot be read"), "{}", pin.label());
        std::fs::remove_file(dir.path().join(PIN_FILE)).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join(PIN_FILE)).unwrap();
        assert!(
            read(dir.path()).is_some(),
            "a symlink is not followed, but pins"
        );
        std::fs::remove_file(dir.path().join(PIN_FILE)).unwrap();
        let pin = Pin::new(Some("keep".into()), now()).unwrap();
        write(dir.path(), &pin).unwrap();
        assert_eq!(read(dir.path()), Some(pin));
        assert!(remove(dir.path()).unwrap());
        assert!(!remove(dir.path()).unwrap());
        assert_eq!(read(dir.path()), None);
    }
}
