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
//!   forever while the spool holds the data; one per sink, whatever the
//!   number of lanes: with the server down every lane's attempt fails, and
//!   the sink waits (and logs) once per round, not once per lane;
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
//!   (every event sent, or dropped and counted), strictly in spool order;
//! - overlap: the next batch is read while others are delivered, and a sink
//!   that makes lanes ([`Sink::lane`]) has up to [`Policy::in_flight`]
//!   batches delivered at once (Loki's `max_in_flight`).
//!
//! The log lines name the sink, counts, sizes and reasons, never an event.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::instrument::WithSubscriber;

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
    /// Most batches delivered at once (1: one after the other). Beyond 1,
    /// the sink must make lanes ([`Sink::lane`]); batches are still
    /// acknowledged in spool order.
    pub in_flight: usize,
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
pub trait Sink: Send + Sized + 'static {
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

    /// Whether [`Sink::begin`] reads events' fields. `false`: the spool
    /// reader skips them (most of an event's strings), and batches are
    /// bounded by the size of the rest.
    fn reads_fields(&self) -> bool {
        true
    }

    /// Another copy of this sink, to deliver a batch while this one
    /// delivers another ([`Policy::in_flight`] > 1). It shares what must be
    /// one per sink (Loki: the stream planner). `None`: one batch at a time.
    fn lane(&self) -> Option<Self> {
        None
    }
}

/// The sink metrics, one set for every kind of sink, shared by its lanes.
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
    by_reason: Mutex<HashMap<(&'static str, &'static str), Counter>>,
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
            by_reason: Mutex::new(HashMap::new()),
        }
    }

    fn by_reason(&self, family: &'static str, reason: &'static str) -> Counter {
        let family_of = if family == n::SINK_ERRORS {
            &self.errors
        } else {
            &self.rejected
        };
        let mut cache = self.by_reason.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry((family, reason))
            .or_insert_with(|| family_of.with(labels::SinkReason::new(&self.sink, reason)))
            .clone()
    }
}

/// One delivering copy of the sink: a lane delivers one batch at a time,
/// start to end.
struct Lane<S> {
    sink: S,
}

/// The sink's one backoff, shared by its lanes.
struct Retry {
    backoff: Backoff,
    /// No lane attempts a step before this: a backoff delay in progress.
    /// A lane whose attempt fails meanwhile (it was already in flight)
    /// joins this wait without logging or lengthening it.
    until: Option<Instant>,
}

/// A batch handed to a lane, in spool order.
struct InFlight {
    /// Spool offset just past the batch: acknowledged once this batch and
    /// every earlier one are accounted for.
    end: Offset,
    done: bool,
}

/// Delivers from `reader` through `sink` until `shutdown` is cancelled (or
/// the spool fails, which is logged: the data then stays spooled).
///
/// Up to [`Policy::in_flight`] batches are delivered at once, each by a
/// lane of its own (a task: one batch's encoding runs beside another's
/// wait on the server), while the next batch is read and decoded. Batches
/// are prepared ([`Sink::begin`]) in spool order on this task, and
/// acknowledged strictly in that order: a batch finished before an
/// earlier one waits for it, so a crash or shutdown re-sends, never skips.
pub async fn run<S: Sink>(
    name: String,
    sink: S,
    mut reader: spool::Reader,
    shutdown: CancellationToken,
) {
    let policy = sink.policy();
    if !sink.reads_fields() {
        reader.skip_fields();
    }
    let m = Arc::new(Metrics::new(reader.metrics(), &name));
    let retry = Arc::new(Mutex::new(Retry {
        backoff: Backoff::new(policy.backoff_initial, policy.backoff_max),
        until: None,
    }));
    let lane = |sink| Lane { sink };
    let mut free = Vec::new();
    while free.len() + 1 < policy.in_flight.max(1) {
        match sink.lane() {
            Some(other) => free.push(lane(other)),
            None => break,
        }
    }
    free.push(lane(sink));
    // Dropping the set (any return below, shutdown included) aborts every
    // delivery at its next await: what was not acknowledged stays spooled.
    let mut tasks = tokio::task::JoinSet::new();
    let mut order: VecDeque<InFlight> = VecDeque::new();
    let mut first_seq = 0u64;
    let mut gathered = Gathered::default();
    let mut ready: Option<(Vec<Event>, Offset)> = None;
    loop {
        while ready.is_some() && !free.is_empty() {
            let (events, end) = ready.take().expect("checked");
            let mut lane = free.pop().expect("checked");
            let prepared = lane.sink.begin(&events);
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
            let seq = first_seq + order.len() as u64;
            order.push_back(InFlight { end, done: false });
            let (m, name, retry) = (m.clone(), name.clone(), retry.clone());
            // The delivery logs where this loop logs (a task does not
            // inherit the subscriber of the task that spawns it).
            let delivery = async move {
                deliver(&name, &mut lane, &m, &retry).await;
                (seq, lane)
            };
            tasks.spawn(delivery.with_current_subscriber());
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = gather(&mut reader, &policy, &mut gathered), if ready.is_none() => {
                if let Err(e) = r {
                    tracing::error!(sink = %name, error = %e, "cannot read the spool; the sink stops");
                    return;
                }
                ready = Some(gathered.take());
            }
            Some(joined) = tasks.join_next() => {
                let (seq, lane) = match joined {
                    Ok(done) => done,
                    Err(e) => {
                        // Not the error's text: a panic's message can quote
                        // what was being delivered (e.g. a string slice).
                        let how = if e.is_panic() { "panicked" } else { "was cancelled" };
                        tracing::error!(sink = %name, "a delivery task {how}; the sink stops");
                        return;
                    }
                };
                free.push(lane);
                order[(seq - first_seq) as usize].done = true;
                let mut acked = None;
                while order.front().is_some_and(|b| b.done) {
                    acked = order.pop_front().map(|b| b.end);
                    first_seq += 1;
                }
                if let Some(end) = acked {
                    if let Err(e) = reader.ack(end) {
                        tracing::error!(sink = %name, error = %e, "cannot acknowledge in the spool; the sink stops");
                        return;
                    }
                }
            }
        }
    }
}

