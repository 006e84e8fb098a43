//! Spool benchmark: `cargo bench --bench spool`.
//!
//! Measures, on the disk holding `target/`:
//! - raw sequential writes (1 MiB `write`s, fdatasync every 100 ms): the
//!   baseline for throughput;
//! - spool append throughput for 200-byte events (batches of 100, the
//!   default 100 ms fsync interval), MB/s and events/s, including the final
//!   sync; raw and spool runs alternate for five rounds and the median
//!   ratio is the figure (the machine is shared, its load changes). Every
//!   run starts after a `sync`, so none pays for the writeback or unlinks
//!   the run before it left behind;
//! - the latency a writer awaiting durability sees (append one batch, then
//!   `wait_durable`): alone, while another task appends 100 MB/s, and while
//!   another appends flat out (the disk saturated: a waiter's record is
//!   behind everything appended before it, so its wait is bounded by the
//!   writer's unsynced window over the disk's speed, not by one fdatasync).
//!   Each case has its baseline in the same run: one fdatasync of a 20 kB
//!   append (what the waiter appends) on a raw file, with a raw writer
//!   doing the same background load next to it.
//!
//! - the time `Spool::open` takes on a spool of 512 MiB (it checks every
//!   record's CRC, issue 20), in records of 100 events and of one, with its
//!   segments in the page cache; run only this with
//!   `cargo bench --bench spool -- open`.
//! - `cargo bench --bench spool -- read` only: a million Docker-shaped
//!   events appended in records of 100, then read back as a sink reads them:
//!   spool bytes per event, CPU s per million events appending and reading.
//!
//! Targets (issue 3): append >= 80% of raw; p99 durable latency <= 2 x one
//! fdatasync + 1 ms (the lone writer against the idle disk's fdatasync;
//! the loaded cases against the fdatasync under the same load).

mod common;
use common::machine;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir::event::{Event, Origin};
use weir::spool::{Config, Spool, WhenFull};
use weir::units::{ByteSize, HumanDuration};

const TOTAL_BYTES: u64 = 512 << 20;
/// Alternating raw / spool runs; the ratio reported is their median.
const ROUNDS: u32 = 5;
/// Durability waits measured per case: the p99 is the third-worst.
const LATENCY_SAMPLES: usize = 300;
/// A heavy but sustainable load next to a durability waiter: 500k events/s.
const PACED_MBS: f64 = 100.0;
const BATCH: usize = 100;

fn bench_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/spool-bench");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// CPU seconds (user + system) this process used so far, from /proc.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0 // USER_HZ
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Waits until the page cache holds nothing dirty (`sync`), so a timed run
/// does not pay for what the one before it left to write back or unlink.
fn settle() {
    let ok = std::process::Command::new("sync")
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "`sync` failed");
}

/// Raw sequential write speed with periodic fdatasync (MB/s, CPU ms per MB).
fn raw_write(dir: &Path) -> (f64, f64) {
    settle();
    let path = dir.join("raw");
    let mut f = File::create(&path).unwrap();
    let buf = vec![0x5au8; 1 << 20];
    let cpu = cpu_secs();
    let start = Instant::now();
    let mut last_sync = Instant::now();
    let mut written = 0u64;
    while written < TOTAL_BYTES {
        f.write_all(&buf).unwrap();
        written += buf.len() as u64;
        if last_sync.elapsed() >= Duration::from_millis(100) {
            f.sync_data().unwrap();
            last_sync = Instant::now();
        }
    }
    f.sync_data().unwrap();
    let secs = start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path).unwrap();
    let mb = written as f64 / 1e6;
    (mb / secs, (cpu_secs() - cpu) * 1000.0 / mb)
}

/// About the bytes a durability waiter appends (one batch of bench events).
const WAITER_BYTES: usize = 20_000;

/// p50, p99 and max of one fdatasync after a 20 kB append to a raw file,
/// sampled as `durable_latency` samples the spool (every 2 ms), with a raw
/// writer doing `background`'s load on another file of the same disk.
fn fsync_latency(dir: &Path, background: Background) -> (Duration, Duration, Duration) {
    settle();
    let stop = Arc::new(AtomicBool::new(false));
    let bg = (!matches!(background, Background::None)).then(|| {
        let (stop, path) = (stop.clone(), dir.join("fsync-bg"));
        std::thread::spawn(move || raw_background(&path, background, &stop))
    });
    let path = dir.join("fsync");
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    let rec = vec![1u8; WAITER_BYTES];
    let mut lat = Vec::new();
    for _ in 0..LATENCY_SAMPLES {
        let t = Instant::now();
        f.write_all(&rec).unwrap();
        f.sync_data().unwrap();
        lat.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(2));
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(bg) = bg {
        bg.join().unwrap();
    }
    std::fs::remove_file(&path).unwrap();
    lat.sort();
    (pct(&lat, 0.5), pct(&lat, 0.99), *lat.last().unwrap())
}

