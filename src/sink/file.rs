//! File sink: newline-delimited JSON, rotated by size.
//!
//! One line per event:
//! `{"timestamp_ns":…,"labels":{"host":…,"source":…,…},"message":"…","fields":{…}}`.
//! The message is written as UTF-8 (invalid bytes replaced by U+FFFD). A batch
//! is written, flushed and fdatasync'ed before it is acknowledged, so the file
//! holds everything acknowledged even after a power loss. When the file would
//! pass `max_file_bytes` it is renamed to `PATH.1` (older ones shift to `.2`,
//! ...; beyond `keep_files` they are deleted) and a new file is started.
//! Once synced, a batch's pages are dropped from the page cache
//! (`POSIX_FADV_DONTNEED`): a program reading the file reads it from disk.
//!
//! Retention: with `max_age`, a file (rotated or current) whose last write is
//! older than `max_age` is deleted, checked at start and every minute even
//! when nothing arrives. A file's last write is its newest line, so nothing
//! in a deleted file is younger than `max_age`; a file still being written
//! keeps its older lines until it rotates (bounded by `max_file_bytes`).

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

use crate::event::{same_bytes, Event, Labels, Origin};
use crate::problems::Problems;
use crate::sink::driver;
use crate::spool;
use crate::units::{ByteSize, HumanDuration};

/// `[sinks.NAME]` with `type = "file"`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// The file to append to; its directory is created if missing.
    pub path: PathBuf,
    /// Rotate when the file would pass this size. Default `100MiB`.
    pub max_file_bytes: Option<ByteSize>,
    /// Rotated files kept (`PATH.1` .. `PATH.N`). Default 5; 0 keeps none;
    /// at most 10,000 (each rotation renames every kept file).
    pub keep_files: Option<u32>,
    /// Delete files (rotated or current) whose last write is older than
    /// this, e.g. `"30d"`. Default `"0s"`: off, only `keep_files` limits
    /// what is kept (deleting an administrator's logs by age is their call).
    pub max_age: Option<HumanDuration>,
}

/// The most rotated files a file sink keeps.
const MAX_KEEP_FILES: u32 = 10_000;

/// Validated file sink config.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub path: PathBuf,
    pub max_file_bytes: ByteSize,
    pub keep_files: u32,
    /// `0s`: off.
    pub max_age: HumanDuration,
}

impl RawConfig {
    pub fn validate(self, key: &str, problems: &mut Problems) -> Config {
        if !self.path.is_absolute() {
            problems.add(format!("{key}.path"), "must be an absolute path");
        }
        let max_file_bytes = self.max_file_bytes.unwrap_or(ByteSize(100 << 20));
        if max_file_bytes.0 < 4096 {
            problems.add(format!("{key}.max_file_bytes"), "must be at least 4KiB");
        }
        let keep_files = self.keep_files.unwrap_or(5);
        if keep_files > MAX_KEEP_FILES {
            problems.add(
                format!("{key}.keep_files"),
                format!("{keep_files} is more than {MAX_KEEP_FILES} rotated files; keep fewer, larger ones (max_file_bytes)"),
            );
        }
        Config {
            path: self.path,
            max_file_bytes,
            keep_files,
            max_age: self.max_age.unwrap_or(HumanDuration(Duration::ZERO)),
        }
    }
}

/// Events per batch; a batch is one write + one fdatasync.
const BATCH_EVENTS: usize = 10_000;
const BATCH_BYTES: usize = 4 << 20;

/// The file sink on the [`driver`]: a batch is one append + fdatasync.
pub struct FileSink {
    config: Config,
    /// The current batch's lines, kept until written.
    buf: Vec<u8>,
    /// Remembers the field names of recent lines (see [`LineWriter`]).
    lines: LineWriter,
    events: u64,
    written: bool,
    /// Held while appending or pruning: a file is never deleted between
    /// the check of its age and a write to it.
    files: Arc<Mutex<()>>,
}

impl FileSink {
    pub fn new(config: Config) -> FileSink {
        FileSink {
            config,
            buf: Vec::new(),
            lines: LineWriter::default(),
            events: 0,
            written: true,
            files: Arc::new(Mutex::new(())),
        }
    }
}

impl driver::Sink for FileSink {
    const RETRY_MESSAGE: &'static str = "cannot write the file sink; retrying";

    fn policy(&self) -> driver::Policy {
        driver::Policy {
            max_events: BATCH_EVENTS,
            max_bytes: BATCH_BYTES,
            linger: Duration::ZERO,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            // Lines stay in spool order.
            in_flight: 1,
        }
    }

    fn begin(&mut self, events: &[Event]) -> driver::Prepared {
        self.buf.clear();
        for e in events {
            self.lines.write(&mut self.buf, e);
        }
        self.events = events.len() as u64;
        self.written = false;
        driver::Prepared::default()
    }

    async fn step(&mut self) -> driver::Step {
        if self.written {
            return driver::Step::Done;
        }
        // Written off the runtime (fdatasync blocks); the buffer goes and comes back.
        let cfg = self.config.clone();
        let data = std::mem::take(&mut self.buf);
        let files = self.files.clone();
        let (res, data) = tokio::task::spawn_blocking(move || {
            let _held = files.lock().unwrap_or_else(|e| e.into_inner());
            let r = append(&cfg, &data);
            (r, data)
        })
        .await
        .expect("file write task panicked");
        self.buf = data;
        match res {
            Ok(()) => {
                self.written = true;
                driver::Step::Sent {
                    events: self.events,
                    bytes: self.buf.len() as u64,
                }
            }
            Err(e) => driver::Step::Retry(driver::Failure {
                reason: "io",
                detail: format!("{}: {e}", self.config.path.display()),
                after: None,
            }),
        }
    }
}

/// Delivers from `reader` to the file until `shutdown`.
pub async fn run(name: String, config: Config, reader: spool::Reader, shutdown: CancellationToken) {
    let sink = FileSink::new(config.clone());
    if !config.max_age.0.is_zero() {
        let (files, stop, name) = (sink.files.clone(), shutdown.clone(), name.clone());
        tokio::spawn(async move {
            loop {
                let (cfg, files) = (config.clone(), files.clone());
                let pruned = tokio::task::spawn_blocking(move || {
                    let _held = files.lock().unwrap_or_else(|e| e.into_inner());
                    prune(&cfg.path, cfg.keep_files, cfg.max_age.0, SystemTime::now())
                })
                .await
                .expect("file prune task panicked");
                match pruned {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(sink = %name, files = n, max_age = %config.max_age, "deleted files older than max_age")
                    }
                    Err(e) => {
                        tracing::warn!(sink = %name, error = %e, "cannot delete files older than max_age; will try again in a minute")
                    }
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(PRUNE_EVERY) => {}
                }
            }
        });
    }
    driver::run(name, sink, reader, shutdown).await
}

