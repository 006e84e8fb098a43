//! Connection slots with a fair policy: when every slot is taken, the
//! connection that has been idle longest gives way to the new one.
//!
//! "Idle longest" ranks first the connections that have sent nothing at all
//! (oldest first), then those that have, by the time since they last sent;
//! one that sent within [`ACTIVE`] never gives way. Without the first rule a
//! flood of fresh silent connections would push out a valid client that
//! last wrote 100 ms ago; without the second, a flood that sends one byte
//! per connection would.
//!
//! A fixed limit alone let 5,000 connections that never send anything hold
//! all of the forward source's 1,024 slots, and 2,000 idle ones all 32 of
//! the metrics endpoint's: valid clients were refused for as long as the
//! idle ones stayed. With this policy an idle connection keeps its slot only
//! while nobody else needs it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// How long a new connection waits for the connection told to give way to
/// let go of its slot; after that the new one is refused.
pub const GIVE_WAY_WAIT: Duration = Duration::from_secs(1);
/// A connection that sent something this recently keeps its slot.
pub const ACTIVE: Duration = Duration::from_secs(1);

/// The slots of one listener.
pub struct Slots {
    semaphore: Arc<Semaphore>,
    live: Mutex<HashMap<u64, Arc<Entry>>>,
    next_id: AtomicU64,
    epoch: Instant,
}

struct Entry {
    /// Milliseconds since `epoch` of the last time the connection did
    /// something (connected, or the holder called [`Slot::touch`]).
    last_active: AtomicU64,
    /// Whether [`Slot::touch`] was ever called.
    sent: AtomicBool,
    give_way: CancellationToken,
}

/// One connection's slot, freed when dropped.
pub struct Slot {
    id: u64,
    entry: Arc<Entry>,
    slots: Arc<Slots>,
    _permit: OwnedSemaphorePermit,
}

impl Slots {
    pub fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            semaphore: Arc::new(Semaphore::new(max)),
            live: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// A slot for a new connection: a free one, or the longest-idle
    /// connection's once it has given way. `None` when no slot came free
    /// within [`GIVE_WAY_WAIT`] (the holder is busy, e.g. waiting on the
    /// spool).
    pub async fn acquire(self: &Arc<Self>) -> Option<Slot> {
        if let Ok(permit) = self.semaphore.clone().try_acquire_owned() {
            return Some(self.register(permit));
        }
        self.ask_longest_idle_to_give_way();
        let permit = tokio::time::timeout(GIVE_WAY_WAIT, self.semaphore.clone().acquire_owned())
            .await
            .ok()?
            .ok()?;
        Some(self.register(permit))
    }

    /// Connections holding a slot.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Entry>>> {
        // The map stays consistent even if a holder panicked.
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Slot {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(Entry {
            last_active: AtomicU64::new(self.now_ms()),
            sent: AtomicBool::new(false),
            give_way: CancellationToken::new(),
        });
        self.lock().insert(id, entry.clone());
        Slot {
            id,
            entry,
            slots: self.clone(),
            _permit: permit,
        }
    }

    fn ask_longest_idle_to_give_way(&self) {
        // A scan of at most `max` entries, only when every slot is taken.
        let now = self.now_ms();
        let active = |last: u64| now.saturating_sub(last) < ACTIVE.as_millis() as u64;
        let live = self.lock();
        let oldest = live
            .values()
            .map(|e| {
                let sent = e.sent.load(Ordering::Relaxed);
                (sent, e.last_active.load(Ordering::Relaxed), e)
            })
            .filter(|(sent, last, e)| {
                let told = e.give_way.is_cancelled();
                let busy = *sent && active(*last);
                !told && !busy
            })
            .min_by_key(|(sent, last, _)| (*sent, *last))
            .map(|(_, _, e)| e);
        if let Some(e) = oldest {
            e.give_way.cancel();
        }
    }
}

impl Slot {
    /// Marks the connection active now (call it when it sends something).
    pub fn touch(&self) {
        self.entry
            .last_active
            .store(self.slots.now_ms(), Ordering::Relaxed);
        self.entry.sent.store(true, Ordering::Relaxed);
    }

    /// Cancelled when a new connection needs this slot: the holder should
    /// close the connection (without acknowledging what it has not made
    /// durable) and drop the slot.
    pub fn give_way(&self) -> &CancellationToken {
        &self.entry.give_way
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn silent_connections_give_way_first_then_the_longest_idle() {
        let slots = Slots::new(3);
        let a = slots.acquire().await.unwrap();
        let b = slots.acquire().await.unwrap();
        let c = slots.acquire().await.unwrap();
        a.touch();
        tokio::time::sleep(Duration::from_millis(5)).await;
        c.touch();
        // `b` never sent anything: it goes first, though `a` is older.
        let next = |slots: &Arc<Slots>| {
            let slots = slots.clone();
            tokio::spawn(async move { slots.acquire().await })
        };
        let d = next(&slots);
        tokio::task::yield_now().await;
        assert!(b.give_way().is_cancelled());
        assert!(!a.give_way().is_cancelled() && !c.give_way().is_cancelled());
        drop(b);
        let d = d
            .await
            .unwrap()
            .expect("the freed slot goes to the new one");
        d.touch();
        // Everyone sent within ACTIVE: nobody gives way, the new one waits.
        assert!(slots.acquire().await.is_none());
        assert!(!a.give_way().is_cancelled() && !c.give_way().is_cancelled());
        // Past ACTIVE, the longest idle (`a`, then `c`) gives way.
        tokio::time::sleep(ACTIVE).await;
        d.touch();
        let e = next(&slots);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(a.give_way().is_cancelled() && !c.give_way().is_cancelled());
        drop(a);
        let _e = e.await.unwrap().expect("a gave way");
        assert_eq!(slots.len(), 3);
        drop((c, d));
        assert_eq!(slots.len(), 1);
    }

    #[tokio::test]
    async fn a_holder_that_does_not_give_way_keeps_its_slot() {
        let slots = Slots::new(1);
        let held = slots.acquire().await.unwrap();
        assert!(slots.acquire().await.is_none());
        assert!(held.give_way().is_cancelled());
    }
}
