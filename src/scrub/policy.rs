//! What is personal: the decisions every detector defers to once it has
//! found an address or a name. Detectors say *where* something is; this
//! module says whether it names a person.
//!
//! | kept byte for byte (with `addresses = "public"`) | why |
//! |---|---|
//! | `127.0.0.0/8`, `::1`, `0.0.0.0`, `::` | loopback and "all interfaces": rewriting `127.0.0.1` to `127.0.0.0` changes its meaning |
//! | `10/8`, `172.16/12`, `192.168/16`, `fc00::/7` | private and ULA networks: containers and the LAN |
//! | `100.64/10` | CGNAT and Tailscale-style overlays: the provider's side |
//! | `169.254/16`, `fe80::/10` (with zone) | link-local: one cable, no person |
//! | `224/4`, `ff00::/8`, `255.255.255.255` | multicast and broadcast: groups, not hosts |
//!
//! Everything else (including the documentation ranges such as
//! `203.0.113.0/24`, which tests and examples use for clients) is public.
//! An IPv4-mapped IPv6 address is judged by its IPv4 address.
//!
//! Accounts kept as written: [`BUILTIN_ACCOUNTS`] (and any name starting
//! with `systemd-` or `_`, Debian's convention for daemon users), every
//! account of the host's `/etc/passwd` with a UID below 1000, and the
//! config's `keep_accounts`. They name software, not people.

use std::collections::HashSet;
use std::net::Ipv6Addr;

use crate::event::same_bytes;

/// Whether an IPv4 address may name a person's connection: not in one of
/// the ranges the module's table keeps (with `0/8` and `240/4`), told
/// from the first two octets (a match on the first, where `Ipv4Addr`'s
/// tests were asked one after another).
pub fn public_v4(o: [u8; 4]) -> bool {
    match o[0] {
        // This network, private, loopback; multicast, reserved, broadcast.
        0 | 10 | 127 | 224..=255 => false,
        // CGNAT.
        100 => o[1] & 0xc0 != 64,
        // Link-local.
        169 => o[1] != 254,
        172 => o[1] & 0xf0 != 16,
        192 => o[1] != 168,
        _ => true,
    }
}

/// Whether an IPv6 address may name a person's connection.
pub fn public_v6(a: Ipv6Addr) -> bool {
    if let Some(v4) = a.to_ipv4_mapped() {
        return public_v4(v4.octets());
    }
    let s = a.segments();
    !(a.is_loopback()
        || a.is_unspecified()
        || a.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80)
}

/// Accounts of software, not people, on every Linux host: Debian's
/// base-passwd, the usual daemon packages, and the names tools log.
pub const BUILTIN_ACCOUNTS: &[&str] = &[
    "root",
    "daemon",
    "bin",
    "sys",
    "sync",
    "games",
    "man",
    "lp",
    "mail",
    "news",
    "uucp",
    "proxy",
    "www-data",
    "backup",
    "list",
    "irc",
    "gnats",
    "nobody",
    "nogroup",
    "messagebus",
    "sshd",
    "postgres",
    "mysql",
    "redis",
    "git",
    "gitea",
    "forgejo",
    "nginx",
    "apache",
    "httpd",
    "caddy",
    "traefik",
    "haproxy",
    "postfix",
    "dovecot",
    "dovenull",
    "vmail",
    "opendkim",
    "clamav",
    "amavis",
    "bind",
    "named",
    "dnsmasq",
    "ntp",
    "chrony",
    "_chrony",
    "polkitd",
    "syslog",
    "tss",
    "uuidd",
    "tcpdump",
    "avahi",
    "colord",
    "rtkit",
    "docker",
    "containerd",
    "prometheus",
    "grafana",
    "node_exporter",
    "openldap",
    "ldap",
    "slapd",
    "memcache",
    "memcached",
    "rabbitmq",
    "elasticsearch",
    "mongodb",
    "mastodon",
    "peertube",
    "synapse",
    "matrix-synapse",
    "keycloak",
    "nextcloud",
    "ftp",
    "vsftpd",
    "fail2ban",
    "openvpn",
    "unbound",
    "systemd",
    "admin",
    "operator",
    "halt",
    "shutdown",
    "adm",
    "gdm",
    "Debian-gdm",
    "lightdm",
    "sddm",
    // Role mailboxes (RFC 2142) and senders of machines, not people.
    "postmaster",
    "abuse",
    "hostmaster",
    "webmaster",
    "mailer-daemon",
    "MAILER-DAEMON",
    "noreply",
    "no-reply",
];

