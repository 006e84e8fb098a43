//! The sd_journal reader: one OS thread per journal source.
//!
//! An `sd_journal` handle must stay on the thread that opened it (the
//! `systemd` crate's `Journal` is not `Send`), and its calls block, so it
//! lives on a dedicated thread rather than in the async runtime. The thread
//! reads entries, maps them to events and hands batches (at most
//! [`BATCH_ENTRIES`] entries, closed at the latest [`BATCH_WINDOW`] after
//! their first entry) to the async side over a bounded channel, each with the
//! cursor of its last entry. A full channel blocks the thread: the journal
//! itself is the buffer, nothing is dropped.
//!
//! When caught up it waits with `sd_journal_wait` in steps of [`WAIT_STEP`],
//! so a shutdown is noticed within that time. Rotation, vacuuming and a
//! journald restart are handled by libsystemd (it follows the directory with
//! inotify: `wait` reports `INVALIDATE` and new files are read). A read error
//! closes the journal, waits [`REOPEN_DELAY`], reopens it and resumes after the
//! last cursor handed over, with the same gap logic as a restart.
//!
//! A corrupt journal file does not stop it: libsystemd steps over what it
//! cannot read (a file whose header is damaged is not opened at all; a
//! damaged entry array ends that file early), and an entry whose data cannot
//! be enumerated is skipped here and counted. Without include filters every
//! entry of a journald's sequence passes, so each batch's cursor is compared
//! with the previous one: entries the sequence jumped over are counted in
//! `weir_journal_entries_missed_total`.

use std::cell::RefCell;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use systemd::journal::{Journal, OpenDirectoryOptions, OpenOptions};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::config::{Config, JournalSet};
use super::cursor::{self, Positioned};
use super::mapping::Entry;
use super::selfexclude::SelfIdentity;
use super::Metrics;
use crate::event::Event;

/// Most entries in one batch. Small, so that the events handed over and
/// back (refilled in place by this thread) stay in the caches: with 1,000
/// the reader thread took 2.3-3.1 CPU s per million entries of the bench's
/// journal and the `weir` binary end to end 5.5-7.6; with 128, 1.7-2.2 and
/// 4.8-6.8; with 256, 1.85-2.2 and 4.7-6.4 (pairs of runs alternated, load
/// average 9-15). Each batch wakes the append task (a futex and a write to
/// tokio's eventfd): 128 cost about 0.4 s of system time per million more
/// than 1,000; 256 halves those wake-ups.
pub const BATCH_ENTRIES: usize = 256;
/// A batch is handed over at the latest this long after its first entry.
pub const BATCH_WINDOW: Duration = Duration::from_millis(50);
/// While entries keep coming, the window is checked every this many.
const CLOCK_EVERY: usize = 32;
/// Longest single `sd_journal_wait`: the bound on noticing a shutdown.
pub const WAIT_STEP: Duration = Duration::from_millis(250);
/// Pause before reopening the journal after a read error.
pub const REOPEN_DELAY: Duration = Duration::from_secs(1);
/// Fields longer than this that journald stored compressed are cut here by
/// libsystemd (its default, 64 KiB, would cut ordinary long messages). Set
/// just above Loki's 4 MiB push limit: a longer line cannot be delivered whole
/// anyway, and it bounds what a huge field (a core dump) costs to decompress.
pub const DATA_THRESHOLD: usize = (4 << 20) + 4096;

/// Events read from the journal, and the cursor of the last entry read.
#[derive(Debug)]
pub struct Batch {
    pub events: Vec<Event>,
    pub cursor: String,
}

/// Why the journal could not be opened. No payload, only the journal and the OS error.
#[derive(Debug)]
pub struct OpenError {
    pub what: String,
    pub source: io::Error,
}

/// How the reader thread talks to the source's task.
pub struct Channels {
    /// Batches read, with the cursor of their last entry.
    pub batches: mpsc::Sender<Batch>,
    /// Spooled batches sent back for reuse.
    pub recycled: mpsc::Receiver<Vec<Event>>,
    /// Whether the journal could be opened and positioned.
    pub ready: oneshot::Sender<Result<(), OpenError>>,
}

