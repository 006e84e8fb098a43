//! `[scrub]`: what the user writes ([`RawConfig`]) and what the scrubber runs on
//! ([`Config`]). Every key is optional; an absent section is the private default.

use serde::{Deserialize, Serialize};

use crate::problems::Problems;
use crate::units::HumanDuration;

/// What happens to a detected item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Addresses only: zero the host bits (`203.0.113.7` -> `203.0.113.0`).
    Truncate,
    /// A keyed, stable pseudonym (`u:3f9a2b1c5d`, `ip4:...`, `ip6:...`).
    Hash,
    /// The fixed `mask_token`.
    Mask,
    /// Leave it as written: privacy off for this kind, explicitly.
    Keep,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Truncate => "truncate",
            Action::Hash => "hash",
            Action::Mask => "mask",
            Action::Keep => "keep",
        }
    }
}

/// `[scrub]` as written. An absent section means the private defaults:
/// IPv4 truncated to /24, IPv6 to /48, logins hashed, every field scrubbed.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// IPv4 addresses: `truncate` (default), `hash`, `mask` or `keep`.
    pub ipv4: Option<Action>,
    /// IPv6 addresses: `truncate` (default), `hash`, `mask` or `keep`.
    /// IPv4-mapped addresses (`::ffff:192.0.2.1`) follow `ipv4` instead.
    pub ipv6: Option<Action>,
    /// Logins, user names, e-mail addresses: `hash` (default), `mask` or
    /// `keep`. Passwords in URL userinfo are masked unless this is `keep`.
    pub logins: Option<Action>,
    /// Bits of an IPv4 address kept by `truncate`, 0..=32. Default 24.
    pub ipv4_prefix: Option<u8>,
    /// Bits of an IPv6 address kept by `truncate`, 0..=128. Default 48.
    pub ipv6_prefix: Option<u8>,
    /// What `mask` writes. Default `REDACTED`. It must start with a letter
    /// g-z (not a hex digit) and end with a letter, and may not contain
    /// digits, whitespace, or any of `: @ = " ' \`: so it is never detected
    /// again and does not "unglue" its neighbours (scrubbing stays idempotent).
    pub mask_token: Option<String>,
    /// Change the hash key every period (e.g. `"30d"`): the same login gets
    /// the same pseudonym within a period, a different one in the next. The
    /// period is chosen by the event's timestamp. Default: never rotate.
    pub hash_rotation: Option<HumanDuration>,
    /// Event fields scrubbed besides the message: names, or `"*"` for all
    /// (default). A field whose name says it holds a login (`user`,
    /// `REMOTE_USER`, `user.name`, `email`, ...) is a login as a whole.
    pub fields: Option<Vec<String>>,
    /// A dotted quad right after `version`, `ver`, `v`, `release`, `build`
    /// (then ` `, `=`, `:` or `/`) or a product token such as `Chrome/` or
    /// `Nextcloud ` is a version, and one starting `0.`, `1.` or `2.` on a
    /// line naming OIDs is an OID (`ipv4::is_oid`), not an address. Default
    /// true; false scrubs those too.
    pub keep_versions: Option<bool>,
    /// Which addresses are personal: `"public"` (default) rewrites only
    /// addresses that can name a person's connection and keeps the
    /// infrastructure's byte for byte: loopback, unspecified, RFC 1918,
    /// CGNAT 100.64/10, ULA fc00::/7, link-local, multicast, broadcast.
    /// `"all"` rewrites every address.
    pub addresses: Option<Addresses>,
    /// Accounts that are not people and are kept as written, besides the
    /// built-in system accounts (root, daemon, nobody, www-data, postgres,
    /// git, systemd-*, ...) and every account of `/etc/passwd` with a UID
    /// below 1000. E.g. `["deploy", "backup"]`.
    pub keep_accounts: Option<Vec<String>>,
    /// Credentials: values of password/secret/token/api_key keys,
    /// Authorization headers, URL and DSN passwords, `-u user:pass`, PEM
    /// private-key blocks. `mask` (default), `hash` or `keep`.
    pub secrets: Option<Action>,
    /// Extra rules, applied after the built-in detectors.
    #[serde(default)]
    pub rules: Vec<RawRule>,
}

/// One `[[scrub.rules]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Names the rule in metrics (`kind` label) and its pseudonyms
    /// (`NAME:3f9a2b1c5d`): lower-case letters, digits and `_`.
    pub name: String,
    /// A regular expression (Rust `regex` syntax). With a capture group, only
    /// the first group is rewritten; without, the whole match.
    pub pattern: String,
    /// `hash` or `mask`.
    pub action: Action,
}

/// Validated `[scrub]`.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub ipv4: Action,
    pub ipv6: Action,
    pub logins: Action,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    pub mask_token: String,
    pub hash_rotation: Option<HumanDuration>,
    /// Field names; `"*"` means every field.
    pub fields: Vec<String>,
    pub keep_versions: bool,
    pub addresses: Addresses,
    pub keep_accounts: Vec<String>,
    pub secrets: Action,
    pub rules: Vec<Rule>,
}

/// Which addresses the `ipv4` and `ipv6` actions apply to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Addresses {
    /// Public addresses only: the infrastructure's are kept.
    Public,
    /// Every address.
    All,
}

