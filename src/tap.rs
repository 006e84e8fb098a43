//! `weir tap`: live events from the running agent, as they enter the spool
//! (after scrubbing: a tap shows what the sinks get, never more).
//!
//! The agent side is a broadcast channel that [`crate::ingest::Ingest`]
//! publishes to, and a unix socket (`weir run --tap-socket`, default
//! [`DEFAULT_SOCKET`], mode 0600: the events may still be sensitive) where
//! each viewer sends one JSON request line (its filter) and then reads
//! NDJSON, one line per event in the file sink's format.
//!
//! A slow viewer never slows the pipeline: publishing never waits, each
//! viewer has its own place in a bounded ring of [`CAPACITY`] events, and a
//! viewer that falls further behind loses the oldest ones. It is then sent
//! `{"weir_tap_dropped":N}` (N events it missed), which `weir tap` reports on
//! stderr. With no viewer connected, publishing costs one atomic load.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::event::Event;

/// Where `weir run` listens for viewers and `weir tap` connects by default.
pub const DEFAULT_SOCKET: &str = "/run/weir/tap.sock";

/// Events a viewer may fall behind before it loses the oldest.
pub const CAPACITY: usize = 4096;

/// The line a viewer gets after losing events; the number follows.
const DROPPED_KEY: &str = "weir_tap_dropped";

/// One event as published, with the configured name of its source.
pub struct Tapped {
    pub source: String,
    pub event: Event,
}

/// The agent's side: cheap to clone; publishing never waits.
#[derive(Clone)]
pub struct Tap(broadcast::Sender<Arc<Tapped>>);

impl Default for Tap {
    fn default() -> Tap {
        Tap(broadcast::channel(CAPACITY).0)
    }
}

impl Tap {
    /// Offers `events` of `source` to every connected viewer.
    pub fn publish(&self, source: &str, events: &[Event]) {
        if self.0.receiver_count() == 0 {
            return;
        }
        for event in events {
            // Err only when the last viewer left meanwhile.
            let _ = self.0.send(Arc::new(Tapped {
                source: source.to_owned(),
                event: event.clone(),
            }));
        }
    }

    /// A new viewer's stream, from the next event on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Tapped>> {
        self.0.subscribe()
    }
}

/// What a viewer asks for: events of these sources (configured names; empty:
/// all) whose labels have all these values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub labels: Vec<(String, String)>,
}

impl Filter {
    pub fn matches(&self, t: &Tapped) -> bool {
        (self.sources.is_empty() || self.sources.contains(&t.source))
            && self.labels.iter().all(|(k, v)| {
                t.event
                    .labels
                    .pairs(t.event.origin)
                    .any(|(name, value)| name == k && value == v)
            })
    }
}

/// Binds the tap socket at `path` (replacing a stale one) and serves viewers
/// until `stop`.
pub fn serve(
    path: &Path,
    tap: Tap,
    stop: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Only a socket nobody answers on is ours to replace.
    if std::os::unix::net::UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let path = path.to_owned();
    Ok(tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "tap: cannot accept a viewer");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            tokio::spawn(viewer(stream, tap.clone(), stop.clone()));
        }
        let _ = std::fs::remove_file(&path);
    }))
}

async fn viewer(stream: tokio::net::UnixStream, tap: Tap, stop: CancellationToken) {
    let (read, mut write) = stream.into_split();
    let mut request = String::new();
    // One request line of at most 64 KiB.
    let mut read = tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(read, 64 << 10));
    let got = tokio::time::timeout(Duration::from_secs(5), read.read_line(&mut request)).await;
    let filter = match got.map(|r| r.map(|_| serde_json::from_str::<Filter>(&request))) {
        Ok(Ok(Ok(filter))) => filter,
        _ => {
            let _ = write
                .write_all(
                    b"{\"error\":\"expected one JSON request line, e.g. {\\\"sources\\\":[]}\"}\n",
                )
                .await;
            return;
        }
    };
    let mut events = tap.subscribe();
    tracing::info!(?filter.sources, labels = filter.labels.len(), "tap: viewer connected");
    let mut buf = Vec::new();
    // Kept across events: it remembers their field names' order.
    let mut lines = crate::sink::file::LineWriter::default();
    let mut dropped_total = 0u64;
    loop {
        buf.clear();
        tokio::select! {
            _ = stop.cancelled() => break,
            got = events.recv() => match got {
                Ok(t) if filter.matches(&t) => lines.write(&mut buf, &t.event),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    dropped_total += n;
                    buf.extend_from_slice(format!("{{\"{DROPPED_KEY}\":{n}}}\n").as_bytes());
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
        if write.write_all(&buf).await.is_err() {
            break;
        }
    }
    tracing::info!(dropped = dropped_total, "tap: viewer gone");
}

/// How `weir tap` prints events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line, as the file sink writes them.
    Ndjson,
    /// `TIME LABELS: MESSAGE`, one line per event, for reading.
    Compact,
}

