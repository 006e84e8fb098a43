//! Configuration: TOML text -> raw serde structs -> a validated [`Config`].
//!
//! Parsing rejects unknown keys and reports the key path and line of the first
//! syntax or type error. Validation then runs every cross-field check and
//! reports all problems together, each with its key path and line, so a user
//! fixes a file in one pass. Each component declares and documents its own
//! section (`RawConfig` for what the user writes, `Config` for what the
//! program uses) next to the code that reads it; this module only composes.
//! `config/weir.toml` is the commented reference of every key.

mod load;

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

/// Why a config could not be loaded. Display lists every problem, sorted by
/// file and line.
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

/// Where a config came from: a file (or the built-in default) and the
/// drop-ins merged over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// `None`: the built-in default, [`DEFAULT_PATH`] being absent.
    pub main: Option<PathBuf>,
    /// `conf.d/*.toml` next to the main file, in the order merged.
    pub dropins: Vec<PathBuf>,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.main {
            Some(p) => write!(f, "{}", p.display())?,
            None => write!(f, "built-in default config")?,
        }
        for d in &self.dropins {
            write!(f, " + {}", d.display())?;
        }
        Ok(())
    }
}

/// Loads the config named on the command line, or [`DEFAULT_PATH`], or, when
/// that does not exist, the built-in default; then merges the drop-ins
/// (`conf.d/*.toml` in the main file's directory) over it in name order.
pub fn load(explicit: Option<&Path>) -> Result<(Config, Source), ConfigError> {
    let main_path = explicit.unwrap_or(Path::new(DEFAULT_PATH));
    let (main, main_text) = match std::fs::read_to_string(main_path) {
        Ok(text) => (Some(main_path.to_owned()), text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {
            (None, BUILTIN_DEFAULT.to_owned())
        }
        Err(source) => {
            return Err(ConfigError::Read {
                path: main_path.to_owned(),
                source,
            })
        }
    };
    let dropins = load::dropins(main_path).map_err(|source| ConfigError::Read {
        path: main_path.with_file_name("conf.d"),
        source,
    })?;
    let origin = Source { main, dropins };
    let mut texts = vec![load::Text {
        name: origin.main.as_ref().map_or_else(
            || "built-in default config".to_owned(),
            |p| p.display().to_string(),
        ),
        text: main_text,
    }];
    for path in &origin.dropins {
        texts.push(load::Text {
            name: path.display().to_string(),
            text: read(path)?,
        });
    }
    let config = parse_texts(&texts, &origin.to_string())?;
    Ok((config, origin))
}

/// The string at dotted `key` in the files [`load`] would read, as far as
/// they parse: for `weir status`, which must find the running agent even
/// when the file on disk has since become invalid.
pub fn lenient_string(explicit: Option<&Path>, key: &str) -> Option<String> {
    let main = explicit.unwrap_or(Path::new(DEFAULT_PATH));
    let mut texts = vec![load::Text {
        name: String::new(),
        text: std::fs::read_to_string(main).unwrap_or_default(),
    }];
    for path in load::dropins(main).unwrap_or_default() {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        texts.push(load::Text {
            name: String::new(),
            text,
        });
    }
    let (table, _) = load::merge(&texts, &mut Vec::new());
    let mut value = table.get(key.split('.').next()?)?;
    for part in key.split('.').skip(1) {
        value = value.get(part)?;
    }
    value.as_str().map(str::to_owned)
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Parses and validates one config text; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let text = load::Text {
        name: origin.to_owned(),
        text: text.to_owned(),
    };
    parse_texts(&[text], origin)
}

/// Parses, merges and validates config texts, later ones over earlier ones.
fn parse_texts(texts: &[load::Text], origin: &str) -> Result<Config, ConfigError> {
    let mut problems = Vec::new();
    let (table, lines) = load::merge(texts, &mut problems);
    let config = if problems.is_empty() {
        let mut found = Problems::default();
        let (raw, complete) = sections(table, &mut found);
        let config = raw.validate(&mut found);
        problems = found.into_vec();
        if !complete {
            // "No source/sink configured" may only mean that one could
            // not be read, which is already a problem of its own.
            problems.retain(|p| p.key != "sources" && p.key != "sinks");
        }
        Some(config)
    } else {
        None
    };
    for p in &mut problems {
        lines.place(p);
    }
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => {
            // By file (in merge order), then line; keys with no line last.
            let order = |p: &Problem| {
                let file = texts
                    .iter()
                    .position(|t| p.file.as_deref() == Some(&t.name));
                (file.unwrap_or(usize::MAX), p.line.unwrap_or(usize::MAX))
            };
            problems.sort_by_key(order);
            Err(ConfigError::Invalid {
                origin: origin.to_owned(),
                problems,
            })
        }
    }
}

