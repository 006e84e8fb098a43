//! `weir status`: a human summary of a running agent, read from its metrics
//! endpoint, and an exit code a script or a monitoring check can use.
//!
//! It fetches the agent's [`Snapshot`] from `/status` twice,
//! [`Options::interval`] apart, to compute rates. It prints counts, rates,
//! sizes and reasons only: the snapshot carries no payload, so neither can
//! this.
//!
//! # When the agent is unhealthy (exit 1)
//!
//! - the endpoint cannot be reached (weir not running, wrong address);
//! - it is not healthy, as `/health` (the pipeline loop stalled or stopped);
//! - it is not ready, as `/ready` (still starting, or shutting down);
//! - a sink is behind (`weir_spool_sink_lag_bytes` > 0) and has not
//!   delivered for [`Options::stall_after`] (or never has, and weir has been
//!   up that long): its server is down or rejecting everything;
//! - events were dropped (`weir_spool_dropped_events_total` grew) between
//!   the two scrapes: the spool is full and is shedding data right now.
//!
//! Growing decode errors, rejections and sink errors are printed as
//! warnings but do not fail the check: a few bad records are normal life,
//! and a sink that errors without delivering trips the stall rule.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::metrics::http::{self, Address};
use crate::metrics::Snapshot;

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
    let fetch = || -> Result<(Snapshot, std::time::Instant), String> {
        let r =
            http::get(&options.address, "/status", options.timeout).map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!("/status answered {}", r.status));
        }
        let s = serde_json::from_str(&r.body).map_err(|e| {
            format!("/status is not a weir snapshot ({e}); is this weir's `metrics.listen`?")
        })?;
        Ok((s, std::time::Instant::now()))
    };
    let (first, t0) = match fetch() {
        Ok(s) => s,
        Err(e) => return Report::unreachable(options, e),
    };
    std::thread::sleep(options.interval);
    let (second, t1) = match fetch() {
        Ok(s) => s,
        Err(e) => return Report::unreachable(options, e),
    };
    summarize(options, &first, &second, (t1 - t0).as_secs_f64())
}

/// The change of a counter between snapshots; a reset (agent restarted)
/// counts from zero.
fn delta(before: u64, after: u64) -> u64 {
    if after >= before {
        after - before
    } else {
        after
    }
}

/// What grew in `after` since `before`, by reason.
fn grown(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, &v)| (k.clone(), delta(before.get(k).copied().unwrap_or(0), v)))
        .filter(|&(_, d)| d > 0)
        .collect()
}

