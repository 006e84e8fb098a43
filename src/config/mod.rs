//! Configuration: TOML text -> raw serde structs -> a validated [`Config`].
//!
//! Parsing rejects unknown keys and reports the key path and line of the first
//! syntax or type error. Validation then runs every cross-field check and
//! reports all problems together, each with its key path and line, so a user
//! fixes a file in one pass. Each component declares and documents its own
//! section (`RawConfig` for what the user writes, `Config` for what the
//! program uses) next to the code that reads it; this module only composes.
//! `config/weir.toml` is the commented reference of every key.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::hostname::machine_hostname;
use crate::problems::{Problem, Problems};
use crate::{metrics, scrub, sink, source, spool};

/// Where `weir run` and `weir check-config` look when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/weir/weir.toml";

/// The configuration used when [`DEFAULT_PATH`] does not exist: the Docker
/// socket and the journal into a local NDJSON file, so that weir shows what
/// it does on a machine with no log server to point at.
pub const BUILTIN_DEFAULT: &str = r#"
state_dir = "/var/lib/weir"

[sources.docker]
type = "forward"
listen = "unix:///run/weir/forward.sock"

[sources.journal]
type = "journal"

[sinks.local]
type = "file"
path = "/var/log/weir/events.ndjson"
"#;

/// The config file as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Spool, sink cursors and the scrub key live here. Default `/var/lib/weir`.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The `host` label of Docker events. Default: this machine's host name.
    pub hostname: Option<String>,
    #[serde(default)]
    pub sources: BTreeMap<String, source::RawConfig>,
    /// Privacy rules; absent means the private defaults, not "off".
    #[serde(default)]
    pub scrub: scrub::RawConfig,
    #[serde(default)]
    pub spool: spool::RawConfig,
    #[serde(default)]
    pub sinks: BTreeMap<String, sink::RawConfig>,
    #[serde(default)]
    pub metrics: metrics::RawConfig,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/weir")
}

/// The validated configuration the rest of the program runs on.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub state_dir: PathBuf,
    pub hostname: String,
    pub sources: BTreeMap<String, source::Config>,
    pub scrub: scrub::Config,
    pub spool: spool::Config,
    pub sinks: BTreeMap<String, sink::Config>,
    pub metrics: metrics::Config,
}

/// Why a config could not be loaded. Display lists every problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {} problem(s):\n{}", .problems.len(), list(.problems))]
    Invalid {
        origin: String,
        problems: Vec<Problem>,
    },
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigError {
    /// The problems found, empty for a read error.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            ConfigError::Read { .. } => &[],
        }
    }
}

/// Where a config came from: a file, or the built-in default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    BuiltinDefault,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::BuiltinDefault => write!(f, "built-in default config"),
        }
    }
}

/// Loads the config named on the command line, or [`DEFAULT_PATH`], or, when
/// that does not exist, the built-in default.
pub fn load(explicit: Option<&Path>) -> Result<(Config, Source), ConfigError> {
    let (text, origin) = match explicit {
        Some(path) => (read(path)?, Source::File(path.to_owned())),
        None => match std::fs::read_to_string(DEFAULT_PATH) {
            Ok(text) => (text, Source::File(PathBuf::from(DEFAULT_PATH))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (BUILTIN_DEFAULT.to_owned(), Source::BuiltinDefault)
            }
            Err(e) => {
                return Err(ConfigError::Read {
                    path: PathBuf::from(DEFAULT_PATH),
                    source: e,
                })
            }
        },
    };
    let config = parse(&text, &origin.to_string())?;
    Ok((config, origin))
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Parses and validates config text; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let invalid = |problems| ConfigError::Invalid {
        origin: origin.to_owned(),
        problems,
    };
    let raw: RawConfig = match serde_path_to_error::deserialize(toml::Deserializer::new(text)) {
        Ok(raw) => raw,
        Err(e) => {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let line = inner.span().map(|s| line_of_offset(text, s.start));
            return Err(invalid(vec![Problem {
                key: if key == "." {
                    "(top level)".into()
                } else {
                    key
                },
                line,
                message: inner.message().trim().to_owned(),
            }]));
        }
    };
    let mut problems = Problems::default();
    let config = raw.validate(&mut problems);
    if problems.is_empty() {
        Ok(config)
    } else {
        let mut list = problems.into_vec();
        for p in &mut list {
            p.line = line_of_key(text, &p.key);
        }
        Err(invalid(list))
    }
}

impl RawConfig {
    /// Runs every check, recording each problem; the result is meaningful only
    /// when `problems` stays empty.
    pub fn validate(self, problems: &mut Problems) -> Config {
        if !self.state_dir.is_absolute() {
            problems.add(
                "state_dir",
                "must be an absolute path, e.g. \"/var/lib/weir\"",
            );
        }
        let hostname = match self.hostname {
            Some(h) if h.trim().is_empty() => {
                problems.add(
                    "hostname",
                    "must not be empty; remove it to use the machine's host name",
                );
                String::new()
            }
            Some(h) => h,
            None => machine_hostname(),
        };
        if self.sources.is_empty() {
            problems.add(
                "sources",
                "no source configured: add e.g. [sources.docker] with type = \"forward\"",
            );
        }
        if self.sinks.is_empty() {
            problems.add(
                "sinks",
                "no sink configured: add e.g. [sinks.local] with type = \"file\"",
            );
        }
        for name in self.sources.keys().chain(self.sinks.keys()) {
            if !valid_name(name) {
                problems.add(
                    name.clone(),
                    "names of sources and sinks may contain only letters, digits, `_` and `-`",
                );
            }
        }
        let sources = self
            .sources
            .into_iter()
            .map(|(name, raw)| {
                let key = format!("sources.{name}");
                (name, raw.validate(&key, problems))
            })
            .collect();
        let sinks = self
            .sinks
            .into_iter()
            .map(|(name, raw)| {
                let key = format!("sinks.{name}");
                (name, raw.validate(&key, problems))
            })
            .collect();
        Config {
            state_dir: self.state_dir,
            hostname,
            sources,
            scrub: self.scrub.validate("scrub", problems),
            spool: self.spool.validate("spool", problems),
            sinks,
            metrics: self.metrics.validate("metrics", problems),
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn line_of_offset(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The line where a dotted key (or, failing that, its nearest parent) is written.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut item = doc.as_item();
    let mut line = None;
    for part in key.split('.') {
        let table = item.as_table_like()?;
        let (k, next) = table.get_key_value(part)?;
        if let Some(span) = k.span() {
            line = Some(line_of_offset(text, span.start));
        }
        item = next;
    }
    line
}

#[cfg(test)]
mod tests;
