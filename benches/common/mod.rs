//! Shared by the benchmarks: what machine a figure was measured on.

/// `nproc N, <CPU model>, load average L`: printed by every benchmark,
/// since absolute figures drift with the machine and what else runs on it.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let n = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    format!("nproc {n}, {cpu}, load average {load}")
}

/// Polls `f` every 20 ms until it returns `Some`, or panics after
/// `timeout`. The same as the integration tests' helper, which the journald
/// harness they share with the pipeline benchmark calls.
#[allow(dead_code)] // only the benchmarks that start a journald use it
pub fn wait_for<T>(
    what: &str,
    timeout: std::time::Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
