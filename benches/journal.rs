//! Journal source throughput: entries/s read from a journal of 1M+ entries,
//! next to `journalctl -o export > /dev/null` over the same files, in the
//! same run.
//!
//! `cargo bench --bench journal` (as root). The first run generates the
//! journal with a real systemd-journald in a namespace of its own
//! (`systemd-cat` streams, ~110-byte lines) and keeps its files under
//! `target/journal-bench/` so reruns start at once; delete that directory to
//! regenerate. `WEIR_BENCH_ENTRIES` changes the size (default 1,000,000).
//!
//! Measured, each after a warm-up read so that all three read from the page
//! cache:
//! - `journalctl -D DIR -o export > /dev/null` (the baseline: same library,
//!   same files, and it formats text);
//! - the reader thread alone: sd_journal -> Events, batches over the channel;
//! - the whole source: reader -> `Ingest::append` (scrub, spool), until every
//!   event is appended (the spool is whatever `Spool` is built; before the
//!   durable spool lands it is the in-memory placeholder, which copies and
//!   keeps every event: about 1 GB for 1M entries).

#[path = "../tests/it/common.rs"]
mod common;
#[path = "../tests/it/journald_harness.rs"]
mod journald_harness;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use weir::ingest::Ingest;
use weir::scrub::Scrubber;
use weir::source::journal::{self, config::JournalSet, config::MaxAge, config::StartAt};
use weir::spool::{self, Spool};

fn main() {
    let want: usize = std::env::var("WEIR_BENCH_ENTRIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("target/journal-bench/{want}"));
    let total = dataset(&dir, want);
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "journal"))
        .collect();
    let bytes: u64 = files.iter().map(|p| p.metadata().unwrap().len()).sum();
    println!("# weir journal source benchmark");
    println!("machine: {} cores, {}", nproc(), cpu_model());
    println!(
        "journal: {} entries in {} files, {:.0} MiB, {}",
        total,
        files.len(),
        bytes as f64 / (1 << 20) as f64,
        dir.display()
    );

    journalctl_export(&dir); // warm-up: page cache
    let mut rows = Vec::new();
    for round in 1..=2 {
        let (wall, cpu) = journalctl_export(&dir);
        rows.push(("journalctl -o export > /dev/null", round, wall, cpu));
        let (wall, cpu) = weir_reader_only(&dir, total);
        rows.push(("weir reader thread (-> batches)", round, wall, cpu));
        let (wall, cpu) = weir_into_spool(&dir, total, round);
        rows.push(("weir source -> Ingest -> spool", round, wall, cpu));
    }
    println!();
    println!(
        "{:<36} {:>5} {:>9} {:>12} {:>9} {:>14}",
        "what", "round", "wall s", "entries/s", "CPU s", "entries/CPU s"
    );
    for (what, round, wall, cpu) in &rows {
        println!(
            "{what:<36} {round:>5} {:>9.2} {:>12.0} {:>9.2} {:>14.0}",
            wall.as_secs_f64(),
            total as f64 / wall.as_secs_f64(),
            cpu,
            total as f64 / cpu.max(0.01)
        );
    }
    println!(
        "(load average at the end: {}; on a shared machine compare within the run, and CPU s)",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let best = |w: &str| {
        rows.iter()
            .filter(|r| r.0 == w)
            .map(|r| total as f64 / r.2.as_secs_f64())
            .fold(0.0, f64::max)
    };
    let base = best("journalctl -o export > /dev/null");
    println!();
    println!(
        "best: journalctl {:.0}/s, weir reader {:.0}/s ({:.2}x), weir into spool {:.0}/s ({:.2}x); target >= 1.00x",
        base,
        best("weir reader thread (-> batches)"),
        best("weir reader thread (-> batches)") / base,
        best("weir source -> Ingest -> spool"),
        best("weir source -> Ingest -> spool") / base,
    );
}

