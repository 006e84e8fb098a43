//! Process-wide metrics registry, rendered in the Prometheus text format, and
//! the endpoint that serves it.
//!
//! Components ask for a handle once (`counter(...)`) and keep it: the hot path
//! is one relaxed atomic add. Values that are cheaper to read than to track
//! (process CPU, open fds, ...) are registered as closures
//! ([`gauge_fn`], [`counter_fn`]) and computed at scrape time. Names follow
//! Prometheus conventions: a `weir_` prefix, `_total` for counters, base units
//! (`_bytes`, `_seconds`); [`names`] lists every family weir registers, which
//! the dashboard and `weir status` are checked against.
//!
//! - [`http`]: `/metrics`, `/health` and `/ready` on `metrics.listen`.
//! - [`health`]: the liveness and readiness state the pipeline sets.
//! - [`process`]: the standard `process_*` metrics from `/proc/self`.
//! - [`parse`]: a reader of the text format, for `weir status` and tests.

pub mod health;
pub mod http;
pub mod names;
pub mod parse;
pub mod process;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::problems::Problems;

pub use health::Health;

/// The default of `metrics.listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9880";

/// `[metrics]` as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where `/metrics`, `/health` and `/ready` are served: `host:port` or
    /// `unix:///path`. Default `127.0.0.1:9880`; `""` turns the endpoint off.
    pub listen: Option<String>,
}

/// Validated `[metrics]`.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// `None` when the endpoint is off.
    pub listen: Option<String>,
}

impl RawConfig {
    pub fn validate(self, key: &str, problems: &mut Problems) -> Config {
        let listen = match self.listen {
            None => Some(DEFAULT_LISTEN.to_owned()),
            Some(s) if s.is_empty() => None,
            Some(s) => {
                if let Err(e) = http::Address::parse(&s) {
                    problems.add(format!("{key}.listen"), e.to_string());
                }
                Some(s)
            }
        };
        Config { listen }
    }
}

