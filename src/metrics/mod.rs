//! weir's metrics: typed families on `prometheus-client`, declared once in
//! [`families`] with one HELP text each, in a registry that the pipeline
//! creates and hands to its components ([`Metrics`]), and the endpoint that
//! serves it.
//!
//! Components take their handles once (`metrics.sink_events_sent.with(..)`)
//! and keep them: the hot path is one relaxed atomic add. Values cheaper to
//! read than to track (process CPU, open fds, liveness) are collectors,
//! computed at scrape time. Names follow Prometheus conventions: a `weir_`
//! prefix, `_total` for counters, base units (`_bytes`, `_seconds`);
//! [`names`] lists every family, which the dashboard is checked against.
//!
//! - [`http`]: `/metrics`, `/health`, `/ready` and `/status` on `metrics.listen`.
//! - [`health`]: the liveness and readiness state the pipeline sets.
//! - [`process`]: the standard `process_*` metrics from `/proc/self`.
//! - [`snapshot`]: the one summary `/status`, `weir status` and systemd's
//!   `STATUS=` line render.

pub mod families;
pub mod health;
pub mod http;
pub mod names;
pub mod process;
pub mod snapshot;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::problems::Problems;

pub use families::{labels, Families};
pub use health::Health;
pub use snapshot::Snapshot;

/// The default of `metrics.listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9880";

/// `[metrics]` as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where `/metrics`, `/health`, `/ready` and `/status` are served:
    /// `host:port` or `unix:///path`. Default `127.0.0.1:9880`; `""` turns
    /// the endpoint off.
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
#[derive(Clone, Debug, Default)]
pub struct Counter(prometheus_client::metrics::counter::Counter<u64, AtomicU64>);

impl Counter {
    pub fn inc(&self) {
        self.add(1)
    }
    pub fn add(&self, n: u64) {
        self.0.inc_by(n);
    }
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// A value that goes up and down.
#[derive(Clone, Debug, Default)]
pub struct Gauge(prometheus_client::metrics::gauge::Gauge<i64, AtomicI64>);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.set(v);
    }
    pub fn add(&self, v: i64) {
        self.0.inc_by(v);
    }
    pub fn get(&self) -> i64 {
        self.0.get()
    }
}

/// Encodes a wrapper as the prometheus-client metric it wraps.
macro_rules! encode_as_inner {
    ($($ty:ident),*) => {$(
        impl TypedMetric for $ty {
            const TYPE: MetricType = MetricType::$ty;
        }
        impl EncodeMetric for $ty {
            fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
                self.0.encode(encoder)
            }
            fn metric_type(&self) -> MetricType {
                Self::TYPE
            }
        }
    )*};
}
encode_as_inner!(Counter, Gauge);

/// The series of one family, by label set. Unlike `prometheus-client`'s own
/// `Family` it can list its series, which [`snapshot`] needs; series come
/// out sorted.
#[derive(Debug)]
pub struct Family<L, M> {
    series: Arc<RwLock<BTreeMap<L, M>>>,
}

impl<L, M> Clone for Family<L, M> {
    fn clone(&self) -> Self {
        Family {
            series: self.series.clone(),
        }
    }
}

impl<L, M> Default for Family<L, M> {
    fn default() -> Self {
        Family {
            series: Arc::default(),
        }
    }
}

impl<L: Ord + Clone, M: Clone + Default> Family<L, M> {
    /// The handle of the series with `labels`, created at zero if new.
    pub fn with(&self, labels: L) -> M {
        let read = self.series.read().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = read.get(&labels) {
            return m.clone();
        }
        drop(read);
        let mut write = self.series.write().unwrap_or_else(|e| e.into_inner());
        write.entry(labels).or_default().clone()
    }

    /// Every series, sorted by labels.
    pub fn series(&self) -> Vec<(L, M)> {
        let read = self.series.read().unwrap_or_else(|e| e.into_inner());
        read.iter().map(|(l, m)| (l.clone(), m.clone())).collect()
    }
}

