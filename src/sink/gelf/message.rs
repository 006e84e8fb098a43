//! Event -> GELF 1.1 JSON, and shrinking a message to a size limit.
//!
//! # Standard fields
//!
//! | GELF            | from the event                                                         |
//! |-----------------|------------------------------------------------------------------------|
//! | `version`       | `"1.1"`                                                                |
//! | `host`          | the `host` label (the agent's host name for Docker, `_HOSTNAME` for the journal) |
//! | `short_message` | the first non-blank line of the message, cut to [`SHORT_MESSAGE_MAX_CHARS`] characters; `"(empty message)"` for an empty one (Graylog rejects an empty `short_message`) |
//! | `full_message`  | the whole message (trailing newlines removed), only when it has more than one line or its first line was cut |
//! | `timestamp`     | seconds since the epoch as a JSON number with microseconds (`1700000000.123456`) |
//! | `level`         | syslog severity: journal `PRIORITY` (the `level` label); Docker `stdout_level` / `stderr_level` by the `stream` field (stdout or stderr) (default 6 and 3, as Docker's gelf driver) |
//!
//! Messages that are not valid UTF-8 are sent with U+FFFD for invalid bytes.
//!
//! # Additional fields
//!
//! Docker events (forward source) use the names of Docker's own `gelf` log
//! driver, so existing Graylog streams and extractors keep working:
//!
//! | event field / label                 | GELF field         |
//! |-------------------------------------|--------------------|
//! | `container_id`                      | `_container_id`    |
//! | `container_name` (leading `/` removed), else the label | `_container_name` |
//! | `image_name` or `image`             | `_image_name`      |
//! | `image_id`                          | `_image_id`        |
//! | `command`                           | `_command`         |
//! | `tag`                               | `_tag`             |
//! | `created`                           | `_created`         |
//! | `stream` (`stdout`/`stderr`)        | not sent: it selects `level` (as the gelf driver does) |
//! | any other field (Docker labels, env) | `_` + its name, as the gelf driver sends `labels`/`env` |
//!
//! Journal events send every journal field as `_` + the field name in lower
//! case with its leading underscores removed: `_SYSTEMD_UNIT` ->
//! `_systemd_unit`, `_PID` -> `_pid`, `_COMM` -> `_comm`, `SYSLOG_IDENTIFIER`
//! -> `_syslog_identifier`, `__CURSOR` -> `_cursor`. `MESSAGE`, `PRIORITY`,
//! `_HOSTNAME` and `__REALTIME_TIMESTAMP` are not repeated: they are
//! `short_message`/`full_message`, `level`, `host` and `timestamp`.
//!
//! For both, labels fill what the fields did not: `app` -> `_app`, `service`
//! -> `_service`, `unit` -> `_systemd_unit`, `container_name` ->
//! `_container_name`.
//!
//! # Field names
//!
//! GELF allows only `^[\w.-]*$` after the `_`, and Graylog stores `_x` as `x`.
//! So, in this order:
//! 1. every character other than an ASCII letter, digit, `_`, `.` or `-` is
//!    replaced by `_` (`bad name!` -> `_bad_name_`, `café` -> `_caf_`);
//! 2. a name Graylog reserves (`_id`, `_source`, `_message`, `_timestamp`,
//!    `_level`, `_version`, `_host`, `_short_message`, `_full_message`,
//!    `_facility`, `_streams`, `_gl2_*`, ...) gets a trailing `_`
//!    (`_id` -> `_id_`, `__id` -> `__id_`): `_id` is never sent;
//! 3. a field whose name is empty is dropped, and when two fields end up with
//!    the same name the first one wins.
//!
//! All values are sent as JSON strings.

use std::borrow::Cow;

use crate::event::{Event, Origin};

/// `short_message` is the first line, cut to this many characters (Graylog
/// shows it in one row of its search page; the whole text is in `full_message`).
pub const SHORT_MESSAGE_MAX_CHARS: usize = 250;
/// Appended to a `full_message` or field value that was cut to fit.
pub const TRUNCATION_MARKER: &str = "…[truncated by weir]";
/// Sent as `short_message` when the event's message is empty or blank.
pub const EMPTY_MESSAGE: &str = "(empty message)";

