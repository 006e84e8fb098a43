//! The one delivery loop every sink runs on.
//!
//! A sink only knows its server: it prepares a batch ([`Sink::begin`]) and
//! delivers it in one or more [`Sink::step`]s, each saying what happened
//! ([`Step`]). This loop owns everything else, the same for every sink:
//!
//! - gathering a batch from the spool: up to [`Policy::max_events`] /
//!   [`Policy::max_bytes`], waiting at most [`Policy::linger`] after the
//!   first event for more;
//! - the backoff between failed attempts ([`crate::backoff`]), retrying
//!   forever while the spool holds the data;
//! - shutdown: it interrupts a step or a backoff sleep at once, and what was
//!   not acknowledged stays in the spool for the next start;
//! - the sink metrics (label `sink` = the section name):
//!   `weir_sink_events_sent_total`, `weir_sink_bytes_sent_total`,
//!   `weir_sink_batches_total` (requests or writes the server accepted),
//!   `weir_sink_retries_total`, `weir_sink_errors_total{reason}`,
//!   `weir_sink_rejected_events_total{reason}`,
//!   `weir_sink_truncated_events_total` and
//!   `weir_sink_last_success_timestamp_seconds` (what `weir status` reads to
//!   tell a delivering sink from a stalled one);
//! - the acknowledgement to the spool once the batch is accounted for
//!   (every event sent, or dropped and counted).
//!
//! The log lines name the sink, counts, sizes and reasons, never an event.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::event::Event;
use crate::metrics::{labels, names as n, Counter, Family, Gauge};
use crate::spool::{self, Offset};

/// Most events asked of the spool in one read while gathering.
const READ_EVENTS: usize = 10_000;

/// How a sink wants its batches gathered and its failures retried.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Most events in a batch.
    pub max_events: usize,
    /// A batch is complete once it holds about this many event bytes.
    pub max_bytes: usize,
    /// How long to wait for more events after the first one of a batch.
    /// Zero delivers whatever one spool read returns.
    pub linger: Duration,
    /// First delay after a failure; doubles per failure, with jitter.
    pub backoff_initial: Duration,
    /// Longest delay between attempts.
    pub backoff_max: Duration,
}

/// What prepared a batch had to do to it besides encoding.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    /// Events shrunk to fit the server's limits (counted, still delivered).
    pub truncated: u64,
    /// Events that cannot fit any request even shrunk: dropped, counted as
    /// rejected with reason `too_large`.
    pub too_large: u64,
}

/// Why an attempt failed; the driver retries after a backoff delay.
#[derive(Debug)]
pub struct Failure {
    /// The `reason` label of `weir_sink_errors_total` (a fixed word).
    pub reason: &'static str,
    /// For the log: peer, status, sizes, the OS or TLS error. Never payload
    /// or response bodies.
    pub detail: String,
    /// The server asked to wait this long (HTTP `Retry-After`); used instead
    /// of the backoff delay when longer.
    pub after: Option<Duration>,
}

/// What one delivery step did.
#[derive(Debug)]
pub enum Step {
    /// The server accepted `events` more events of the batch, `bytes` on the
    /// wire, in one request (or write).
    Sent { events: u64, bytes: u64 },
    /// The server refused `events` events for good (e.g. an HTTP 400): they
    /// are dropped and counted, never retried.
    Dropped { events: u64, reason: &'static str },
    /// Nothing more was delivered; try again after a delay. The sink must
    /// resume where it stopped, resending nothing it already reported sent.
    Retry(Failure),
    /// Every event of the batch was sent or dropped: acknowledge it.
    Done,
}

/// A destination the driver delivers to.
pub trait Sink: Send {
    /// The warning logged when an attempt fails (a stable text users grep
    /// for, e.g. `cannot write the file sink; retrying`).
    const RETRY_MESSAGE: &'static str;

    /// How to gather batches and back off for this sink.
    fn policy(&self) -> Policy;

    /// Takes the next batch (in spool order) and prepares it for delivery.
    /// The events go back to the spool reader afterwards, to be decoded
    /// into again: what the sink needs of them it copies here.
    fn begin(&mut self, events: &[Event]) -> Prepared;

