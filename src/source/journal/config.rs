//! `[sources.NAME]` with `type = "journal"`: what the user writes and what the
//! reader runs on. `config/weir.toml` shows every key with its default.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::event::Level;
use crate::problems::Problems;
use crate::units::HumanDuration;

/// How far back a first start (no committed cursor) reaches by default.
/// One day: a restarted host's morning is there, a month of history is not
/// pushed at a server that would reject most of it as too old (Loki's default
/// `reject_old_samples_max_age` is one week).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(86_400);

/// `[sources.NAME]` with `type = "journal"`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where a first start (no committed cursor) begins: `"tail"` (default:
    /// only entries written from now on), `"head"` (the oldest entry, bounded
    /// by `max_age`), or a negative duration such as `"-1h"`.
    pub start_at: Option<String>,
    /// A first start never reaches further back than this: `"1d"` (default),
    /// any duration, or `"off"`. Resuming from a committed cursor ignores it.
    pub max_age: Option<String>,
    /// Read the journal files of this directory instead of the system journal.
    pub directory: Option<PathBuf>,
    /// Read this journald namespace (`systemd-journald@NAME`) instead of the
    /// default one.
    pub namespace: Option<String>,
    /// Only these units (`_SYSTEMD_UNIT`); `"nginx"` means `nginx.service`.
    #[serde(default)]
    pub units: Vec<String>,
    /// Never these units.
    #[serde(default)]
    pub exclude_units: Vec<String>,
    /// Only these `SYSLOG_IDENTIFIER`s.
    #[serde(default)]
    pub identifiers: Vec<String>,
    /// Never these `SYSLOG_IDENTIFIER`s.
    #[serde(default)]
    pub exclude_identifiers: Vec<String>,
    /// Only entries at least this severe: `"warning"`, `"err"`, `"3"`, ...
    pub max_priority: Option<String>,
}

/// Where a first start begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Tail,
    Head,
    /// This long before now.
    Ago(Duration),
}

impl fmt::Display for StartAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartAt::Tail => f.write_str("tail"),
            StartAt::Head => f.write_str("head"),
            StartAt::Ago(d) => write!(f, "-{}", HumanDuration(*d)),
        }
    }
}

impl Serialize for StartAt {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl StartAt {
    pub fn parse(s: &str) -> Result<StartAt, String> {
        match s.trim() {
            "tail" => Ok(StartAt::Tail),
            "head" => Ok(StartAt::Head),
            s => match s.strip_prefix('-').map(HumanDuration::parse) {
                Some(Ok(d)) if !d.0.is_zero() => Ok(StartAt::Ago(d.0)),
                _ => Err(format!(
                    "`{s}` is not a start point: write \"tail\", \"head\" or a negative duration such as \"-1h\""
                )),
            },
        }
    }
}

/// The first-start age limit; `None` is `"off"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxAge(pub Option<Duration>);

impl fmt::Display for MaxAge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("off"),
            Some(d) => write!(f, "{}", HumanDuration(d)),
        }
    }
}

impl Serialize for MaxAge {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Which journal to open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalSet {
    /// The default namespace: system and user journals of this machine.
    System,
    Directory(PathBuf),
    Namespace(String),
}

/// Validated journal source config.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub start_at: StartAt,
    pub max_age: MaxAge,
    /// Printed as the `directory` or `namespace` key it was written as (or
    /// none), so that `check-config`'s output is valid input.
    #[serde(flatten, serialize_with = "journal_keys")]
    pub journal: JournalSet,
    pub units: Vec<String>,
    pub exclude_units: Vec<String>,
    pub identifiers: Vec<String>,
    pub exclude_identifiers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "level_name")]
    pub max_priority: Option<Level>,
}

fn journal_keys<S: serde::Serializer>(j: &JournalSet, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(None)?;
    match j {
        JournalSet::System => {}
        JournalSet::Directory(d) => m.serialize_entry("directory", d)?,
        JournalSet::Namespace(n) => m.serialize_entry("namespace", n)?,
    }
    m.end()
}

fn level_name<S: serde::Serializer>(l: &Option<Level>, s: S) -> Result<S::Ok, S::Error> {
    match l {
        Some(l) => s.serialize_str(l.as_str()),
        None => s.serialize_none(),
    }
}

impl Default for Config {
    /// The system journal from its tail, no filters.
    fn default() -> Config {
        Config {
            start_at: StartAt::Tail,
            max_age: MaxAge(Some(DEFAULT_MAX_AGE)),
            journal: JournalSet::System,
            units: Vec::new(),
            exclude_units: Vec::new(),
            identifiers: Vec::new(),
            exclude_identifiers: Vec::new(),
            max_priority: None,
        }
    }
}