/// Builds the report from two snapshots `elapsed` seconds apart (the
/// second's `time` is "now"). Pure, so that tests can feed it anything.
pub fn summarize(options: &Options, first: &Snapshot, second: &Snapshot, elapsed: f64) -> Report {
    let elapsed = elapsed.max(1e-3);
    let now = second.time;
    let mut out = String::new();
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let rate = |before: u64, after: u64| delta(before, after) as f64 / elapsed;

    // The agent.
    let uptime = (second.start_time > 0.0).then(|| (now - second.start_time).max(0.0));
    let _ = writeln!(
        out,
        "weir {} at {}: up {}, health {}, {}",
        second.version,
        options.address,
        uptime.map_or("?".into(), duration),
        second
            .unhealthy
            .as_ref()
            .map_or("ok".to_owned(), |why| format!("FAILING ({why})")),
        second
            .not_ready
            .as_ref()
            .map_or("ready".to_owned(), |why| format!("not ready ({why})")),
    );
    if let Some(why) = &second.unhealthy {
        problems.push(format!("/health answered 503: {why}"));
    }
    if let Some(why) = &second.not_ready {
        problems.push(format!(
            "/ready answered 503: {why} (starting or shutting down)"
        ));
    }
    let cpu = (second.process.cpu_seconds - first.process.cpu_seconds).max(0.0) / elapsed;
    let _ = writeln!(
        out,
        "process: cpu {:.1}%, rss {}, fds {}/{}",
        cpu * 100.0,
        bytes(second.process.resident_bytes),
        second.process.open_fds,
        second
            .process
            .max_fds
            .map_or("unlimited".into(), |m| m.to_string()),
    );
    let _ = writeln!(
        out,
        "weir's own log: {} lines ({}), {} suppressed by the rate limit",
        second.log.lines.values().sum::<u64>(),
        reasons(&second.log.lines),
        second.log.suppressed,
    );

    // Sources.
    let _ = writeln!(out, "\nsources:");
    if second.sources.is_empty() {
        let _ = writeln!(out, "  (none reported yet)");
    }
    let none = Default::default();
    for (name, s) in &second.sources {
        let before = first.sources.get(name).unwrap_or(&none);
        let _ = writeln!(
            out,
            "  {name}: {} events/s ({}/s), {} received, {} spooled, {} connections, decode errors: {}",
            per_second(rate(before.events_received, s.events_received)),
            bytes(rate(before.bytes_received, s.bytes_received)),
            s.events_received,
            s.events_spooled,
            s.connections,
            reasons(&s.decode_errors),
        );
        // Forward sources: the memory budget of issue 20. It always holds
        // the batches set aside at start, so a source without one shows 0.
        if s.buffered_bytes != 0 || s.budget_gave_way != 0 {
            let _ = writeln!(
                out,
                "    memory budget (max_buffered_bytes): {} held, {} connections gave way",
                bytes(s.buffered_bytes as f64),
                s.budget_gave_way,
            );
        }
        let new_errors = grown(&before.decode_errors, &s.decode_errors);
        if !new_errors.is_empty() {
            warnings.push(format!(
                "source {name}: {} decode errors in the last {elapsed:.1} s ({})",
                new_errors.values().sum::<u64>(),
                reasons(&new_errors)
            ));
        }
    }

    let _ = writeln!(out, "\nscrub rewrites: {}", reasons(&second.scrub_rewrites));

    // Spool.
    let (used, max) = (second.spool.bytes as f64, second.spool.max_bytes as f64);
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
        second.spool.segments,
    );

    // Sinks.
    let _ = writeln!(out, "\nsinks:");
    if second.sinks.is_empty() {
        let _ = writeln!(out, "  (none reported yet)");
    }
    let stall = options.stall_after.as_secs_f64();
    let none = Default::default();
    for (name, s) in &second.sinks {
        let before = first.sinks.get(name).unwrap_or(&none);
        let since_success = (s.last_success > 0).then(|| (now - s.last_success as f64).max(0.0));
        let _ = writeln!(
            out,
            "  {name}: {} events/s ({}/s), {} sent",
            per_second(rate(before.events_sent, s.events_sent)),
            bytes(rate(before.bytes_sent, s.bytes_sent)),
            s.events_sent,
        );
        let _ = writeln!(
            out,
            "    lag {}, oldest unacknowledged {}, last success {}",
            bytes(s.lag_bytes as f64),
            if s.oldest_unacked > 0 {
                format!("{} ago", duration((now - s.oldest_unacked as f64).max(0.0)))
            } else {
                "none".into()
            },
            since_success.map_or("never".into(), |d| format!("{} ago", duration(d))),
        );
        let _ = writeln!(
            out,
            "    retries {}, splits {}, errors: {}; rejected: {}; dropped: {}",
            s.retries,
            s.splits,
            reasons(&s.errors),
            reasons(&s.rejected),
            reasons(&s.dropped),
        );
        let stalled = match since_success {
            Some(d) => d > stall,
            None => uptime.is_some_and(|u| u > stall),
        };
        if s.lag_bytes > 0 && stalled {
            problems.push(format!(
                "sink {name} is {} behind and {}: is its server up and accepting?",
                bytes(s.lag_bytes as f64),
                since_success.map_or(
                    format!(
                        "has delivered nothing in {}",
                        duration(uptime.unwrap_or(0.0))
                    ),
                    |d| format!("last delivered {} ago", duration(d)),
                ),
            ));
        }
        let new_drops = grown(&before.dropped, &s.dropped);
        if !new_drops.is_empty() {
            problems.push(format!(
                "sink {name}: {} events dropped in the last {elapsed:.1} s ({}): the spool is full; raise spool.max_bytes or fix the sink",
                new_drops.values().sum::<u64>(),
                reasons(&new_drops),
            ));
        }
        for (what, before, after) in [
            ("rejected", &before.rejected, &s.rejected),
            ("errors", &before.errors, &s.errors),
        ] {
            let new = grown(before, after);
            if !new.is_empty() {
                warnings.push(format!(
                    "sink {name}: {what} in the last {elapsed:.1} s: {}",
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

/// `reason 3, other 1`, or `none`.
fn reasons(counts: &BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = counts
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// `1.5 MiB`: the one byte formatter of weir's human output (`weir status`
/// and systemd's `STATUS=` line).
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

/// `118.5`: the one rate formatter (one decimal; the caller says `/s` of what).
pub fn per_second(v: f64) -> String {
    format!("{:.1}", v.max(0.0))
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
    use crate::metrics::snapshot;

    fn options() -> Options {
        Options::new(Address::Tcp("127.0.0.1:9880".into()))
    }

    const NOW: f64 = 1_700_000_000.0;

    fn base(sent: u64, dropped: u64, last_success: f64, lag: i64) -> Snapshot {
        let mut s = Snapshot {
            version: "1.2.3".into(),
            time: NOW,
            start_time: NOW - 3600.0,
            spool: snapshot::Spool {
                bytes: 1 << 20,
                max_bytes: 1 << 30,
                segments: 1,
            },
            ..Snapshot::default()
        };
        s.process.cpu_seconds = 10.0;
        let docker = s.sources.entry("docker".into()).or_default();
        docker.events_received = sent;
        docker.decode_errors.insert("bad_frame".into(), 2);
        docker.buffered_bytes = 32 << 20;
        docker.budget_gave_way = 3;
        let loki = s.sinks.entry("loki".into()).or_default();
        loki.events_sent = sent;
        loki.last_success = last_success as i64;
        loki.lag_bytes = lag;
        loki.dropped.insert("spool_full".into(), dropped);
        s
    }

    #[test]
    fn a_flowing_agent_is_healthy_and_rates_are_per_second() {
        let a = base(1000, 0, NOW - 1.0, 0);
        let b = base(1500, 0, NOW, 0);
        let r = summarize(&options(), &a, &b, 2.0);
        assert!(r.healthy(), "{}", r.render());
        let text = r.render();
        assert!(
            text.contains("weir 1.2.3 at 127.0.0.1:9880: up 1h 0m"),
            "{text}"
        );
        assert!(text.contains("docker: 250.0 events/s"), "{text}");
        assert!(text.contains("decode errors: bad_frame 2"), "{text}");
        assert!(
            text.contains(
                "memory budget (max_buffered_bytes): 32.0 MiB held, 3 connections gave way"
            ),
            "{text}"
        );
        assert!(text.contains("loki: 250.0 events/s"), "{text}");
        assert!(text.contains("spool: 1.0 MiB of 1.0 GiB (0.1%)"), "{text}");
        assert!(text.ends_with("status: healthy\n"), "{text}");
    }

    #[test]
    fn growing_drops_are_unhealthy_with_the_reason() {
        let a = base(1000, 5, NOW, 0);
        let b = base(1000, 9, NOW, 0);
        let r = summarize(&options(), &a, &b, 1.0);
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(
            r.problems[0].contains("sink loki: 4 events dropped"),
            "{:?}",
            r.problems
        );
        assert!(r.problems[0].contains("spool_full 4"), "{:?}", r.problems);
        // Old drops that no longer grow are history, not a problem.
        let r = summarize(&options(), &b, &b, 1.0);
        assert!(r.healthy(), "{:?}", r.problems);
    }

    #[test]
    fn a_lagging_sink_without_success_is_unhealthy() {
        let a = base(10, 0, NOW - 600.0, 4096);
        let r = summarize(&options(), &a, &a, 1.0);
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(
            r.problems[0].contains("sink loki is 4.0 KiB behind and last delivered 10m 0s ago"),
            "{:?}",
            r.problems
        );
        // Idle but caught up: fine, however long ago the last delivery.
        let a = base(10, 0, NOW - 600.0, 0);
        assert!(summarize(&options(), &a, &a, 1.0).healthy());
        // Never delivered, behind, up for an hour.
        let a = base(10, 0, 0.0, 100);
        let r = summarize(&options(), &a, &a, 1.0);
        assert!(
            r.problems[0].contains("has delivered nothing in 1h 0m"),
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn failing_probes_are_unhealthy() {
        let mut a = base(1, 0, NOW, 0);
        a.unhealthy = Some("pipeline loop stalled (no heartbeat)".into());
        a.not_ready = Some("shutting down".into());
        let r = summarize(&options(), &a, &a, 1.0);
        assert_eq!(r.problems.len(), 2, "{:?}", r.problems);
        assert!(r
            .render()
            .contains("UNHEALTHY: /health answered 503: pipeline loop stalled"));
    }

    #[test]
    fn counter_resets_count_from_zero() {
        assert_eq!(delta(100, 150), 50);
        assert_eq!(delta(100, 20), 20);
    }

    #[test]
    fn units_read_well() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(bytes(340.0 * 1048576.0), "340.0 MiB");
        assert_eq!(per_second(118.54), "118.5");
        assert_eq!(duration(59.0), "59s");
        assert_eq!(duration(3725.0), "1h 2m");
        assert_eq!(duration(90061.0), "1d 1h");
    }
}
