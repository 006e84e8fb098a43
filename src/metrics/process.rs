//! The standard `process_*` metrics (as the Prometheus client libraries
//! export them), read from `/proc` at scrape time: nothing runs between
//! scrapes. A value that cannot be read is reported as `NaN` rather than
//! failing the scrape.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::names;

/// The `process_*` families, read at each scrape.
#[derive(Debug)]
pub struct Process;

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stat = stat();
        let cpu = cpu_seconds();
        let counter = names::PROCESS_CPU_SECONDS
            .strip_suffix("_total")
            .expect("a counter");
        ConstCounter::new(cpu).encode(encoder.encode_descriptor(
            counter,
            "Total user and system CPU time spent in seconds.",
            None,
            MetricType::Counter,
        )?)?;
        let gauges = [
            (
                names::PROCESS_RESIDENT_MEMORY,
                "Resident memory size in bytes.",
                resident_bytes(),
            ),
            (
                names::PROCESS_VIRTUAL_MEMORY,
                "Virtual memory size in bytes.",
                stat.as_ref().map_or(f64::NAN, |s| s.vsize as f64),
            ),
            (
                names::PROCESS_OPEN_FDS,
                "Number of open file descriptors.",
                open_fds(),
            ),
            (
                names::PROCESS_MAX_FDS,
                "Maximum number of open file descriptors.",
                max_fds().unwrap_or(f64::NAN),
            ),
            (
                names::PROCESS_START_TIME,
                "Start time of the process since unix epoch in seconds.",
                start_time().unwrap_or(f64::NAN),
            ),
        ];
        for (name, help, value) in gauges {
            ConstGauge::new(value).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Gauge,
            )?)?;
        }
        Ok(())
    }
}

/// Seconds of CPU the process used, user and system.
pub fn cpu_seconds() -> f64 {
    stat().map_or(f64::NAN, |s| (s.utime + s.stime) as f64 / clock_ticks())
}

/// Open file descriptors.
pub fn open_fds() -> f64 {
    std::fs::read_dir("/proc/self/fd").map_or(f64::NAN, |d| d.count() as f64)
}

/// Resident memory in bytes.
pub fn resident_bytes() -> f64 {
    status_kib("VmRSS:").map_or(f64::NAN, |k| (k * 1024) as f64)
}

/// The fields of `/proc/self/stat` weir reports.
#[derive(Debug, PartialEq)]
struct Stat {
    /// Clock ticks in user and kernel mode.
    utime: u64,
    stime: u64,
    /// Clock ticks after boot when the process started.
    starttime: u64,
    /// Virtual memory size in bytes.
    vsize: u64,
}

fn stat() -> Option<Stat> {
    parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// Parses `/proc/PID/stat` (proc(5)). The command name (field 2) may contain
/// spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `fields[0]` is field 3 (state): field N is at index N - 3.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        starttime: field(22)?,
        vsize: field(23)?,
    })
}

/// A `kB` line of `/proc/self/status`, in KiB.
fn status_kib(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The soft limit on open files; `+Inf` when unlimited.
pub fn max_fds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_max_fds(&text)
}

fn parse_max_fds(limits: &str) -> Option<f64> {
    let soft = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        return Some(f64::INFINITY);
    }
    soft.parse::<u64>().ok().map(|v| v as f64)
}

/// Boot time (from `/proc/stat`) plus the process's start in ticks after boot.
pub fn start_time() -> Option<f64> {
    let boot: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(boot as f64 + stat()?.starttime as f64 / clock_ticks())
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), which rustix reads
/// from the auxiliary vector the kernel gave the process (`AT_CLKTCK`).
fn clock_ticks() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_is_parsed_after_a_command_name_with_spaces_and_parens() {
        let line = "1234 (we ir) (x)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 4 0 9876 123456789 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                utime: 250,
                stime: 75,
                starttime: 9876,
                vsize: 123456789
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn max_fds_reads_the_soft_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1024                 1048576              files     \n";
        assert_eq!(parse_max_fds(limits), Some(1024.0));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_max_fds(unlimited), Some(f64::INFINITY));
    }

    #[test]
    fn live_values_are_plausible() {
        let s = stat().expect("/proc/self/stat");
        assert!(s.vsize > 0);
        assert!(status_kib("VmRSS:").unwrap() > 0);
        assert_eq!(clock_ticks(), 100.0, "AT_CLKTCK on Linux is USER_HZ");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = start_time().unwrap();
        assert!(
            start <= now + 1.0 && start > now - 3600.0,
            "{start} vs {now}"
        );
        assert!(max_fds().unwrap() >= 64.0);
    }
}
