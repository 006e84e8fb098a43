//! Wires sources -> scrub -> spool -> sinks, keeps systemd informed, reloads
//! the config in place, and shuts everything down in order.
//!
//! Shutdown order, each step bounded in time: stop the sources (no new data),
//! fsync the spool (everything accepted is durable, so acks and cursors hold),
//! then stop the sinks (what they had not acknowledged stays in the spool and
//! is delivered after the next start). A task that misses its step's deadline
//! is aborted, so that a reload never runs two copies of a sink. The metrics
//! endpoint lives for the whole process, from before the spool opens to the
//! very end, so that a scraper sees the whole start and shutdown (`/ready`
//! answers 503 from the first instant of shutdown).
//!
//! A reload ([`crate::reload`]) is that shutdown followed by a fresh start on
//! the new config, in the same process.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::ingest::Ingest;
use crate::metrics::{self, health, Health, Metrics};
use crate::reload;
use crate::scrub::{ScrubError, Scrubber};
use crate::source::{self, SourceError};
use crate::spool::{Spool, SpoolError};
use crate::statelock::{LockError as StateLockError, StateLock};
use crate::systemd::{self, StatusLine};
use crate::tap::{self, Tap};
use crate::{selflog, sink};

/// How long each shutdown step may take before weir stops waiting for it.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// How often `STATUS=` is refreshed when no watchdog asks for more often.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(10);

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
    #[error(transparent)]
    Lock(#[from] StateLockError),
    /// The spool failed while running: weir stops so that a restart
    /// (systemd's `Restart=on-failure`) recovers what the disk holds.
    #[error("stopped because the spool failed: {0}")]
    SpoolFailed(SpoolError),
}

/// Why the pipeline is not healthy; while it is not, no WATCHDOG=1 is sent.
#[derive(Debug, thiserror::Error)]
pub enum Unhealthy {
    #[error("{kind} `{name}` stopped unexpectedly")]
    TaskEnded { kind: &'static str, name: String },
    #[error("spool fsync did not finish within {0:?}")]
    SpoolStalled(Duration),
    #[error("spool does not accept writes: {0}")]
    SpoolFailed(SpoolError),
}

/// Runs the pipeline described by `config` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    log: Option<selflog::RateLimit>,
) -> Result<(), RunError> {
    run_counting_in(config, shutdown, log, &Metrics::new()).await
}

/// [`run`], counting in `metrics` (a test reads them there).
pub async fn run_counting_in(
    config: Config,
    shutdown: CancellationToken,
    log: Option<selflog::RateLimit>,
    metrics: &Metrics,
) -> Result<(), RunError> {
    let state_lock = lock_state_dir(&config)?;
    run_reloadable(config, state_lock, shutdown, log, None, None, metrics).await
}

/// Creates the state directory and takes its lock (see [`crate::statelock`]):
/// the first thing a weir does, before it writes a pid file or opens the
/// spool, so that a second weir on the same directory changes nothing.
pub fn lock_state_dir(config: &Config) -> Result<StateLock, RunError> {
    crate::statefile::ensure_dir(&config.state_dir, true).map_err(|source| RunError::StateDir {
        path: config.state_dir.display().to_string(),
        source,
    })?;
    Ok(StateLock::acquire(&config.state_dir)?)
}