/// Why `weir tap` stopped early. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("cannot connect to {path}: {source}; is weir running (it serves the tap socket with `weir run --tap-socket`)? The socket is 0600: run as root or as weir's user")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("the running weir refused the request: {0}")]
    Refused(String),
    #[error("reading from the tap: {0}")]
    Io(#[from] std::io::Error),
}

/// Connects to the tap socket and prints matching events to `out` until the
/// agent stops, `count` events were printed, or `out` is closed. Lost events
/// are reported to `notes` (stderr).
pub fn view(
    socket: &Path,
    filter: &Filter,
    format: Format,
    count: Option<u64>,
    out: &mut dyn Write,
    notes: &mut dyn Write,
) -> Result<(), TapError> {
    let mut stream =
        std::os::unix::net::UnixStream::connect(socket).map_err(|source| TapError::Connect {
            path: socket.display().to_string(),
            source,
        })?;
    let mut request = serde_json::to_vec(filter).expect("a filter serializes");
    request.push(b'\n');
    stream.write_all(&request)?;
    let mut printed = 0u64;
    for line in BufReader::new(stream).lines() {
        let line = line?;
        if count.is_some_and(|c| printed >= c) {
            break;
        }
        let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if let Some(n) = value.get(DROPPED_KEY).and_then(|n| n.as_u64()) {
            writeln!(notes, "weir tap: {n} event(s) dropped: this viewer fell more than {CAPACITY} events behind (the pipeline was not slowed)")?;
            continue;
        }
        if let Some(e) = value.get("error").and_then(|e| e.as_str()) {
            return Err(TapError::Refused(e.to_owned()));
        }
        let written = match format {
            Format::Ndjson => writeln!(out, "{line}"),
            Format::Compact => writeln!(out, "{}", compact(&value)),
        };
        if written.is_err() {
            // `weir tap | head`: the reader is gone.
            return Ok(());
        }
        printed += 1;
        if count.is_some_and(|c| printed >= c) {
            break;
        }
    }
    Ok(())
}

/// `2026-12-06T22:25:01.123Z source=docker app=shop level=info: message`
fn compact(v: &serde_json::Value) -> String {
    let ns = v["timestamp_ns"].as_i64().unwrap_or(0);
    let mut s = utc(ns);
    if let Some(labels) = v["labels"].as_object() {
        for (k, l) in labels {
            if k != "host" {
                s.push_str(&format!(" {k}={}", l.as_str().unwrap_or_default()));
            }
        }
    }
    s.push_str(": ");
    s.push_str(v["message"].as_str().unwrap_or_default().trim_end());
    s
}

/// RFC 3339 UTC with milliseconds, from nanoseconds since the epoch.
fn utc(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let ms = ns.rem_euclid(1_000_000_000) / 1_000_000;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Origin;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(1_700_000_000_123_000_000), "2023-11-14T22:13:20.123Z");
        assert_eq!(utc(951_782_400_000_000_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn filter_by_source_and_labels() {
        let mut event = Event::new(1, Origin::Docker, "hi");
        event.labels.app = Some("shop".into());
        let t = Tapped {
            source: "docker".into(),
            event,
        };
        assert!(Filter::default().matches(&t));
        let by_source = |s: &str| Filter {
            sources: vec![s.into()],
            labels: vec![],
        };
        assert!(by_source("docker").matches(&t));
        assert!(!by_source("journal").matches(&t));
        let by_label = |k: &str, v: &str| Filter {
            sources: vec![],
            labels: vec![(k.into(), v.into())],
        };
        assert!(by_label("app", "shop").matches(&t));
        assert!(by_label("source", "docker").matches(&t));
        assert!(!by_label("app", "bank").matches(&t));
    }

    #[tokio::test]
    async fn a_viewer_that_does_not_read_loses_events_and_publishing_never_waits() {
        let tap = Tap::default();
        let mut slow = tap.subscribe();
        let events: Vec<Event> = (0..10)
            .map(|i| Event::new(i, Origin::Docker, "x"))
            .collect();
        // Far more than the ring holds, with a viewer that reads nothing:
        // publish returns each time.
        for _ in 0..(CAPACITY / 10 + 100) {
            tap.publish("docker", &events);
        }
        match slow.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => {
                assert_eq!(n, 1000 + 10 * (CAPACITY as u64 / 10) - CAPACITY as u64)
            }
            other => panic!(
                "expected a lag, got {:?}",
                other.map(|t| t.event.timestamp_ns)
            ),
        }
    }
}
