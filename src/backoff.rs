//! Exponential backoff with *equal* jitter, shared by the sink driver and
//! the journal source.
//!
//! Equal jitter (half the delay fixed, half random) rather than full jitter
//! (`[0, delay]`): a server that is down is never retried sooner than half
//! the nominal delay, while many agents restarting together still spread
//! their retries over the other half instead of retrying in step.

use std::time::Duration;

/// Delays between attempts: the nominal delay is `base * 2^n` (n failed
/// attempts so far), capped at `max`; the delay returned is drawn uniformly
/// from `[nominal/2, nominal]` (equal jitter).
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max,
            attempt: 0,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.attempt.min(20));
        self.attempt = self.attempt.saturating_add(1);
        let cap = exp.min(self.max);
        let half = cap / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    /// Call after a success: the next failure starts from `base` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Failed attempts since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::new(Duration::from_millis(200), Duration::from_secs(30))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let d0 = b.next_delay();
        assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100));
        let d1 = b.next_delay();
        assert!(d1 >= Duration::from_millis(100) && d1 <= Duration::from_millis(200));
        for attempt in 2..40 {
            let d = b.next_delay();
            if attempt < 4 {
                continue; // 400ms, 800ms: not capped yet
            }
            assert!(
                d >= Duration::from_millis(500) && d <= Duration::from_secs(1),
                "{d:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