impl RawConfig {
    pub fn validate(self, key: &str, problems: &mut Problems) -> Config {
        let mut c = Config::default();
        if let Some(s) = self.start_at {
            match StartAt::parse(&s) {
                Ok(v) => c.start_at = v,
                Err(e) => problems.add(format!("{key}.start_at"), e),
            }
        }
        if let Some(s) = self.max_age {
            if s.trim() == "off" {
                c.max_age = MaxAge(None);
            } else {
                match HumanDuration::parse(&s) {
                    Ok(d) if !d.0.is_zero() => c.max_age = MaxAge(Some(d.0)),
                    _ => problems.add(
                        format!("{key}.max_age"),
                        format!("`{s}` is not an age: write a duration such as \"1d\" or \"off\""),
                    ),
                }
            }
        }
        c.journal = match (self.directory, self.namespace) {
            (Some(_), Some(_)) => {
                problems.add(
                    format!("{key}.namespace"),
                    "set `directory` or `namespace`, not both",
                );
                JournalSet::System
            }
            (Some(dir), None) => {
                if !dir.is_absolute() {
                    problems.add(
                        format!("{key}.directory"),
                        "must be an absolute path, e.g. \"/var/log/journal/<machine-id>\"",
                    );
                }
                JournalSet::Directory(dir)
            }
            (None, Some(ns)) => {
                if !valid_namespace(&ns) {
                    problems.add(
                        format!("{key}.namespace"),
                        "a journal namespace is 1-64 letters, digits, `_`, `-` or `.`",
                    );
                }
                JournalSet::Namespace(ns)
            }
            (None, None) => JournalSet::System,
        };
        c.units = units(key, "units", self.units, problems);
        c.exclude_units = units(key, "exclude_units", self.exclude_units, problems);
        c.identifiers = names(key, "identifiers", self.identifiers, problems);
        c.exclude_identifiers = names(
            key,
            "exclude_identifiers",
            self.exclude_identifiers,
            problems,
        );
        if let Some(p) = self.max_priority {
            match Level::parse(p.trim()) {
                Some(l) => c.max_priority = Some(l),
                None => problems.add(
                    format!("{key}.max_priority"),
                    format!("`{p}` is not a syslog priority: write 0-7 or emerg, alert, crit, err, warning, notice, info, debug"),
                ),
            }
        }
        c
    }
}

fn valid_namespace(ns: &str) -> bool {
    (1..=64).contains(&ns.len())
        && ns
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Unit names as systemd writes them in `_SYSTEMD_UNIT`: a bare name is a service.
fn units(key: &str, field: &str, list: Vec<String>, problems: &mut Problems) -> Vec<String> {
    names(key, field, list, problems)
        .into_iter()
        .map(|u| if u.contains('.') { u } else { u + ".service" })
        .collect()
}

fn names(key: &str, field: &str, list: Vec<String>, problems: &mut Problems) -> Vec<String> {
    if list.iter().any(|s| s.trim().is_empty() || s.contains('=')) {
        problems.add(
            format!("{key}.{field}"),
            "names must be non-empty and contain no `=`",
        );
    }
    list.into_iter().map(|s| s.trim().to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(toml_text: &str) -> RawConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn defaults_are_tail_one_day_system() {
        let mut p = Problems::default();
        let c = raw("").validate("sources.j", &mut p);
        assert!(p.is_empty());
        assert_eq!(c.start_at, StartAt::Tail);
        assert_eq!(c.max_age, MaxAge(Some(DEFAULT_MAX_AGE)));
        assert_eq!(c.journal, JournalSet::System);
    }

    #[test]
    fn parses_every_key() {
        let mut p = Problems::default();
        let c = raw(r#"
            start_at = "-90m"
            max_age = "off"
            namespace = "apps"
            units = ["nginx", "cron.timer"]
            exclude_identifiers = ["noisy"]
            max_priority = "warning"
        "#)
        .validate("sources.j", &mut p);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(c.start_at, StartAt::Ago(Duration::from_secs(5400)));
        assert_eq!(c.start_at.to_string(), "-90m");
        assert_eq!(c.max_age, MaxAge(None));
        assert_eq!(c.journal, JournalSet::Namespace("apps".into()));
        assert_eq!(c.units, ["nginx.service", "cron.timer"]);
        assert_eq!(c.exclude_identifiers, ["noisy"]);
        assert_eq!(c.max_priority, Some(Level::Warning));
    }

    #[test]
    fn reports_every_bad_key() {
        let mut p = Problems::default();
        raw(r#"
            start_at = "yesterday"
            max_age = "0s"
            directory = "rel"
            namespace = "a/b"
            units = [""]
            max_priority = "loud"
        "#)
        .validate("sources.j", &mut p);
        let text = format!("{p:?}");
        for key in ["start_at", "max_age", "namespace", "units", "max_priority"] {
            assert!(text.contains(&format!("sources.j.{key}")), "{key}: {text}");
        }
    }
}
