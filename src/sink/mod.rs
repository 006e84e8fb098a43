//! Sinks: where events leave weir. Each sink reads the spool from its own
//! cursor, delivers, and acknowledges what its server accepted; sinks never
//! wait for each other. Every kind runs on the one delivery loop of
//! [`driver`] (batching, backoff, shutdown, metrics, acknowledgement) and
//! implements only [`driver::Sink`]: prepare a batch, deliver it, say what
//! happened.

pub mod cause;
pub mod driver;
pub mod file;
pub mod gelf;
pub mod http_client;
pub mod loki;

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
