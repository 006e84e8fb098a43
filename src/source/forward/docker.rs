//! Record -> [`Event`]: the Docker `fluentd` log driver's record shape, and
//! any other Forward client's.
//!
//! Docker sends `{container_id, container_name, source, log}` plus the
//! container labels and environment variables named by the `labels`/`env`
//! log-opts, and `partial_*` keys on pieces of a line longer than 16 KiB.
//!
//! | record key                   | becomes                                       |
//! |------------------------------|-----------------------------------------------|
//! | `log` (else `message`, else `msg`) | the message                             |
//! | `container_name`             | label `container_name` (leading `/` removed)  |
//! | `com.docker.compose.project` | label `app`                                   |
//! | `com.docker.compose.service` | label `service` (else the container name)     |
//! | `source` = `stdout`/`stderr` | label `level` `info`/`error`, field `stream`  |
//! | `level` (non-Docker records) | label `level` when it names a severity        |
//! | the frame's tag              | field `tag`                                   |
//! | `partial_*`                  | consumed by reassembly ([`super::partial`])   |
//! | anything else                | a field (strings as text, other values as JSON) |

use crate::event::{Event, Level, Origin};

use super::decode::{write_json, Record, Value};

/// The `partial_*` keys of one piece of a split line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    pub id: String,
    pub ordinal: u64,
    pub last: bool,
}

/// Keys whose value is the message, in order of preference.
const MESSAGE_KEYS: [&str; 3] = ["log", "message", "msg"];

/// Maps one record. Returns the event and, for a piece of a split line, its
/// partial metadata.
pub fn to_event(tag: &str, record: &Record<'_>) -> (Event, Option<Partial>) {
    let message_key = MESSAGE_KEYS
        .iter()
        .find(|k| record.get(k).is_some())
        .copied();
    let mut event = Event::new(record.time_ns, Origin::Docker, Vec::new());
    event.fields.reserve(record.entries.len() + 1);
    let mut partial_flag = false;
    let mut partial_id = None;
    let mut partial_ordinal = 0;
    let mut partial_last = false;
    let mut docker_stream = false;
    for &(key, value) in &record.entries {
        let Ok(key) = std::str::from_utf8(key) else {
            continue;
        };
        if Some(key) == message_key {
            event.message = match value {
                Value::Str(s) => s.to_vec(),
                other => text(other).into_bytes(),
            };
            continue;
        }
        match key {
            "container_name" => {
                let name = text(value);
                let name = name.strip_prefix('/').unwrap_or(&name).to_owned();
                event.labels.container_name = Some(name);
            }
            "com.docker.compose.project" => event.labels.app = Some(text(value)),
            "com.docker.compose.service" => event.labels.service = Some(text(value)),
            "source" if matches!(value, Value::Str(b"stdout") | Value::Str(b"stderr")) => {
                let stderr = value == Value::Str(b"stderr");
                event.labels.level = Some(if stderr { Level::Error } else { Level::Info });
                event.fields.push(("stream".into(), text(value)));
                docker_stream = true;
            }
            "partial_message" => partial_flag = value == Value::Str(b"true"),
            "partial_id" => partial_id = Some(text(value)),
            "partial_ordinal" => partial_ordinal = text(value).parse().unwrap_or(0),
            "partial_last" => partial_last = value == Value::Str(b"true"),
            _ => event.fields.push((key.to_owned(), text(value))),
        }
    }
    if !docker_stream {
        // A non-Docker client naming its own severity.
        if let Some(i) = event.fields.iter().position(|(k, _)| k == "level") {
            if let Some(level) = Level::parse(&event.fields[i].1.to_ascii_lowercase()) {
                event.labels.level = Some(level);
                event.fields.remove(i);
            }
        }
    }
    if event.labels.service.is_none() {
        event.labels.service = event.labels.container_name.clone();
    }
    event.fields.push(("tag".into(), tag.to_owned()));
    let partial = match (partial_flag, partial_id) {
        (true, Some(id)) => Some(Partial {
            id,
            ordinal: partial_ordinal,
            last: partial_last,
        }),
        _ => None,
    };
    (event, partial)
}