/// A monotonically increasing count.
#[derive(Clone, Debug)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn inc(&self) {
        self.add(1)
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Clone, Debug)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed)
    }
    pub fn add(&self, v: i64) {
        self.0.fetch_add(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The Prometheus type of a family.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// A value computed at scrape time. It must be quick and must not call back
/// into the registry for the same family (it runs without the registry lock,
/// so other families are fine).
type ValueFn = Arc<dyn Fn() -> f64 + Send + Sync>;

enum Cell {
    Counter(Arc<AtomicU64>),
    Gauge(Arc<AtomicI64>),
    Computed(ValueFn),
}

struct Family {
    help: &'static str,
    kind: Kind,
    series: BTreeMap<Vec<(String, String)>, Cell>,
}

/// All metric families of the process.
#[derive(Default)]
pub struct Registry {
    families: Mutex<BTreeMap<&'static str, Family>>,
}

fn global() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

fn key(labels: &[(&str, &str)]) -> Vec<(String, String)> {
    labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A series' value captured under the lock; closures run after it is released.
enum Snapshot {
    Int(i128),
    Computed(ValueFn),
}

impl Registry {
    fn family<'a>(
        families: &'a mut BTreeMap<&'static str, Family>,
        name: &'static str,
        help: &'static str,
        kind: Kind,
    ) -> &'a mut Family {
        let fam = families.entry(name).or_insert_with(|| Family {
            help,
            kind,
            series: BTreeMap::new(),
        });
        assert_eq!(fam.kind, kind, "metric {name} registered as two kinds");
        fam
    }

    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
    ) -> Counter {
        let mut fams = self.families.lock().unwrap();
        let fam = Self::family(&mut fams, name, help, Kind::Counter);
        let cell = fam
            .series
            .entry(key(labels))
            .or_insert_with(|| Cell::Counter(Arc::default()));
        match cell {
            Cell::Counter(c) => Counter(c.clone()),
            Cell::Gauge(_) => unreachable!("kind checked above"),
            Cell::Computed(_) => panic!("metric {name} {labels:?} is computed, not a counter"),
        }
    }

    pub fn gauge(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Gauge {
        let mut fams = self.families.lock().unwrap();
        let fam = Self::family(&mut fams, name, help, Kind::Gauge);
        let cell = fam
            .series
            .entry(key(labels))
            .or_insert_with(|| Cell::Gauge(Arc::default()));
        match cell {
            Cell::Gauge(g) => Gauge(g.clone()),
            Cell::Counter(_) => unreachable!("kind checked above"),
            Cell::Computed(_) => panic!("metric {name} {labels:?} is computed, not a gauge"),
        }
    }

    /// Registers a series whose value `f` computes at each scrape. Registering
    /// the same name and labels again replaces the function (a pipeline
    /// started twice in one process, as in tests, reports the newest).
    pub fn computed(
        &self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: &[(&str, &str)],
        f: impl Fn() -> f64 + Send + Sync + 'static,
    ) {
        let mut fams = self.families.lock().unwrap();
        let fam = Self::family(&mut fams, name, help, kind);
        fam.series.insert(key(labels), Cell::Computed(Arc::new(f)));
    }

    /// The current value of one series, if it exists.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let snapshot = {
            let fams = self.families.lock().unwrap();
            snapshot(fams.get(name)?.series.get(&key(labels))?)
        };
        Some(match snapshot {
            Snapshot::Int(v) => v as f64,
            Snapshot::Computed(f) => f(),
        })
    }

    /// Every family in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        type Series = Vec<(Vec<(String, String)>, Snapshot)>;
        let families: Vec<(&'static str, &'static str, Kind, Series)> = {
            let fams = self.families.lock().unwrap();
            fams.iter()
                .map(|(name, fam)| {
                    let series = fam
                        .series
                        .iter()
                        .map(|(labels, cell)| (labels.clone(), snapshot(cell)))
                        .collect();
                    (*name, fam.help, fam.kind, series)
                })
                .collect()
        };
        let mut out = String::with_capacity(families.len() * 160);
        for (name, help, kind, series) in families {
            let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
            let _ = writeln!(out, "# TYPE {name} {}", kind.as_str());
            for (labels, value) in series {
                out.push_str(name);
                if !labels.is_empty() {
                    out.push('{');
                    for (i, (k, v)) in labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                    }
                    out.push('}');
                }
                let _ = match value {
                    Snapshot::Int(v) => writeln!(out, " {v}"),
                    Snapshot::Computed(f) => writeln!(out, " {}", format_value(f())),
                };
            }
        }
        out
    }
}

fn snapshot(cell: &Cell) -> Snapshot {
    match cell {
        Cell::Counter(c) => Snapshot::Int(c.load(Ordering::Relaxed).into()),
        Cell::Gauge(g) => Snapshot::Int(g.load(Ordering::Relaxed).into()),
        Cell::Computed(f) => Snapshot::Computed(f.clone()),
    }
}

