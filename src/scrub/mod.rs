//! Privacy scrubber: rewrites IP addresses and logins before the spool write.
//!
//! PLACEHOLDER: fixes the API; issue 6 implements detection and rewriting.

use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::config::Problems;
use crate::event::Event;

/// `[scrub]` as written. An absent section means the private defaults.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {}

/// Validated `[scrub]`.
#[derive(Debug, Clone, Serialize)]
pub struct Config {}

impl RawConfig {
    pub fn validate(self, _key: &str, _problems: &mut Problems) -> Config {
        Config {}
    }
}

/// Why the scrubber could not start (its key file).
#[derive(Debug, thiserror::Error)]
#[error("scrub key {path}: {source}")]
pub struct ScrubError {
    pub path: String,
    pub source: std::io::Error,
}

/// Applies the configured rules to events. Shared by every source.
pub struct Scrubber {}

impl Scrubber {
    /// Builds the scrubber, creating its hash key in `state_dir` at first start.
    pub fn new(_config: &Config, _state_dir: &Path) -> Result<Scrubber, ScrubError> {
        Ok(Scrubber {})
    }

    /// Rewrites personal data in the message and chosen fields in place.
    pub fn scrub(&self, _event: &mut Event) {}
}
