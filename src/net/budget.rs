//! A byte budget shared by the connections of one listener, for what a
//! connection holds beyond its small fixed share: a frame being received,
//! gzip data being inflated and the inflated data. The forward source also
//! sets part of it aside for its batches in flight ([`Budget::set_aside`])
//! and holds the lines being joined on it without waiting
//! ([`Budget::try_take_units`]): one budget that every use draws from.
//!
//! Each connection was bounded on its own (a frame up to `max_frame_bytes`,
//! inflated data up to `max_decompressed_bytes`), but many connections at
//! once were not: 64 connections each sending a 15 MiB frame made weir hold
//! 960 MiB. With the budget, what all connections hold together beyond
//! their fixed shares never exceeds its size; a connection that needs more
//! waits (it stops reading, so only its own client slows down).
//!
//! # Nobody waits for ever
//!
//! Connections can hold part of the budget while waiting for more (two
//! frames half received), or hold it without progress (a client that sends
//! most of a frame and stops). So a connection that has waited [`WAIT`]
//! while no holder is busy (decoding a whole frame, which ends by itself:
//! then waiting is only waiting in line) asks the holders that received
//! nothing for the longest time to give way, as many as hold what it misses: they close without acknowledging
//! their frame (their clients resend), and their shares go to the waiters,
//! first come first served. The asking connection is never one that gives
//! way, so the two connections of a deadlock cannot both close. A client
//! that keeps sending keeps its share longer than one that stalls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How long a connection waits for budget before the holder idle longest is
/// asked to give way (and then again, each time it waits this long).
pub const WAIT: Duration = Duration::from_millis(500);

/// The budget is counted in units of this many bytes (a semaphore's permits
/// are a `u32`).
pub const UNIT: usize = 1024;

/// One listener's budget.
pub struct Budget {
    semaphore: Semaphore,
    units: usize,
    holders: Mutex<HashMap<u64, Arc<Holder>>>,
    next_id: AtomicU64,
    epoch: Instant,
    /// Units set aside for good ([`Budget::set_aside`]).
    aside: AtomicU64,
    /// Bytes held, published (`weir_source_buffered_bytes`).
    held: Option<crate::metrics::Gauge>,
    /// Holders asked to give way (`weir_source_budget_gave_way_total`).
    gave_way: Option<crate::metrics::Counter>,
}

struct Holder {
    /// Units held.
    units: AtomicU64,
    /// Milliseconds since `epoch` the connection last received something.
    last_active: AtomicU64,
    /// Busy with what it holds (decoding and appending a whole frame): it
    /// gives its share back when done, so it is never asked to give way.
    busy: AtomicBool,
    /// Waiting for more of the budget: held up by weir, not by its client,
    /// so asked to give way only after those that wait on their clients.
    waiting: AtomicBool,
    /// Holds a whole frame and waits only for room to work through it:
    /// asked to give way last of all.
    whole: AtomicBool,
    give_way: CancellationToken,
}

/// Asked for more than the whole budget: it can never be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{wanted} bytes wanted, more than the whole budget ({total} bytes, but what batches in flight have set aside)")]
pub struct OverBudget {
    pub wanted: usize,
    pub total: usize,
}

impl Budget {
    pub fn new(bytes: usize) -> Arc<Budget> {
        Budget::build(bytes, None, None)
    }

    /// A budget that publishes the bytes held to `held` and counts the
    /// holders asked to give way in `gave_way`.
    pub fn with_metrics(
        bytes: usize,
        held: crate::metrics::Gauge,
        gave_way: crate::metrics::Counter,
    ) -> Arc<Budget> {
        Budget::build(bytes, Some(held), Some(gave_way))
    }

    fn build(
        bytes: usize,
        held: Option<crate::metrics::Gauge>,
        gave_way: Option<crate::metrics::Counter>,
    ) -> Arc<Budget> {
        let units = (bytes / UNIT).clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(Budget {
            semaphore: Semaphore::new(units),
            units,
            holders: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
            aside: AtomicU64::new(0),
            held,
            gave_way,
        })
    }

    /// Sets `bytes` aside for good, for a use sized once at start (the
    /// batches in flight): false, and nothing taken, when not available.
    pub fn set_aside(&self, bytes: usize) -> bool {
        let taken = u32::try_from(bytes.div_ceil(UNIT))
            .ok()
            .and_then(|n| self.semaphore.try_acquire_many(n).ok())
            .map(|p| p.forget())
            .is_some();
        if taken {
            self.aside
                .fetch_add(bytes.div_ceil(UNIT) as u64, Ordering::Relaxed);
        }
        self.publish();
        taken
    }

