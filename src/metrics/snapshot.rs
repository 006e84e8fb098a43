//! One summary of a running agent, read straight from the typed families:
//! `/status` serves it as JSON, `weir status` fetches two and renders them,
//! systemd's `STATUS=` line renders the same. Counts, sizes, times and
//! reasons only: no payload can be in it.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::health::{Health, Verdict};
use super::{process, Metrics};

/// The agent at one instant.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    pub version: String,
    /// Unix seconds when this was taken.
    pub time: f64,
    /// Unix seconds when the process started (0 when unknown).
    pub start_time: f64,
    /// `/health`: `None` when OK, else why not.
    pub unhealthy: Option<String>,
    /// `/ready`: `None` when ready, else why not.
    pub not_ready: Option<String>,
    pub process: Process,
    pub log: OwnLog,
    pub sources: BTreeMap<String, Source>,
    /// `kind/action` -> items rewritten.
    pub scrub_rewrites: BTreeMap<String, u64>,
    pub spool: Spool,
    pub sinks: BTreeMap<String, Sink>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Process {
    pub cpu_seconds: f64,
    pub resident_bytes: f64,
    pub open_fds: f64,
    /// `None` when unlimited.
    pub max_fds: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct OwnLog {
    /// Level -> lines.
    pub lines: BTreeMap<String, u64>,
    pub suppressed: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Source {
    pub events_received: u64,
    pub bytes_received: u64,
    pub events_spooled: u64,
    pub connections: i64,
    /// Reason -> records.
    pub decode_errors: BTreeMap<String, u64>,
    /// Bytes held on the source's memory budget (`max_buffered_bytes`,
    /// forward sources only). Defaults: an older agent's `/status` lacks it.
    #[serde(default)]
    pub buffered_bytes: i64,
    /// Connections closed to free that budget for a waiting one.
    #[serde(default)]
    pub budget_gave_way: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Spool {
    pub bytes: i64,
    pub max_bytes: i64,
    pub segments: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Sink {
    pub events_sent: u64,
    pub bytes_sent: u64,
    pub retries: u64,
    pub splits: u64,
    /// Spool bytes not yet acknowledged.
    pub lag_bytes: i64,
    /// Unix seconds the oldest unacknowledged record was appended (0: none).
    pub oldest_unacked: i64,
    /// Unix seconds of the last accepted delivery (0: never).
    pub last_success: i64,
    /// Reason -> failed attempts.
    pub errors: BTreeMap<String, u64>,
    /// Reason -> events the server refused.
    pub rejected: BTreeMap<String, u64>,
    /// Reason -> events the spool dropped before the sink got them.
    pub dropped: BTreeMap<String, u64>,
}

fn source(s: &mut Snapshot, name: String) -> &mut Source {
    s.sources.entry(name).or_default()
}

fn sink(s: &mut Snapshot, name: String) -> &mut Sink {
    s.sinks.entry(name).or_default()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn failing(v: Verdict) -> Option<String> {
    match v {
        Verdict::Ok => None,
        Verdict::Failing(why) => Some(why.to_owned()),
    }
}

impl Metrics {
    /// The agent now; `health` is the pipeline's (none: reported as healthy
    /// and ready, for a registry without a pipeline).
    pub fn snapshot(&self, health: Option<&Health>) -> Snapshot {
        let mut s = Snapshot {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            time: unix_now(),
            start_time: process::start_time().unwrap_or(0.0),
            unhealthy: health.and_then(|h| failing(h.liveness())),
            not_ready: health.and_then(|h| failing(h.readiness())),
            process: Process {
                cpu_seconds: process::cpu_seconds().max(0.0),
                resident_bytes: process::resident_bytes().max(0.0),
                open_fds: process::open_fds().max(0.0),
                max_fds: process::max_fds().filter(|v| v.is_finite()),
            },
            spool: Spool {
                bytes: self.spool_bytes.get(),
                max_bytes: self.spool_max_bytes.get(),
                segments: self.spool_segments.get(),
            },
            ..Snapshot::default()
        };
        let log = super::families::own_log();
        for (l, c) in log.lines.series() {
            s.log.lines.insert(l.level, c.get());
        }
        s.log.suppressed = log.suppressed.get();

        for (l, c) in self.source_events_received.series() {
            source(&mut s, l.source).events_received = c.get();
        }
        for (l, c) in self.source_bytes_received.series() {
            source(&mut s, l.source).bytes_received = c.get();
        }
        for (l, c) in self.source_events_spooled.series() {
            source(&mut s, l.source).events_spooled = c.get();
        }
        for (l, g) in self.source_connections.series() {
            source(&mut s, l.source).connections = g.get();
        }
        for (l, c) in self.source_decode_errors.series() {
            source(&mut s, l.source)
                .decode_errors
                .insert(l.reason, c.get());
        }
        for (l, g) in self.source_buffered_bytes.series() {
            source(&mut s, l.source).buffered_bytes = g.get();
        }
        for (l, c) in self.source_budget_gave_way.series() {
            source(&mut s, l.source).budget_gave_way = c.get();
        }
        for (l, c) in self.scrub_rewrites.series() {
            s.scrub_rewrites
                .insert(format!("{}/{}", l.kind, l.action), c.get());
        }

        for (l, c) in self.sink_events_sent.series() {
            sink(&mut s, l.sink).events_sent = c.get();
        }
        for (l, c) in self.sink_bytes_sent.series() {
            sink(&mut s, l.sink).bytes_sent = c.get();
        }
        for (l, c) in self.sink_retries.series() {
            sink(&mut s, l.sink).retries = c.get();
        }
        for (l, c) in self.sink_splits.series() {
            sink(&mut s, l.sink).splits = c.get();
        }
        for (l, g) in self.spool_sink_lag_bytes.series() {
            sink(&mut s, l.sink).lag_bytes = g.get();
        }
        for (l, g) in self.spool_oldest_unacked.series() {
            sink(&mut s, l.sink).oldest_unacked = g.get();
        }
        for (l, g) in self.sink_last_success.series() {
            sink(&mut s, l.sink).last_success = g.get();
        }
        for (l, c) in self.sink_errors.series() {
            sink(&mut s, l.sink).errors.insert(l.reason, c.get());
        }
        for (l, c) in self.sink_rejected_events.series() {
            sink(&mut s, l.sink).rejected.insert(l.reason, c.get());
        }
        for (l, c) in self.spool_dropped_events.series() {
            sink(&mut s, l.sink).dropped.insert(l.reason, c.get());
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::super::labels;
    use super::*;

    #[test]
    fn the_snapshot_reads_every_family_and_round_trips_as_json() {
        let m = Metrics::new();
        m.source_events_received
            .with(labels::source("docker"))
            .add(5);
        m.source_decode_errors
            .with(labels::SourceReason::new("docker", "bad_frame"))
            .add(2);
        m.sink_events_sent.with(labels::sink("loki")).add(4);
        m.spool_sink_lag_bytes.with(labels::sink("loki")).set(1536);
        m.spool_dropped_events
            .with(labels::SinkReason::new("loki", "spool_full"))
            .inc();
        let s = m.snapshot(None);
        assert_eq!(s.sources["docker"].events_received, 5);
        assert_eq!(s.sources["docker"].decode_errors["bad_frame"], 2);
        assert_eq!(s.sinks["loki"].events_sent, 4);
        assert_eq!(s.sinks["loki"].lag_bytes, 1536);
        assert_eq!(s.sinks["loki"].dropped["spool_full"], 1);
        assert!(s.process.resident_bytes > 0.0 && s.start_time > 0.0);
        assert_eq!(s.unhealthy, None);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Snapshot>(&json).unwrap(), s);
    }
}
