//! Fluentd Forward protocol source (Docker's `fluentd` log driver).
//!
//! PLACEHOLDER: fixes the config and entry point; issue 4 implements it.

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Problems;
use crate::ingest::Ingest;
use crate::source::SourceError;

/// `[sources.NAME]` with `type = "forward"`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `unix:///path` or `tcp://host:port`. Default `unix:///run/weir/forward.sock`.
    pub listen: Option<String>,
}

/// Validated forward source config.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub listen: String,
}

impl RawConfig {
    pub fn validate(self, key: &str, problems: &mut Problems) -> Config {
        let listen = self
            .listen
            .unwrap_or_else(|| "unix:///run/weir/forward.sock".into());
        if !(listen.starts_with("unix://") || listen.starts_with("tcp://")) {
            problems.add(
                format!("{key}.listen"),
                "must be unix:///path/to.sock or tcp://host:port",
            );
        }
        Config { listen }
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