/// The accounts kept as written.
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    /// The names, in a table looked up with a cheap hash: through a
    /// `HashSet`'s SipHash a look-up cost ~170 instructions on average on
    /// the bench's mixed lines, through this table less than half.
    table: Table,
    /// Whether the empty name is one (`keep_accounts = [""]`): the table
    /// holds only non-empty names.
    empty: bool,
    /// A bit per (first byte, last byte, length) class of the names: a name
    /// whose bit is clear is none of them, told without hashing it (the
    /// set's SipHash cost ~240 instructions per look-up, and nearly every
    /// name looked up is a person's).
    classes: [u64; 16],
}

/// The bit of `name` in [`Accounts::classes`] (`name` is not empty).
fn class_bit(name: &[u8]) -> usize {
    let (first, last) = (name[0], name[name.len() - 1]);
    (usize::from(first) * 7 + usize::from(last) * 13 + name.len() * 31) % (16 * 64)
}

impl Accounts {
    /// The built-in list, the config's `keep_accounts`, and the system
    /// accounts of `passwd` (the text of `/etc/passwd`, if readable).
    pub fn new(keep: &[String], passwd: Option<&str>) -> Accounts {
        let mut names: HashSet<Box<[u8]>> = BUILTIN_ACCOUNTS
            .iter()
            .map(|n| n.as_bytes().into())
            .collect();
        names.extend(keep.iter().map(|n| n.as_bytes().into()));
        if let Some(text) = passwd {
            names.extend(system_accounts(text).map(|n| n.as_bytes().into()));
        }
        let mut classes = [0u64; 16];
        for n in names.iter().filter(|n| !n.is_empty()) {
            let bit = class_bit(n);
            classes[bit / 64] |= 1 << (bit % 64);
        }
        // (The set made the names distinct, as the table wants them.)
        let table = Table::new(names.iter().map(|n| &n[..]).filter(|n| !n.is_empty()));
        Accounts {
            table,
            empty: names.contains(&b""[..]),
            classes,
        }
    }

    /// Whether `name` is an account of software (compared as written:
    /// account names are case-sensitive).
    pub fn contains(&self, name: &[u8]) -> bool {
        if name.starts_with(b"systemd-") || (name.len() > 1 && name[0] == b'_') {
            return true;
        }
        if name.is_empty() {
            return self.empty;
        }
        let bit = class_bit(name);
        self.classes[bit / 64] & (1 << (bit % 64)) != 0 && self.table.contains(name)
    }
}

/// A fixed set of non-empty names: open addressing with linear probing,
/// [`name_hash`] as the hash, at most half full. Safe with a hash an attacker can
/// steer because it is built once, from the config and `/etc/passwd`, and
/// looking up never inserts: a probe ends at the first empty slot, after at
/// most the longest run of the table's own names, whatever is looked up.
#[derive(Debug, Clone, Default)]
struct Table {
    /// The names, one after another.
    bytes: Vec<u8>,
    /// `start..end` of a name in `bytes` (never empty), or `0..0` for a
    /// free slot; as many as a power of two.
    slots: Vec<(usize, usize)>,
}

