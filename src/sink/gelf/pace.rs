//! Pacing of UDP sends: at most `messages` per second and `bytes` per
//! second, so that a backlog (after an outage or a restart) does not leave
//! at the speed of the disk and overflow the receiver's socket buffer,
//! which UDP cannot notice. What waits stays in the spool.
//!
//! A virtual clock: every datagram moves it forward by its cost (1/`messages`
//! s for the first datagram of a message, and `len`/`bytes` s for its bytes;
//! the larger of the two, so that both limits hold). The sender sleeps when
//! the clock runs more than [`SLACK`] ahead of real time, and the clock never
//! lags real time by more than [`SLACK`]: sends leave in clumps of at most
//! a few milliseconds' worth, after an idle time too.

use std::time::Duration;

use tokio::time::Instant;

use super::config::Rate;

/// How far sends may run ahead of (or the clock lag behind) the rate: tokio's
/// timer ticks in milliseconds, so sleeping per datagram would cap the rate
/// near 1,000/s whatever was configured.
pub const SLACK: Duration = Duration::from_millis(4);

/// A pacer for one sender.
#[derive(Debug)]
pub struct Pacer {
    /// Seconds per message; 0 when unlimited.
    per_message: f64,
    /// Seconds per byte; 0 when unlimited.
    per_byte: f64,
    clock: Option<Instant>,
}

impl Pacer {
    pub fn new(rate: Rate) -> Pacer {
        let inverse = |v: u64| if v == 0 { 0.0 } else { 1.0 / v as f64 };
        Pacer {
            per_message: inverse(rate.messages),
            per_byte: inverse(rate.bytes.0),
            clock: None,
        }
    }

    /// Whether any limit applies.
    pub fn is_limited(&self) -> bool {
        self.per_message > 0.0 || self.per_byte > 0.0
    }

    /// Waits until a datagram of `len` bytes may go out; `starts_message` is
    /// true for a message's only or first datagram.
    pub async fn wait(&mut self, len: usize, starts_message: bool) {
        if !self.is_limited() {
            return;
        }
        let now = Instant::now();
        let floor = now.checked_sub(SLACK).unwrap_or(now);
        let clock = self.clock.map_or(floor, |c| c.max(floor));
        let message = if starts_message {
            self.per_message
        } else {
            0.0
        };
        let cost = message.max(len as f64 * self.per_byte);
        let next = clock + Duration::from_secs_f64(cost);
        self.clock = Some(next);
        if next > now + SLACK {
            tokio::time::sleep_until(next - SLACK).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::ByteSize;

    /// 2,000 datagrams at 1,000 messages/s take about 2 s of (paused) time;
    /// at 100 KB/s, 200 KB of chunks take about 2 s too; unlimited takes none.
    #[tokio::test(start_paused = true)]
    async fn holds_both_limits_and_none_when_off() {
        let mut p = Pacer::new(Rate {
            messages: 1000,
            bytes: ByteSize(0),
        });
        let start = Instant::now();
        for _ in 0..2000 {
            p.wait(100, true).await;
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(1990) && took <= Duration::from_millis(2010),
            "{took:?}"
        );

        let mut p = Pacer::new(Rate {
            messages: 1000,
            bytes: ByteSize(100_000),
        });
        let start = Instant::now();
        // One message of 200 chunks of 1000 bytes: the byte limit rules.
        for i in 0..200 {
            p.wait(1000, i == 0).await;
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(1990) && took <= Duration::from_millis(2010),
            "{took:?}"
        );

        let mut p = Pacer::new(Rate {
            messages: 0,
            bytes: ByteSize(0),
        });
        let start = Instant::now();
        for _ in 0..10_000 {
            p.wait(1000, true).await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
