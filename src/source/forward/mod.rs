//! Fluentd Forward protocol source: the socket Docker's `fluentd` log driver
//! (and any Fluentd/Fluent Bit client) writes to.
//!
//! - [`listener`]: the unix socket (or one systemd passed), optional TCP with
//!   TLS, the accept loop and the connection limit.
//! - [`connection`]: one client: read at full speed, frame, decode, append
//!   to the spool in batches, acknowledge chunks once durable.
//! - [`frame`]: where one msgpack value ends in a byte stream.
//! - [`batch`]: the events of one append, reused by the next.
//! - [`decode`]: the four Forward modes and their options.
//! - [`docker`]: record -> [`crate::event::Event`].
//! - [`partial`]: reassembly of Docker's 16 KiB pieces of long lines.
//! - [`handshake`]: HELO/PING/PONG shared-key authentication (TCP).
//! - [`inflate`]: the threads that inflate gzip frames, at low priority.
//!
//! Nothing here ever waits on a sink: the only backpressure a client can
//! feel is the spool's own `when_full` policy.

pub mod batch;
pub mod connection;
pub mod decode;
pub mod docker;
pub mod frame;
pub mod handshake;
pub mod inflate;
pub mod listener;
pub mod partial;

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::ingest::Ingest;
use crate::metrics::{labels, Counter, Gauge};
use crate::net::Endpoint;
use crate::problems::Problems;
use crate::secret::Secret;
use crate::source::SourceError;
use crate::units::{ByteSize, HumanDuration};

pub use handshake::User;

/// Where the source listens when `listen` is not set.
pub const DEFAULT_LISTEN: &str = "unix:///run/weir/forward.sock";

/// `[sources.NAME]` with `type = "forward"`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `unix:///path` or `tcp://host:port`. Default `unix:///run/weir/forward.sock`.
    /// When systemd passes a socket (`weir.socket`, `LISTEN_FDS`), that socket
    /// is used instead of binding.
    pub listen: Option<String>,
    /// Permissions of the unix socket, in octal. Default `"0600"` (root only,
    /// which is what dockerd runs as); `"0660"` lets the socket's group write.
    pub socket_mode: Option<String>,
    /// Largest frame (one msgpack value) accepted. Default `16MiB`; a bigger
    /// one closes the connection. Raise only for clients sending bigger batches.
    pub max_frame_bytes: Option<ByteSize>,
    /// Most bytes a gzip-compressed frame may inflate to. Default `64MiB`.
    pub max_decompressed_bytes: Option<ByteSize>,
    /// The source's memory budget: most bytes all its connections together
    /// may hold beyond the first 64KiB of each one's read buffer: frames
    /// being received, gzip data being inflated and inflated, lines being
    /// joined, and the batches being decoded and appended (4MiB each, set
    /// aside at start: what is beyond one frame at the limits, 2 to 16).
    /// Default `128MiB` (8 batches), or the least it may be if more:
    /// `2 × max_frame_bytes + max_decompressed_bytes + 8MiB` (one gzip
    /// frame at the limits, its copy being inflated, two batches); a
    /// smaller value is raised to that, with a warning at start. A
    /// connection that needs more waits (only its client slows down); one
    /// waiting 0.5s while no holder is busy with a whole frame makes those
    /// holding some that received nothing for longest close unacknowledged
    /// (`reason="gave_way"`, `weir_source_budget_gave_way_total`; their
    /// clients resend). Lines being joined never wait: without room, the
    /// oldest is emitted as it is. Held now: `weir_source_buffered_bytes`.
    /// See [`crate::net::budget`].
    pub max_buffered_bytes: Option<ByteSize>,
    /// Concurrent connections (Docker opens one per container). Default 1024.
    /// When all are taken, the connection idle longest is closed to make
    /// room for the new one (its client reconnects when it next writes); a
    /// new connection is refused, and counted, only when none gave way
    /// within 1s.
    pub max_connections: Option<u32>,
    /// Time a client gets to finish the TLS handshake and the shared-key
    /// HELO/PING/PONG exchange (`tcp://` only). Default `10s`.
    pub handshake_timeout: Option<HumanDuration>,
    /// A connection that has sent nothing at all this long after connecting
    /// is closed. Default `60s`. (Once a client has sent something, it may
    /// stay idle: only the slot policy above reclaims its slot.)
    pub idle_timeout: Option<HumanDuration>,
    /// Longest line reassembled from Docker's 16 KiB pieces. Default `1MiB`;
    /// the rest is cut and the message ends with a truncation marker.
    pub partial_max_bytes: Option<ByteSize>,
    /// Most bytes the lines being reassembled may hold, all connections of
    /// the source together. Default `64MiB`; one connection holds at most 4
    /// lines' worth (4 × `partial_max_bytes`). Past either, the oldest line
    /// is emitted as it is (field `partial = "incomplete"`).
    pub partial_total_bytes: Option<ByteSize>,
    /// How long a split line may wait for its last piece before it is emitted
    /// as it is (field `partial = "incomplete"`). Default `5s`.
    pub partial_timeout: Option<HumanDuration>,
    /// TLS certificate chain (PEM) for a `tcp://` listener; with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for a `tcp://` listener; with `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Require the HELO/PING/PONG handshake with this shared key (`tcp://` only).
    pub shared_key: Option<String>,
    /// With `shared_key`, also require one of these users:
    /// `users = [{ username = "docker", password = "..." }]`.
    pub users: Option<Vec<User>>,
    /// Our name in the handshake's PONG. Default: the machine's host name.
    pub self_hostname: Option<String>,
}

