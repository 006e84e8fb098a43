//! Sinks: where events leave weir. Each sink reads the spool from its own
//! cursor, delivers, and acknowledges what its server accepted; sinks never
//! wait for each other.

pub mod file;
pub mod gelf;
pub mod loki;
pub mod retry;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::problems::Problems;
use crate::spool;

/// A `[sinks.NAME]` section as written; `type` selects the kind.
// Config is built once at start: variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RawConfig {
    /// Newline-delimited JSON in a local file, rotated by size.
    File(file::RawConfig),
    /// Grafana Loki's push API.
    Loki(loki::RawConfig),
    /// GELF over UDP, TCP or TLS (Graylog).
    Gelf(gelf::RawConfig),
}

/// A validated sink section.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Config {
    File(file::Config),
    Loki(loki::Config),
    Gelf(gelf::Config),
}

impl RawConfig {
    pub fn validate(self, key: &str, problems: &mut Problems) -> Config {
        match self {
            RawConfig::File(raw) => Config::File(raw.validate(key, problems)),
            RawConfig::Loki(raw) => Config::Loki(raw.validate(key, problems)),
            RawConfig::Gelf(raw) => Config::Gelf(raw.validate(key, problems)),
        }
    }
}

/// The next batch from the spool for sinks that deliver what one read
/// returns: `None` when `shutdown` is cancelled, or when the spool cannot be
/// read (logged once: the sink then stops, and its data stays spooled).
pub async fn next_batch_or_stop(
    name: &str,
    reader: &mut spool::Reader,
    shutdown: &CancellationToken,
    max_events: usize,
    max_bytes: usize,
) -> Option<spool::Batch> {
    let batch = tokio::select! {
        _ = shutdown.cancelled() => return None,
        b = reader.next_batch(max_events, max_bytes) => b,
    };
    match batch {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::error!(sink = %name, error = %e, "cannot read the spool; the sink stops");
            None
        }
    }
}

/// Spawns a sink's delivery loop on its spool reader. The loop delivers until
/// `shutdown` is cancelled; it then stops at once, leaving what it had not
/// acknowledged in the spool for the next start.
pub fn spawn(
    name: &str,
    config: &Config,
    reader: spool::Reader,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let name = name.to_owned();
    match config.clone() {
        Config::File(c) => tokio::spawn(file::run(name, c, reader, shutdown)),
        Config::Loki(c) => tokio::spawn(loki::run(name, c, reader, shutdown)),
        Config::Gelf(c) => tokio::spawn(gelf::run(name, c, reader, shutdown)),
    }
}