/// A raw file writer doing what the spool's background appender does: paced
/// bursts every 10 ms with an fdatasync every 100 ms (the fsync interval),
/// or flat out with an fdatasync every 16 MiB (the spool's sync size).
fn raw_background(path: &Path, background: Background, stop: &AtomicBool) {
    let mut f = File::create(path).unwrap();
    let chunk = vec![0x5au8; 256 << 10];
    let (mut since_sync, mut last_sync) = (0usize, Instant::now());
    while !stop.load(Ordering::Relaxed) {
        match background {
            Background::Paced(mbs) => {
                let burst = (mbs * 1e6 / 100.0) as usize;
                let start = Instant::now();
                let mut n = 0;
                while n < burst {
                    let k = chunk.len().min(burst - n);
                    f.write_all(&chunk[..k]).unwrap();
                    n += k;
                }
                if last_sync.elapsed() >= Duration::from_millis(100) {
                    f.sync_data().unwrap();
                    last_sync = Instant::now();
                }
                std::thread::sleep(Duration::from_millis(10).saturating_sub(start.elapsed()));
            }
            _ => {
                f.write_all(&chunk).unwrap();
                since_sync += chunk.len();
                if since_sync >= 16 << 20 {
                    f.sync_data().unwrap();
                    since_sync = 0;
                }
            }
        }
    }
    drop(f);
    std::fs::remove_file(path).unwrap();
}

fn event(i: u64) -> Event {
    let mut e = Event::new(
        1_700_000_000_000_000_000 + i as i64,
        Origin::Docker,
        vec![b'x'; 140],
    );
    e.labels.host = Some("bench-host".into());
    e.labels.service = Some("web".into());
    e.labels.container_name = Some("web-1".into());
    e.fields
        .push(("container_id".into(), "0123456789ab".into()));
    e
}

fn config() -> Config {
    Config {
        max_bytes: ByteSize(4 << 30),
        when_full: WhenFull::DropOldest,
        segment_bytes: ByteSize(64 << 20),
        fsync_interval: HumanDuration(Duration::from_millis(100)),
        max_age: HumanDuration(Duration::ZERO),
    }
}

/// Encoded bytes per event of a batch of `BATCH` bench events (a record's
/// events: what repeats between them is stored once).
fn encoded_size(batch: &[Event]) -> usize {
    let mut b = Vec::new();
    weir::event::codec::encode_events(batch, &mut b);
    b.len() / batch.len()
}

async fn append_throughput(dir: &Path, round: u32) -> (f64, f64, f64) {
    settle();
    let path = dir.join(format!("append-{round}"));
    let spool = Spool::open(&path, &config(), &[]).unwrap();
    let batch: Vec<Event> = (0..BATCH as u64).map(event).collect();
    let cpu = cpu_secs();
    let start = Instant::now();
    let mut end = 0;
    let mut events = 0u64;
    while end < TOTAL_BYTES {
        end = spool.append(&batch, None).await.unwrap();
        events += BATCH as u64;
    }
    // Everything appended is durable. (Not `sync()`: with no sink, that
    // would also time unlinking every segment, which sinks' acknowledgements
    // trigger in real use, on the sync thread.)
    spool.wait_durable(end).await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu;
    drop(spool);
    let _ = std::fs::remove_dir_all(&path);
    let mb = end as f64 / 1e6;
    (mb / secs, events as f64 / secs, cpu * 1000.0 / mb)
}

/// What else appends while the latency is measured.
#[derive(Clone, Copy)]
enum Background {
    None,
    /// Appends paced to this many MB/s (in 10 ms bursts).
    Paced(f64),
    /// Appends as fast as it can: the disk is saturated.
    Flood,
}