/// [`run`], and on each request from `reloads` re-read the config and apply
/// it (or, when it is invalid, log why and keep the current one); with
/// `tap_socket`, serve `weir tap` viewers there (across reloads).
pub async fn run_reloadable(
    config: Config,
    mut state_lock: StateLock,
    shutdown: CancellationToken,
    log: Option<selflog::RateLimit>,
    mut reloads: Option<reload::Requests>,
    tap_socket: Option<&std::path::Path>,
    metrics: &Metrics,
) -> Result<(), RunError> {
    let health = Health::new(shutdown.clone());
    register_metrics(metrics, &config, &health);
    // Serve from before the spool opens (its recovery may take a while), so
    // that `/ready` says "starting" rather than refusing, and a taken
    // address is reported before anything else starts. The guard stops the
    // endpoint and the heartbeat on every return path. A reload keeps the
    // endpoint as it is: a changed `metrics.listen` needs a restart.
    let metrics_stop = CancellationToken::new();
    let _metrics_guard = metrics_stop.clone().drop_guard();
    let endpoint = match &config.metrics.listen {
        Some(listen) => {
            let listener = metrics::http::bind(listen).await?;
            Some(metrics::http::serve(
                listener,
                metrics.clone(),
                health.clone(),
                metrics_stop.clone(),
            ))
        }
        None => None,
    };
    let housekeeping = tokio::spawn(housekeeping(log, health.clone(), metrics_stop.clone()));
    let tap = Tap::default();
    let tap_server = tap_socket.and_then(|path| {
        tap::serve(path, tap.clone(), metrics_stop.clone())
            .map_err(|e| tracing::warn!(path = %path.display(), error = %e, "cannot serve the tap socket; `weir tap` will not reach this weir"))
            .ok()
    });

    let mut running = Running::start(&config, &tap, metrics).await?;
    let mut current = config;
    systemd::ready();
    health.set_ready();
    tracing::info!(
        sources = current.sources.len(),
        sinks = current.sinks.len(),
        state_dir = %current.state_dir.display(),
        "weir started"
    );

    let watchdog = systemd::watchdog_interval();
    let period = watchdog.map_or(STATUS_INTERVAL, |w| w.min(STATUS_INTERVAL));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate
    let mut status = status_line(&current, metrics);
    systemd::status(&status.line());
    let mut was_healthy = true;

    let outcome = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            e = running.spool.failure() => {
                systemd::status(&format!("stopping: {e}"));
                break Err(RunError::SpoolFailed(e));
            }
            _ = next_reload(&mut reloads) => {
                let Some(requests) = &mut reloads else { continue };
                let new = match validated(requests) {
                    Ok(new) => new,
                    Err(why) => {
                        requests.decided(false, &why);
                        continue;
                    }
                };
                let lock = match lock_for(&new, &current) {
                    Ok(lock) => lock,
                    Err(why) => {
                        requests.decided(false, &why);
                        continue;
                    }
                };
                systemd::reloading();
                running.stop().await;
                running = match Running::start(&new, &tap, metrics).await {
                    Ok(r) => {
                        current = new;
                        if let Some(lock) = lock {
                            // The old directory is free for others now.
                            drop(std::mem::replace(&mut state_lock, lock));
                        }
                        tracing::info!(sources = current.sources.len(), sinks = current.sinks.len(), "config reloaded");
                        requests.decided(true, &format!(
                            "config reloaded: {} source(s), {} sink(s)",
                            current.sources.len(),
                            current.sinks.len()
                        ));
                        r
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start on the reloaded config; going back to the previous one");
                        let r = Running::start(&current, &tap, metrics).await?;
                        requests.decided(false, &format!(
                            "cannot start on the new config ({e}); running on the previous config"
                        ));
                        r
                    }
                };
                systemd::ready();
                status = status_line(&current, metrics);
                systemd::status(&status.line());
            }
            _ = tick.tick() => {
                match running.health(period).await {
                    Ok(()) => {
                        if watchdog.is_some() {
                            systemd::watchdog();
                        }
                        if !was_healthy {
                            tracing::info!("pipeline healthy again");
                        }
                        was_healthy = true;
                        systemd::status(&status.line());
                    }
                    Err(why) => {
                        tracing::error!(reason = %why, "pipeline unhealthy; withholding the watchdog ping");
                        was_healthy = false;
                        systemd::status(&format!("unhealthy: {why}"));
                    }
                }
            }
        }
    };

    systemd::stopping();
    tracing::info!("shutting down");
    running.stop().await;
    health.set_stopped();
    metrics_stop.cancel();
    let _ = housekeeping.await;
    if let Some(server) = tap_server {
        let _ = server.await;
    }
    if let Some(endpoint) = endpoint {
        let _ = tokio::time::timeout(STEP_TIMEOUT, endpoint).await;
    }
    tracing::info!("weir stopped");
    outcome
}

