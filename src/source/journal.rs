//! systemd journal source.
//!
//! PLACEHOLDER: fixes the config and entry point; issue 5 implements it.

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Problems;
use crate::ingest::Ingest;
use crate::source::SourceError;

/// `[sources.NAME]` with `type = "journal"`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where to begin on a first start: `tail` (default), `head`, or `-1h`.
    pub start_at: Option<String>,
}

/// Validated journal source config.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub start_at: String,
}

impl RawConfig {
    pub fn validate(self, _key: &str, _problems: &mut Problems) -> Config {
        Config {
            start_at: self.start_at.unwrap_or_else(|| "tail".into()),
        }
    }
}

pub async fn start(
    _name: &str,
    _config: &Config,
    _ingest: Ingest,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, SourceError> {
    Ok(tokio::spawn(async move { shutdown.cancelled().await }))
}
