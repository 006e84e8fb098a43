//! File sink: newline-delimited JSON, rotated by size.
//!
//! One line per event:
//! `{"timestamp_ns":…,"labels":{"host":…,"source":…,…},"message":"…","fields":{…}}`.
//! The message is written as UTF-8 (invalid bytes replaced by U+FFFD). A batch
//! is written, flushed and fdatasync'ed before it is acknowledged, so the file
//! holds everything acknowledged even after a power loss. When the file would
//! pass `max_file_bytes` it is renamed to `PATH.1` (older ones shift to `.2`,
//! ...; beyond `keep_files` they are deleted) and a new file is started.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::event::Event;
use crate::metrics;
use crate::problems::Problems;
use crate::sink::retry::Backoff;
use crate::spool;
use crate::units::ByteSize;

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
}

/// The most rotated files a file sink keeps.
const MAX_KEEP_FILES: u32 = 10_000;

/// Validated file sink config.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub path: PathBuf,
    pub max_file_bytes: ByteSize,
    pub keep_files: u32,
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
        }
    }
}

/// Events per spool read; a batch is one write + one fdatasync.
const BATCH_EVENTS: usize = 10_000;
const BATCH_BYTES: usize = 4 << 20;

/// Delivers from `reader` to the file until `shutdown`.
pub async fn run(
    name: String,
    config: Config,
    mut reader: spool::Reader,
    shutdown: CancellationToken,
) {
    let sent = metrics::counter(
        "weir_sink_events_sent_total",
        "Events a sink delivered and acknowledged.",
        &[("sink", &name)],
    );
    let bytes = metrics::counter(
        "weir_sink_bytes_sent_total",
        "Bytes a sink delivered.",
        &[("sink", &name)],
    );
    let errors = metrics::counter(
        "weir_sink_errors_total",
        "Failed delivery attempts, by sink and reason.",
        &[("sink", &name), ("reason", "io")],
    );
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        let Some(batch) = crate::sink::next_batch_or_stop(
            &name,
            &mut reader,
            &shutdown,
            BATCH_EVENTS,
            BATCH_BYTES,
        )
        .await
        else {
            return;
        };
        let mut buf = Vec::with_capacity(batch.events.len() * 200);
        for e in &batch.events {
            write_line(&mut buf, e);
        }
        // Retry until written: the spool holds the data meanwhile.
        loop {
            let cfg = config.clone();
            let data = std::mem::take(&mut buf);
            let (res, data) = tokio::task::spawn_blocking(move || {
                let r = append(&cfg, &data);
                (r, data)
            })
            .await
            .expect("file write task panicked");
            buf = data;
            match res {
                Ok(()) => break,
                Err(e) => {
                    errors.inc();
                    let delay = backoff.next_delay();
                    tracing::warn!(sink = %name, path = %config.path.display(), error = %e, retry_in_ms = delay.as_millis() as u64, "cannot write the file sink; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        backoff.reset();
        sent.add(batch.events.len() as u64);
        bytes.add(buf.len() as u64);
        if let Err(e) = reader.ack(batch.end) {
            tracing::error!(sink = %name, error = %e, "cannot acknowledge in the spool; file sink stops");
            return;
        }
    }
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
}
