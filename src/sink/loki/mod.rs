//! loki sink.
//!
//! PLACEHOLDER: fixes the config and entry point; its issue implements it.

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::Problems;
use crate::spool;

/// `[sinks.NAME]` with `type = "loki"`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Push URL, e.g. `https://loki.example.org/loki/api/v1/push`.
    pub url: String,
}

/// Validated loki sink config.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub url: String,
}

impl RawConfig {
    pub fn validate(self, _key: &str, _problems: &mut Problems) -> Config {
        Config { url: self.url }
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