/// A label value as the exposition format wants it: `\`, `"` and newline escaped.
pub fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// HELP text: `\` and newline escaped (quotes are literal there).
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A float as the exposition format spells it (`+Inf`, `-Inf`, `NaN`).
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// A counter in the process registry; same name and labels give the same counter.
pub fn counter(name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Counter {
    global().counter(name, help, labels)
}

/// A gauge in the process registry.
pub fn gauge(name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Gauge {
    global().gauge(name, help, labels)
}

/// A gauge in the process registry whose value `f` computes at scrape time.
pub fn gauge_fn(
    name: &'static str,
    help: &'static str,
    labels: &[(&str, &str)],
    f: impl Fn() -> f64 + Send + Sync + 'static,
) {
    global().computed(name, help, Kind::Gauge, labels, f)
}

/// A counter in the process registry whose value `f` reads at scrape time
/// (from a source that only grows, such as the kernel's CPU time).
pub fn counter_fn(
    name: &'static str,
    help: &'static str,
    labels: &[(&str, &str)],
    f: impl Fn() -> f64 + Send + Sync + 'static,
) {
    global().computed(name, help, Kind::Counter, labels, f)
}

/// The current value of a series in the process registry.
pub fn value(name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    global().value(name, labels)
}

/// The process registry in the Prometheus text format.
pub fn render() -> String {
    global().render()
}

/// Registers the metrics that describe weir itself: `weir_build_info`, and
/// the `process_*` family. Idempotent.
pub fn register_process_metrics() {
    gauge(
        names::BUILD_INFO,
        "Always 1; the version label says which weir is running.",
        &[("version", env!("CARGO_PKG_VERSION"))],
    )
    .set(1);
    process::register();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_share_series_and_render() {
        let r = Registry::default();
        let a = r.counter("weir_test_total", "Test counter.", &[("sink", "a\"b")]);
        let b = r.counter("weir_test_total", "Test counter.", &[("sink", "a\"b")]);
        a.add(2);
        b.inc();
        r.gauge("weir_test_bytes", "Test gauge.", &[]).set(-4);
        assert_eq!(r.value("weir_test_total", &[("sink", "a\"b")]), Some(3.0));
        let text = r.render();
        assert!(text.contains("# TYPE weir_test_total counter\n"), "{text}");
        assert!(
            text.contains("weir_test_total{sink=\"a\\\"b\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("weir_test_bytes -4\n"), "{text}");
    }

    #[test]
    fn computed_series_are_evaluated_at_scrape_time_and_replaceable() {
        let r = Registry::default();
        let n = Arc::new(AtomicU64::new(1));
        let n2 = n.clone();
        r.computed("weir_test_fn", "Computed.", Kind::Gauge, &[], move || {
            n2.load(Ordering::Relaxed) as f64 / 2.0
        });
        assert!(r.render().contains("weir_test_fn 0.5\n"));
        n.store(7, Ordering::Relaxed);
        assert!(r.render().contains("weir_test_fn 3.5\n"));
        assert_eq!(r.value("weir_test_fn", &[]), Some(3.5));
        r.computed("weir_test_fn", "Computed.", Kind::Gauge, &[], || {
            f64::INFINITY
        });
        assert!(r.render().contains("weir_test_fn +Inf\n"));
    }

    #[test]
    fn help_and_labels_are_escaped() {
        let r = Registry::default();
        r.counter(
            "weir_test_total",
            "Back\\slash and\nnewline \"quoted\".",
            &[("reason", "a\\b\nc\"d")],
        );
        let text = r.render();
        assert!(
            text.contains("# HELP weir_test_total Back\\\\slash and\\nnewline \"quoted\".\n"),
            "{text}"
        );
        assert!(
            text.contains("weir_test_total{reason=\"a\\\\b\\nc\\\"d\"} 0\n"),
            "{text}"
        );
    }

    #[test]
    fn listen_defaults_turns_off_and_is_validated() {
        let mut problems = Problems::default();
        let c = RawConfig { listen: None }.validate("metrics", &mut problems);
        assert_eq!(c.listen.as_deref(), Some(DEFAULT_LISTEN));
        let c = RawConfig {
            listen: Some(String::new()),
        }
        .validate("metrics", &mut problems);
        assert_eq!(c.listen, None);
        assert!(problems.is_empty());
        let text = "state_dir = \"/tmp/w\"\n[sources.d]\ntype = \"journal\"\n\
                    [sinks.f]\ntype = \"file\"\npath = \"/tmp/w/f\"\n\
                    [metrics]\nlisten = \"9880\"\n";
        let err = crate::config::parse(text, "t").unwrap_err().to_string();
        assert!(
            err.contains("line 8: `metrics.listen`: must be host:port"),
            "{err}"
        );
    }

    #[test]
    fn float_formatting_follows_the_exposition_format() {
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(1.25), "1.25");
        assert_eq!(format_value(3.0), "3");
    }
}