    /// Delivers the next part of the current batch. Called until it returns
    /// [`Step::Done`]; after a [`Step::Retry`], again after the delay.
    /// May be cancelled (shutdown) at any await point.
    fn step(&mut self) -> impl Future<Output = Step> + Send;
}

/// The sink metrics, one set for every kind of sink.
struct Metrics {
    sink: String,
    sent: Counter,
    bytes: Counter,
    batches: Counter,
    retries: Counter,
    truncated: Counter,
    last_success: Gauge,
    errors: Family<labels::SinkReason, Counter>,
    rejected: Family<labels::SinkReason, Counter>,
    /// `weir_sink_errors_total` / `weir_sink_rejected_events_total` by reason,
    /// taken on first use.
    by_reason: HashMap<(&'static str, &'static str), Counter>,
}

impl Metrics {
    fn new(registry: &crate::metrics::Metrics, sink: &str) -> Metrics {
        let l = || labels::sink(sink);
        Metrics {
            sink: sink.to_owned(),
            sent: registry.sink_events_sent.with(l()),
            bytes: registry.sink_bytes_sent.with(l()),
            batches: registry.sink_batches.with(l()),
            retries: registry.sink_retries.with(l()),
            truncated: registry.sink_truncated_events.with(l()),
            last_success: registry.sink_last_success.with(l()),
            errors: registry.sink_errors.clone(),
            rejected: registry.sink_rejected_events.clone(),
            by_reason: HashMap::new(),
        }
    }

    fn by_reason(&mut self, family: &'static str, reason: &'static str) -> &Counter {
        let family_of = if family == n::SINK_ERRORS {
            &self.errors
        } else {
            &self.rejected
        };
        let sink = &self.sink;
        self.by_reason
            .entry((family, reason))
            .or_insert_with(|| family_of.with(labels::SinkReason::new(sink, reason)))
    }
}

/// Delivers from `reader` through `sink` until `shutdown` is cancelled (or
/// the spool fails, which is logged: the data then stays spooled).
pub async fn run<S: Sink>(
    name: String,
    mut sink: S,
    mut reader: spool::Reader,
    shutdown: CancellationToken,
) {
    let policy = sink.policy();
    let mut m = Metrics::new(reader.metrics(), &name);
    let mut backoff = Backoff::new(policy.backoff_initial, policy.backoff_max);
    loop {
        let (events, end) = match gather(&mut reader, &policy, &shutdown).await {
            Ok(Some(batch)) => batch,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(sink = %name, error = %e, "cannot read the spool; the sink stops");
                return;
            }
        };
        let prepared = sink.begin(&events);
        reader.recycle(events);
        if prepared.truncated > 0 {
            m.truncated.add(prepared.truncated);
            tracing::warn!(sink = %name, events = prepared.truncated, "events too large for the server were shrunk");
        }
        if prepared.too_large > 0 {
            m.by_reason(n::SINK_REJECTED_EVENTS, "too_large")
                .add(prepared.too_large);
            tracing::error!(sink = %name, events = prepared.too_large, "events that cannot be shrunk to fit were dropped");
        }
        loop {
            let step = tokio::select! {
                _ = shutdown.cancelled() => return,
                s = sink.step() => s,
            };
            match step {
                Step::Sent { events, bytes } => {
                    if backoff.attempts() > 0 {
                        tracing::info!(sink = %name, failed_attempts = backoff.attempts(), "delivering again");
                        backoff.reset();
                    }
                    m.sent.add(events);
                    m.bytes.add(bytes);
                    m.batches.inc();
                    m.last_success.set(unix_now());
                }
                Step::Dropped { events, reason } => {
                    m.by_reason(n::SINK_REJECTED_EVENTS, reason).add(events);
                    tracing::warn!(sink = %name, reason, events, "the server refused events; dropped them");
                }
                Step::Retry(failure) => {
                    m.by_reason(n::SINK_ERRORS, failure.reason).inc();
                    m.retries.inc();
                    let delay = backoff.next_delay().max(failure.after.unwrap_or_default());
                    tracing::warn!(
                        sink = %name,
                        reason = failure.reason,
                        error = %failure.detail,
                        attempt = backoff.attempts(),
                        retry_in_ms = delay.as_millis() as u64,
                        "{}",
                        S::RETRY_MESSAGE
                    );
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                Step::Done => break,
            }
        }
        if let Err(e) = reader.ack(end) {
            tracing::error!(sink = %name, error = %e, "cannot acknowledge in the spool; the sink stops");
            return;
        }
    }
}

/// Reads from the spool until the batch is full or `linger` has passed since
/// its first event. `None` on shutdown.
async fn gather(
    reader: &mut spool::Reader,
    policy: &Policy,
    shutdown: &CancellationToken,
) -> Result<Option<(Vec<Event>, Offset)>, spool::SpoolError> {
    let max_events = policy.max_events.max(1);
    let first = tokio::select! {
        _ = shutdown.cancelled() => return Ok(None),
        b = reader.next_batch(max_events.min(READ_EVENTS), policy.max_bytes) => b?,
    };
    let mut bytes: usize = first.events.iter().map(Event::approx_size).sum();
    let mut events = first.events;
    let mut end = first.end;
    if policy.linger.is_zero() {
        return Ok(Some((events, end)));
    }
    let deadline = Instant::now() + policy.linger;
    while bytes < policy.max_bytes && events.len() < max_events {
        let room = (max_events - events.len()).min(READ_EVENTS);
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep_until(deadline) => break,
            b = reader.next_batch(room, policy.max_bytes - bytes) => {
                let mut b = b?;
                bytes += b.events.iter().map(Event::approx_size).sum::<usize>();
                events.append(&mut b.events);
                end = b.end;
            }
        }
    }
    Ok(Some((events, end)))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Origin;
    use crate::problems::Problems;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    /// A sink that plays a script of steps and records what it was given.
    struct Scripted {
        steps: VecDeque<Step>,
        batches: Arc<Mutex<Vec<usize>>>,
    }

