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
//!
//! Except a few: a batch of at most [`OWN`] events (Docker writes one event
//! at a time, so that is most of its batches) stays with its connection for
//! the next. Through the pool, with 50 busy connections, the next batch's
//! event came from another container: its id, name, service and tag were
//! validated and copied again for every event, and the pool's lock (shared
//! by every connection, on both cores) was taken twice per event. Kept, the
//! event already holds this connection's strings and no lock is taken.
//!
//! A bigger batch takes a vector from the pool, preferably the one its
//! connection gave back last (see [`Spares::take`]): its spare events then
//! hold this connection's strings, which refilling finds equal instead of
//! copying.

use std::sync::atomic::{AtomicU64, Ordering};
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
/// Vectors the pool must hold for a batch to take one another batch gave
/// back (see [`Spares::take`]).
const STEAL: usize = POOL / 2;
/// A batch of at most this many events leaves them to its connection (see
/// the module doc) rather than to the pool.
pub const OWN: usize = 4;
/// ... with their message buffers freed past this size, and only those
/// whose strings then take at most [`OWN_EVENT_BYTES`]: a connection keeps
/// at most about 7 KiB (4 events of ~200 bytes and their strings; a Docker
/// event's take under 1 KiB), 7 MiB for 1024 connections whatever their
/// clients sent.
const OWN_MESSAGE_BYTES: usize = 512;
const OWN_EVENT_BYTES: usize = 1536;

/// Spare event vectors shared by the connections of one source.
#[derive(Default)]
pub struct Spares {
    pool: Mutex<Vec<Pooled>>,
    /// The last [`Batch`] id handed out.
    ids: AtomicU64,
}

/// A vector of spare events and the bytes they hold (the sum of their
/// [`Event::held_bytes`]), kept up to date as the batch that takes it hands
/// its events out, so that clearing it need not size every spare again.
#[derive(Default)]
struct Pooled {
    events: Vec<Event>,
    held: usize,
    /// The id of the batch that gave it back.
    owner: u64,
}

impl Spares {
    /// A vector of spares for batch `owner`: the last one it gave back,
    /// if the pool still has it. A PackedForward client sends its
    /// container's events by the thousand: refilled from another
    /// connection's vector, every event's container id, name, service,
    /// stream and tag were compared, found different and copied (callgrind
    /// of the forward bench, 4 connections: about 5 strings per event).
    ///
    /// Else, when the pool holds [`STEAL`] vectors or more, the one given
    /// back longest ago (its batch is the least likely to come back for
    /// it); when it holds fewer, none (the batch starts a vector of its
    /// own). Taking the last one given whenever the pool had one, with 4
    /// busy connections and 2 or 3 vectors, every batch took another
    /// connection's (and its own was taken in turn): 85% of the events
    /// copied their strings. What the pool keeps is bounded as before
    /// ([`POOL`] vectors of at most [`FULL_BYTES`]), and so are the
    /// vectors in use (one per connection decoding).
    fn take(&self, owner: u64) -> Pooled {
        let mut pool = self.lock();
        if let Some(i) = pool.iter().rposition(|p| p.owner == owner) {
            return pool.remove(i);
        }
        if pool.len() >= STEAL {
            return pool.remove(0);
        }
        Pooled::default()
    }