/// Names Graylog keeps for itself (after stripping the `_`), or that GELF
/// forbids (`id`): such a field gets a trailing `_`.
const RESERVED: &[&str] = &[
    "id",
    "_id",
    "source",
    "message",
    "full_message",
    "short_message",
    "timestamp",
    "level",
    "version",
    "host",
    "facility",
    "file",
    "line",
    "streams",
];

/// The syslog levels of Docker's two output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DockerLevels {
    pub stdout: u8,
    pub stderr: u8,
}

/// One GELF message before serialisation, owned so that shrinking can edit it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub host: String,
    pub short_message: String,
    pub full_message: Option<String>,
    pub timestamp_ns: i64,
    /// Syslog severity 0..=7.
    pub level: u8,
    /// Additional fields: names sanitised, `_`-prefixed and unique.
    pub fields: Vec<(String, String)>,
}

impl Message {
    /// Maps `event` as the module doc describes; `fallback_host` is used when
    /// the event has no `host` label.
    pub fn from_event(event: &Event, levels: DockerLevels, fallback_host: &str) -> Message {
        let text = String::from_utf8_lossy(&event.message);
        let text = text.trim_end_matches(['\n', '\r']);
        let first = text
            .lines()
            .map(str::trim_end)
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        let (short, cut) = cut_chars(first, SHORT_MESSAGE_MAX_CHARS);
        let multi_line = text.contains('\n');
        let mut msg = Message {
            host: event
                .labels
                .host
                .clone()
                .unwrap_or_else(|| fallback_host.to_owned()),
            short_message: if short.is_empty() {
                EMPTY_MESSAGE.to_owned()
            } else {
                short.to_owned()
            },
            full_message: (cut || multi_line).then(|| text.to_owned()),
            timestamp_ns: event.timestamp_ns,
            level: level(event, levels),
            fields: Vec::with_capacity(event.fields.len() + 2),
        };
        for (name, value) in &event.fields {
            let Some(gelf) = field_name(event.origin, name) else {
                continue;
            };
            let value = if gelf == "_container_name" {
                value.strip_prefix('/').unwrap_or(value)
            } else {
                value
            };
            msg.push_field(gelf, value);
        }
        let l = &event.labels;
        for (gelf, value) in [
            ("_container_name", &l.container_name),
            ("_app", &l.app),
            ("_service", &l.service),
            ("_systemd_unit", &l.unit),
        ] {
            if let Some(v) = value {
                msg.push_field(Cow::Borrowed(gelf), v);
            }
        }
        msg
    }

    /// Adds a field unless one of that name is already there.
    fn push_field(&mut self, name: Cow<'_, str>, value: &str) {
        if !self.fields.iter().any(|(n, _)| *n == name) {
            self.fields.push((name.into_owned(), value.to_owned()));
        }
    }

    /// Appends the GELF JSON object to `out` (no terminator).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"version\":\"1.1\",\"host\":");
        write_str(out, &self.host);
        out.extend_from_slice(b",\"short_message\":");
        write_str(out, &self.short_message);
        if let Some(full) = &self.full_message {
            out.extend_from_slice(b",\"full_message\":");
            write_str(out, full);
        }
        out.extend_from_slice(b",\"timestamp\":");
        write_timestamp(out, self.timestamp_ns);
        out.extend_from_slice(b",\"level\":");
        out.extend_from_slice(self.level.to_string().as_bytes());
        for (name, value) in &self.fields {
            out.push(b',');
            write_str(out, name);
            out.push(b':');
            write_str(out, value);
        }
        out.push(b'}');
    }

    /// Makes the message smaller, given that it encoded to `size` bytes
    /// against a `limit`; returns `false` when nothing is left to cut.
    ///
    /// Order: `full_message` (cut in proportion, marker appended, then
    /// dropped), then long field values, then `short_message`, then every
    /// additional field, then the host name.
    fn shrink_once(&mut self, size: usize, limit: usize) -> bool {
        let keep = (limit as f64 / size as f64 * 0.9).min(0.9);
        if let Some(full) = &mut self.full_message {
            let body = full.strip_suffix(TRUNCATION_MARKER).unwrap_or(full);
            let target = (body.len() as f64 * keep) as usize;
            if target < 64 {
                self.full_message = None;
            } else {
                *full = format!("{}{TRUNCATION_MARKER}", cut_bytes(body, target));
            }
            return true;
        }
        let longest = self.fields.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
        if longest > 256 {
            let target = ((longest as f64 * keep) as usize).max(200);
            for (_, v) in &mut self.fields {
                if v.len() > target {
                    let body = v.strip_suffix(TRUNCATION_MARKER).unwrap_or(v);
                    *v = format!("{}{TRUNCATION_MARKER}", cut_bytes(body, target));
                }
            }
            return true;
        }
        if self.short_message.len() > 64 {
            self.short_message = cut_bytes(&self.short_message, 64).to_owned();
            return true;
        }
        if !self.fields.is_empty() {
            self.fields.clear();
            return true;
        }
        if self.host.len() > 64 {
            self.host = cut_bytes(&self.host, 64).to_owned();
            return true;
        }
        false
    }
}