/// A validated extra rule (the regex compiles).
#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    pub name: String,
    pub pattern: String,
    pub action: Action,
}

/// The token `mask` writes when none is configured.
pub const DEFAULT_MASK: &str = "REDACTED";

impl Default for Config {
    fn default() -> Config {
        RawConfig::default().validate("scrub", &mut Problems::default())
    }
}

impl RawConfig {
    pub fn validate(self, key: &str, problems: &mut Problems) -> Config {
        let ipv4 = self.ipv4.unwrap_or(Action::Truncate);
        let ipv6 = self.ipv6.unwrap_or(Action::Truncate);
        let logins = self.logins.unwrap_or(Action::Hash);
        if logins == Action::Truncate {
            problems.add(
                format!("{key}.logins"),
                "a login cannot be truncated: use \"hash\", \"mask\" or \"keep\"",
            );
        }
        let ipv4_prefix = self.ipv4_prefix.unwrap_or(24);
        if ipv4_prefix > 32 {
            problems.add(format!("{key}.ipv4_prefix"), "must be 0..=32, e.g. 24");
        }
        let ipv6_prefix = self.ipv6_prefix.unwrap_or(48);
        if ipv6_prefix > 128 {
            problems.add(format!("{key}.ipv6_prefix"), "must be 0..=128, e.g. 48");
        }
        let mask_token = self.mask_token.unwrap_or_else(|| DEFAULT_MASK.to_owned());
        if let Err(why) = check_mask(&mask_token) {
            problems.add(format!("{key}.mask_token"), why);
        }
        if let Some(r) = self.hash_rotation {
            if r.get().as_secs() == 0 {
                problems.add(
                    format!("{key}.hash_rotation"),
                    "must be at least 1s; remove it to never rotate, or write e.g. \"30d\"",
                );
            }
        }
        let fields = self.fields.unwrap_or_else(|| vec!["*".to_owned()]);
        if fields.iter().any(|f| f.is_empty()) {
            problems.add(
                format!("{key}.fields"),
                "field names must not be empty; use \"*\" for every field or [] for none",
            );
        }
        let secrets = self.secrets.unwrap_or(Action::Mask);
        if secrets == Action::Truncate {
            problems.add(
                format!("{key}.secrets"),
                "a credential cannot be truncated: use \"mask\", \"hash\" or \"keep\"",
            );
        }
        let keep_accounts = self.keep_accounts.unwrap_or_default();
        if keep_accounts
            .iter()
            .any(|a| a.is_empty() || a.contains(char::is_whitespace))
        {
            problems.add(
                format!("{key}.keep_accounts"),
                "account names must be non-empty and without spaces, e.g. [\"deploy\"]",
            );
        }
        let mut rules = Vec::with_capacity(self.rules.len());
        for (n, raw) in self.rules.into_iter().enumerate() {
            let at = format!("{key}.rules[{n}]");
            if !valid_rule_name(&raw.name) {
                problems.add(
                    format!("{at}.name"),
                    "must be 1-32 lower-case letters, digits or `_`, e.g. \"session_id\"",
                );
            }
            if !matches!(raw.action, Action::Hash | Action::Mask) {
                problems.add(
                    format!("{at}.action"),
                    "a rule's action is \"hash\" or \"mask\"",
                );
            }
            if let Err(e) = regex::bytes::Regex::new(&raw.pattern) {
                problems.add(format!("{at}.pattern"), format!("not a valid regex: {e}"));
            }
            rules.push(Rule {
                name: raw.name,
                pattern: raw.pattern,
                action: raw.action,
            });
        }
        Config {
            ipv4,
            ipv6,
            logins,
            ipv4_prefix: ipv4_prefix.min(32),
            ipv6_prefix: ipv6_prefix.min(128),
            mask_token,
            hash_rotation: self.hash_rotation,
            fields,
            keep_versions: self.keep_versions.unwrap_or(true),
            addresses: self.addresses.unwrap_or(Addresses::Public),
            keep_accounts,
            secrets,
            rules,
        }
    }
}

/// A mask token must never look like something the scrubber detects, or
/// scrubbing twice would differ from scrubbing once. Its edges are letters
/// because detectors reject candidates glued to a letter or digit
/// (`1000::erin@example.com` holds no address): an edge such as `[` would
/// unglue such a neighbour and let the second pass find what the first did not.
fn check_mask(token: &str) -> Result<(), &'static str> {
    if token.is_empty() || token.len() > 64 {
        return Err("must be 1 to 64 bytes, e.g. \"REDACTED\"");
    }
    if token == "-" {
        return Err("`-` means \"no value\" in access logs; choose e.g. \"REDACTED\"");
    }
    let bad = |c: char| {
        c.is_ascii_digit() || c.is_whitespace() || matches!(c, ':' | '@' | '=' | '"' | '\'' | '\\')
    };
    let b = token.as_bytes();
    let edge_ok = matches!(b[0], b'g'..=b'z' | b'G'..=b'Z') && b[b.len() - 1].is_ascii_alphabetic();
    if !edge_ok {
        return Err("must start with a letter g-z (not a hex digit) and end with a letter, e.g. \"REDACTED\"");
    }
    if token.chars().any(bad) {
        return Err("must not contain digits, whitespace or any of : @ = \" ' \\");
    }
    Ok(())
}

fn valid_rule_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}