/// A value as field text: strings as they are (invalid UTF-8 replaced),
/// everything else as JSON.
fn text(v: Value<'_>) -> String {
    match v {
        Value::Str(s) => String::from_utf8_lossy(s).into_owned(),
        other => {
            let mut out = String::new();
            write_json(other, &mut out, 0);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(entries: &[(&'a str, Value<'a>)]) -> Record<'a> {
        Record {
            time_ns: 42,
            entries: entries.iter().map(|(k, v)| (k.as_bytes(), *v)).collect(),
        }
    }

    #[test]
    fn docker_record_maps_to_labels_and_fields() {
        let r = record(&[
            ("container_id", Value::Str(b"abc123")),
            ("container_name", Value::Str(b"/web-1")),
            ("source", Value::Str(b"stderr")),
            ("log", Value::Str(b"boom")),
            ("com.docker.compose.project", Value::Str(b"shop")),
            ("com.docker.compose.service", Value::Str(b"web")),
            ("team", Value::Str(b"blue")),
        ]);
        let (e, p) = to_event("docker.abc123", &r);
        assert_eq!(p, None);
        assert_eq!(e.timestamp_ns, 42);
        assert_eq!(e.message, b"boom");
        assert_eq!(e.labels.container_name.as_deref(), Some("web-1"));
        assert_eq!(e.labels.app.as_deref(), Some("shop"));
        assert_eq!(e.labels.service.as_deref(), Some("web"));
        assert_eq!(e.labels.level, Some(Level::Error));
        assert_eq!(e.field("container_id"), Some("abc123"));
        assert_eq!(e.field("stream"), Some("stderr"));
        assert_eq!(e.field("team"), Some("blue"));
        assert_eq!(e.field("tag"), Some("docker.abc123"));
        assert_eq!(e.field("com.docker.compose.project"), None);
    }

    #[test]
    fn service_falls_back_to_the_container_name() {
        let r = record(&[
            ("container_name", Value::Str(b"/db")),
            ("source", Value::Str(b"stdout")),
            ("log", Value::Str(b"ok")),
        ]);
        let (e, _) = to_event("t", &r);
        assert_eq!(e.labels.service.as_deref(), Some("db"));
        assert_eq!(e.labels.level, Some(Level::Info));
    }

    #[test]
    fn generic_records_use_message_keys_and_keep_the_rest() {
        let r = record(&[
            ("msg", Value::Str(b"second choice")),
            ("message", Value::Str(b"hello")),
            ("level", Value::Str(b"WARN")),
            ("n", Value::UInt(7)),
            ("ok", Value::Bool(true)),
            ("nested", Value::Raw(&[0x81, 0xa1, b'a', 0x92, 0x01, 0xc0])),
        ]);
        let (e, _) = to_event("app.web", &r);
        assert_eq!(e.message, b"hello");
        assert_eq!(e.labels.level, Some(Level::Warning));
        assert_eq!(e.labels.service, None);
        assert_eq!(e.field("msg"), Some("second choice"));
        assert_eq!(e.field("n"), Some("7"));
        assert_eq!(e.field("ok"), Some("true"));
        assert_eq!(e.field("nested"), Some(r#"{"a":[1,null]}"#));
    }

    #[test]
    fn partial_metadata_is_consumed() {
        let r = record(&[
            ("log", Value::Str(b"part")),
            ("partial_message", Value::Str(b"true")),
            ("partial_id", Value::Str(b"p1")),
            ("partial_ordinal", Value::Str(b"2")),
            ("partial_last", Value::Str(b"false")),
        ]);
        let (e, p) = to_event("t", &r);
        assert_eq!(
            p,
            Some(Partial {
                id: "p1".into(),
                ordinal: 2,
                last: false
            })
        );
        assert!(e.fields.iter().all(|(k, _)| !k.starts_with("partial_")));
    }
}