/// The message cannot be made to fit: only possible with a limit far below
/// any allowed `chunk_size` / `max_message_bytes`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a GELF message cannot be shrunk below {limit} bytes")]
pub struct CannotFit {
    pub limit: usize,
}

/// Appends `msg` to `out` through `encode` (JSON, then compression or
/// framing), shrinking it until the bytes `encode` appended are at most
/// `limit`. Returns whether it had to shrink.
pub fn encode_within(
    msg: &mut Message,
    limit: usize,
    out: &mut Vec<u8>,
    mut encode: impl FnMut(&Message, &mut Vec<u8>),
) -> Result<bool, CannotFit> {
    let start = out.len();
    encode(msg, out);
    let mut shrunk = false;
    while out.len() - start > limit {
        let size = out.len() - start;
        out.truncate(start);
        if !msg.shrink_once(size, limit) {
            return Err(CannotFit { limit });
        }
        shrunk = true;
        encode(msg, out);
    }
    Ok(shrunk)
}

/// The GELF `level` of an event.
fn level(event: &Event, levels: DockerLevels) -> u8 {
    let label = event.labels.level.map(|l| l.as_syslog());
    match event.origin {
        // The forward source names Docker's stdout/stderr field `stream`.
        Origin::Docker => match event.field("stream") {
            Some("stderr") => levels.stderr,
            Some("stdout") => levels.stdout,
            _ => label.unwrap_or(levels.stdout),
        },
        Origin::Journal => label
            .or_else(|| {
                event
                    .field("PRIORITY")
                    .and_then(|p| p.trim().parse::<u8>().ok())
                    .map(|p| p.min(7))
            })
            .unwrap_or(6),
    }
}

/// The GELF name of an event field, or `None` when it is not sent as a field.
pub fn field_name(origin: Origin, name: &str) -> Option<Cow<'_, str>> {
    match origin {
        Origin::Docker => match name {
            "stream" => None,
            "container_id" | "container_name" | "image_id" | "image_name" | "command" | "tag"
            | "created" => Some(Cow::Owned(format!("_{name}"))),
            "image" => Some(Cow::Borrowed("_image_name")),
            _ => sanitise(name),
        },
        Origin::Journal => match name {
            "MESSAGE" | "PRIORITY" | "_HOSTNAME" | "__REALTIME_TIMESTAMP" => None,
            _ => sanitise(&name.trim_start_matches('_').to_ascii_lowercase()),
        },
    }
}

/// `_` + `name` with disallowed characters replaced and reserved names
/// suffixed (module doc, "Field names"); `None` for an empty name.
pub fn sanitise(name: &str) -> Option<Cow<'static, str>> {
    if name.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(name.len() + 2);
    out.push('_');
    out.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
            c
        } else {
            '_'
        }
    }));
    let bare = &out[1..];
    if RESERVED.contains(&bare) || bare.starts_with("gl2_") {
        out.push('_');
    }
    Some(Cow::Owned(out))
}

