//! The writer thread: group commit.
//!
//! Appends only copy their encoded record into [`Pending`] under the state
//! lock. This thread takes the whole pending buffer at once, writes it with
//! one `pwrite` per segment touched, and asks the sync thread
//! ([`super::syncer`]) for an fdatasync
//! - as soon as someone waits for durability (`wait_durable`, `sync`): one
//!   fdatasync serves every waiter of that moment, and waiters that arrive
//!   during it are served by the next one, immediately after;
//! - otherwise at most `fsync_interval` after the oldest unsynced append.
//!
//! It never waits for those syncs (except the one closing a segment), so
//! writing goes on at the page cache's speed while the disk flushes.
//! Large pending buffers (over [`WRITE_CHUNK`]) are written early without a
//! sync so the page cache, not the heap, holds the backlog; more than
//! [`SYNC_BYTES`] written since the last request asks for another sync so
//! that no single sync (which a durability waiter may have to sit through)
//! grows large.
//!
//! A failed fdatasync, here or on the sync thread, fails the spool for good
//! (see `SpoolError::SyncFailed`); the thread goes on storing cursors and
//! deleting segments until shutdown.
//!
//! It also stores sink cursors (coalesced: at most every [`STORE_INTERVAL`],
//! and on `sync`/shutdown) and hands the segments they release to the sync
//! thread to unlink. A write error (ENOSPC, EIO) truncates the file back to
//! the last good record and retries: ENOSPC first waits for deletions under
//! way, then drops the oldest segment under `drop_oldest` (unlinked here, at
//! once); if nothing can be freed the spool is marked stuck (appends fail or
//! wait, per `when_full`) until a retry succeeds.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::record::{self, HEADER_LEN};
use super::recovery::create_with_header;
use super::state::{Pending, Roll, Shared, Stuck};
use super::syncer::{self, Syncer};
use super::{cursor, quota, segment, Offset, WhenFull};

/// Pending bytes that make the writer write without waiting for a sync.
/// Small, so the writer copies into the page cache what the appender has
/// just encoded (still in cache): with 1 MiB chunks and an 8 MiB pending
/// cap, a writer that fell behind took ever larger cold chunks, copied them
/// slower and fell further behind (append bench rounds at 57-101% of raw);
/// with 256 KiB and 2 MiB they stay at 72-96%.
pub const WRITE_CHUNK: usize = 256 << 10;
/// Bytes written since the last sync request that trigger another before
/// the interval: under a flood, keeps each fdatasync (and so the wait of
/// anyone asking for durability) short instead of syncing 100 ms of data at
/// once.
pub const SYNC_BYTES: u64 = 16 << 20;
/// Written-but-unsynced bytes above which the writer stops taking pending
/// data until the sync thread catches up. Without it a flood outruns the
/// disk, every fdatasync flushes more than the one before, and a durability
/// waiter next to the flood waits hundreds of milliseconds; with it the
/// flood runs at the disk's speed. 128 MiB is about 100 ms of a fast disk:
/// 32 MiB (two syncs in flight) held the append bench at 26% of the raw
/// write speed, 128 MiB gave 34% with a lower flood p99.
pub const MAX_UNSYNCED: u64 = 8 * SYNC_BYTES;
/// Longest time an acknowledgement waits before its cursor is stored.
/// What a sink delivered in this window before a crash is delivered again
/// after it (at-least-once): 200 ms keeps that to a fifth of a second of
/// traffic, for at most five small cursor writes (tmp, fsync, rename,
/// fsync dir) a second while sinks deliver.
pub const STORE_INTERVAL: Duration = Duration::from_millis(200);
/// Pause between attempts while the disk is full or failing.
const RETRY: Duration = Duration::from_millis(100);
/// Pause after a failed cursor store (full disk, directory gone, read-only
/// remount) before the next one: without it a store that was asked for
/// (`Spool::sync`, shutdown) was retried at once, forever, at 100% CPU and
/// one error line per attempt.
pub const STORE_RETRY: Duration = Duration::from_secs(1);

