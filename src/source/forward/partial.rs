//! Reassembly of lines Docker split into 16 KiB pieces.
//!
//! Docker's log driver reads a container's output in 16 KiB buffers and
//! sends a longer line as several records sharing a `partial_id`, numbered by
//! `partial_ordinal`, the final one with `partial_last = "true"`. All pieces
//! of a line come from one container, hence one connection, in order: the
//! assembler is per connection and needs no locking.
//!
//! A line is capped at `max_bytes`: beyond it the rest is counted, not kept,
//! and the message ends with [`TRUNCATION_MARKER`] and a `truncated_bytes`
//! field. A line whose last piece does not come within `timeout` (the
//! container died mid-line, or the connection closed) is emitted as it is,
//! with the field `partial = "incomplete"`: nothing received is dropped.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::event::Event;

use super::docker::Partial;
use crate::net::budget::UNIT;

/// Appended to a message cut at the size cap.
pub const TRUNCATION_MARKER: &[u8] = b"...[truncated by weir]";

/// Lines being assembled at once on one connection; beyond this the oldest
/// is emitted incomplete (a sender that never finishes lines cannot make
/// weir hold unbounded memory).
const MAX_PENDING: usize = 64;

/// Lines one connection may hold, in bytes, as a multiple of the line cap:
/// a few long lines of different containers' streams at once, not 64.
pub const CONNECTION_LINES: usize = 4;

/// What the lines pending on all the connections of a source may hold
/// together (`partial_total_bytes`), drawn from the source's memory budget
/// (`max_buffered_bytes`) as they grow. Past the first, past a
/// connection's own share, or when the memory budget has no room left, the
/// oldest pending lines are emitted incomplete at once: joining lines never
/// waits and never makes a connection give way.
pub struct Budget {
    limit: usize,
    /// Bytes held, and the units of `memory` they hold.
    state: Mutex<(usize, usize)>,
    memory: Option<Arc<crate::net::Budget>>,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("limit", &self.limit)
            .field("used", &self.used())
            .finish()
    }
}

impl Budget {
    /// A budget of its own (no memory budget to draw from).
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            state: Mutex::new((0, 0)),
            memory: None,
        })
    }

    /// A budget whose bytes are also held on `memory`.
    pub fn on(limit: usize, memory: Arc<crate::net::Budget>) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            state: Mutex::new((0, 0)),
            memory: Some(memory),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, usize)> {
        // Two counters, each updated whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes held now by every connection.
    pub fn used(&self) -> usize {
        self.lock().0
    }

    fn add(&self, bytes: usize) {
        self.lock().0 += bytes;
    }

    fn sub(&self, bytes: usize) {
        let mut st = self.lock();
        st.0 -= bytes;
        let want = st.0.div_ceil(UNIT);
        if st.1 > want {
            if let Some(m) = &self.memory {
                m.give_units(st.1 - want);
            }
            st.1 = want;
        }
    }

    /// Whether what is held is within the limit and held on the memory
    /// budget too (taking what it misses there, if free).
    fn fits(&self) -> bool {
        let mut st = self.lock();
        if st.0 > self.limit {
            return false;
        }
        let want = st.0.div_ceil(UNIT);
        match &self.memory {
            Some(m) if want > st.1 => {
                if m.try_take_units(want - st.1) {
                    st.1 = want;
                    true
                } else {
                    false
                }
            }
            _ => true,
        }
    }
}

struct Pending {
    id: String,
    event: Event,
    started: Instant,
    truncated: usize,
}

/// Per-connection reassembly state.
pub struct Assembler {
    max_bytes: usize,
    timeout: Duration,
    pending: Vec<Pending>,
    /// Message bytes of `pending`, counted in `budget` too (the rest of a
    /// pending line is bounded by [`MAX_PENDING`]).
    held: usize,
    budget: Arc<Budget>,
}

impl Assembler {
    pub fn new(max_bytes: usize, timeout: Duration, budget: Arc<Budget>) -> Assembler {
        Assembler {
            max_bytes,
            timeout,
            pending: Vec::new(),
            held: 0,
            budget,
        }
    }

    fn hold(&mut self, bytes: usize) {
        self.held += bytes;
        self.budget.add(bytes);
    }