    impl Sink for Scripted {
        const RETRY_MESSAGE: &'static str = "scripted sink failed; retrying";

        fn policy(&self) -> Policy {
            Policy {
                max_events: 100,
                max_bytes: 1 << 20,
                linger: Duration::from_millis(200),
                backoff_initial: Duration::from_millis(1),
                backoff_max: Duration::from_millis(5),
            }
        }

        fn begin(&mut self, events: &[Event]) -> Prepared {
            self.batches.lock().unwrap().push(events.len());
            Prepared {
                truncated: 1,
                too_large: 0,
            }
        }

        async fn step(&mut self) -> Step {
            match self.steps.pop_front() {
                Some(s) => s,
                // Nothing scripted: hang, as a server that never answers.
                None => std::future::pending().await,
            }
        }
    }

    /// Gathers appends made within `linger` into one batch; counts every
    /// step in the one set of metrics; acknowledges only at `Done`; a hung
    /// step is interrupted by shutdown and leaves its batch unacknowledged.
    #[tokio::test]
    async fn counts_steps_acknowledges_at_done_and_stops_on_shutdown() {
        let name = "driver-test";
        let dir = tempfile::tempdir().unwrap();
        let mut problems = Problems::default();
        let config = // Fixed 2023-2025 timestamps: keep them whatever spool.max_age says.
        toml::from_str::<spool::RawConfig>("max_age = \"0s\"")
            .unwrap()
            .validate("spool", &mut problems);
        let spool = spool::Spool::open(dir.path(), &config, &[name.to_owned()]).unwrap();
        let batches = Arc::new(Mutex::new(Vec::new()));
        let sink = Scripted {
            steps: VecDeque::from([
                Step::Retry(Failure {
                    reason: "flaky",
                    detail: "first attempt".into(),
                    after: None,
                }),
                Step::Sent {
                    events: 2,
                    bytes: 100,
                },
                Step::Dropped {
                    events: 1,
                    reason: "refused",
                },
                Step::Done,
            ]),
            batches: batches.clone(),
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            name.to_owned(),
            sink,
            spool.reader(name).unwrap(),
            stop.clone(),
        ));
        for text in ["a", "b", "c"] {
            spool
                .append(&[Event::new(0, Origin::Docker, text)], None)
                .await
                .unwrap();
        }
        let lag = || spool.stats().sinks[0].lag_bytes;
        let start = std::time::Instant::now();
        while lag() > 0 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "never acknowledged"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(*batches.lock().unwrap(), [3], "one batch of the 3 appends");
        let value = |name, labels: &[(&str, &str)]| spool.metrics().value(name, labels).unwrap();
        let l = [("sink", name)];
        assert_eq!(value(n::SINK_EVENTS_SENT, &l), 2.0);
        assert_eq!(value(n::SINK_BYTES_SENT, &l), 100.0);
        assert_eq!(value(n::SINK_BATCHES, &l), 1.0);
        assert_eq!(value(n::SINK_RETRIES, &l), 1.0);
        assert_eq!(value(n::SINK_TRUNCATED_EVENTS, &l), 1.0);
        assert!(value(n::SINK_LAST_SUCCESS, &l) > 1.7e9);
        let r = |reason| [("sink", name), ("reason", reason)];
        assert_eq!(value(n::SINK_ERRORS, &r("flaky")), 1.0);
        assert_eq!(value(n::SINK_REJECTED_EVENTS, &r("refused")), 1.0);

        // The next batch hangs in `step`: shutdown ends the loop at once,
        // and the batch stays in the spool.
        spool
            .append(&[Event::new(0, Origin::Docker, "d")], None)
            .await
            .unwrap();
        while batches.lock().unwrap().len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("the driver stops at once")
            .unwrap();
        assert!(lag() > 0, "the interrupted batch was acknowledged");
    }
}