/// How often files are checked against `max_age`.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Deletes the current file and rotated files `PATH.1..=PATH.keep` whose
/// last write is older than `max_age`; returns how many it deleted.
fn prune(path: &Path, keep: u32, max_age: Duration, now: SystemTime) -> std::io::Result<u32> {
    let Some(cutoff) = now.checked_sub(max_age) else {
        return Ok(0);
    };
    let mut deleted = 0;
    for file in std::iter::once(path.to_owned()).chain((1..=keep).map(|n| rotated(path, n))) {
        let modified = match std::fs::metadata(&file).and_then(|m| m.modified()) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if modified < cutoff {
            std::fs::remove_file(&file)?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// Appends one JSON line for `e` to `out`:
/// `{"timestamp_ns":N,"labels":{..},"message":"..","fields":{..}}` and a newline.
///
/// Written straight into `out`, without building a map or a `String` per
/// event: this runs for every event a file sink delivers. The bytes are those
/// serde_json wrote for the same line before (the line format is a user
/// interface; the tests compare both on real and hostile events): keys of
/// `labels` and `fields` in byte order, of equal field names the last value,
/// strings escaped as serde_json does (`\"`, `\\`, `\b\f\n\r\t`, other
/// control characters as `\u00XX`, everything else as is), the message's
/// invalid UTF-8 replaced by U+FFFD.
///
/// A writer of its own each time: a sink writing many lines keeps one
/// [`LineWriter`] instead.
pub fn write_line(out: &mut Vec<u8>, e: &Event) {
    LineWriter::default().write(out, e);
}

/// Writes lines as [`write_line`] does, remembering the field names of
/// recent lines and the order in which their members are written (sorted,
/// duplicates removed, each key already escaped as `,"NAME":`). The
/// entries of a journal unit or the records of a container carry the same
/// names line after line, so the sort and the names' escaping run once per
/// new sequence of names rather than once per line: with them a journal
/// line's six fields cost ~2,100 instructions of the line's ~3,700, and the
/// line ~3,000 without them (callgrind of `weir run` over the journal
/// bench's entries). Several
/// sequences are kept, not only the last line's: journald stores an
/// entry's items in the order their data objects were written, so
/// programs logging in turn alternate between a few orders of the same
/// names (four in the bench's journal). Finding the line's sequence costs
/// a few short comparisons. Each sequence also keeps the members written
/// for its last few sets of values ([`Written`]): a line with one of them
/// copies its members whole.
#[derive(Debug, Default)]
pub struct LineWriter {
    /// Sequences of names seen, the one used last first.
    known: Vec<Order>,
    /// Labels written for recent lines, the one used last first.
    labels: Vec<LabelsWritten>,
}

/// The labels of a line but its level, and the JSON members they make
/// around it: kept to be copied whole when a later line has the same
/// (host, unit, service, container name, app, source), as a journal
/// unit's entries and a container's records have line after line. Writing
/// them was ~450 instructions of a journal line (three escaping tests,
/// key and comma copies; callgrind), comparing them a few dozen.
#[derive(Debug, Default)]
struct LabelsWritten {
    labels: Labels,
    origin: Option<Origin>,
    /// The members before `level`: `"app":..,"container_name":..,"host":..`.
    before: Vec<u8>,
    /// The members after it: `"service":..,"source":..,"unit":..`.
    after: Vec<u8>,
}

/// Sets of labels a [`LineWriter`] keeps written: the units or containers
/// whose lines interleave. A miss compares with each.
const KEEP_LABELS: usize = 8;

/// Labels longer than this in all are not kept (~8 KiB per writer at most).
const KEEP_LABEL_BYTES: usize = 512;

/// Sequences of names a [`LineWriter`] keeps. More than a few are rarely
/// interleaved line by line; a miss costs the sort of before.
const KEEP_ORDERS: usize = 8;

/// A sequence whose names take more than this (or its escaped keys more
/// than twice this) is let go after its line rather than kept: one event
/// with huge field names must not pin their memory for good.
const KEEP_NAME_BYTES: usize = 16 << 10;

/// Likewise for a sequence of more fields than this: its per-field
/// vectors (`name_ends`, `members`) grow with the count even when the
/// names are empty, so the byte bound alone would not hold them.
const KEEP_FIELDS: usize = 1024;

/// One sequence of field names and how a line with them is written.
#[derive(Debug, Default)]
struct Order {
    /// The names, one after the other, in the event's order.
    names: Vec<u8>,
    /// Where each name ends in `names`.
    name_ends: Vec<usize>,
    /// The members to write, in key order: the index of the field in the
    /// event and where its key ends in `keys`.
    members: Vec<(usize, usize)>,
    /// The members' keys as JSON, each preceded by a comma: `,"a":,"b":`.
    keys: Vec<u8>,
    /// The members of recent lines with these names, the one used last
    /// first (see [`Written`]).
    written: Vec<Written>,
}

/// Members written for one set of field values, kept to be copied whole
/// when a later line of the same names has the same values: a unit's
/// entries or a container's records carry the same pid, command, boot,
/// stream, id line after line, and comparing the values costs less than
/// writing them (each a key, an escaping test and three copies: ~170
/// instructions a field of a journal line, callgrind).
#[derive(Debug, Default)]
struct Written {
    /// The event's field values, one after the other, in its order.
    values: Vec<u8>,
    /// Where each value ends in `values`.
    value_ends: Vec<usize>,
    /// What the members wrote: `"a":"1","b":"2"` (no braces).
    json: Vec<u8>,
}

/// Sets of values an [`Order`] keeps written: a unit's processes or a
/// host's containers in turn. More cost a comparison each on a miss.
const KEEP_WRITTEN: usize = 4;

/// Values longer than this in all (or members written longer than twice
/// this) are not kept: bounds what the kept lines hold, ~40 KiB per writer.
const KEEP_WRITTEN_BYTES: usize = 512;

impl LineWriter {
    /// Appends one JSON line for `e` to `out`, as [`write_line`].
    pub fn write(&mut self, out: &mut Vec<u8>, e: &Event) {
        write_head(out, e, &mut self.labels);
        match self.known.iter().position(|o| o.matches(&e.fields)) {
            Some(at) => self.known.swap(0, at),
            None => {
                let mut order = if self.known.len() < KEEP_ORDERS {
                    Order::default()
                } else {
                    self.known.pop().expect("KEEP_ORDERS > 0")
                };
                order.learn(&e.fields);
                self.known.push(order);
                let last = self.known.len() - 1;
                self.known.swap(0, last);
            }
        }
        let order = &mut self.known[0];
        match order.written.iter().position(|w| w.matches(&e.fields)) {
            Some(at) => {
                order.written.swap(0, at);
                out.extend_from_slice(&order.written[0].json);
            }
            None => {
                let from = out.len();
                order.write_members(out, &e.fields);
                order.keep_written(&e.fields, &out[from..]);
            }
        }
        out.extend_from_slice(b"}}\n");
        if order.names.capacity() > KEEP_NAME_BYTES
            || order.keys.capacity() > 2 * KEEP_NAME_BYTES
            || order.members.capacity() > KEEP_FIELDS
            || order.name_ends.capacity() > KEEP_FIELDS
        {
            self.known.swap_remove(0);
        }
    }
}

impl Order {
    /// Whether `fields` have these names, in this order.
    fn matches(&self, fields: &[(String, String)]) -> bool {
        if fields.len() != self.name_ends.len() {
            return false;
        }
        let mut start = 0;
        for ((k, _), &end) in fields.iter().zip(&self.name_ends) {
            // Inline, not `!=`: a memcmp call per name was half the cost.
            if !same_bytes(k.as_bytes(), &self.names[start..end]) {
                return false;
            }
            start = end;
        }
        true
    }

    /// Writes the members of `fields` (which have these names).
    fn write_members(&self, out: &mut Vec<u8>, fields: &[(String, String)]) {
        // The first member's key without its comma.
        let mut start = 1;
        for &(i, end) in &self.members {
            out.extend_from_slice(&self.keys[start..end]);
            json::string(out, &fields[i].1);
            start = end;
        }
    }

    /// Keeps `json`, the members written for `fields`, in place of the
    /// set of values used least recently (unless they are big).
    fn keep_written(&mut self, fields: &[(String, String)], json: &[u8]) {
        let bytes: usize = fields.iter().map(|(_, v)| v.len()).sum();
        if bytes > KEEP_WRITTEN_BYTES || json.len() > 2 * KEEP_WRITTEN_BYTES {
            return;
        }
        let mut w = if self.written.len() < KEEP_WRITTEN {
            Written::default()
        } else {
            self.written.pop().expect("KEEP_WRITTEN > 0")
        };
        w.values.clear();
        w.value_ends.clear();
        for (_, v) in fields {
            w.values.extend_from_slice(v.as_bytes());
            w.value_ends.push(w.values.len());
        }
        w.json.clear();
        w.json.extend_from_slice(json);
        self.written.insert(0, w);
    }

    /// Becomes the order of `fields`: their names, and the members they
    /// make in key order, of equal keys the last one (as a map built from
    /// them would hold).
    fn learn(&mut self, fields: &[(String, String)]) {
        self.names.clear();
        self.name_ends.clear();
        for (k, _) in fields {
            self.names.extend_from_slice(k.as_bytes());
            self.name_ends.push(self.names.len());
        }
        let mut order: Vec<(u64, &str, usize)> = fields
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (json::prefix(k), k.as_str(), i))
            .collect();
        // Keys differ in their first 8 bytes nearly always: compared as
        // one big-endian number (zero-padded) first, the whole keys only
        // when those are equal. The same order as comparing the bytes;
        // stable, so equal keys keep the event's order.
        order.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        self.members.clear();
        self.keys.clear();
        self.written.clear();
        for (n, &(_, k, i)) in order.iter().enumerate() {
            if order.get(n + 1).is_some_and(|next| next.1 == k) {
                continue; // a later value of the same key wins
            }
            self.keys.push(b',');
            json::string(&mut self.keys, k);
            self.keys.push(b':');
            self.members.push((i, self.keys.len()));
        }
    }
}

impl Written {
    /// Whether `fields` (of this order's names) have these values.
    fn matches(&self, fields: &[(String, String)]) -> bool {
        if fields.len() != self.value_ends.len() {
            return false;
        }
        let mut start = 0;
        for ((_, v), &end) in fields.iter().zip(&self.value_ends) {
            if !same_bytes(v.as_bytes(), &self.values[start..end]) {
                return false;
            }
            start = end;
        }
        true
    }
}

/// The line up to the fields' members: `{"timestamp_ns":N,"labels":{..},"message":"..","fields":{`.
/// The labels' members are copied from `kept` when it has the line's.
fn write_head(out: &mut Vec<u8>, e: &Event, kept: &mut Vec<LabelsWritten>) {
    // Room for the whole line at once (unless much of it needs escaping):
    // the strings, the label keys, quotes, colon and comma per member, and
    // 128 for the fixed keys, `source`, `level` and a 20-digit timestamp.
    // One reserve here rather than one per string.
    let l = &e.labels;
    let labels: usize = [&l.app, &l.container_name, &l.host, &l.service, &l.unit]
        .into_iter()
        .map(|v| v.as_ref().map_or(0, |v| v.len() + 24))
        .sum();
    let fields: usize = e.fields.iter().map(|(k, v)| k.len() + v.len() + 6).sum();
    out.reserve(128 + labels + e.message.len() + fields);
    out.extend_from_slice(b"{\"timestamp_ns\":");
    json::int(out, e.timestamp_ns);
    out.extend_from_slice(b",\"labels\":{");
    // The labels in key order: app, container_name, host, level, service,
    // source, unit; `level` (a fixed lower-case word, written without the
    // escaping test) between the kept members before and after it.
    let at = match kept.iter().position(|w| w.matches(l, e.origin)) {
        Some(at) => at,
        None => {
            let mut w = if kept.len() < KEEP_LABELS {
                LabelsWritten::default()
            } else {
                kept.pop().expect("KEEP_LABELS > 0")
            };
            w.learn(l, e.origin);
            kept.push(w);
            kept.len() - 1
        }
    };
    kept.swap(0, at);
    let w = &kept[0];
    out.extend_from_slice(&w.before);
    if let Some(level) = l.level {
        if !w.before.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(b"\"level\":\"");
        out.extend_from_slice(level.as_str().as_bytes());
        out.push(b'"');
    }
    // `source` is always there: `after` is never empty.
    if !w.before.is_empty() || l.level.is_some() {
        out.push(b',');
    }
    out.extend_from_slice(&w.after);
    let label_bytes: usize = [&l.app, &l.container_name, &l.host, &l.service, &l.unit]
        .into_iter()
        .map(|v| v.as_ref().map_or(0, String::len))
        .sum();
    if label_bytes > KEEP_LABEL_BYTES {
        kept.swap_remove(0);
    }
    out.extend_from_slice(b"},\"message\":");
    match std::str::from_utf8(&e.message) {
        Ok(m) => json::string(out, m),
        Err(_) => json::string(out, &String::from_utf8_lossy(&e.message)),
    }
    out.extend_from_slice(b",\"fields\":{");
}

impl LabelsWritten {
    /// Whether `l` (but its level) and `origin` are the labels kept.
    fn matches(&self, l: &Labels, origin: Origin) -> bool {
        let same = |a: &Option<String>, b: &Option<String>| match (a, b) {
            (Some(a), Some(b)) => same_bytes(a.as_bytes(), b.as_bytes()),
            (None, None) => true,
            _ => false,
        };
        let k = &self.labels;
        self.origin == Some(origin)
            && same(&k.unit, &l.unit)
            && same(&k.service, &l.service)
            && same(&k.host, &l.host)
            && same(&k.container_name, &l.container_name)
            && same(&k.app, &l.app)
    }

    /// Becomes the labels `l` (but its level) and `origin`, written.
    fn learn(&mut self, l: &Labels, origin: Origin) {
        let set = |kept: &mut Option<String>, v: &Option<String>| match (kept.as_mut(), v) {
            (Some(k), Some(v)) => {
                k.clear();
                k.push_str(v);
            }
            (_, v) => *kept = v.clone(),
        };
        set(&mut self.labels.app, &l.app);
        set(&mut self.labels.container_name, &l.container_name);
        set(&mut self.labels.host, &l.host);
        set(&mut self.labels.service, &l.service);
        set(&mut self.labels.unit, &l.unit);
        self.origin = Some(origin);
        let members = |out: &mut Vec<u8>, labels: &[(&[u8], Option<&str>, bool)]| {
            out.clear();
            for &(k, v, plain) in labels {
                if let Some(v) = v {
                    if !out.is_empty() {
                        out.push(b',');
                    }
                    out.extend_from_slice(k);
                    if plain {
                        out.push(b'"');
                        out.extend_from_slice(v.as_bytes());
                        out.push(b'"');
                    } else {
                        json::string(out, v);
                    }
                }
            }
        };
        members(
            &mut self.before,
            &[
                (b"\"app\":", l.app.as_deref(), false),
                (b"\"container_name\":", l.container_name.as_deref(), false),
                (b"\"host\":", l.host.as_deref(), false),
            ],
        );
        members(
            &mut self.after,
            &[
                (b"\"service\":", l.service.as_deref(), false),
                (b"\"source\":", Some(origin.as_str()), true),
                (b"\"unit\":", l.unit.as_deref(), false),
            ],
        );
    }
}

/// The pieces of JSON the file sink writes, as serde_json writes them (the
/// Loki sink sizes its JSON entries with the same escaping tables).
pub(crate) mod json {
    /// The two digits of 0..=99, for writing numbers two digits at a time.
    const PAIRS: [u8; 200] = {
        let mut t = [0u8; 200];
        let mut i = 0;
        while i < 100 {
            t[2 * i] = b'0' + (i / 10) as u8;
            t[2 * i + 1] = b'0' + (i % 10) as u8;
            i += 1;
        }
        t
    };

    /// `v` in decimal, four digits per 64-bit division (a timestamp has
    /// 19), each four split in two pairs with 32-bit arithmetic.
    pub fn int(out: &mut Vec<u8>, v: i64) {
        let mut digits = [0u8; 20];
        let mut n = v.unsigned_abs();
        let mut at = digits.len();
        while n >= 10_000 {
            let four = (n % 10_000) as u32;
            n /= 10_000;
            let (hi, lo) = ((four / 100) as usize * 2, (four % 100) as usize * 2);
            at -= 4;
            digits[at..at + 2].copy_from_slice(&PAIRS[hi..hi + 2]);
            digits[at + 2..at + 4].copy_from_slice(&PAIRS[lo..lo + 2]);
        }
        while n >= 100 {
            let p = (n % 100) as usize * 2;
            n /= 100;
            at -= 2;
            digits[at..at + 2].copy_from_slice(&PAIRS[p..p + 2]);
        }
        if n >= 10 {
            let p = n as usize * 2;
            at -= 2;
            digits[at..at + 2].copy_from_slice(&PAIRS[p..p + 2]);
        } else {
            at -= 1;
            digits[at] = b'0' + n as u8;
        }
        if v < 0 {
            out.push(b'-');
        }
        out.extend_from_slice(&digits[at..]);
    }

    /// The first 8 bytes of `s` (zero-padded) as a big-endian number: two
    /// of these compare as the bytes do, except that a tie says nothing.
    pub(super) fn prefix(s: &str) -> u64 {
        let b = s.as_bytes();
        match b.get(..8) {
            Some(w) => u64::from_be_bytes(w.try_into().expect("8 bytes")),
            None => {
                let mut w = [0u8; 8];
                w[..b.len()].copy_from_slice(b);
                u64::from_be_bytes(w)
            }
        }
    }

    /// What a byte becomes in a JSON string: 0 as is, `u` as `\u00XX`,
    /// else a backslash and this letter.
    pub(crate) const ESCAPE: [u8; 256] = {
        let mut t = [0u8; 256];
        let mut b = 0;
        while b < 0x20 {
            t[b] = b'u';
            b += 1;
        }
        t[0x08] = b'b';
        t[0x09] = b't';
        t[0x0a] = b'n';
        t[0x0c] = b'f';
        t[0x0d] = b'r';
        t[b'"' as usize] = b'"';
        t[b'\\' as usize] = b'\\';
        t
    };

    /// Whether any of the 8 bytes of `w` needs escaping: a control
    /// character (below 0x20), `"` or `\\`. Exact (the classic "has a byte
    /// less than n" and "has a zero byte" word tricks, which can misplace a
    /// match but never invent or miss one).
    pub(crate) fn needs_escape(w: u64) -> bool {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        let control = w.wrapping_sub(ONES * 0x20) & !w;
        let q = w ^ (ONES * u64::from(b'"'));
        let quote = q.wrapping_sub(ONES) & !q;
        let b = w ^ (ONES * u64::from(b'\\'));
        let backslash = b.wrapping_sub(ONES) & !b;
        (control | quote | backslash) & HIGH != 0
    }

    /// Whether any byte of `s` needs escaping, tested 8 bytes at a time
    /// with no byte loop: the last word of a longer string overlaps the one
    /// before it, and a string under 8 bytes is read as two overlapping
    /// halves (its first and last 4, 2 or 1 bytes; the rest of the word is
    /// filled with `a`, which needs none). Most strings of a line (labels,
    /// field names and values) are short and need no escaping: this is the
    /// whole cost of writing them, besides the copy.
    pub(crate) fn any_needs_escape(s: &[u8]) -> bool {
        const FILL: u64 = 0x6161_6161_6161_6161;
        let n = s.len();
        let w = |i: usize| u64::from_le_bytes(s[i..i + 8].try_into().expect("8 bytes"));
        let half = |i: usize, k: usize| match k {
            4 => u64::from(u32::from_le_bytes(s[i..i + 4].try_into().expect("4 bytes"))),
            2 => u64::from(u16::from_le_bytes(s[i..i + 2].try_into().expect("2 bytes"))),
            _ => u64::from(s[i]),
        };
        if n >= 8 {
            let mut i = 0;
            while i + 8 <= n {
                if needs_escape(w(i)) {
                    return true;
                }
                i += 8;
            }
            return i < n && needs_escape(w(n - 8));
        }
        let k = match n {
            0 => return false,
            1 => 1,
            2 | 3 => 2,
            _ => 4,
        };
        // Lanes 0..k hold the first k bytes, lanes 4..4+k the last k; the others are filler.
        let keep = (1u64 << (8 * k)) - 1;
        let lanes = keep | keep << 32;
        let word = half(0, k) | half(n - k, k) << 32;
        needs_escape(word | (FILL & !lanes))
    }

    /// `s` as a quoted JSON string. Nearly every string needs no escaping
    /// and is copied whole; else runs that need none are copied whole,
    /// found 8 bytes at a time.
    pub fn string(out: &mut Vec<u8>, s: &str) {
        let s = s.as_bytes();
        out.push(b'"');
        if any_needs_escape(s) {
            escaped(out, s);
        } else {
            out.extend_from_slice(s);
        }
        out.push(b'"');
    }

    fn escaped(out: &mut Vec<u8>, s: &[u8]) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut start = 0;
        let mut i = 0;
        while i < s.len() {
            if let Some(word) = s.get(i..i + 8) {
                if !needs_escape(u64::from_le_bytes(word.try_into().expect("8 bytes"))) {
                    i += 8;
                    continue;
                }
            }
            let b = s[i];
            i += 1;
            let esc = ESCAPE[b as usize];
            if esc == 0 {
                continue;
            }
            out.extend_from_slice(&s[start..i - 1]);
            if esc == b'u' {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
            } else {
                out.extend_from_slice(&[b'\\', esc]);
            }
            start = i;
        }
        out.extend_from_slice(&s[start..]);
    }
}

/// Appends `data` to the file (rotating first if it would grow too large), then fdatasyncs.
fn append(config: &Config, data: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = config.path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let current = std::fs::metadata(&config.path)
        .map(|m| m.len())
        .unwrap_or(0);
    let mut start = current;
    if current > 0 && current + data.len() as u64 > config.max_file_bytes.0 {
        rotate(&config.path, config.keep_files)?;
        start = 0;
    }
    let mut f: File = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&config.path)?;
    f.write_all(data)?;
    f.sync_data()?;
    // Synced and never read back by weir: see `pagecache`.
    crate::pagecache::drop(&f, start, None);
    Ok(())
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn rotate(path: &Path, keep: u32) -> std::io::Result<()> {
    if keep == 0 {
        return std::fs::remove_file(path);
    }
    let _ = std::fs::remove_file(rotated(path, keep));
    for n in (1..keep).rev() {
        let from = rotated(path, n);
        if from.exists() {
            std::fs::rename(&from, rotated(path, n + 1))?;
        }
    }
    std::fs::rename(path, rotated(path, 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Level, Origin};

    #[test]
    fn line_is_json_with_labels_and_lossy_message() {
        let mut e = Event::new(42, Origin::Journal, b"caf\xc3\xa9 \xff".to_vec());
        e.labels.unit = Some("cron.service".into());
        e.labels.level = Some(Level::Notice);
        e.fields.push(("_PID".into(), "7".into()));
        let mut out = Vec::new();
        write_line(&mut out, &e);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["timestamp_ns"], 42);
        assert_eq!(v["labels"]["source"], "journal");
        assert_eq!(v["labels"]["unit"], "cron.service");
        assert_eq!(v["labels"]["level"], "notice");
        assert_eq!(v["message"], "café \u{fffd}");
        assert_eq!(v["fields"]["_PID"], "7");
    }

    /// The line as serde_json wrote it through maps before `write_line`
    /// wrote it by hand: the reference the bytes must equal.
    fn serde_line(e: &Event) -> Vec<u8> {
        #[derive(Serialize)]
        struct Line<'a> {
            timestamp_ns: i64,
            labels: std::collections::BTreeMap<&'static str, &'a str>,
            message: std::borrow::Cow<'a, str>,
            fields: std::collections::BTreeMap<&'a str, &'a str>,
        }
        let line = Line {
            timestamp_ns: e.timestamp_ns,
            labels: e.labels.pairs(e.origin).collect(),
            message: String::from_utf8_lossy(&e.message),
            fields: e
                .fields
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
        };
        let mut out = serde_json::to_vec(&line).unwrap();
        out.push(b'\n');
        out
    }

    fn assert_same_line(e: &Event) {
        let mut out = b"previous line\n".to_vec();
        write_line(&mut out, e);
        let ours = String::from_utf8_lossy(&out[14..]).into_owned();
        let theirs = String::from_utf8_lossy(&serde_line(e)).into_owned();
        assert_eq!(ours, theirs, "event {e:?}");
    }

    /// Events as the journal source maps real entries (systemd service,
    /// kernel, Docker's journald driver, structured logging) and as the
    /// forward source builds Docker's: byte-identical to serde_json's line.
    #[test]
    fn lines_are_byte_identical_to_serde_json_for_real_events() {
        use crate::source::journal::mapping::Entry;
        let entries: &[&[&[u8]]] = &[
            &[
                b"MESSAGE=Accepted publickey for deploy from 203.0.113.7 port 52144 ssh2: ED25519 SHA256:x/Yz+1",
                b"PRIORITY=6",
                b"SYSLOG_IDENTIFIER=sshd",
                b"_PID=4242",
                b"_UID=0",
                b"_COMM=sshd",
                b"_EXE=/usr/sbin/sshd",
                b"_SYSTEMD_UNIT=ssh.service",
                b"_HOSTNAME=web-1",
                b"_TRANSPORT=syslog",
                b"_BOOT_ID=5e2f0a4c9d1b4b7c8e3f2a1d0c9b8a7f",
                b"SYSLOG_FACILITY=4",
            ],
            &[
                b"MESSAGE=usb 1-1: new high-speed USB device number 2 using xhci_hcd\n",
                b"PRIORITY=6",
                b"_TRANSPORT=kernel",
                b"SYSLOG_IDENTIFIER=kernel",
                b"_HOSTNAME=web-1",
            ],
            &[
                b"MESSAGE={\"level\":\"warn\",\"msg\":\"slow query\",\"path\":\"C:\\\\tmp\",\"took\":\"1.2s\"}\t\r",
                b"CONTAINER_NAME=shop-db-1",
                b"CONTAINER_ID=0123456789ab",
                b"CONTAINER_ID_FULL=0123456789abcdef0123456789abcdef",
                b"CONTAINER_TAG=0123456789ab",
                b"IMAGE_NAME=postgres:16",
                b"COM_DOCKER_COMPOSE_PROJECT=shop",
                b"COM_DOCKER_COMPOSE_SERVICE=db",
                b"_SYSTEMD_UNIT=docker.service",
                b"PRIORITY=3",
            ],
            &[
                b"MESSAGE=caf\xc3\xa9 \xff\xfe bell\x07 nul\x00 del\x7f esc\x1b[31m \xe2\x80\xa8 \xf0\x9f\xa6\x80",
                b"CODE_FILE=src/main.c",
                b"CODE_LINE=42",
                b"CODE_FUNC=main",
                b"MESSAGE_ID=fc2e22bc6ee647b6b90729ab34a250b1",
                b"ERRNO=2",
                b"X=\xfe\\\"",
                b"A_FIRST=sorted before CODE_*",
                b"_SYSTEMD_USER_UNIT=app.service",
            ],
        ];
        for items in entries {
            let mut entry = Entry::new(0);
            for item in *items {
                entry.add(item);
            }
            assert_same_line(&entry.take_event(1_700_000_000_123_456));
        }
        let mut docker = Event::new(
            1_733_530_000_987_654_321,
            Origin::Docker,
            "GET /health 200 0.3ms",
        );
        docker.labels = crate::event::Labels {
            host: Some("h1".into()),
            app: Some("shop".into()),
            service: Some("web".into()),
            container_name: Some("shop-web-1".into()),
            unit: None,
            level: Some(Level::Info),
        };
        docker.fields = vec![
            ("container_id".into(), "f00dfeed".repeat(8)),
            ("image_name".into(), "nginx:1.27".into()),
            ("com.example.team".into(), "payments".into()),
        ];
        assert_same_line(&docker);
    }

    /// Hostile shapes: every control and quote byte, keys repeated (the last
    /// value wins, as in a map), more fields than fit on the stack, empty
    /// strings, extreme timestamps.
    #[test]
    fn lines_are_byte_identical_to_serde_json_for_hostile_events() {
        let every_byte: Vec<u8> = (0..=255u8).collect();
        let ascii: String = (0..=127u8).map(char::from).collect();
        for ts in [i64::MIN, -1, 0, 9, 10, i64::MAX] {
            let mut e = Event::new(ts, Origin::Journal, every_byte.clone());
            e.labels.host = Some(ascii.clone());
            e.labels.service = Some(String::new());
            e.fields = vec![
                ("b".into(), "1".into()),
                ("a".into(), ascii.clone()),
                ("b".into(), "2".into()),
                ("".into(), "".into()),
                ("b".into(), "3".into()),
                ("é".into(), "\u{2028}\u{fffd}".into()),
                ("Z".into(), "\\\"".into()),
            ];
            assert_same_line(&e);
        }
        let mut many = Event::new(1, Origin::Docker, "");
        many.fields = (0..100)
            .map(|i| (format!("k{}", (i * 37) % 50), format!("v{i}\n")))
            .collect();
        assert_same_line(&many);
        // Keys alike in their first 8 bytes, or differing only past them
        // or by padding: ordered by all their bytes.
        let mut alike = Event::new(1, Origin::Journal, "");
        alike.fields = [
            "SYSLOG_IDENTIFIER",
            "SYSLOG_FACILITY",
            "SYSLOG_I",
            "SYSLOG_",
            "SYSLOG_I\0",
            "SYSLOG_IDENTIFIEQ",
            "SYSLOG_PID",
            "SYSLOG_I",
            "SYSLOG",
            "SYSLOG\0\0",
            "\u{fffd}",
            "\u{7f}x",
        ]
        .iter()
        .enumerate()
        .map(|(i, k)| (k.to_string(), i.to_string()))
        .collect();
        assert_same_line(&alike);
    }

    /// One writer over a run of lines whose names repeat, change order,
    /// count or spelling, repeat a key, or vanish: each line as serde_json
    /// writes it alone (the remembered names never leak into another line).
    #[test]
    fn a_writer_kept_across_lines_writes_each_as_serde_json_does() {
        let ev = |fields: &[(&str, &str)]| {
            let mut e = Event::new(7, Origin::Journal, "m");
            e.fields = fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            e
        };
        let unit = [("SYSLOG_IDENTIFIER", "sshd"), ("_PID", "1"), ("_UID", "0")];
        let lines = [
            ev(&unit),
            ev(&unit),
            ev(&[("SYSLOG_IDENTIFIER", "cron"), ("_PID", "2"), ("_UID", "0")]),
            ev(&[("_PID", "3"), ("SYSLOG_IDENTIFIER", "x"), ("_UID", "0")]),
            ev(&[("_PID", "3"), ("SYSLOG_IDENTIFIER", "x"), ("_UIE", "0")]),
            ev(&[("_PID", "3"), ("SYSLOG_IDENTIFIER", "x"), ("_UI", "0")]),
            ev(&[("_PID", "3"), ("SYSLOG_IDENTIFIER", "x")]),
            ev(&[("_PID", "3"), ("_PID", "4"), ("a\"\n", "\u{1}")]),
            ev(&[("_PID", "5"), ("_PID", "6"), ("a\"\n", "\\")]),
            ev(&[("_PID", "5"), ("_PI", "D6"), ("a\"\n", "\\")]),
            ev(&[("_PI", "D5"), ("_PID", "6"), ("a\"\n", "\\")]),
            ev(&[]),
            ev(&[]),
            ev(&[("", "")]),
            ev(&[("", "")]),
            ev(&unit),
        ];
        let mut writer = LineWriter::default();
        for e in &lines {
            let mut out = Vec::new();
            writer.write(&mut out, e);
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&serde_line(e)),
                "{e:?}"
            );
        }
        // More sequences in turn than the writer keeps (each evicts one),
        // then fewer (each found again): the six orders of three names and
        // six sets of other names, values differing each round.
        let names = ["_PID", "SYSLOG_IDENTIFIER", "_BOOT_ID"];
        let perms = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ];
        for round in 0..3 {
            for (n, p) in perms.iter().enumerate() {
                let v = format!("{round}{n}");
                let mut e = ev(&[]);
                e.fields = p
                    .iter()
                    .map(|&i| (names[i].to_owned(), v.clone()))
                    .collect();
                let mut other = e.clone();
                other.fields.push((format!("k{n}"), v.clone()));
                let seq: &[Event] = if round == 2 { &[e] } else { &[e, other] };
                for e in seq {
                    let mut out = Vec::new();
                    writer.write(&mut out, e);
                    assert_eq!(out, serde_line(e), "{e:?}");
                }
            }
        }
        // Huge names are let go after their line, and the next is still right.
        // (Names over the bound whose keys are under twice it, and both over.)
        // Likewise many fields with empty names (their names take no bytes).
        let big = "k".repeat(KEEP_NAME_BYTES + 1);
        let huge = "k".repeat(3 * KEEP_NAME_BYTES);
        let many: Vec<(&str, &str)> = vec![("", "v"); KEEP_FIELDS + 1];
        for e in [
            ev(&[(big.as_str(), "1")]),
            ev(&[(big.as_str(), "2")]),
            ev(&[(huge.as_str(), "3")]),
            ev(&many),
            ev(&unit),
        ] {
            let mut out = Vec::new();
            writer.write(&mut out, &e);
            assert!(writer
                .known
                .iter()
                .all(|o| o.names.capacity() <= KEEP_NAME_BYTES
                    && o.keys.capacity() <= 2 * KEEP_NAME_BYTES
                    && o.members.capacity() <= KEEP_FIELDS
                    && o.name_ends.capacity() <= KEEP_FIELDS));
            assert_eq!(out, serde_line(&e));
        }
    }

    /// The members written for a set of values are copied only for the
    /// same values: more sets in turn than are kept, then fewer; a value
    /// changed in any place; big values (never kept) in between.
    #[test]
    fn members_are_copied_only_for_the_same_values() {
        let names = ["_PID", "_COMM", "_UID"];
        let ev = |values: [&str; 3]| {
            let mut e = Event::new(7, Origin::Journal, "m");
            e.fields = names
                .iter()
                .zip(values)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            e
        };
        let big = "v".repeat(KEEP_WRITTEN_BYTES + 1);
        let mut lines = Vec::new();
        for round in 0..3 {
            let sets = if round == 1 {
                KEEP_WRITTEN + 2
            } else {
                KEEP_WRITTEN
            };
            for n in 0..sets {
                let pid = format!("{}", 100 + n);
                lines.push(ev([&pid, "sshd", "0"]));
                lines.push(ev([&pid, "sshd", "0"]));
                // One value changed, in each place.
                lines.push(ev([&pid, "sshd", "1"]));
                lines.push(ev([&pid, "sshe", "0"]));
                lines.push(ev(["1", "sshd", "0"]));
                lines.push(ev([&pid, "sshd", "\"\n"]));
                lines.push(ev([&pid, "sshd", &big]));
            }
        }
        let mut writer = LineWriter::default();
        for e in &lines {
            let mut out = Vec::new();
            writer.write(&mut out, e);
            assert_eq!(out, serde_line(e), "{e:?}");
            let order = &writer.known[0];
            assert!(order.written.len() <= KEEP_WRITTEN);
            assert!(order
                .written
                .iter()
                .all(|w| w.values.len() <= KEEP_WRITTEN_BYTES));
        }
        assert_eq!(writer.known[0].written.len(), KEEP_WRITTEN);
    }

    /// Big labels are written but not kept; the labels kept before stay.
    #[test]
    fn big_labels_are_not_kept() {
        let mut writer = LineWriter::default();
        let mut e = Event::new(7, Origin::Journal, "m");
        e.labels.unit = Some("cron.service".into());
        for host in ["a".to_owned(), "h".repeat(KEEP_LABEL_BYTES + 1), "b".into()] {
            e.labels.host = Some(host);
            let mut out = Vec::new();
            writer.write(&mut out, &e);
            assert_eq!(out, serde_line(&e));
        }
        let hosts: Vec<_> = writer
            .labels
            .iter()
            .map(|w| w.labels.host.clone())
            .collect();
        assert_eq!(hosts, [Some("b".to_owned()), Some("a".to_owned())]);
    }

    /// The word test agrees with the byte table for every byte at every
    /// place in a word, among neighbours that need no escaping and that do.
    #[test]
    fn word_test_finds_exactly_the_bytes_to_escape() {
        for filler in [b'a', 0xff, b'!', b'#', b'[', b']', 0x7f, 0x20, 0x00, b'"'] {
            for at in 0..8 {
                for b in 0..=255u8 {
                    let mut w = [filler; 8];
                    w[at] = b;
                    let want = w.iter().any(|&x| json::ESCAPE[x as usize] != 0);
                    assert_eq!(json::needs_escape(u64::from_le_bytes(w)), want, "{w:?}");
                }
            }
        }
    }

    /// The whole-string test agrees with the byte table for strings of
    /// every length up to 40, with every byte at every place (and at two
    /// places), among neighbours that need no escaping.
    #[test]
    fn string_test_finds_exactly_the_strings_to_escape() {
        for len in 0..40 {
            for filler in [b'a', 0xff, b'!', b'#', b']', 0x7f, 0x20] {
                assert!(
                    !json::any_needs_escape(&vec![filler; len]),
                    "{len} {filler}"
                );
                for at in 0..len {
                    for b in 0..=255u8 {
                        let mut s = vec![filler; len];
                        s[at] = b;
                        let want = json::ESCAPE[b as usize] != 0;
                        assert_eq!(json::any_needs_escape(&s), want, "{s:?}");
                        s[len - 1 - at] = b;
                        assert_eq!(json::any_needs_escape(&s), want, "{s:?}");
                    }
                }
            }
        }
    }

    /// `write_line` writes these label values without the escaping test.
    #[test]
    fn level_and_source_values_need_no_escaping() {
        for n in 0..=7 {
            let level = Level::from_syslog(n).as_str();
            assert!(!json::any_needs_escape(level.as_bytes()), "{level}");
        }
        for origin in [Origin::Docker, Origin::Journal] {
            assert!(!json::any_needs_escape(origin.as_str().as_bytes()));
        }
    }

    /// Numbers of every length and sign, as serde_json writes them.
    #[test]
    fn integers_are_written_as_serde_json_writes_them() {
        let mut cases = vec![0, i64::MIN, i64::MAX, i64::MIN + 1];
        let mut p: i64 = 1;
        for _ in 0..19 {
            for d in [-1, 0, 1] {
                cases.extend([p + d, -(p + d), 7 * p + d]);
            }
            p = p.saturating_mul(10);
        }
        for v in cases {
            let mut out = Vec::new();
            json::int(&mut out, v);
            assert_eq!(out, serde_json::to_vec(&v).unwrap(), "{v}");
        }
    }

    /// One `LineWriter` kept across `lines` (journal events with these
    /// fields) writes each as serde_json would.
    fn kept_writer_agrees_with_serde_json(
        lines: Vec<Vec<(String, String)>>,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        let mut writer = LineWriter::default();
        for fields in lines {
            let mut e = Event::new(1, Origin::Journal, "m");
            e.fields = fields;
            let mut out = Vec::new();
            writer.write(&mut out, &e);
            proptest::prop_assert_eq!(out, serde_line(&e));
        }
        Ok(())
    }

    proptest::proptest! {
        /// Arbitrary bytes and strings anywhere in an event.
        #[test]
        fn lines_are_byte_identical_to_serde_json_for_arbitrary_events(
            ts in proptest::num::i64::ANY,
            message in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            host in proptest::option::of(".{0,12}"),
            unit in proptest::option::of("[a-z\\\\\"\\x00-\\x1f]{0,8}"),
            level in proptest::option::of(0u8..8),
            fields in proptest::collection::vec(("[a-c\\x00-\\x02\"é]{0,2}", ".{0,8}"), 0..40),
        ) {
            let mut e = Event::new(ts, Origin::Journal, message);
            e.labels.host = host;
            e.labels.unit = unit;
            e.labels.level = level.map(Level::from_syslog);
            e.fields = fields;
            let mut out = Vec::new();
            write_line(&mut out, &e);
            proptest::prop_assert_eq!(out, serde_line(&e));
        }

        /// A writer kept across lines whose names and values are drawn
        /// from a few, so that whole sets of values repeat (members copied
        /// from an earlier line) or differ from a kept set in one value.
        #[test]
        fn a_kept_writer_agrees_with_serde_json_on_repeated_values(
            lines in proptest::collection::vec(
                proptest::collection::vec(("[ab]{1}", "[xy\"]{0,1}"), 0..4),
                1..60,
            ),
        ) {
            kept_writer_agrees_with_serde_json(lines)?;
        }

        /// A writer kept across lines whose labels are drawn from a few
        /// (each present or not, some needing escaping), with more sets
        /// in turn than it keeps: labels copied from an earlier line or
        /// differing from a kept set in one label, the level or the source.
        #[test]
        fn a_kept_writer_agrees_with_serde_json_on_repeated_labels(
            lines in proptest::collection::vec(
                (
                    proptest::collection::vec(proptest::option::of("[ab\"]{0,1}"), 5),
                    proptest::option::of(0u8..8),
                    proptest::bool::ANY,
                ),
                1..80,
            ),
        ) {
            let mut writer = LineWriter::default();
            for (labels, level, journal) in lines {
                let origin = if journal { Origin::Journal } else { Origin::Docker };
                let mut e = Event::new(1, origin, "m");
                let mut labels = labels.into_iter();
                let l = &mut e.labels;
                for slot in [&mut l.app, &mut l.container_name, &mut l.host, &mut l.service, &mut l.unit] {
                    *slot = labels.next().expect("5 labels");
                }
                l.level = level.map(Level::from_syslog);
                let mut out = Vec::new();
                writer.write(&mut out, &e);
                proptest::prop_assert_eq!(out, serde_line(&e));
                proptest::prop_assert!(writer.labels.len() <= KEEP_LABELS);
            }
        }

        /// A writer kept across arbitrary lines whose names are drawn from
        /// a few (so that they often repeat, in the same order or not).
        #[test]
        fn a_kept_writer_agrees_with_serde_json_on_arbitrary_runs(
            lines in proptest::collection::vec(
                proptest::collection::vec(("[ab_\"]{0,2}", ".{0,4}"), 0..5),
                1..30,
            ),
        ) {
            kept_writer_agrees_with_serde_json(lines)?;
        }
    }

    #[test]
    fn rotates_by_size_and_keeps_n() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config {
            path: dir.path().join("sub/events.ndjson"),
            max_file_bytes: ByteSize(100),
            keep_files: 2,
            max_age: HumanDuration(Duration::ZERO),
        };
        for i in 0..5u8 {
            append(&cfg, &[b'a' + i; 60]).unwrap();
        }
        let read = |p: PathBuf| std::fs::read(p).unwrap();
        assert_eq!(read(cfg.path.clone()), vec![b'e'; 60]);
        assert_eq!(read(rotated(&cfg.path, 1)), vec![b'd'; 60]);
        assert_eq!(read(rotated(&cfg.path, 2)), vec![b'c'; 60]);
        assert!(!rotated(&cfg.path, 3).exists());
    }

    #[test]
    fn prune_deletes_only_files_last_written_before_max_age() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.ndjson");
        let day = Duration::from_secs(86_400);
        let now = SystemTime::now();
        // current: written now; .1: 2 days ago; .2: 10 days ago; .4 (beyond
        // keep = 3) untouched: rotation deletes it, not retention.
        for (file, age) in [
            (path.clone(), Duration::ZERO),
            (rotated(&path, 1), 2 * day),
            (rotated(&path, 2), 10 * day),
            (rotated(&path, 4), 10 * day),
        ] {
            let f = File::create(&file).unwrap();
            f.set_modified(now - age).unwrap();
        }
        assert_eq!(prune(&path, 3, 7 * day, now).unwrap(), 1);
        assert!(path.exists());
        assert!(rotated(&path, 1).exists());
        assert!(!rotated(&path, 2).exists());
        assert!(rotated(&path, 4).exists());
        // An idle current file older than max_age goes too.
        assert_eq!(prune(&path, 3, day / 2, now + day).unwrap(), 2);
        assert!(!path.exists() && !rotated(&path, 1).exists());
    }
}