    /// Takes pending line `i` out, releasing what it held.
    fn take(&mut self, i: usize) -> Pending {
        let p = self.pending.remove(i);
        let size = p.event.message.len();
        self.held -= size;
        self.budget.sub(size);
        p
    }

    /// Emits the oldest lines, incomplete, while this connection or the
    /// source holds more than its budget, or the memory budget has no room
    /// for what they hold.
    fn keep_within_budget(&mut self, out: &mut impl Extend<Event>) {
        let own = self.max_bytes.saturating_mul(CONNECTION_LINES);
        while !self.pending.is_empty() && (self.held > own || !self.budget.fits()) {
            let oldest = self.take(0);
            out.extend([finish(oldest, false)]);
        }
    }

    /// Adds one piece; returns the whole line when this piece completes it,
    /// and pushes any line evicted to make room into `out`.
    pub fn push(
        &mut self,
        piece: Event,
        partial: Partial,
        now: Instant,
        out: &mut impl Extend<Event>,
    ) {
        let i = match self.pending.iter().position(|p| p.id == partial.id) {
            Some(i) => {
                let p = &mut self.pending[i];
                let room = self.max_bytes.saturating_sub(p.event.message.len());
                let take = room.min(piece.message.len());
                p.event.message.extend_from_slice(&piece.message[..take]);
                p.truncated += piece.message.len() - take;
                self.hold(take);
                i
            }
            None => {
                if self.pending.len() >= MAX_PENDING {
                    let oldest = self.take(0);
                    out.extend([finish(oldest, false)]);
                }
                let mut event = piece;
                let mut truncated = 0;
                if event.message.len() > self.max_bytes {
                    truncated = event.message.len() - self.max_bytes;
                    event.message.truncate(self.max_bytes);
                }
                self.hold(event.message.len());
                self.pending.push(Pending {
                    id: partial.id,
                    event,
                    started: now,
                    truncated,
                });
                self.pending.len() - 1
            }
        };
        if partial.last {
            let done = self.take(i);
            out.extend([finish(done, true)]);
        }
        self.keep_within_budget(out);
    }

    /// Emits every line that has waited longer than the timeout.
    pub fn expire(&mut self, now: Instant, out: &mut impl Extend<Event>) {
        let timeout = self.timeout;
        let mut i = 0;
        while i < self.pending.len() {
            if now.duration_since(self.pending[i].started) >= timeout {
                let p = self.take(i);
                out.extend([finish(p, false)]);
            } else {
                i += 1;
            }
        }
    }

