//! The spool against real failures: kill -9 of a writing process, torn and
//! corrupt tails, a random model test, a full disk (a small tmpfs) and a
//! failing fdatasync (a thin-provisioned disk running out of space).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use weir::event::{Event, Origin};
use weir::spool::{Config, Reader, SourcePosition, Spool, SpoolError, WhenFull};
use weir::units::{ByteSize, HumanDuration};

use crate::thin_disk::ThinDisk;

fn config(segment: u64, max: u64, when_full: WhenFull, fsync_ms: u64) -> Config {
    Config {
        max_bytes: ByteSize(max),
        when_full,
        segment_bytes: ByteSize(segment),
        fsync_interval: HumanDuration(Duration::from_millis(fsync_ms)),
        max_age: HumanDuration(Duration::ZERO),
    }
}

/// Event number `seq`, with a payload that depends on it (checked on read).
fn ev(seq: u64, size: usize) -> Event {
    let mut msg = format!("seq={seq:010} ").into_bytes();
    while msg.len() < size {
        msg.push(b'a' + (seq as usize + msg.len()) as u8 % 26);
    }
    Event::new(seq as i64, Origin::Docker, msg)
}

fn seq_of(e: &Event) -> u64 {
    let seq = e.timestamp_ns as u64;
    assert_eq!(*e, ev(seq, e.message.len()), "event {seq} damaged");
    seq
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Reads everything durable from `r` (without acknowledging).
async fn drain(r: &mut Reader) -> Vec<Event> {
    let mut out = Vec::new();
    while let Ok(b) =
        tokio::time::timeout(Duration::from_millis(300), r.next_batch(5000, 4 << 20)).await
    {
        out.extend(b.unwrap().events);
    }
    out
}

// ---------------------------------------------------------------- crash ---

const CHILD_ENV: &str = "WEIR_SPOOL_CRASH_CHILD_DIR";

/// Not a test on its own: the child process of `kill_9_never_loses_durable_data`
/// (the test binary re-executes itself with `CHILD_ENV` set). Appends numbered
/// events forever, resuming after the last one the spool holds, and prints
/// `durable N` once told event N is durable.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    runtime().block_on(async move {
        let spool = Spool::open(
            Path::new(&dir),
            &config(64 << 10, 1 << 30, WhenFull::DropOldest, 5),
            &["verify".into()],
        )
        .unwrap();
        let mut next = spool
            .source_position("crash")
            .map_or(0, |p| u64::from_le_bytes(p.try_into().unwrap()) + 1);
        let mut rng = rand::rngs::StdRng::from_entropy();
        loop {
            let n = rng.gen_range(1..50);
            let batch: Vec<Event> = (next..next + n)
                .map(|s| ev(s, rng.gen_range(20..300)))
                .collect();
            let last = (next + n - 1).to_le_bytes();
            let end = spool
                .append(
                    &batch,
                    Some(SourcePosition {
                        source: "crash",
                        position: &last,
                    }),
                )
                .await
                .unwrap();
            next += n;
            if rng.gen_bool(0.3) {
                spool.wait_durable(end).await.unwrap();
                println!("durable {}", next - 1);
            }
        }
    });
}

#[test]
fn kill_9_never_loses_durable_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut max_durable: Option<u64> = None;
    for round in 0..25 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "spool::crash_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| {
                    l.strip_prefix("durable ")
                        .map(|n| n.parse::<u64>().unwrap())
                })
                .max()
        });
        std::thread::sleep(Duration::from_millis(rng.gen_range(50..400)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if let Some(d) = lines.join().unwrap() {
            max_durable = max_durable.max(Some(d));
        }
        // Every event reported durable is there, intact, in order, once.
        let rt = runtime();
        let (events, position) = rt.block_on(async {
            let spool = Spool::open(
                dir.path(),
                &config(64 << 10, 1 << 30, WhenFull::DropOldest, 5),
                &["verify".into()],
            )
            .unwrap();
            let mut r = spool.reader("verify").unwrap();
            (drain(&mut r).await, spool.source_position("crash"))
        });
        for (i, e) in events.iter().enumerate() {
            assert_eq!(seq_of(e), i as u64, "round {round}: gap or reorder");
        }
        let have = events.len() as u64;
        if let Some(d) = max_durable {
            assert!(
                have > d,
                "round {round}: event {d} was reported durable but only {have} survived"
            );
        }
        // The stored position is that of the last event present: never past it.
        let pos = position.map(|p| u64::from_le_bytes(p.try_into().unwrap()));
        assert_eq!(
            pos,
            have.checked_sub(1),
            "round {round}: position and data disagree"
        );
    }
    assert!(
        max_durable.unwrap_or(0) > 100,
        "the child barely ran: {max_durable:?}"
    );
}