/// Validated forward source config.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub listen: String,
    #[serde(skip)]
    pub address: Endpoint,
    /// Octal, e.g. `"0600"`.
    pub socket_mode: String,
    #[serde(skip)]
    pub mode: u32,
    pub max_frame_bytes: ByteSize,
    pub max_decompressed_bytes: ByteSize,
    pub max_buffered_bytes: ByteSize,
    /// The `max_buffered_bytes` written, when it was below the least and
    /// was raised to it (said in weir's log at start).
    #[serde(skip)]
    pub max_buffered_bytes_raised_from: Option<ByteSize>,
    pub max_connections: u32,
    pub handshake_timeout: HumanDuration,
    pub idle_timeout: HumanDuration,
    pub partial_max_bytes: ByteSize,
    pub partial_total_bytes: ByteSize,
    pub partial_timeout: HumanDuration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_key: Option<Secret>,
    /// Usernames only: passwords are never printed.
    #[serde(serialize_with = "usernames")]
    pub users: Vec<User>,
    pub self_hostname: String,
}

fn usernames<S: serde::Serializer>(users: &[User], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(users.iter().map(|u| &u.username))
}

impl RawConfig {
    pub fn validate(self, key: &str, problems: &mut Problems) -> Config {
        let listen = self.listen.unwrap_or_else(|| DEFAULT_LISTEN.into());
        let address = Endpoint::parse(&listen).unwrap_or_else(|e| {
            problems.add(format!("{key}.listen"), e.to_string());
            Endpoint::Unix(PathBuf::new())
        });
        let socket_mode = self.socket_mode.unwrap_or_else(|| "0600".into());
        let mode = match u32::from_str_radix(&socket_mode, 8) {
            Ok(m) if m <= 0o777 => m,
            _ => {
                problems.add(
                    format!("{key}.socket_mode"),
                    "must be an octal permission string such as \"0600\" or \"0660\"",
                );
                0o600
            }
        };
        let max_frame_bytes = self.max_frame_bytes.unwrap_or(ByteSize(16 << 20));
        if !(1024..=(1 << 30)).contains(&max_frame_bytes.0) {
            problems.add(
                format!("{key}.max_frame_bytes"),
                "must be between 1KiB and 1GiB",
            );
        }
        let max_decompressed_bytes = self.max_decompressed_bytes.unwrap_or(ByteSize(64 << 20));
        if !(1024..=(1 << 30)).contains(&max_decompressed_bytes.0) {
            problems.add(
                format!("{key}.max_decompressed_bytes"),
                "must be between 1KiB and 1GiB",
            );
        }
        let one_frame = one_frame(max_frame_bytes.0, max_decompressed_bytes.0);
        let least_buffered = one_frame.saturating_add((MIN_BATCHES * batch::FULL_BYTES) as u64);
        let max_buffered_bytes = self
            .max_buffered_bytes
            .unwrap_or(ByteSize(least_buffered.max(DEFAULT_BUFFERED_BYTES)));
        // Below the least, the budget is raised to it rather than refused:
        // the previous release shipped `max_buffered_bytes = "80MiB"` in
        // weir.toml, which every edited /etc/weir/weir.toml keeps across an
        // upgrade, and a refused config would stop Docker's logging.
        let (max_buffered_bytes, max_buffered_bytes_raised_from) =
            if max_buffered_bytes.0 < least_buffered {
                (ByteSize(least_buffered), Some(max_buffered_bytes))
            } else {
                (max_buffered_bytes, None)
            };
        if max_buffered_bytes.0 > 1 << 40 {
            problems.add(format!("{key}.max_buffered_bytes"), "must be at most 1TiB");
        }
        let max_connections = self.max_connections.unwrap_or(1024);
        if max_connections == 0 {
            problems.add(format!("{key}.max_connections"), "must be at least 1");
        }
        let handshake_timeout = self
            .handshake_timeout
            .unwrap_or(HumanDuration(Duration::from_secs(10)));
        let idle_timeout = self
            .idle_timeout
            .unwrap_or(HumanDuration(Duration::from_secs(60)));
        for (name, d) in [
            ("handshake_timeout", handshake_timeout),
            ("idle_timeout", idle_timeout),
        ] {
            if d.0.is_zero() {
                problems.add(format!("{key}.{name}"), "must be more than 0s");
            }
        }
        let partial_max_bytes = self.partial_max_bytes.unwrap_or(ByteSize(1 << 20));
        if partial_max_bytes.0 < 16 * 1024 {
            problems.add(
                format!("{key}.partial_max_bytes"),
                "must be at least 16KiB (one Docker piece)",
            );
        }
        let partial_total_bytes = self.partial_total_bytes.unwrap_or(ByteSize(64 << 20));
        if partial_total_bytes.0 < partial_max_bytes.0 {
            problems.add(
                format!("{key}.partial_total_bytes"),
                "must be at least partial_max_bytes",
            );
        }
        let partial_timeout = self
            .partial_timeout
            .unwrap_or(HumanDuration(Duration::from_secs(5)));
        if partial_timeout.0.is_zero() {
            problems.add(format!("{key}.partial_timeout"), "must be more than 0s");
        }
        let tcp = matches!(address, Endpoint::Tcp(_));
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            problems.add(
                format!("{key}.tls_cert"),
                "tls_cert and tls_key go together: set both or neither",
            );
        }
        for (name, set) in [
            ("tls_cert", self.tls_cert.is_some()),
            ("shared_key", self.shared_key.is_some()),
        ] {
            if set && !tcp {
                problems.add(
                    format!("{key}.{name}"),
                    "applies to tcp:// listeners only; a unix socket is protected by socket_mode",
                );
            }
        }
        if matches!(&self.shared_key, Some(k) if k.is_empty()) {
            problems.add(
                format!("{key}.shared_key"),
                "must not be empty; remove it to turn the handshake off",
            );
        }
        let users = self.users.unwrap_or_default();
        if !users.is_empty() && self.shared_key.is_none() {
            problems.add(
                format!("{key}.users"),
                "needs shared_key: users are checked by the handshake",
            );
        }
        Config {
            listen,
            address,
            socket_mode,
            mode,
            max_frame_bytes,
            max_decompressed_bytes,
            max_buffered_bytes,
            max_buffered_bytes_raised_from,
            max_connections,
            handshake_timeout,
            idle_timeout,
            partial_max_bytes,
            partial_total_bytes,
            partial_timeout,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            shared_key: self.shared_key.map(Secret),
            users,
            self_hostname: self
                .self_hostname
                .unwrap_or_else(crate::hostname::machine_hostname),
        }
    }
}

