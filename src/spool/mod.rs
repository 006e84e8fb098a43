//! The spool: the durable write-ahead log between sources and sinks.
//!
//! Sources append batches (optionally with their resume position, stored in
//! the same record so it is committed atomically with the batch) and may
//! wait until an offset is durable; each sink reads from its own cursor and
//! acknowledges up to an offset. Nothing is deleted until every configured
//! sink acknowledged it, unless the quota forces it (`when_full`).
//!
//! # Offsets
//!
//! An [`Offset`] is a logical byte position: the number of record bytes
//! appended since the spool was created. It only grows (also across
//! restarts and deletions). Segment headers do not count.
//!
//! # On-disk format (version 2)
//!
//! ```text
//! <state_dir>/spool/
//!   00000000000000000000.seg     segment starting at offset 0
//!   00000000000067108900.seg     next segment: named by its base offset
//!   cursors/<sink>.cursor        one per configured sink
//!   damaged/<base>-<pos>.bin     damaged bytes recovery replaced (for inspection)
//!
//! segment := header record*
//! header  := "WEIRSEG\0" version:u16le flags:u16le header_len:u32le base:u64le
//!            npos:u32le (src_len:u16le src pos_len:u32le pos)* crc32c:u32le
//! record  := "WRec" len:u32le crc32c:u32le count:u32le flags:u8 pad:[u8;3] time_ns:i64le body
//! body    := [src_len:u16le src pos_len:u32le pos]  if flags & 1
//!            event{count}                          crate::event::codec, version 2 if flags & 4
//!            damaged bytes, count = 0               if flags & 2 (skipped)
//! cursor  := "WEIRCUR1" acked:u64le crc32c:u32le
//! ```
//!
//! The record CRC covers `count..time_ns` and the body; `len` bounds it, so a
//! torn or zero-filled tail fails the check. The segment header's position
//! snapshot holds every source's position as of `base`, so positions survive
//! the deletion of the segments that recorded them. A segment header with a
//! version above [`segment::VERSION`] makes [`Spool::open`] fail with
//! [`SpoolError::NewerFormat`].
//!
//! Version 2 records store what repeats between a batch's events once
//! (version 2 of the event encoding); segments of version 1 (records with
//! events in version 1) are still read, and after an upgrade appends go to a
//! new segment of version 2, which an older weir refuses instead of misreading.
//!
//! # Durability and visibility
//!
//! Appends are group-committed by a writer thread (see `writer`), which
//! leaves the fdatasyncs to a sync thread (see `syncer`) and keeps writing
//! meanwhile: fdatasync at most `fsync_interval` after an append,
//! immediately when someone awaits [`Spool::wait_durable`]. Readers only
//! see durable data. A closed segment is fdatasync'ed before the next is
//! created; creations, deletions and cursor renames are followed by a
//! directory fsync.
//!
//! A failed fdatasync is final ([`SpoolError::SyncFailed`]). Retrying it
//! would be a lie: Linux marks the pages whose writeback failed clean, so
//! the retry succeeds without writing them (thin or network storage out of
//! space, a failing disk). From then on nothing is reported durable,
//! appends fail, and the pipeline stops with an error so that systemd
//! restarts weir on what the disk really holds; sources resend whatever
//! was never acknowledged, so nothing acknowledged is lost.
//!
//! # Recovery
//!
//! [`Spool::open`] checks every record of every segment (magic, length and
//! CRC; the whole spool is read once at start). Damage costs only the
//! damaged records (see `repair`):
//!
//! - a damaged record with a valid record after it (a flipped bit, zeroed
//!   sectors, in the tail or a closed segment): the bytes up to the next
//!   valid record are copied to `damaged/` and rewritten in place as one
//!   *skipped* record (flags bit 2, no events) of the same length, so every
//!   offset and cursor stays valid and the repair is done once. Counted in
//!   `weir_spool_corrupt_records_total`, the events the damaged header
//!   claimed in `weir_spool_corrupt_lost_events_total`, one error line each;
//! - after damage in the tail, source positions stop at the last record
//!   before it (a power cut can leave a hole of unsynced pages before
//!   records that reached the disk: the source reads the hole again rather
//!   than skip it), and appends go on in a new tail segment whose header
//!   holds those positions;
//! - damage at the end of the tail with no valid record after it (a crash
//!   during a write): copied aside and cut off
//!   (`weir_spool_recovered_discarded_bytes_total`, one warning);
//! - a damaged segment header in front of valid records: rebuilt, as long as
//!   the old one (zero padding), with the previous segment's source
//!   positions (older positions: sources may resend, never skip); a segment
//!   with no valid record left is removed (the tail) or renamed
//!   `.seg.corrupt` (a closed one).
//!
//! `damaged/` holds at most 64 MiB; later damage is still skipped and
//! counted, just not copied. Garbage never panics. A record read back damaged
//! after the open (the disk changed under a running weir) skips the rest of
//! its segment and is counted the same way.
//!
//! # Sinks
//!
//! A sink new to the config starts at the **oldest** data still in the
//! spool (it gets the backlog rather than nothing). Cursor files of sinks no
//! longer configured are deleted at open, so they hold no segment. A segment
//! is deleted once every configured sink's *stored* cursor is past it.
//!
//! # Full spool
//!
//! Above `max_bytes`, `drop_oldest` drops the oldest closed segment, moves
//! lagging readers past it and counts what each sink lost
//! (`weir_spool_dropped_events_total{sink,reason="spool_full"}`); `block`
//! makes appends wait for acknowledgements to free space. A full disk
//! (ENOSPC) is handled the same way by the writer thread, which cuts any
//! partial write back to the last good record; when nothing can be dropped
//! appends fail with [`SpoolError::Full`] (or wait, under `block`) until a
//! retry succeeds: the spool recovers by itself when space returns.

