//! The service manager protocol: readiness, status, watchdog, stopping.
//!
//! All calls are no-ops when weir is not started by systemd (no
//! `NOTIFY_SOCKET`), so the same code runs in a terminal and in tests.

use sd_notify::NotifyState;

fn notify(states: &[NotifyState]) {
    // Failing to notify is not worth stopping for: systemd will time us out
    // and say so, which is the right report.
    let _ = sd_notify::notify(false, states);
}

/// READY=1: the spool is open and every source listens.
pub fn ready() {
    notify(&[NotifyState::Ready]);
}

/// STATUS=: a one-line summary shown by `systemctl status`.
pub fn status(line: &str) {
    notify(&[NotifyState::Status(line)]);
}

/// STOPPING=1: shutdown has begun.
pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

/// WATCHDOG=1: the pipeline is healthy.
pub fn watchdog() {
    notify(&[NotifyState::Watchdog]);
}
