//! systemd journal source: libsystemd's sd_journal, a cursor that never lies.
//!
//! ```text
//!  journal files --sd_journal--> reader thread --batches (≤256 entries / 50 ms)--> async task --> Ingest::append(events, cursor)
//!                                (reader.rs)      bounded channel                     (this file)   spool: batch + cursor, atomically
//! ```
//!
//! - [`reader`]: the dedicated OS thread that owns the `sd_journal` handle,
//!   reads, filters and batches; survives rotation, vacuuming and journald
//!   restarts, reopens after read errors.
//! - [`cursor`]: where to start: right after the committed cursor, across a
//!   gap (counted, one warning, never a replay from the head), or by the
//!   first-start policy (`start_at`, bounded by `max_age`).
//! - [`mapping`]: journal fields -> [`Event`](crate::event::Event) labels and
//!   fields (the documented table).
//! - [`selfexclude`]: weir's own entries are skipped whatever the config says.
//! - [`config`]: `[sources.NAME]` keys.
//!
//! # Delivery
//!
//! Each batch is appended to the spool together with the cursor of its last
//! entry; the spool stores both atomically, and [`Ingest::committed_position`]
//! gives the cursor back after a restart. A batch that was read but not
//! appended (crash, shutdown, spool error) is simply read again: the journal
//! is the buffer. So delivery from the journal to the spool is at-least-once,
//! and exactly-once across clean restarts.
//!
//! # Which journal
//!
//! By default the system journal of the default namespace (system and user
//! files, as `journalctl` shows to root). `namespace = "NAME"` opens a
//! journald namespace through `sd_journal_open_namespace` (the namespace's
//! files under `/var/log/journal/<machine-id>.NAME` and
//! `/run/log/journal/<machine-id>.NAME`); `directory = "/path"` opens the
//! journal files of one directory.
//!
//! # Metrics (label `source` = the source's name)
//!
//! `weir_source_events_received_total`, `weir_source_bytes_received_total`
//! (bytes of all data items of the entries ingested),
//! `weir_journal_cursor_gaps_total`, `weir_journal_entries_skipped_total{reason}`
//! (`self`: weir's own entries; `excluded`: `exclude_units` /
//! `exclude_identifiers`), `weir_source_decode_errors_total{reason="unreadable_entry"}`,
//! `weir_journal_entries_missed_total` (entries the journal's sequence
//! numbers jumped over while reading: vacuumed before they were read, or lost
//! in a corrupt file; see [`cursor::missed_between`]),
//! `weir_journal_read_errors_total` (reopens).

pub mod config;
pub mod cursor;
pub mod mapping;
pub mod reader;
pub mod selfexclude;

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::ingest::Ingest;
use crate::metrics::{labels, Counter};
use crate::scrub::FieldMemo;
use crate::source::SourceError;
use crate::spool::SpoolError;

pub use config::{Config, RawConfig};
use config::{MaxAge, StartAt};

/// Batches in flight between the reader thread and the spool writer.
const CHANNEL_BATCHES: usize = 4;