mod cursor;
mod quota;
mod reader;
mod record;
mod recovery;
mod repair;
pub mod segment;
mod state;
mod syncer;
mod writer;

use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

use crate::event::Event;
use crate::problems::Problems;
use crate::units::{ByteSize, HumanDuration};

pub use reader::Reader;
use state::{Pending, Shared, SinkState, State, Stuck};

/// A logical position in the spool: bytes appended since the spool was created.
pub type Offset = u64;

/// `[spool]` as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Most bytes the spool may use on disk (segment files; cursors are
    /// tiny). At least two segments. Default `1GiB`.
    pub max_bytes: Option<ByteSize>,
    /// What to do when full: `drop_oldest` (default) or `block`.
    pub when_full: Option<WhenFull>,
    /// Size at which a segment file is closed and a new one started. Default `64MiB`.
    pub segment_bytes: Option<ByteSize>,
    /// Longest time appended data waits for fdatasync. Default `100ms`. A
    /// writer awaiting durability (Forward ack, journal cursor) gets its
    /// fdatasync immediately whatever this says; readers see data once synced.
    pub fsync_interval: Option<HumanDuration>,
    /// Events whose timestamp is older than this are dropped when a sink
    /// reads them, counted in `weir_spool_dropped_events_total{reason="max_age"}`.
    /// Default `7d`, Loki's `reject_old_samples_max_age` (Loki refuses them
    /// anyway); `0s` keeps events whatever their age.
    pub max_age: Option<HumanDuration>,
}

/// The spool's policy when `max_bytes` is reached or the disk is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Delete the oldest segment (counted per sink): never stalls Docker.
    DropOldest,
    /// Make sources wait: can stall Docker and the containers writing to it.
    Block,
}

/// Validated `[spool]`.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Most bytes of segment files (quota; see [`WhenFull`]).
    pub max_bytes: ByteSize,
    pub when_full: WhenFull,
    /// A segment is closed once the next record would take it past this size
    /// (a single larger record gets a segment of its own). Space is freed a
    /// segment at a time, so smaller segments free space sooner but mean more files.
    pub segment_bytes: ByteSize,
    /// Longest time appended data waits for fdatasync when nobody is waiting
    /// for durability. Shorter: less data lost by a power cut that nobody
    /// acknowledged anyway, and lower sink latency; longer: fewer syncs.
    pub fsync_interval: HumanDuration,
    /// `0s`: off.
    pub max_age: HumanDuration,
}

