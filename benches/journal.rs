//! Journal source throughput: entries/s and CPU s per million entries read
//! from a multi-file journal, next to `journalctl -o export > /dev/null` over
//! the same files, in the same run.
//!
//! `cargo bench --bench journal` (as root). The first run writes the journal
//! with `systemd-journal-remote` (Debian package systemd-journal-remote):
//! 1,000,000 entries of 11 fields (`MESSAGE`, `PRIORITY`,
//! `SYSLOG_IDENTIFIER`, `_PID`, `_UID`, `_COMM`, `_EXE`, `_SYSTEMD_UNIT`,
//! `_HOSTNAME`, `_TRANSPORT`, `_BOOT_ID`; sshd, nginx, cron, an app and
//! logind lines, a quarter with an IP address or a login for the scrubber)
//! spread over 6 journal files, one after the other in time as rotation
//! leaves them. The files are kept under `target/journal-bench/` so reruns
//! start at once; delete that directory to regenerate.
//! `WEIR_BENCH_ENTRIES` changes the size.
//!
//! Measured, from the head, each after a warm-up read so that all read from
//! the page cache:
//! - `journalctl -D DIR -o export > /dev/null` (the baseline: same library,
//!   same files, and it formats text);
//! - the reader thread alone: sd_journal -> Events, batches over the channel
//!   (and back, to be refilled, as the source does once they are spooled);
//! - weir end to end: the `weir` binary (journal source -> scrub -> spool ->
//!   file sink), until the file sink has written every entry; its CPU s
//!   (user + system, from /proc/PID/stat) and its peak anonymous memory
//!   (`RssAnon`, sampled every 20 ms: the mapped journal files are file
//!   pages, not counted).
//!
//! Target (issue 25): weir end to end at least journalctl's export rate, at
//! <= 3 CPU s per million entries and <= 64 MiB anonymous memory.