    /// Units a share may ever hold: the budget but what is set aside.
    fn usable_units(&self) -> usize {
        self.units - self.aside.load(Ordering::Relaxed) as usize
    }

    /// Takes `units` more if they are free now, for a use that no
    /// connection owns and that gives bytes back by itself when refused
    /// (lines being joined: the oldest is emitted). Never waits, never
    /// asks anyone to give way.
    pub fn try_take_units(&self, units: usize) -> bool {
        let taken = u32::try_from(units)
            .ok()
            .and_then(|n| self.semaphore.try_acquire_many(n).ok())
            .map(|p| p.forget())
            .is_some();
        if taken {
            self.publish();
        }
        taken
    }

    /// Gives back `units` taken with [`Budget::try_take_units`].
    pub fn give_units(&self, units: usize) {
        self.semaphore.add_permits(units);
        self.publish();
    }

    /// Bytes held by anyone (also those set aside).
    pub fn held(&self) -> usize {
        self.total() - self.available()
    }

    fn publish(&self) {
        if let Some(g) = &self.held {
            g.set(self.held() as i64);
        }
    }

    /// The whole budget, in bytes.
    pub fn total(&self) -> usize {
        self.units * UNIT
    }

    /// Bytes not held by anyone.
    pub fn available(&self) -> usize {
        self.semaphore.available_permits() * UNIT
    }

