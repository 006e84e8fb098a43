//! The spool's shared in-memory state: one mutex, held only for short,
//! syscall-free critical sections (the writer thread does all file I/O
//! outside it).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use tokio::sync::{watch, Notify};

use super::{Config, Offset};
use crate::metrics::{labels, Counter, Gauge};

/// What the spool knows about one segment file.
#[derive(Debug, Clone)]
pub struct SegMeta {
    /// Bytes of the segment header; record bytes start here in the file.
    pub header_len: u64,
    /// Logical end of the readable records (the next segment may start
    /// later only if damage was found in this one).
    pub end: Offset,
    /// Events in the segment's records (for counting losses on drop).
    pub events: u64,
    /// Bytes of the file on disk (or soon, once the writer catches up).
    pub disk_len: u64,
}

/// A sink's cursor and counters.
pub struct SinkState {
    /// Acknowledged up to here (in memory).
    pub acked: Offset,
    /// Acknowledged up to here in the cursor file.
    pub stored: Offset,
    /// The reader's next record (everything before it was handed out).
    pub read: Offset,
    /// Events handed out from segment `read_seg` (loss accounting): the
    /// segment the reader is in, which is not the one holding `read` when
    /// `read` is exactly at the end of a segment.
    pub read_events_in_seg: u64,
    pub read_seg: Offset,
    /// Events this sink lost to `drop_oldest` since start.
    pub dropped_total: u64,
    /// Wall-clock ns of the oldest unacknowledged record, as of the last
    /// cursor store; `None` when caught up.
    pub oldest_unacked_ns: Option<i64>,
    pub dropped: Counter,
    pub lag: Gauge,
    pub oldest: Gauge,
}

impl SinkState {
    pub fn new(name: &str, acked: Offset, registry: &crate::metrics::Metrics) -> SinkState {
        SinkState {
            acked,
            stored: acked,
            read: acked,
            read_events_in_seg: 0,
            read_seg: acked,
            dropped_total: 0,
            oldest_unacked_ns: None,
            dropped: registry
                .spool_dropped_events
                .with(labels::SinkReason::new(name, "spool_full")),
            lag: registry.spool_sink_lag_bytes.with(labels::sink(name)),
            oldest: registry.spool_oldest_unacked.with(labels::sink(name)),
        }
    }

    #[cfg(test)]
    pub fn new_for_test(name: &str, acked: Offset) -> SinkState {
        SinkState::new(name, acked, &crate::metrics::Metrics::new())
    }
}

/// A new segment to start at byte `at` of the pending buffer.
pub struct Roll {
    pub at: usize,
    pub base: Offset,
    pub header: Vec<u8>,
}

/// Appended records the writer thread has not written yet.
#[derive(Default)]
pub struct Pending {
    pub buf: Vec<u8>,
    pub rolls: Vec<Roll>,
}

/// Why appends cannot proceed right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stuck {
    /// ENOSPC with nothing left to drop.
    DiskFull,
    /// Another write error (EIO, EROFS, ...).
    Io(std::io::ErrorKind),
}

pub struct State {
    /// Logical end of everything appended.
    pub next: Offset,
    /// Logical end of what is fdatasync'ed; readers see data up to here.
    pub durable: Offset,
    /// The highest offset someone waits to be durable.
    pub sync_wanted: Offset,
    /// When the oldest not-yet-synced append happened.
    pub unsynced_since: Option<Instant>,
    pub pending: Pending,
    pub segments: BTreeMap<Offset, SegMeta>,
    /// Disk bytes of every segment, pending records included.
    pub bytes: u64,
    /// Each source's last committed position.
    pub positions: BTreeMap<String, Vec<u8>>,
    pub sinks: BTreeMap<String, SinkState>,
    /// Segments (by base) to unlink.
    pub deletions: Vec<Offset>,
    /// Base of the segment the writer thread is writing.
    pub writer_base: Offset,
    pub stuck: Option<Stuck>,
    /// Bumped to ask the writer to store cursors now.
    pub store_wanted: u64,
    pub shutdown: bool,
}

impl State {
    #[cfg(test)]
    pub fn new_for_test() -> State {
        State {
            next: 0,
            durable: 0,
            sync_wanted: 0,
            unsynced_since: None,
            pending: Pending::default(),
            segments: BTreeMap::new(),
            bytes: 0,
            positions: BTreeMap::new(),
            sinks: BTreeMap::new(),
            deletions: Vec::new(),
            writer_base: 0,
            stuck: None,
            store_wanted: 0,
            shutdown: false,
        }
    }
}

/// The spool's handles in the registry, and the registry for its sinks'.
pub struct Metrics {
    pub registry: crate::metrics::Metrics,
    pub bytes: Gauge,
    pub segments: Gauge,
    pub fsyncs: Counter,
    pub discarded: Counter,
    pub corrupt: Counter,
    pub corrupt_lost: Counter,
}

impl Metrics {
    pub fn new(registry: &crate::metrics::Metrics) -> Metrics {
        Metrics {
            registry: registry.clone(),
            bytes: registry.spool_bytes.clone(),
            segments: registry.spool_segments.clone(),
            fsyncs: registry.spool_fsyncs.clone(),
            discarded: registry.spool_recovered_discarded_bytes.clone(),
            corrupt: registry.spool_corrupt_records.clone(),
            corrupt_lost: registry.spool_corrupt_lost_events.clone(),
        }
    }
}

/// Everything the handles, readers and the writer thread share.
pub struct Shared {
    pub dir: PathBuf,
    pub config: Config,
    pub state: Mutex<State>,
    /// Wakes the writer thread.
    pub wake: Condvar,
    /// The durable offset, for readers and `wait_durable`.
    pub durable: watch::Sender<Offset>,
    /// The cursor-store generation last completed by the writer.
    pub stored: watch::Sender<u64>,
    /// Signalled when appends that had to wait may proceed.
    pub space: Notify,
    /// Set, once and for good, by the first failed fdatasync (see
    /// [`super::SpoolError::SyncFailed`]).
    pub failed: watch::Sender<Option<std::io::ErrorKind>>,
    /// Failed attempts to store the sink cursors (logged one by one): the
    /// writer retries them once a [`super::writer::STORE_RETRY`].
    pub store_failures: std::sync::atomic::AtomicU64,
    pub metrics: Metrics,
}

impl Shared {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough state
        // (every critical section is a few assignments); keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why the spool stopped reporting data durable, if it did.
    pub fn failure(&self) -> Option<std::io::ErrorKind> {
        *self.failed.borrow()
    }

    pub fn cursors_dir(&self) -> PathBuf {
        self.dir.join("cursors")
    }
}
