//! Journal entry -> [`Event`].
//!
//! The reader hands every `NAME=value` data item of an entry to
//! [`Entry::add`], then [`Entry::take_event`] builds the event. Labels follow
//! the shared vocabulary of `src/event.rs`, so a service is found by the same
//! Loki query whether it logs through Docker's fluentd driver, Docker's
//! journald driver, or as a systemd unit.
//!
//! | journal field                  | becomes                                                    |
//! |--------------------------------|------------------------------------------------------------|
//! | `MESSAGE`                      | the message, as bytes (binary and non-UTF-8 kept exactly)  |
//! | `__REALTIME_TIMESTAMP`         | `timestamp_ns` (µs × 1000)                                 |
//! | `PRIORITY`                     | label `level` (syslog severity name); absent: no label     |
//! | `_SYSTEMD_UNIT`                | label `unit`                                               |
//! | `_HOSTNAME`                    | label `host` (absent: the agent's host name)               |
//! | `CONTAINER_NAME`               | label `container_name`                                     |
//! | `COM_DOCKER_COMPOSE_PROJECT`   | label `app`                                                |
//! | `COM_DOCKER_COMPOSE_SERVICE`, else `CONTAINER_NAME`, else `_SYSTEMD_UNIT` without `.service`, else `SYSLOG_IDENTIFIER`, else a non-service `_SYSTEMD_UNIT` | label `service` |
//! | `CONTAINER_ID_FULL`, else `CONTAINER_ID` | field `container_id` (as the forward source)     |
//! | `CONTAINER_TAG`, `IMAGE_NAME`  | fields `container_tag`, `image_name`                       |
//! | `SYSLOG_IDENTIFIER`, `SYSLOG_FACILITY`, `_PID`, `_UID`, `_COMM`, `_BOOT_ID`, `_TRANSPORT`, `_SYSTEMD_USER_UNIT` | fields of the same name |
//! | other fields without a leading `_` (structured logging, `CODE_*`, `MESSAGE_ID`, `ERRNO`, Docker `labels`/`env` log-opts, ...) | fields of the same name, up to [`MAX_FIELD_VALUE`] bytes, non-UTF-8 bytes replaced |
//! | every other `_` trusted field (`_CMDLINE`, `_EXE`, `_CAP_EFFECTIVE`, `_SYSTEMD_CGROUP`, `_MACHINE_ID`, ...), `SYSLOG_RAW`, `SYSLOG_TIMESTAMP`, `SYSLOG_PID`, `COREDUMP`, `PRIORITY` and the mapped fields above | dropped: redundant, binary, large or high-cardinality |
//!
//! Containers logging through Docker's journald driver thus get the same
//! `service`, `app` and `container_name` labels as through the forward
//! source (for Compose labels, start them with `--log-opt
//! labels=com.docker.compose.project,com.docker.compose.service`), plus
//! `unit="docker.service"`.
//!
//! A field longer than the reader's data threshold ([`super::reader::DATA_THRESHOLD`])
//! that journald stored compressed comes back cut at the threshold: the
//! event then carries the field `weir_truncated` naming it.

use crate::event::{Event, Level, Origin};

/// Longest value kept for a field that is not mapped explicitly; longer ones
/// are dropped (a field is metadata; a big one is a payload in disguise).
pub const MAX_FIELD_VALUE: usize = 4096;

/// The items of one journal entry, collected for mapping. Reused between
/// entries to keep allocations down.
#[derive(Debug, Default)]
pub struct Entry {
    message: Option<Vec<u8>>,
    priority: Option<u8>,
    unit: Option<String>,
    hostname: Option<String>,
    container_name: Option<String>,
    container_id: Option<String>,
    container_id_full: Option<String>,
    compose_project: Option<String>,
    compose_service: Option<String>,
    truncated: Option<String>,
    fields: Vec<(String, String)>,
    /// Bytes of all data items, for `weir_source_bytes_received_total`.
    pub bytes: u64,
    /// Items at or over this length may have been cut by libsystemd.
    threshold: usize,
}

impl Entry {
    /// `threshold` is the journal's data threshold (0 for none).
    pub fn new(threshold: usize) -> Entry {
        Entry {
            threshold,
            ..Entry::default()
        }
    }