    /// A connection's share, holding nothing yet. `give_way` is cancelled
    /// when the connection must close to free its share.
    pub fn share(self: &Arc<Self>, give_way: CancellationToken) -> Share {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let holder = Arc::new(Holder {
            units: AtomicU64::new(0),
            last_active: AtomicU64::new(self.now_ms()),
            busy: AtomicBool::new(false),
            waiting: AtomicBool::new(false),
            whole: AtomicBool::new(false),
            give_way,
        });
        self.lock().insert(id, holder.clone());
        Share {
            id,
            holder,
            budget: self.clone(),
            units: 0,
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Holder>>> {
        // The map stays consistent even if a holder panicked.
        self.holders.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the holders (other than `asking`) that received nothing for the
    /// longest time to give way, as many as hold `units` together (at least
    /// one), unless one is busy. Returns how many were asked.
    fn ask_longest_idle_to_give_way(&self, asking: u64, units: usize) -> usize {
        let holders = self.lock();
        // A busy holder gives its share back by itself: waiting on it is
        // waiting in line, not a deadlock.
        if holders.iter().any(|(id, h)| {
            *id != asking && h.units.load(Ordering::Relaxed) > 0 && h.busy.load(Ordering::Relaxed)
        }) {
            return 0;
        }
        let mut idle: Vec<_> = holders
            .iter()
            .filter(|(id, h)| {
                **id != asking
                    && h.units.load(Ordering::Relaxed) > 0
                    && !h.busy.load(Ordering::Relaxed)
                    && !h.give_way.is_cancelled()
            })
            .map(|(_, h)| {
                let waiting = h.waiting.load(Ordering::Relaxed);
                let key = (
                    h.whole.load(Ordering::Relaxed),
                    waiting,
                    if waiting {
                        u64::MAX - h.units.load(Ordering::Relaxed)
                    } else {
                        h.last_active.load(Ordering::Relaxed)
                    },
                );
                (key, h)
            })
            .collect();
        // Those waiting on their clients first (a frame they stopped
        // sending), the longest idle first; then those waiting on the
        // budget for more of a frame, the one holding most first (how long
        // weir did not read them says nothing of their clients); last
        // those holding a whole frame (a gzip frame waiting for room to
        // inflate: closest to done, asked only when nothing else can break
        // a deadlock).
        idle.sort_unstable_by_key(|(key, _)| *key);
        let (mut freed, mut asked) = (0, 0);
        for (_, h) in idle {
            if freed >= units && asked > 0 {
                break;
            }
            freed += h.units.load(Ordering::Relaxed) as usize;
            asked += 1;
            h.give_way.cancel();
        }
        if let Some(c) = &self.gave_way {
            c.add(asked as u64);
        }
        asked
    }
}

/// Marks a holder waiting for as long as it lives.
struct Waiting(Arc<Holder>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting.store(false, Ordering::Relaxed);
    }
}

/// What one connection holds of the budget; given back when dropped.
pub struct Share {
    id: u64,
    holder: Arc<Holder>,
    budget: Arc<Budget>,
    units: usize,
}

impl Share {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.units * UNIT
    }

    /// Marks the connection active now (call it when it receives something).
    pub fn touch(&self) {
        self.holder
            .last_active
            .store(self.budget.now_ms(), Ordering::Relaxed);
    }

    /// Marks the connection busy with what it holds (decoding and appending
    /// a frame it has whole), or back to waiting on its client or on the
    /// budget. Only a connection that is not busy is asked to give way: one
    /// that received a whole frame and works through it gives its share
    /// back by itself, however long the spool takes.
    pub fn set_busy(&self, busy: bool) {
        self.holder.busy.store(busy, Ordering::Relaxed);
    }

    /// Marks the connection holding a whole frame that waits only for
    /// room to work through it (see [`Budget`]'s give-way order).
    pub fn set_whole(&self, whole: bool) {
        self.holder.whole.store(whole, Ordering::Relaxed);
    }

    pub fn is_busy(&self) -> bool {
        self.holder.busy.load(Ordering::Relaxed)
    }

    /// Holds at least `bytes` (rounded up to the unit), waiting for others
    /// to give some back if need be (see the module doc). Cancel-safe: when
    /// the future is dropped, what it had not got yet is not taken.
    pub async fn grow_to(&mut self, bytes: usize) -> Result<(), OverBudget> {
        let want = bytes.div_ceil(UNIT);
        if want <= self.units {
            return Ok(());
        }
        if want > self.budget.usable_units() {
            return Err(OverBudget {
                wanted: bytes,
                total: self.budget.usable_units() * UNIT,
            });
        }
        let more = u32::try_from(want - self.units).expect("at most the whole budget");
        let budget = self.budget.clone();
        // Cleared when granted, or when the future is dropped.
        let waiting = Waiting(self.holder.clone());
        waiting.0.waiting.store(true, Ordering::Relaxed);
        loop {
            match tokio::time::timeout(WAIT, budget.semaphore.acquire_many(more)).await {
                Ok(permit) => {
                    permit.expect("the semaphore is never closed").forget();
                    self.set_units(want);
                    return Ok(());
                }
                Err(_) => {
                    let missing =
                        (more as usize).saturating_sub(budget.semaphore.available_permits());
                    let asked = budget.ask_longest_idle_to_give_way(self.id, missing);
                    if asked == 0 {
                        continue;
                    }
                    tracing::warn!(
                        wanted_bytes = bytes,
                        budget_bytes = budget.total(),
                        asked,
                        "buffer budget (max_buffered_bytes) used up for {WAIT:?}; the connections holding some that received nothing for longest close unacknowledged (their clients resend)"
                    );
                }
            }
        }
    }

    /// Holds at least `bytes` if that is possible without waiting.
    pub fn try_grow_to(&mut self, bytes: usize) -> bool {
        let want = bytes.div_ceil(UNIT);
        if want <= self.units {
            return true;
        }
        let Ok(more) = u32::try_from(want - self.units) else {
            return false;
        };
        let got = self
            .budget
            .semaphore
            .try_acquire_many(more)
            .map(|p| p.forget());
        if got.is_ok() {
            self.set_units(want);
        }
        got.is_ok()
    }

    /// Holds at most `bytes` (rounded up), giving the rest back.
    pub fn shrink_to(&mut self, bytes: usize) {
        let want = bytes.div_ceil(UNIT);
        if want < self.units {
            self.budget.semaphore.add_permits(self.units - want);
            self.set_units(want);
        }
    }

    fn set_units(&mut self, units: usize) {
        self.units = units;
        self.holder.units.store(units as u64, Ordering::Relaxed);
        self.budget.publish();
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.shrink_to(0);
        self.budget.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shares_never_exceed_the_budget_and_come_back_when_dropped() {
        let budget = Budget::new(100 * UNIT);
        let mut a = budget.share(CancellationToken::new());
        let mut b = budget.share(CancellationToken::new());
        a.grow_to(60 * UNIT).await.unwrap();
        assert!(!b.try_grow_to(41 * UNIT));
        assert!(b.try_grow_to(40 * UNIT));
        assert_eq!(budget.available(), 0);
        a.shrink_to(10 * UNIT + 1);
        assert_eq!(a.bytes(), 11 * UNIT);
        assert_eq!(budget.available(), 49 * UNIT);
        drop((a, b));
        assert_eq!(budget.available(), 100 * UNIT);
        let mut c = budget.share(CancellationToken::new());
        assert_eq!(
            c.grow_to(101 * UNIT).await,
            Err(OverBudget {
                wanted: 101 * UNIT,
                total: 100 * UNIT
            })
        );
    }

    /// Polls a future that must be ready at once.
    fn futures_lite_ready<F: std::future::Future>(f: F) -> F::Output {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_millis(100), f)
                .await
                .expect("ready at once")
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_holder_stalled_on_its_client_gives_way_before_a_whole_frame() {
        let budget = Budget::new(100 * UNIT);
        let (t_whole, t_stalled) = (CancellationToken::new(), CancellationToken::new());
        let mut whole = budget.share(t_whole.clone());
        let mut stalled = budget.share(t_stalled.clone());
        whole.grow_to(30 * UNIT).await.unwrap();
        stalled.grow_to(30 * UNIT).await.unwrap();
        // The whole frame received nothing for longer, but it only waits
        // for room to work through what it has.
        whole.set_whole(true);
        tokio::time::sleep(Duration::from_millis(10)).await;
        stalled.touch();
        let mut asker = budget.share(CancellationToken::new());
        asker.grow_to(20 * UNIT).await.unwrap();
        let asking = tokio::spawn(async move {
            asker.grow_to(50 * UNIT).await.unwrap();
            asker
        });
        tokio::time::sleep(WAIT + Duration::from_millis(5)).await;
        assert!(t_stalled.is_cancelled() && !t_whole.is_cancelled());
        drop(stalled);
        let asker = asking.await.unwrap();
        assert_eq!(asker.bytes(), 50 * UNIT);
        // With nobody else to ask, the whole frame gives way too: two
        // connections must never wait on each other for ever.
        drop(asker);
        let mut other = budget.share(CancellationToken::new());
        let asking = tokio::spawn(async move { other.grow_to(80 * UNIT).await });
        tokio::time::sleep(WAIT + Duration::from_millis(5)).await;
        assert!(t_whole.is_cancelled());
        drop(whole);
        asking.await.unwrap().unwrap();
    }

    #[test]
    fn set_aside_and_loose_units_come_out_of_the_same_budget() {
        let budget = Budget::new(100 * UNIT);
        assert!(budget.set_aside(40 * UNIT));
        assert!(!budget.set_aside(61 * UNIT), "only 60 units left");
        let mut big = budget.share(CancellationToken::new());
        assert!(
            futures_lite_ready(big.grow_to(61 * UNIT)).is_err(),
            "what is set aside is never granted: refused, not waited for"
        );
        drop(big);
        assert!(budget.try_take_units(50));
        let mut share = budget.share(CancellationToken::new());
        assert!(!share.try_grow_to(11 * UNIT));
        assert!(share.try_grow_to(10 * UNIT));
        assert_eq!(budget.held(), 100 * UNIT);
        budget.give_units(50);
        assert_eq!(budget.held(), 50 * UNIT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_makes_the_longest_idle_holder_give_way_never_itself() {
        let budget = Budget::new(100 * UNIT);
        let (ta, tb, tc) = (
            CancellationToken::new(),
            CancellationToken::new(),
            CancellationToken::new(),
        );
        let mut a = budget.share(ta.clone());
        let mut b = budget.share(tb.clone());
        a.grow_to(40 * UNIT).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        b.grow_to(40 * UNIT).await.unwrap();
        b.touch();
        // `c` holds 20 and wants 30 more: the deadlock of two half frames.
        let mut c = budget.share(tc.clone());
        c.grow_to(20 * UNIT).await.unwrap();
        let waiter = tokio::spawn(async move {
            c.grow_to(50 * UNIT).await.unwrap();
            c
        });
        tokio::time::sleep(WAIT + Duration::from_millis(1)).await;
        // `a` received nothing for the longest: it is asked, not `b`, and
        // never the waiter itself.
        assert!(ta.is_cancelled() && !tb.is_cancelled() && !tc.is_cancelled());
        drop(a);
        // While a holder is busy, nobody is asked, however long it waits.
        b.set_busy(true);
        let mut d = budget.share(CancellationToken::new());
        let waiter_d =
            tokio::spawn(
                async move { tokio::time::timeout(3 * WAIT, d.grow_to(100 * UNIT)).await },
            );
        tokio::time::sleep(3 * WAIT).await;
        assert!(!tb.is_cancelled());
        assert!(waiter_d.await.unwrap().is_err(), "nobody gave way");
        let c = waiter.await.unwrap();
        assert_eq!(c.bytes(), 50 * UNIT);
        assert_eq!(budget.available(), 10 * UNIT);
    }
}