/// Delivers the lane's current batch to the end, retrying after the
/// sink's backoff delays; counts every step.
async fn deliver<S: Sink>(name: &str, lane: &mut Lane<S>, m: &Metrics, retry: &Mutex<Retry>) {
    let lock = || retry.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        // A batch begun, or a step resumed, while another lane's failure
        // is being waited out waits too: one round of attempts per delay.
        let until = lock().until;
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
        match lane.sink.step().await {
            Step::Sent { events, bytes } => {
                let mut r = lock();
                if r.backoff.attempts() > 0 {
                    tracing::info!(sink = %name, failed_attempts = r.backoff.attempts(), "delivering again");
                    r.backoff.reset();
                    r.until = None;
                }
                drop(r);
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
                let now = Instant::now();
                let asked = now + failure.after.unwrap_or_default();
                let mut r = lock();
                match r.until {
                    // Another lane failed in this round and logged: wait
                    // with it (longer if this answer asked for longer).
                    Some(until) if until > now => r.until = Some(until.max(asked)),
                    _ => {
                        let delay = r.backoff.next_delay().max(asked - now);
                        r.until = Some(now + delay);
                        tracing::warn!(
                            sink = %name,
                            reason = failure.reason,
                            error = %failure.detail,
                            attempt = r.backoff.attempts(),
                            retry_in_ms = delay.as_millis() as u64,
                            "{}",
                            S::RETRY_MESSAGE
                        );
                    }
                }
            }
            Step::Done => return,
        }
    }
}

/// A batch being gathered. It lives outside [`gather`]'s future, so that
/// the driver may drop that future (to count a finished delivery) without
/// losing the events read so far.
#[derive(Default)]
struct Gathered {
    events: Vec<Event>,
    bytes: usize,
    end: Offset,
    /// `linger` after the first event.
    deadline: Option<Instant>,
}