impl RawConfig {
    pub fn validate(self, key: &str, problems: &mut Problems) -> Config {
        let c = Config {
            max_bytes: self.max_bytes.unwrap_or(ByteSize(1 << 30)),
            when_full: self.when_full.unwrap_or(WhenFull::DropOldest),
            segment_bytes: self.segment_bytes.unwrap_or(ByteSize(64 << 20)),
            fsync_interval: self
                .fsync_interval
                .unwrap_or(HumanDuration(std::time::Duration::from_millis(100))),
            max_age: self
                .max_age
                .unwrap_or(HumanDuration(std::time::Duration::from_secs(7 * 86_400))),
        };
        if c.segment_bytes.0 < 4096 {
            problems.add(format!("{key}.segment_bytes"), "must be at least 4KiB");
        }
        if c.max_bytes.0 < 2 * c.segment_bytes.0 {
            problems.add(
                format!("{key}.max_bytes"),
                format!(
                    "must be at least two segments ({}): raise it or lower segment_bytes",
                    ByteSize(2 * c.segment_bytes.0)
                ),
            );
        }
        if c.fsync_interval.0.is_zero() {
            problems.add(format!("{key}.fsync_interval"), "must be more than 0ms");
        }
        c
    }
}

/// What went wrong in the spool. No variant carries event data.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool directory or a file in it cannot be used: check the
    /// permissions and the disk, then restart.
    #[error("spool I/O error ({what}): {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    /// The spool is shutting down.
    #[error("spool is closed")]
    Closed,
    /// Written by a newer weir: refuse rather than misread.
    #[error("spool segment {path} has format version {version}, newer than this weir understands ({}); run the newer weir or move the spool directory away", segment::VERSION)]
    NewerFormat { path: PathBuf, version: u16 },
    /// The disk is full and nothing can be dropped (or a write keeps
    /// failing): the batch was not appended. Count it; the spool retries by
    /// itself and accepts appends again once a write succeeds.
    #[error("spool cannot write ({0}); batch not appended")]
    Full(&'static str),
    /// An fdatasync failed, so what was written since the last good one may
    /// not be on the disk, and a later fdatasync that succeeds would not
    /// prove it is (Linux marks pages whose writeback failed clean). The
    /// spool reports nothing more durable, so nothing unproven is ever
    /// acknowledged, and weir stops: after a restart the spool holds what
    /// the disk really kept, and sources resend what was never acknowledged.
    #[error("spool fdatasync failed ({0}): data written since the last successful sync may not be on disk, so nothing more is acknowledged and weir must restart; check the disk (dmesg, free space of thin or network storage)")]
    SyncFailed(std::io::ErrorKind),
    /// A single batch larger than the record format allows (4 GiB).
    #[error("batch too large for the spool")]
    TooLarge,
}

/// A source's resume point, stored atomically with the batch it ends.
#[derive(Debug, Clone, Copy)]
pub struct SourcePosition<'a> {
    pub source: &'a str,
    pub position: &'a [u8],
}

/// Events read by a sink, and the offset to acknowledge once delivered.
#[derive(Debug)]
pub struct Batch {
    pub events: Vec<Event>,
    pub end: Offset,
}