    fn give(&self, events: Vec<Event>, held: usize, owner: u64) {
        // An empty vector would take the place of one with spares in it.
        if events.is_empty() {
            return;
        }
        let mut pool = self.lock();
        if pool.len() < POOL {
            pool.push(Pooled {
                events,
                held,
                owner,
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Pooled>> {
        // A panic elsewhere cannot leave a Vec of spares inconsistent.
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A batch being decoded: `events[..len]`; the rest are spares.
pub struct Batch<'s> {
    spares: &'s Spares,
    /// This batch's id in `spares` (unique per source).
    id: u64,
    events: Vec<Event>,
    len: usize,
    /// Between batches: the events of the last one, when it was small
    /// ([`OWN`]), for the next to start with. During a batch: empty.
    own: Vec<Event>,
    /// This batch took a vector from the pool already.
    pooled: bool,
    /// While `pooled`: the bytes the spares `events[len..]` hold. Every
    /// event past `len` is then one of the pooled vector's (own events are
    /// all used before the pool is taken), so handing one out subtracts
    /// it; clearing adds only the used events. Walking every spare of a
    /// pooled vector (up to 4,096) at each clear was 76-85 instructions per
    /// event of the forward bench at full speed (callgrind, 2026-12-07).
    ///
    /// Unless `!count_spares`: then it is not kept up to date, and clearing
    /// sizes the spares left instead (see `refill`).
    spare_held: usize,
    /// Whether handing out a pooled spare subtracts it from `spare_held`.
    count_spares: bool,
    /// How many events the connection's last batch held.
    last_len: usize,
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
            id: spares.ids.fetch_add(1, Ordering::Relaxed) + 1,
            events: Vec::new(),
            len: 0,
            own: Vec::new(),
            pooled: false,
            spare_held: 0,
            count_spares: true,
            last_len: 0,
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
        self.slot_like().0
    }

    /// [`Batch::slot`], and the event before it in the batch (the same
    /// client's: [`super::docker::fill_event_like`] copies from it).
    pub fn slot_like(&mut self) -> (&mut Event, Option<&Event>) {
        self.next_slot();
        self.len += 1;
        let (before, slot) = self.events.split_at_mut(self.len - 1);
        (&mut slot[0], before.last())
    }

    /// Makes `events[len]` the next event to hand out, and takes what it
    /// holds off `spare_held` when it is a pooled spare (and spares are
    /// counted).
    fn next_slot(&mut self) {
        if self.len == self.events.len() && self.refill() {
            return; // a new event
        }
        if self.pooled && self.count_spares {
            let held = self.events[self.len].held_bytes();
            debug_assert!(held <= self.spare_held, "spare_held is exact");
            self.spare_held = self.spare_held.saturating_sub(held);
        }
    }

    /// Makes room for one more event: the connection's own events first,
    /// then the spares of a vector from the pool, then a new event (then
    /// true).
    fn refill(&mut self) -> bool {
        if self.len == 0 && !self.own.is_empty() {
            // (`events` is empty between batches.)
            std::mem::swap(&mut self.events, &mut self.own);
            return false;
        }
        if !self.pooled {
            self.pooled = true;
            let Pooled {
                events: mut pooled,
                held,
                ..
            } = self.spares.take(self.id);
            if !pooled.is_empty() {
                self.spare_held = held;
                // Counting each spare handed out costs one sizing per
                // event; sizing the spares left at the clear costs one per
                // spare left. A connection whose last batch used half the
                // spares or more (a PackedForward client's, 1,000 events
                // a frame, with its own vector back) most likely leaves
                // fewer than it uses: ~60 instructions per event
                // (callgrind). Docker's batches of a few events leave most
                // of a vector's 4,096: counted.
                self.count_spares = self.last_len * 2 < pooled.len();
                // The events filled so far go first, where `len` says they
                // are; the spares they displace move to the end.
                let spare = pooled.len();
                pooled.append(&mut self.events);
                for i in 0..self.len {
                    pooled.swap(i, spare + i);
                }
                self.own = std::mem::replace(&mut self.events, pooled);
                if self.len < self.events.len() {
                    return false;
                }
            }
        }
        self.events.push(Event::new(0, Origin::Docker, Vec::new()));
        true
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
        self.next_slot();
        self.events[self.len] = event;
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

    /// Empties the batch after its append: a small batch's events stay with
    /// the connection ([`OWN`]), the others go to the pool.
    pub fn clear(&mut self) {
        let len = std::mem::take(&mut self.len);
        self.last_len = len;
        self.bytes = 0;
        let pooled = std::mem::take(&mut self.pooled);
        let mut spare_held = std::mem::take(&mut self.spare_held);
        let mut events = std::mem::take(&mut self.events);
        if !std::mem::replace(&mut self.count_spares, true) {
            spare_held = events[len.min(events.len())..]
                .iter()
                .map(Event::held_bytes)
                .sum();
        }
        if events.is_empty() {
            // Nothing was decoded: what the connection kept, it keeps.
            return;
        }
        // `refill` moved the connection's own events into `events`: `own`
        // is an empty vector here, whose room is reused.
        debug_assert!(self.own.is_empty());
        if !pooled {
            // Only the connection's own events were used: they stay. Those
            // past `len` were not handed out since they were found
            // keepable (`slot`, `take_last` and `push` touch only
            // `..len`): only the used ones are checked again. Checking
            // all `OWN` (each `held_bytes`) was ~315 instructions per
            // one-event read (callgrind, paced Docker-shaped).
            debug_assert!(events[len.min(events.len())..]
                .iter()
                .all(|e| e.message.capacity() <= OWN_MESSAGE_BYTES
                    && e.held_bytes() <= OWN_EVENT_BYTES));
            let mut i = 0;
            events.retain_mut(|e| {
                i += 1;
                i > len || keepable(e)
            });
            self.own = events;
            return;
        }
        if len <= OWN {
            for i in (0..len).rev() {
                let mut e = events.swap_remove(i);
                if keepable(&mut e) {
                    self.own.push(e);
                }
            }
            // And spares up to OWN: a connection kept only as many events
            // as its last batch had, so one whose reads bring one to four
            // events (Docker's, when the receiver keeps up) took a pooled
            // vector whenever a read brought more than the last, and this
            // clear then walked all that vector's spares (~330
            // instructions per event of the paced bench, callgrind).
            for _ in self.own.len()..OWN {
                let Some(mut e) = events.pop() else { break };
                spare_held = spare_held.saturating_sub(e.held_bytes());
                if keepable(&mut e) {
                    self.own.push(e);
                }
            }
        }
        // What the kept events hold stays within one full batch's bytes:
        // spare events keep the room of every event that ever used them, so
        // without it a client growing them at ever-changing places could
        // make 8 pooled vectors of 4,096 events pin 16 KiB each (512 MiB).
        // The spares' bytes are known (`spare_held`): only the events this
        // batch used, still at the front unless they went to `own`, are
        // sized. Within both bounds, everything is kept, as the walk below
        // would have kept it.
        let used = if len <= OWN { 0 } else { len.min(events.len()) };
        let mut held = spare_held;
        for e in &mut events[..used] {
            if e.message.capacity() > KEEP_MESSAGE_BYTES {
                e.message = Vec::new();
            }
            held += e.held_bytes();
        }
        debug_assert_eq!(held, events.iter().map(Event::held_bytes).sum::<usize>());
        if events.len() <= KEEP && held <= FULL_BYTES {
            self.spares.give(events, held, self.id);
            return;
        }
        let mut held = 0;
        let mut keep = 0;
        for e in events.iter_mut().take(KEEP) {
            if e.message.capacity() > KEEP_MESSAGE_BYTES {
                e.message = Vec::new();
            }
            let h = e.held_bytes();
            if held + h > FULL_BYTES {
                break;
            }
            held += h;
            keep += 1;
        }
        events.truncate(keep);
        self.spares.give(events, held, self.id);
    }
}

/// Whether a connection may keep `e` for its next batch (its message
/// buffer freed if large): see [`OWN_EVENT_BYTES`].
fn keepable(e: &mut Event) -> bool {
    if e.message.capacity() > OWN_MESSAGE_BYTES {
        e.message = Vec::new();
    }
    e.held_bytes() <= OWN_EVENT_BYTES
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
        b.clear();
        assert!(b.is_empty());
        // A small batch's events stay with its connection: its next batch
        // starts with them, strings and all (the filler overwrites them)...
        let e = b.slot();
        assert!(e.message == b"one" || e.message == b"two");
        assert!(e.message.capacity() > 0);
        // ... and other connections do not get them.
        let mut other = Batch::new(&spares);
        assert_eq!(other.slot().message.capacity(), 0);
        other.clear();
        // A big batch's events go to the pool, for any connection once
        // the pool holds enough (`Spares::take`).
        let mut big = Batch::new(&spares);
        for _ in 0..OWN + 1 {
            big.slot().message.extend_from_slice(b"big");
        }
        let capacity_big = big.events_mut()[0].message.capacity();
        big.clear();
        fill_pool(&spares, STEAL - 1, OWN + 1);
        let mut third = Batch::new(&spares);
        let e = third.slot();
        assert_eq!(e.message, b"big");
        assert_eq!(e.message.capacity(), capacity_big);
        assert_eq!(third.len(), 1);
    }

    /// Gives the pool `vectors` more vectors of `events` events each.
    fn fill_pool(spares: &Spares, vectors: usize, events: usize) {
        let mut fillers: Vec<_> = (0..vectors).map(|_| Batch::new(spares)).collect();
        for filler in &mut fillers {
            for _ in 0..events {
                filler.slot();
            }
        }
        for filler in &mut fillers {
            filler.clear();
        }
    }

    #[test]
    fn a_connection_keeps_few_and_small_events() {
        // What OWN_MESSAGE_BYTES's doc says a connection keeps at most.
        assert!(OWN * (OWN_EVENT_BYTES + std::mem::size_of::<Event>()) <= 7 * 1024);
        let spares = Spares::default();
        let mut b = Batch::new(&spares);
        // Make the pool hold many spares, so that batches mix pooled and
        // own events.
        fill_pool(&spares, STEAL, 100);
        for n in [1, 3, OWN, 2, OWN + 1, 1, 0, 4] {
            for i in 0..n {
                let e = b.slot();
                e.message.clear();
                e.message.resize(if i == 0 { 4096 } else { 100 }, b'x');
                e.fields.clear();
                e.fields
                    .push(("k".into(), "v".repeat(if i == 1 { 4096 } else { 10 })));
            }
            b.clear();
            assert!(b.own.len() <= OWN, "{n}");
            if n > OWN {
                assert!(b.own.is_empty());
            }
            for e in &b.own {
                assert!(e.message.capacity() <= OWN_MESSAGE_BYTES);
                assert!(e.fields.iter().all(|(_, v)| v.capacity() < 4096));
            }
        }
    }

    /// A connection whose reads bring one to four events goes to the pool
    /// once, not each time a read brings more than the last.
    #[test]
    fn small_batches_after_the_first_do_not_take_the_pool() {
        let spares = Spares::default();
        fill_pool(&spares, STEAL, 100);
        let pooled = || spares.pool.lock().unwrap().len();
        assert_eq!(pooled(), STEAL);
        let mut b = Batch::new(&spares);
        b.slot().message.extend_from_slice(b"first");
        assert_eq!(pooled(), STEAL - 1, "the first batch takes a pooled vector");
        b.clear();
        assert_eq!(pooled(), STEAL);
        assert_eq!(b.own.len(), OWN);
        for n in [2, 1, 3, OWN, 2] {
            for _ in 0..n {
                b.slot();
            }
            assert_eq!(pooled(), STEAL, "a batch of {n} took the pool");
            assert_eq!(b.len(), n);
            b.clear();
            assert_eq!(b.own.len(), OWN);
        }
    }

    /// Batches of every size, with pieces taken out and events pushed, on
    /// connections sharing one pool: a batch always holds exactly what was
    /// put in it, in order, whichever own, pooled or new events it used.
    #[test]
    fn batches_hold_what_was_put_in_them_in_order() {
        let spares = Spares::default();
        let mut conns: Vec<Batch<'_>> = (0..3).map(|_| Batch::new(&spares)).collect();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut stamp = 0i64;
        for round in 0..400 {
            let b = &mut conns[next(3) as usize];
            let mut want = Vec::new();
            let n = [0, 1, 2, OWN, OWN + 1, 40, 300][next(7) as usize];
            for _ in 0..n {
                stamp += 1;
                match next(4) {
                    0 => {
                        let message = vec![b'p'; next(3000) as usize];
                        b.push(Event::new(stamp, Origin::Journal, message));
                        want.push(stamp);
                    }
                    1 if !want.is_empty() => {
                        let e = b.take_last();
                        assert_eq!(Some(e.timestamp_ns), want.pop(), "round {round}");
                    }
                    _ => {
                        // Sizes that change what the events hold (and
                        // some past what a kept event may).
                        let grow = next(20_000) as usize;
                        let e = b.slot();
                        e.timestamp_ns = stamp;
                        e.message.resize(grow, b'm');
                        b.count_last();
                        want.push(stamp);
                    }
                }
            }
            let got: Vec<_> = b.events_mut().iter().map(|e| e.timestamp_ns).collect();
            assert_eq!(got, want, "round {round}");
            assert_eq!(b.len(), want.len());
            b.clear();
            assert!(b.is_empty());
            assert!(b.own.len() <= OWN);
            // The bytes counted for each pooled vector are what it holds.
            for p in spares.lock().iter() {
                let held: usize = p.events.iter().map(Event::held_bytes).sum();
                assert_eq!(p.held, held, "round {round}");
                assert!(held <= FULL_BYTES);
            }
        }
    }

    /// A batch gets back the pooled vector its connection gave, if the
    /// pool still has it, whichever was given last; else one another
    /// batch gave (the oldest), only when the pool holds [`STEAL`] or more.
    #[test]
    fn a_batch_takes_back_its_own_pooled_vector() {
        let spares = Spares::default();
        let mut batches: Vec<Batch<'_>> = (0..STEAL + 2).map(|_| Batch::new(&spares)).collect();
        let text = |i: usize| vec![b'a' + i as u8];
        let fill = |b: &mut Batch<'_>, i: usize| {
            for _ in 0..OWN + 1 {
                b.slot().message = text(i);
            }
        };
        fill(&mut batches[0], 0);
        fill(&mut batches[1], 1);
        batches[0].clear();
        batches[1].clear();
        // (Given last: 1's.)
        assert_eq!(batches[0].slot().message, text(0));
        // Too few in the pool to take another's: a new vector.
        assert_eq!(batches[2].slot().message.capacity(), 0);
        assert_eq!(spares.lock().len(), 1);
        batches[0].clear();
        // `STEAL` vectors in the pool, the oldest given 1's.
        for (i, b) in batches.iter_mut().enumerate().take(STEAL).skip(2) {
            fill(b, i);
            b.clear();
        }
        assert_eq!(spares.lock().len(), STEAL);
        let last = STEAL + 1;
        assert_eq!(batches[last].slot().message, text(1));
        assert_eq!(spares.lock().len(), STEAL - 1);
        // 1 finds its own gone (to `last`) and too few left to take one.
        assert_eq!(batches[1].slot().message.capacity(), 0);
    }

    /// A connection that uses most of its pooled vector each time sizes
    /// the spares left at the clear instead of counting those handed out:
    /// the bytes the pool counts are exact either way.
    #[test]
    fn spares_sized_at_the_clear_are_counted_exactly() {
        let spares = Spares::default();
        let mut b = Batch::new(&spares);
        let mut sizes = [10usize, 3000, 7, 500, 16_000].into_iter().cycle();
        for (round, n) in [100, 100, 60, 100, 10, 100, 100].into_iter().enumerate() {
            for i in 0..n {
                let e = b.slot();
                e.message.resize(sizes.next().unwrap(), b'm');
                if i == 1 {
                    assert_eq!(
                        b.count_spares,
                        !(round > 0 && b.last_len * 2 >= 100),
                        "round {round}"
                    );
                }
                if i % 17 == 3 {
                    b.take_last();
                }
            }
            b.clear();
            let pool = spares.lock();
            let held: usize = pool
                .iter()
                .flat_map(|p| &p.events)
                .map(Event::held_bytes)
                .sum();
            assert_eq!(
                pool.iter().map(|p| p.held).sum::<usize>(),
                held,
                "round {round}"
            );
        }
    }

    #[test]
    fn the_pool_is_bounded() {
        let spares = Spares::default();
        let mut batches: Vec<_> = (0..POOL + 3).map(|_| Batch::new(&spares)).collect();
        for b in &mut batches {
            // (Bigger than what a connection keeps for itself.)
            for _ in 0..OWN + 1 {
                b.slot();
            }
        }
        for b in &mut batches {
            b.clear();
        }
        assert_eq!(spares.lock().len(), POOL);
    }

    /// A pooled vector keeps at most one full batch's bytes, however its
    /// events' room was grown (each event with a 16 KiB message, the most
    /// one may keep, is 4,096 x 16 KiB = 64 MiB without the bound).
    #[test]
    fn a_pooled_vector_holds_at_most_a_full_batch_of_bytes() {
        let spares = Spares::default();
        let mut b = Batch::new(&spares);
        for _ in 0..FULL {
            b.slot().message = vec![b'x'; KEEP_MESSAGE_BYTES];
        }
        b.clear();
        let pool = spares.lock();
        assert_eq!(pool.len(), 1);
        let held: usize = pool[0].events.iter().map(Event::held_bytes).sum();
        assert!(held <= FULL_BYTES, "{held} bytes kept");
        assert_eq!(held, pool[0].held, "the pool's count is exact");
        assert!(
            pool[0].events.len() >= FULL_BYTES / (KEEP_MESSAGE_BYTES * 2),
            "{}",
            pool[0].events.len()
        );
    }
}
