//! The delivery loop: gather a batch from the spool, plan pushes, deliver
//! each (retrying, splitting, dropping only what Loki refuses), then
//! acknowledge the batch in the spool.
//!
//! A batch is acknowledged only when every entry of it was accepted or
//! counted as refused. While a push is retried the batch is kept; shutdown
//! interrupts at once, leaving the unacknowledged batch in the spool (it is
//! sent again after the next start, and Loki ignores the exact duplicates of
//! what it already stored).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::batch::{Planner, Push};
use super::encode;
use super::response::Outcome;
use super::service::Service;
use super::Config;
use crate::event::Event;
use crate::metrics::{self, Counter, Gauge};
use crate::sink::retry::Backoff;
use crate::spool::{self, Offset};

/// Most events taken from the spool per read.
const READ_EVENTS: usize = 10_000;

/// Shutdown was requested: stop without acknowledging.
struct Cancelled;

/// The sink's metric handles, taken once.
struct Metrics {
    sink: String,
    sent: Counter,
    bytes: Counter,
    batches: Counter,
    retries: Counter,
    splits: Counter,
    truncated: Counter,
    demoted: Counter,
    last_success: Gauge,
    by_reason: HashMap<(&'static str, &'static str), Counter>,
}

impl Metrics {
    fn new(sink: &str) -> Metrics {
        let l = [("sink", sink)];
        Metrics {
            sink: sink.to_owned(),
            sent: metrics::counter(
                "weir_sink_events_sent_total",
                "Events a sink delivered and acknowledged.",
                &l,
            ),
            bytes: metrics::counter("weir_sink_bytes_sent_total", "Bytes a sink delivered.", &l),
            batches: metrics::counter(
                "weir_sink_batches_total",
                "Pushes (requests) a sink had accepted.",
                &l,
            ),
            retries: metrics::counter(
                "weir_sink_retries_total",
                "Pushes a sink sent again after a failure.",
                &l,
            ),
            splits: metrics::counter(
                "weir_sink_splits_total",
                "Pushes a sink split in two after the server refused them.",
                &l,
            ),
            truncated: metrics::counter(
                "weir_sink_truncated_events_total",
                "Events shrunk to fit the server's size limits (line or message cut with a marker).",
                &l,
            ),
            demoted: metrics::counter(
                crate::metrics::names::LOKI_DEMOTED_EVENTS,
                "Events whose variable labels (container_name first) went into the line because the sink's stream cap (max_streams) was reached.",
                &l,
            ),
            last_success: metrics::gauge(
                "weir_sink_last_success_timestamp_seconds",
                "Unix time of a sink's last accepted push.",
                &l,
            ),
            by_reason: HashMap::new(),
        }
    }

    /// `weir_sink_rejected_events_total{reason}`: entries dropped because the
    /// server refused them (or they could never fit).
    fn rejected(&mut self, reason: &'static str) -> &Counter {
        let sink = &self.sink;
        self.by_reason
            .entry(("rejected", reason))
            .or_insert_with(|| {
                metrics::counter(
                    "weir_sink_rejected_events_total",
                    "Events a sink dropped because the server refused them, by reason.",
                    &[("sink", sink), ("reason", reason)],
                )
            })
    }

    /// `weir_sink_errors_total{reason}`: failed delivery attempts.
    fn error(&mut self, reason: &'static str) -> &Counter {
        let sink = &self.sink;
        self.by_reason.entry(("error", reason)).or_insert_with(|| {
            metrics::counter(
                "weir_sink_errors_total",
                "Failed delivery attempts, by sink and reason.",
                &[("sink", sink), ("reason", reason)],
            )
        })
    }
}

struct Sink {
    name: String,
    config: Config,
    planner: Planner,
    service: Service,
    backoff: Backoff,
    metrics: Metrics,
    shutdown: CancellationToken,
}