/// A hash of a non-empty name from its length and its first and last
/// bytes, read as words (4 or 8 of each end, overlapping in a short name;
/// the first, middle and last of one under 4 bytes): a dozen instructions
/// whatever its length, where FNV-1a's byte loop cost ~4 a byte. Names
/// that differ only in the middle of 16 bytes or more share a hash: they
/// only make a run of the table longer, and the table is built once.
fn name_hash(name: &[u8]) -> u64 {
    let n = name.len();
    let w4 = |i: usize| {
        u64::from(u32::from_le_bytes(
            name[i..i + 4].try_into().unwrap_or([0; 4]),
        ))
    };
    let w8 = |i: usize| u64::from_le_bytes(name[i..i + 8].try_into().unwrap_or([0; 8]));
    let (a, b) = match n {
        0 => (0, 0),
        1..=3 => (
            u64::from(name[0]) | u64::from(name[n / 2]) << 8 | u64::from(name[n - 1]) << 16,
            0,
        ),
        4..=7 => (w4(0), w4(n - 4)),
        _ => (w8(0), w8(n - 8)),
    };
    let h = (a ^ b.rotate_left(32) ^ (n as u64) << 58).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^ h >> 29
}

impl Table {
    /// `names` must be distinct and non-empty.
    fn new<'n>(names: impl Iterator<Item = &'n [u8]> + Clone) -> Table {
        let size = (2 * names.clone().count()).next_power_of_two().max(8);
        let mut t = Table {
            bytes: Vec::new(),
            slots: vec![(0, 0); size],
        };
        for n in names {
            let mut i = t.slot_of(n);
            while t.slots[i].1 != 0 {
                i = (i + 1) & (size - 1);
            }
            let start = t.bytes.len();
            t.bytes.extend_from_slice(n);
            t.slots[i] = (start, t.bytes.len());
        }
        t
    }

    fn slot_of(&self, name: &[u8]) -> usize {
        name_hash(name) as usize & (self.slots.len() - 1)
    }

    fn contains(&self, name: &[u8]) -> bool {
        if self.slots.is_empty() {
            return false;
        }
        let mut i = self.slot_of(name);
        loop {
            let (a, b) = self.slots[i];
            if b == 0 {
                return false;
            }
            // Words, not a call to memcmp: that costs more for short names.
            if same_bytes(&self.bytes[a..b], name) {
                return true;
            }
            i = (i + 1) & (self.slots.len() - 1);
        }
    }
}