impl<L: EncodeLabelSet, M: EncodeMetric + TypedMetric> TypedMetric for Family<L, M> {
    const TYPE: MetricType = M::TYPE;
}

impl<L: EncodeLabelSet, M: EncodeMetric + TypedMetric> EncodeMetric for Family<L, M> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let read = self.series.read().unwrap_or_else(|e| e.into_inner());
        for (labels, metric) in read.iter() {
            metric.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }
    fn metric_type(&self) -> MetricType {
        M::TYPE
    }
}

/// The registry of one pipeline and its families; cheap to clone. Created
/// where the pipeline starts (or by a test) and passed to the components,
/// so two pipelines in one process (tests) never share a series.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    families: Families,
    registry: Mutex<Registry>,
}

impl std::ops::Deref for Metrics {
    type Target = Families;
    fn deref(&self) -> &Families {
        &self.inner.families
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// The Content-Type of what [`Metrics::encode`] writes.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

impl Metrics {
    /// Every family of weir (at zero, `weir_build_info` at 1) and the
    /// `process_*` collector.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let families = Families::new(&mut registry);
        families
            .build_info
            .with(labels::Version {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        registry.register_collector(Box::new(process::Process));
        Metrics {
            inner: Arc::new(Inner {
                families,
                registry: Mutex::new(registry),
            }),
        }
    }

    /// Adds a collector (values computed at each scrape).
    pub fn register_collector(&self, collector: impl Collector) {
        self.registry().register_collector(Box::new(collector));
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Every family in the Prometheus text format, version 0.0.4
    /// ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry())
            .expect("writing to a String cannot fail");
        out
    }

    /// The value of the series `name` (as exposed, `_total` included) with
    /// exactly `labels`, in any order; for tests and benchmarks, which ask
    /// by the names users see. Encodes the whole registry: not for a hot path.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let text = self.encode();
        let mut want: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        want.sort();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
                let mut have = sample_labels(rest.strip_suffix('}')?)?;
                have.sort();
                (n == name && have == want).then(|| value.parse().ok())?
            })
    }
}

/// `k="v",k2="v2"` (values escaped as the text format does) as pairs.
fn sample_labels(text: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        out.push((key.to_owned(), value));
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_share_series_and_encode_in_the_text_format() {
        let m = Metrics::new();
        let sink = || labels::SinkReason::new("a\"b", "timeout");
        let a = m.sink_errors.with(sink());
        let b = m.sink_errors.with(sink());
        a.add(2);
        b.inc();
        m.spool_bytes.set(-4);
        let text = m.encode();
        assert!(
            text.contains("# TYPE weir_sink_errors_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("weir_sink_errors_total{sink=\"a\\\"b\",reason=\"timeout\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("weir_spool_bytes -4\n"), "{text}");
        assert!(
            text.contains("# HELP weir_spool_bytes Bytes the spool uses on disk.\n"),
            "one period, not the two prometheus-client would add: {text}"
        );
        assert_eq!(
            m.value(
                "weir_sink_errors_total",
                &[("reason", "timeout"), ("sink", "a\"b")]
            ),
            Some(3.0)
        );
        assert_eq!(m.value("weir_sink_errors_total", &[("sink", "a\"b")]), None);
        assert!(m.value("process_max_fds", &[]).unwrap() >= 64.0);
    }

    #[test]
    fn two_registries_share_nothing() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.spool_fsyncs.inc();
        assert_eq!(a.value("weir_spool_fsyncs_total", &[]), Some(1.0));
        assert_eq!(b.value("weir_spool_fsyncs_total", &[]), Some(0.0));
    }

    #[test]
    fn escaped_label_values_read_back() {
        assert_eq!(
            sample_labels(r#"a="x\\y\"z\nw",b="""#),
            Some(vec![
                ("a".into(), "x\\y\"z\nw".into()),
                ("b".into(), String::new())
            ])
        );
        assert_eq!(sample_labels("a=x"), None);
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
}