/// `s` cut to at most `max` characters, and whether it was cut.
fn cut_chars(s: &str, max: usize) -> (&str, bool) {
    match s.char_indices().nth(max) {
        Some((i, _)) => (&s[..i], true),
        None => (s, false),
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn cut_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut i = max;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    &s[..i]
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("serialising a str to a Vec cannot fail");
}

/// Seconds with microseconds, exact in decimal (no float rounding).
fn write_timestamp(out: &mut Vec<u8>, ns: i64) {
    use std::io::Write;
    let sign = if ns < 0 { "-" } else { "" };
    let abs = ns.unsigned_abs();
    let secs = abs / 1_000_000_000;
    let micros = (abs % 1_000_000_000) / 1_000;
    write!(out, "{sign}{secs}.{micros:06}").expect("writing to a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Level;

    const LEVELS: DockerLevels = DockerLevels {
        stdout: 6,
        stderr: 3,
    };

    fn json(m: &Message) -> serde_json::Value {
        let mut out = Vec::new();
        m.write_json(&mut out);
        serde_json::from_slice(&out).unwrap()
    }

    fn docker(message: &str) -> Event {
        let mut e = Event::new(1_700_000_000_123_456_789, Origin::Docker, message);
        e.labels.host = Some("web-1".into());
        e.labels.service = Some("db".into());
        e.labels.app = Some("shop".into());
        e.labels.container_name = Some("shop-db-1".into());
        for (k, v) in [
            ("container_id", "abc123"),
            ("container_name", "/shop-db-1"),
            ("stream", "stderr"),
            ("tag", "docker.abc123"),
            ("com.example.team", "core"),
        ] {
            e.fields.push((k.into(), v.into()));
        }
        e
    }

    #[test]
    fn docker_event_uses_the_gelf_driver_names() {
        let m = Message::from_event(&docker("boom\n"), LEVELS, "fallback");
        let v = json(&m);
        assert_eq!(v["version"], "1.1");
        assert_eq!(v["host"], "web-1");
        assert_eq!(v["short_message"], "boom");
        assert!(v.get("full_message").is_none());
        assert_eq!(v["level"], 3);
        assert_eq!(v["_container_id"], "abc123");
        assert_eq!(v["_container_name"], "shop-db-1");
        assert_eq!(v["_tag"], "docker.abc123");
        assert_eq!(v["_com.example.team"], "core");
        assert_eq!(v["_app"], "shop");
        assert_eq!(v["_service"], "db");
        assert!(v.get("_source").is_none());
        // Exact decimal, not a float rendering.
        let mut out = Vec::new();
        m.write_json(&mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("\"timestamp\":1700000000.123456,"), "{s}");
    }

    #[test]
    fn stdout_level_is_configurable() {
        let mut e = docker("x");
        e.fields.retain(|(k, _)| k != "stream");
        e.fields.push(("stream".into(), "stdout".into()));
        let levels = DockerLevels {
            stdout: 5,
            stderr: 2,
        };
        assert_eq!(Message::from_event(&e, levels, "h").level, 5);
    }

    #[test]
    fn journal_fields_are_lower_case_and_priority_is_level() {
        let mut e = Event::new(5_000, Origin::Journal, "line one\nline two\n");
        e.labels.level = Some(Level::Warning);
        e.labels.unit = Some("cron.service".into());
        for (k, v) in [
            ("_SYSTEMD_UNIT", "cron.service"),
            ("_PID", "42"),
            ("_COMM", "cron"),
            ("SYSLOG_IDENTIFIER", "CRON"),
            ("PRIORITY", "4"),
            ("MESSAGE", "dup"),
            ("_HOSTNAME", "dup"),
            ("__CURSOR", "s=1"),
        ] {
            e.fields.push((k.into(), v.into()));
        }
        let v = json(&Message::from_event(&e, LEVELS, "agent-host"));
        assert_eq!(v["host"], "agent-host");
        assert_eq!(v["short_message"], "line one");
        assert_eq!(v["full_message"], "line one\nline two");
        assert_eq!(v["level"], 4);
        assert_eq!(v["_systemd_unit"], "cron.service");
        assert_eq!(v["_pid"], "42");
        assert_eq!(v["_comm"], "cron");
        assert_eq!(v["_syslog_identifier"], "CRON");
        assert_eq!(v["_cursor"], "s=1");
        for absent in ["_message", "_priority", "_hostname"] {
            assert!(v.get(absent).is_none(), "{absent}");
        }
        assert_eq!(v["timestamp"].as_f64(), Some(0.000005));
    }

    #[test]
    fn long_first_line_is_cut_and_kept_whole_in_full_message() {
        let line = "é".repeat(300);
        let m = Message::from_event(&docker(&line), LEVELS, "h");
        assert_eq!(m.short_message.chars().count(), SHORT_MESSAGE_MAX_CHARS);
        assert_eq!(m.full_message.as_deref(), Some(line.as_str()));
    }

    #[test]
    fn empty_and_invalid_utf8_messages() {
        let m = Message::from_event(&Event::new(0, Origin::Docker, "\n"), LEVELS, "h");
        assert_eq!(m.short_message, EMPTY_MESSAGE);
        let m = Message::from_event(
            &Event::new(0, Origin::Docker, b"a\xffb".to_vec()),
            LEVELS,
            "h",
        );
        assert_eq!(m.short_message, "a\u{fffd}b");
    }

    #[test]
    fn names_are_sanitised_and_id_is_never_sent() {
        let ok = |n: &str| {
            n.starts_with('_')
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        };
        let mut e = Event::new(0, Origin::Docker, "x");
        for k in [
            "id",
            "_id",
            "bad name!",
            "café",
            "",
            "gl2_source",
            "stream",
            "a/b",
            "a_b",
        ] {
            e.fields.push((k.into(), "v".into()));
        }
        let m = Message::from_event(&e, LEVELS, "h");
        let names: Vec<&str> = m.fields.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.iter().all(|n| ok(n)), "{names:?}");
        assert!(!names.contains(&"_id"));
        assert_eq!(
            names,
            [
                "_id_",
                "__id_",
                "_bad_name_",
                "_caf_",
                "_gl2_source_",
                "_a_b"
            ]
        );
        let mut j = Event::new(0, Origin::Journal, "x");
        j.fields.push(("ID".into(), "v".into()));
        j.fields.push(("_ID".into(), "w".into()));
        let m = Message::from_event(&j, LEVELS, "h");
        assert_eq!(m.fields, vec![("_id_".to_owned(), "v".to_owned())]);
    }

    #[test]
    fn timestamps_are_exact_including_negative() {
        for (ns, s) in [
            (1_700_000_000_000_000_000, "1700000000.000000"),
            (1_999_999, "0.001999"),
            (-1_500_000_000, "-1.500000"),
        ] {
            let mut out = Vec::new();
            write_timestamp(&mut out, ns);
            assert_eq!(String::from_utf8(out).unwrap(), s);
        }
    }

    #[test]
    fn shrinks_full_message_first_with_marker() {
        let text = format!("first\n{}", "y".repeat(100_000));
        let mut m = Message::from_event(&docker(&text), LEVELS, "h");
        let mut out = b"prefix".to_vec();
        let shrunk = encode_within(&mut m, 10_000, &mut out, |m, o| m.write_json(o)).unwrap();
        assert!(shrunk);
        assert!(out.len() - 6 <= 10_000);
        let v: serde_json::Value = serde_json::from_slice(&out[6..]).unwrap();
        let full = v["full_message"].as_str().unwrap();
        assert!(full.starts_with("first\nyyy") && full.ends_with(TRUNCATION_MARKER));
        assert!(full.len() > 5_000, "kept {}", full.len());
        assert_eq!(v["short_message"], "first");
        assert_eq!(v["_container_id"], "abc123");
    }

    #[test]
    fn shrinks_fields_when_full_message_is_not_enough() {
        let mut e = docker("short");
        e.fields.push(("huge".into(), "z".repeat(50_000)));
        let mut m = Message::from_event(&e, LEVELS, "h");
        let mut out = Vec::new();
        assert!(encode_within(&mut m, 2_000, &mut out, |m, o| m.write_json(o)).unwrap());
        assert!(out.len() <= 2_000);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["short_message"], "short");
        let mut tiny = Message::from_event(&e, LEVELS, "h");
        assert_eq!(
            encode_within(&mut tiny, 10, &mut Vec::new(), |m, o| m.write_json(o)),
            Err(CannotFit { limit: 10 })
        );
    }

    #[test]
    fn small_message_is_untouched() {
        let mut m = Message::from_event(&docker("ok"), LEVELS, "h");
        let before = m.clone();
        let mut out = Vec::new();
        assert!(!encode_within(&mut m, 10_000, &mut out, |m, o| m.write_json(o)).unwrap());
        assert_eq!(m, before);
    }
}
