//! Wires sources -> scrub -> spool -> sinks, and shuts them down in order.
//!
//! Shutdown order, each step bounded in time: stop the sources (no new data),
//! fsync the spool (everything accepted is durable, so acks and cursors hold),
//! then stop the sinks (what they had not acknowledged stays in the spool and
//! is delivered after the next start), and last the metrics endpoint, so
//! that a scraper sees the whole shutdown (`/ready` answers 503 from its
//! first instant).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::ingest::Ingest;
use crate::metrics::{self, health, names, Health};
use crate::scrub::{ScrubError, Scrubber};
use crate::source::{self, SourceError};
use crate::spool::{Spool, SpoolError};
use crate::{selflog, sink, systemd};

/// How long each shutdown step may take before weir stops waiting for it.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why weir could not run. Each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot create state directory {path}: {source}; create it or set `state_dir`")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open the spool: {0}")]
    Spool(#[from] SpoolError),
    #[error("cannot start the scrubber: {0}")]
    Scrub(#[from] ScrubError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Metrics(#[from] metrics::http::BindError),
}

/// Runs the pipeline described by `config` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    log: Option<selflog::RateLimit>,
) -> Result<(), RunError> {
    std::fs::create_dir_all(&config.state_dir).map_err(|source| RunError::StateDir {
        path: config.state_dir.display().to_string(),
        source,
    })?;
    let health = Health::new(shutdown.clone());
    register_metrics(&config, &health);
    // Serve from before the spool opens (its recovery may take a while), so
    // that `/ready` says "starting" rather than refusing, and a taken
    // address is reported before anything else starts. The guard stops the
    // endpoint and the heartbeat on every return path.
    let metrics_stop = CancellationToken::new();
    let _metrics_guard = metrics_stop.clone().drop_guard();
    let endpoint = match &config.metrics.listen {
        Some(listen) => {
            let listener = metrics::http::bind(listen).await?;
            Some(metrics::http::serve(
                listener,
                health.clone(),
                metrics_stop.clone(),
            ))
        }
        None => None,
    };
    let housekeeping = tokio::spawn(housekeeping(log, health.clone(), metrics_stop.clone()));
    let sink_names: Vec<String> = config.sinks.keys().cloned().collect();
    let spool = Spool::open(&config.state_dir.join("spool"), &config.spool, &sink_names)?;
    let scrubber = Arc::new(Scrubber::new(&config.scrub, &config.state_dir)?);
    let ingest = Ingest::new(spool.clone(), scrubber, &config.hostname);

    let sinks_stop = CancellationToken::new();
    let mut sinks = Vec::new();
    for (name, sink_config) in &config.sinks {
        let reader = spool.reader(name)?;
        sinks.push(sink::spawn(name, sink_config, reader, sinks_stop.clone()));
    }

    let sources_stop = CancellationToken::new();
    let mut sources = Vec::new();
    for (name, source_config) in &config.sources {
        let started =
            source::start(name, source_config, ingest.clone(), sources_stop.clone()).await;
        match started {
            Ok(handle) => sources.push(handle),
            Err(e) => {
                sources_stop.cancel();
                sinks_stop.cancel();
                return Err(e.into());
            }
        }
    }

    systemd::ready();
    health.set_ready();
    tracing::info!(
        sources = config.sources.len(),
        sinks = config.sinks.len(),
        state_dir = %config.state_dir.display(),
        "weir started"
    );

    shutdown.cancelled().await;
    systemd::stopping();
    tracing::info!("shutting down: stopping sources");
    sources_stop.cancel();
    join_all("sources", sources).await;
    if let Err(e) = tokio::time::timeout(STEP_TIMEOUT, spool.sync())
        .await
        .unwrap_or(Ok(()))
    {
        tracing::error!(error = %e, "final spool fsync failed; unacknowledged data may be resent after restart");
    }
    sinks_stop.cancel();
    join_all("sinks", sinks).await;
    health.set_stopped();
    metrics_stop.cancel();
    let _ = housekeeping.await;
    if let Some(endpoint) = endpoint {
        let _ = tokio::time::timeout(STEP_TIMEOUT, endpoint).await;
    }
    tracing::info!("weir stopped");
    Ok(())
}

/// The metrics that describe the agent as a whole rather than a component.
fn register_metrics(config: &Config, health: &Health) {
    metrics::register_process_metrics();
    metrics::gauge(
        names::SPOOL_MAX_BYTES,
        "Most bytes the spool may use (`spool.max_bytes`).",
        &[],
    )
    .set(i64::try_from(config.spool.max_bytes.0).unwrap_or(i64::MAX));
    let health = health.clone();
    metrics::gauge_fn(
        names::UP,
        "1 while the pipeline runs and its loop is alive (as /health), else 0.",
        &[],
        move || f64::from(u8::from(health.liveness() == health::Verdict::Ok)),
    );
}

async fn join_all(what: &'static str, handles: Vec<JoinHandle<()>>) {
    let all = futures_join(handles);
    if tokio::time::timeout(STEP_TIMEOUT, all).await.is_err() {
        tracing::warn!(
            step = what,
            timeout_s = STEP_TIMEOUT.as_secs(),
            "shutdown step timed out; continuing"
        );
    }
}

async fn futures_join(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

/// Periodic chores: the liveness heartbeat (every [`health::BEAT_INTERVAL`])
/// and the self-log suppression summaries (every [`selflog::WINDOW`]). Runs
/// from before the spool opens until the very end of shutdown (`stop`), so
/// `/health` stays 200 through a slow start or stop.
async fn housekeeping(log: Option<selflog::RateLimit>, health: Health, stop: CancellationToken) {
    let mut beat = tokio::time::interval(health::BEAT_INTERVAL);
    let mut summaries = tokio::time::interval(selflog::WINDOW);
    summaries.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = beat.tick() => health.beat(),
            _ = summaries.tick() => {
                if let Some(log) = &log {
                    log.report_suppressed();
                }
            }
        }
    }
}
