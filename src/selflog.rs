//! weir's own log: `tracing` to journald under systemd, to stderr otherwise,
//! every call site rate-limited.
//!
//! # The no-payload rule
//!
//! weir's log lines never contain payload bytes (log lines, record fields,
//! response bodies): only counts, sizes, reasons and peer identities. This is
//! what keeps incident 2 (a failure log quoting the batch, fed back into the
//! agent) from happening. The structure enforces it: errors that can reach a
//! log line are enums whose variants hold only numbers, `&'static str`
//! reasons, names from the config and OS errors, never a buffer from the wire.
//!
//! # Rate limiting
//!
//! Each call site may emit [`BURST`] lines per [`WINDOW`]; further lines are
//! counted, not written, and once per window a summary line says how many
//! were suppressed at which site. Applied as a filter on the output layer,
//! so no call site can forget it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::level_filters::LevelFilter;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::filter::FilterExt;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::metrics;

/// Lines one call site may write per window before it is suppressed.
pub const BURST: u32 = 5;
/// The rate-limit window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// The identifier weir's journal entries carry; the journal source skips them.
pub const SYSLOG_IDENTIFIER: &str = "weir";

/// Target of the suppression summaries (themselves exempt from the limit).
const SUMMARY_TARGET: &str = "weir::selflog";

struct Site {
    window_start: Instant,
    emitted: u32,
    suppressed: u64,
    file: &'static str,
    line: u32,
}

/// Per-call-site rate limiter, used as a `tracing_subscriber` filter.
#[derive(Clone, Default)]
pub struct RateLimit {
    sites: Arc<Mutex<HashMap<Identifier, Site>>>,
}

impl RateLimit {
    fn allow(&self, meta: &'static Metadata<'static>) -> bool {
        if meta.target() == SUMMARY_TARGET {
            return true;
        }
        let now = Instant::now();
        let mut sites = self.sites.lock().unwrap();
        let site = sites.entry(meta.callsite()).or_insert_with(|| Site {
            window_start: now,
            emitted: 0,
            suppressed: 0,
            file: meta.file().unwrap_or("?"),
            line: meta.line().unwrap_or(0),
        });
        if now.duration_since(site.window_start) >= WINDOW {
            site.window_start = now;
            site.emitted = 0;
        }
        if site.emitted < BURST {
            site.emitted += 1;
            log_lines_counter(level_label(meta.level())).inc();
            true
        } else {
            site.suppressed += 1;
            suppressed_counter().inc();
            false
        }
    }

    /// Takes the suppressed counts accumulated since the last call.
    fn take_suppressed(&self) -> Vec<(&'static str, u32, u64)> {
        let mut sites = self.sites.lock().unwrap();
        sites
            .values_mut()
            .filter(|s| s.suppressed > 0)
            .map(|s| (s.file, s.line, std::mem::take(&mut s.suppressed)))
            .collect()
    }

    /// Writes one summary line per call site that was suppressed since the last call.
    pub fn report_suppressed(&self) {
        for (file, line, n) in self.take_suppressed() {
            tracing::warn!(target: "weir::selflog", site = %format_args!("{file}:{line}"), suppressed = n, "suppressed {n} similar messages");
        }
    }
}

/// Prometheus label values are lower case by convention.
fn level_label(level: &tracing::Level) -> &'static str {
    match *level {
        tracing::Level::ERROR => "error",
        tracing::Level::WARN => "warn",
        tracing::Level::INFO => "info",
        tracing::Level::DEBUG => "debug",
        tracing::Level::TRACE => "trace",
    }
}

fn log_lines_counter(level: &str) -> metrics::Counter {
    metrics::families::own_log()
        .lines
        .with(metrics::labels::Level {
            level: level.to_owned(),
        })
}

fn suppressed_counter() -> &'static metrics::Counter {
    &metrics::families::own_log().suppressed
}