/// The source's metric handles, taken once.
pub struct Metrics {
    pub events: Counter,
    pub bytes: Counter,
    /// `weir_source_reads_total`: added to per batch of reads (see
    /// `connection`), not per read.
    pub reads: Counter,
    pub connections: Gauge,
    decode_errors: crate::metrics::Family<labels::SourceReason, Counter>,
    source: String,
}

impl Metrics {
    fn new(registry: &crate::metrics::Metrics, source: &str) -> Metrics {
        Metrics {
            events: registry.source_events_received.with(labels::source(source)),
            bytes: registry.source_bytes_received.with(labels::source(source)),
            reads: registry.source_reads.with(labels::source(source)),
            connections: registry.source_connections.with(labels::source(source)),
            decode_errors: registry.source_decode_errors.clone(),
            source: source.to_owned(),
        }
    }

    /// Counts one bad input (a rare event: the lookup is not on the hot path).
    pub fn decode_error(&self, reason: &'static str) {
        self.decode_errors
            .with(labels::SourceReason::new(&self.source, reason))
            .inc();
    }
}

/// What every connection of one source shares.
pub struct Shared {
    pub name: String,
    pub ingest: Ingest,
    pub limits: decode::DecodeLimits,
    pub partial_max_bytes: usize,
    pub partial_budget: std::sync::Arc<partial::Budget>,
    pub partial_timeout: Duration,
    /// The source's memory budget (`max_buffered_bytes`): frames being
    /// received, inflated data, lines being joined (through
    /// `partial_budget`), batches in flight (set aside at start).
    pub buffers: std::sync::Arc<crate::net::Budget>,
    pub auth: Option<handshake::Auth>,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub metrics: Metrics,
    /// Events kept for reuse between appends, for every connection.
    pub spares: batch::Spares,
    /// Batches being decoded or appended at once, all connections together
    /// ([`BATCHES_IN_FLIGHT`]), the connection that used the least of them
    /// recently first: a client of small batches never waits behind many
    /// of another's.
    pub batches: crate::net::Turns,
    /// The threads inflating CompressedPackedForward frames
    /// ([`INFLATES_IN_FLIGHT`], lowest CPU priority).
    pub inflater: inflate::Inflater,
}

