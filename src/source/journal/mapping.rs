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

use crate::event::{same_bytes, Event, Level, Origin};

/// Longest value kept for a field that is not mapped explicitly; longer ones
/// are dropped (a field is metadata; a big one is a payload in disguise).
pub const MAX_FIELD_VALUE: usize = 4096;

/// Recycled events kept for reuse at most (a batch's worth and a half).
const SPARE_EVENTS: usize = 1500;
/// A recycled event holding more than this many bytes of buffers is freed
/// rather than kept: one huge message must not pin its memory for good.
const SPARE_EVENT_BYTES: usize = 16 << 10;

/// The items of one journal entry, written straight into the event being
/// built. Its strings are reused: from the previous entry's event when
/// events come back through [`Entry::recycle`] (the journal source hands
/// every spooled batch back), so that a steady stream of entries costs no
/// allocation per field.
#[derive(Debug)]
pub struct Entry {
    /// The event being filled: `message`, labels and `fields[..nfields]`
    /// are this entry's; the rest are buffers left from an earlier one.
    event: Event,
    nfields: usize,
    /// Where this entry's first `_PID` and `SYSLOG_IDENTIFIER` fields are
    /// in `event.fields` (for [`Entry::identity`] and the `service` label).
    pid_at: Option<usize>,
    ident_at: Option<usize>,
    /// Which of this entry's single-valued items were seen (the first wins).
    seen: u16,
    container_id: String,
    container_id_full: String,
    truncated: String,
    /// Events to fill next, returned by the consumer.
    spare: Vec<Event>,
    /// Bytes of all data items, for `weir_source_bytes_received_total`.
    pub bytes: u64,
    /// Items at or over this length may have been cut by libsystemd.
    threshold: usize,
}

// Bits of `Entry::seen`.
const MESSAGE: u16 = 1;
const PRIORITY: u16 = 1 << 1;
const UNIT: u16 = 1 << 2;
const HOSTNAME: u16 = 1 << 3;
const CONTAINER_NAME: u16 = 1 << 4;
const CONTAINER_ID: u16 = 1 << 5;
const CONTAINER_ID_FULL: u16 = 1 << 6;
const COMPOSE_PROJECT: u16 = 1 << 7;
const COMPOSE_SERVICE: u16 = 1 << 8;
const TRUNCATED: u16 = 1 << 9;

impl Entry {
    /// `threshold` is the journal's data threshold (0 for none).
    pub fn new(threshold: usize) -> Entry {
        Entry {
            event: blank(),
            nfields: 0,
            pid_at: None,
            ident_at: None,
            seen: 0,
            container_id: String::new(),
            container_id_full: String::new(),
            truncated: String::new(),
            spare: Vec::new(),
            bytes: 0,
            threshold,
        }
    }

    /// Keeps `events` (already delivered) to be refilled by later entries,
    /// leaving the vector empty for the caller to reuse.
    pub fn recycle(&mut self, events: &mut Vec<Event>) {
        for e in events.drain(..) {
            if self.spare.len() < SPARE_EVENTS && e.held_bytes() <= SPARE_EVENT_BYTES {
                self.spare.push(e);
            }
        }
    }

    /// Marks `bit` seen; false if it was already (a later duplicate is ignored).
    fn first(&mut self, bit: u16) -> bool {
        let new = self.seen & bit == 0;
        self.seen |= bit;
        new
    }

    /// Adds one data item, `NAME=value`.
    pub fn add(&mut self, data: &[u8]) {
        self.add_split(data, name_end(data));
    }