impl<S> Filter<S> for RateLimit {
    fn enabled(&self, _meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &tracing::Event<'_>, _cx: &Context<'_, S>) -> bool {
        self.allow(event.metadata())
    }
}

/// Where weir's own log goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Journald,
    Stderr,
}

impl Output {
    /// journald when started by systemd (`JOURNAL_STREAM` or `INVOCATION_ID`), else stderr.
    pub fn detect() -> Output {
        if std::env::var_os("JOURNAL_STREAM").is_some()
            || std::env::var_os("INVOCATION_ID").is_some()
        {
            Output::Journald
        } else {
            Output::Stderr
        }
    }
}

/// A subscriber that writes rate-limited text lines to `writer`; used for
/// stderr and by tests that capture weir's log.
pub fn text_subscriber<W>(
    writer: W,
    level: LevelFilter,
    limit: RateLimit,
) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(false)
            .with_target(false)
            .with_filter(level.and(limit)),
    )
}

fn journald_layer<S>(level: LevelFilter, limit: RateLimit) -> std::io::Result<impl Layer<S>>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    Ok(tracing_journald::layer()?
        .with_syslog_identifier(SYSLOG_IDENTIFIER.to_owned())
        .with_filter(level.and(limit)))
}

/// Installs weir's log as the global subscriber and returns its rate limiter
/// (whose [`RateLimit::report_suppressed`] the pipeline calls once per window).
/// The level comes from `WEIR_LOG` (`error`..`trace`), default `info`.
pub fn init(output: Output) -> RateLimit {
    let level = std::env::var("WEIR_LOG")
        .ok()
        .and_then(|s| s.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::INFO);
    let limit = RateLimit::default();
    let result = match output {
        Output::Journald => match journald_layer(level, limit.clone()) {
            Ok(layer) => {
                tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            }
            Err(e) => {
                eprintln!("weir: cannot reach journald ({e}); logging to stderr");
                tracing::subscriber::set_global_default(text_subscriber(
                    std::io::stderr,
                    level,
                    limit.clone(),
                ))
            }
        },
        Output::Stderr => tracing::subscriber::set_global_default(text_subscriber(
            std::io::stderr,
            level,
            limit.clone(),
        )),
    };
    if result.is_err() {
        eprintln!("weir: a log subscriber was already installed; keeping it");
    }
    limit
}

/// Test support: a writer whose output the test can read back.
#[derive(Clone, Default)]
pub struct CaptureWriter(pub Arc<Mutex<Vec<u8>>>);

impl CaptureWriter {
    pub fn contents(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for CaptureWriter {
    type Writer = CaptureWriter;
    fn make_writer(&'a self) -> CaptureWriter {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_site_is_limited_then_summarised() {
        let out = CaptureWriter::default();
        let limit = RateLimit::default();
        let sub = text_subscriber(out.clone(), LevelFilter::INFO, limit.clone());
        tracing::subscriber::with_default(sub, || {
            for i in 0..100 {
                tracing::warn!(attempt = i, "sink down");
            }
            tracing::info!("another site");
            limit.report_suppressed();
        });
        let text = out.contents();
        assert_eq!(text.matches("sink down").count(), BURST as usize, "{text}");
        assert_eq!(text.matches("another site").count(), 1);
        assert!(
            text.contains(&format!("suppressed {} similar messages", 100 - BURST)),
            "{text}"
        );
    }

    #[test]
    fn separate_sites_have_separate_budgets() {
        let out = CaptureWriter::default();
        let sub = text_subscriber(out.clone(), LevelFilter::INFO, RateLimit::default());
        tracing::subscriber::with_default(sub, || {
            for _ in 0..20 {
                tracing::warn!("site one");
                tracing::warn!("site two");
            }
        });
        let text = out.contents();
        assert_eq!(text.matches("site one").count(), BURST as usize);
        assert_eq!(text.matches("site two").count(), BURST as usize);
    }
}