async fn durable_latency(dir: &Path, background: Background) -> (Duration, Duration, Duration) {
    static RUN: AtomicU32 = AtomicU32::new(0);
    let run = RUN.fetch_add(1, Ordering::Relaxed);
    settle();
    let spool = Spool::open(&dir.join(format!("lat-{run}")), &config(), &[]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let bg = (!matches!(background, Background::None)).then(|| {
        let (s, stop) = (spool.clone(), stop.clone());
        tokio::spawn(async move {
            let batch: Vec<Event> = (0..BATCH as u64).map(event).collect();
            let batch_mb = (BATCH * encoded_size(&batch)) as f64 / 1e6;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while !stop.load(Ordering::Relaxed) {
                match background {
                    Background::Paced(mbs) => {
                        tick.tick().await;
                        for _ in 0..((mbs / 100.0 / batch_mb) as usize).max(1) {
                            s.append(&batch, None).await.unwrap();
                        }
                    }
                    _ => {
                        s.append(&batch, None).await.unwrap();
                        tokio::task::yield_now().await;
                    }
                }
            }
        })
    });
    let batch: Vec<Event> = (0..BATCH as u64).map(event).collect();
    let mut lat = Vec::new();
    for _ in 0..LATENCY_SAMPLES {
        let t = Instant::now();
        let end = spool.append(&batch, None).await.unwrap();
        spool.wait_durable(end).await.unwrap();
        lat.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(bg) = bg {
        bg.await.unwrap();
    }
    lat.sort();
    (pct(&lat, 0.5), pct(&lat, 0.99), *lat.last().unwrap())
}

/// Fills a spool with `TOTAL_BYTES`, then times reopening it (recovery reads
/// and checks every record). Returns (seconds, MB/s).
async fn open_time(dir: &Path, per_record: usize) -> (f64, f64) {
    let path = dir.join("open");
    let spool = Spool::open(&path, &config(), &["s".to_owned()]).unwrap();
    let batch: Vec<Event> = (0..per_record as u64).map(event).collect();
    let mut end = 0;
    while end < TOTAL_BYTES {
        end = spool.append(&batch, None).await.unwrap();
    }
    spool.sync().await.unwrap();
    drop(spool);
    settle();
    let start = Instant::now();
    let spool = Spool::open(&path, &config(), &["s".to_owned()]).unwrap();
    let secs = start.elapsed().as_secs_f64();
    drop(spool);
    let _ = std::fs::remove_dir_all(&path);
    (secs, end as f64 / 1e6 / secs)
}

/// Events appended then read back by `-- read`.
const READ_EVENTS: u64 = 1_000_000;

/// A Docker event as the forward source builds it (labels, the container
/// id, stream and tag as fields), with a 150-byte access-log line.
fn docker_event(i: u64) -> Event {
    let mut line = format!(
        "10.1.{}.{} - - \"GET /api/v1/items/{i} HTTP/1.1\" 200 512 \"-\" \"Mozilla/5.0\"",
        i % 250,
        i % 200
    );
    while line.len() < 150 {
        line.push('x');
    }
    let mut e = Event::new(
        1_700_000_000_000_000_000 + i as i64 * 1000,
        Origin::Docker,
        line,
    );
    e.labels.host = Some("bench-host".into());
    e.labels.container_name = Some("web".into());
    e.labels.service = Some("web".into());
    e.labels.level = Some(weir::event::Level::Info);
    e.fields = vec![
        (
            "container_id".into(),
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into(),
        ),
        ("stream".into(), "stdout".into()),
        ("tag".into(), "docker.web".into()),
    ];
    e
}

/// Appends `READ_EVENTS` Docker-shaped events in records of `BATCH`, then
/// reads them back as a sink does (batches of up to 4,096 events / 4 MiB,
/// acknowledged, handed back). Returns (spool bytes per event, append CPU
/// s per million events, read events/s, read CPU s per million events).
async fn read_throughput(dir: &Path) -> (f64, f64, f64, f64) {
    let path = dir.join("read");
    let spool = Spool::open(&path, &config(), &["s".to_owned()]).unwrap();
    let mut batch: Vec<Event> = (0..BATCH as u64).map(docker_event).collect();
    let cpu = cpu_secs();
    let mut end = 0;
    for round in 0..READ_EVENTS / BATCH as u64 {
        for (i, e) in batch.iter_mut().enumerate() {
            e.timestamp_ns =
                1_700_000_000_000_000_000 + (round * BATCH as u64 + i as u64) as i64 * 1000;
        }
        end = spool.append(&batch, None).await.unwrap();
    }
    spool.sync().await.unwrap();
    let append_cpu = cpu_secs() - cpu;
    let mut r = spool.reader("s").unwrap();
    let cpu = cpu_secs();
    let start = Instant::now();
    let mut n = 0u64;
    let mut check = 0u64;
    while n < READ_EVENTS {
        let b = r.next_batch(4096, 4 << 20).await.unwrap();
        n += b.events.len() as u64;
        check += b
            .events
            .iter()
            .map(|e| e.message.len() as u64 + e.fields.len() as u64)
            .sum::<u64>();
        r.ack(b.end).unwrap();
        r.recycle(b.events);
    }
    let secs = start.elapsed().as_secs_f64();
    let read_cpu = cpu_secs() - cpu;
    assert_eq!(check, READ_EVENTS * 153, "every event read whole");
    drop(r);
    drop(spool);
    let _ = std::fs::remove_dir_all(&path);
    let m = READ_EVENTS as f64 / 1e6;
    (
        end as f64 / READ_EVENTS as f64,
        append_cpu / m,
        READ_EVENTS as f64 / secs,
        read_cpu / m,
    )
}

/// The bench's directory and runtime for `what` (`""`: every section;
/// `" (read only)"`: one), after saying what runs where and how busy the
/// machine is.
fn section(what: &str) -> (PathBuf, tokio::runtime::Runtime) {
    let dir = bench_dir();
    println!(
        "spool benchmark{what}: {} ; dir {}",
        machine(),
        dir.display()
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", load.trim());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    (dir, rt)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` compatibility
    }
    if std::env::args().any(|a| a == "read") {
        let (dir, rt) = section(" (read only)");
        for _ in 0..2 {
            let (bytes, append_cpu, eps, read_cpu) = rt.block_on(read_throughput(&dir));
            println!(
                "{READ_EVENTS} Docker-shaped events (150-byte lines) in records of {BATCH}: {bytes:.1} spool bytes per event, append {append_cpu:.2} CPU s per million events (all threads, with fdatasyncs); read back by a sink {:.2} M events/s at {read_cpu:.2} CPU s per million",
                eps / 1e6
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    if std::env::args().any(|a| a == "open") {
        let (dir, rt) = section(" (open only)");
        // Records of 100 events, and of one (a Docker message per append).
        for per_record in [BATCH, 1, BATCH, 1] {
            let (secs, mbs) = rt.block_on(open_time(&dir, per_record));
            println!(
                "Spool::open of {} MiB in records of {per_record} event(s) (every record CRC-checked, page cache warm): {:.3} s = {mbs:.0} MB/s",
                TOTAL_BYTES >> 20,
                secs
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let (dir, rt) = section("");
    let batch: Vec<Event> = (0..BATCH as u64).map(event).collect();
    let size = encoded_size(&batch);
    println!(
        "event: {size} bytes encoded (in a record of {BATCH}), {BATCH} per append; {} MiB per run",
        TOTAL_BYTES >> 20
    );
    // Raw and spool runs alternate, so that a change in the machine's load
    // (it is shared) hits both sides of each ratio alike.
    let mut ratios = Vec::new();
    for round in 1..=ROUNDS {
        let (raw, raw_cpu) = raw_write(&dir);
        let (mbs, eps, cpu) = rt.block_on(append_throughput(&dir, round));
        ratios.push(mbs / raw);
        println!(
            "round {round}: raw sequential write + fdatasync/100ms {raw:.0} MB/s ({raw_cpu:.2} CPU ms/MB); spool append {mbs:.0} MB/s, {:.2} M events/s ({cpu:.2} CPU ms/MB, all threads) = {:.0}% of raw",
            eps / 1e6,
            100.0 * mbs / raw
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "spool append, median of {ROUNDS} rounds: {:.0}% of raw (target >= 80%)",
        100.0 * ratios[ratios.len() / 2]
    );
    for background in [
        Background::None,
        Background::Paced(PACED_MBS),
        Background::Flood,
    ] {
        let what = match background {
            Background::None => "lone writer".to_owned(),
            Background::Paced(mbs) => format!("another writer appending {mbs:.0} MB/s"),
            Background::Flood => "another writer appending flat out: the disk saturated, so a waiter waits for everything before it".to_owned(),
        };
        let (f50, f99, fmax) = fsync_latency(&dir, background);
        let (p50, p99, max) = rt.block_on(durable_latency(&dir, background));
        let target = 2.0 * ms(f50) + 1.0;
        println!(
            "durable latency, {what}: raw fdatasync of {WAITER_BYTES} B p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; spool wait_durable p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target p99 <= 2 x fdatasync p50 + 1 ms = {target:.2} ms: {})",
            ms(f50),
            ms(f99),
            ms(fmax),
            ms(p50),
            ms(p99),
            ms(max),
            if ms(p99) <= target { "met" } else { "not met" }
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