    /// [`Entry::add`] of an item whose `=` was found already (`None`: it has
    /// none): the `systemd` crate finds it for every item it returns.
    // Not collapsed into match guards: a repeated MESSAGE or CONTAINER_ID
    // failing its guard would fall through to the arms that make fields.
    #[allow(clippy::collapsible_match)]
    pub fn add_split(&mut self, data: &[u8], eq: Option<usize>) {
        self.bytes += data.len() as u64;
        let Some(eq) = eq else {
            return;
        };
        let (name, value) = (&data[..eq], &data[eq + 1..]);
        if self.threshold > 0 && data.len() >= self.threshold && self.first(TRUNCATED) {
            set_lossy(&mut self.truncated, name);
        }
        let l = &mut self.event.labels;
        match name {
            b"MESSAGE" => {
                if self.seen & MESSAGE == 0 {
                    self.seen |= MESSAGE;
                    self.event.message.clear();
                    self.event.message.extend_from_slice(value);
                }
            }
            // The last valid one wins, as it always has.
            b"PRIORITY" => {
                if let [d @ b'0'..=b'7'] = value {
                    self.seen |= PRIORITY;
                    l.level = Some(Level::from_syslog(d - b'0'));
                }
            }
            b"_SYSTEMD_UNIT" => label(&mut self.seen, UNIT, &mut l.unit, value),
            b"_HOSTNAME" => label(&mut self.seen, HOSTNAME, &mut l.host, value),
            b"CONTAINER_NAME" => {
                label(&mut self.seen, CONTAINER_NAME, &mut l.container_name, value)
            }
            b"COM_DOCKER_COMPOSE_PROJECT" => {
                label(&mut self.seen, COMPOSE_PROJECT, &mut l.app, value)
            }
            b"COM_DOCKER_COMPOSE_SERVICE" => {
                label(&mut self.seen, COMPOSE_SERVICE, &mut l.service, value)
            }
            b"CONTAINER_ID" => {
                if self.first(CONTAINER_ID) {
                    set_lossy(&mut self.container_id, value);
                }
            }
            b"CONTAINER_ID_FULL" => {
                if self.first(CONTAINER_ID_FULL) {
                    set_lossy(&mut self.container_id_full, value);
                }
            }
            // Names known here are passed as text: no UTF-8 check, and a
            // copy only when the refilled field had another name (units
            // store their fields in different orders).
            b"CONTAINER_TAG" => self.push_field(Name::Known("container_tag"), value),
            b"IMAGE_NAME" => self.push_field(Name::Known("image_name"), value),
            // The first `SYSLOG_IDENTIFIER` and `_PID` fields also serve
            // [`Entry::identity`] and the `service` label: their place is
            // noted rather than their value copied.
            b"SYSLOG_IDENTIFIER" => {
                self.ident_at.get_or_insert(self.nfields);
                self.push_field(Name::Known("SYSLOG_IDENTIFIER"), value)
            }
            b"_PID" => {
                self.pid_at.get_or_insert(self.nfields);
                self.push_field(Name::Known("_PID"), value)
            }
            b"_UID" => self.push_field(Name::Known("_UID"), value),
            b"_COMM" => self.push_field(Name::Known("_COMM"), value),
            b"_BOOT_ID" => self.push_field(Name::Known("_BOOT_ID"), value),
            b"_TRANSPORT" => self.push_field(Name::Known("_TRANSPORT"), value),
            b"_SYSTEMD_USER_UNIT" => self.push_field(Name::Known("_SYSTEMD_USER_UNIT"), value),
            b"SYSLOG_RAW" | b"SYSLOG_TIMESTAMP" | b"SYSLOG_PID" | b"COREDUMP" => {}
            _ if name.first() == Some(&b'_') => {}
            _ if value.len() <= MAX_FIELD_VALUE => self.push_field(Name::Raw(name), value),
            _ => {}
        }
    }

    /// Appends a field, refilling the strings of an earlier entry's field
    /// in that place if there is one.
    fn push_field(&mut self, name: Name<'_>, value: &[u8]) {
        put_field(&mut self.event.fields, &mut self.nfields, name, value);
    }

    /// `_PID`, `_SYSTEMD_UNIT` and `SYSLOG_IDENTIFIER`, for self-exclusion and filters.
    pub fn identity(&self) -> (Option<&[u8]>, Option<&str>, Option<&str>) {
        (
            self.field(self.pid_at).map(str::as_bytes),
            self.label(UNIT, &self.event.labels.unit),
            self.field(self.ident_at),
        )
    }