    /// Adds one data item, `NAME=value`.
    pub fn add(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        let Some(eq) = data.iter().position(|&b| b == b'=') else {
            return;
        };
        let (name, value) = (&data[..eq], &data[eq + 1..]);
        if self.threshold > 0 && data.len() >= self.threshold && self.truncated.is_none() {
            self.truncated = Some(lossy(name));
        }
        match name {
            b"MESSAGE" => set_once(&mut self.message, || value.to_vec()),
            b"PRIORITY" => {
                if let [d @ b'0'..=b'7'] = value {
                    self.priority = Some(d - b'0');
                }
            }
            b"_SYSTEMD_UNIT" => set_once(&mut self.unit, || lossy(value)),
            b"_HOSTNAME" => set_once(&mut self.hostname, || lossy(value)),
            b"CONTAINER_NAME" => set_once(&mut self.container_name, || lossy(value)),
            b"CONTAINER_ID" => set_once(&mut self.container_id, || lossy(value)),
            b"CONTAINER_ID_FULL" => set_once(&mut self.container_id_full, || lossy(value)),
            b"COM_DOCKER_COMPOSE_PROJECT" => set_once(&mut self.compose_project, || lossy(value)),
            b"COM_DOCKER_COMPOSE_SERVICE" => set_once(&mut self.compose_service, || lossy(value)),
            b"CONTAINER_TAG" => self.fields.push(("container_tag".into(), lossy(value))),
            b"IMAGE_NAME" => self.fields.push(("image_name".into(), lossy(value))),
            // The first `SYSLOG_IDENTIFIER` and `_PID` fields also serve
            // [`Entry::identity`] and the `service` label: looked up there
            // rather than copied.
            b"SYSLOG_IDENTIFIER"
            | b"_PID"
            | b"_UID"
            | b"_COMM"
            | b"_BOOT_ID"
            | b"_TRANSPORT"
            | b"_SYSTEMD_USER_UNIT" => {
                self.fields.push((lossy(name), lossy(value)));
            }
            b"SYSLOG_RAW" | b"SYSLOG_TIMESTAMP" | b"SYSLOG_PID" | b"COREDUMP" => {}
            _ if name.first() == Some(&b'_') => {}
            _ if value.len() <= MAX_FIELD_VALUE => self.fields.push((lossy(name), lossy(value))),
            _ => {}
        }
    }

    /// `_PID`, `_SYSTEMD_UNIT` and `SYSLOG_IDENTIFIER`, for self-exclusion and filters.
    pub fn identity(&self) -> (Option<&[u8]>, Option<&str>, Option<&str>) {
        (
            self.field("_PID").map(str::as_bytes),
            self.unit.as_deref(),
            self.field("SYSLOG_IDENTIFIER"),
        )
    }

    /// The first field named `name` collected so far.
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Builds the event and clears the entry for the next one.
    pub fn take_event(&mut self, realtime_us: u64) -> Event {
        let mut e = Event::new(
            i64::try_from(realtime_us)
                .unwrap_or(i64::MAX / 1000)
                .saturating_mul(1000),
            Origin::Journal,
            self.message.take().unwrap_or_default(),
        );
        let service = self
            .compose_service
            .take()
            .or_else(|| self.container_name.clone())
            .or_else(|| {
                self.unit
                    .as_deref()
                    .and_then(|u| u.strip_suffix(".service"))
                    .map(str::to_owned)
            })
            .or_else(|| self.field("SYSLOG_IDENTIFIER").map(str::to_owned))
            .or_else(|| self.unit.clone());
        e.labels.service = service;
        e.labels.app = self.compose_project.take();
        e.labels.container_name = self.container_name.take();
        e.labels.unit = self.unit.take();
        e.labels.host = self.hostname.take();
        e.labels.level = self.priority.take().map(Level::from_syslog);
        // The next entry's fields get a vector of the size this one needed,
        // so that it does not grow (and copy) field by field.
        let size = self.fields.len() + 2;
        e.fields = std::mem::replace(&mut self.fields, Vec::with_capacity(size));
        if let Some(id) = self.container_id_full.take().or(self.container_id.take()) {
            e.fields.push(("container_id".into(), id));
        }
        self.container_id = None;
        if let Some(name) = self.truncated.take() {
            e.fields.push(("weir_truncated".into(), name));
        }
        self.clear();
        e
    }

    /// Forgets the entry without building an event.
    pub fn clear(&mut self) {
        let threshold = self.threshold;
        let fields = std::mem::take(&mut self.fields);
        *self = Entry::new(threshold);
        self.fields = fields;
        self.fields.clear();
    }
}

fn set_once<T>(slot: &mut Option<T>, value: impl FnOnce() -> T) {
    if slot.is_none() {
        *slot = Some(value());
    }
}

