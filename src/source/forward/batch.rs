//! The events of one spool append, kept for reuse by the next.
//!
//! A Docker-shaped event owns a dozen strings (message, labels, field names
//! and values). Building each one new and dropping it after the append made
//! the allocator about half of the source's CPU. A connection instead keeps
//! the events of its last batch and [`super::docker::fill_event`] refills
//! their strings in place: once warm, decoding allocates nothing per event.

use crate::event::{Event, Origin};

/// A batch is appended once it holds this many events, even mid-buffer.
pub const FULL: usize = 4096;
/// Events kept for reuse after an append, at most. A Docker connection
/// (one event per write) rarely has more than a few hundred in one read; a
/// PackedForward client sends 1000 or so per frame. Beyond this the extra
/// events are freed, so a burst does not pin memory on an idle connection.
const KEEP: usize = FULL;
/// A kept event's message buffer larger than this is freed: one long line
/// must not pin its size in every spare.
const KEEP_MESSAGE_BYTES: usize = 16 * 1024;

/// A batch of events being decoded: `events[..len]`; the rest are spare.
#[derive(Default)]
pub struct Batch {
    events: Vec<Event>,
    len: usize,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The next event of the batch, to be overwritten whole: a spare one
    /// (with the strings of an earlier use) when there is one.
    pub fn slot(&mut self) -> &mut Event {
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
        self.len += 1;
    }

    /// The events of the batch, to label and scrub in place.
    pub fn events_mut(&mut self) -> &mut [Event] {
        &mut self.events[..self.len]
    }

    /// Empties the batch after its append, keeping its events as spares.
    pub fn clear(&mut self) {
        for e in &mut self.events[..self.len] {
            if e.message.capacity() > KEEP_MESSAGE_BYTES {
                e.message = Vec::new();
            }
        }
        self.len = 0;
        self.events.truncate(KEEP);
    }
}

/// Where reassembly delivers finished lines.
impl Extend<Event> for Batch {
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
        let mut b = Batch::default();
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
        // The first slot of the next batch is the first event of the last,
        // strings and all: the filler overwrites it.
        let e = b.slot();
        assert_eq!(e.message, b"one");
        assert_eq!(e.message.capacity(), capacity);
        assert_eq!(b.len(), 1);
    }
}
