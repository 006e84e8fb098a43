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

    /// A rough size in bytes, for batching decisions (not an exact wire size):
    /// the names and values of [`Labels::pairs`], the message, the fields'
    /// names and values (2 more each), and 24.
    ///
    /// Summed label by label: through `pairs` (an iterator over an array of
    /// options) it was about 100 instructions per Docker-shaped event, once
    /// when the forward source batches it and once when the spool reader
    /// does (callgrind). `approx_size_reference` in the tests is that way.
    pub fn approx_size(&self) -> usize {
        let l = &self.labels;
        let label = |name: &str, v: &Option<String>| v.as_ref().map_or(0, |v| name.len() + v.len());
        let labels = label("host", &l.host)
            + "source".len()
            + self.origin.as_str().len()
            + label("app", &l.app)
            + label("service", &l.service)
            + label("container_name", &l.container_name)
            + label("unit", &l.unit)
            + l.level.map_or(0, |v| "level".len() + v.as_str().len());
        let fields: usize = self.fields.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
        24 + labels + self.message.len() + fields
    }

    /// [`Event::approx_size`] through [`Labels::pairs`], as it was written
    /// before: the reference it is compared with.
    #[cfg(test)]
    fn approx_size_reference(&self) -> usize {
        let labels: usize = self
            .labels
            .pairs(self.origin)
            .map(|(k, v)| k.len() + v.len())
            .sum();
        let fields: usize = self.fields.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
        24 + labels + self.message.len() + fields
    }

    /// The heap bytes this event holds: its buffers' capacities (not their
    /// lengths) and its field list's. What keeping it for reuse costs: the
    /// pools of reused events (forward batches, the journal mapping, the
    /// spool reader) bound what they keep with it.
    pub fn held_bytes(&self) -> usize {
        let l = &self.labels;
        // Label by label, not through an array of them (see `approx_size`).
        let cap = |s: &Option<String>| s.as_ref().map_or(0, String::capacity);
        let labels =
            cap(&l.host) + cap(&l.app) + cap(&l.service) + cap(&l.container_name) + cap(&l.unit);
        let fields: usize = self
            .fields
            .iter()
            .map(|(k, v)| k.capacity() + v.capacity())
            .sum();
        self.message.capacity()
            + labels
            + fields
            + self.fields.capacity() * std::mem::size_of::<(String, String)>()
    }

    /// [`Event::held_bytes`] as it was written before: the reference it is
    /// compared with.
    #[cfg(test)]
    fn held_bytes_reference(&self) -> usize {
        let l = &self.labels;
        let labels: usize = [&l.host, &l.app, &l.service, &l.container_name, &l.unit]
            .iter()
            .map(|s| s.as_ref().map_or(0, String::capacity))
            .sum();
        let fields: usize = self
            .fields
            .iter()
            .map(|(k, v)| k.capacity() + v.capacity())
            .sum();
        self.message.capacity()
            + labels
            + fields
            + self.fields.capacity() * std::mem::size_of::<(String, String)>()
    }
}

/// Whether `a` and `b` hold the same bytes: `a == b`, without a call for
/// short ones. `==` on slices calls libc's `memcmp`, about 40 instructions
/// a call with its set-up (callgrind) for strings that are mostly a dozen
/// bytes: the Forward source compares each event's container name, id,
/// stream and tag with the previous event's when it builds the event and
/// again when it encodes it for the spool, some 20 compares per Docker
/// event. Up to 32 bytes, two overlapping loads from each end cover every
/// byte; longer ones go to `==`.
#[inline]
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => word::<4>(a, 0) == word::<4>(b, 0) && word::<4>(a, n - 4) == word::<4>(b, n - 4),
        8..=16 => word::<8>(a, 0) == word::<8>(b, 0) && word::<8>(a, n - 8) == word::<8>(b, n - 8),
        17..=32 => {
            word::<16>(a, 0) == word::<16>(b, 0) && word::<16>(a, n - 16) == word::<16>(b, n - 16)
        }
        _ => a == b,
    }
}

/// The `N` bytes of `s` from `at`, as an array (compared as one word).
#[inline]
fn word<const N: usize>(s: &[u8], at: usize) -> [u8; N] {
    s[at..at + N].try_into().expect("N bytes")
}

/// Spool encoding of events, in two versions; the record header says which
/// one its body holds (see `spool::record`).
///
/// Version 2, written since 2026-12 (issues 20 and 24): what repeats from
/// one event to the next (host, container name and id, `tag`, field names)
/// is stored once per record, and the delivery side decodes into reused
/// events without allocating.
///
/// ```text
/// events  := event*
/// event   := ts:zvarint head:u8 level:u8 label* message:bytes nfields:varint (key:str value:str)*
/// ts      := the timestamp minus the previous event's (the first: minus 0), zigzag varint
/// head    := bits 0-4: which labels follow (0 host, 1 app, 2 service, 3 container_name,
///            4 unit); bit 5: origin journal (else docker); bits 6-7 zero
/// label*  := in the order host, app, container_name, service, unit
/// str     := tag:varint data
///            tag 0: the previous event's string in the same slot, no data (the same
///                   label; for fields, the key or value of the field at the same index)
///            tag 1: this event's container_name, no data (Docker's default service)
///            tag n >= 2: n - 2 bytes of UTF-8 follow
/// ```
///
/// Version 1, written before: every event stands alone.
///
/// ```text
/// event   := ts:i64le origin:u8 present:u8 label* level:u8 message:bytes nfields:varint (key:bytes value:bytes)*
/// label   := bytes              one per bit set in `present` (bit 0 host, 1 app, 2 service, 3 container_name, 4 unit)
/// ```
///
/// Both: `level` is 0..=7, or 0xff for none; `bytes := len:varint data`;
/// `varint` is unsigned LEB128; a zigzag varint maps 0, -1, 1, -2... to 0, 1, 2, 3...
pub mod codec {
    use super::{same_bytes, Event, Labels, Level, Origin};

