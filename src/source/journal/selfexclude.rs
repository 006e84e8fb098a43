//! weir never ingests its own journal entries, whatever the config says.
//!
//! Reading its own log back is how incident 2 (the feedback loop) starts, so
//! the check is not a filter the user can remove: the reader applies it to
//! every entry before any configured filter. An entry is weir's own when any
//! of these holds:
//!
//! - `_PID` is this process's pid (the journal's trusted field, set by
//!   journald from the socket credentials, so it cannot be forged);
//! - `_SYSTEMD_UNIT` is weir's own service unit: anything weir or a child
//!   writes under `weir.service`, including its stderr and entries from an
//!   earlier run of the same unit. Found in `/proc/self/cgroup`, and only
//!   when systemd started weir (`INVOCATION_ID` is set) and the cgroup is a
//!   `.service`: a login session's `.scope` is shared with the user's other
//!   processes and must not be excluded;
//! - `SYSLOG_IDENTIFIER` is [`SYSLOG_IDENTIFIER`] (`weir`), which weir's log
//!   always carries, also across restarts when the pid changes. Another
//!   program that calls itself `weir` is excluded too; that is the price of
//!   the guarantee.

use crate::selflog::SYSLOG_IDENTIFIER;

/// What identifies weir's own entries in this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfIdentity {
    pub pid: u32,
    /// weir's own service unit, when run by systemd.
    pub unit: Option<String>,
}

impl SelfIdentity {
    /// This process: its pid, and its unit when systemd started it.
    pub fn current() -> SelfIdentity {
        let under_systemd = std::env::var_os("INVOCATION_ID").is_some();
        let unit = if under_systemd {
            std::fs::read_to_string("/proc/self/cgroup")
                .ok()
                .and_then(|text| service_of_cgroup(&text))
        } else {
            None
        };
        SelfIdentity {
            pid: std::process::id(),
            unit,
        }
    }

    /// Whether an entry with these trusted and identifying fields is weir's own.
    /// `pid` is the raw `_PID` value.
    pub fn is_own(&self, pid: Option<&[u8]>, unit: Option<&str>, identifier: Option<&str>) -> bool {
        identifier == Some(SYSLOG_IDENTIFIER)
            || pid.is_some_and(|p| parse_u32(p) == Some(self.pid))
            || (self.unit.is_some() && unit == self.unit.as_deref())
    }
}

/// `b` as `u32::from_str` reads it (an optional `+`, then decimal digits
/// only, no overflow), straight from the bytes: this runs for every entry.
fn parse_u32(b: &[u8]) -> Option<u32> {
    let digits = b.strip_prefix(b"+").unwrap_or(b);
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u32, |n, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u32::from(d - b'0'))
    })
}

/// The `.service` unit owning the process, from `/proc/self/cgroup`: the
/// innermost path component ending in `.service` of the unified (`0::`)
/// hierarchy, or of the legacy `name=systemd` one.
pub fn service_of_cgroup(text: &str) -> Option<String> {
    let path = text.lines().find_map(|l| {
        l.strip_prefix("0::")
            .or_else(|| l.split_once(":name=systemd:").map(|(_, p)| p))
    })?;
    path.split('/')
        .rev()
        .find(|c| c.ends_with(".service") && c.len() > ".service".len())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_service_unit_in_cgroup_files() {
        assert_eq!(
            service_of_cgroup("0::/system.slice/weir.service\n").as_deref(),
            Some("weir.service")
        );
        assert_eq!(
            service_of_cgroup("0::/system.slice/weir.service/helper\n").as_deref(),
            Some("weir.service")
        );
        assert_eq!(
            service_of_cgroup("12:cpu:/x\n1:name=systemd:/system.slice/w@1.service\n").as_deref(),
            Some("w@1.service")
        );
        // A login session or a container: no unit to exclude.
        assert_eq!(
            service_of_cgroup("0::/user.slice/user-0.slice/session-4.scope\n"),
            None
        );
        assert_eq!(service_of_cgroup("0::/\n"), None);
    }

    /// Pids are read exactly as `u32::from_str` reads them.
    #[test]
    fn pids_parse_as_from_str_parses_them() {
        let cases = [
            "",
            "+",
            "-",
            "-0",
            "-1",
            "0",
            "00042",
            "+42",
            "++42",
            "4 2",
            " 42",
            "42 ",
            "4242",
            "42420",
            "4294967295",
            "4294967296",
            "99999999999",
            "٤٢",
            "4a",
            "0x10",
            "\u{0}",
        ];
        for c in cases {
            assert_eq!(parse_u32(c.as_bytes()), c.parse::<u32>().ok(), "{c:?}");
        }
        assert_eq!(parse_u32(b"42\xff"), None);
    }

    #[test]
    fn own_entries_by_pid_unit_or_identifier() {
        let me = SelfIdentity {
            pid: 4242,
            unit: Some("weir.service".into()),
        };
        assert!(me.is_own(Some(b"4242"), None, None));
        assert!(me.is_own(None, Some("weir.service"), Some("sh")));
        assert!(me.is_own(Some(b"1"), None, Some("weir")));
        assert!(!me.is_own(Some(b"42420"), Some("nginx.service"), Some("nginx")));
        assert!(!me.is_own(None, None, None));
        let no_unit = SelfIdentity { pid: 1, unit: None };
        assert!(!no_unit.is_own(Some(b"2"), None, Some("weirdo")));
    }
}