pub struct Writer {
    pub shared: Arc<Shared>,
    /// Shared with the sync thread, which fdatasyncs it.
    pub file: Arc<File>,
    pub file_base: Offset,
    pub file_len: u64,
    /// Logical end of what is written to the file (maybe not yet synced).
    pub written: Offset,
    pub spare: Pending,
    pub last_store: Instant,
    pub store_done: u64,
    /// Set by a failed cursor store: no new attempt before then.
    pub store_retry_at: Option<Instant>,
    /// The segment being written was dropped before the writer created it
    /// (appends outran the writer by more than the quota): its records are
    /// skipped until the next roll.
    pub discarding: bool,
    pub syncer: Syncer,
    /// The highest offset the sync thread was asked to make durable.
    pub requested: Offset,
}

/// What one round of the loop has to do.
struct Round {
    pending: Pending,
    sync: bool,
    /// Someone awaits durability (not just the interval or the backlog).
    waited: bool,
    store: Option<u64>,
    shutdown: bool,
}

impl Writer {
    pub fn run(mut self) {
        loop {
            let round = self.wait_for_work();
            let mut pending = round.pending;
            let ok = self.flush(&pending);
            pending.buf.clear();
            pending.rolls.clear();
            self.spare = pending;
            if ok && round.sync {
                let unsynced = self.written - self.requested;
                if round.waited && unsynced < WRITE_CHUNK as u64 && self.syncer.idle() {
                    // A waiter and little to flush: syncing here saves it a
                    // wake-up of the sync thread (up to a millisecond on a
                    // busy VM); floods still go to the sync thread.
                    self.sync_here();
                } else {
                    self.request_sync();
                }
            }
            self.shared.space.notify_waiters();
            self.hand_off_deletions();
            if let Some(gen) = round.store {
                self.store_cursors(gen);
            }
            self.update_gauges();
            if round.shutdown || !ok {
                let st = self.shared.lock();
                if st.shutdown && (!ok || st.pending.buf.is_empty() && st.pending.rolls.is_empty())
                {
                    drop(st);
                    // Waits for the last sync asked for.
                    self.syncer.stop();
                    return;
                }
            }
        }
    }