    /// The encoded bytes do not form an event: the record is corrupt.
    #[derive(Debug, thiserror::Error, PartialEq, Eq)]
    #[error("corrupt event encoding at byte {offset}: {what}")]
    pub struct DecodeError {
        pub offset: usize,
        pub what: &'static str,
    }

    /// Which encoding a record's events are in.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Version {
        V1,
        V2,
    }

    /// Label slots, in the order version 2 writes them.
    const HOST: usize = 0;
    const APP: usize = 1;
    const SERVICE: usize = 2;
    const CONTAINER_NAME: usize = 3;
    const UNIT: usize = 4;
    const V2_LABEL_ORDER: [usize; 5] = [HOST, APP, CONTAINER_NAME, SERVICE, UNIT];
    /// Field `i`'s key is slot `FIELDS + 2 i`, its value the next one.
    const FIELDS: usize = 5;
    const ORIGIN_JOURNAL: u8 = 1 << 5;

    fn label_refs(l: &Labels) -> [Option<&str>; 5] {
        [
            l.host.as_deref(),
            l.app.as_deref(),
            l.service.as_deref(),
            l.container_name.as_deref(),
            l.unit.as_deref(),
        ]
    }

    fn label_slot(l: &mut Labels, slot: usize) -> &mut Option<String> {
        match slot {
            HOST => &mut l.host,
            APP => &mut l.app,
            SERVICE => &mut l.service,
            CONTAINER_NAME => &mut l.container_name,
            _ => &mut l.unit,
        }
    }

    /// The "previous event" of a record's first: no label and no field to
    /// share with it, and the 0 its timestamp is stored against.
    const NOTHING_BEFORE: Event = Event {
        timestamp_ns: 0,
        origin: Origin::Docker,
        labels: Labels {
            host: None,
            app: None,
            service: None,
            container_name: None,
            unit: None,
            level: None,
        },
        message: Vec::new(),
        fields: Vec::new(),
    };

    /// Appends the version 2 encoding of `events` (one record's) to `out`.
    ///
    /// Each string is compared with the previous event's in the same slot
    /// (a length check and a short compare, no hashing): the Forward source
    /// appends one connection's events per record, whose container, tag and
    /// host repeat, so a 64 KiB tag costs 64 KiB per record, not per event.
    ///
    /// Written slot by slot, with no upper bound reserved first (`out` is
    /// reused and grows as a `Vec` does): the version before (kept in the
    /// tests as the reference) walked each event's labels and fields twice
    /// and looked its slots up through arrays of options, 707 instructions
    /// per Docker-shaped event (callgrind, 50 connections' batches).
    pub fn encode_events(events: &[Event], out: &mut Vec<u8>) {
        let mut prev = &NOTHING_BEFORE;
        for e in events {
            encode_after(e, prev, out);
            prev = e;
        }
    }

    /// Appends `e`, stored against `p` (the event before it in the record).
    #[inline]
    fn encode_after(e: &Event, p: &Event, out: &mut Vec<u8>) {
        let (l, pl) = (&e.labels, &p.labels);
        let mut head = u8::from(l.host.is_some())
            | u8::from(l.app.is_some()) << APP
            | u8::from(l.service.is_some()) << SERVICE
            | u8::from(l.container_name.is_some()) << CONTAINER_NAME
            | u8::from(l.unit.is_some()) << UNIT;
        if e.origin == Origin::Journal {
            head |= ORIGIN_JOURNAL;
        }
        put_varint(out, zigzag(e.timestamp_ns.wrapping_sub(p.timestamp_ns)));
        out.extend_from_slice(&[head, l.level.map_or(0xff, Level::as_syslog)]);
        // In `V2_LABEL_ORDER`.
        put_label(out, &l.host, &pl.host, None);
        put_label(out, &l.app, &pl.app, None);
        put_label(out, &l.container_name, &pl.container_name, None);
        put_label(out, &l.service, &pl.service, l.container_name.as_deref());
        put_label(out, &l.unit, &pl.unit, None);
        put_bytes(out, &e.message);
        put_varint(out, e.fields.len() as u64);
        let mut before = p.fields.iter();
        for (k, v) in &e.fields {
            match before.next() {
                Some((pk, pv)) => {
                    put_str(out, k, Some(pk), None);
                    put_str(out, v, Some(pv), None);
                }
                None => {
                    put_new(out, k);
                    put_new(out, v);
                }
            }
        }
    }

    /// A label, if the event has it.
    #[inline(always)]
    fn put_label(
        out: &mut Vec<u8>,
        v: &Option<String>,
        prev: &Option<String>,
        alias: Option<&str>,
    ) {
        if let Some(v) = v {
            put_str(out, v, prev.as_deref(), alias);
        }
    }

    // Always inlined: with `same_bytes` inside it, the compiler made it a
    // call, about 15 instructions a string (callgrind), nine strings an event.
    #[inline(always)]
    fn put_str(out: &mut Vec<u8>, v: &str, prev: Option<&str>, alias: Option<&str>) {
        let same =
            |other: Option<&str>| other.is_some_and(|o| same_bytes(o.as_bytes(), v.as_bytes()));
        if same(prev) {
            out.push(0);
        } else if same(alias) {
            out.push(1);
        } else {
            put_new(out, v);
        }
    }

    /// A string stored with its bytes (tag n >= 2).
    #[inline]
    fn put_new(out: &mut Vec<u8>, v: &str) {
        put_varint(out, v.len() as u64 + 2);
        out.extend_from_slice(v.as_bytes());
    }

    /// [`encode_events`] as it was written before: the reference its
    /// output is compared with.
    #[cfg(test)]
    pub fn encode_events_reference(events: &[Event], out: &mut Vec<u8>) {
        let mut prev: Option<&Event> = None;
        for e in events {
            let labels = label_refs(&e.labels);
            let prev_labels = prev.map(|p| label_refs(&p.labels)).unwrap_or_default();
            // Every varint takes at most 10 bytes.
            let mut upper = 10 + 2 + 10 + e.message.len() + 10;
            let mut head = 0u8;
            for (i, v) in labels.iter().enumerate() {
                if let Some(v) = v {
                    head |= 1 << i;
                    upper += 10 + v.len();
                }
            }
            for (k, v) in &e.fields {
                upper += 20 + k.len() + v.len();
            }
            out.reserve(upper);
            let prev_ts = prev.map_or(0, |p| p.timestamp_ns);
            put_varint(out, zigzag(e.timestamp_ns.wrapping_sub(prev_ts)));
            if e.origin == Origin::Journal {
                head |= ORIGIN_JOURNAL;
            }
            out.push(head);
            out.push(e.labels.level.map_or(0xff, Level::as_syslog));
            let container = labels[CONTAINER_NAME];
            for slot in V2_LABEL_ORDER {
                if let Some(v) = labels[slot] {
                    let alias = if slot == SERVICE { container } else { None };
                    put_str(out, v, prev_labels[slot], alias);
                }
            }
            put_bytes(out, &e.message);
            put_varint(out, e.fields.len() as u64);
            let prev_fields = prev.map_or(&[][..], |p| &p.fields[..]);
            for (i, (k, v)) in e.fields.iter().enumerate() {
                let p = prev_fields.get(i);
                put_str(out, k, p.map(|p| p.0.as_str()), None);
                put_str(out, v, p.map(|p| p.1.as_str()), None);
            }
            prev = Some(e);
        }
    }

    fn zigzag(v: i64) -> u64 {
        ((v << 1) ^ (v >> 63)) as u64
    }

    fn unzigzag(v: u64) -> i64 {
        ((v >> 1) as i64) ^ -((v & 1) as i64)
    }

    /// Appends `event`'s version 1 encoding to `out`: what weir wrote before
    /// version 2, kept so that tests can write old records.
    #[cfg(test)]
    pub fn encode_v1(event: &Event, out: &mut Vec<u8>) {
        let l = &event.labels;
        let opt = [&l.host, &l.app, &l.service, &l.container_name, &l.unit];
        let mut present = 0u8;
        for (i, v) in opt.iter().enumerate() {
            if v.is_some() {
                present |= 1 << i;
            }
        }
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

    /// Where a slot's string is in the events buffer.
    #[derive(Debug, Clone, Copy)]
    struct Span {
        start: u32,
        len: u32,
    }

    /// A slot the previous event did not fill.
    const NONE: Span = Span {
        start: u32::MAX,
        len: 0,
    };

    /// Decodes one record's events, one at a time, into events the caller
    /// reuses: strings and vectors keep their capacity, so once warm a
    /// decode allocates nothing. Holds what version 2 refers back to
    /// (where the previous event's strings are in the buffer), so one
    /// `Decoder` follows one record from its first event, over every call.
    #[derive(Debug)]
    pub struct Decoder {
        version: Version,
        prev_ts: i64,
        /// The previous event's strings, by slot (version 2).
        slots: Vec<Span>,
        /// Which of the current event's field strings are references to
        /// the previous event's (tag 0), by slot from `FIELDS`.
        back: Vec<bool>,
        /// Version 2 events are decoded without their fields (see
        /// [`Decoder::skip_fields`]).
        skip_fields: bool,
    }

    impl Decoder {
        /// A decoder at the first event of a record in `version`.
        pub fn new(version: Version) -> Decoder {
            Decoder {
                version,
                prev_ts: 0,
                slots: Vec::new(),
                back: Vec::new(),
                skip_fields: false,
            }
        }

        /// From now on, version 2 events are decoded with no fields: they
        /// are read past (and still referred back to), not copied or
        /// checked as UTF-8. For a reader whose sink never reads fields
        /// (Loki's raw lines without structured metadata): most of an
        /// event's strings are fields (issue 24).
        pub fn skip_fields(&mut self) {
            self.skip_fields = true;
        }

        /// Starts over at the first event of a record in `version`.
        pub fn reset(&mut self, version: Version) {
            self.version = version;
            self.prev_ts = 0;
            self.slots.clear();
        }

        /// Decodes the event at `*at` of `buf` (a record's encoded events,
        /// from its first) into `event`, overwriting all of it, and moves
        /// `*at` past it. On error `event` holds a mix of old and new
        /// values, and the rest of the record cannot be decoded.
        pub fn decode_into(
            &mut self,
            buf: &[u8],
            at: &mut usize,
            event: &mut Event,
        ) -> Result<(), DecodeError> {
            self.decode_after(buf, at, event, None)
        }

        /// As [`Decoder::decode_into`], with `prev` the event this decoder
        /// decoded last from the same record, unchanged since (or `None`).
        /// A version 2 back-reference is then copied from `prev`'s string,
        /// which is text already, instead of checking the bytes again: half
        /// of a journal record's strings are such references (the events a
        /// pool hands out held other strings, so they are copied either way).
        pub fn decode_after(
            &mut self,
            buf: &[u8],
            at: &mut usize,
            event: &mut Event,
            prev: Option<&Event>,
        ) -> Result<(), DecodeError> {
            let mut r = Reader { buf, pos: *at };
            match self.version {
                Version::V1 => decode_v1(&mut r, event)?,
                Version::V2 => {
                    debug_assert!(prev.is_none_or(|p| p.timestamp_ns == self.prev_ts));
                    self.decode_v2(&mut r, event, prev)?
                }
            }
            *at = r.pos;
            Ok(())
        }

        fn decode_v2(
            &mut self,
            r: &mut Reader<'_>,
            e: &mut Event,
            prev: Option<&Event>,
        ) -> Result<(), DecodeError> {
            let ts = self.prev_ts.wrapping_add(unzigzag(r.varint()?));
            let head = r.byte()?;
            if head & 0xc0 != 0 {
                return Err(r.err("unknown event flags"));
            }
            e.origin = if head & ORIGIN_JOURNAL != 0 {
                Origin::Journal
            } else {
                Origin::Docker
            };
            e.labels.level = level(r)?;
            // First where each string is, then the strings: those of this
            // event are checked as UTF-8 in one go (see `Text`).
            let text_start = r.pos;
            self.slots.resize(self.slots.len().max(FIELDS), NONE);
            let mut labels = [None; 5];
            let mut container = NONE;
            for slot in V2_LABEL_ORDER {
                if head & (1 << slot) == 0 {
                    self.slots[slot] = NONE;
                    continue;
                }
                let (span, back) = self.str(r, slot, container)?;
                labels[slot] = Some((span, back));
                if slot == CONTAINER_NAME {
                    container = span;
                }
            }
            let labels_end = r.pos;
            let msg = r.bytes()?;
            let fields_start = r.pos;
            let n = r.count()?;
            let want = FIELDS + 2 * n;
            if self.slots.len() < want {
                self.slots.resize(want, NONE);
            }
            self.back.clear();
            for slot in FIELDS..want {
                let (_, back) = self.str(r, slot, NONE)?;
                self.back.push(back);
            }
            // Read past (their places are kept for the next event's
            // references) but not copied.
            let n = if self.skip_fields { 0 } else { n };
            let text = Text::new(r.buf, (text_start, labels_end), (fields_start, r.pos));
            let prev_labels = prev.map(|p| label_refs(&p.labels)).unwrap_or_default();
            for (slot, got) in labels.iter().enumerate() {
                let dst = label_slot(&mut e.labels, slot);
                match *got {
                    None => *dst = None,
                    Some((span, back)) => {
                        let dst = dst.get_or_insert_with(String::new);
                        let prev = prev_labels[slot].filter(|_| back);
                        put(r, dst, span, &text, prev)?;
                    }
                }
            }
            e.message.clear();
            e.message.extend_from_slice(msg);
            e.fields.truncate(n);
            let prev_fields = prev.map_or(&[][..], |p| &p.fields[..]);
            for i in 0..n {
                if e.fields.len() == i {
                    e.fields.push((String::new(), String::new()));
                }
                let (k, v) = &mut e.fields[i];
                let (pk, pv) = match prev_fields.get(i) {
                    Some((pk, pv)) => (Some(pk.as_str()), Some(pv.as_str())),
                    None => (None, None),
                };
                let (ks, vs) = (FIELDS + 2 * i, FIELDS + 2 * i + 1);
                let back = |slot: usize| self.back[slot - FIELDS];
                put(r, k, self.slots[ks], &text, pk.filter(|_| back(ks)))?;
                put(r, v, self.slots[vs], &text, pv.filter(|_| back(vs)))?;
            }
            // The next event refers to this one's fields only.
            self.slots.truncate(want);
            e.timestamp_ns = ts;
            self.prev_ts = ts;
            Ok(())
        }

        /// Reads a `str` of `slot` and remembers where it is for the next
        /// event; true if it referred to the previous event's string in
        /// this slot (tag 0).
        // Inlined: called 15 times per journal event, and its prologue and
        // epilogue cost as much as its work (callgrind).
        #[inline(always)]
        fn str(
            &mut self,
            r: &mut Reader<'_>,
            slot: usize,
            alias: Span,
        ) -> Result<(Span, bool), DecodeError> {
            let tag = r.varint()?;
            let span = match tag {
                0 => self.slots[slot],
                1 => alias,
                n => {
                    let len = usize::try_from(n - 2).map_err(|_| r.err("length overflow"))?;
                    let start = r.pos;
                    r.take(len)?;
                    // Record bodies are under 4 GiB (their length is a u32).
                    Span {
                        start: start as u32,
                        len: len as u32,
                    }
                }
            };
            if span.start == u32::MAX {
                return Err(r.err("reference to a string that is not there"));
            }
            self.slots[slot] = span;
            Ok((span, tag == 0))
        }
    }

    /// The bytes of one event's labels and of its fields (with their tags
    /// and length varints; not its message, which is bytes, not text), as
    /// text where they are all UTF-8: one check for each part's strings
    /// rather than one per string. Each part is checked on first use only:
    /// most strings refer to the previous event's (tag 0) and are copied
    /// from it, so most events need neither check. A part fails when one of
    /// its strings is 126 bytes or longer (its length varint has a high
    /// byte); its strings are then checked alone. A string's bytes sliced
    /// from valid text at character boundaries are valid themselves.
    struct Text<'a> {
        buf: &'a [u8],
        labels: (usize, usize),
        fields: (usize, usize),
        labels_text: std::cell::OnceCell<Option<&'a str>>,
        fields_text: std::cell::OnceCell<Option<&'a str>>,
    }

    impl<'a> Text<'a> {
        fn new(buf: &'a [u8], labels: (usize, usize), fields: (usize, usize)) -> Text<'a> {
            Text {
                buf,
                labels,
                fields,
                labels_text: std::cell::OnceCell::new(),
                fields_text: std::cell::OnceCell::new(),
            }
        }

        /// The string at `span` if it lies in either part's text, at
        /// character boundaries.
        fn get(&self, span: Span) -> Option<&'a str> {
            let (start, len) = (span.start as usize, span.len as usize);
            let ((from, to), cell) = if start >= self.fields.0 {
                (self.fields, &self.fields_text)
            } else if start >= self.labels.0 {
                (self.labels, &self.labels_text)
            } else {
                return None;
            };
            let text = cell.get_or_init(|| std::str::from_utf8(&self.buf[from..to]).ok());
            text.as_ref()?.get(start - from..start - from + len)
        }
    }

    /// Overwrites `dst` with the string at `span`, keeping its capacity:
    /// copied from `prev` (the previous event's string that `span` refers
    /// to), else from this event's text, else checked as UTF-8 alone.
    // Inlined: called 15 times per journal event with five arguments, its
    // prologue and epilogue cost ~16 instructions a call (callgrind).
    #[inline(always)]
    fn put(
        r: &Reader<'_>,
        dst: &mut String,
        span: Span,
        text: &Text<'_>,
        prev: Option<&str>,
    ) -> Result<(), DecodeError> {
        match prev.or_else(|| text.get(span)) {
            Some(s) => {
                copy(dst, s);
                Ok(())
            }
            None => set(r, dst, r.span(span)?),
        }
    }

    fn level(r: &mut Reader<'_>) -> Result<Option<Level>, DecodeError> {
        match r.byte()? {
            0xff => Ok(None),
            n @ 0..=7 => Ok(Some(Level::from_syslog(n))),
            _ => Err(r.err("bad level")),
        }
    }

    fn decode_v1(r: &mut Reader<'_>, e: &mut Event) -> Result<(), DecodeError> {
        e.timestamp_ns = i64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
        e.origin = match r.byte()? {
            0 => Origin::Docker,
            1 => Origin::Journal,
            _ => return Err(r.err("unknown origin")),
        };
        let present = r.byte()?;
        for i in 0..5 {
            let dst = label_slot(&mut e.labels, i);
            if present & (1 << i) != 0 {
                let b = r.bytes()?;
                set_opt(r, dst, b)?;
            } else {
                *dst = None;
            }
        }
        e.labels.level = level(r)?;
        let msg = r.bytes()?;
        e.message.clear();
        e.message.extend_from_slice(msg);
        let n = r.count()?;
        e.fields.truncate(n);
        for i in 0..n {
            let (k, v) = (r.bytes()?, r.bytes()?);
            set_field(r, &mut e.fields, i, k, v)?;
        }
        Ok(())
    }

    fn utf8<'a>(r: &Reader<'_>, b: &'a [u8]) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(b).map_err(|_| r.err("label or field not UTF-8"))
    }

    /// Overwrites `dst` with `v` (checked to be UTF-8), keeping its
    /// capacity. A reused event often holds the same string already (the
    /// same container's events come back to the pool): then nothing is
    /// checked or copied, since equal bytes are valid UTF-8.
    fn set(r: &Reader<'_>, dst: &mut String, v: &[u8]) -> Result<(), DecodeError> {
        if dst.as_bytes() != v {
            let v = utf8(r, v)?;
            dst.clear();
            dst.push_str(v);
        }
        Ok(())
    }

    /// Overwrites `dst` with `src` (text already), keeping its capacity.
    /// `same_bytes`, not `!=`: most strings are short, and `!=` is a call
    /// to libc's memcmp (~8 per event in the spool reader).
    fn copy(dst: &mut String, src: &str) {
        if !same_bytes(dst.as_bytes(), src.as_bytes()) {
            dst.clear();
            dst.push_str(src);
        }
    }

    fn set_opt(r: &Reader<'_>, dst: &mut Option<String>, v: &[u8]) -> Result<(), DecodeError> {
        match dst {
            Some(s) => set(r, s, v),
            None => {
                *dst = Some(utf8(r, v)?.to_owned());
                Ok(())
            }
        }
    }

    /// Sets field `i` of `fields` (which holds at least `i` fields).
    fn set_field(
        r: &Reader<'_>,
        fields: &mut Vec<(String, String)>,
        i: usize,
        k: &[u8],
        v: &[u8],
    ) -> Result<(), DecodeError> {
        match fields.get_mut(i) {
            Some((fk, fv)) => {
                set(r, fk, k)?;
                set(r, fv, v)
            }
            None => {
                fields.push((utf8(r, k)?.to_owned(), utf8(r, v)?.to_owned()));
                Ok(())
            }
        }
    }

    /// Decodes every event of `buf` (all of one record's events, in
    /// `version`): for tests and tools; the spool reader decodes into reused
    /// events with a [`Decoder`].
    pub fn decode_all(buf: &[u8], version: Version) -> Result<Vec<Event>, DecodeError> {
        let mut d = Decoder::new(version);
        let mut out = Vec::new();
        let mut at = 0;
        while at < buf.len() {
            let mut e = Event::new(0, Origin::Docker, Vec::new());
            d.decode_after(buf, &mut at, &mut e, out.last())?;
            out.push(e);
        }
        Ok(out)
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
            // One byte: tags, lengths under 126, most timestamp deltas.
            if let Some(&b) = self.buf.get(self.pos) {
                if b < 0x80 {
                    self.pos += 1;
                    return Ok(u64::from(b));
                }
            }
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
        /// A field count, bounded by what is left (each field takes at
        /// least two bytes), so a corrupt count cannot make a large allocation.
        fn count(&mut self) -> Result<usize, DecodeError> {
            let n = self.varint()?;
            if n > (self.buf.len() - self.pos) as u64 / 2 {
                return Err(self.err("field count larger than record"));
            }
            Ok(n as usize)
        }
        /// The bytes at `span`.
        fn span(&self, span: Span) -> Result<&'a [u8], DecodeError> {
            let (s, n) = (span.start as usize, span.len as usize);
            self.buf
                .get(s..s + n)
                .ok_or_else(|| self.err("reference out of range"))
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

    /// `same_bytes` is `==`: for every length up to past its longest
    /// short case, a change at any one byte (low bit, high bit) is seen,
    /// and so is any difference in length.
    #[test]
    fn same_bytes_sees_every_byte() {
        for n in 0..=40usize {
            let a: Vec<u8> = (0..n).map(|i| (i * 37 + n) as u8).collect();
            assert!(same_bytes(&a, &a.clone()), "{n}");
            for i in 0..n {
                for flip in [0x01, 0x80] {
                    let mut b = a.clone();
                    b[i] ^= flip;
                    assert!(!same_bytes(&a, &b), "{n} {i} {flip}");
                    assert!(!same_bytes(&b, &a), "{n} {i} {flip}");
                }
            }
            if n > 0 {
                assert!(!same_bytes(&a, &a[..n - 1]), "{n}");
                assert!(!same_bytes(&a[1..], &a), "{n}");
            }
        }
    }

    fn v2(events: &[Event]) -> Vec<u8> {
        let mut buf = Vec::new();
        codec::encode_events(events, &mut buf);
        buf
    }

    fn v1(events: &[Event]) -> Vec<u8> {
        let mut buf = Vec::new();
        for e in events {
            codec::encode_v1(e, &mut buf);
        }
        buf
    }

    /// A Docker event as the forward source builds it.
    fn docker(ts: i64, stream: &str, line: &str) -> Event {
        let mut e = Event::new(ts, Origin::Docker, line);
        e.labels.host = Some("bench-host".into());
        e.labels.container_name = Some("web".into());
        e.labels.service = Some("web".into());
        e.labels.level = Some(if stream == "stderr" {
            Level::Error
        } else {
            Level::Info
        });
        e.fields = vec![
            ("container_id".into(), "0123456789abcdef".repeat(4)),
            ("stream".into(), stream.into()),
            ("tag".into(), "docker.web".into()),
        ];
        e
    }

    fn every_shape() -> Vec<Event> {
        let mut j = Event::new(-5, Origin::Journal, "");
        j.labels.unit = Some("ssh.service".into());
        j.labels.service = Some("ssh".into());
        j.fields = vec![("_PID".into(), "1".into()), ("_COMM".into(), "sshd".into())];
        let mut j2 = j.clone();
        j2.fields.push(("EXTRA".into(), "é".into()));
        j2.labels.level = Some(Level::Debug);
        vec![
            sample(),
            docker(1_700_000_000_000_000_000, "stdout", "GET /"),
            docker(1_700_000_000_000_000_001, "stderr", "oops"),
            docker(1_699_999_999_000_000_000, "stderr", ""),
            j.clone(),
            j2,
            j,
            Event::new(i64::MAX, Origin::Docker, "max"),
            Event::new(i64::MIN, Origin::Docker, "min"),
            docker(0, "stdout", "back to docker"),
        ]
    }

    /// Every shape, in every order of pairs (each event after each other
    /// one, as the record's first and not): the encoder writes what the
    /// one before it wrote.
    #[test]
    fn encoding_is_the_reference_encoding_for_every_shape() {
        let shapes = every_shape();
        for a in &shapes {
            for b in &shapes {
                let pair = [a.clone(), b.clone()];
                let (mut new, mut old) = (Vec::new(), Vec::new());
                codec::encode_events(&pair, &mut new);
                codec::encode_events_reference(&pair, &mut old);
                assert_eq!(new, old, "{a:?} then {b:?}");
            }
        }
        assert_eq!(v2(&shapes), {
            let mut old = Vec::new();
            codec::encode_events_reference(&shapes, &mut old);
            old
        });
    }

    #[test]
    fn codec_round_trips_in_both_versions() {
        let events = every_shape();
        for (version, buf) in [
            (codec::Version::V1, v1(&events)),
            (codec::Version::V2, v2(&events)),
        ] {
            assert_eq!(codec::decode_all(&buf, version).unwrap(), events);
        }
    }

    /// One reused event per decode, whatever it held before (more fields,
    /// other labels, a longer message): the result is the event encoded.
    #[test]
    fn decoding_into_a_reused_event_overwrites_all_of_it() {
        let events = every_shape();
        for (version, buf) in [
            (codec::Version::V1, v1(&events)),
            (codec::Version::V2, v2(&events)),
        ] {
            let mut d = codec::Decoder::new(version);
            let mut reused = every_shape().pop().unwrap();
            reused
                .fields
                .extend((0..20).map(|i| (format!("k{i}"), "v".into())));
            reused.labels.app = Some("left over".into());
            let mut at = 0;
            for e in &events {
                d.decode_into(&buf, &mut at, &mut reused).unwrap();
                assert_eq!(&reused, e);
            }
            assert_eq!(at, buf.len());
        }
    }

    /// Lengths whose varints take 1, 2 and 3 bytes, every label, many
    /// fields: the encoders size their output before writing it.
    #[test]
    fn codec_round_trips_every_length_class() {
        let mut events = Vec::new();
        for n in [0, 1, 125, 126, 127, 128, 16_381, 16_382, 16_384, 70_000] {
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
                .map(|i| (format!("k{i}"), "v".repeat(i * 3 + n % 7)))
                .collect();
            events.push(e);
        }
        for (version, buf) in [
            (codec::Version::V1, v1(&events)),
            (codec::Version::V2, v2(&events)),
        ] {
            let mut prefixed = b"prefix".to_vec();
            prefixed.extend_from_slice(&buf);
            let mut d = codec::Decoder::new(version);
            // Offsets are the record's: decode the events from within a larger buffer.
            let mut at = 0;
            for e in &events {
                let mut got = Event::new(0, Origin::Docker, "");
                d.decode_into(&buf, &mut at, &mut got).unwrap();
                assert_eq!(&got, e, "{version:?}");
            }
            assert_eq!(at, buf.len());
        }
    }

    /// Version 1's bytes written out by hand from its grammar: what weir
    /// wrote before version 2, and what an upgraded weir finds in old
    /// segments, decoded by today's decoder.
    #[test]
    fn version_1_bytes_are_the_documented_format_and_still_decode() {
        let mut expected = 1_700_000_000_123_456_789i64.to_le_bytes().to_vec();
        expected.extend_from_slice(&[0, 0b101]); // docker; host and service
        expected.extend_from_slice(b"\x02h1\x02db");
        expected.push(3); // error
        expected.extend_from_slice(b"\x0dhello \xff world");
        expected.extend_from_slice(b"\x01\x0ccontainer_id\x06abc123");
        assert_eq!(v1(&[sample()]), expected);
        assert_eq!(
            codec::decode_all(&expected, codec::Version::V1).unwrap(),
            vec![sample()]
        );
        // A 200-byte message: a two-byte length.
        let buf = v1(&[Event::new(0, Origin::Journal, vec![b'x'; 200])]);
        assert_eq!(buf[8..14], [1, 0, 0xff, 0xc8, 0x01, b'x']);
        assert_eq!(buf[buf.len() - 1], 0);
    }

    /// Version 2's bytes written out by hand from its grammar: a second
    /// event refers to the first one's strings and to its own container name.
    #[test]
    fn version_2_bytes_are_the_documented_format() {
        let first = docker(1_000, "stdout", "a");
        let mut second = docker(990, "stderr", "b");
        second.labels.host = None;
        second.labels.container_name = Some("api".into());
        second.labels.service = Some("api".into());
        second.fields.truncate(2);
        let buf = v2(&[first, second]);
        let mut expected = vec![0xd0, 0x0f]; // ts 1000: zigzag 2000
        expected.extend_from_slice(&[0b1101, 6]); // host, service, container_name; info
        expected.extend_from_slice(b"\x0cbench-host\x05web\x01"); // service = container_name
        expected.extend_from_slice(b"\x01a\x03"); // message, 3 fields
        expected.extend_from_slice(b"\x0econtainer_id\x42");
        expected.extend_from_slice("0123456789abcdef".repeat(4).as_bytes());
        expected.extend_from_slice(b"\x08stream\x08stdout\x05tag\x0cdocker.web");
        expected.extend_from_slice(&[0x13, 0b1100, 3]); // ts -10: zigzag 19; no host; error
        expected.extend_from_slice(b"\x05api\x01"); // container_name; service = it
        expected.extend_from_slice(b"\x01b\x02"); // message, 2 fields
        expected.extend_from_slice(b"\x00\x00\x00\x08stderr"); // container_id as before; stream
        assert_eq!(buf, expected);
    }

    /// What repeats is stored once per record: issue 20's 64 KiB tag on
    /// 20,000 entries was a 1.3 GB batch.
    #[test]
    fn a_repeated_tag_is_stored_once_per_record() {
        let mut e = docker(1, "stdout", "x");
        e.fields[2].1 = "t".repeat(64 << 10);
        let events = vec![e; 20_000];
        let buf = v2(&events);
        assert!(buf.len() < (64 << 10) + 20_000 * 16, "{} bytes", buf.len());
        assert_eq!(codec::decode_all(&buf, codec::Version::V2).unwrap(), events);
    }

    #[test]
    fn codec_rejects_every_truncation() {
        for (version, buf) in [
            (codec::Version::V1, v1(&[sample()])),
            (codec::Version::V2, v2(&[sample()])),
            (codec::Version::V2, v2(&[docker(5, "stdout", "x")])),
        ] {
            for cut in 1..buf.len() {
                assert!(
                    codec::decode_all(&buf[..cut], version).is_err(),
                    "{version:?} cut at {cut}"
                );
            }
        }
    }

    /// A reference with nothing to refer to (the first event of a record,
    /// a field the previous event did not have, a service alias before or
    /// without a container name) is an error, not a panic or a guess.
    #[test]
    fn dangling_references_are_errors() {
        let cases: [&[u8]; 4] = [
            b"\x00\x01\xff\x00\x00\x00",      // host: "as before" in the first event
            b"\x00\x00\xff\x00\x01\x00\x01",  // field key "as before"
            b"\x00\x04\xff\x01\x00\x00",      // service = container_name, none
            b"\x00\x00\xff\x00\x01\x03k\x01", // field value = container_name, none
        ];
        for c in cases {
            assert!(codec::decode_all(c, codec::Version::V2).is_err(), "{c:?}");
        }
    }

    /// Labels and fields must be UTF-8 in both versions, also when the
    /// event decoded into held other strings.
    #[test]
    fn invalid_utf8_in_a_label_or_field_is_an_error() {
        let cases: [(codec::Version, &[u8]); 3] = [
            (codec::Version::V2, b"\x00\x01\xff\x03\xff\x00\x00"), // host
            (codec::Version::V2, b"\x00\x00\xff\x00\x01\x03k\x03\xc3"), // field value
            (
                codec::Version::V1,
                b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\x00\x01\x01\xfe\x01k", // field key
            ),
        ];
        for (version, c) in cases {
            let mut d = codec::Decoder::new(version);
            let mut reused = sample();
            let err = d.decode_into(c, &mut 0, &mut reused).unwrap_err();
            assert_eq!(err.what, "label or field not UTF-8", "{c:?}");
        }
    }

    /// An event's strings are checked as UTF-8 in one go: a string cut
    /// inside a character is still an error when the bytes after it (the
    /// next string's length) complete the character.
    #[test]
    fn a_string_cut_inside_a_character_is_an_error_whatever_follows_it() {
        // ts, head (no labels), level, empty message, 2 fields: "k" = "\xc3",
        // then a 167-byte key, whose length varint (169) is \xa9 \x01:
        // "\xc3\xa9" is "é".
        let mut c = b"\x00\x00\xff\x00\x02\x03k\x03\xc3\xa9\x01".to_vec();
        c.extend_from_slice(&[b'a'; 167]);
        c.push(2);
        assert!(
            std::str::from_utf8(&c[3..]).is_ok(),
            "the event's text is valid"
        );
        let mut d = codec::Decoder::new(codec::Version::V2);
        let err = d.decode_into(&c, &mut 0, &mut sample()).unwrap_err();
        assert_eq!(err.what, "label or field not UTF-8");
        // The same with a valid value decodes.
        c[8] = b'v';
        let got = codec::decode_all(&c, codec::Version::V2).unwrap();
        assert_eq!(got[0].fields[0], ("k".into(), "v".into()));
        assert_eq!(got[0].fields[1].0, "a".repeat(167));
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        fn small_str() -> impl Strategy<Value = String> {
            prop_oneof![Just(String::new()), Just("web".to_owned()), "[a-cé]{0,4}"]
        }

        /// [`small_str`], or one of a few long ones (container ids, and
        /// ids that differ from them in one byte or in length), so that
        /// strings past `same_bytes`' short cases repeat too.
        fn any_str() -> impl Strategy<Value = String> {
            const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
            prop_oneof![
                3 => small_str(),
                1 => Just(ID.to_owned()),
                1 => (0..ID.len()).prop_map(|i| {
                    let mut id = ID.as_bytes().to_vec();
                    id[i] = b'x';
                    String::from_utf8(id).unwrap()
                }),
                1 => (17..=ID.len() + 8).prop_map(|n| ID.repeat(2)[..n].to_owned()),
            ]
        }

        fn event() -> impl Strategy<Value = Event> {
            event_of(small_str().boxed())
        }

        fn event_of(text: BoxedStrategy<String>) -> impl Strategy<Value = Event> {
            (
                prop_oneof![
                    Just(0i64),
                    any::<i64>(),
                    1_700_000_000_000_000_000i64..1_700_000_000_000_001_000
                ],
                any::<bool>(),
                proptest::collection::vec(proptest::option::of(text.clone()), 5),
                proptest::option::of(0u8..8),
                proptest::collection::vec(any::<u8>(), 0..40),
                proptest::collection::vec((text.clone(), text), 0..5),
            )
                .prop_map(|(ts, journal, l, level, message, fields)| {
                    let origin = if journal {
                        Origin::Journal
                    } else {
                        Origin::Docker
                    };
                    let mut e = Event::new(ts, origin, message);
                    e.labels = Labels {
                        host: l[0].clone(),
                        app: l[1].clone(),
                        service: l[2].clone(),
                        container_name: l[3].clone(),
                        unit: l[4].clone(),
                        level: level.map(Level::from_syslog),
                    };
                    e.fields = fields;
                    e
                })
        }

        proptest! {
            /// An event's sizes are what they were before they were summed
            /// label by label (with room left in its buffers, for held_bytes).
            #[test]
            fn sizes_are_the_reference_sizes(mut e in event_of(any_str().boxed()), spare in 0usize..100) {
                prop_assert_eq!(e.approx_size(), e.approx_size_reference());
                e.message.reserve(spare);
                e.fields.reserve(spare);
                if let Some(h) = e.labels.host.as_mut() {
                    h.reserve(spare);
                }
                prop_assert_eq!(e.held_bytes(), e.held_bytes_reference());
            }

            /// The encoder writes byte for byte what the one before it
            /// wrote (after whatever `out` held), for events whose
            /// strings repeat between events and between labels, short
            /// and long.
            #[test]
            fn encoding_is_the_reference_encoding(
                events in proptest::collection::vec(event_of(any_str().boxed()), 0..12),
                before in proptest::collection::vec(any::<u8>(), 0..3),
            ) {
                let (mut new, mut old) = (before.clone(), before);
                codec::encode_events(&events, &mut new);
                codec::encode_events_reference(&events, &mut old);
                prop_assert_eq!(new, old);
            }

            /// Small alphabets make strings repeat between events and
            /// between labels: every kind of reference gets written.
            #[test]
            fn version_2_round_trips_into_reused_events(events in proptest::collection::vec(event(), 0..12)) {
                let mut buf = Vec::new();
                codec::encode_events(&events, &mut buf);
                let mut d = codec::Decoder::new(codec::Version::V2);
                let mut reused = Event::new(0, Origin::Docker, "");
                let mut at = 0;
                for e in &events {
                    d.decode_into(&buf, &mut at, &mut reused).unwrap();
                    prop_assert_eq!(&reused, e);
                }
                prop_assert_eq!(at, buf.len());
            }

            /// Decoding after the previous event (references copied from
            /// it) into events of a pool that hold other strings, as the
            /// spool reader does: the result is the events encoded.
            #[test]
            fn version_2_round_trips_after_the_previous_event(
                events in proptest::collection::vec(event(), 0..12),
                pool in proptest::collection::vec(event(), 0..12),
            ) {
                let mut buf = Vec::new();
                codec::encode_events(&events, &mut buf);
                let mut d = codec::Decoder::new(codec::Version::V2);
                let mut pool = pool;
                let mut out: Vec<Event> = Vec::new();
                let mut at = 0;
                while at < buf.len() {
                    let mut e = pool.pop().unwrap_or_else(|| Event::new(0, Origin::Docker, ""));
                    d.decode_after(&buf, &mut at, &mut e, out.last()).unwrap();
                    out.push(e);
                }
                prop_assert_eq!(out, events);
            }

            /// Garbage and damaged encodings never panic (the CRC catches
            /// damage on disk; this is the decoder's own guard).
            #[test]
            fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), v2 in any::<bool>()) {
                let version = if v2 { codec::Version::V2 } else { codec::Version::V1 };
                let _ = codec::decode_all(&bytes, version);
            }

            #[test]
            fn flipped_bytes_never_panic(events in proptest::collection::vec(event(), 1..6), at in any::<prop::sample::Index>(), x in 1u8..) {
                let mut buf = Vec::new();
                codec::encode_events(&events, &mut buf);
                let i = at.index(buf.len());
                buf[i] ^= x;
                let _ = codec::decode_all(&buf, codec::Version::V2);
            }
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