/// Opens the journal (so that a wrong namespace, directory or permission
/// fails the start, before readiness is announced), then reads it until
/// `shutdown`. The returned task ends after the reader thread has closed the
/// journal.
pub async fn start(
    name: &str,
    config: &Config,
    ingest: Ingest,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, SourceError> {
    // Where this start begins, for a reopen before any cursor is committed.
    let now = cursor::now_us();
    let began_us = cursor::first_start_from(config.start_at, config.max_age.0, now).unwrap_or(now);
    let first = Run::open(name, config, &ingest, &shutdown)
        .await
        .map_err(|e| e.into_source_error(name))?;
    let name = name.to_owned();
    let config = config.clone();
    Ok(tokio::spawn(async move {
        let mut run = first;
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        loop {
            let appended = append_batches(&name, &ingest, &mut run, &shutdown).await;
            run.close().await;
            match appended {
                Ok(()) => return,
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(source = %name, error = %e, retry_in_ms = delay.as_millis() as u64,
                        "journal entries not appended to the spool; rereading from the committed cursor");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
            let config = match ingest.committed_position(&name) {
                Some(_) => config.clone(),
                None => from_time(&config, began_us),
            };
            run = loop {
                match Run::open(&name, &config, &ingest, &shutdown).await {
                    Ok(run) => break run,
                    Err(e) => {
                        let delay = backoff.next_delay();
                        tracing::warn!(source = %name, error = %e.into_source_error(&name), retry_in_ms = delay.as_millis() as u64,
                            "cannot reopen the journal; retrying");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                }
            };
        }
    }))
}

/// `config` starting at `from_us` whatever its first-start policy: a reader
/// restarted before any cursor was committed must not skip what the first
/// one read (`tail` would) nor reach back further (`head` would).
fn from_time(config: &Config, from_us: u64) -> Config {
    let ago = Duration::from_micros(cursor::now_us().saturating_sub(from_us));
    Config {
        start_at: StartAt::Ago(ago),
        max_age: MaxAge(None),
        ..config.clone()
    }
}

/// One reader thread, started from the spool's committed cursor.
struct Run {
    batches: mpsc::Receiver<reader::Batch>,
    /// Spooled batches back to the thread, to be refilled.
    recycle: mpsc::Sender<Vec<crate::event::Event>>,
    thread: std::thread::JoinHandle<()>,
    /// Stops this thread only (a child of the source's shutdown token).
    stop: CancellationToken,
}

enum OpenFailed {
    Spawn(std::io::Error),
    Open(reader::OpenError),
    Died,
}

impl OpenFailed {
    fn into_source_error(self, name: &str) -> SourceError {
        let name = name.to_owned();
        match self {
            OpenFailed::Spawn(source) => SourceError::Io {
                name,
                what: "cannot start the journal reader thread".into(),
                source,
            },
            OpenFailed::Open(e) => SourceError::Io {
                name,
                what: format!("cannot open {}", e.what),
                source: e.source,
            },
            OpenFailed::Died => SourceError::Setup {
                name,
                reason: "the journal reader thread ended while opening the journal".into(),
            },
        }
    }
}

impl Run {
    async fn open(
        name: &str,
        config: &Config,
        ingest: &Ingest,
        shutdown: &CancellationToken,
    ) -> Result<Run, OpenFailed> {
        let committed = ingest
            .committed_position(name)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
        let (tx, batches) = mpsc::channel(CHANNEL_BATCHES);
        // Room for every batch in flight to come back.
        let (recycle, recycled) = mpsc::channel(CHANNEL_BATCHES + 2);
        let (ready_tx, ready_rx) = oneshot::channel();
        let stop = shutdown.child_token();
        let thread = reader::spawn(
            name,
            config.clone(),
            committed,
            reader::Channels {
                batches: tx,
                recycled,
                ready: ready_tx,
            },
            stop.clone(),
            ingest.metrics(),
        )
        .map_err(OpenFailed::Spawn)?;
        match ready_rx.await {
            Ok(Ok(())) => Ok(Run {
                batches,
                recycle,
                thread,
                stop,
            }),
            Ok(Err(e)) => Err(OpenFailed::Open(e)),
            Err(_) => Err(OpenFailed::Died),
        }
    }

    /// Stops the thread and waits until it has closed the journal (it
    /// notices within one wait step).
    async fn close(self) {
        self.stop.cancel();
        drop(self.batches);
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

/// Appends each batch with its cursor until shutdown, then hands its events
/// back to the reader thread to refill. On a spool error the batch is not
/// retried from memory: the caller restarts the reader from the spool's
/// committed cursor, so nothing is skipped and the cursor never moves past a
/// batch the spool did not take.
async fn append_batches(
    name: &str,
    ingest: &Ingest,
    run: &mut Run,
    shutdown: &CancellationToken,
) -> Result<(), Interrupted> {
    // Fields found clean, kept across batches: the journal's units
    // interleave, so each field keeps its last few values (`recent`). Valid
    // for `ingest`'s scrubber, which outlives this call.
    let mut memo = FieldMemo::recent();
    loop {
        let mut batch = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            b = run.batches.recv() => match b {
                Some(b) => b,
                None if shutdown.is_cancelled() => return Ok(()),
                None => return Err(Interrupted::ReaderGone),
            },
        };
        // Not raced against shutdown: an append in progress completes.
        ingest
            .append_batch_with(
                name,
                &mut batch.events,
                &mut memo,
                Some(batch.cursor.as_bytes()),
            )
            .await
            .map_err(Interrupted::Spool)?;
        // Full (the thread is behind taking them back): these are freed.
        let _ = run.recycle.try_send(batch.events);
    }
}

/// Why batches stopped flowing before shutdown.
#[derive(Debug, thiserror::Error)]
enum Interrupted {
    #[error(transparent)]
    Spool(SpoolError),
    #[error("the journal reader thread ended unexpectedly")]
    ReaderGone,
}

/// The source's counters, taken once.
pub(crate) struct Metrics {
    pub events: Counter,
    pub bytes: Counter,
    pub gaps: Counter,
    pub skipped_self: Counter,
    pub skipped_excluded: Counter,
    pub unreadable: Counter,
    pub missed: Counter,
    pub read_errors: Counter,
}

impl Metrics {
    pub fn new(registry: &crate::metrics::Metrics, source: &str) -> Metrics {
        let s = || labels::source(source);
        let reason = |r| labels::SourceReason::new(source, r);
        Metrics {
            events: registry.source_events_received.with(s()),
            bytes: registry.source_bytes_received.with(s()),
            gaps: registry.journal_cursor_gaps.with(s()),
            skipped_self: registry.journal_entries_skipped.with(reason("self")),
            skipped_excluded: registry.journal_entries_skipped.with(reason("excluded")),
            unreadable: registry
                .source_decode_errors
                .with(reason("unreadable_entry")),
            missed: registry.journal_entries_missed.with(s()),
            read_errors: registry.journal_read_errors.with(s()),
        }
    }
}