fn status_line(config: &Config, metrics: &Metrics) -> StatusLine {
    StatusLine::new(
        metrics,
        config.sources.keys().cloned(),
        config.sinks.keys().cloned(),
    )
}

/// The lock on a reloaded config's state directory when it moved (`None`:
/// it did not), or why the reload is refused (logged).
fn lock_for(new: &Config, current: &Config) -> Result<Option<StateLock>, String> {
    if new.state_dir == current.state_dir {
        return Ok(None);
    }
    let locked = crate::statefile::ensure_dir(&new.state_dir, true)
        .map_err(|e| e.to_string())
        .and_then(|()| StateLock::acquire(&new.state_dir).map_err(|e| e.to_string()));
    match locked {
        Ok(lock) => Ok(Some(lock)),
        Err(why) => {
            let why = format!(
                "cannot use the new state_dir: {why}; still running on the previous config"
            );
            tracing::error!("config reload refused: {why}");
            Err(why)
        }
    }
}

async fn next_reload(reloads: &mut Option<reload::Requests>) {
    match reloads {
        Some(r) => r.next().await,
        None => std::future::pending().await,
    }
}

/// The re-read config, or why it cannot be used (logged, and shown in
/// `STATUS=`). Problems name files, keys and lines, never event data.
fn validated(requests: &reload::Requests) -> Result<Config, String> {
    match requests.load() {
        Ok((config, origin)) => {
            tracing::info!(config = %origin, "reloading");
            Ok(config)
        }
        Err(e) => {
            // The problems are in the message text itself, where
            // `journalctl -u weir` shows them, one line for all: the rate
            // limit is per call site.
            let text = e.to_string();
            let mut lines = text.lines().map(str::trim);
            let head = lines.next().unwrap_or_default();
            let why = format!("{head} {}", lines.collect::<Vec<_>>().join("; "));
            let why = why.trim_end();
            tracing::error!("config reload refused; still running on the previous config. {why}");
            systemd::status(&format!(
                "reload refused (config invalid); running on the previous config: {why}"
            ));
            Err(text)
        }
    }
}

/// One started pipeline: its spool and the tasks of its sources and sinks.
struct Running {
    spool: Spool,
    sources: Vec<(String, JoinHandle<()>)>,
    sinks: Vec<(String, JoinHandle<()>)>,
    sources_stop: CancellationToken,
    sinks_stop: CancellationToken,
}

impl Running {
    /// Opens the spool, starts the sinks, then the sources (which bind or
    /// open what they read); returns once every source listens.
    async fn start(config: &Config, tap: &Tap, metrics: &Metrics) -> Result<Running, RunError> {
        crate::statefile::ensure_dir(&config.state_dir, true).map_err(|source| {
            RunError::StateDir {
                path: config.state_dir.display().to_string(),
                source,
            }
        })?;
        let sink_names: Vec<String> = config.sinks.keys().cloned().collect();
        let spool = Spool::open_with(
            &config.state_dir.join("spool"),
            &config.spool,
            &sink_names,
            metrics,
        )?;
        let scrubber =
            Arc::new(Scrubber::new(&config.scrub, &config.state_dir)?.counting_in(metrics));
        let ingest = Ingest::new(spool.clone(), scrubber, &config.hostname).with_tap(tap.clone());

        let mut running = Running {
            spool: spool.clone(),
            sources: Vec::new(),
            sinks: Vec::new(),
            sources_stop: CancellationToken::new(),
            sinks_stop: CancellationToken::new(),
        };
        for (name, sink_config) in &config.sinks {
            let reader = match spool.reader(name) {
                Ok(r) => r,
                Err(e) => {
                    running.stop().await;
                    return Err(e.into());
                }
            };
            let task = sink::spawn(name, sink_config, reader, running.sinks_stop.clone());
            running.sinks.push((name.clone(), task));
        }
        for (name, source_config) in &config.sources {
            let stop = running.sources_stop.clone();
            match source::start(name, source_config, ingest.clone(), stop).await {
                Ok(task) => running.sources.push((name.clone(), task)),
                Err(e) => {
                    running.stop().await;
                    return Err(e.into());
                }
            }
        }
        Ok(running)
    }

