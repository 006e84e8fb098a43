//! The events of one spool append, kept for reuse by the next.
//!
//! A Docker-shaped event owns a dozen strings (message, labels, field names
//! and values). Building each one new and dropping it after the append made
//! the allocator about a quarter of the source's CPU. Instead a batch's
//! events are kept after its append, and [`super::docker::fill_event`]
//! refills their strings in place: once warm, decoding allocates nothing
//! per event.
//!
//! The kept events live in a pool shared by the source's connections
//! ([`Spares`]), not in each connection: what is kept is bounded by the
//! batches in flight at once, not by the number of connections (Docker
//! opens one per container, and most are idle most of the time).

use std::sync::Mutex;

use crate::event::{Event, Origin};
use crate::scrub::FieldMemo;

/// A batch is appended once it holds this many events, even mid-buffer or
/// mid-frame.
pub const FULL: usize = 4096;
/// ... or once its events take this many bytes (in memory, roughly): with
/// [`FULL`], the most one connection holds decoded at once. A frame of many
/// events, or of few with a huge tag copied into each, is appended in
/// several batches.
pub const FULL_BYTES: usize = 4 << 20;
/// Events one batch keeps for reuse, at most: a burst bigger than this
/// allocates the rest, and frees them after its append.
const KEEP: usize = FULL;
/// A kept event's message buffer larger than this is freed: one long line
/// must not pin its size in the pool.
const KEEP_MESSAGE_BYTES: usize = 16 * 1024;
/// Event vectors the pool keeps: batches are in flight on the runtime's
/// worker threads (and a few more while appends wait on the spool); more
/// would only hold memory.
const POOL: usize = 8;

/// Spare event vectors shared by the connections of one source.
#[derive(Default)]
pub struct Spares {
    pool: Mutex<Vec<Vec<Event>>>,
}

impl Spares {
    fn take(&self) -> Vec<Event> {
        self.lock().pop().unwrap_or_default()
    }

    fn give(&self, events: Vec<Event>) {
        let mut pool = self.lock();
        if pool.len() < POOL {
            pool.push(events);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<Event>>> {
        // A panic elsewhere cannot leave a Vec of spares inconsistent.
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A batch being decoded: `events[..len]`; the rest are spares.
pub struct Batch<'s> {
    spares: &'s Spares,
    events: Vec<Event>,
    len: usize,
    /// What `events[..len]` take in memory, roughly (see [`Batch::count_last`]).
    bytes: usize,
    /// The connection's fields found clean by the scrubber (its container
    /// id, tag, stream): scanned once, not once per event. Per connection,
    /// so per scrubber (a connection keeps its source's `Ingest`).
    memo: FieldMemo,
}

impl<'s> Batch<'s> {
    pub fn new(spares: &'s Spares) -> Batch<'s> {
        Batch {
            spares,
            events: Vec::new(),
            len: 0,
            bytes: 0,
            memo: FieldMemo::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The batch should be appended before more is decoded into it.
    pub fn is_full(&self) -> bool {
        self.len >= FULL || self.bytes >= FULL_BYTES
    }

    /// Counts the size of the event [`Batch::slot`] last handed out, once
    /// it is filled.
    pub fn count_last(&mut self) {
        self.bytes += self.events[self.len - 1].approx_size() + std::mem::size_of::<Event>();
    }

    /// The next event of the batch, to be overwritten whole: a spare one
    /// (with the strings of an earlier use) when there is one.
    pub fn slot(&mut self) -> &mut Event {
        if self.len == 0 && self.events.is_empty() {
            self.events = self.spares.take();
        }
        if self.len == self.events.len() {
            self.events.push(Event::new(0, Origin::Docker, Vec::new()));
        }
        self.len += 1;
        &mut self.events[self.len - 1]
    }

    /// Takes the event [`Batch::slot`] last handed out out of the batch
    /// (e.g. a piece of a split line, which waits for the rest elsewhere).
    pub fn take_last(&mut self) -> Event {
        assert!(self.len > 0, "take_last on an empty batch");
        self.len -= 1;
        // (One spare fewer; the spares' order does not matter.)
        self.events.swap_remove(self.len)
    }

    /// Adds an event built elsewhere.
    pub fn push(&mut self, event: Event) {
        if self.len == self.events.len() {
            self.events.push(event);
        } else {
            self.events[self.len] = event;
        }
        self.bytes += self.events[self.len].approx_size() + std::mem::size_of::<Event>();
        self.len += 1;
    }

    /// The events of the batch, to label and scrub in place.
    pub fn events_mut(&mut self) -> &mut [Event] {
        &mut self.events[..self.len]
    }

    /// The events, with the scrubber memo of the connection they came from
    /// ([`crate::ingest::Ingest::append_batch_with`]).
    pub fn parts_mut(&mut self) -> (&mut [Event], &mut FieldMemo) {
        (&mut self.events[..self.len], &mut self.memo)
    }

    /// Empties the batch after its append and gives its events to the pool.
    pub fn clear(&mut self) {
        for e in &mut self.events[..self.len] {
            if e.message.capacity() > KEEP_MESSAGE_BYTES {
                e.message = Vec::new();
            }
        }
        self.len = 0;
        self.bytes = 0;
        let mut events = std::mem::take(&mut self.events);
        events.truncate(KEEP);
        self.spares.give(events);
    }
}

/// Where reassembly delivers finished lines.
impl Extend<Event> for Batch<'_> {
    fn extend<I: IntoIterator<Item = Event>>(&mut self, events: I) {
        for e in events {
            self.push(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_and_taken_or_pushed_events_stay_in_order() {
        let spares = Spares::default();
        let mut b = Batch::new(&spares);
        b.slot().message.extend_from_slice(b"one");
        b.slot().message.extend_from_slice(b"piece");
        let piece = b.take_last();
        assert_eq!(piece.message, b"piece");
        b.push(Event::new(2, Origin::Docker, "two"));
        let got: Vec<_> = b.events_mut().iter().map(|e| e.message.clone()).collect();
        assert_eq!(got, vec![b"one".to_vec(), b"two".to_vec()]);
        let capacity = b.events_mut()[0].message.capacity();
        b.clear();
        assert!(b.is_empty());
        // The next batch (of any connection) starts with the events of the
        // last, strings and all: the filler overwrites them.
        let mut other = Batch::new(&spares);
        let e = other.slot();
        assert_eq!(e.message, b"one");
        assert_eq!(e.message.capacity(), capacity);
        assert_eq!(other.len(), 1);
    }

    #[test]
    fn the_pool_is_bounded() {
        let spares = Spares::default();
        let mut batches: Vec<_> = (0..POOL + 3).map(|_| Batch::new(&spares)).collect();
        for b in &mut batches {
            b.slot();
        }
        for b in &mut batches {
            b.clear();
        }
        assert_eq!(spares.lock().len(), POOL);
    }
}
