//! Sources: where events enter weir. Each hands its events to [`Ingest`],
//! which scrubs them and appends them to the spool.

pub mod forward;
pub mod journal;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::ingest::Ingest;
use crate::problems::Problems;

/// A `[sources.NAME]` section as written; `type` selects the kind.
// Built once at startup: the size difference between kinds does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RawConfig {
    /// Fluentd Forward protocol, what Docker's `fluentd` log driver speaks.
    Forward(forward::RawConfig),
    /// The systemd journal.
    Journal(journal::RawConfig),
}

/// A validated source section.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Config {
    Forward(forward::Config),
    Journal(journal::Config),
}

impl RawConfig {
    pub fn validate(self, key: &str, problems: &mut Problems) -> Config {
        match self {
            RawConfig::Forward(raw) => Config::Forward(raw.validate(key, problems)),
            RawConfig::Journal(raw) => Config::Journal(raw.validate(key, problems)),
        }
    }
}

/// Why a source could not start. Carries no payload: only names, paths and OS errors.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "source `{name}`: {what}: {source}; check the path and permissions, or stop what holds it"
    )]
    Io {
        name: String,
        what: String,
        source: std::io::Error,
    },
    #[error("source `{name}`: {0}", .reason)]
    Setup { name: String, reason: String },
}

/// Starts a source: binds or opens what it reads (so that readiness can be
/// announced after every source is listening) and spawns its loop, which ends
/// when `shutdown` is cancelled.
pub async fn start(
    name: &str,
    config: &Config,
    ingest: Ingest,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, SourceError> {
    match config {
        Config::Forward(c) => forward::start(name, c, ingest, shutdown).await,
        Config::Journal(c) => journal::start(name, c, ingest, shutdown).await,
    }
}