/// The journal directory with at least `want` generated entries; returns the
/// exact number of entries it holds.
fn dataset(dir: &Path, want: usize) -> usize {
    let done = dir.join("entries");
    if let Ok(s) = std::fs::read_to_string(&done) {
        return s.trim().parse().expect("target/journal-bench/N/entries");
    }
    let _ = std::fs::remove_dir_all(dir);
    eprintln!(
        "generating {want} journal entries with systemd-journald (once; cached in {})",
        dir.display()
    );
    let t = Instant::now();
    let j = journald_harness::Journald::start_with("bench", "SystemMaxFileSize=256M");
    let writers = 4;
    let per = want.div_ceil(writers);
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let mut cmd = j.command("systemd-cat");
            cmd.args(["-t", "benchgen"]).stdin(Stdio::piped());
            std::thread::spawn(move || {
                use std::io::Write;
                let mut child = cmd.spawn().expect("systemd-cat");
                let mut out = std::io::BufWriter::new(child.stdin.take().unwrap());
                for i in 0..per {
                    let n = w * per + i;
                    writeln!(
                        out,
                        "bench {n:08} GET /api/v1/items/{} status={} bytes={} user=u{} took={}ms",
                        n % 1000,
                        [200, 200, 200, 404, 500][n % 5],
                        n * 7 % 100_000,
                        n % 977,
                        n % 300
                    )
                    .unwrap();
                }
                drop(out);
                child.wait().unwrap();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // journald may still be draining its sockets: wait until the count is stable.
    let mut last = 0;
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let n = count_entries_ns(&j.namespace);
        if n >= writers * per && n == last {
            break;
        }
        last = n;
    }
    j.journalctl(&["--rotate"]);
    std::fs::create_dir_all(dir).unwrap();
    for e in std::fs::read_dir(j.journal_dir()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    drop(j);
    let total = count_entries_dir(dir);
    std::fs::write(&done, total.to_string()).unwrap();
    eprintln!(
        "generated {total} entries in {:.0}s",
        t.elapsed().as_secs_f64()
    );
    total
}

fn count_entries_ns(ns: &str) -> usize {
    count(&format!(
        "journalctl --namespace={ns} -o export --all | grep -c '^__CURSOR='"
    ))
}

fn count_entries_dir(dir: &Path) -> usize {
    count(&format!(
        "journalctl -D '{}' -o export --all | grep -c '^__CURSOR='",
        dir.display()
    ))
}

fn count(script: &str) -> usize {
    let out = Command::new("sh").args(["-c", script]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Wall time and CPU seconds (user + system) of the baseline.
fn journalctl_export(dir: &Path) -> (Duration, f64) {
    let script = format!(
        "TIMEFORMAT='%U %S'; time journalctl -D '{}' -o export --all > /dev/null",
        dir.display()
    );
    let t = Instant::now();
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    let wall = t.elapsed();
    assert!(out.status.success(), "journalctl failed");
    let err = String::from_utf8_lossy(&out.stderr);
    let cpu = err
        .split_whitespace()
        .filter_map(|s| s.parse::<f64>().ok())
        .sum();
    (wall, cpu)
}

fn source_config(dir: &Path) -> journal::Config {
    journal::Config {
        journal: JournalSet::Directory(dir.to_owned()),
        start_at: StartAt::Head,
        max_age: MaxAge(None),
        ..journal::Config::default()
    }
}

/// The reader thread alone, its batches dropped on arrival.
fn weir_reader_only(dir: &Path, total: usize) -> (Duration, f64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cpu0 = process_cpu();
        let t = Instant::now();
        let (tx, mut rx) = mpsc::channel(4);
        let (ready_tx, ready_rx) = oneshot::channel();
        let stop = CancellationToken::new();
        let thread = journal::reader::spawn(
            "bench-reader",
            source_config(dir),
            None,
            tx,
            ready_tx,
            stop.clone(),
        )
        .unwrap();
        ready_rx.await.unwrap().map_err(|e| e.source).unwrap();
        let mut n = 0;
        while n < total {
            n += rx.recv().await.expect("reader ended early").events.len();
        }
        let wall = t.elapsed();
        stop.cancel();
        drop(rx);
        thread.join().unwrap();
        (wall, process_cpu() - cpu0)
    })
}

/// The whole source into the spool, until `Ingest` has appended every event
/// (`weir_source_events_spooled_total`); no sink reads meanwhile.
fn weir_into_spool(dir: &Path, total: usize, round: u32) -> (Duration, f64) {
    let state = tempfile::tempdir().unwrap();
    let mut problems = weir::problems::Problems::default();
    let spool_config = spool::RawConfig::default().validate("spool", &mut problems);
    let scrub_config = weir::scrub::RawConfig::default().validate("scrub", &mut problems);
    let name = format!("bench-spool-{round}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let spool = Spool::open(
            &state.path().join("spool"),
            &spool_config,
            &["bench".into()],
        )
        .unwrap();
        let scrubber = Arc::new(Scrubber::new(&scrub_config, state.path()).unwrap());
        let ingest = Ingest::new(spool.clone(), scrubber, "bench-host");
        let cpu0 = process_cpu();
        let t = Instant::now();
        let stop = CancellationToken::new();
        let task = journal::start(&name, &source_config(dir), ingest, stop.clone())
            .await
            .unwrap();
        let spooled = || {
            weir::metrics::value("weir_source_events_spooled_total", &[("source", &name)])
                .unwrap_or(0.0) as usize
        };
        while spooled() < total {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let wall = t.elapsed();
        stop.cancel();
        task.await.unwrap();
        (wall, process_cpu() - cpu0)
    })
}

/// CPU seconds (user + system) of this process so far, from /proc/self/stat
/// (in clock ticks, 100 per second on Linux).
fn process_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