/// `b` as a String, invalid UTF-8 replaced. Valid text (nearly all) takes the
/// fast validation of `from_utf8`, not the lossy scan.
fn lossy(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(b).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(items: &[&[u8]]) -> Event {
        let mut entry = Entry::new(0);
        for item in items {
            entry.add(item);
        }
        entry.take_event(1_700_000_000_123_456)
    }

    #[test]
    fn a_systemd_service_entry() {
        let e = event(&[
            b"MESSAGE=started",
            b"PRIORITY=3",
            b"_SYSTEMD_UNIT=nginx.service",
            b"_HOSTNAME=web-1",
            b"SYSLOG_IDENTIFIER=nginx",
            b"_PID=42",
            b"_COMM=nginx",
            b"_BOOT_ID=b00t",
            b"_CMDLINE=nginx -g daemon off;",
            b"_CAP_EFFECTIVE=0",
            b"SYSLOG_RAW=<11>raw",
            b"CODE_LINE=7",
        ]);
        assert_eq!(e.timestamp_ns, 1_700_000_000_123_456_000);
        assert_eq!(e.message, b"started");
        assert_eq!(e.labels.level, Some(Level::Error));
        assert_eq!(e.labels.unit.as_deref(), Some("nginx.service"));
        assert_eq!(e.labels.service.as_deref(), Some("nginx"));
        assert_eq!(e.labels.host.as_deref(), Some("web-1"));
        assert_eq!(e.labels.app, None);
        assert_eq!(e.field("SYSLOG_IDENTIFIER"), Some("nginx"));
        assert_eq!(e.field("_PID"), Some("42"));
        assert_eq!(e.field("_COMM"), Some("nginx"));
        assert_eq!(e.field("_BOOT_ID"), Some("b00t"));
        assert_eq!(e.field("CODE_LINE"), Some("7"));
        for dropped in [
            "_CMDLINE",
            "_CAP_EFFECTIVE",
            "SYSLOG_RAW",
            "PRIORITY",
            "MESSAGE",
        ] {
            assert_eq!(e.field(dropped), None, "{dropped}");
        }
    }

    #[test]
    fn a_docker_journald_driver_entry_gets_the_forward_labels() {
        let e = event(&[
            b"MESSAGE=GET /",
            b"CONTAINER_NAME=shop-db-1",
            b"CONTAINER_ID=0123456789ab",
            b"CONTAINER_ID_FULL=0123456789abcdef",
            b"CONTAINER_TAG=0123456789ab",
            b"IMAGE_NAME=postgres:16",
            b"COM_DOCKER_COMPOSE_PROJECT=shop",
            b"COM_DOCKER_COMPOSE_SERVICE=db",
            b"_SYSTEMD_UNIT=docker.service",
        ]);
        assert_eq!(e.labels.app.as_deref(), Some("shop"));
        assert_eq!(e.labels.service.as_deref(), Some("db"));
        assert_eq!(e.labels.container_name.as_deref(), Some("shop-db-1"));
        assert_eq!(e.field("container_id"), Some("0123456789abcdef"));
        assert_eq!(e.field("container_tag"), Some("0123456789ab"));
        assert_eq!(e.field("image_name"), Some("postgres:16"));
        // Without Compose labels the container name is the service, as in the forward source.
        let e = event(&[b"MESSAGE=x", b"CONTAINER_NAME=web", b"CONTAINER_ID=ab"]);
        assert_eq!(e.labels.service.as_deref(), Some("web"));
        assert_eq!(e.field("container_id"), Some("ab"));
    }

    #[test]
    fn service_falls_back_to_the_identifier() {
        let e = event(&[b"MESSAGE=x", b"SYSLOG_IDENTIFIER=kernel"]);
        assert_eq!(e.labels.service.as_deref(), Some("kernel"));
        let e = event(&[b"_SYSTEMD_UNIT=session-3.scope", b"SYSLOG_IDENTIFIER=sshd"]);
        assert_eq!(e.labels.service.as_deref(), Some("sshd"));
        let e = event(&[b"_SYSTEMD_UNIT=session-3.scope"]);
        assert_eq!(e.labels.service.as_deref(), Some("session-3.scope"));
        assert_eq!(e.message, b"");
    }

    #[test]
    fn binary_message_is_kept_and_big_or_binary_fields_are_not() {
        let big = [b"BLOB=".as_slice(), &[b'a'; MAX_FIELD_VALUE + 1]].concat();
        let e = event(&[
            b"MESSAGE=a\xffb\0c\nd",
            b"COREDUMP=\x7fELF",
            &big,
            b"X=\xfe",
        ]);
        assert_eq!(e.message, b"a\xffb\0c\nd");
        assert_eq!(e.field("COREDUMP"), None);
        assert_eq!(e.field("BLOB"), None);
        assert_eq!(e.field("X"), Some("\u{fffd}"));
    }

    #[test]
    fn items_at_the_threshold_are_flagged_and_the_entry_resets() {
        let mut entry = Entry::new(16);
        entry.add(b"MESSAGE=0123456789");
        entry.add(b"PRIORITY=9");
        let e = entry.take_event(1);
        assert_eq!(e.field("weir_truncated"), Some("MESSAGE"));
        assert_eq!(e.labels.level, None, "9 is not a priority");
        assert_eq!(entry.bytes, 0);
        entry.add(b"MESSAGE=next");
        let e = entry.take_event(2);
        assert_eq!(e.message, b"next");
        assert!(e.fields.is_empty());
    }
}
