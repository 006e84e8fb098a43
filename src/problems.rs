//! Problems found in a config file, collected so that all are reported at once.
//! A leaf module: components validate their own sections with it, and it
//! imports nothing of weir's.

use std::fmt;

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file the key is written in, when known.
    pub file: Option<String>,
    /// Dotted key path, e.g. `sinks.loki.max_push_bytes`.
    pub key: String,
    /// 1-based line of the key in the file, when it appears there.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}: ")?;
        }
        match self.line {
            Some(line) => write!(f, "line {line}: `{}`: {}", self.key, self.message),
            None => write!(f, "`{}`: {}", self.key, self.message),
        }
    }
}

/// Collects validation problems so that all are reported at once.
#[derive(Debug, Default)]
pub struct Problems(Vec<Problem>);

impl Problems {
    /// Records that `key` is wrong; `message` says why and what to write instead.
    pub fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            file: None,
            key: key.into(),
            line: None,
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The problems recorded, in the order they were added.
    pub fn into_vec(self) -> Vec<Problem> {
        self.0
    }
}