/// Starts the reader thread. It opens and positions the journal, reports
/// that (or why it failed) on `ready`, then sends batches until `shutdown`
/// or until the receiving side is gone. Batches sent back on `recycled`
/// once spooled are refilled with later entries (their strings reused
/// rather than allocated anew); sending none back is fine.
pub fn spawn(
    name: &str,
    config: Config,
    committed: Option<String>,
    channels: Channels,
    shutdown: CancellationToken,
    registry: &crate::metrics::Metrics,
) -> io::Result<JoinHandle<()>> {
    let Channels {
        batches,
        recycled,
        ready,
    } = channels;
    let reader = Reader {
        name: name.to_owned(),
        config,
        me: SelfIdentity::current(),
        metrics: Metrics::new(registry, name),
        batches,
        recycled: RefCell::new(recycled),
        shutdown,
    };
    std::thread::Builder::new()
        .name(format!("journal-{name}"))
        .spawn(move || reader.run(committed, ready))
}

struct Reader {
    name: String,
    config: Config,
    me: SelfIdentity,
    metrics: Metrics,
    batches: mpsc::Sender<Batch>,
    /// Spooled batches coming back for reuse (only this thread reads it).
    recycled: RefCell<mpsc::Receiver<Vec<Event>>>,
    shutdown: CancellationToken,
}

/// Why a read loop ended.
enum Stop {
    /// Shutdown, or the consumer is gone: the thread ends.
    Done,
    /// A journal call failed: reopen and resume.
    Failed(io::Error),
}

impl Reader {
    fn run(self, committed: Option<String>, ready: oneshot::Sender<Result<(), OpenError>>) {
        let mut last_cursor = committed;
        let mut journal = match self.open(last_cursor.as_deref()) {
            Ok(j) => {
                let _ = ready.send(Ok(()));
                j
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        loop {
            match self.read(&mut journal, &mut last_cursor) {
                Stop::Done => return,
                Stop::Failed(e) => {
                    self.metrics.read_errors.inc();
                    tracing::warn!(source = %self.name, error = %e, retry_in_ms = REOPEN_DELAY.as_millis() as u64,
                        "journal read failed; reopening and resuming after the last cursor");
                }
            }
            drop(journal);
            journal = loop {
                if self.sleep(REOPEN_DELAY) {
                    return;
                }
                match self.open(last_cursor.as_deref()) {
                    Ok(j) => break j,
                    Err(e) => {
                        self.metrics.read_errors.inc();
                        tracing::warn!(source = %self.name, journal = %e.what, error = %e.source,
                            "cannot reopen the journal; retrying");
                    }
                }
            };
        }
    }

    /// Sleeps up to `d`; true if shutdown was requested meanwhile.
    fn sleep(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        while Instant::now() < end {
            if self.shutdown.is_cancelled() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50).min(end - Instant::now()));
        }
        self.shutdown.is_cancelled()
    }

    /// Opens the configured journal, applies the include filters and
    /// positions it after `cursor` (or by the first-start policy).
    fn open(&self, cursor: Option<&str>) -> Result<Journal, OpenError> {
        let what = match &self.config.journal {
            JournalSet::System => "the system journal".to_owned(),
            JournalSet::Namespace(ns) => format!("journal namespace `{ns}`"),
            JournalSet::Directory(d) => format!("journal directory {}", d.display()),
        };
        let fail = |source| OpenError {
            what: what.clone(),
            source,
        };
        let mut j = match &self.config.journal {
            JournalSet::System => OpenOptions::default().open(),
            JournalSet::Namespace(ns) => OpenOptions::default().open_namespace(ns.as_str()),
            JournalSet::Directory(d) => {
                let path = CString::new(d.as_os_str().as_bytes())
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
                    .map_err(fail)?;
                OpenDirectoryOptions::default().open_directory(path)
            }
        }
        .map_err(fail)?;
        j.set_data_threshold(DATA_THRESHOLD).map_err(fail)?;
        self.add_matches(&mut j).map_err(fail)?;
        match cursor::position(&mut j, cursor, &self.config).map_err(fail)? {
            Positioned::Resumed | Positioned::FirstStart => {}
            Positioned::Gap { since_us } => {
                self.metrics.gaps.inc();
                tracing::warn!(source = %self.name, resume_at_us = since_us,
                    "the last committed journal entry is gone (vacuumed or rotated while weir was down); resuming at the oldest entry since its time, entries in between are lost");
            }
        }
        Ok(j)
    }

