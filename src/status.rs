//! `weir status`: a human summary of a running agent, read from its metrics
//! endpoint, and an exit code a script or a monitoring check can use.
//!
//! It asks `/health` and `/ready`, then scrapes `/metrics` twice
//! [`Options::interval`] apart to compute rates. It prints counts, rates,
//! sizes and reasons only: the endpoint carries no payload, so neither can
//! this.
//!
//! # When the agent is unhealthy (exit 1)
//!
//! - the endpoint cannot be reached (weir not running, wrong address);
//! - `/health` is not 200 (the pipeline loop stalled or stopped);
//! - `/ready` is not 200 (still starting, or shutting down);
//! - a sink is behind (`weir_spool_sink_lag_bytes` > 0) and has not
//!   delivered for [`Options::stall_after`] (or never has, and weir has been
//!   up that long): its server is down or rejecting everything;
//! - events were dropped (`weir_spool_dropped_events_total` grew) between
//!   the two scrapes: the spool is full and is shedding data right now.
//!
//! Growing decode errors, rejections and sink errors are printed as
//! warnings but do not fail the check: a few bad records are normal life,
//! and a sink that errors without delivering trips the stall rule.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::metrics::http::{self, Address};
use crate::metrics::names as n;
use crate::metrics::parse::Scrape;

/// How `weir status` runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The agent's metrics endpoint.
    pub address: Address,
    /// Time between the two scrapes that rates are computed over.
    pub interval: Duration,
    /// A lagging sink with no success for this long makes the agent unhealthy.
    pub stall_after: Duration,
    /// Connect, read and write timeout of each request.
    pub timeout: Duration,
}

impl Options {
    pub fn new(address: Address) -> Options {
        Options {
            address,
            interval: Duration::from_secs(1),
            stall_after: Duration::from_secs(300),
            timeout: Duration::from_secs(5),
        }
    }
}

/// What `weir status` prints, and whether the agent is healthy.
#[derive(Debug, Clone)]
pub struct Report {
    pub text: String,
    /// Why the agent is unhealthy; empty when healthy.
    pub problems: Vec<String>,
}

impl Report {
    pub fn healthy(&self) -> bool {
        self.problems.is_empty()
    }

    fn unreachable(options: &Options, why: String) -> Report {
        let problem = format!(
            "agent unreachable at {}: {why}; is weir running (systemctl status weir) and is this its `metrics.listen`?",
            options.address
        );
        Report {
            text: String::new(),
            problems: vec![problem],
        }
    }

    /// The text followed by the verdict line(s).
    pub fn render(&self) -> String {
        let mut out = self.text.clone();
        if self.healthy() {
            out.push_str("status: healthy\n");
        } else {
            for p in &self.problems {
                let _ = writeln!(out, "UNHEALTHY: {p}");
            }
        }
        out
    }
}

/// Asks the agent and builds the report.
pub fn run(options: &Options) -> Report {
    let get = |path| http::get(&options.address, path, options.timeout);
    let health = match get("/health") {
        Ok(r) => r,
        Err(e) => return Report::unreachable(options, e.to_string()),
    };
    let ready = match get("/ready") {
        Ok(r) => r,
        Err(e) => return Report::unreachable(options, e.to_string()),
    };
    let scrape = || -> Result<(Scrape, std::time::Instant), String> {
        let r = get("/metrics").map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!("/metrics answered {}", r.status));
        }
        let s = Scrape::parse(&r.body).map_err(|e| format!("/metrics is not valid: {e}"))?;
        Ok((s, std::time::Instant::now()))
    };
    let (first, t0) = match scrape() {
        Ok(s) => s,
        Err(e) => return Report::unreachable(options, e),
    };
    std::thread::sleep(options.interval);
    let (second, t1) = match scrape() {
        Ok(s) => s,
        Err(e) => return Report::unreachable(options, e),
    };
    let probes = Probes {
        health: (health.status, health.body.trim().to_owned()),
        ready: (ready.status, ready.body.trim().to_owned()),
    };
    summarize(
        options,
        &probes,
        &first,
        &second,
        (t1 - t0).as_secs_f64(),
        unix_now(),
    )
}