/// What `weir status` shows about the spool.
#[derive(Debug, Clone, Serialize)]
pub struct SpoolStats {
    pub bytes: u64,
    pub segments: usize,
    /// Logical end of appended data.
    pub appended: Offset,
    pub durable: Offset,
    pub sinks: Vec<SinkStats>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SinkStats {
    pub sink: String,
    pub acked: Offset,
    pub lag_bytes: u64,
    /// Append time (Unix seconds) of the oldest unacknowledged record, as of
    /// the last cursor store (at most about 200 ms old); `None` when caught up.
    pub oldest_unacked_timestamp_seconds: Option<i64>,
    /// Events lost to `drop_oldest` since start.
    pub dropped_events: u64,
}

/// Appends wait while this many bytes are not yet written by the writer
/// thread (the disk is slower than the sources for now). It also bounds how
/// much a durability request may have to write before its fdatasync.
/// (2 MiB: small enough to stay in cache, see `writer::WRITE_CHUNK`.)
const MAX_PENDING: usize = 2 << 20;

/// The spool handle; cheap to clone. The writer thread stops (after a final
/// write, fdatasync and cursor store) when the last handle and reader go.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

/// Why an append could not be placed right now.
enum Refused {
    Wait,
    Fail(SpoolError),
}

thread_local! {
    /// Per-thread encode buffer: the append path allocates nothing once warm.
    static ENCODE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Whether a write failed because the disk (or the user's quota) is full:
/// the errors that freeing spool space can cure.
fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

impl Spool {
    /// Opens (or creates) the spool in `dir` for the named sinks, recovering
    /// from whatever a crash left, and starts its writer thread. Its metrics
    /// (and those of whatever takes them from [`Spool::metrics`]) go to a
    /// registry of its own; [`Spool::open_with`] names the registry.
    pub fn open(dir: &Path, config: &Config, sinks: &[String]) -> Result<Spool, SpoolError> {
        Spool::open_with(dir, config, sinks, &crate::metrics::Metrics::new())
    }

    /// [`Spool::open`] with its metrics in `registry`.
    pub fn open_with(
        dir: &Path,
        config: &Config,
        sinks: &[String],
        registry: &crate::metrics::Metrics,
    ) -> Result<Spool, SpoolError> {
        let rec = recovery::recover(dir, sinks)?;
        let metrics = state::Metrics::new(registry);
        metrics.discarded.add(rec.discarded);
        metrics.corrupt.add(rec.corrupt);
        metrics.corrupt_lost.add(rec.lost_events);
        let tail_base = *rec.segments.keys().next_back().expect("a tail segment");
        let next = rec.segments[&tail_base].end;
        let bytes = rec.segments.values().map(|s| s.disk_len).sum();
        let sink_states = rec
            .sinks
            .iter()
            .map(|(name, &(acked, events_before))| {
                let mut s = SinkState::new(name, acked, registry);
                s.read_events_in_seg = events_before;
                s.read_seg = rec
                    .segments
                    .range(..=acked)
                    .next_back()
                    .map_or(acked, |(b, _)| *b);
                (name.clone(), s)
            })
            .collect();
        let st = State {
            next,
            durable: next,
            sync_wanted: 0,
            unsynced_since: None,
            pending: Pending::default(),
            segments: rec.segments,
            bytes,
            positions: rec.positions,
            sinks: sink_states,
            deletions: Vec::new(),
            writer_base: tail_base,
            stuck: None,
            store_wanted: 0,
            shutdown: false,
        };
        metrics.bytes.set(bytes as i64);
        metrics.segments.set(st.segments.len() as i64);
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            config: config.clone(),
            state: Mutex::new(st),
            wake: Condvar::new(),
            durable: watch::channel(next).0,
            stored: watch::channel(0).0,
            space: Notify::new(),
            failed: watch::channel(None).0,
            store_failures: Default::default(),
            metrics,
        });
        let syncer = syncer::Syncer::start(shared.clone()).map_err(|source| SpoolError::Io {
            what: "starting the spool sync thread",
            source,
        })?;
        let w = writer::Writer {
            shared: shared.clone(),
            file: Arc::new(rec.tail),
            file_base: tail_base,
            file_len: rec.tail_len,
            written: next,
            spare: Pending::default(),
            last_store: Instant::now(),
            store_done: 0,
            store_retry_at: None,
            discarding: false,
            syncer,
            requested: next,
        };
        let thread = std::thread::Builder::new()
            .name("weir-spool".into())
            .spawn(move || w.run())
            .map_err(|source| SpoolError::Io {
                what: "starting the spool writer thread",
                source,
            })?;
        Ok(Spool {
            inner: Arc::new(Handle {
                shared,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// The registry the spool counts in; the ingest, sources and sinks built
    /// on this spool count there too.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.shared().metrics.registry
    }

    /// Appends one batch; returns the offset just past it. The data is not
    /// durable yet: await [`Spool::wait_durable`] for that.
    ///
    /// Encodes outside any lock into a per-thread buffer, then copies the
    /// record once into the writer's pending buffer (or, when nothing is
    /// pending, swaps the two buffers: no copy). Waits only under
    /// `when_full = "block"`, or while the writer is far behind.
    pub async fn append(
        &self,
        events: &[Event],
        position: Option<SourcePosition<'_>>,
    ) -> Result<Offset, SpoolError> {
        let pos = position.map(|p| (p.source, p.position));
        let time_ns = now_ns();
        let first = ENCODE.with(|b| {
            let mut b = b.borrow_mut();
            record::encode(&mut b, events, pos, time_ns).map_err(|_| SpoolError::TooLarge)?;
            match self.try_append(&mut b, events.len() as u64, pos) {
                Ok(off) => Ok(Ok(off)),
                Err(Refused::Fail(e)) => Err(e),
                // Keep the record across the await (the task may move threads).
                Err(Refused::Wait) => Ok(Err(b.clone())),
            }
        })?;
        let mut rec = match first {
            Ok(off) => return Ok(off),
            Err(rec) => rec,
        };
        loop {
            let notified = self.shared().space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.try_append(&mut rec, events.len() as u64, pos) {
                Ok(off) => return Ok(off),
                Err(Refused::Fail(e)) => return Err(e),
                Err(Refused::Wait) => {}
            }
            // The timeout only guards against a missed wake-up.
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        }
    }

    /// Places an encoded record, under the lock, without syscalls. `rec`
    /// may come back as another (empty) buffer: see below.
    fn try_append(
        &self,
        rec: &mut Vec<u8>,
        count: u64,
        pos: Option<(&str, &[u8])>,
    ) -> Result<Offset, Refused> {
        let sh = self.shared();
        let mut st = sh.lock();
        if st.shutdown {
            return Err(Refused::Fail(SpoolError::Closed));
        }
        if let Some(kind) = sh.failure() {
            return Err(Refused::Fail(SpoolError::SyncFailed(kind)));
        }
        let block = sh.config.when_full == WhenFull::Block;
        if let Some(stuck) = st.stuck {
            if block {
                return Err(Refused::Wait);
            }
            return Err(Refused::Fail(SpoolError::Full(match stuck {
                Stuck::DiskFull => "disk full and nothing left to drop",
                Stuck::Io(_) => "disk write error",
            })));
        }
        if st.pending.buf.len() >= MAX_PENDING {
            return Err(Refused::Wait);
        }
        let len = rec.len() as u64;
        let tail_base = *st.segments.keys().next_back().expect("a tail segment");
        let tail = &st.segments[&tail_base];
        if tail.end > tail_base && tail.disk_len + len > sh.config.segment_bytes.0 {
            let base = st.next;
            let header = segment::encode_header(base, &st.positions);
            let header_len = header.len() as u64;
            let at = st.pending.buf.len();
            st.pending.rolls.push(state::Roll { at, base, header });
            st.segments.insert(
                base,
                state::SegMeta {
                    header_len,
                    end: base,
                    events: 0,
                    disk_len: header_len,
                },
            );
            st.bytes += header_len;
        }
        while st.bytes + len > sh.config.max_bytes.0 && st.segments.len() > 1 {
            if block {
                return Err(Refused::Wait);
            }
            if !quota::drop_oldest(&mut st, Offset::MAX) {
                break;
            }
            sh.wake.notify_one();
        }
        if st.pending.buf.is_empty() {
            // The writer took everything: the record becomes the pending
            // buffer, and the caller gets the empty one back to encode its
            // next record into. The same bytes as copying, without the copy
            // (154 instructions per event of the forward bench's
            // PackedForward scenario, callgrind, where this happened for
            // half of the appends).
            std::mem::swap(&mut st.pending.buf, rec);
        } else {
            st.pending.buf.extend_from_slice(rec);
        }
        st.next += len;
        st.bytes += len;
        let next = st.next;
        let tail = st
            .segments
            .values_mut()
            .next_back()
            .expect("a tail segment");
        tail.end = next;
        tail.disk_len += len;
        tail.events += count;
        if let Some((src, p)) = pos {
            match st.positions.get_mut(src) {
                Some(v) => {
                    v.clear();
                    v.extend_from_slice(p);
                }
                None => {
                    st.positions.insert(src.to_owned(), p.to_vec());
                }
            }
        }
        let crossed = st.pending.buf.len() >= writer::WRITE_CHUNK
            && st.pending.buf.len() - (len as usize) < writer::WRITE_CHUNK;
        if st.unsynced_since.is_none() || crossed {
            st.unsynced_since.get_or_insert_with(Instant::now);
            sh.wake.notify_one();
        }
        Ok(next)
    }

    /// Returns once everything up to `offset` is on disk (fdatasync'ed).
    /// Asks the writer thread for a sync now rather than at the next interval.
    /// While the disk is full it keeps waiting (the data is kept and written
    /// once possible); a caller that must give up uses a timeout. Fails with
    /// [`SpoolError::SyncFailed`] once an fdatasync failed, unless `offset`
    /// was durable before.
    pub async fn wait_durable(&self, offset: Offset) -> Result<(), SpoolError> {
        if *self.shared().durable.borrow() >= offset {
            return Ok(());
        }
        let offset = {
            let mut st = self.shared().lock();
            let offset = offset.min(st.next);
            st.sync_wanted = st.sync_wanted.max(offset);
            offset
        };
        self.shared().wake.notify_one();
        self.durable_or_failed(offset).await
    }

    /// Waits until `offset` is durable or the spool failed.
    async fn durable_or_failed(&self, offset: Offset) -> Result<(), SpoolError> {
        let mut durable = self.shared().durable.subscribe();
        let mut failed = self.shared().failed.subscribe();
        tokio::select! {
            biased;
            r = durable.wait_for(|&d| d >= offset) => r.map(|_| ()).map_err(|_| SpoolError::Closed),
            r = failed.wait_for(Option::is_some) => {
                Err(r.ok().and_then(|k| *k).map_or(SpoolError::Closed, SpoolError::SyncFailed))
            }
        }
    }

    /// Resolves once an fdatasync failed: the spool then reports nothing
    /// more durable, and the pipeline stops (see [`SpoolError::SyncFailed`]).
    pub async fn failure(&self) -> SpoolError {
        let mut failed = self.shared().failed.subscribe();
        let kind = failed.wait_for(Option::is_some).await.ok().and_then(|k| *k);
        match kind {
            Some(kind) => SpoolError::SyncFailed(kind),
            // The sender lives as long as this handle: not reached.
            None => std::future::pending().await,
        }
    }

    /// The last committed position of a source, recovered from the spool.
    pub fn source_position(&self, source: &str) -> Option<Vec<u8>> {
        self.shared().lock().positions.get(source).cloned()
    }

    /// The read cursor of a sink (one of those passed to [`Spool::open`]).
    /// It starts at the sink's acknowledged offset: what was read but not
    /// acknowledged before is read again.
    pub fn reader(&self, sink: &str) -> Result<Reader, SpoolError> {
        let mut st = self.shared().lock();
        let oldest = *st.segments.keys().next().expect("a segment");
        let s = st
            .sinks
            .entry(sink.to_owned())
            .or_insert_with(|| SinkState::new(sink, oldest, &self.shared().metrics.registry));
        let read = s.acked;
        s.read = read;
        let seg_base = st
            .segments
            .range(..=read)
            .next_back()
            .map_or(oldest, |(b, _)| *b);
        let s = st.sinks.get_mut(sink).expect("inserted above");
        if s.read_seg != seg_base {
            s.read_seg = seg_base;
            s.read_events_in_seg = 0;
        }
        let seg_events = s.read_events_in_seg;
        drop(st);
        Ok(Reader {
            spool: self.clone(),
            sink: sink.to_owned(),
            read,
            seg_base,
            seg_events,
            file: None,
            chunk: Vec::new(),
            cur: None,
            durable: self.shared().durable.subscribe(),
            max_age: self.shared().config.max_age.0,
            expired: self
                .metrics()
                .spool_dropped_events
                .with(crate::metrics::labels::SinkReason::new(sink, "max_age")),
            undecodable: self
                .metrics()
                .spool_dropped_events
                .with(crate::metrics::labels::SinkReason::new(sink, "undecodable")),
            pool: Vec::new(),
            spare: Vec::new(),
            decoder: crate::event::codec::Decoder::new(crate::event::codec::Version::V2),
        })
    }

    /// Writes and fsyncs everything appended and stores every sink cursor;
    /// used at shutdown.
    pub async fn sync(&self) -> Result<(), SpoolError> {
        let (target, gen) = {
            let mut st = self.shared().lock();
            st.sync_wanted = st.sync_wanted.max(st.next);
            st.store_wanted += 1;
            (st.next, st.store_wanted)
        };
        self.shared().wake.notify_one();
        self.durable_or_failed(target).await?;
        let mut stored = self.shared().stored.subscribe();
        stored
            .wait_for(|&g| g >= gen)
            .await
            .map_err(|_| SpoolError::Closed)?;
        Ok(())
    }

    /// Sizes and per-sink progress, for `weir status`.
    pub fn stats(&self) -> SpoolStats {
        let st = self.shared().lock();
        SpoolStats {
            bytes: st.bytes,
            segments: st.segments.len(),
            appended: st.next,
            durable: st.durable,
            sinks: st
                .sinks
                .iter()
                .map(|(name, s)| SinkStats {
                    sink: name.clone(),
                    acked: s.acked,
                    lag_bytes: st.next.saturating_sub(s.acked),
                    oldest_unacked_timestamp_seconds: s
                        .oldest_unacked_ns
                        .map(|t| t / 1_000_000_000),
                    dropped_events: s.dropped_total,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests;