    /// Include filters as sd_journal matches (the journal's indexes make them
    /// cheap): values of one field are OR'ed, different fields AND'ed.
    fn add_matches(&self, j: &mut Journal) -> io::Result<()> {
        for unit in &self.config.units {
            j.match_add("_SYSTEMD_UNIT", unit.as_str())?;
        }
        for id in &self.config.identifiers {
            j.match_add("SYSLOG_IDENTIFIER", id.as_str())?;
        }
        if let Some(max) = self.config.max_priority {
            for p in 0..=max.as_syslog() {
                j.match_add("PRIORITY", p.to_string())?;
            }
        }
        Ok(())
    }

    /// Reads and hands over batches until shutdown or an error.
    fn read(&self, j: &mut Journal, last_cursor: &mut Option<String>) -> Stop {
        let mut entry = Entry::new(DATA_THRESHOLD);
        let mut batch = Pending::default();
        loop {
            // Checked every `CLOCK_EVERY` entries (and whenever no batch is
            // pending, as when caught up): `is_cancelled` locks the token's
            // mutex, an atomic read-modify-write per entry (0.6-0.8% of the
            // end-to-end perf samples; few instructions, many cycles).
            if batch.read % CLOCK_EVERY == 0 && self.shutdown.is_cancelled() {
                return Stop::Done;
            }
            let got = match j.next() {
                Ok(n) => n > 0,
                Err(e) => return self.fail(j, &mut entry, &mut batch, last_cursor, e),
            };
            if got {
                let started = *batch.started.get_or_insert_with(Instant::now);
                batch.read += 1;
                match self.read_entry(j, &mut entry) {
                    Ok(Some(pick)) => {
                        batch.bytes += entry.bytes;
                        batch.events.push(pick.take(&mut entry));
                    }
                    Ok(None) => {}
                    Err(e) => return self.fail(j, &mut entry, &mut batch, last_cursor, e),
                }
                // The clock is read every `CLOCK_EVERY` entries, not for
                // each: reading it was ~0.5% of the reader's CPU at full
                // speed (perf, cpu-clock samples in `__vdso_clock_gettime`),
                // and the window only needs to hold to a fraction of a
                // millisecond (32 entries take ~0.1 ms to read).
                if batch.read >= BATCH_ENTRIES
                    || (batch.read % CLOCK_EVERY == 0 && started.elapsed() >= BATCH_WINDOW)
                {
                    if let Err(stop) = self.flush(j, &mut entry, &mut batch, last_cursor) {
                        return stop;
                    }
                }
                continue;
            }
            // Caught up: wait for more, but hand a pending batch over when its window ends.
            let wait = match batch.started {
                Some(started) => match BATCH_WINDOW.checked_sub(started.elapsed()) {
                    Some(left) if !left.is_zero() => left,
                    _ => {
                        if let Err(stop) = self.flush(j, &mut entry, &mut batch, last_cursor) {
                            return stop;
                        }
                        continue;
                    }
                },
                None => WAIT_STEP,
            };
            if let Err(e) = j.wait(Some(wait)) {
                return self.fail(j, &mut entry, &mut batch, last_cursor, e);
            }
        }
    }

    /// Whether every entry of the journal passes the include filters, so
    /// that a jump in sequence numbers means entries were stepped over
    /// rather than filtered out.
    fn sequential(&self) -> bool {
        self.config.units.is_empty()
            && self.config.identifiers.is_empty()
            && self.config.max_priority.is_none()
    }

