//! Process-wide metrics registry, rendered in the Prometheus text format.
//!
//! Components ask for a handle once (`counter(...)`) and keep it: the hot path
//! is one relaxed atomic add. Names follow Prometheus conventions: a `weir_`
//! prefix, `_total` for counters, base units (`_bytes`, `_seconds`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::config::Problems;

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
    pub fn validate(self, _key: &str, _problems: &mut Problems) -> Config {
        let listen = match self.listen {
            None => Some("127.0.0.1:9880".to_owned()),
            Some(s) if s.is_empty() => None,
            Some(s) => Some(s),
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

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Counter,
    Gauge,
}

enum Cell {
    Counter(Arc<AtomicU64>),
    Gauge(Arc<AtomicI64>),
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
        }
    }

    /// The current value of one series, if it exists.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let fams = self.families.lock().unwrap();
        match fams.get(name)?.series.get(&key(labels))? {
            Cell::Counter(c) => Some(c.load(Ordering::Relaxed) as f64),
            Cell::Gauge(g) => Some(g.load(Ordering::Relaxed) as f64),
        }
    }

    /// Every family in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let fams = self.families.lock().unwrap();
        let mut out = String::new();
        for (name, fam) in fams.iter() {
            let kind = match fam.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let _ = writeln!(out, "# HELP {name} {}", fam.help);
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, cell) in &fam.series {
                out.push_str(name);
                if !labels.is_empty() {
                    out.push('{');
                    for (i, (k, v)) in labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{k}=\"{}\"", escape(v));
                    }
                    out.push('}');
                }
                let _ = match cell {
                    Cell::Counter(c) => writeln!(out, " {}", c.load(Ordering::Relaxed)),
                    Cell::Gauge(g) => writeln!(out, " {}", g.load(Ordering::Relaxed)),
                };
            }
        }
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A counter in the process registry; same name and labels give the same counter.
pub fn counter(name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Counter {
    global().counter(name, help, labels)
}

/// A gauge in the process registry.
pub fn gauge(name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Gauge {
    global().gauge(name, help, labels)
}

/// The current value of a series in the process registry.
pub fn value(name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    global().value(name, labels)
}

/// The process registry in the Prometheus text format.
pub fn render() -> String {
    global().render()
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
}