// -------------------------------------------------------- torn tails ---

/// A torn tail loses only the torn record; a flipped bit anywhere costs
/// only the record it hit: recovery resynchronises on the next valid record
/// and keeps every record after the damage.
#[test]
fn torn_tails_and_flipped_bits_cost_only_the_damaged_record() {
    let rt = runtime();
    let src = tempfile::tempdir().unwrap();
    let cfg = config(64 << 20, 1 << 30, WhenFull::DropOldest, 5);
    // Record k holds events [firsts[k], firsts[k+1]); it ends at `ends[k]`.
    let (firsts, ends) = rt.block_on(async {
        let s = Spool::open(src.path(), &cfg, &["v".into()]).unwrap();
        let (mut firsts, mut ends, mut seq) = (Vec::new(), Vec::new(), 0u64);
        for k in 0..300u64 {
            let n = 1 + k % 7;
            let batch: Vec<Event> = (seq..seq + n)
                .map(|s| ev(s, 40 + (s as usize * 13) % 200))
                .collect();
            firsts.push(seq);
            ends.push(s.append(&batch, None).await.unwrap());
            seq += n;
        }
        firsts.push(seq);
        s.sync().await.unwrap();
        (firsts, ends)
    });
    let seg_name = "00000000000000000000.seg";
    let original = std::fs::read(src.path().join(seg_name)).unwrap();
    let header_len = original.len() as u64 - ends.last().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for round in 0..60 {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("cursors")).unwrap();
        let at = rng.gen_range(header_len as usize..original.len());
        let mut bytes = original.clone();
        let truncate = round % 3 == 0;
        // Flip rounds damage 1 to 4 bytes at random, anywhere after the header.
        let mut flips = vec![at];
        if round % 3 == 2 {
            flips.extend(
                (0..rng.gen_range(1..4))
                    .map(|_| rng.gen_range(header_len as usize..original.len())),
            );
        }
        if truncate {
            bytes.truncate(at);
        } else {
            for &f in &flips {
                bytes[f] ^= 1 << rng.gen_range(0..8);
            }
        }
        std::fs::write(d.path().join(seg_name), &bytes).unwrap();
        // Records wholly before the damaged byte survive; after a cut none
        // after it, after flips all but the records they hit.
        let record_of = |byte: usize| {
            let off = byte as u64 - header_len;
            ends.iter().take_while(|&&e| e <= off).count()
        };
        let hit: Vec<usize> = flips.iter().map(|&f| record_of(f)).collect();
        let want: Vec<u64> = if truncate {
            (0..firsts[hit[0]]).collect()
        } else {
            (0..firsts.len() - 1)
                .filter(|k| !hit.contains(k))
                .flat_map(|k| firsts[k]..firsts[k + 1])
                .collect()
        };
        let events = rt.block_on(async {
            let s = Spool::open(d.path(), &cfg, &["v".into()]).unwrap();
            let mut r = s.reader("v").unwrap();
            let events = drain(&mut r).await;
            // The spool still takes appends after the cut.
            let end = s.append(&[ev(1 << 40, 50)], None).await.unwrap();
            s.wait_durable(end).await.unwrap();
            let more = drain(&mut r).await;
            assert_eq!(more, vec![ev(1 << 40, 50)]);
            events
        });
        let seqs: Vec<u64> = events.iter().map(seq_of).collect();
        assert_eq!(
            seqs, want,
            "round {round}: truncate={truncate} at {flips:?}"
        );
        // The damaged bytes were kept for inspection.
        let aside = std::fs::read_dir(d.path().join("damaged"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert!(
            truncate || aside >= 1,
            "round {round}: {aside} files set aside"
        );
    }
}

/// The case: 16 bytes flipped in the middle of the tail, in a closed
/// segment, and a zeroed tail segment header, while weir was stopped. Every
/// valid record survives, in order, across two reopenings (the repair is
/// done once), and the spool goes on taking appends.
#[test]
fn damage_in_closed_segments_and_segment_headers_keeps_every_valid_record() {
    let rt = runtime();
    let d = tempfile::tempdir().unwrap();
    // Small segments: the 2,000 records spread over several files.
    let cfg = config(64 << 10, 1 << 30, WhenFull::DropOldest, 5);
    let mut seq = 0u64;
    let records: Vec<(u64, u64)> = rt.block_on(async {
        let s = Spool::open(d.path(), &cfg, &["v".into()]).unwrap();
        let mut out = Vec::new();
        for _ in 0..2000u64 {
            let batch: Vec<Event> = (seq..seq + 3).map(|s| ev(s, 60)).collect();
            s.append(&batch, None).await.unwrap();
            out.push((seq, seq + 3));
            seq += 3;
        }
        s.sync().await.unwrap();
        out
    });
    let mut segs: Vec<PathBuf> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    assert!(segs.len() >= 4, "{} segments", segs.len());
    let damage = |path: &Path, f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = std::fs::read(path).unwrap();
        f(&mut b);
        std::fs::write(path, b).unwrap();
    };
    // 16 bytes flipped in the middle of a closed segment and of the tail.
    for p in [&segs[1], segs.last().unwrap()] {
        damage(p, &|b| {
            let mid = b.len() / 2;
            for x in &mut b[mid..mid + 16] {
                *x ^= 0xff;
            }
        });
    }
    // The tail's header zeroed (the first 32 bytes: magic, length, base).
    let tail = segs.last().unwrap();
    damage(tail, &|b| b[..32].fill(0));

    let registry = weir::metrics::Metrics::new();
    let read_all = || {
        rt.block_on(async {
            let s = Spool::open_with(d.path(), &cfg, &["v".into()], &registry).unwrap();
            let mut r = s.reader("v").unwrap();
            let got: Vec<u64> = drain(&mut r).await.iter().map(seq_of).collect();
            got
        })
    };
    let counter = |name| registry.value(name, &[]).unwrap();
    let got = read_all();
    // Counted: at least the three damaged spots, each losing its records' events.
    assert!(counter("weir_spool_corrupt_records_total") >= 3.0);
    assert!(counter("weir_spool_corrupt_lost_events_total") >= 6.0);
    // Each 16-byte flip falls in one or two records; nothing else is lost.
    let lost: Vec<&(u64, u64)> = records
        .iter()
        .filter(|(a, b)| !(*a..*b).all(|s| got.contains(&s)))
        .collect();
    assert!(
        (2..=4).contains(&lost.len()),
        "lost records {lost:?} of {}",
        records.len()
    );
    assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order");
    assert!(got.len() as u64 >= seq - 4 * 3);
    assert!(got.contains(&(seq - 1)), "the last record after the damage");
    let aside = std::fs::read_dir(d.path().join("damaged")).unwrap().count();
    assert!(aside >= 3, "{aside} stretches set aside");
    // Repaired once: the second open finds the same records, nothing new.
    assert_eq!(read_all(), got);
    assert_eq!(
        std::fs::read_dir(d.path().join("damaged")).unwrap().count(),
        aside
    );
}