/// Deserializes each section on its own, so that a wrong key in one does not
/// hide the problems of the others, and each source and sink by its `type`,
/// so that a problem inside names its full key (`sinks.local.keep_files`).
/// What could not be read is left out or at its default, so that the rest is
/// still validated; `false` then says the result is incomplete.
fn sections(mut table: toml::Table, problems: &mut Problems) -> (RawConfig, bool) {
    let mut take = |key: &str| table.remove(key);
    let state_dir = take("state_dir");
    let hostname = take("hostname");
    let sources = take("sources");
    let scrub = take("scrub");
    let spool = take("spool");
    let sinks = take("sinks");
    let metrics = take("metrics");
    for key in table.keys() {
        problems.add(
            key.clone(),
            "unknown key; the top level has state_dir, hostname, [sources.NAME], [scrub], \
             [spool], [sinks.NAME] and [metrics]",
        );
    }
    let sources = named(sources, "sources", problems, |kind, key, v, p| match kind {
        "forward" => de(v, key, p).map(source::RawConfig::Forward),
        "journal" => de(v, key, p).map(source::RawConfig::Journal),
        _ => unknown_type(kind, key, "forward, journal", p),
    });
    let sinks = named(sinks, "sinks", problems, |kind, key, v, p| match kind {
        "file" => de(v, key, p).map(sink::RawConfig::File),
        "loki" => de(v, key, p).map(sink::RawConfig::Loki),
        "gelf" => de(v, key, p).map(sink::RawConfig::Gelf),
        _ => unknown_type(kind, key, "file, loki, gelf", p),
    });
    let mut complete = sources.1 && sinks.1;
    let scrub = or_default(optional(scrub, "scrub", problems), &mut complete);
    let spool = or_default(optional(spool, "spool", problems), &mut complete);
    let metrics = or_default(optional(metrics, "metrics", problems), &mut complete);
    let hostname = optional(hostname, "hostname", problems);
    let state_dir = optional(state_dir, "state_dir", problems);
    complete &= hostname.is_some() && state_dir.is_some();
    let raw = RawConfig {
        state_dir: state_dir.flatten().unwrap_or_else(default_state_dir),
        hostname: hostname.flatten(),
        sources: sources.0,
        scrub,
        spool,
        sinks: sinks.0,
        metrics,
    };
    (raw, complete)
}

/// A section as read, or its default when absent or unreadable (noted).
fn or_default<T: Default>(read: Option<Option<T>>, complete: &mut bool) -> T {
    *complete &= read.is_some();
    read.flatten().unwrap_or_default()
}

/// Reads a value that may be absent: `Some(None)` when absent.
fn optional<T: serde::de::DeserializeOwned>(
    value: Option<toml::Value>,
    key: &str,
    problems: &mut Problems,
) -> Option<Option<T>> {
    match value {
        None => Some(None),
        Some(v) => de(v, key, problems).map(Some),
    }
}

/// Reads `value` as a `T`; a problem names the full key path of what is wrong.
fn de<T: serde::de::DeserializeOwned>(
    value: toml::Value,
    key: &str,
    problems: &mut Problems,
) -> Option<T> {
    serde_path_to_error::deserialize(value)
        .map_err(|e| {
            let inner = e.path().to_string();
            let path = if inner == "." || inner.is_empty() {
                key.to_owned()
            } else {
                format!("{key}.{inner}")
            };
            problems.add(path, e.into_inner().message().trim().to_owned());
        })
        .ok()
}

/// `[sources.NAME]` or `[sinks.NAME]` tables, each read by `kind` (its
/// `type`); those that could be read, and whether that was all of them.
fn named<T>(
    value: Option<toml::Value>,
    key: &str,
    problems: &mut Problems,
    by_type: impl Fn(&str, &str, toml::Value, &mut Problems) -> Option<T>,
) -> (BTreeMap<String, T>, bool) {
    let Some(value) = value else {
        return (BTreeMap::new(), true);
    };
    let toml::Value::Table(table) = value else {
        problems.add(key, format!("must be tables, e.g. [{key}.NAME]"));
        return (BTreeMap::new(), false);
    };
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (name, value) in table {
        let key = format!("{key}.{name}");
        let toml::Value::Table(mut section) = value else {
            problems.add(key.clone(), format!("must be a table: [{key}]"));
            ok = false;
            continue;
        };
        let kind = match section.remove("type") {
            Some(toml::Value::String(kind)) => kind,
            _ => {
                problems.add(
                    key.clone(),
                    "needs `type = \"...\"` (a string) to say what it is",
                );
                ok = false;
                continue;
            }
        };
        match by_type(&kind, &key, toml::Value::Table(section), problems) {
            Some(v) => {
                out.insert(name, v);
            }
            None => ok = false,
        }
    }
    (out, ok)
}

fn unknown_type<T>(kind: &str, key: &str, known: &str, problems: &mut Problems) -> Option<T> {
    problems.add(
        format!("{key}.type"),
        format!("unknown type `{kind}`; one of: {known}"),
    );
    None
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

#[cfg(test)]
mod tests;