    /// A label slot's value if this entry set it.
    fn label<'a>(&self, bit: u16, slot: &'a Option<String>) -> Option<&'a str> {
        if self.seen & bit == 0 {
            return None;
        }
        slot.as_deref()
    }

    /// The value of this entry's field at `at`.
    fn field(&self, at: Option<usize>) -> Option<&str> {
        self.event.fields[..self.nfields]
            .get(at?)
            .map(|(_, v)| v.as_str())
    }

    /// Builds the event and clears the entry for the next one.
    pub fn take_event(&mut self, realtime_us: u64) -> Event {
        let seen = self.seen;
        let e = &mut self.event;
        e.timestamp_ns = i64::try_from(realtime_us)
            .unwrap_or(i64::MAX / 1000)
            .saturating_mul(1000);
        e.origin = Origin::Journal;
        if seen & MESSAGE == 0 {
            e.message.clear();
        }
        if seen & PRIORITY == 0 {
            e.labels.level = None;
        }
        let l = &mut e.labels;
        for (bit, slot) in [
            (UNIT, &mut l.unit),
            (HOSTNAME, &mut l.host),
            (CONTAINER_NAME, &mut l.container_name),
            (COMPOSE_PROJECT, &mut l.app),
        ] {
            if seen & bit == 0 {
                *slot = None;
            }
        }
        let id = if seen & CONTAINER_ID_FULL != 0 {
            Some(&self.container_id_full)
        } else if seen & CONTAINER_ID != 0 {
            Some(&self.container_id)
        } else {
            None
        };
        if let Some(id) = id {
            put_field(
                &mut e.fields,
                &mut self.nfields,
                Name::Known("container_id"),
                id.as_bytes(),
            );
        }
        if seen & TRUNCATED != 0 {
            put_field(
                &mut e.fields,
                &mut self.nfields,
                Name::Known("weir_truncated"),
                self.truncated.as_bytes(),
            );
        }
        e.fields.truncate(self.nfields);
        if seen & COMPOSE_SERVICE == 0 {
            // The compose service, else the container name, else the unit
            // without `.service`, else the identifier, else the unit.
            let identifier = self.ident_at.map(|i| e.fields[i].1.as_str());
            let unit = l.unit.as_deref();
            let service = l
                .container_name
                .as_deref()
                .or_else(|| unit.and_then(|u| u.strip_suffix(".service")))
                .or(identifier)
                .or(unit);
            match service {
                Some(s) => set_str(&mut l.service, s),
                None => l.service = None,
            }
        }
        let next = self.spare.pop().unwrap_or_else(blank);
        let event = std::mem::replace(&mut self.event, next);
        self.reset();
        event
    }

    /// Forgets the entry without building an event.
    pub fn clear(&mut self) {
        self.reset();
    }

    fn reset(&mut self) {
        self.seen = 0;
        self.nfields = 0;
        self.pid_at = None;
        self.ident_at = None;
        self.bytes = 0;
    }
}

/// An event with nothing in it yet, to be filled.
fn blank() -> Event {
    Event::new(0, Origin::Journal, Vec::new())
}

/// Where the `=` after the field name is. Names are short (journald
/// allows 64 bytes), so the first bytes are looked at one by one, which
/// costs less than setting up a vectorised search; only a data item
/// without `=` in them (not one journald writes) is searched further.
fn name_end(data: &[u8]) -> Option<usize> {
    const SHORT: usize = 66;
    let head = &data[..data.len().min(SHORT)];
    match head.iter().position(|&b| b == b'=') {
        Some(eq) => Some(eq),
        None if data.len() > SHORT => memchr::memchr(b'=', &data[SHORT..]).map(|i| SHORT + i),
        None => None,
    }
}

/// A field's name: one the mapping knows (text already), or as the entry has it.
#[derive(Clone, Copy)]
enum Name<'a> {
    Known(&'static str),
    Raw(&'a [u8]),
}

impl Name<'_> {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Name::Known(s) => s.as_bytes(),
            Name::Raw(b) => b,
        }
    }

    /// Overwrites `out` with the name (invalid UTF-8 replaced).
    fn set(&self, out: &mut String) {
        match self {
            Name::Known(s) => {
                out.clear();
                out.push_str(s);
            }
            Name::Raw(b) => set_lossy(out, b),
        }
    }
}

/// Sets `fields[*n]` (reusing its strings) or appends it, and counts it.
fn put_field(fields: &mut Vec<(String, String)>, n: &mut usize, name: Name<'_>, value: &[u8]) {
    if let Some((k, v)) = fields.get_mut(*n) {
        // Entries of one program have their fields in the same order: the
        // name in this place is usually the same as the last entry's.
        // Compared inline: names are short, and a memcmp call cost more.
        if !same_bytes(k.as_bytes(), name.as_bytes()) {
            name.set(k);
        }
        set_lossy(v, value);
    } else {
        let mut k = String::new();
        name.set(&mut k);
        fields.push((k, lossy(value)));
    }
    *n += 1;
}

/// Sets a label slot to `value` (the first occurrence wins), reusing its string.
fn label(seen: &mut u16, bit: u16, slot: &mut Option<String>, value: &[u8]) {
    if *seen & bit != 0 {
        return;
    }
    *seen |= bit;
    match slot {
        Some(s) => set_lossy(s, value),
        None => *slot = Some(lossy(value)),
    }
}