    /// Healthy: every task runs and the spool fsyncs within `within`.
    async fn health(&self, within: Duration) -> Result<(), Unhealthy> {
        let tasks = (self.sources.iter().map(|t| ("source", t)))
            .chain(self.sinks.iter().map(|t| ("sink", t)));
        for (kind, (name, task)) in tasks {
            if task.is_finished() {
                return Err(Unhealthy::TaskEnded {
                    kind,
                    name: name.clone(),
                });
            }
        }
        match tokio::time::timeout(within, self.spool.sync()).await {
            Err(_) => Err(Unhealthy::SpoolStalled(within)),
            Ok(Err(e)) => Err(Unhealthy::SpoolFailed(e)),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Sources, spool fsync, sinks: each step bounded by [`STEP_TIMEOUT`].
    async fn stop(self) {
        tracing::info!("stopping sources");
        self.sources_stop.cancel();
        join_all("sources", self.sources).await;
        match tokio::time::timeout(STEP_TIMEOUT, self.spool.sync()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "final spool fsync failed; unacknowledged data may be resent after restart")
            }
            Err(_) => tracing::error!(
                timeout_s = STEP_TIMEOUT.as_secs(),
                "final spool fsync timed out; unacknowledged data may be resent after restart"
            ),
        }
        self.sinks_stop.cancel();
        join_all("sinks", self.sinks).await;
    }
}

/// Waits for every task up to [`STEP_TIMEOUT`], then aborts the stragglers.
async fn join_all(what: &'static str, tasks: Vec<(String, JoinHandle<()>)>) {
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    for (name, mut task) in tasks {
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            tracing::warn!(
                step = what,
                name = %name,
                timeout_s = STEP_TIMEOUT.as_secs(),
                "did not stop in time; aborting it"
            );
            task.abort();
            let _ = task.await;
        }
    }
}

/// The metrics that describe the agent as a whole rather than a component.
fn register_metrics(metrics: &Metrics, config: &Config, health: &Health) {
    metrics
        .spool_max_bytes
        .set(i64::try_from(config.spool.max_bytes.0).unwrap_or(i64::MAX));
    metrics.register_collector(health::Up(health.clone()));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn running(dir: &std::path::Path) -> Running {
        let mut problems = crate::problems::Problems::default();
        let spool_config = crate::spool::RawConfig::default().validate("spool", &mut problems);
        assert!(problems.is_empty());
        Running {
            spool: Spool::open(dir, &spool_config, &["out".to_owned()]).unwrap(),
            sources: Vec::new(),
            sinks: Vec::new(),
            sources_stop: CancellationToken::new(),
            sinks_stop: CancellationToken::new(),
        }
    }

    #[tokio::test]
    async fn healthy_while_every_task_runs_and_the_spool_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = running(dir.path());
        let stop = r.sinks_stop.clone();
        r.sinks.push((
            "out".into(),
            tokio::spawn(async move { stop.cancelled().await }),
        ));
        assert!(r.health(Duration::from_secs(1)).await.is_ok());
        r.stop().await;
    }

    #[tokio::test]
    async fn a_task_that_ended_before_shutdown_is_unhealthy() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = running(dir.path());
        let ended = tokio::spawn(async {});
        while !ended.is_finished() {
            tokio::task::yield_now().await;
        }
        r.sources.push(("docker".into(), ended));
        let why = r.health(Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(why.to_string(), "source `docker` stopped unexpectedly");
    }
}
