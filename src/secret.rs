//! A password, token or key from the config: never printed. A leaf module.
//!
//! Every secret key `X` in the config can also be given as `X_file` (a path
//! whose content, less one trailing newline, is the secret); that, `${VAR}`
//! expansion and systemd credentials are handled once, by the config loader
//! (`config::load`), so each component only declares `Secret` fields.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A secret value; `Debug` and `Serialize` (what `check-config` prints) show
/// `<redacted>`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    /// The secret itself, for the code that sends or checks it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// The config keys that hold secrets; each also accepts `<key>_file`.
pub const KEYS: [&str; 3] = ["password", "bearer_token", "shared_key"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret("hunter2".into());
        assert_eq!(format!("{s:?}"), "\"<redacted>\"");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted>\"");
        assert_eq!(s.expose(), "hunter2");
    }
}