// --------------------------------------------------------- model test ---

#[derive(Debug, Clone)]
enum Op {
    Append(u8, u16),
    Read(u8, u16),
    Ack(u8),
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..20, 20u16..400).prop_map(|(n, s)| Op::Append(n, s)),
        3 => (0u8..2, 1u16..50).prop_map(|(k, m)| Op::Read(k, m)),
        2 => (0u8..2).prop_map(Op::Ack),
        1 => Just(Op::Restart),
    ]
}

/// What the model expects of one sink.
#[derive(Default)]
struct SinkModel {
    /// Next event the sink should get (unless dropped, which must be counted).
    next: u64,
    /// `end` of the last batch read, acknowledged by `Ack`.
    last_end: u64,
    /// `Reader::dropped_events` as last seen.
    dropped_seen: u64,
    /// What `Ack` acknowledged last.
    acked: u64,
}

/// Regression, found by `model_drop_oldest`: a sink reopened with its cursor
/// at the very end of the tail segment was charged with the whole tail as
/// lost when that segment was dropped later.
#[test]
fn reopened_at_the_tail_end_is_not_charged_for_the_tail_when_it_is_dropped() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(4096, 4 * 4096, WhenFull::DropOldest, 2);
    let names = ["s".to_owned()];
    rt.block_on(async {
        let spool = Spool::open(dir.path(), &cfg, &names).unwrap();
        let mut r = spool.reader("s").unwrap();
        let batch: Vec<Event> = (0..10).map(|s| ev(s, 200)).collect();
        spool.append(&batch, None).await.unwrap();
        spool.sync().await.unwrap();
        let b = r.next_batch(100, 1 << 20).await.unwrap();
        assert_eq!(b.events.len(), 10);
        r.ack(b.end).unwrap();
        spool.sync().await.unwrap();
    });
    rt.block_on(async {
        let spool = Spool::open(dir.path(), &cfg, &names).unwrap();
        let mut r = spool.reader("s").unwrap();
        for seq in 10..200 {
            spool.append(&[ev(seq, 200)], None).await.unwrap();
        }
        spool.sync().await.unwrap();
        let events = drain(&mut r).await;
        let first = seq_of(&events[0]);
        assert!(first > 10, "the quota should have dropped something");
        assert_eq!(
            first - 10,
            r.dropped_events(),
            "skipped events must be counted as dropped"
        );
    });
}