    /// When the oldest pending line times out, if any is pending.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.started + self.timeout).min()
    }

    /// Emits everything pending (the connection is closing).
    pub fn drain(&mut self, out: &mut impl Extend<Event>) {
        while !self.pending.is_empty() {
            let p = self.take(0);
            out.extend([finish(p, false)]);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

impl Drop for Assembler {
    fn drop(&mut self) {
        self.budget.sub(self.held);
    }
}

fn finish(p: Pending, complete: bool) -> Event {
    let mut event = p.event;
    if p.truncated > 0 {
        event.message.extend_from_slice(TRUNCATION_MARKER);
        event
            .fields
            .push(("truncated_bytes".into(), p.truncated.to_string()));
    }
    if !complete {
        event.fields.push(("partial".into(), "incomplete".into()));
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Origin;

    fn piece(text: &str) -> Event {
        Event::new(1, Origin::Docker, text)
    }

    fn part(id: &str, ordinal: u64, last: bool) -> Partial {
        Partial {
            id: id.into(),
            ordinal,
            last,
        }
    }

    #[test]
    fn pieces_join_into_one_line() {
        let mut a = Assembler::new(1 << 20, Duration::from_secs(5), Budget::new(64 << 20));
        let now = Instant::now();
        let mut out = Vec::new();
        a.push(piece("aaa"), part("x", 1, false), now, &mut out);
        a.push(piece("bbb"), part("x", 2, false), now, &mut out);
        assert!(out.is_empty());
        a.push(piece("cc"), part("x", 3, true), now, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].message, b"aaabbbcc");
        assert!(out[0].fields.is_empty());
        assert!(a.is_empty());
    }

    #[test]
    fn a_line_over_the_cap_is_truncated_with_a_marker() {
        let mut a = Assembler::new(5, Duration::from_secs(5), Budget::new(64 << 20));
        let now = Instant::now();
        let mut out = Vec::new();
        a.push(piece("abcd"), part("x", 1, false), now, &mut out);
        a.push(piece("efgh"), part("x", 2, true), now, &mut out);
        let mut want = b"abcde".to_vec();
        want.extend_from_slice(TRUNCATION_MARKER);
        assert_eq!(out[0].message, want);
        assert_eq!(out[0].field("truncated_bytes"), Some("3"));
    }

    #[test]
    fn an_unfinished_line_is_emitted_after_the_timeout() {
        let mut a = Assembler::new(100, Duration::from_secs(5), Budget::new(64 << 20));
        let t0 = Instant::now();
        let mut out = Vec::new();
        a.push(piece("half"), part("x", 1, false), t0, &mut out);
        assert_eq!(a.next_deadline(), Some(t0 + Duration::from_secs(5)));
        a.expire(t0 + Duration::from_secs(4), &mut out);
        assert!(out.is_empty());
        a.expire(t0 + Duration::from_secs(5), &mut out);
        assert_eq!(out[0].message, b"half");
        assert_eq!(out[0].field("partial"), Some("incomplete"));
        assert_eq!(a.next_deadline(), None);
    }

    #[test]
    fn too_many_open_lines_evict_the_oldest() {
        let mut a = Assembler::new(100, Duration::from_secs(5), Budget::new(64 << 20));
        let now = Instant::now();
        let mut out = Vec::new();
        for i in 0..=MAX_PENDING {
            a.push(piece("p"), part(&i.to_string(), 1, false), now, &mut out);
        }
        assert_eq!(out.len(), 1);
        a.drain(&mut out);
        assert_eq!(out.len(), MAX_PENDING + 1);
    }

    #[test]
    fn pending_lines_stay_within_the_connection_and_source_budgets() {
        let budget = Budget::new(10_000);
        let now = Instant::now();
        let mut out = Vec::new();
        // One connection: at most CONNECTION_LINES lines of max_bytes.
        let mut a = Assembler::new(1000, Duration::from_secs(5), budget.clone());
        for i in 0..20 {
            a.push(
                piece(&"x".repeat(1000)),
                part(&format!("id{i}"), 1, false),
                now,
                &mut out,
            );
            assert!(a.held <= 1000 * CONNECTION_LINES, "{}", a.held);
        }
        assert!(
            out.len() >= 15,
            "the oldest lines were emitted: {}",
            out.len()
        );
        assert!(out.iter().all(|e| e.field("partial") == Some("incomplete")));
        // Many connections: together at most the source's budget.
        let mut others: Vec<_> = (0..10)
            .map(|_| Assembler::new(1000, Duration::from_secs(5), budget.clone()))
            .collect();
        for (n, o) in others.iter_mut().enumerate() {
            for i in 0..3 {
                o.push(
                    piece(&"y".repeat(900)),
                    part(&format!("c{n}-{i}"), 1, false),
                    now,
                    &mut out,
                );
                assert!(budget.used() <= 10_000, "{}", budget.used());
            }
        }
        drop(a);
        drop(others);
        assert_eq!(
            budget.used(),
            0,
            "dropped assemblers release what they held"
        );
    }

    #[test]
    fn pending_lines_draw_from_the_memory_budget_and_give_it_back() {
        // Room for 10 KiB of lines on the memory budget, though the
        // partial limit alone would allow 1 MiB.
        let memory = crate::net::Budget::new(10 * UNIT);
        let budget = Budget::on(1 << 20, memory.clone());
        let now = Instant::now();
        let mut out = Vec::new();
        let mut a = Assembler::new(4000, Duration::from_secs(5), budget.clone());
        let mut b = Assembler::new(4000, Duration::from_secs(5), budget.clone());
        for i in 0..8 {
            for (n, x) in [&mut a, &mut b].into_iter().enumerate() {
                x.push(
                    piece(&"z".repeat(3000)),
                    part(&format!("{n}-{i}"), 1, false),
                    now,
                    &mut out,
                );
                assert!(budget.used() <= 10 * UNIT, "{}", budget.used());
                assert_eq!(memory.held(), budget.used().div_ceil(UNIT) * UNIT);
            }
        }
        assert!(out.len() >= 12, "the oldest were emitted: {}", out.len());
        drop((a, b));
        assert_eq!(budget.used(), 0);
        assert_eq!(memory.held(), 0, "given back to the memory budget");
    }
}
