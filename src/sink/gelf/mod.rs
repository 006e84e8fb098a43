//! gelf sink.
//!
//! PLACEHOLDER: fixes the config and entry point; its issue implements it.

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::Problems;
use crate::spool;

/// `[sinks.NAME]` with `type = "gelf"`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `udp://host:port`, `tcp://host:port` or `tls://host:port`.
    pub address: String,
}

/// Validated gelf sink config.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub address: String,
}

impl RawConfig {
    pub fn validate(self, _key: &str, _problems: &mut Problems) -> Config {
        Config {
            address: self.address,
        }
    }
}

pub async fn run(
    _name: String,
    _config: Config,
    _reader: spool::Reader,
    shutdown: CancellationToken,
) {
    shutdown.cancelled().await
}
