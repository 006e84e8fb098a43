//! Liveness and readiness, as `/health` and `/ready` report them.
//!
//! - **alive** (`/health` 200): the pipeline's housekeeping loop has beaten
//!   within [`STALE_AFTER`] and the pipeline has not returned. A runtime
//!   wedged by a blocking call, or a pipeline that died, turns it to 503.
//! - **ready** (`/ready` 200): the spool is open and every source listens
//!   (the moment weir tells systemd READY=1), and shutdown has not begun.
//!   From the instant the shutdown token is cancelled it is 503: readiness
//!   is derived from the token itself, so no request can see "ready" after
//!   the cancel, whatever the tasks are doing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// How often the pipeline beats.
pub const BEAT_INTERVAL: Duration = Duration::from_secs(1);
/// A heartbeat older than this makes `/health` fail.
pub const STALE_AFTER: Duration = Duration::from_secs(15);

/// The shared health state; cheap to clone.
#[derive(Clone, Debug)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    created: Instant,
    /// Milliseconds after `created` of the last beat.
    last_beat_ms: AtomicU64,
    ready: AtomicBool,
    stopped: AtomicBool,
    shutdown: CancellationToken,
}

/// What `/health` or `/ready` answers, with the reason when not OK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Failing(&'static str),
}

impl Health {
    /// Alive (as of now), not ready, tied to `shutdown`.
    pub fn new(shutdown: CancellationToken) -> Health {
        Health {
            inner: Arc::new(Inner {
                created: Instant::now(),
                last_beat_ms: AtomicU64::new(0),
                ready: AtomicBool::new(false),
                stopped: AtomicBool::new(false),
                shutdown,
            }),
        }
    }

    /// The pipeline loop is alive.
    pub fn beat(&self) {
        let ms = self.inner.created.elapsed().as_millis() as u64;
        self.inner.last_beat_ms.store(ms, Ordering::Relaxed);
    }

    /// The spool is open and every source listens.
    pub fn set_ready(&self) {
        self.inner.ready.store(true, Ordering::Relaxed);
    }

    /// The pipeline has returned: neither alive nor ready any more.
    pub fn set_stopped(&self) {
        self.inner.stopped.store(true, Ordering::Relaxed);
    }

    pub fn liveness(&self) -> Verdict {
        if self.inner.stopped.load(Ordering::Relaxed) {
            return Verdict::Failing("pipeline stopped");
        }
        let now = self.inner.created.elapsed().as_millis() as u64;
        let last = self.inner.last_beat_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) > STALE_AFTER.as_millis() as u64 {
            return Verdict::Failing("pipeline loop stalled (no heartbeat)");
        }
        Verdict::Ok
    }

    pub fn readiness(&self) -> Verdict {
        if self.inner.shutdown.is_cancelled() || self.inner.stopped.load(Ordering::Relaxed) {
            Verdict::Failing("shutting down")
        } else if !self.inner.ready.load(Ordering::Relaxed) {
            Verdict::Failing("starting: spool or sources not ready yet")
        } else {
            Verdict::Ok
        }
    }
}

/// `weir_up`: 1 while [`Health::liveness`] is OK, read at each scrape so a
/// wedged loop shows as 0 even though nothing updates a gauge.
#[derive(Debug)]
pub struct Up(pub Health);

impl prometheus_client::collector::Collector for Up {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric as _;
        let up = i64::from(self.0.liveness() == Verdict::Ok);
        prometheus_client::metrics::gauge::ConstGauge::new(up).encode(encoder.encode_descriptor(
            super::names::UP,
            "1 while the pipeline runs and its loop is alive (as /health), else 0.",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_start_and_shutdown() {
        let shutdown = CancellationToken::new();
        let h = Health::new(shutdown.clone());
        assert_eq!(h.liveness(), Verdict::Ok);
        assert!(matches!(h.readiness(), Verdict::Failing(_)));
        h.set_ready();
        assert_eq!(h.readiness(), Verdict::Ok);
        shutdown.cancel();
        assert_eq!(h.readiness(), Verdict::Failing("shutting down"));
        assert_eq!(h.liveness(), Verdict::Ok, "alive while shutting down");
        h.set_stopped();
        assert!(matches!(h.liveness(), Verdict::Failing(_)));
    }
}