pub(super) async fn run(
    name: String,
    config: Config,
    mut reader: spool::Reader,
    shutdown: CancellationToken,
) {
    let mut metrics = Metrics::new(&name);
    let mut backoff = Backoff::new(config.retry_initial_backoff.0, config.retry_max_backoff.0);
    // A bad CA file may be fixed while weir runs: keep trying, data waits in the spool.
    let service = loop {
        match Service::new(&config) {
            Ok(s) => break s,
            Err(e) => {
                metrics.error("client_setup").inc();
                tracing::error!(sink = %name, error = %e, "cannot set up the Loki client; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    };
    backoff.reset();
    let mut sink = Sink {
        planner: Planner::new(&config),
        name,
        config,
        service,
        backoff,
        metrics,
        shutdown,
    };
    loop {
        let (events, end) = match sink.gather(&mut reader).await {
            Ok(Some(batch)) => batch,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(sink = %sink.name, error = %e, "cannot read the spool; Loki sink stops");
                return;
            }
        };
        if sink.deliver_all(&events).await.is_err() {
            return;
        }
        if let Err(e) = reader.ack(end) {
            tracing::error!(sink = %sink.name, error = %e, "cannot acknowledge in the spool; Loki sink stops");
            return;
        }
    }
}

impl Sink {
    /// Reads from the spool until `batch_max_bytes` are gathered or
    /// `batch_timeout` has passed since the first event. `None` on shutdown.
    async fn gather(
        &self,
        reader: &mut spool::Reader,
    ) -> Result<Option<(Vec<Event>, Offset)>, spool::SpoolError> {
        let max = self.config.batch_max_bytes.0 as usize;
        let first = tokio::select! {
            _ = self.shutdown.cancelled() => return Ok(None),
            b = reader.next_batch(READ_EVENTS, max) => b?,
        };
        let deadline = Instant::now() + self.config.batch_timeout.0;
        let mut bytes: usize = first.events.iter().map(Event::approx_size).sum();
        let mut events = first.events;
        let mut end = first.end;
        while bytes < max {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Ok(None),
                _ = tokio::time::sleep_until(deadline) => break,
                b = reader.next_batch(READ_EVENTS, max - bytes) => {
                    let b = b?;
                    bytes += b.events.iter().map(Event::approx_size).sum::<usize>();
                    events.extend(b.events);
                    end = b.end;
                }
            }
        }
        Ok(Some((events, end)))
    }

    /// Plans and delivers every push of a batch.
    async fn deliver_all(&mut self, events: &[Event]) -> Result<(), Cancelled> {
        let plan = self.planner.plan(events, unix_now_ns());
        self.metrics.truncated.add(plan.truncated);
        self.metrics.demoted.add(plan.demoted);
        for (reason, n) in &plan.refused {
            self.metrics.rejected(reason).add(*n);
        }
        if plan.too_large > 0 {
            self.metrics.rejected("too_large").add(plan.too_large);
            tracing::warn!(
                sink = %self.name,
                entries = plan.too_large,
                max_push_bytes = self.config.max_push_bytes.0,
                "dropped entries too large for any push (huge structured metadata?)"
            );
        }
        for push in plan.pushes {
            self.deliver(push).await?;
        }
        Ok(())
    }

    /// Delivers one push, splitting it as the server requires. Halves are
    /// sent first-half-first, which keeps each stream in time order.
    async fn deliver(&mut self, push: Push) -> Result<(), Cancelled> {
        let cap = self.config.max_push_bytes.0 as usize;
        let mut pending = vec![push];
        let mut announced_split = false;
        while let Some(push) = pending.pop() {
            let (body, decoded) =
                encode::encode(&push.request, self.config.encoding, self.config.compression);
            let size = body.bytes.len();
            let outcome = if size > cap || decoded > cap {
                // Only incompressible lines can make snappy's output grow past
                // the planned size: handle it as the server would.
                Outcome::TooLarge {
                    status: 0,
                    reason: "too_large",
                }
            } else {
                self.send_until_answered(&body, push.entries).await?
            };
            match outcome {
                Outcome::Accepted => {
                    self.metrics.sent.add(push.entries as u64);
                    self.metrics.bytes.add(size as u64);
                    self.metrics.batches.inc();
                    self.metrics.last_success.set(unix_now());
                }
                Outcome::PartlyRefused {
                    status,
                    reason,
                    refused,
                } => {
                    // Loki stored the rest: resending would duplicate it.
                    let refused = refused.unwrap_or(1).min(push.entries as u64);
                    self.metrics.sent.add(push.entries as u64 - refused);
                    self.metrics.bytes.add(size as u64);
                    self.metrics.batches.inc();
                    self.metrics.last_success.set(unix_now());
                    self.metrics.rejected(reason).add(refused);
                    tracing::warn!(
                        sink = %self.name, status, reason, bytes = size, entries = push.entries, refused,
                        "Loki refused some entries of a push and stored the others; the refused are dropped"
                    );
                }
                Outcome::TooLarge { status, reason } | Outcome::Rejected { status, reason }
                    if push.entries > 1 =>
                {
                    if matches!(outcome, Outcome::TooLarge { status: 1.., .. }) {
                        if let Some(target) = self.planner.lower_target(decoded) {
                            tracing::warn!(
                                sink = %self.name, refused_bytes = decoded, target_bytes = target,
                                max_push_bytes = self.config.max_push_bytes.0,
                                "Loki's limit is below max_push_bytes; packing smaller pushes from now on (set max_push_bytes to the server's limit)"
                            );
                        }
                    }
                    self.metrics.splits.inc();
                    if !announced_split {
                        announced_split = true;
                        tracing::warn!(
                            sink = %self.name, status, reason, bytes = size, entries = push.entries,
                            "Loki refused a push; splitting it to deliver the rest"
                        );
                    }
                    let (first, second) = push.split();
                    pending.push(second);
                    pending.push(first);
                }
                Outcome::TooLarge { status, reason } | Outcome::Rejected { status, reason } => {
                    self.metrics.rejected(reason).inc();
                    tracing::warn!(
                        sink = %self.name, status, reason, bytes = size, entries = 1,
                        "Loki refused an entry; dropped it"
                    );
                }
                Outcome::Retry { .. } => unreachable!("send_until_answered retries"),
            }
        }
        Ok(())
    }

    /// Sends `body` until the server gives an answer other than "try again".
    async fn send_until_answered(
        &mut self,
        body: &encode::Body,
        entries: usize,
    ) -> Result<Outcome, Cancelled> {
        loop {
            let outcome = tokio::select! {
                _ = self.shutdown.cancelled() => return Err(Cancelled),
                o = self.service.push(body) => o,
            };
            let Outcome::Retry { status, reason } = outcome else {
                self.backoff.reset();
                return Ok(outcome);
            };
            self.metrics.error(reason).inc();
            self.metrics.retries.inc();
            let delay = self.backoff.next_delay();
            tracing::warn!(
                sink = %self.name, status, reason, bytes = body.bytes.len(), entries,
                attempt = self.backoff.attempts(), retry_in_ms = delay.as_millis() as u64,
                "Loki push failed; retrying"
            );
            tokio::select! {
                _ = self.shutdown.cancelled() => return Err(Cancelled),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}

fn unix_now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64
}
