//! `Event`, the one type passed between stages, and its spool encoding.
//!
//! # Label vocabulary
//!
//! Every source fills the same labels so that one Loki query finds a service
//! whichever way it logs (`{service="db"}` matches a Compose service logging
//! through Docker and a systemd unit `db.service` alike):
//!
//! | label            | Docker (forward source)                 | journal source                                         |
//! |------------------|-----------------------------------------|--------------------------------------------------------|
//! | `host`           | the agent's host name                   | `_HOSTNAME`                                            |
//! | `source`         | `docker`                                | `journal`                                              |
//! | `app`            | `com.docker.compose.project`            | `com.docker.compose.project` (journald driver), else unset |
//! | `service`        | `com.docker.compose.service`, else the container name | compose service (journald driver), else the unit without `.service`, else `SYSLOG_IDENTIFIER` |
//! | `container_name` | `container_name` without the leading `/` | `CONTAINER_NAME`                                       |
//! | `unit`           | unset                                   | `_SYSTEMD_UNIT`                                        |
//! | `level`          | `info` for stdout, `error` for stderr   | `PRIORITY` as a syslog severity name                   |
//!
//! Everything else (container id, image, `_PID`, `_COMM`, other Docker labels,
//! ...) is a field: high-cardinality values never become labels.

use std::fmt;

/// Where an event came from. Also the value of the `source` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    Docker,
    Journal,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Docker => "docker",
            Origin::Journal => "journal",
        }
    }
}

/// Syslog severity (RFC 5424), the scale of the journal's `PRIORITY` and GELF's `level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Emergency = 0,
    Alert = 1,
    Critical = 2,
    Error = 3,
    Warning = 4,
    Notice = 5,
    Info = 6,
    Debug = 7,
}

impl Level {
    /// The severity for a syslog number; values above 7 clamp to `Debug`.
    pub fn from_syslog(n: u8) -> Level {
        match n {
            0 => Level::Emergency,
            1 => Level::Alert,
            2 => Level::Critical,
            3 => Level::Error,
            4 => Level::Warning,
            5 => Level::Notice,
            6 => Level::Info,
            _ => Level::Debug,
        }
    }

    pub fn as_syslog(self) -> u8 {
        self as u8
    }

    /// The label value (names as Grafana's log level detection knows them).
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Emergency => "emerg",
            Level::Alert => "alert",
            Level::Critical => "crit",
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Notice => "notice",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }

    /// Parses a label value or syslog number (`"error"`, `"err"`, `"3"`).
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s {
            "emerg" | "emergency" | "0" => Level::Emergency,
            "alert" | "1" => Level::Alert,
            "crit" | "critical" | "2" => Level::Critical,
            "error" | "err" | "3" => Level::Error,
            "warning" | "warn" | "4" => Level::Warning,
            "notice" | "5" => Level::Notice,
            "info" | "6" => Level::Info,
            "debug" | "7" => Level::Debug,
            _ => return None,
        })
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The low-cardinality labels of an event (see the module doc for the mapping).
/// `source` is not stored: it is [`Event::origin`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    pub host: Option<String>,
    pub app: Option<String>,
    pub service: Option<String>,
    pub container_name: Option<String>,
    pub unit: Option<String>,
    pub level: Option<Level>,
}

impl Labels {
    /// The labels as `(name, value)` pairs, `source` included, in a fixed order.
    pub fn pairs(&self, origin: Origin) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("host", self.host.as_deref()),
            ("source", Some(origin.as_str())),
            ("app", self.app.as_deref()),
            ("service", self.service.as_deref()),
            ("container_name", self.container_name.as_deref()),
            ("unit", self.unit.as_deref()),
            ("level", self.level.map(Level::as_str)),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
    }
}

/// One log record on its way from a source to the sinks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// When the line was written, in nanoseconds since the Unix epoch.
    pub timestamp_ns: i64,
    pub origin: Origin,
    pub labels: Labels,
    /// The log line itself; bytes, since journal messages need not be UTF-8.
    pub message: Vec<u8>,
    /// Everything else, in the order the source found it.
    pub fields: Vec<(String, String)>,
}

impl Event {
    /// An event with no labels and no fields.
    pub fn new(timestamp_ns: i64, origin: Origin, message: impl Into<Vec<u8>>) -> Event {
        Event {
            timestamp_ns,
            origin,
            labels: Labels::default(),
            message: message.into(),
            fields: Vec::new(),
        }
    }

    /// The value of a field, if present.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A rough size in bytes, for batching decisions (not an exact wire size).
    pub fn approx_size(&self) -> usize {
        let labels: usize = self
            .labels
            .pairs(self.origin)
            .map(|(k, v)| k.len() + v.len())
            .sum();
        let fields: usize = self.fields.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
        24 + labels + self.message.len() + fields
    }
}

