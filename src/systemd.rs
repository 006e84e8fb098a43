//! The service manager protocol: readiness, status, watchdog, reloading,
//! stopping.
//!
//! All calls are no-ops when weir is not started by systemd (no
//! `NOTIFY_SOCKET`), so the same code runs in a terminal and in tests.
//!
//! # Watchdog
//!
//! With `WatchdogSec=` in the unit, systemd passes `WATCHDOG_USEC` and kills
//! (then, with `Restart=on-failure`, restarts) weir if `WATCHDOG=1` does not
//! arrive in time. weir pings at half that period, and only while the pipeline
//! is *healthy* (see `pipeline::Running::health`):
//!
//! 1. the async runtime is responsive: the ping is sent from a task on the
//!    same runtime as the sources and sinks, so a wedged runtime stops it;
//! 2. the spool accepts writes: an fsync of the spool completes, without
//!    error, within one ping period (a hung or failing disk stops the pings);
//! 3. every source and sink task is still running: one that ended before
//!    shutdown was asked for (a panic, a fatal spool error) means part of the
//!    pipeline is dead, and a restart is the way back.
//!
//! While unhealthy, `STATUS=` says why, so `systemctl status weir` shows the
//! reason before systemd acts on it.
//!
//! # Socket activation
//!
//! systemd passes `weir.socket` as `LISTEN_FDS`. A reload restarts the
//! pipeline in the same process ([`crate::reload`]), so the forward source
//! starts more than once per process while the inherited socket must stay
//! open all along (it is what Docker connects to; binding a new socket at the
//! same path would orphan it). [`inherited_listener`] takes the passed
//! sockets once per process, keeps them, and hands out duplicates
//! (`try_clone`): a source closing its copy at stop leaves the socket open.

use crate::metrics::{Metrics, Snapshot};
use crate::net::{Bound, Endpoint};
use crate::status;
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

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

/// RELOADING=1: a config reload has begun; [`ready`] ends it. systemd 253+
/// also wants the monotonic time of the request.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

/// STOPPING=1: shutdown has begun.
pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

/// WATCHDOG=1: the pipeline is healthy.
pub fn watchdog() {
    notify(&[NotifyState::Watchdog]);
}

/// A listening socket systemd passed to weir.
pub enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// The passed socket listening on `listen`, as a duplicate the caller owns;
/// `None` when systemd passed no such socket (bind it yourself). Matching is
/// [`Endpoint::is_bound_at`]: the same path, or an address the host resolves
/// to (`tcp://localhost:24224` is the socket on 127.0.0.1:24224).
/// Call it on every start: the originals stay open for the next one.
pub fn inherited_listener(listen: &Endpoint) -> Option<std::io::Result<Listener>> {
    static INHERITED: OnceLock<Vec<Listener>> = OnceLock::new();
    // listenfd checks LISTEN_PID and unsets LISTEN_FDS: only the first call
    // in a process can see them, hence the OnceLock.
    let all = INHERITED.get_or_init(|| {
        let mut fds = listenfd::ListenFd::from_env();
        (0..fds.len())
            .filter_map(|i| match fds.take_unix_listener(i) {
                Ok(Some(l)) => Some(Listener::Unix(l)),
                _ => fds.take_tcp_listener(i).ok().flatten().map(Listener::Tcp),
            })
            .collect()
    });
    all.iter().find_map(|l| {
        let bound = match l {
            Listener::Unix(u) => Bound::Unix(u.local_addr().ok()?.as_pathname()?.to_owned()),
            Listener::Tcp(t) => Bound::Tcp(t.local_addr().ok()?),
        };
        listen.is_bound_at(&bound).then(|| match l {
            Listener::Unix(u) => u.try_clone().map(Listener::Unix),
            Listener::Tcp(t) => t.try_clone().map(Listener::Tcp),
        })
    })
}

/// How often to send WATCHDOG=1: half of `WATCHDOG_USEC`, or `None` when
/// systemd asked for no watchdog, or asked it of another process
/// (`WATCHDOG_PID`, which systemd always sets with `WatchdogSec=`).
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    (sd_notify::watchdog_enabled(false, &mut usec) && usec > 0)
        .then(|| Duration::from_micros(usec / 2))
}

/// Builds the `STATUS=` line from the pipeline's [`Snapshot`] (the one
/// `weir status` renders): events per second in (spooled by the sources,
/// after scrubbing) and, per sink, events per second out and the bytes it
/// lags behind the spool's head.
///
/// `in 120.0/s; local: out 118.5/s, lag 1.2 MiB; loki: out 0.0/s, lag 340.0 MiB`
pub struct StatusLine {
    metrics: Metrics,
    sources: Vec<String>,
    sinks: Vec<String>,
    last: Option<(Instant, Snapshot)>,
}

impl StatusLine {
    pub fn new(
        metrics: &Metrics,
        sources: impl IntoIterator<Item = String>,
        sinks: impl IntoIterator<Item = String>,
    ) -> Self {
        StatusLine {
            metrics: metrics.clone(),
            sources: sources.into_iter().collect(),
            sinks: sinks.into_iter().collect(),
            last: None,
        }
    }

    /// The line for the interval since the previous call (or since `new`'s
    /// first call, which only records a starting point and reports totals).
    pub fn line(&mut self) -> String {
        let now = Instant::now();
        let snapshot = self.metrics.snapshot(None);
        let line = match &self.last {
            None => format!(
                "running: {} source(s), {} sink(s); rates follow",
                self.sources.len(),
                self.sinks.len()
            ),
            Some((then, prev)) => {
                let secs = now.duration_since(*then).as_secs_f64().max(1e-3);
                let rate = |new: u64, old: u64| new.saturating_sub(old) as f64 / secs;
                let spooled = |s: &Snapshot| -> u64 {
                    self.sources
                        .iter()
                        .filter_map(|name| s.sources.get(name))
                        .map(|src| src.events_spooled)
                        .sum()
                };
                let mut line = format!(
                    "in {}/s",
                    status::per_second(rate(spooled(&snapshot), spooled(prev)))
                );
                for sink in &self.sinks {
                    let sent = |s: &Snapshot| s.sinks.get(sink).map_or(0, |k| k.events_sent);
                    let out = rate(sent(&snapshot), sent(prev));
                    line.push_str(&format!("; {sink}: out {}/s", status::per_second(out)));
                    if let Some(k) = snapshot.sinks.get(sink) {
                        line.push_str(&format!(", lag {}", status::bytes(k.lag_bytes as f64)));
                    }
                }
                line
            }
        };
        self.last = Some((now, snapshot));
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::labels;

    #[test]
    fn status_line_reports_rates_and_lag_per_sink() {
        let metrics = Metrics::new();
        let sent = metrics.sink_events_sent.with(labels::sink("local"));
        metrics
            .spool_sink_lag_bytes
            .with(labels::sink("local"))
            .set(1536);
        let mut status = StatusLine::new(&metrics, ["docker".to_owned()], ["local".to_owned()]);
        assert!(status.line().starts_with("running: 1 source(s), 1 sink(s)"));
        sent.add(100);
        std::thread::sleep(Duration::from_millis(50));
        let line = status.line();
        assert!(line.starts_with("in 0.0/s; local: out "), "{line}");
        assert!(line.ends_with(", lag 1.5 KiB"), "{line}");
        let out: f64 = line
            .split("out ")
            .nth(1)
            .and_then(|s| s.split("/s").next())
            .and_then(|s| s.parse().ok())
            .unwrap();
        // 100 events in a little over 50 ms: under 2000/s, well over zero.
        assert!(out > 100.0 && out <= 2000.0, "{line}");
    }
}