/// Names of `/etc/passwd` entries with a UID below 1000 (system accounts by
/// Debian's and Fedora's policy; `nobody` is 65534 and built in).
pub fn system_accounts(passwd: &str) -> impl Iterator<Item = &str> {
    passwd.lines().filter_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let uid: u32 = f.nth(1)?.parse().ok()?;
        (uid < 1000 && !name.is_empty() && !name.starts_with('#')).then_some(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn infrastructure_addresses() {
        for a in [
            [127, 0, 0, 1],
            [0, 0, 0, 0],
            [10, 0, 0, 3],
            [172, 18, 0, 5],
            [192, 168, 1, 20],
            [100, 64, 0, 1],
            [100, 127, 255, 254],
            [169, 254, 169, 254],
            [224, 0, 0, 251],
            [255, 255, 255, 255],
        ] {
            assert!(!public_v4(a), "{a:?}");
        }
        for a in [
            [203, 0, 113, 7],
            [198, 51, 100, 23],
            [100, 128, 0, 1],
            [172, 32, 0, 1],
            [8, 8, 8, 8],
        ] {
            assert!(public_v4(a), "{a:?}");
        }
        for a in [
            "::1",
            "::",
            "fd00::5",
            "fe80::1",
            "ff02::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!public_v6(a.parse().unwrap()), "{a}");
        }
        for a in ["2001:db8::1", "2a01:4f8::1", "::ffff:203.0.113.7"] {
            assert!(public_v6(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn passwd_system_accounts() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      _apt:x:42:65534::/nonexistent:/usr/sbin/nologin\n\
                      prometheus:x:998:998::/var/lib/prometheus:/bin/false\n\
                      alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
                      broken line\n";
        let names: Vec<&str> = system_accounts(passwd).collect();
        assert_eq!(names, ["root", "_apt", "prometheus"]);
        let acc = Accounts::new(&["deploy".into()], Some("svc-x:x:120:120::/:/bin/false\n"));
        for n in [
            "root",
            "www-data",
            "systemd-resolve",
            "_apt",
            "deploy",
            "svc-x",
        ] {
            assert!(acc.contains(n.as_bytes()), "{n}");
        }
        for n in ["alice", "Root", "_", "deployer"] {
            assert!(!acc.contains(n.as_bytes()), "{n}");
        }
    }

    /// The class bits only turn away names the set does not hold: every
    /// built-in and configured account is still found, and the answer is
    /// the set's for near names.
    #[test]
    fn class_bits_agree_with_the_set() {
        // Many configured names too: the table's probes wrap and collide.
        let mut keep: Vec<String> = vec!["deploy".into(), "x".into()];
        keep.extend((0..300).map(|k| format!("svc{k}")));
        let acc = Accounts::new(&keep, None);
        let set: HashSet<&[u8]> = BUILTIN_ACCOUNTS
            .iter()
            .map(|n| n.as_bytes())
            .chain(keep.iter().map(|n| n.as_bytes()))
            .collect();
        for n in &keep {
            assert!(acc.contains(n.as_bytes()), "{n}");
            assert!(!acc.contains(format!("{n}_").as_bytes()), "{n}_");
        }
        for n in BUILTIN_ACCOUNTS.iter().chain(&["deploy", "x"]) {
            assert!(acc.contains(n.as_bytes()), "{n}");
        }
        for n in BUILTIN_ACCOUNTS
            .iter()
            .chain(&["deploy", "alice", "m.a.", "b1c"])
        {
            for probe in [
                format!("{n}s"),
                format!("a{n}"),
                n.to_uppercase(),
                String::new(),
            ] {
                let b = probe.as_bytes();
                let expect =
                    b.starts_with(b"systemd-") || (b.len() > 1 && b[0] == b'_') || set.contains(b);
                assert_eq!(acc.contains(b), expect, "{probe}");
            }
        }
    }

    /// The match is the `Ipv4Addr` tests it replaced, for every first two
    /// octets (the last two with their edge values).
    #[test]
    fn public_v4_is_the_std_tests() {
        let by_std = |o: [u8; 4]| {
            let a = Ipv4Addr::from(o);
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_private()
                || a.is_link_local()
                || a.is_multicast()
                || a.is_broadcast()
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || o[0] == 0
                || o[0] >= 240)
        };
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                for (c, d) in [(0, 0), (0, 1), (255, 255), (113, 7), (255, 254)] {
                    let o = [a, b, c, d];
                    assert_eq!(public_v4(o), by_std(o), "{o:?}");
                }
            }
        }
    }

    /// The table finds exactly its names, of every length (the hash reads
    /// words of 4 or 8 bytes from each end, or 3 bytes), among names that
    /// differ from them in one byte anywhere, or only in the middle.
    #[test]
    fn table_holds_exactly_its_names() {
        let names: Vec<Vec<u8>> = (1..=40)
            .flat_map(|n| {
                let base: Vec<u8> = (0..n).map(|k| b'a' + (k * 7 % 26) as u8).collect();
                let mut mid = base.clone();
                mid[n / 2] = b'Z';
                [base, mid]
            })
            .collect();
        let set: HashSet<&[u8]> = names.iter().map(|n| &n[..]).collect();
        let table = Table::new(set.iter().copied());
        for n in &names {
            assert!(table.contains(n), "{n:?}");
            for at in 0..n.len() {
                for c in [b'Z', b'0', n[at] ^ 0x20] {
                    let mut probe = n.clone();
                    probe[at] = c;
                    assert_eq!(
                        table.contains(&probe),
                        set.contains(&probe[..]),
                        "{probe:?}"
                    );
                }
            }
            let longer = [&n[..], b"a"].concat();
            assert_eq!(
                table.contains(&longer),
                set.contains(&longer[..]),
                "{longer:?}"
            );
        }
    }
}
