//! The spool: the write-ahead log between sources and sinks.
//!
//! PLACEHOLDER: this in-memory implementation fixes the API the rest of weir
//! uses; the durable on-disk spool (issue 3) replaces its insides.
//!
//! Offsets are logical byte positions that only grow. Sources append batches
//! (optionally with their source position, committed atomically with the
//! batch) and may wait until an offset is durable; each sink reads from its
//! own cursor and acknowledges up to an offset.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

use crate::config::{ByteSize, HumanDuration, Problems};
use crate::event::Event;

/// A logical position in the spool: bytes appended since the spool was created.
pub type Offset = u64;

/// `[spool]` as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Most bytes the spool may use on disk. Default `1GiB`.
    pub max_bytes: Option<ByteSize>,
    /// What to do when full: `drop_oldest` (default) or `block`.
    pub when_full: Option<WhenFull>,
    /// Size at which a segment file is closed and a new one started. Default `64MiB`.
    pub segment_bytes: Option<ByteSize>,
    /// Longest time appended data waits for fdatasync. Default `100ms`.
    pub fsync_interval: Option<HumanDuration>,
}

/// The spool's policy when `max_bytes` is reached or the disk is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Delete the oldest segment (counted per sink): never stalls Docker.
    DropOldest,
    /// Make sources wait: can stall Docker and the containers writing to it.
    Block,
}

/// Validated `[spool]`.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub max_bytes: ByteSize,
    pub when_full: WhenFull,
    pub segment_bytes: ByteSize,
    pub fsync_interval: HumanDuration,
}

impl RawConfig {
    pub fn validate(self, key: &str, problems: &mut Problems) -> Config {
        let c = Config {
            max_bytes: self.max_bytes.unwrap_or(ByteSize(1 << 30)),
            when_full: self.when_full.unwrap_or(WhenFull::DropOldest),
            segment_bytes: self.segment_bytes.unwrap_or(ByteSize(64 << 20)),
            fsync_interval: self
                .fsync_interval
                .unwrap_or(HumanDuration(std::time::Duration::from_millis(100))),
        };
        if c.segment_bytes.0 < 4096 {
            problems.add(format!("{key}.segment_bytes"), "must be at least 4KiB");
        }
        if c.max_bytes.0 < 2 * c.segment_bytes.0 {
            problems.add(
                format!("{key}.max_bytes"),
                format!(
                    "must be at least two segments ({}): raise it or lower segment_bytes",
                    ByteSize(2 * c.segment_bytes.0)
                ),
            );
        }
        if c.fsync_interval.0.is_zero() {
            problems.add(format!("{key}.fsync_interval"), "must be more than 0ms");
        }
        c
    }
}

/// What went wrong in the spool. No variant carries event data.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool I/O error ({what}): {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("spool is closed")]
    Closed,
}

/// A source's resume point, stored atomically with the batch it ends.
#[derive(Debug, Clone, Copy)]
pub struct SourcePosition<'a> {
    pub source: &'a str,
    pub position: &'a [u8],
}

/// Events read by a sink, and the offset to acknowledge once delivered.
#[derive(Debug)]
pub struct Batch {
    pub events: Vec<Event>,
    pub end: Offset,
}

/// The spool handle; cheap to clone.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    appended: watch::Sender<Offset>,
}

#[derive(Default)]
struct State {
    records: VecDeque<(Offset, Vec<Event>)>,
    next: Offset,
    positions: HashMap<String, Vec<u8>>,
}

impl Spool {
    /// Opens (or creates) the spool in `dir` for the named sinks.
    pub fn open(_dir: &Path, _config: &Config, _sinks: &[String]) -> Result<Spool, SpoolError> {
        let (appended, _) = watch::channel(0);
        Ok(Spool {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                appended,
            }),
        })
    }

    /// Appends one batch; returns the offset just past it. The data is not
    /// durable yet: await [`Spool::wait_durable`] for that.
    pub async fn append(
        &self,
        events: &[Event],
        position: Option<SourcePosition<'_>>,
    ) -> Result<Offset, SpoolError> {
        let mut st = self.inner.state.lock().unwrap();
        let size: u64 = events.iter().map(|e| e.approx_size() as u64).sum();
        st.next += size.max(1);
        let end = st.next;
        st.records.push_back((end, events.to_vec()));
        if let Some(p) = position {
            st.positions
                .insert(p.source.to_owned(), p.position.to_vec());
        }
        drop(st);
        self.inner.appended.send_replace(end);
        Ok(end)
    }

    /// Returns once everything up to `offset` is on disk (fdatasync'ed).
    pub async fn wait_durable(&self, _offset: Offset) -> Result<(), SpoolError> {
        Ok(())
    }

    /// The last committed position of a source, recovered from the spool.
    pub fn source_position(&self, source: &str) -> Option<Vec<u8>> {
        self.inner
            .state
            .lock()
            .unwrap()
            .positions
            .get(source)
            .cloned()
    }

    /// The read cursor of a sink.
    pub fn reader(&self, sink: &str) -> Result<Reader, SpoolError> {
        Ok(Reader {
            spool: self.clone(),
            _sink: sink.to_owned(),
            read: 0,
            appended: self.inner.appended.subscribe(),
        })
    }

    /// Flushes and fsyncs everything appended; used at shutdown.
    pub async fn sync(&self) -> Result<(), SpoolError> {
        Ok(())
    }
}

/// One sink's cursor over the spool.
pub struct Reader {
    spool: Spool,
    _sink: String,
    read: Offset,
    appended: watch::Receiver<Offset>,
}

impl Reader {
    /// Waits until there is data past this reader's read position, then returns
    /// at least one event and at most `max_events` / about `max_bytes`.
    /// Cancel-safe: dropping the future loses nothing.
    pub async fn next_batch(
        &mut self,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Batch, SpoolError> {
        loop {
            {
                let st = self.spool.inner.state.lock().unwrap();
                let mut events = Vec::new();
                let mut bytes = 0;
                let mut end = self.read;
                for (rec_end, rec) in st.records.iter().filter(|(e, _)| *e > self.read) {
                    if !events.is_empty()
                        && (events.len() + rec.len() > max_events || bytes > max_bytes)
                    {
                        break;
                    }
                    bytes += rec.iter().map(Event::approx_size).sum::<usize>();
                    events.extend(rec.iter().cloned());
                    end = *rec_end;
                }
                if end > self.read {
                    self.read = end;
                    return Ok(Batch { events, end });
                }
            }
            self.appended
                .changed()
                .await
                .map_err(|_| SpoolError::Closed)?;
        }
    }

    /// Records that everything up to `offset` was delivered.
    pub fn ack(&mut self, _offset: Offset) -> Result<(), SpoolError> {
        Ok(())
    }
}