fn run_model(ops: Vec<Op>, when_full: WhenFull) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    // Small segments and quota: drop_oldest kicks in often.
    let cfg = config(4096, 4 * 4096, when_full, 2);
    let names = ["a".to_owned(), "b".to_owned()];
    rt.block_on(async {
        let mut spool = Spool::open(dir.path(), &cfg, &names).unwrap();
        let mut readers: Vec<Reader> = names.iter().map(|n| spool.reader(n).unwrap()).collect();
        let mut models: Vec<SinkModel> = names.iter().map(|_| SinkModel::default()).collect();
        // Offset at which each record ends, and its first event.
        let mut records: BTreeMap<u64, u64> = BTreeMap::new();
        let mut seq = 0u64;
        for op in ops {
            match op {
                Op::Append(n, size) => {
                    let batch: Vec<Event> = (seq..seq + n as u64)
                        .map(|s| ev(s, size as usize))
                        .collect();
                    let end = spool.append(&batch, None).await.unwrap();
                    records.insert(end, seq + n as u64);
                    seq += n as u64;
                }
                Op::Read(k, max) => {
                    let (r, m) = (&mut readers[k as usize], &mut models[k as usize]);
                    if m.next >= seq {
                        continue;
                    }
                    spool.sync().await.unwrap();
                    let b = tokio::time::timeout(
                        Duration::from_secs(5),
                        r.next_batch(max as usize, 2000),
                    )
                    .await
                    .expect("unread data must be readable")
                    .unwrap();
                    let seqs: Vec<u64> = b.events.iter().map(seq_of).collect();
                    assert!(!seqs.is_empty() && seqs.len() <= max as usize);
                    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
                    let dropped = r.dropped_events();
                    assert!(seqs[0] >= m.next, "went back: {} < {}", seqs[0], m.next);
                    assert_eq!(
                        seqs[0] - m.next,
                        dropped - m.dropped_seen,
                        "skipped events must be counted as dropped"
                    );
                    m.dropped_seen = dropped;
                    m.next = seqs.last().unwrap() + 1;
                    assert!(b.end >= m.last_end);
                    m.last_end = b.end;
                }
                Op::Ack(k) => {
                    readers[k as usize]
                        .ack(models[k as usize].last_end)
                        .unwrap();
                }
                Op::Restart => {
                    drop(readers);
                    drop(spool);
                    spool = Spool::open(dir.path(), &cfg, &names).unwrap();
                    readers = names.iter().map(|n| spool.reader(n).unwrap()).collect();
                    let stats = spool.stats();
                    for (m, s) in models.iter_mut().zip(&stats.sinks) {
                        assert!(
                            s.acked >= m.acked,
                            "acknowledged cursor lost: {} < {}",
                            s.acked,
                            m.acked
                        );
                        // Unacknowledged events come again (at least once).
                        let first_unacked = records
                            .range(..=s.acked)
                            .next_back()
                            .map_or(0, |(_, &next)| next);
                        m.next = first_unacked;
                        m.last_end = s.acked;
                        m.acked = s.acked;
                        m.dropped_seen = 0;
                    }
                    assert_eq!(
                        stats.appended,
                        records
                            .keys()
                            .next_back()
                            .copied()
                            .unwrap_or(stats.appended)
                    );
                }
            }
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn model_drop_oldest(ops in proptest::collection::vec(op(), 1..120)) {
        run_model(ops, WhenFull::DropOldest);
    }
}

// ------------------------------------------------------------ disk full ---

/// A small tmpfs, unmounted on drop (also when the test fails).
struct Tmpfs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Tmpfs {
    fn new(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("running mount");
        assert!(
            st.success(),
            "mount -t tmpfs failed: these tests need root (CI runs as root)"
        );
        Tmpfs { _dir: dir, path }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[test]
fn disk_full_drops_oldest_and_counts_every_lost_event() {
    let fs = Tmpfs::new("1m");
    let dir = fs.path.join("spool");
    // The quota is far above the disk: ENOSPC, not the quota, does the dropping.
    let cfg = config(128 << 10, 1 << 30, WhenFull::DropOldest, 5);
    let rt = runtime();
    let (ok, failed, last_ok, dropped) = rt.block_on(async {
        let s = Spool::open(&dir, &cfg, &["a".into()]).unwrap();
        let (mut ok, mut failed, mut last_ok) = (0u64, 0u64, 0u64);
        for seq in 0..30_000u64 {
            match s.append(&[ev(seq, 200)], None).await {
                Ok(end) => {
                    ok += 1;
                    last_ok = seq;
                    if seq % 500 == 0 {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(2), s.wait_durable(end)).await;
                    }
                }
                Err(SpoolError::Full(_)) => failed += 1,
                Err(e) => panic!("{e}"),
            }
        }
        s.sync().await.unwrap();
        (ok, failed, last_ok, s.stats().sinks[0].dropped_events)
    });
    assert!(
        ok > 20_000,
        "most appends succeed by dropping old data: {ok} ok, {failed} failed"
    );
    // Reopen: nothing torn, what is left is in order, and delivered + dropped
    // covers every accepted event.
    rt.block_on(async {
        let s = Spool::open(&dir, &cfg, &["a".into()]).unwrap();
        assert!(s.stats().bytes < 1 << 20);
        let mut r = s.reader("a").unwrap();
        let got = drain(&mut r).await;
        let seqs: Vec<u64> = got.iter().map(seq_of).collect();
        assert!(seqs.windows(2).all(|w| w[1] > w[0]));
        assert_eq!(*seqs.last().unwrap(), last_ok);
        assert_eq!(
            seqs.len() as u64 + dropped,
            ok,
            "every accepted event delivered or counted dropped"
        );
    });
}

#[test]
fn disk_full_with_nothing_to_drop_fails_appends_then_recovers() {
    let fs = Tmpfs::new("2m");
    let dir = fs.path.join("spool");
    let cfg = config(4 << 20, 1 << 30, WhenFull::DropOldest, 5);
    let rt = runtime();
    rt.block_on(async {
        let s = Spool::open(&dir, &cfg, &["a".into()]).unwrap();
        let end = s.append(&[ev(0, 100)], None).await.unwrap();
        s.wait_durable(end).await.unwrap();
        // Fill the disk with something that is not the spool.
        let ballast = fs.path.join("ballast");
        let _ = std::fs::write(&ballast, vec![1u8; 2 << 20]);
        let mut seq = 1;
        let mut accepted = vec![0u64];
        let err = loop {
            match s.append(&[ev(seq, 1000)], None).await {
                Ok(_) => accepted.push(seq),
                Err(e) => break e,
            }
            seq += 1;
            assert!(seq < 100_000, "appends never failed on a full disk");
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        assert!(matches!(err, SpoolError::Full(_)), "{err}");
        assert!(err.to_string().contains("disk full"), "{err}");
        // Space returns: the spool recovers by itself.
        std::fs::remove_file(&ballast).unwrap();
        let end = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Ok(end) = s.append(&[ev(seq, 100)], None).await {
                    break end;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("appends work again once space returns");
        accepted.push(seq);
        tokio::time::timeout(Duration::from_secs(5), s.wait_durable(end))
            .await
            .unwrap()
            .unwrap();
        let mut r = s.reader("a").unwrap();
        let seqs: Vec<u64> = drain(&mut r).await.iter().map(seq_of).collect();
        assert_eq!(seqs, accepted, "every accepted event, nothing torn");
    });
}

#[test]
fn disk_full_under_block_waits_for_sinks_and_loses_nothing() {
    let fs = Tmpfs::new("1m");
    let dir = fs.path.join("spool");
    let cfg = config(64 << 10, 1 << 30, WhenFull::Block, 5);
    let rt = runtime();
    rt.block_on(async {
        let s = Spool::open(&dir, &cfg, &["a".into()]).unwrap();
        let total = 12_000u64; // ~2.6 MB: more than the disk
        let w = s.clone();
        let writer = tokio::spawn(async move {
            for seq in 0..total {
                w.append(&[ev(seq, 200)], None).await.unwrap();
            }
            w.sync().await.unwrap();
        });
        tokio::time::sleep(Duration::from_millis(500)).await; // let the disk fill
        let mut r = s.reader("a").unwrap();
        let mut next = 0;
        while next < total {
            let b = tokio::time::timeout(Duration::from_secs(10), r.next_batch(1000, 1 << 20))
                .await
                .expect("progress")
                .unwrap();
            for e in &b.events {
                assert_eq!(seq_of(e), next);
                next += 1;
            }
            r.ack(b.end).unwrap();
        }
        tokio::time::timeout(Duration::from_secs(10), writer)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.dropped_events(), 0);
    });
}

// ------------------------------------------------------- failing fsync ---

/// Regression (fsyncgate): the spool used to retry a failed fdatasync and,
/// once the retry succeeded, report durable data whose writeback had failed
/// and was gone. Here the backing store fills (fdatasync fails), then gets
/// room again (a retry would succeed): every offset reported durable must
/// survive a remount, and after the failure nothing more is reported durable.
#[test]
fn a_failed_fdatasync_is_final_and_nothing_reported_durable_is_lost() {
    let mut disk = ThinDisk::new("12m", "256m");
    let dir = disk.mnt.join("spool");
    let cfg = config(4 << 20, 200 << 20, WhenFull::DropOldest, 5);
    let grower = disk.grow_when_full(Duration::from_millis(300));
    let rt = runtime();
    const BATCH: u64 = 50;
    let (acked, err) = rt.block_on(async {
        let s = Spool::open(&dir, &cfg, &["a".into()]).unwrap();
        let mut acked = Vec::new();
        let mut seq = 0u64;
        let err = loop {
            if seq * 1000 > 48 << 20 {
                break None; // all "durable": the failure went unreported
            }
            let batch: Vec<Event> = (seq..seq + BATCH).map(|q| ev(q, 1000)).collect();
            let end = match s.append(&batch, None).await {
                Ok(end) => end,
                Err(e) => break Some(e),
            };
            seq += BATCH;
            match tokio::time::timeout(Duration::from_secs(30), s.wait_durable(end)).await {
                Ok(Ok(())) => acked.extend(seq - BATCH..seq),
                Ok(Err(e)) => break Some(e),
                Err(_) => panic!("wait_durable neither returned nor failed in 30 s"),
            }
        };
        grower.join().unwrap();
        // The disk has room again, so a retried fdatasync would succeed:
        // a spool that believed it would now call everything durable.
        match s.sync().await {
            Ok(()) => acked = (0..seq).collect(),
            Err(e) => assert!(matches!(e, SpoolError::SyncFailed(_)), "{e}"),
        }
        let again = s.append(&[ev(seq, 1000)], None).await;
        assert!(matches!(again, Err(SpoolError::SyncFailed(_))), "{again:?}");
        (acked, err)
    });
    assert!(
        !acked.is_empty(),
        "some data was durable before the disk filled"
    );
    // What the disk really holds: every acknowledged event, intact, in order.
    disk.remount();
    rt.block_on(async {
        let s = Spool::open(&dir, &cfg, &["a".into()]).unwrap();
        let mut r = s.reader("a").unwrap();
        let seqs: Vec<u64> = drain(&mut r).await.iter().map(seq_of).collect();
        assert!(seqs.windows(2).all(|w| w[1] > w[0]), "in order");
        let got: std::collections::BTreeSet<u64> = seqs.into_iter().collect();
        let lost: Vec<u64> = acked.iter().copied().filter(|q| !got.contains(q)).collect();
        assert!(
            lost.is_empty(),
            "{} of {} events reported durable are not on the disk (first {:?})",
            lost.len(),
            acked.len(),
            lost.first()
        );
    });
    let err = err.expect("the failed fdatasync was reported to the waiter");
    assert!(matches!(err, SpoolError::SyncFailed(_)), "{err}");
    assert!(err.to_string().contains("fdatasync failed"), "{err}");
}

// ---------------------------------------------------------- state files ---

/// A weir started with umask 000 outside systemd keeps its state private
/// (dirs 0700, files 0600), and one whose scrub key, lock or cursor is a
/// symlink refuses to start, says which link, and leaves the target alone.
#[test]
fn state_files_are_private_whatever_the_umask_and_symlinks_are_refused() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let state = d.join("state");
    let config = d.join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{d}/state\"\n[sources.fwd]\ntype = \"forward\"\nlisten = \"unix://{d}/fwd.sock\"\n[sinks.out]\ntype = \"file\"\npath = \"{d}/out.ndjson\"\n[metrics]\nlisten = \"\"\n",
            d = d.display()
        ),
    )
    .unwrap();
    // `umask 000; exec weir run ...`: the widest umask there is.
    let start = || {
        let cmd = crate::common::weir_run(&config);
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg("umask 000; exec \"$0\" \"$@\"")
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .env_remove("JOURNAL_STREAM")
            .env_remove("INVOCATION_ID")
            .stderr(Stdio::piped());
        sh
    };
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;

    // A link planted where the pid file's temporary goes is not written through.
    let pid_victim = d.join("pid-victim");
    std::fs::write(&pid_victim, b"keep").unwrap();
    std::os::unix::fs::symlink(&pid_victim, d.join("weir.pid.tmp")).unwrap();
    let mut weir = start().spawn().unwrap();
    crate::common::wait_for("weir to listen", Duration::from_secs(30), || {
        std::os::unix::net::UnixStream::connect(d.join("fwd.sock")).ok()
    });
    weir.kill().unwrap();
    weir.wait().unwrap();
    assert_eq!(std::fs::read(&pid_victim).unwrap(), b"keep");
    std::fs::remove_file(d.join("weir.pid.tmp")).unwrap();
    let spool = state.join("spool");
    let segment = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .expect("a segment");
    for dir in [&state, &spool, &spool.join("cursors")] {
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
    }
    for file in [
        state.join("lock"),
        state.join("scrub.key"),
        segment,
        spool.join("cursors/out.cursor"),
    ] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }

    // A state directory left 0755 by something else is narrowed.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();

    let victim = d.join("victim");
    for name in ["scrub.key", "lock", "spool/cursors/out.cursor"] {
        std::fs::write(&victim, b"not weir's").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
        let link = state.join(name);
        let real = d.join("real");
        std::fs::rename(&link, &real).unwrap();
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let out = start().output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{name}: weir followed a link: {stderr}"
        );
        assert!(
            stderr.contains(&format!("{} is a symbolic link", link.display())),
            "{name}: {stderr}"
        );
        assert_eq!(std::fs::read(&victim).unwrap(), b"not weir's", "{name}");
        assert_eq!(mode(&victim), 0o644, "{name}: target chmodded");
        std::fs::remove_file(&link).unwrap();
        std::fs::rename(&real, &link).unwrap();
    }
    assert_eq!(mode(&state), 0o700);
}