    /// Collects the current entry; `None` when it is weir's own or excluded.
    fn read_entry(&self, j: &mut Journal, entry: &mut Entry) -> io::Result<Option<Pick>> {
        entry.clear();
        j.restart_data();
        loop {
            match j.enumerate_data() {
                // The crate has found the `=` already.
                Ok(Some(item)) => {
                    entry.add_split(item.data(), item.value().map(|_| item.name().len()))
                }
                Ok(None) => break,
                Err(_) => {
                    // One unreadable (corrupt) data object: skip this entry, keep reading.
                    self.metrics.unreadable.inc();
                    return Ok(None);
                }
            }
        }
        let (pid, unit, identifier) = entry.identity();
        if self.me.is_own(pid, unit, identifier) {
            self.metrics.skipped_self.inc();
            return Ok(None);
        }
        if unit.is_some_and(|u| self.config.exclude_units.iter().any(|x| x == u))
            || identifier.is_some_and(|i| self.config.exclude_identifiers.iter().any(|x| x == i))
        {
            self.metrics.skipped_excluded.inc();
            return Ok(None);
        }
        Ok(Some(Pick {
            realtime_us: j.timestamp_usec()?,
        }))
    }

    /// Hands the pending batch over with the cursor of the last entry read.
    /// A batch whose entries were all skipped is not sent: re-reading them
    /// after a restart costs nothing.
    fn flush(
        &self,
        j: &mut Journal,
        entry: &mut Entry,
        batch: &mut Pending,
        last_cursor: &mut Option<String>,
    ) -> Result<(), Stop> {
        let cursor = j.cursor().map_err(Stop::Failed)?;
        let events = self.next_vector(entry, batch.read);
        let pending = std::mem::replace(
            batch,
            Pending {
                events,
                ..Pending::default()
            },
        );
        if let (true, Some(prev)) = (self.sequential(), last_cursor.as_deref()) {
            let missed = cursor::missed_between(prev, &cursor, pending.read as u64);
            if missed > 0 {
                self.metrics.missed.add(missed);
                tracing::warn!(source = %self.name, missed,
                    "the journal's sequence numbers jumped: entries were vacuumed before weir read them, or are in a corrupt journal file; reading on");
            }
        }
        *last_cursor = Some(cursor.clone());
        if pending.events.is_empty() {
            return Ok(());
        }
        self.metrics.events.add(pending.events.len() as u64);
        self.metrics.bytes.add(pending.bytes);
        let out = Batch {
            events: pending.events,
            cursor,
        };
        self.batches.blocking_send(out).map_err(|_| Stop::Done)
    }

    /// The vector for the next batch. Batches that came back give their
    /// events to `entry` to refill and their emptied vector; else one is
    /// allocated once at the size this batch needed rather than grown (and
    /// its events copied) ten times on the way to 1000 in a flood; a
    /// trickle keeps small ones.
    fn next_vector(&self, entry: &mut Entry, size: usize) -> Vec<Event> {
        let mut back = None;
        while let Ok(mut events) = self.recycled.borrow_mut().try_recv() {
            entry.recycle(&mut events);
            back = Some(events);
        }
        match back {
            Some(v) if v.capacity() >= size => v,
            _ => Vec::with_capacity(size),
        }
    }

    /// After an error: hand over what was read so far (it is valid), then reopen.
    fn fail(
        &self,
        j: &mut Journal,
        entry: &mut Entry,
        batch: &mut Pending,
        last_cursor: &mut Option<String>,
        e: io::Error,
    ) -> Stop {
        if batch.read > 0 {
            if let Err(stop) = self.flush(j, entry, batch, last_cursor) {
                return stop;
            }
        }
        Stop::Failed(e)
    }
}

/// An entry chosen for ingestion: the event is built once the caller has
/// taken the entry's size.
struct Pick {
    realtime_us: u64,
}

impl Pick {
    fn take(self, entry: &mut Entry) -> Event {
        entry.take_event(self.realtime_us)
    }
}

/// The batch being filled.
#[derive(Default)]
struct Pending {
    events: Vec<Event>,
    /// Entries read, skipped ones included.
    read: usize,
    bytes: u64,
    started: Option<Instant>,
}