/// Batches decoded or being appended at once by all the connections of a
/// source, at most: with [`batch::FULL_BYTES`], 64 MiB of decoded events
/// whatever the number of connections. Two runtime threads decode; the rest
/// cover batches waiting on the spool. Their memory is set aside on the
/// source's budget at start ([`batches_in_flight`]).
pub const BATCHES_IN_FLIGHT: usize = 16;
/// ... and at least (the least `max_buffered_bytes` leaves room for).
pub const MIN_BATCHES: usize = 2;
/// `max_buffered_bytes` when not set: one gzip frame at the default limits
/// (96 MiB with its copy) and 8 batches in flight. With 1,024 connections' own 64 KiB
/// and weir's own ~25 MiB, peak RSS stays under 256 MiB.
pub const DEFAULT_BUFFERED_BYTES: u64 = 128 << 20;

/// What one frame at the limits holds on the budget at most: a gzip frame
/// of `max_frame` bytes (read buffer), its copy handed to the inflating
/// thread, and its inflated data.
pub fn one_frame(max_frame: u64, max_decompressed: u64) -> u64 {
    max_frame.saturating_mul(2).saturating_add(max_decompressed)
}

/// How many batches a budget of `budget` bytes lets be in flight: what is
/// left beyond one frame at the limits (`one_frame`), in batches, between
/// [`MIN_BATCHES`] and [`BATCHES_IN_FLIGHT`].
pub fn batches_in_flight(budget: usize, one_frame: usize) -> usize {
    (budget.saturating_sub(one_frame) / batch::FULL_BYTES).clamp(MIN_BATCHES, BATCHES_IN_FLIGHT)
}

/// Gzip frames inflated at once by all the connections of a source: the
/// source's inflating threads ([`inflate`]), at the lowest CPU priority, so
/// that serving sockets comes first. What they inflate is held on the
/// source's budget before they start.
pub const INFLATES_IN_FLIGHT: usize = 2;