#[path = "../tests/it/common.rs"]
mod common;

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
    const EXPORT: &str = "journalctl -o export > /dev/null";
    const READER: &str = "weir reader thread (-> batches)";
    const SPOOL: &str = "weir source -> scrub -> spool (in process)";
    const E2E: &str = "weir binary: journal -> file sink";
    let mut rows: Vec<(&str, u32, Duration, f64, Option<u64>)> = Vec::new();
    for round in 1..=2 {
        let (wall, cpu) = journalctl_export(&dir);
        rows.push((EXPORT, round, wall, cpu, None));
        let (wall, cpu) = weir_reader_only(&dir, total);
        rows.push((READER, round, wall, cpu, None));
        let (wall, cpu) = weir_into_spool(&dir, total, round);
        rows.push((SPOOL, round, wall, cpu, None));
        let (wall, cpu, anon) = weir_end_to_end(&dir, total);
        rows.push((E2E, round, wall, cpu, Some(anon)));
    }
    println!();
    println!(
        "{:<44} {:>5} {:>7} {:>10} {:>7} {:>12} {:>12}",
        "what", "round", "wall s", "entries/s", "CPU s", "CPU s per M", "peak anon"
    );
    for (what, round, wall, cpu, anon) in &rows {
        println!(
            "{what:<44} {round:>5} {:>7.2} {:>10.0} {:>7.2} {:>12.2} {:>12}",
            wall.as_secs_f64(),
            total as f64 / wall.as_secs_f64(),
            cpu,
            cpu * 1e6 / total as f64,
            anon.map_or("-".to_owned(), |a| format!(
                "{:.1} MiB",
                a as f64 / (1 << 20) as f64
            )),
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
    let least_cpu = |w: &str| {
        rows.iter()
            .filter(|r| r.0 == w)
            .map(|r| r.3 * 1e6 / total as f64)
            .fold(f64::MAX, f64::min)
    };
    let base = best(EXPORT);
    println!();
    for w in [READER, SPOOL, E2E] {
        println!(
            "best: {w}: {:.0}/s = {:.2}x journalctl ({base:.0}/s), {:.2} CPU s per M = {:.2}x journalctl's CPU ({:.2})",
            best(w),
            best(w) / base,
            least_cpu(w),
            least_cpu(w) / least_cpu(EXPORT),
            least_cpu(EXPORT),
        );
    }
    // Where the CPU goes, stage by stage (least CPU per stage, so noise
    // from the shared machine does not add up): what the rows differ by.
    let (read, spool, e2e) = (least_cpu(READER), least_cpu(SPOOL), least_cpu(E2E));
    println!(
        "CPU s per M by stage: journal read + mapping {read:.2}; scrub + spool append {:.2}; \
         spool read + file sink (and the binary's own costs) {:.2}",
        spool - read,
        e2e - spool
    );
    let anon = rows.iter().filter_map(|r| r.4).max().unwrap_or(0);
    println!(
        "target: weir end to end >= 1.00x journalctl, <= 3 CPU s per M, <= 64 MiB anon (peak here {:.1} MiB)",
        anon as f64 / (1 << 20) as f64
    );
    if let Some(n) = std::env::var("WEIR_BENCH_CALLGRIND")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
    {
        instructions(&dir, n.min(total));
    }
}

/// The yardstick that load does not move: instructions per entry (user
/// space, counted by callgrind) of `journalctl -o export` and of the weir
/// binary end to end, over the first `n` entries of the journal rewritten
/// as one file (cached next to it). Opt-in (`WEIR_BENCH_CALLGRIND=50000`):
/// under callgrind weir runs about 50 times slower.
fn instructions(dir: &Path, n: usize) {
    let sub = dir.with_file_name(format!(
        "{}-head{n}",
        dir.file_name().unwrap().to_string_lossy()
    ));
    if count_entries_dir(&sub) != n {
        let _ = std::fs::remove_dir_all(&sub);
        std::fs::create_dir_all(&sub).unwrap();
        let script = format!(
            "journalctl -D '{}' -o export --all | awk '{{print}} /^$/ {{if (++n >= {n}) exit}}' \
             | /lib/systemd/systemd-journal-remote --output='{}/remote.journal' - 2>/dev/null",
            dir.display(),
            sub.display()
        );
        let ok = Command::new("sh").args(["-c", &script]).status().unwrap();
        assert!(ok.success(), "writing the {n}-entry journal failed");
        assert_eq!(count_entries_dir(&sub), n, "entries in {}", sub.display());
    }
    let out = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let callgrind = |name: &str| -> Vec<String> {
        [
            "valgrind",
            "--tool=callgrind",
            "--dump-instr=no",
            "--compress-strings=no",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            format!("--callgrind-out-file={}/{name}.out", out.path().display()),
            format!("--log-file={}/{name}.log", out.path().display()),
        ])
        .collect()
    };
    let collected = |name: &str| -> u64 {
        let log = std::fs::read_to_string(out.path().join(format!("{name}.log"))).unwrap();
        log.lines()
            .find_map(|l| {
                l.split_once("Collected :")
                    .map(|(_, n)| n.trim().to_owned())
            })
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no instruction count in the callgrind log:\n{log}"))
    };
    let status = Command::new(&callgrind("journalctl")[0])
        .args(&callgrind("journalctl")[1..])
        .args(["journalctl", "-D"])
        .arg(&sub)
        .args(["-o", "export", "--all"])
        .stdout(Stdio::null())
        .status()
        .expect("valgrind (apt-get install valgrind)");
    assert!(status.success(), "journalctl under callgrind failed");
    let journalctl = collected("journalctl") as f64 / n as f64;
    weir_end_to_end_with(&sub, n, &callgrind("weir"));
    let weir = collected("weir") as f64 / n as f64;
    println!();
    println!(
        "instructions per entry (callgrind, user space, first {n} entries as one file): \
         journalctl -o export {journalctl:.0}; weir binary end to end {weir:.0} = {:.2}x journalctl",
        weir / journalctl
    );
}

/// Journal files written by `systemd-journal-remote`.
const FILES: usize = 6;