/// Sets `slot` to `s`, reusing its string.
fn set_str(slot: &mut Option<String>, s: &str) {
    match slot {
        Some(buf) => {
            buf.clear();
            buf.push_str(s);
        }
        None => *slot = Some(s.to_owned()),
    }
}

/// Replaces `out` with `b`, invalid UTF-8 replaced, in its own buffer.
/// When `out` holds those bytes already (the same host, boot, transport
/// as the entry the event was refilled from), nothing is checked or copied.
fn set_lossy(out: &mut String, b: &[u8]) {
    if same_bytes(out.as_bytes(), b) {
        return;
    }
    out.clear();
    match std::str::from_utf8(b) {
        Ok(s) => out.push_str(s),
        Err(_) => out.push_str(&String::from_utf8_lossy(b)),
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

    /// Entries of every shape, mapped by one `Entry` that gets each event
    /// back (changed, as the scrubber and labelling change them) before the
    /// next: the same events as a fresh `Entry` per entry builds.
    #[test]
    fn the_name_ends_at_the_first_equals_sign_however_far() {
        for len in 0..200 {
            let name = vec![b'N'; len];
            for tail in [&b"=value=x"[..], b"", b"no equals sign"] {
                let item = [&name[..], tail].concat();
                assert_eq!(
                    name_end(&item),
                    memchr::memchr(b'=', &item),
                    "{len} {tail:?}"
                );
            }
        }
    }

    /// The reader passes the `systemd` crate's split of each item to
    /// [`Entry::add_split`]: it must be the one [`Entry::add`] makes.
    #[test]
    fn the_systemd_crate_splits_items_where_add_does() {
        use systemd::journal::JournalEntryField;
        for len in 0..100 {
            let name = vec![b'N'; len];
            for tail in [&b"=value=x"[..], b"=", b"", b"no equals sign", b"\xff=\x00"] {
                let item = [&name[..], tail].concat();
                let field = JournalEntryField::from(&item[..]);
                assert_eq!(
                    field.value().map(|_| field.name().len()),
                    name_end(&item),
                    "{len} {tail:?}"
                );
            }
        }
    }

    #[test]
    fn recycled_events_map_like_fresh_ones() {
        let shapes: &[&[&[u8]]] = &[
            &[
                b"MESSAGE=started",
                b"PRIORITY=3",
                b"_SYSTEMD_UNIT=nginx.service",
                b"_HOSTNAME=web-1",
                b"SYSLOG_IDENTIFIER=nginx",
                b"_PID=42",
                b"_COMM=nginx",
                b"_BOOT_ID=b00t",
                b"CODE_LINE=7",
                b"CODE_FILE=a.c",
                b"CODE_FUNC=f",
                b"MESSAGE_ID=abc",
            ],
            &[b"_SYSTEMD_UNIT=session-3.scope"],
            &[
                b"MESSAGE=GET /",
                b"MESSAGE=second message ignored",
                b"CONTAINER_NAME=shop-db-1",
                b"CONTAINER_ID=0123456789ab",
                b"CONTAINER_ID_FULL=0123456789abcdef",
                b"COM_DOCKER_COMPOSE_PROJECT=shop",
                b"COM_DOCKER_COMPOSE_SERVICE=db",
                b"COM_DOCKER_COMPOSE_SERVICE=ignored",
                b"_SYSTEMD_UNIT=docker.service",
                b"PRIORITY=6",
                b"PRIORITY=2",
                b"PRIORITY=x",
            ],
            &[b"MESSAGE=x", b"CONTAINER_NAME=web", b"CONTAINER_ID=ab"],
            &[b"MESSAGE=a\xffb", b"X=\xfe", b"SYSLOG_IDENTIFIER=kernel"],
            &[b"MESSAGE=0123456789abcdef-long", b"_HOSTNAME=h2"],
            // The first shape's fields in another order (another unit's
            // entries are stored so), a name that is not UTF-8, a value
            // the same as the refilled event's in another place.
            &[
                b"_PID=43",
                b"SYSLOG_IDENTIFIER=nginx",
                b"_COMM=nginx",
                b"MESSAGE=other order",
                b"_HOSTNAME=web-1",
                b"_BOOT_ID=42",
                b"CODE_LINE=nginx",
                b"\xffBAD=v",
                b"CODE_FILE=a.c",
            ],
            &[],
        ];
        let mut recycling = Entry::new(16);
        let mut back = Vec::new();
        for round in 0..3 {
            for (i, items) in shapes.iter().enumerate() {
                let mut fresh = Entry::new(16);
                for item in *items {
                    fresh.add(item);
                    recycling.add(item);
                }
                let want = fresh.take_event(i as u64);
                let mut got = recycling.take_event(i as u64);
                assert_eq!(got, want, "shape {i}, round {round}");
                // What happens downstream before it comes back.
                got.message = b"scrubbed".repeat(round + 1);
                got.labels.host.get_or_insert_with(|| "agent".into());
                got.labels.app = Some("x".into());
                got.fields.push(("extra".into(), "y".into()));
                back.push(got);
                if (i + round) % 2 == 0 {
                    recycling.recycle(&mut back);
                    assert!(back.is_empty());
                }
            }
        }
    }

    /// The pool is bounded, and an event that grew big is not kept.
    #[test]
    fn recycling_keeps_a_bounded_pool_of_small_events() {
        let mut entry = Entry::new(0);
        let mut back: Vec<Event> = (0..SPARE_EVENTS + 10)
            .map(|_| Event::new(0, Origin::Journal, "m"))
            .collect();
        back.push(Event::new(
            0,
            Origin::Journal,
            vec![0; SPARE_EVENT_BYTES + 1],
        ));
        entry.recycle(&mut back);
        assert_eq!(entry.spare.len(), SPARE_EVENTS);
        let mut big = vec![Event::new(
            0,
            Origin::Journal,
            vec![0; SPARE_EVENT_BYTES + 1],
        )];
        let mut empty = Entry::new(0);
        empty.recycle(&mut big);
        assert!(empty.spare.is_empty());
    }

    /// The identity is the entry's first `_PID` and `SYSLOG_IDENTIFIER`
    /// and its unit, and none of them carry over to the next entry.
    #[test]
    fn identity_is_the_first_pid_and_identifier_of_this_entry() {
        let mut entry = Entry::new(0);
        for item in [
            &b"_COMM=a"[..],
            b"_PID=1",
            b"SYSLOG_IDENTIFIER=first",
            b"_PID=2",
            b"_SYSTEMD_UNIT=u.service",
            b"SYSLOG_IDENTIFIER=second",
        ] {
            entry.add(item);
        }
        assert_eq!(
            entry.identity(),
            (Some(&b"1"[..]), Some("u.service"), Some("first"))
        );
        let e = entry.take_event(1);
        assert_eq!(e.labels.service.as_deref(), Some("u"));
        entry.recycle(&mut vec![e]);
        entry.add(b"_COMM=b");
        entry.add(b"MESSAGE=x");
        assert_eq!(entry.identity(), (None, None, None));
        entry.add(b"SYSLOG_IDENTIFIER=third");
        assert_eq!(entry.identity(), (None, None, Some("third")));
        assert_eq!(entry.take_event(2).labels.service.as_deref(), Some("third"));
    }

    /// `set_lossy` is `String::from_utf8_lossy` whatever the string held
    /// before (the same bytes or not): at every length up to past the
    /// inline comparison's longest, with a non-ASCII byte (valid UTF-8 or
    /// not) in each place.
    #[test]
    fn set_lossy_is_from_utf8_lossy_whatever_was_there() {
        for len in 0..=40 {
            let ascii: Vec<u8> = (0..len).map(|i| b' ' + (i * 7 % 95) as u8).collect();
            let mut values = vec![ascii.clone()];
            for at in 0..len {
                for odd in [&[0x80][..], &[0xff], &[0xc3, 0xa9], &[0x7f], &[0]] {
                    let mut v = ascii.clone();
                    v.splice(at..at + 1, odd.iter().copied());
                    values.push(v);
                }
            }
            for v in &values {
                // Of the same length: the same text, or one byte off.
                let same = String::from_utf8_lossy(v).into_owned();
                let mut near = ascii.clone();
                if let Some(b) = near.get_mut(len / 2) {
                    *b ^= 1;
                }
                let near = String::from_utf8(near).unwrap();
                for before in ["", "x", "0123456789abcdefghij", "é", &same, &near] {
                    let mut out = before.to_owned();
                    set_lossy(&mut out, v);
                    assert_eq!(out, String::from_utf8_lossy(v), "{v:?} over {before:?}");
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn set_lossy_is_from_utf8_lossy(
            before in ".{0,20}",
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
            text in "[ -~é]{0,24}",
        ) {
            for v in [&bytes[..], text.as_bytes()] {
                let mut out = before.clone();
                set_lossy(&mut out, v);
                proptest::prop_assert_eq!(&out, &String::from_utf8_lossy(v));
            }
        }
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
