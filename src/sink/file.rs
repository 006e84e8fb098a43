//! File sink: newline-delimited JSON, rotated by size.
//!
//! One line per event:
//! `{"timestamp_ns":…,"labels":{"host":…,"source":…,…},"message":"…","fields":{…}}`.
//! The message is written as UTF-8 (invalid bytes replaced by U+FFFD). A batch
//! is written, flushed and fdatasync'ed before it is acknowledged, so the file
//! holds everything acknowledged even after a power loss. When the file would
//! pass `max_file_bytes` it is renamed to `PATH.1` (older ones shift to `.2`,
//! ...; beyond `keep_files` they are deleted) and a new file is started.
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

use crate::event::Event;
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
        }
    }

    fn begin(&mut self, events: Vec<Event>) -> driver::Prepared {
        self.buf.clear();
        for e in &events {
            write_line(&mut self.buf, e);
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

/// Appends one JSON line for `e` to `out`.
pub fn write_line(out: &mut Vec<u8>, e: &Event) {
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
    serde_json::to_writer(&mut *out, &line).expect("serialising to a Vec cannot fail");
    out.push(b'\n');
}

/// Appends `data` to the file (rotating first if it would grow too large), then fdatasyncs.
fn append(config: &Config, data: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = config.path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let current = std::fs::metadata(&config.path)
        .map(|m| m.len())
        .unwrap_or(0);
    if current > 0 && current + data.len() as u64 > config.max_file_bytes.0 {
        rotate(&config.path, config.keep_files)?;
    }
    let mut f: File = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&config.path)?;
    f.write_all(data)?;
    f.sync_data()
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