impl Gathered {
    /// Reads into the batch: each event is decoded in its place (a batch
    /// is often gathered from several reads, as the spool becomes durable),
    /// in the reader's reused `Vec` ([`spool::Reader::take_spare`]).
    async fn read(
        &mut self,
        reader: &mut spool::Reader,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<(), spool::SpoolError> {
        if self.events.capacity() == 0 {
            self.events = reader.take_spare();
        }
        let (end, bytes) = reader
            .read_into(&mut self.events, max_events, max_bytes)
            .await?;
        self.end = end;
        self.bytes += bytes;
        Ok(())
    }

    fn take(&mut self) -> (Vec<Event>, Offset) {
        let out = (std::mem::take(&mut self.events), self.end);
        self.bytes = 0;
        self.deadline = None;
        out
    }
}

/// Reads from the spool into `g` until the batch is full or `linger` has
/// passed since its first event. Cancel-safe: what was read stays in `g`.
async fn gather(
    reader: &mut spool::Reader,
    policy: &Policy,
    g: &mut Gathered,
) -> Result<(), spool::SpoolError> {
    let max_events = policy.max_events.max(1);
    if g.events.is_empty() {
        g.read(reader, max_events.min(READ_EVENTS), policy.max_bytes)
            .await?;
        if policy.linger.is_zero() {
            return Ok(());
        }
        g.deadline = Some(Instant::now() + policy.linger);
    }
    let deadline = g.deadline.unwrap_or_else(Instant::now);
    while g.bytes < policy.max_bytes && g.events.len() < max_events {
        let room = (max_events - g.events.len()).min(READ_EVENTS);
        tokio::select! {
            biased;
            _ = tokio::time::sleep_until(deadline) => break,
            r = g.read(reader, room, policy.max_bytes - g.bytes) => r?,
        }
    }
    Ok(())
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

    /// Appends each text as an event of its own record (a batch each).
    async fn append_one_record_each(spool: &crate::spool::Spool, texts: &[&str]) {
        for text in texts {
            spool
                .append(&[Event::new(0, Origin::Docker, *text)], None)
                .await
                .unwrap();
        }
    }

    /// A test sink's policy: fast backoff, 1 MiB batches.
    fn test_policy(max_events: usize, linger: Duration, in_flight: usize) -> Policy {
        Policy {
            max_events,
            max_bytes: 1 << 20,
            linger,
            backoff_initial: Duration::from_millis(1),
            backoff_max: Duration::from_millis(5),
            in_flight,
        }
    }

    /// A sink that plays a script of steps and records what it was given.
    struct Scripted {
        steps: VecDeque<Step>,
        batches: Arc<Mutex<Vec<usize>>>,
    }

    impl Sink for Scripted {
        const RETRY_MESSAGE: &'static str = "scripted sink failed; retrying";

        fn policy(&self) -> Policy {
            test_policy(100, Duration::from_millis(200), 1)
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
        append_one_record_each(&spool, &["a", "b", "c"]).await;
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

    /// A sink with lanes whose first batch hangs until released, while
    /// later ones are done at once.
    struct Gated {
        began: Arc<Mutex<Vec<usize>>>,
        done: Arc<std::sync::atomic::AtomicUsize>,
        release: Arc<tokio::sync::Notify>,
        batch: usize,
    }

    impl Sink for Gated {
        const RETRY_MESSAGE: &'static str = "gated sink failed; retrying";

        fn policy(&self) -> Policy {
            test_policy(1, Duration::ZERO, 3)
        }

        fn begin(&mut self, _: &[Event]) -> Prepared {
            let mut began = self.began.lock().unwrap();
            self.batch = began.len();
            began.push(self.batch);
            Prepared::default()
        }

        async fn step(&mut self) -> Step {
            if self.batch == 0 {
                self.release.notified().await;
            }
            self.done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Step::Done
        }

        fn lane(&self) -> Option<Gated> {
            Some(Gated {
                began: self.began.clone(),
                done: self.done.clone(),
                release: self.release.clone(),
                batch: 0,
            })
        }
    }

    /// Batches are delivered side by side, but a batch finished before an
    /// earlier one is acknowledged only once that one is: the spool's
    /// cursor never passes an undelivered batch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acknowledges_in_spool_order_whatever_order_batches_finish_in() {
        let name = "driver-order";
        let dir = tempfile::tempdir().unwrap();
        let mut problems = Problems::default();
        let config = toml::from_str::<spool::RawConfig>("max_age = \"0s\"")
            .unwrap()
            .validate("spool", &mut problems);
        let spool = spool::Spool::open(dir.path(), &config, &[name.to_owned()]).unwrap();
        let sink = Gated {
            began: Arc::default(),
            done: Arc::default(),
            release: Arc::default(),
            batch: 0,
        };
        let (began, done, release) = (sink.began.clone(), sink.done.clone(), sink.release.clone());
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            name.to_owned(),
            sink,
            spool.reader(name).unwrap(),
            stop.clone(),
        ));
        let wait = |what: &str, f: &dyn Fn() -> bool| {
            let start = std::time::Instant::now();
            while !f() {
                assert!(start.elapsed() < Duration::from_secs(10), "never {what}");
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        append_one_record_each(&spool, &["a", "b", "c"]).await;
        let lag = || spool.stats().sinks[0].lag_bytes;
        let all = lag();
        wait("began 3 batches", &|| began.lock().unwrap().len() == 3);
        wait("finished the later 2", &|| {
            done.load(std::sync::atomic::Ordering::SeqCst) == 2
        });
        // Time for an (erroneous) acknowledgement to land.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            lag(),
            all,
            "batches 2 and 3 were acknowledged before batch 1"
        );
        release.notify_one();
        wait("acknowledged all 3", &|| lag() == 0);
        stop.cancel();
        task.await.unwrap();
    }
}