// --------------------------------------------------------------- config ---

/// Values beyond sense are refused by `weir check-config`, each with its key
/// and line, instead of saturating (a 20-digit TiB quota used to become "no
/// quota") or overflowing.
#[test]
fn config_values_beyond_sense_are_refused_with_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let base = "[sources.d]\ntype = \"forward\"\nlisten = \"unix:///run/weir-test.sock\"\n\
                [sinks.f]\ntype = \"file\"\npath = \"/var/log/weir/out\"\n";
    for (extra, want) in [
        (
            "keep_files = 4000000000\n",
            "line 7: `sinks.f.keep_files`: 4000000000 is more than 10000",
        ),
        (
            "[spool]\nmax_bytes = \"99999999999999999999TiB\"\n",
            "line 8: `spool.max_bytes`: `99999999999999999999TiB` is more than the largest size weir accepts",
        ),
        (
            "[spool]\nmax_bytes = 4000000000000000000\n",
            "line 8: `spool.max_bytes`: `4000000000000000000` is more than the largest size",
        ),
        (
            "[spool]\nfsync_interval = \"400d\"\n",
            "line 8: `spool.fsync_interval`: `400d` is longer than a year",
        ),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, format!("{base}{extra}")).unwrap();
        let out = Command::new(crate::common::weir_bin())
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{extra}: {err}");
        assert!(err.contains(want), "{extra}: {err}");
    }
}
