//! Turns at a resource the connections of one listener share (the forward
//! source's batches in flight: decoding, scrubbing, appending), served
//! fairly: the connection that used the least of it recently goes first.
//!
//! A plain semaphore serves waiters in arrival order. Connections that send
//! without pause ask again the moment they are done, so 16 of them kept all
//! 16 turns queued ahead of a valid client's one-event batch, and it waited
//! for all of them (over a second with scrubbing on). Here each connection
//! has a [`Flow`] that remembers how long its turns took; a waiter's place
//! is its flow's *finish* time on a virtual clock (start-time fair queueing,
//! measured in microseconds held): a connection that took many long turns
//! waits behind one that took few, and one that was quiet starts at the
//! clock's present, so it cannot save up turns while idle either.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Mutex;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// The turns of one listener.
pub struct Turns {
    state: Mutex<State>,
}

struct State {
    /// Turns nobody holds.
    free: usize,
    /// The virtual clock: the start tag of the turn granted last.
    now: u64,
    waiting: BinaryHeap<Reverse<Waiter>>,
    seq: u64,
}

struct Waiter {
    tag: u64,
    /// Arrival order, among equal tags.
    seq: u64,
    grant: oneshot::Sender<u64>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        (self.tag, self.seq) == (other.tag, other.seq)
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiter {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.tag, self.seq).cmp(&(other.tag, other.seq))
    }
}

/// What one connection used of the turns: its place in line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Flow {
    finish: u64,
}

/// One turn, given back when dropped; [`Turn::end`] also charges its
/// length to the flow that took it.
pub struct Turn<'a> {
    turns: &'a Turns,
    tag: u64,
    started: Instant,
}

impl Turns {
    pub fn new(turns: usize) -> Turns {
        Turns {
            state: Mutex::new(State {
                free: turns,
                now: 0,
                waiting: BinaryHeap::new(),
                seq: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every change below leaves the state consistent at each step.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a turn for `flow`: at once when one is free, else when
    /// it is the waiter that used the least. Cancel-safe: a turn granted
    /// to a waiter that is gone goes to the next one.
    pub async fn take(&self, flow: Flow) -> Turn<'_> {
        let rx = {
            let mut st = self.lock();
            let tag = flow.finish.max(st.now);
            if st.free > 0 {
                st.free -= 1;
                st.now = tag;
                return Turn {
                    turns: self,
                    tag,
                    started: Instant::now(),
                };
            }
            let (grant, rx) = oneshot::channel();
            st.seq += 1;
            let seq = st.seq;
            st.waiting.push(Reverse(Waiter { tag, seq, grant }));
            rx
        };
        let mut waiting = Waiting {
            turns: self,
            rx: Some(rx),
        };
        let tag = waiting
            .rx
            .as_mut()
            .expect("set above")
            .await
            .expect("a waiter's sender is only dropped after it was sent to or skipped");
        waiting.rx = None;
        Turn {
            turns: self,
            tag,
            started: Instant::now(),
        }
    }

    /// Gives a turn back: to the waiter with the lowest tag that is still
    /// there, or to the free ones.
    fn give_back(&self) {
        let mut st = self.lock();
        while let Some(Reverse(w)) = st.waiting.pop() {
            st.now = st.now.max(w.tag);
            if w.grant.send(w.tag).is_ok() {
                return;
            }
        }
        st.free += 1;
    }

    /// Turns nobody holds (for tests and metrics).
    pub fn free(&self) -> usize {
        self.lock().free
    }
}

/// A waiter's side; gives back a turn granted after it stopped waiting.
struct Waiting<'a> {
    turns: &'a Turns,
    rx: Option<oneshot::Receiver<u64>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if rx.try_recv().is_ok() {
                self.turns.give_back();
            }
        }
    }
}

impl Turn<'_> {
    /// How long the turn has been held.
    pub fn held(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Gives the turn back and returns the flow charged with its length
    /// (at least one microsecond: a turn is never free).
    pub fn end(self) -> Flow {
        let held = self.started.elapsed().as_micros().max(1) as u64;
        Flow {
            finish: self.tag.saturating_add(held),
        }
        // `self` drops here: the turn goes back.
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.turns.give_back();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn the_waiter_that_used_least_goes_first_whatever_the_arrival_order() {
        let turns = Arc::new(Turns::new(1));
        // A busy flow took a long turn; a quiet one took a short one.
        let t = turns.take(Flow::default()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let busy = t.end();
        let t = turns.take(Flow::default()).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        let quiet = t.end();
        assert!(quiet.finish < busy.finish, "{quiet:?} {busy:?}");

        let holder = turns.take(Flow::default()).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        // The busy flows ask first, the quiet one last.
        for (name, flow) in [("busy1", busy), ("busy2", busy), ("quiet", quiet)] {
            let (turns, order) = (turns.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let t = turns.take(flow).await;
                order.lock().unwrap().push(name);
                tokio::time::sleep(Duration::from_millis(10)).await;
                t.end()
            }));
            tokio::task::yield_now().await;
        }
        drop(holder);
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["quiet", "busy1", "busy2"]);
        assert_eq!(turns.free(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_flow_cannot_save_up_turns() {
        let turns = Turns::new(1);
        // Much work for one flow moves the clock on...
        let mut busy = Flow::default();
        for _ in 0..10 {
            let t = turns.take(busy).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            busy = t.end();
        }
        // ...and a flow that was idle all along starts at the present, not
        // at 0 (else it could hold the turns for a second before anyone
        // else got one).
        let t = turns.take(Flow::default()).await;
        assert!(t.tag >= 900_000, "{}", t.tag);
    }

    #[tokio::test(start_paused = true)]
    async fn a_turn_granted_to_a_waiter_that_left_goes_to_the_next() {
        let turns = Arc::new(Turns::new(1));
        let holder = turns.take(Flow::default()).await;
        let gone = {
            let turns = turns.clone();
            tokio::spawn(async move {
                let _t = turns.take(Flow::default()).await;
            })
        };
        tokio::task::yield_now().await;
        gone.abort();
        let _ = gone.await;
        let next = {
            let turns = turns.clone();
            tokio::spawn(async move { turns.take(Flow { finish: 5 }).await.end() })
        };
        tokio::task::yield_now().await;
        drop(holder);
        tokio::time::timeout(Duration::from_secs(1), next)
            .await
            .expect("the turn reached the next waiter")
            .unwrap();
        assert_eq!(turns.free(), 1);
    }
}