    fn wait_for_work(&mut self) -> Round {
        let interval = self.shared.config.fsync_interval.0;
        let mut st = self.shared.lock();
        loop {
            let now = Instant::now();
            let unsynced = st.next > self.requested;
            let sync_at = st.unsynced_since.map(|t| t + interval);
            let waited = st.sync_wanted > self.requested;
            let sync = unsynced
                && (waited
                    || st.shutdown
                    || sync_at.is_some_and(|t| now >= t)
                    || st.next - self.requested >= SYNC_BYTES);
            let dirty = st.sinks.values().any(|s| s.acked != s.stored);
            // After a failed store, nothing before its retry time (a
            // deadline in the past would make this loop spin).
            let retry_at = self.store_retry_at.filter(|&t| now < t);
            let store_at = dirty
                .then_some(self.last_store + STORE_INTERVAL)
                .filter(|_| retry_at.is_none());
            let store = retry_at.is_none()
                && (st.store_wanted > self.store_done
                    || st.shutdown
                    || store_at.is_some_and(|t| now >= t));
            let behind = self.written.saturating_sub(st.durable) >= MAX_UNSYNCED;
            let big = st.pending.buf.len() >= WRITE_CHUNK && !behind;
            if sync || store || big || !st.deletions.is_empty() || st.shutdown {
                if sync {
                    st.unsynced_since = None;
                }
                let pending = std::mem::replace(&mut st.pending, std::mem::take(&mut self.spare));
                return Round {
                    pending,
                    sync,
                    waited,
                    store: store.then_some(st.store_wanted),
                    shutdown: st.shutdown,
                };
            }
            let deadline = [sync_at, store_at, retry_at].into_iter().flatten().min();
            let timeout =
                deadline.map_or(Duration::from_secs(1), |d| d.saturating_duration_since(now));
            st = self
                .shared
                .wake
                .wait_timeout(st, timeout)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Writes `p` (records and segment rolls). `false` if it gave up
    /// (shutdown while the disk is failing, or the spool failed).
    fn flush(&mut self, p: &Pending) -> bool {
        let mut pos = 0;
        for roll in p.rolls.iter().map(Some).chain([None]) {
            let upto = roll.map_or(p.buf.len(), |r| r.at);
            if upto > pos {
                if !self.write(&p.buf[pos..upto]) {
                    return false;
                }
                pos = upto;
            }
            if let Some(r) = roll {
                if !self.roll(r) {
                    return false;
                }
            }
        }
        true
    }

    fn write(&mut self, data: &[u8]) -> bool {
        if self.discarding {
            self.written += data.len() as u64;
            return true;
        }
        loop {
            match self.file.write_all_at(data, self.file_len) {
                Ok(()) => {
                    self.file_len += data.len() as u64;
                    self.written += data.len() as u64;
                    self.unstick();
                    return true;
                }
                Err(e) => {
                    // Never leave a partial record behind: cut back to the
                    // last good one (truncating works even on a full disk).
                    let _ = self.file.set_len(self.file_len);
                    if !self.handle_error(e) {
                        return false;
                    }
                }
            }
        }
    }

    fn roll(&mut self, r: &Roll) -> bool {
        debug_assert_eq!(self.written, r.base, "roll at a record boundary");
        // The closed segment must be durable before anything after it is
        // reported durable (later syncs only cover the new file).
        if !syncer::sync(&self.shared, &self.file, r.base) {
            return false; // the spool failed: nothing more becomes durable
        }
        self.discarding = !self.shared.lock().segments.contains_key(&r.base);
        if self.discarding {
            return true;
        }
        loop {
            match create_with_header(&self.shared.dir, r.base, &r.header) {
                Ok(f) => {
                    self.file = Arc::new(f);
                    self.syncer.switch_file(&self.file);
                    self.file_base = r.base;
                    self.file_len = r.header.len() as u64;
                    self.shared.lock().writer_base = r.base;
                    self.unstick();
                    return true;
                }
                Err(e) => {
                    if !self.handle_error(e) {
                        return false;
                    }
                }
            }
        }
    }

    /// Makes room after a failed write if it can, else marks the spool
    /// stuck and pauses. `false` when shutting down (give up).
    fn handle_error(&mut self, e: std::io::Error) -> bool {
        let full = super::is_disk_full(&e);
        let mut st = self.shared.lock();
        if st.shutdown {
            tracing::error!(error = %e, "spool write failed during shutdown; appended data not yet durable is lost");
            return false;
        }
        if full && self.syncer.deleting() {
            // Space is being freed already: retry once it is, before
            // dropping anything more.
            drop(st);
            self.syncer.wait_deletions();
            return true;
        }
        if full
            && self.shared.config.when_full == WhenFull::DropOldest
            && quota::drop_oldest(&mut st, self.file_base)
        {
            drop(st);
            self.delete_queued();
            return true;
        }
        let stuck = if full {
            Stuck::DiskFull
        } else {
            Stuck::Io(e.kind())
        };
        if st.stuck != Some(stuck) {
            tracing::error!(error = %e, disk_full = full, "spool cannot write; appends fail or wait until it can (retrying every 100ms)");
        }
        st.stuck = Some(stuck);
        drop(st);
        // What this round already wrote becomes visible to readers, so they
        // can acknowledge it and free its segments (under `block` nothing
        // else frees space).
        if self.written > self.requested {
            self.request_sync();
        }
        // Acknowledged segments are what can free space now.
        let gen = self.shared.lock().store_wanted;
        self.store_cursors(gen);
        let st = self.shared.lock();
        let _ = self.shared.wake.wait_timeout(st, RETRY);
        true
    }

    fn unstick(&mut self) {
        let mut st = self.shared.lock();
        if st.stuck.take().is_some() {
            tracing::info!("spool writes again");
            drop(st);
            self.shared.space.notify_waiters();
        }
    }

    /// Makes everything written so far durable on this thread.
    fn sync_here(&mut self) {
        self.requested = self.written;
        syncer::sync(&self.shared, &self.file, self.written);
    }

    /// Asks the sync thread to make everything written so far durable.
    fn request_sync(&mut self) {
        self.requested = self.written;
        self.syncer.request(&self.file, self.written);
    }

    /// Unlinks the segments queued for deletion now, on this thread: for
    /// a full disk, where the write is retried right after.
    fn delete_queued(&mut self) {
        let bases = std::mem::take(&mut self.shared.lock().deletions);
        if !bases.is_empty() {
            syncer::delete(&self.shared, &bases);
        }
    }

    /// Leaves the segments queued for deletion to the sync thread.
    fn hand_off_deletions(&mut self) {
        let bases = std::mem::take(&mut self.shared.lock().deletions);
        self.syncer.delete(bases);
    }

    /// Stores every sink cursor, then releases the segments all of them passed.
    fn store_cursors(&mut self, gen: u64) {
        let (acked, unchanged): (Vec<(String, Offset)>, bool) = {
            let st = self.shared.lock();
            let acked = st.sinks.iter().map(|(n, s)| (n.clone(), s.acked)).collect();
            (acked, st.sinks.values().all(|s| s.acked == s.stored))
        };
        let list: Vec<(&str, Offset)> = acked.iter().map(|(n, a)| (n.as_str(), *a)).collect();
        self.last_store = Instant::now();
        // Nothing acknowledged since the last store: the files already hold
        // these values. Rewriting them (write, fsync, rename, fsync the
        // directory) on every health check's `sync` was an idle agent's only
        // disk write, ~56 KiB a minute.
        if !unchanged {
            if let Err(e) = cursor::store(&self.shared.cursors_dir(), &list) {
                self.shared.store_failures.fetch_add(1, Ordering::Relaxed);
                self.store_retry_at = Some(self.last_store + STORE_RETRY);
                tracing::error!(error = %e, "cannot store spool sink cursors; retrying in a second");
                return;
            }
        }
        self.store_retry_at = None;
        let mut probes = Vec::new();
        {
            let mut st = self.shared.lock();
            let (next, durable) = (st.next, st.durable);
            for (name, a) in &acked {
                if let Some(s) = st.sinks.get_mut(name) {
                    s.stored = *a;
                    s.lag.set(next.saturating_sub(s.acked) as i64);
                }
            }
            if quota::release_acknowledged(&mut st) > 0 {
                self.shared.space.notify_waiters();
            }
            for (name, s) in &st.sinks {
                let seg = st.segments.range(..=s.acked).next_back();
                match seg {
                    Some((&base, m)) if s.acked < durable && s.acked < m.end => {
                        probes.push((name.clone(), base, m.header_len + (s.acked - base)));
                    }
                    _ => probes.push((name.clone(), u64::MAX, 0)),
                }
            }
        }
        // The oldest unacknowledged record's append time, read from its header.
        let times: Vec<(String, Option<i64>)> = probes
            .into_iter()
            .map(|(name, base, at)| {
                let t = (base != u64::MAX)
                    .then(|| read_time(&self.shared.dir, base, at))
                    .flatten();
                (name, t)
            })
            .collect();
        {
            let mut st = self.shared.lock();
            for (name, t) in times {
                if let Some(s) = st.sinks.get_mut(&name) {
                    s.oldest_unacked_ns = t;
                    s.oldest.set(t.map_or(0, |t| t / 1_000_000_000));
                }
            }
        }
        self.hand_off_deletions();
        if gen > self.store_done {
            // Asked for (`Spool::sync`, shutdown): done means deleted too.
            self.syncer.wait_deletions();
        }
        self.store_done = gen;
        self.shared.stored.send_if_modified(|g| {
            let changed = *g < gen;
            *g = (*g).max(gen);
            changed
        });
    }

    fn update_gauges(&self) {
        let st = self.shared.lock();
        self.shared.metrics.bytes.set(st.bytes as i64);
        self.shared.metrics.segments.set(st.segments.len() as i64);
    }
}

/// The append time in the record header at file position `at`.
fn read_time(dir: &std::path::Path, base: Offset, at: u64) -> Option<i64> {
    let f = crate::statefile::open_read(&segment::path(dir, base)).ok()?;
    let mut hb = [0u8; HEADER_LEN];
    f.read_exact_at(&mut hb, at).ok()?;
    record::Header::parse(&hb).map(|h| h.time_ns)
}