/// The journal directory with `want` generated entries; returns the exact
/// number of entries it holds.
fn dataset(dir: &Path, want: usize) -> usize {
    let done = dir.join("entries");
    if let Ok(s) = std::fs::read_to_string(&done) {
        return s.trim().parse().expect("target/journal-bench/N/entries");
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let remote = "/lib/systemd/systemd-journal-remote";
    assert!(
        Path::new(remote).exists(),
        "{remote} is missing: install systemd-journal-remote (scripts/deps.sh)"
    );
    eprintln!(
        "writing {want} journal entries in {FILES} files with systemd-journal-remote (once; cached in {})",
        dir.display()
    );
    let t = Instant::now();
    // Two days ago, a millisecond apart: old enough for any `max_age`.
    let start_us = journal::cursor::now_us() - 2 * 86_400_000_000;
    let per = want.div_ceil(FILES);
    for f in 0..FILES {
        let mut child = Command::new(remote)
            .arg(format!("--output={}/remote-{f}.journal", dir.display()))
            .arg("-")
            .stdin(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("systemd-journal-remote");
        let mut out = std::io::BufWriter::new(child.stdin.take().unwrap());
        for n in f * per..((f + 1) * per).min(want) {
            write_export_entry(&mut out, n, start_us + n as u64 * 1000).unwrap();
        }
        drop(out);
        assert!(
            child.wait().unwrap().success(),
            "systemd-journal-remote failed"
        );
    }
    let total = count_entries_dir(dir);
    assert_eq!(total, want, "entries written");
    std::fs::write(&done, total.to_string()).unwrap();
    eprintln!("wrote {total} entries in {:.0}s", t.elapsed().as_secs_f64());
    total
}

/// Entry `n` in the journal export format: 11 fields of the shapes a host logs.
fn write_export_entry(
    out: &mut impl std::io::Write,
    n: usize,
    realtime_us: u64,
) -> std::io::Result<()> {
    let (unit, comm, exe, uid, message) = match n % 8 {
        0 => (
            "ssh.service",
            "sshd",
            "/usr/sbin/sshd",
            0,
            format!(
                "Accepted publickey for deploy from 203.0.113.{} port {} ssh2: ED25519 SHA256:4kVqQ3b0c6mHsbbBq7yq1h7Hq",
                n % 250,
                30_000 + n % 30_000
            ),
        ),
        1 => (
            "nginx.service",
            "nginx",
            "/usr/sbin/nginx",
            33,
            format!(
                "198.51.100.{} - - \"GET /api/v1/items/{} HTTP/1.1\" {} {} \"-\" \"curl/7.88.1\"",
                n % 200,
                n % 1000,
                [200, 200, 304, 404, 500][n % 5],
                n * 7 % 100_000
            ),
        ),
        2 => (
            "cron.service",
            "cron",
            "/usr/sbin/cron",
            0,
            "pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)".to_owned(),
        ),
        3 => (
            "systemd-logind.service",
            "systemd-logind",
            "/lib/systemd/systemd-logind",
            0,
            format!("New session {} of user alice.", n / 8),
        ),
        _ => (
            "shop-api.service",
            "shop-api",
            "/usr/local/bin/shop-api",
            1000,
            format!(
                "request done method=GET path=/api/v1/items/{} status={} bytes={} took={}ms",
                n % 1000,
                [200, 200, 200, 404, 500][n % 5],
                n * 7 % 100_000,
                n % 300
            ),
        ),
    };
    let pid = 1000 + (n % 8) * 37;
    writeln!(out, "__REALTIME_TIMESTAMP={realtime_us}")?;
    writeln!(out, "__MONOTONIC_TIMESTAMP={}", 1_000_000 + n as u64 * 1000)?;
    writeln!(out, "_BOOT_ID=8e0a1bd54e1b4a7bb6cfd3a1d1f0c0de")?;
    writeln!(out, "MESSAGE={message}")?;
    writeln!(out, "PRIORITY={}", [6, 6, 6, 5, 4, 3][n % 6])?;
    writeln!(out, "SYSLOG_IDENTIFIER={comm}")?;
    writeln!(out, "_PID={pid}")?;
    writeln!(out, "_UID={uid}")?;
    writeln!(out, "_COMM={comm}")?;
    writeln!(out, "_EXE={exe}")?;
    writeln!(out, "_SYSTEMD_UNIT={unit}")?;
    writeln!(out, "_HOSTNAME=web-1")?;
    writeln!(out, "_TRANSPORT=stdout")?;
    writeln!(out)
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
        let (recycle, recycled) = mpsc::channel(6);
        let (ready_tx, ready_rx) = oneshot::channel();
        let stop = CancellationToken::new();
        let thread = journal::reader::spawn(
            "bench-reader",
            source_config(dir),
            None,
            journal::reader::Channels {
                batches: tx,
                recycled,
                ready: ready_tx,
            },
            stop.clone(),
            &weir::metrics::Metrics::new(),
        )
        .unwrap();
        ready_rx.await.unwrap().map_err(|e| e.source).unwrap();
        let mut n = 0;
        while n < total {
            // Handed back as the source does once a batch is spooled.
            let events = rx.recv().await.expect("reader ended early").events;
            n += events.len();
            let _ = recycle.try_send(events);
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
            spool
                .metrics()
                .value("weir_source_events_spooled_total", &[("source", &name)])
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

/// The `weir` binary reading the journal directory into a file sink, until
/// the sink has written `total` lines: wall time, CPU s of the weir process
/// and its peak anonymous memory (bytes).
fn weir_end_to_end(dir: &Path, total: usize) -> (Duration, f64, u64) {
    weir_end_to_end_with(dir, total, &[])
}

/// [`weir_end_to_end`], the binary run under `wrapper` (a program and its
/// arguments; none: run directly).
fn weir_end_to_end_with(dir: &Path, total: usize, wrapper: &[String]) -> (Duration, f64, u64) {
    let state = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let out = state.path().join("out/events.ndjson");
    let config = state.path().join("weir.toml");
    std::fs::write(
        &config,
        format!(
            r#"
state_dir = "{state}"
[sources.journal]
type = "journal"
directory = "{dir}"
start_at = "head"
max_age = "off"
[sinks.out]
type = "file"
path = "{out}"
max_file_bytes = "64GiB"
[metrics]
listen = ""
"#,
            state = state.path().join("state").display(),
            dir = dir.display(),
            out = out.display(),
        ),
    )
    .unwrap();
    let t = Instant::now();
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(common::weir_bin());
            c
        }
        None => Command::new(common::weir_bin()),
    };
    let mut child = command
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("JOURNAL_STREAM")
        .env_remove("INVOCATION_ID")
        .env("WEIR_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("weir run");
    let pid = child.id();
    let mut lines = 0usize;
    let mut read_at = 0u64;
    let mut peak_anon = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    let deadline = Instant::now() + Duration::from_secs(600);
    while lines < total {
        assert!(
            Instant::now() < deadline,
            "weir wrote {lines} of {total} lines in 10 minutes"
        );
        assert!(child.try_wait().unwrap().is_none(), "weir exited early");
        peak_anon = peak_anon.max(rss_anon(pid));
        if let Ok(f) = std::fs::File::open(&out) {
            use std::os::unix::fs::FileExt;
            loop {
                let n = f.read_at(&mut buf, read_at).unwrap();
                if n == 0 {
                    break;
                }
                read_at += n as u64;
                lines += buf[..n].iter().filter(|&&b| b == b'\n').count();
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let wall = t.elapsed();
    let cpu = stat_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap());
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    child.wait().unwrap();
    assert_eq!(lines, total, "the file sink wrote more lines than entries");
    (wall, cpu, peak_anon)
}

/// `RssAnon` of `pid`, bytes.
fn rss_anon(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// CPU seconds (user + system) of this process so far, from /proc/self/stat
/// (in clock ticks, 100 per second on Linux).
fn process_cpu() -> f64 {
    stat_cpu(&std::fs::read_to_string("/proc/self/stat").unwrap())
}

/// utime + stime of a `/proc/PID/stat` line, in seconds.
fn stat_cpu(stat: &str) -> f64 {
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