/// The answers of `/health` and `/ready`: status and (weir's own) reason text.
#[derive(Debug, Clone)]
pub struct Probes {
    pub health: (u16, String),
    pub ready: (u16, String),
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The change of a counter between scrapes; a reset (agent restarted) counts
/// from zero.
fn delta(before: f64, after: f64) -> f64 {
    if after >= before {
        after - before
    } else {
        after
    }
}

/// Builds the report from two scrapes `elapsed` seconds apart, `now` being
/// the Unix time of the second. Pure, so that tests can feed it anything.
pub fn summarize(
    options: &Options,
    probes: &Probes,
    first: &Scrape,
    second: &Scrape,
    elapsed: f64,
    now: f64,
) -> Report {
    let elapsed = elapsed.max(1e-3);
    let mut out = String::new();
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let rate = |name: &str, label: &str, value: &str| {
        delta(
            first.get(name, label, value),
            second.get(name, label, value),
        ) / elapsed
    };

    // The agent.
    let version = second
        .family(n::BUILD_INFO)
        .next()
        .map_or("?", |s| s.label("version"));
    let start = second.sum(n::PROCESS_START_TIME);
    let uptime = (start > 0.0).then(|| (now - start).max(0.0));
    let _ = writeln!(
        out,
        "weir {version} at {}: up {}, health {}, {}",
        options.address,
        uptime.map_or("?".into(), duration),
        verdict(&probes.health, "ok"),
        if probes.ready.0 == 200 {
            "ready".to_owned()
        } else {
            format!("not ready ({})", probes.ready.1)
        },
    );
    if probes.health.0 != 200 {
        problems.push(format!(
            "/health answered {}: {}",
            probes.health.0, probes.health.1
        ));
    }
    if probes.ready.0 != 200 {
        problems.push(format!(
            "/ready answered {}: {} (starting or shutting down)",
            probes.ready.0, probes.ready.1
        ));
    }
    let cpu = delta(
        first.sum(n::PROCESS_CPU_SECONDS),
        second.sum(n::PROCESS_CPU_SECONDS),
    ) / elapsed;
    let _ = writeln!(
        out,
        "process: cpu {:.1}%, rss {}, fds {}/{}",
        cpu * 100.0,
        bytes(second.sum(n::PROCESS_RESIDENT_MEMORY)),
        second.sum(n::PROCESS_OPEN_FDS),
        second.sum(n::PROCESS_MAX_FDS),
    );
    let log_lines = second.by(n::LOG_MESSAGES, "level");
    let _ = writeln!(
        out,
        "weir's own log: {} lines ({}), {} suppressed by the rate limit",
        log_lines.values().fold(0.0, |a, b| a + b),
        reasons(&log_lines),
        second.sum(n::LOG_MESSAGES_SUPPRESSED),
    );

    // Sources.
    let sources = label_values(
        second,
        &[
            n::SOURCE_EVENTS_RECEIVED,
            n::SOURCE_BYTES_RECEIVED,
            n::SOURCE_EVENTS_SPOOLED,
            n::SOURCE_CONNECTIONS,
            n::SOURCE_DECODE_ERRORS,
        ],
        "source",
    );
    let _ = writeln!(out, "\nsources:");
    if sources.is_empty() {
        let _ = writeln!(out, "  (none reported yet)");
    }
    for s in &sources {
        let errors = by_where(second, n::SOURCE_DECODE_ERRORS, "source", s, "reason");
        let new_errors = delta(
            first.get(n::SOURCE_DECODE_ERRORS, "source", s),
            second.get(n::SOURCE_DECODE_ERRORS, "source", s),
        );
        let _ = writeln!(
            out,
            "  {s}: {:.1} events/s ({}/s), {} received, {} spooled, {} connections, decode errors: {}",
            rate(n::SOURCE_EVENTS_RECEIVED, "source", s),
            bytes(rate(n::SOURCE_BYTES_RECEIVED, "source", s)),
            second.get(n::SOURCE_EVENTS_RECEIVED, "source", s),
            second.get(n::SOURCE_EVENTS_SPOOLED, "source", s),
            second.get(n::SOURCE_CONNECTIONS, "source", s),
            reasons(&errors),
        );
        if new_errors > 0.0 {
            warnings.push(format!(
                "source {s}: {new_errors} decode errors in the last {elapsed:.1} s ({})",
                reasons(&by_where_delta(
                    first,
                    second,
                    n::SOURCE_DECODE_ERRORS,
                    "source",
                    s,
                    "reason"
                ))
            ));
        }
    }

    // Scrub.
    let mut rewrites = BTreeMap::new();
    for s in second.family(n::SCRUB_REWRITES) {
        *rewrites
            .entry(format!("{}/{}", s.label("kind"), s.label("action")))
            .or_insert(0.0) += s.value;
    }
    let _ = writeln!(out, "\nscrub rewrites: {}", reasons(&rewrites));

    // Spool.
    let used = second.sum(n::SPOOL_BYTES);
    let max = second.sum(n::SPOOL_MAX_BYTES);
    let _ = writeln!(
        out,
        "spool: {} of {}{}, {} segments",
        bytes(used),
        bytes(max),
        if max > 0.0 {
            format!(" ({:.1}%)", used / max * 100.0)
        } else {
            String::new()
        },
        second.sum(n::SPOOL_SEGMENTS),
    );

    // Sinks.
    let sinks = label_values(
        second,
        &[
            n::SINK_EVENTS_SENT,
            n::SINK_BYTES_SENT,
            n::SINK_ERRORS,
            n::SINK_LAST_SUCCESS,
            n::SPOOL_SINK_LAG_BYTES,
            n::SPOOL_DROPPED_EVENTS,
        ],
        "sink",
    );
    let _ = writeln!(out, "\nsinks:");
    if sinks.is_empty() {
        let _ = writeln!(out, "  (none reported yet)");
    }
    let stall = options.stall_after.as_secs_f64();
    for s in &sinks {
        let lag = second.get(n::SPOOL_SINK_LAG_BYTES, "sink", s);
        let oldest = second.get(n::SPOOL_OLDEST_UNACKED, "sink", s);
        let last = second.get(n::SINK_LAST_SUCCESS, "sink", s);
        let since_success = (last > 0.0).then(|| (now - last).max(0.0));
        let dropped = by_where(second, n::SPOOL_DROPPED_EVENTS, "sink", s, "reason");
        let rejected = by_where(second, n::SINK_REJECTED_EVENTS, "sink", s, "reason");
        let errors = by_where(second, n::SINK_ERRORS, "sink", s, "reason");
        let _ = writeln!(
            out,
            "  {s}: {:.1} events/s ({}/s), {} sent",
            rate(n::SINK_EVENTS_SENT, "sink", s),
            bytes(rate(n::SINK_BYTES_SENT, "sink", s)),
            second.get(n::SINK_EVENTS_SENT, "sink", s),
        );
        let _ = writeln!(
            out,
            "    lag {}, oldest unacknowledged {}, last success {}",
            bytes(lag),
            if oldest > 0.0 {
                format!("{} ago", duration((now - oldest).max(0.0)))
            } else {
                "none".into()
            },
            since_success.map_or("never".into(), |d| format!("{} ago", duration(d))),
        );
        let _ = writeln!(
            out,
            "    retries {}, splits {}, errors: {}; rejected: {}; dropped: {}",
            second.get(n::SINK_RETRIES, "sink", s),
            second.get(n::SINK_SPLITS, "sink", s),
            reasons(&errors),
            reasons(&rejected),
            reasons(&dropped),
        );
        let stalled = match since_success {
            Some(d) => d > stall,
            None => uptime.is_some_and(|u| u > stall),
        };
        if lag > 0.0 && stalled {
            problems.push(format!(
                "sink {s} is {} behind and {}: is its server up and accepting?",
                bytes(lag),
                since_success.map_or(
                    format!(
                        "has delivered nothing in {}",
                        duration(uptime.unwrap_or(0.0))
                    ),
                    |d| format!("last delivered {} ago", duration(d)),
                ),
            ));
        }
        let new_drops = by_where_delta(first, second, n::SPOOL_DROPPED_EVENTS, "sink", s, "reason");
        if new_drops.values().any(|&v| v > 0.0) {
            problems.push(format!(
                "sink {s}: {} events dropped in the last {elapsed:.1} s ({}): the spool is full; raise spool.max_bytes or fix the sink",
                new_drops.values().fold(0.0, |a, b| a + b),
                reasons(&new_drops),
            ));
        }
        for (family, what) in [
            (n::SINK_REJECTED_EVENTS, "rejected"),
            (n::SINK_ERRORS, "errors"),
        ] {
            let new = by_where_delta(first, second, family, "sink", s, "reason");
            if new.values().any(|&v| v > 0.0) {
                warnings.push(format!(
                    "sink {s}: {what} in the last {elapsed:.1} s: {}",
                    reasons(&new)
                ));
            }
        }
    }
    if !warnings.is_empty() {
        let _ = writeln!(out, "\nwarnings:");
        for w in &warnings {
            let _ = writeln!(out, "  {w}");
        }
    }
    out.push('\n');
    Report {
        text: out,
        problems,
    }
}

fn verdict(probe: &(u16, String), ok: &str) -> String {
    if probe.0 == 200 {
        ok.to_owned()
    } else {
        format!("FAILING ({})", probe.1)
    }
}

/// Every value of `label` in any of `families`.
fn label_values(scrape: &Scrape, families: &[&str], label: &str) -> BTreeSet<String> {
    families
        .iter()
        .flat_map(|f| scrape.family(f))
        .map(|s| s.label(label).to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

/// `family`'s series where `label` = `value`, summed by `by`.
fn by_where(
    scrape: &Scrape,
    family: &str,
    label: &str,
    value: &str,
    by: &str,
) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in scrape.family(family).filter(|s| s.label(label) == value) {
        *out.entry(s.label(by).to_owned()).or_insert(0.0) += s.value;
    }
    out
}

fn by_where_delta(
    first: &Scrape,
    second: &Scrape,
    family: &str,
    label: &str,
    value: &str,
    by: &str,
) -> BTreeMap<String, f64> {
    let before = by_where(first, family, label, value, by);
    by_where(second, family, label, value, by)
        .into_iter()
        .map(|(k, v)| {
            let d = delta(before.get(&k).copied().unwrap_or(0.0), v);
            (k, d)
        })
        .filter(|(_, d)| *d > 0.0)
        .collect()
}

/// `reason 3, other 1`, or `none`.
fn reasons(counts: &BTreeMap<String, f64>) -> String {
    let parts: Vec<String> = counts
        .iter()
        .filter(|(_, v)| **v > 0.0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// `1.5 MiB`.
pub fn bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = v.max(0.0);
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `3d 4h`, `2h 5m`, `4m 10s`, `12s`.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    let (d, h, m, s) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(text: &str) -> Scrape {
        Scrape::parse(text).unwrap()
    }

    fn ok() -> Probes {
        Probes {
            health: (200, "ok".into()),
            ready: (200, "ok".into()),
        }
    }

    fn options() -> Options {
        Options::new(Address::Tcp("127.0.0.1:9880".into()))
    }

    const NOW: f64 = 1_700_000_000.0;

    fn base(sent: u64, dropped: u64, last_success: f64, lag: u64) -> String {
        format!(
            "weir_build_info{{version=\"1.2.3\"}} 1\n\
             process_start_time_seconds {}\n\
             process_cpu_seconds_total 10\n\
             weir_source_events_received_total{{source=\"docker\"}} {sent}\n\
             weir_source_decode_errors_total{{source=\"docker\",reason=\"bad_frame\"}} 2\n\
             weir_sink_events_sent_total{{sink=\"loki\"}} {sent}\n\
             weir_sink_last_success_timestamp_seconds{{sink=\"loki\"}} {last_success}\n\
             weir_spool_sink_lag_bytes{{sink=\"loki\"}} {lag}\n\
             weir_spool_dropped_events_total{{sink=\"loki\",reason=\"spool_full\"}} {dropped}\n\
             weir_spool_bytes 1048576\nweir_spool_max_bytes 1073741824\n",
            NOW - 3600.0
        )
    }

    #[test]
    fn a_flowing_agent_is_healthy_and_rates_are_per_second() {
        let a = scrape(&base(1000, 0, NOW - 1.0, 0));
        let b = scrape(&base(1500, 0, NOW, 0));
        let r = summarize(&options(), &ok(), &a, &b, 2.0, NOW);
        assert!(r.healthy(), "{}", r.render());
        let text = r.render();
        assert!(
            text.contains("weir 1.2.3 at 127.0.0.1:9880: up 1h 0m"),
            "{text}"
        );
        assert!(text.contains("docker: 250.0 events/s"), "{text}");
        assert!(text.contains("decode errors: bad_frame 2"), "{text}");
        assert!(text.contains("loki: 250.0 events/s"), "{text}");
        assert!(text.contains("spool: 1.0 MiB of 1.0 GiB (0.1%)"), "{text}");
        assert!(text.ends_with("status: healthy\n"), "{text}");
    }

    #[test]
    fn growing_drops_are_unhealthy_with_the_reason() {
        let a = scrape(&base(1000, 5, NOW, 0));
        let b = scrape(&base(1000, 9, NOW, 0));
        let r = summarize(&options(), &ok(), &a, &b, 1.0, NOW);
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(
            r.problems[0].contains("sink loki: 4 events dropped"),
            "{:?}",
            r.problems
        );
        assert!(r.problems[0].contains("spool_full 4"), "{:?}", r.problems);
        // Old drops that no longer grow are history, not a problem.
        let r = summarize(&options(), &ok(), &b, &b, 1.0, NOW);
        assert!(r.healthy(), "{:?}", r.problems);
    }

    #[test]
    fn a_lagging_sink_without_success_is_unhealthy() {
        let a = scrape(&base(10, 0, NOW - 600.0, 4096));
        let r = summarize(&options(), &ok(), &a, &a, 1.0, NOW);
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(
            r.problems[0].contains("sink loki is 4.0 KiB behind and last delivered 10m 0s ago"),
            "{:?}",
            r.problems
        );
        // Idle but caught up: fine, however long ago the last delivery.
        let a = scrape(&base(10, 0, NOW - 600.0, 0));
        assert!(summarize(&options(), &ok(), &a, &a, 1.0, NOW).healthy());
        // Never delivered, behind, up for an hour.
        let a = scrape(&base(10, 0, 0.0, 100));
        let r = summarize(&options(), &ok(), &a, &a, 1.0, NOW);
        assert!(
            r.problems[0].contains("has delivered nothing in 1h 0m"),
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn failing_probes_are_unhealthy() {
        let a = scrape(&base(1, 0, NOW, 0));
        let probes = Probes {
            health: (503, "pipeline loop stalled (no heartbeat)".into()),
            ready: (503, "shutting down".into()),
        };
        let r = summarize(&options(), &probes, &a, &a, 1.0, NOW);
        assert_eq!(r.problems.len(), 2, "{:?}", r.problems);
        assert!(r
            .render()
            .contains("UNHEALTHY: /health answered 503: pipeline loop stalled"));
    }

    #[test]
    fn counter_resets_count_from_zero() {
        assert_eq!(delta(100.0, 150.0), 50.0);
        assert_eq!(delta(100.0, 20.0), 20.0);
    }

    #[test]
    fn units_read_well() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(duration(59.0), "59s");
        assert_eq!(duration(3725.0), "1h 2m");
        assert_eq!(duration(90061.0), "1d 1h");
    }
}