/// Spool encoding of events.
///
/// ```text
/// event   := ts:i64le origin:u8 present:u8 label* level:u8 message:bytes nfields:varint (key:bytes value:bytes)*
/// label   := bytes              one per bit set in `present` (bit 0 host, 1 app, 2 service, 3 container_name, 4 unit)
/// level   := 0..=7, or 0xff for none
/// bytes   := len:varint data
/// varint  := unsigned LEB128
/// ```
pub mod codec {
    use super::{Event, Labels, Level, Origin};

    /// The encoded bytes do not form an event: the record is corrupt.
    #[derive(Debug, thiserror::Error, PartialEq, Eq)]
    #[error("corrupt event encoding at byte {offset}: {what}")]
    pub struct DecodeError {
        pub offset: usize,
        pub what: &'static str,
    }

    /// Appends `event`'s encoding to `out`.
    ///
    /// Reserves an upper bound once, then appends piece by piece: no
    /// sizing pass and no zero-filling before the bytes are written (the
    /// spool encodes millions of events a second; measured by the forward
    /// instructions per Docker-shaped event, measured with callgrind).
    pub fn encode(event: &Event, out: &mut Vec<u8>) {
        let l = &event.labels;
        let opt = [&l.host, &l.app, &l.service, &l.container_name, &l.unit];
        // Every length prefix takes at most 10 bytes.
        let mut upper = 8 + 1 + 1 + 1 + 10 + event.message.len() + 10;
        let mut present = 0u8;
        for (i, v) in opt.iter().enumerate() {
            if let Some(v) = v {
                present |= 1 << i;
                upper += 10 + v.len();
            }
        }
        for (k, v) in &event.fields {
            upper += 20 + k.len() + v.len();
        }
        out.reserve(upper);
        out.extend_from_slice(&event.timestamp_ns.to_le_bytes());
        out.push(match event.origin {
            Origin::Docker => 0,
            Origin::Journal => 1,
        });
        out.push(present);
        for v in opt.iter().copied().flatten() {
            put_bytes(out, v.as_bytes());
        }
        out.push(l.level.map_or(0xff, Level::as_syslog));
        put_bytes(out, &event.message);
        put_varint(out, event.fields.len() as u64);
        for (k, v) in &event.fields {
            put_bytes(out, k.as_bytes());
            put_bytes(out, v.as_bytes());
        }
    }

    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
        put_varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }

    /// Decodes one event from the start of `buf`; returns it and the bytes used.
    pub fn decode(buf: &[u8]) -> Result<(Event, usize), DecodeError> {
        let mut r = Reader { buf, pos: 0 };
        let ts = i64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
        let origin = match r.byte()? {
            0 => Origin::Docker,
            1 => Origin::Journal,
            _ => return Err(r.err("unknown origin")),
        };
        let present = r.byte()?;
        let mut labels = Labels::default();
        {
            let slots = [
                &mut labels.host,
                &mut labels.app,
                &mut labels.service,
                &mut labels.container_name,
                &mut labels.unit,
            ];
            for (i, slot) in slots.into_iter().enumerate() {
                if present & (1 << i) != 0 {
                    *slot = Some(r.string()?);
                }
            }
        }
        labels.level = match r.byte()? {
            0xff => None,
            n @ 0..=7 => Some(Level::from_syslog(n)),
            _ => return Err(r.err("bad level")),
        };
        let message = r.bytes()?.to_vec();
        let n = r.varint()?;
        // Each field needs at least two bytes: bound the allocation by what is there.
        if n > (r.buf.len() - r.pos) as u64 / 2 {
            return Err(r.err("field count larger than record"));
        }
        let mut fields = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let k = r.string()?;
            let v = r.string()?;
            fields.push((k, v));
        }
        Ok((
            Event {
                timestamp_ns: ts,
                origin,
                labels,
                message,
                fields,
            },
            r.pos,
        ))
    }

    struct Reader<'a> {
        buf: &'a [u8],
        pos: usize,
    }

    impl<'a> Reader<'a> {
        fn err(&self, what: &'static str) -> DecodeError {
            DecodeError {
                offset: self.pos,
                what,
            }
        }
        fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
            if self.buf.len() - self.pos < n {
                return Err(self.err("truncated"));
            }
            let s = &self.buf[self.pos..self.pos + n];
            self.pos += n;
            Ok(s)
        }
        fn byte(&mut self) -> Result<u8, DecodeError> {
            Ok(self.take(1)?[0])
        }
        fn varint(&mut self) -> Result<u64, DecodeError> {
            let mut v = 0u64;
            for shift in (0..64).step_by(7) {
                let b = self.byte()?;
                v |= u64::from(b & 0x7f) << shift;
                if b & 0x80 == 0 {
                    return Ok(v);
                }
            }
            Err(self.err("varint too long"))
        }
        fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
            let n = self.varint()?;
            let n = usize::try_from(n).map_err(|_| self.err("length overflow"))?;
            self.take(n)
        }
        fn string(&mut self) -> Result<String, DecodeError> {
            let b = self.bytes()?;
            String::from_utf8(b.to_vec()).map_err(|_| self.err("label or field not UTF-8"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        let mut e = Event::new(
            1_700_000_000_123_456_789,
            Origin::Docker,
            b"hello \xff world".to_vec(),
        );
        e.labels.host = Some("h1".into());
        e.labels.service = Some("db".into());
        e.labels.level = Some(Level::Error);
        e.fields.push(("container_id".into(), "abc123".into()));
        e
    }

    #[test]
    fn codec_round_trips() {
        let e = sample();
        let mut buf = Vec::new();
        codec::encode(&e, &mut buf);
        codec::encode(&Event::new(-5, Origin::Journal, ""), &mut buf);
        let (d, n) = codec::decode(&buf).unwrap();
        assert_eq!(d, e);
        let (d2, n2) = codec::decode(&buf[n..]).unwrap();
        assert_eq!(d2, Event::new(-5, Origin::Journal, ""));
        assert_eq!(n + n2, buf.len());
    }

    /// Lengths whose varints take 1, 2 and 3 bytes, every label, many
    /// fields: the encoder sizes its output before writing it.
    #[test]
    fn codec_round_trips_every_length_class() {
        for n in [0, 1, 127, 128, 16_383, 16_384, 70_000] {
            let mut e = Event::new(i64::MIN, Origin::Journal, vec![b'm'; n]);
            e.labels = Labels {
                host: Some("h".repeat(n % 300)),
                app: Some("a".into()),
                service: Some(String::new()),
                container_name: Some("c".repeat(128)),
                unit: Some("u.service".into()),
                level: Some(Level::Debug),
            };
            e.fields = (0..200)
                .map(|i| (format!("k{i}"), "v".repeat(i * 3)))
                .collect();
            let mut buf = b"prefix".to_vec();
            codec::encode(&e, &mut buf);
            let (d, used) = codec::decode(&buf[6..]).unwrap();
            assert_eq!(d, e, "message of {n} bytes");
            assert_eq!(used, buf.len() - 6, "message of {n} bytes");
        }
    }

    /// The bytes are the spool format's, written out by hand from its
    /// grammar: records written before the encoder was rewritten (and
    /// after) are the same bytes, read by the same decoder.
    #[test]
    fn codec_bytes_are_the_documented_format() {
        let mut buf = Vec::new();
        codec::encode(&sample(), &mut buf);
        let mut expected = 1_700_000_000_123_456_789i64.to_le_bytes().to_vec();
        expected.extend_from_slice(&[0, 0b101]); // docker; host and service
        expected.extend_from_slice(b"\x02h1\x02db");
        expected.push(3); // error
        expected.extend_from_slice(b"\x0dhello \xff world");
        expected.extend_from_slice(b"\x01\x0ccontainer_id\x06abc123");
        assert_eq!(buf, expected);
        // A 200-byte message: a two-byte length.
        let mut buf = Vec::new();
        codec::encode(&Event::new(0, Origin::Journal, vec![b'x'; 200]), &mut buf);
        assert_eq!(buf[8..14], [1, 0, 0xff, 0xc8, 0x01, b'x']);
        assert_eq!(buf[buf.len() - 1], 0);
    }

    #[test]
    fn codec_rejects_every_truncation() {
        let mut buf = Vec::new();
        codec::encode(&sample(), &mut buf);
        for cut in 0..buf.len() {
            assert!(codec::decode(&buf[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn labels_pairs_include_source() {
        let e = sample();
        let pairs: Vec<_> = e.labels.pairs(e.origin).collect();
        assert_eq!(
            pairs,
            vec![
                ("host", "h1"),
                ("source", "docker"),
                ("service", "db"),
                ("level", "error")
            ]
        );
    }

    #[test]
    fn level_parse_and_names() {
        for n in 0..8u8 {
            let l = Level::from_syslog(n);
            assert_eq!(Level::parse(l.as_str()), Some(l));
            assert_eq!(Level::parse(&n.to_string()), Some(l));
        }
        assert_eq!(Level::parse("loud"), None);
    }
}