/// Binds (or takes from systemd) the listener and spawns the accept loop.
pub async fn start(
    name: &str,
    config: &Config,
    ingest: Ingest,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, SourceError> {
    let listener = listener::Listener::open(name, config)?;
    if let Some(asked) = config.max_buffered_bytes_raised_from {
        tracing::warn!(
            source = name,
            asked = %asked,
            using = %config.max_buffered_bytes,
            "max_buffered_bytes is below the least the frame limits need (2 x max_frame_bytes + max_decompressed_bytes + 8MiB); using the least (set it to that or more, or remove it for the default)"
        );
    }
    let metrics = Metrics::new(ingest.metrics(), name);
    let registry = ingest.metrics();
    let budget = config.max_buffered_bytes.0 as usize;
    let buffers = crate::net::Budget::with_metrics(
        budget,
        registry.source_buffered_bytes.with(labels::source(name)),
        registry.source_budget_gave_way.with(labels::source(name)),
    );
    let one_frame = one_frame(config.max_frame_bytes.0, config.max_decompressed_bytes.0) as usize;
    let batches = batches_in_flight(budget, one_frame);
    // Validated: at least MIN_BATCHES fit beside one frame at the limits.
    buffers.set_aside(batches * batch::FULL_BYTES);
    let shared = Arc::new(Shared {
        name: name.to_owned(),
        ingest,
        limits: decode::DecodeLimits {
            frame: frame::Limits {
                max_bytes: config.max_frame_bytes.0 as usize,
                max_depth: MAX_DEPTH,
            },
            max_decompressed_bytes: config.max_decompressed_bytes.0 as usize,
        },
        partial_max_bytes: config.partial_max_bytes.0 as usize,
        partial_budget: partial::Budget::on(config.partial_total_bytes.0 as usize, buffers.clone()),
        partial_timeout: config.partial_timeout.0,
        buffers,
        auth: config.shared_key.as_ref().map(|k| handshake::Auth {
            shared_key: k.0.clone(),
            users: config.users.clone(),
            hostname: config.self_hostname.clone(),
        }),
        handshake_timeout: config.handshake_timeout.0,
        idle_timeout: config.idle_timeout.0,
        metrics,
        spares: batch::Spares::default(),
        batches: crate::net::Turns::new(batches),
        inflater: inflate::Inflater::start(INFLATES_IN_FLIGHT).map_err(|source| {
            SourceError::Io {
                name: name.to_owned(),
                what: "start the gzip inflating threads".to_owned(),
                source,
            }
        })?,
    });
    Ok(tokio::spawn(listener.run(
        shared,
        config.max_connections as usize,
        shutdown,
    )))
}

/// Deepest msgpack nesting accepted. A Forward frame needs 4 levels
/// (frame, entries, entry, record); the rest is room for nested record values.
pub const MAX_DEPTH: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(toml_text: &str) -> (Config, Problems) {
        let raw: RawConfig = toml::from_str(toml_text).unwrap();
        let mut p = Problems::default();
        (raw.validate("sources.docker", &mut p), p)
    }

    #[test]
    fn defaults() {
        let (c, p) = validate("");
        assert!(p.is_empty());
        assert_eq!(c.address, Endpoint::Unix("/run/weir/forward.sock".into()));
        assert_eq!(c.mode, 0o600);
        assert_eq!(c.max_frame_bytes, ByteSize(16 << 20));
        assert_eq!(c.max_connections, 1024);
        assert_eq!(c.max_buffered_bytes, ByteSize(128 << 20));
    }

    #[test]
    fn the_budget_must_hold_one_frame_at_the_limits_and_two_batches() {
        let (c, p) = validate("max_frame_bytes = \"1MiB\"\nmax_decompressed_bytes = \"4MiB\"\n");
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(c.max_buffered_bytes, ByteSize(128 << 20));
        let (c, p) = validate("max_frame_bytes = \"64MiB\"\nmax_decompressed_bytes = \"64MiB\"\n");
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(
            c.max_buffered_bytes,
            ByteSize(200 << 20),
            "the least it may be"
        );
        // Below the least (the previous release's shipped "80MiB"): raised
        // to the least, not refused, and remembered for the warning.
        for below in ["103MiB", "80MiB"] {
            let (c, p) = validate(&format!("max_buffered_bytes = \"{below}\"\n"));
            assert!(p.is_empty(), "{p:?}");
            assert_eq!(c.max_buffered_bytes, ByteSize(104 << 20));
            assert!(c.max_buffered_bytes_raised_from.is_some());
        }
        let (c, p) = validate("max_buffered_bytes = \"104MiB\"\n");
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(c.max_buffered_bytes_raised_from, None);
        // Batches get what is beyond one frame at the limits.
        let mib = 1 << 20;
        assert_eq!(batches_in_flight(104 * mib, 96 * mib), 2);
        assert_eq!(batches_in_flight(128 * mib, 96 * mib), 8);
        assert_eq!(batches_in_flight(1 << 30, 96 * mib), BATCHES_IN_FLIGHT);
    }

    #[test]
    fn tls_and_keys_need_tcp_and_secrets_are_not_printed() {
        let (_, p) = validate("shared_key = \"k\"\ntls_cert = \"/c\"\n");
        assert!(!p.is_empty());
        let (c, p) = validate(
            "listen = \"tcp://127.0.0.1:24224\"\nshared_key = \"hunter2\"\nusers = [{ username = \"u\", password = \"pw\" }]\n",
        );
        assert!(p.is_empty(), "{p:?}");
        let printed = toml::to_string(&c).unwrap();
        assert!(
            !printed.contains("hunter2") && !printed.contains("pw\""),
            "{printed}"
        );
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn bad_mode_and_listen_are_reported() {
        let (_, p) = validate("socket_mode = \"rw\"\nlisten = \"udp://x\"\n");
        assert!(!p.is_empty());
    }
}
