//! systemd notifications (sd_notify). Without `NOTIFY_SOCKET` every call is a no-op.
//!
//! `NOTIFY_SOCKET` stays set in our own environment (later notifications need it); children
//! never see it because [`crate::process`] clears their environment.

use std::time::Duration;

use sd_notify::NotifyState;

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(&one_line(status))]);
}

/// RELOADING=1 with MONOTONIC_USEC, which newer systemd requires to accept it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub fn stopping(status: &str) {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status(&one_line(status)),
    ]);
}

pub fn status(status: &str) {
    send(&[NotifyState::Status(&one_line(status))]);
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// Asks systemd for `extra` more time to stop (sent while finishing jobs on shutdown).
pub fn extend_timeout(extra: Duration) {
    let usec = u32::try_from(extra.as_micros()).unwrap_or(u32::MAX);
    send(&[NotifyState::ExtendTimeoutUsec(usec)]);
}

/// The interval at which to send WATCHDOG=1 (half of WATCHDOG_USEC), when the watchdog is on.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}

/// STATUS= must be one line: a newline would let text inject another assignment (READY=1).
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("sd_notify failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn status_is_one_line() {
        assert_eq!(super::one_line("a\nREADY=1\r"), "a READY=1 ");
    }
}
