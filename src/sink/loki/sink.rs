//! Loki on the sink driver: plan a batch's pushes, deliver each (splitting,
//! dropping only what Loki refuses); the driver retries, counts and
//! acknowledges.
//!
//! A batch is acknowledged only when every entry of it was accepted or
//! counted as refused. While a push is retried the batch is kept; shutdown
//! interrupts at once, leaving the unacknowledged batch in the spool (it is
//! sent again after the next start, and Loki ignores the exact duplicates of
//! what it already stored).

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use super::batch::{Planner, Push};
use super::encode;
use super::response::Outcome;
use super::service::Service;
use super::Config;
use crate::event::Event;
use crate::metrics::{labels, Counter};
use crate::sink::driver::{self, Failure, Prepared, Step};

/// Most events in one batch; `batch_max_bytes` or `batch_timeout` usually
/// ends a batch first.
const BATCH_EVENTS: usize = 100_000;

/// The Loki sink on the [`driver`].
pub(super) struct LokiSink {
    name: String,
    config: Config,
    /// One per sink, shared by its lanes: stream liveness and the stream
    /// cap are per sink, and batches are planned in spool order.
    planner: Arc<Mutex<Planner>>,
    /// Built on first use, and again after a setup failure (a CA file fixed
    /// while weir runs): the data waits in the spool meanwhile.
    service: Option<Service>,
    /// The service once any lane built it: lanes share one HTTP client
    /// (its connection pool holds a connection per push in flight), built
    /// once (loading the system's CA certificates is costly).
    shared_service: Arc<Mutex<Option<Service>>>,
    /// Pushes of the current batch still to send, the next one last.
    pending: Vec<Push>,
    /// The encoded form of `pending.last()`, kept across retries.
    encoded: Option<(encode::Body, usize)>,
    /// This lane's encoding buffers, reused from push to push.
    scratch: encode::Scratch,
    /// The lines of the current batch's pushes, one buffer reused from
    /// batch to batch (up to [`encode::KEEP_TEXT_BYTES`]).
    text: encode::Text,
    announced_split: bool,
    /// Entries of the current batch refused without being sent (Loki's
    /// known limits) or refused by a 400 whose push Loki otherwise stored:
    /// reported to the driver as dropped before the next push is sent.
    drops: Vec<(u64, &'static str)>,
    /// `weir_sink_splits_total`: only Loki splits pushes.
    splits: Counter,
    /// `weir_sink_loki_demoted_events_total`: events whose variable labels
    /// went into the line because the stream cap was reached.
    demoted: Counter,
}

impl LokiSink {
    pub(super) fn new(name: &str, config: Config, registry: &crate::metrics::Metrics) -> LokiSink {
        LokiSink {
            name: name.to_owned(),
            planner: Arc::new(Mutex::new(Planner::new(&config))),
            config,
            service: None,
            shared_service: Arc::default(),
            pending: Vec::new(),
            encoded: None,
            scratch: encode::Scratch::default(),
            text: encode::Text::default(),
            announced_split: false,
            drops: Vec::new(),
            splits: registry.sink_splits.with(labels::sink(name)),
            demoted: registry.loki_demoted_events.with(labels::sink(name)),
        }
    }
}

impl LokiSink {
    fn planner(&self) -> std::sync::MutexGuard<'_, Planner> {
        // Planning does not panic midway in a way that leaves the planner
        // unusable: its maps stay consistent.
        self.planner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl driver::Sink for LokiSink {
    const RETRY_MESSAGE: &'static str = "Loki push failed; retrying";

    fn policy(&self) -> driver::Policy {
        driver::Policy {
            max_events: BATCH_EVENTS,
            max_bytes: self.config.batch_max_bytes.0 as usize,
            linger: self.config.batch_timeout.0,
            backoff_initial: self.config.retry_initial_backoff.0,
            backoff_max: self.config.retry_max_backoff.0,
            in_flight: self.config.max_in_flight,
        }
    }

    /// Raw lines without structured metadata are the message alone.
    fn reads_fields(&self) -> bool {
        self.config.structured_metadata || self.config.line_format != super::LineFormat::Raw
    }

    fn lane(&self) -> Option<LokiSink> {
        Some(LokiSink {
            name: self.name.clone(),
            config: self.config.clone(),
            planner: self.planner.clone(),
            service: self.service.clone(),
            shared_service: self.shared_service.clone(),
            pending: Vec::new(),
            encoded: None,
            scratch: encode::Scratch::default(),
            text: encode::Text::default(),
            announced_split: false,
            drops: Vec::new(),
            splits: self.splits.clone(),
            demoted: self.demoted.clone(),
        })
    }

    fn begin(&mut self, events: &[Event]) -> Prepared {
        // Not `self.planner()`: the plan writes to `self.text` meanwhile.
        let plan = self.planner.lock().unwrap_or_else(|e| e.into_inner()).plan(
            events,
            unix_now_ns(),
            &mut self.text,
        );
        self.demoted.add(plan.demoted);
        if plan.too_large > 0 {
            tracing::warn!(
                sink = %self.name,
                entries = plan.too_large,
                max_push_bytes = self.config.max_push_bytes.0,
                "Loki entries too large for any push (huge structured metadata?)"
            );
        }
        self.pending = plan.pushes;
        self.pending.reverse();
        self.encoded = None;
        self.announced_split = false;
        self.drops = plan.refused.into_iter().map(|(r, n)| (n, r)).collect();
        Prepared {
            truncated: plan.truncated,
            too_large: plan.too_large,
        }
    }

    /// Sends the next push; splits it as the server requires (halves are
    /// sent first-half-first, which keeps each stream in time order).
    async fn step(&mut self) -> Step {
        let cap = self.config.max_push_bytes.0 as usize;
        loop {
            if let Some((events, reason)) = self.drops.pop() {
                return Step::Dropped { events, reason };
            }
            if self.service.is_none() {
                let mut shared = self
                    .shared_service
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                let built = match &*shared {
                    Some(s) => Ok(s.clone()),
                    None => Service::new(&self.config).inspect(|s| *shared = Some(s.clone())),
                };
                drop(shared);
                match built {
                    Ok(s) => self.service = Some(s),
                    Err(e) => {
                        return Step::Retry(Failure {
                            reason: "client_setup",
                            detail: format!("cannot set up the Loki client: {e}"),
                            after: None,
                        })
                    }
                }
            }
            let Some(push) = self.pending.last() else {
                // An idle lane does not pin a large batch's lines.
                if self.text.held_bytes() > encode::KEEP_TEXT_BYTES {
                    self.text = encode::Text::default();
                }
                return Step::Done;
            };
            let entries = push.entries;
            let (body, decoded) = self.encoded.get_or_insert_with(|| {
                self.scratch.encode(
                    &push.streams,
                    &self.text,
                    self.config.encoding,
                    self.config.compression,
                )
            });
            let (size, decoded) = (body.bytes.len(), *decoded);
            let outcome = if size > cap || decoded > cap {
                // Only incompressible lines can make snappy's output grow past
                // the planned size: handle it as the server would.
                Outcome::TooLarge {
                    status: 0,
                    reason: "too_large",
                }
            } else {
                let service = self.service.as_ref().expect("built above");
                match service.push(body).await {
                    Ok(outcome) => outcome,
                    Err(failed) => {
                        return Step::Retry(Failure {
                            reason: failed.reason,
                            detail: format!(
                                "{} ({}); a push of {size} bytes, {entries} entries",
                                failed.cause,
                                service.peer()
                            ),
                            after: None,
                        })
                    }
                }
            };
            match outcome {
                Outcome::Accepted => {
                    self.pending.pop();
                    self.encoded = None;
                    return Step::Sent {
                        events: entries as u64,
                        bytes: size as u64,
                    };
                }
                Outcome::PartlyRefused {
                    status,
                    reason,
                    refused,
                } => {
                    // Loki stored the rest: sending any of it again would
                    // store it twice. The refused are dropped and counted.
                    let refused = refused.unwrap_or(1).min(entries as u64);
                    tracing::warn!(
                        sink = %self.name, status, reason, bytes = size, entries, refused,
                        "Loki refused some entries of a push and stored the others; the refused are dropped"
                    );
                    self.pending.pop();
                    self.encoded = None;
                    if refused > 0 {
                        self.drops.push((refused, reason));
                    }
                    return Step::Sent {
                        events: entries as u64 - refused,
                        bytes: size as u64,
                    };
                }
                Outcome::TooLarge { status, reason } | Outcome::Rejected { status, reason }
                    if entries > 1 =>
                {
                    if matches!(outcome, Outcome::TooLarge { status: 1.., .. }) {
                        let lowered = self.planner().lower_target(decoded);
                        if let Some(target) = lowered {
                            tracing::warn!(
                                sink = %self.name, refused_bytes = decoded, target_bytes = target,
                                max_push_bytes = self.config.max_push_bytes.0,
                                "Loki's limit is below max_push_bytes; packing smaller pushes from now on (set max_push_bytes to the server's limit)"
                            );
                        }
                    }
                    self.splits.inc();
                    if !self.announced_split {
                        self.announced_split = true;
                        tracing::warn!(
                            sink = %self.name, status, reason, bytes = size, entries,
                            "Loki refused a push; splitting it to deliver the rest"
                        );
                    }
                    let push = self.pending.pop().expect("checked above");
                    self.encoded = None;
                    let (first, second) = push.split();
                    self.pending.push(second);
                    self.pending.push(first);
                }
                Outcome::TooLarge { reason, .. } | Outcome::Rejected { reason, .. } => {
                    self.pending.pop();
                    self.encoded = None;
                    return Step::Dropped { events: 1, reason };
                }
                Outcome::Retry { status, reason } => {
                    let peer = self.service.as_ref().map(Service::peer).unwrap_or_default();
                    return Step::Retry(Failure {
                        reason,
                        detail: format!(
                            "HTTP {status} from {peer} to a push of {size} bytes, {entries} entries"
                        ),
                        after: None,
                    });
                }
            }
        }
    }
}

fn unix_now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
