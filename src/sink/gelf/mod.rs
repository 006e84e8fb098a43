//! GELF sink: Graylog's format over UDP, TCP or TLS.
//!
//! Events become GELF 1.1 messages ([`message`]: field mapping, name rules,
//! shrinking) and leave through one of three transports, chosen by the
//! scheme of `address`:
//!
//! | address          | wire                                                         | a batch is acknowledged in the spool when | what can be lost |
//! |------------------|--------------------------------------------------------------|-------------------------------------------|------------------|
//! | `udp://host:port` | one datagram per message, or up to 128 chunks ([`chunk`]); gzip (default), zlib or no compression | every datagram was handed to the kernel ([`udp`]) | anything the network or a busy server drops: UDP has no acknowledgement. A closed port (ICMP unreachable) is noticed and retried |
//! | `tcp://host:port` | JSON + `\0` per message, uncompressed, one connection          | the batch was written and flushed ([`tcp`]) | what was in flight when the server died after weir's liveness probe; otherwise a broken connection resends the batch (possible duplicates, no loss) |
//! | `tls://host:port` | as `tcp://`, inside TLS (rustls; system roots or `ca_file`) | as `tcp://`                               | as `tcp://`      |
//!
//! Network errors are retried with exponential backoff, forever: the spool
//! keeps the data meanwhile (and sheds the oldest, counted, if it fills).
//! Shutdown stops at once; what was not acknowledged is sent after restart.
//!
//! # Size limits
//!
//! A UDP message must fit in 128 chunks of `chunk_size` bytes (after
//! compression); a TCP message in `max_message_bytes`. A message that does
//! not is shrunk, never dropped: `full_message` is cut (with
//! [`message::TRUNCATION_MARKER`]) and, if that is not enough, long field
//! values, then `short_message`. Such events are counted in
//! `weir_sink_truncated_events_total{sink}`.
//!
//! # Metrics (label `sink` = the section name)
//!
//! `weir_sink_events_sent_total`, `weir_sink_bytes_sent_total` (message
//! bytes after compression, with TCP's `\0`, without UDP chunk headers),
//! `weir_sink_batches_total`, `weir_sink_retries_total`,
//! `weir_sink_errors_total{reason}` (`resolve`, `connect`, `tls`,
//! `tls_setup`, `send`, `timeout`), `weir_sink_truncated_events_total`,
//! `weir_sink_rejected_events_total{reason="too_large"}` (cannot happen with
//! the allowed limits; counted should it ever), and
//! `weir_sink_last_success_timestamp_seconds`.
//!
//! weir's log names the peer, counts, sizes and reasons; never a message.

pub mod chunk;
pub mod compress;
pub mod message;
pub mod tcp;
pub mod udp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::event::Event;
use crate::metrics::{self, Counter, Gauge};
use crate::problems::Problems;
use crate::sink::retry::Backoff;
use crate::spool;
use crate::units::ByteSize;

use message::{DockerLevels, Message};

/// Default `chunk_size`: fits a 1500-byte MTU path with room for IP/UDP
/// headers and tunnels (the value of Docker's gelf driver and go-gelf).
pub const DEFAULT_CHUNK_SIZE: u64 = 1420;
/// Default `max_message_bytes`: Graylog's GELF TCP input default (2 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 2 << 20;
/// Compression level for gzip/zlib: 1, as Docker's gelf driver; log text
/// compresses well already and level 1 is several times faster than 6.
pub const COMPRESSION_LEVEL: u32 = 1;
/// Events per spool read (one acknowledgement each).
const BATCH_EVENTS: usize = 2_000;
const BATCH_BYTES: usize = 1 << 20;
/// Longest a DNS lookup may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// `[sinks.NAME]` with `type = "gelf"`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where the Graylog GELF input listens: `udp://host:port`,
    /// `tcp://host:port` or `tls://host:port` (Graylog's default port is 12201).
    /// The name is resolved again on every reconnect.
    pub address: String,
    /// UDP only: `gzip` (default), `zlib` or `none`. GELF over TCP is never
    /// compressed.
    pub compression: Option<Compression>,
    /// UDP only: messages shorter than this go out uncompressed (GELF
    /// inputs detect compression per datagram). Default `1KiB`: compressing
    /// a short line costs more CPU than it saves bytes. `0` compresses every
    /// message.
    pub compress_min_bytes: Option<ByteSize>,
    /// UDP only: the largest datagram sent, 12-byte chunk header included.
    /// Default `1420` (safe on WAN paths); up to `8192` on a LAN with a
    /// 9000-byte MTU. Between 256 and 65507 bytes.
    pub chunk_size: Option<ByteSize>,
    /// TCP/TLS only: the largest message (JSON bytes). Default `2MiB`, the
    /// default `max_message_size` of Graylog's GELF TCP input; lower it to
    /// what your input allows.
    pub max_message_bytes: Option<ByteSize>,
    /// `level` of Docker lines written to stdout. Default 6 (info).
    pub stdout_level: Option<u8>,
    /// `level` of Docker lines written to stderr. Default 3 (error).
    pub stderr_level: Option<u8>,
    /// TLS only: PEM file of the CA certificate(s) to trust instead of the
    /// system's roots (e.g. a private CA that signed Graylog's certificate).
    pub ca_file: Option<PathBuf>,
    /// TLS only: the name expected in the server's certificate. Default: the
    /// host of `address` (set it when `address` is an IP address).
    pub server_name: Option<String>,
}

/// Compression of UDP messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    Gzip,
    Zlib,
    None,
}

/// The transport named by the address scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Udp,
    Tcp,
    Tls,
}

/// A parsed `address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub protocol: Protocol,
    /// Host name or IP address (without IPv6 brackets).
    pub host: String,
    pub port: u16,
}

/// Validated gelf sink config.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub address: String,
    #[serde(skip)]
    pub endpoint: Endpoint,
    pub compression: Compression,
    pub compress_min_bytes: ByteSize,
    pub chunk_size: ByteSize,
    pub max_message_bytes: ByteSize,
    pub stdout_level: u8,
    pub stderr_level: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

impl RawConfig {
    pub fn validate(self, key: &str, problems: &mut Problems) -> Config {
        let endpoint = parse_address(&self.address).unwrap_or_else(|why| {
            problems.add(format!("{key}.address"), why);
            Endpoint {
                protocol: Protocol::Udp,
                host: String::new(),
                port: 0,
            }
        });
        let udp = endpoint.protocol == Protocol::Udp;
        let tls = endpoint.protocol == Protocol::Tls;
        let mut only = |set: bool, field: &str, scheme: &str| {
            if set {
                problems.add(
                    format!("{key}.{field}"),
                    format!("applies only to {scheme} addresses: remove it"),
                );
            }
        };
        only(
            !udp && self.compression.is_some_and(|c| c != Compression::None),
            "compression",
            "udp://",
        );
        only(!udp && self.chunk_size.is_some(), "chunk_size", "udp://");
        only(
            !udp && self.compress_min_bytes.is_some(),
            "compress_min_bytes",
            "udp://",
        );
        only(
            udp && self.max_message_bytes.is_some(),
            "max_message_bytes",
            "tcp:// and tls://",
        );
        only(!tls && self.ca_file.is_some(), "ca_file", "tls://");
        only(!tls && self.server_name.is_some(), "server_name", "tls://");
        let chunk_size = self.chunk_size.unwrap_or(ByteSize(DEFAULT_CHUNK_SIZE));
        if !(256..=65_507).contains(&chunk_size.0) {
            problems.add(
                format!("{key}.chunk_size"),
                "must be between 256 and 65507 bytes; 1420 suits WAN paths, 8192 a LAN with jumbo frames",
            );
        }
        let max_message_bytes = self
            .max_message_bytes
            .unwrap_or(ByteSize(DEFAULT_MAX_MESSAGE_BYTES));
        if max_message_bytes.0 < 4096 {
            problems.add(format!("{key}.max_message_bytes"), "must be at least 4KiB");
        }
        let mut level = |v: Option<u8>, field: &str, default: u8| match v {
            Some(l) if l > 7 => {
                problems.add(
                    format!("{key}.{field}"),
                    "must be a syslog severity from 0 (emergency) to 7 (debug)",
                );
                default
            }
            Some(l) => l,
            None => default,
        };
        let stdout_level = level(self.stdout_level, "stdout_level", 6);
        let stderr_level = level(self.stderr_level, "stderr_level", 3);
        if tls {
            let name = self.server_name.as_deref().unwrap_or(&endpoint.host);
            if let Some(ca) = &self.ca_file {
                if let Err(e) = tcp::tls_connector(Some(ca), name) {
                    let field = match e {
                        tcp::TlsSetupError::ServerName { .. } => "server_name",
                        _ => "ca_file",
                    };
                    problems.add(format!("{key}.{field}"), e.to_string());
                }
            }
        }
        Config {
            address: self.address,
            endpoint,
            compression: self.compression.unwrap_or(Compression::Gzip),
            compress_min_bytes: self
                .compress_min_bytes
                .unwrap_or(ByteSize(compress::DEFAULT_MIN_BYTES)),
            chunk_size,
            max_message_bytes,
            stdout_level,
            stderr_level,
            ca_file: self.ca_file,
            server_name: self.server_name,
        }
    }
}

/// Parses `udp://host:port`, `tcp://host:port`, `tls://host:port` (IPv6 as `[::1]`).
pub fn parse_address(address: &str) -> Result<Endpoint, String> {
    let usage = "must be udp://host:port, tcp://host:port or tls://host:port (Graylog's GELF inputs listen on 12201 by default)";
    let (scheme, rest) = address.split_once("://").ok_or(usage)?;
    let protocol = match scheme {
        "udp" => Protocol::Udp,
        "tcp" => Protocol::Tcp,
        "tls" => Protocol::Tls,
        _ => return Err(format!("unknown scheme `{scheme}`: {usage}")),
    };
    let (host, port) = rest.rsplit_once(':').ok_or(usage)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("`{port}` is not a port number: {usage}"))?;
    if host.is_empty() || host.contains(['/', '[', ']']) {
        return Err(format!("no valid host: {usage}"));
    }
    Ok(Endpoint {
        protocol,
        host: host.to_owned(),
        port,
    })
}

/// Why a delivery attempt failed. Every variant is retried; none carries
/// payload (only the peer, timeouts and OS/TLS errors).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot resolve {peer}: {source}; check `address` and DNS")]
    Resolve {
        peer: String,
        source: std::io::Error,
    },
    #[error("{peer} resolved to no address; check `address` and DNS")]
    NoAddress { peer: String },
    #[error("cannot connect to {peer}: {source}; is the Graylog GELF input running?")]
    Connect {
        peer: String,
        source: std::io::Error,
    },
    #[error("TLS handshake with {peer} failed: {source}; check its certificate, `ca_file` and `server_name`")]
    Tls {
        peer: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    TlsSetup(#[from] tcp::TlsSetupError),
    #[error("sending to {peer} failed: {source}")]
    Send {
        peer: String,
        source: std::io::Error,
    },
    #[error("{what} to {peer} timed out after {secs}s")]
    Timeout {
        what: &'static str,
        peer: String,
        secs: u64,
    },
}

impl SendError {
    /// The `reason` label of `weir_sink_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            SendError::Resolve { .. } | SendError::NoAddress { .. } => "resolve",
            SendError::Connect { .. } => "connect",
            SendError::Tls { .. } => "tls",
            SendError::TlsSetup(_) => "tls_setup",
            SendError::Send { .. } => "send",
            SendError::Timeout { .. } => "timeout",
        }
    }
}

/// Resolves the endpoint's host now (DNS may change between reconnects).
async fn resolve(endpoint: &Endpoint) -> Result<SocketAddr, SendError> {
    let peer = || format!("{}:{}", endpoint.host, endpoint.port);
    let lookup = tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port));
    let mut addrs = tokio::time::timeout(RESOLVE_TIMEOUT, lookup)
        .await
        .map_err(|_| SendError::Timeout {
            what: "DNS lookup",
            peer: peer(),
            secs: RESOLVE_TIMEOUT.as_secs(),
        })?
        .map_err(|source| SendError::Resolve {
            peer: peer(),
            source,
        })?;
    addrs
        .next()
        .ok_or_else(|| SendError::NoAddress { peer: peer() })
}

/// The encoded messages of one batch, back to back in one buffer.
#[derive(Debug, Default)]
pub struct Frames {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl Frames {
    fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
    }

    /// Message `i`'s bytes (compressed datagram payload, or JSON + `\0`).
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.data[start..end])
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// All messages, as written to a stream.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }
}

/// Turns events into wire messages for one transport.
pub struct Encoder {
    protocol: Protocol,
    compressor: compress::Compressor,
    levels: DockerLevels,
    fallback_host: String,
    /// Most wire bytes of one message.
    limit: usize,
    json: Vec<u8>,
}

/// What encoding a batch had to do besides encoding.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EncodeStats {
    pub truncated: u64,
    pub rejected: u64,
}

impl Encoder {
    pub fn new(config: &Config, fallback_host: &str) -> Encoder {
        let limit = match config.endpoint.protocol {
            Protocol::Udp => chunk::max_payload(config.chunk_size.0 as usize),
            // The terminating `\0` is framing, not message.
            Protocol::Tcp | Protocol::Tls => config.max_message_bytes.0 as usize + 1,
        };
        Encoder {
            protocol: config.endpoint.protocol,
            compressor: compress::Compressor::new(
                config.compression,
                COMPRESSION_LEVEL,
                config.compress_min_bytes.0 as usize,
            ),
            levels: DockerLevels {
                stdout: config.stdout_level,
                stderr: config.stderr_level,
            },
            fallback_host: fallback_host.to_owned(),
            limit,
            json: Vec::with_capacity(4096),
        }
    }

    /// Replaces `frames` with the wire form of `events`.
    pub fn encode_batch(&mut self, events: &[Event], frames: &mut Frames) -> EncodeStats {
        frames.clear();
        let mut stats = EncodeStats::default();
        for event in events {
            let mut msg = Message::from_event(event, self.levels, &self.fallback_host);
            let (protocol, compressor, json) =
                (self.protocol, &mut self.compressor, &mut self.json);
            let encode = |m: &Message, out: &mut Vec<u8>| {
                json.clear();
                m.write_json(json);
                match protocol {
                    Protocol::Udp => compressor.compress(json, out),
                    Protocol::Tcp | Protocol::Tls => {
                        out.extend_from_slice(json);
                        out.push(0);
                    }
                }
            };
            match message::encode_within(&mut msg, self.limit, &mut frames.data, encode) {
                Ok(shrunk) => {
                    stats.truncated += u64::from(shrunk);
                    frames.ends.push(frames.data.len());
                }
                Err(_) => {
                    frames
                        .data
                        .truncate(frames.ends.last().copied().unwrap_or(0));
                    stats.rejected += 1;
                }
            }
        }
        stats
    }
}

/// One transport, chosen by the address scheme.
enum Transport {
    Udp(udp::UdpSender),
    Stream(tcp::StreamSender),
}

impl Transport {
    /// Delivers the frames from `*next` on; see each transport for resends.
    async fn send(&mut self, frames: &Frames, next: &mut usize) -> Result<(), SendError> {
        match self {
            Transport::Udp(s) => s.send(frames, next).await,
            Transport::Stream(s) => {
                // A stream has no per-message progress: a failed batch is
                // resent whole on a new connection.
                if *next < frames.len() {
                    s.send(frames.bytes()).await?;
                    *next = frames.len();
                }
                Ok(())
            }
        }
    }
}

/// The sink's metric handles, taken once.
struct SinkMetrics {
    sent: Counter,
    bytes: Counter,
    batches: Counter,
    retries: Counter,
    truncated: Counter,
    rejected: Counter,
    last_success: Gauge,
    name: String,
}

impl SinkMetrics {
    fn new(sink: &str) -> SinkMetrics {
        let l = &[("sink", sink)];
        SinkMetrics {
            sent: metrics::counter(
                "weir_sink_events_sent_total",
                "Events a sink delivered and acknowledged.",
                l,
            ),
            bytes: metrics::counter("weir_sink_bytes_sent_total", "Bytes a sink delivered.", l),
            batches: metrics::counter("weir_sink_batches_total", "Batches a sink delivered.", l),
            retries: metrics::counter(
                "weir_sink_retries_total",
                "Delivery attempts repeated after an error.",
                l,
            ),
            truncated: metrics::counter(
                "weir_sink_truncated_events_total",
                "Events shrunk to fit the server's size limits (line or message cut with a marker).",
                l,
            ),
            rejected: metrics::counter(
                "weir_sink_rejected_events_total",
                "Events a sink could not deliver and skipped, by reason.",
                &[("sink", sink), ("reason", "too_large")],
            ),
            last_success: metrics::gauge(
                "weir_sink_last_success_timestamp_seconds",
                "Unix time of a sink's last successful delivery.",
                l,
            ),
            name: sink.to_owned(),
        }
    }

    /// Only called on errors, so looking the series up here is cheap enough.
    fn error(&self, reason: &'static str) -> Counter {
        metrics::counter(
            "weir_sink_errors_total",
            "Failed delivery attempts, by sink and reason.",
            &[("sink", &self.name), ("reason", reason)],
        )
    }
}

/// Delivers from `reader` to the GELF server until `shutdown`.
pub async fn run(
    name: String,
    config: Config,
    mut reader: spool::Reader,
    shutdown: CancellationToken,
) {
    let m = SinkMetrics::new(&name);
    let mut encoder = Encoder::new(&config, &crate::hostname::machine_hostname());
    let mut transport = match config.endpoint.protocol {
        Protocol::Udp => Transport::Udp(udp::UdpSender::new(
            config.endpoint.clone(),
            config.chunk_size.0 as usize,
        )),
        Protocol::Tcp | Protocol::Tls => Transport::Stream(tcp::StreamSender::new(&config)),
    };
    tracing::info!(sink = %name, address = %config.address, "GELF sink started");
    let mut frames = Frames::default();
    let mut backoff = Backoff::default();
    loop {
        let Some(batch) = crate::sink::next_batch_or_stop(
            &name,
            &mut reader,
            &shutdown,
            BATCH_EVENTS,
            BATCH_BYTES,
        )
        .await
        else {
            return;
        };
        let stats = encoder.encode_batch(&batch.events, &mut frames);
        if stats.truncated > 0 {
            m.truncated.add(stats.truncated);
            tracing::warn!(sink = %name, events = stats.truncated, "events too large for the GELF server were shrunk");
        }
        if stats.rejected > 0 {
            m.rejected.add(stats.rejected);
            tracing::error!(sink = %name, events = stats.rejected, "events that cannot be shrunk to fit were skipped");
        }
        let mut next = 0;
        loop {
            let sent = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = transport.send(&frames, &mut next) => r,
            };
            let Err(e) = sent else { break };
            m.error(e.reason()).inc();
            m.retries.inc();
            let delay = backoff.next_delay();
            tracing::warn!(
                sink = %name,
                error = %e,
                attempt = backoff.attempts(),
                pending_events = frames.len() - next,
                retry_in_ms = delay.as_millis() as u64,
                "cannot deliver to the GELF server; retrying"
            );
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        if backoff.attempts() > 0 {
            tracing::info!(sink = %name, failed_attempts = backoff.attempts(), "delivering to the GELF server again");
            backoff.reset();
        }
        m.sent.add(frames.len() as u64);
        m.bytes.add(frames.bytes().len() as u64);
        m.batches.inc();
        m.last_success.set(unix_now());
        if let Err(e) = reader.ack(batch.end) {
            tracing::error!(sink = %name, error = %e, "cannot acknowledge in the spool; GELF sink stops");
            return;
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(toml_text: &str) -> (Config, Vec<String>) {
        let raw: RawConfig = toml::from_str(toml_text).unwrap();
        let mut problems = Problems::default();
        let c = raw.validate("sinks.g", &mut problems);
        let keys = format!("{problems:?}");
        let keys = keys
            .split("key: \"")
            .skip(1)
            .map(|s| s.split('"').next().unwrap().to_owned())
            .collect();
        (c, keys)
    }

    #[test]
    fn defaults_for_udp() {
        let (c, problems) = validate("address = \"udp://graylog.example.org:12201\"");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            c.endpoint,
            Endpoint {
                protocol: Protocol::Udp,
                host: "graylog.example.org".into(),
                port: 12201
            }
        );
        assert_eq!(c.compression, Compression::Gzip);
        assert_eq!(c.chunk_size, ByteSize(1420));
        assert_eq!((c.stdout_level, c.stderr_level), (6, 3));
        // `weir check-config` prints the validated config as TOML.
        let shown = toml::to_string(&c).unwrap();
        assert!(shown.contains("compression = \"gzip\""), "{shown}");
        assert!(shown.contains("chunk_size = \"1420B\""), "{shown}");
    }

    #[test]
    fn addresses() {
        let e = parse_address("tls://[::1]:12201").unwrap();
        assert_eq!(
            (e.protocol, e.host.as_str(), e.port),
            (Protocol::Tls, "::1", 12201)
        );
        for bad in [
            "graylog:12201",
            "http://graylog:12201",
            "udp://graylog",
            "udp://:12201",
            "udp://graylog:0",
            "udp://graylog:99999",
        ] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn options_of_another_transport_are_problems() {
        let (_, problems) = validate(
            "address = \"tcp://g:12201\"\ncompression = \"gzip\"\nchunk_size = 1000\ncompress_min_bytes = 0\nca_file = \"/x\"\nstdout_level = 9",
        );
        assert_eq!(
            problems,
            [
                "sinks.g.compression",
                "sinks.g.chunk_size",
                "sinks.g.compress_min_bytes",
                "sinks.g.ca_file",
                "sinks.g.stdout_level"
            ]
        );
        let (_, problems) =
            validate("address = \"udp://g:1\"\nchunk_size = 100\nmax_message_bytes = \"1MiB\"");
        assert_eq!(
            problems,
            ["sinks.g.max_message_bytes", "sinks.g.chunk_size"]
        );
        let (_, problems) = validate("address = \"tls://g:1\"\nca_file = \"/nonexistent/ca.pem\"");
        assert_eq!(problems, ["sinks.g.ca_file"]);
    }

    #[test]
    fn udp_batch_is_compressed_and_fits_the_chunk_limit() {
        let (c, _) = validate("address = \"udp://g:1\"\nchunk_size = 256");
        let mut enc = Encoder::new(&c, "h");
        // Incompressible text: needs shrinking to 128 * 244 bytes.
        let mut state = 1u64;
        let noise: String = (0..200_000)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                char::from(b'!' + (state >> 58) as u8)
            })
            .collect();
        let events = vec![
            Event::new(0, crate::event::Origin::Docker, "small"),
            Event::new(0, crate::event::Origin::Docker, format!("big\n{noise}")),
        ];
        let mut frames = Frames::default();
        let stats = enc.encode_batch(&events, &mut frames);
        assert_eq!(
            stats,
            EncodeStats {
                truncated: 1,
                rejected: 0
            }
        );
        assert_eq!(frames.len(), 2);
        // Under compress_min_bytes (1 KiB): plain JSON; the big one gzipped.
        assert_eq!(frames.get(0).unwrap()[0], b'{', "short message as it is");
        assert_eq!(&frames.get(1).unwrap()[..2], &[0x1f, 0x8b], "gzip magic");
        assert!(frames.get(1).unwrap().len() <= chunk::max_payload(256));
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(frames.get(1).unwrap()).read_to_end_into(&mut json);
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert!(v["full_message"]
            .as_str()
            .unwrap()
            .ends_with(message::TRUNCATION_MARKER));
    }

    trait ReadAll {
        fn read_to_end_into(self, out: &mut Vec<u8>);
    }
    impl<R: std::io::Read> ReadAll for R {
        fn read_to_end_into(mut self, out: &mut Vec<u8>) {
            self.read_to_end(out).unwrap();
        }
    }

    #[test]
    fn tcp_frames_are_null_terminated_json() {
        let (c, _) = validate("address = \"tcp://g:1\"");
        let mut enc = Encoder::new(&c, "h");
        let events = vec![
            Event::new(0, crate::event::Origin::Docker, "a\u{0}b"),
            Event::new(0, crate::event::Origin::Journal, "c"),
        ];
        let mut frames = Frames::default();
        enc.encode_batch(&events, &mut frames);
        let parts: Vec<&[u8]> = frames.bytes().split(|b| *b == 0).collect();
        assert_eq!(parts.len(), 3, "two frames and the empty tail");
        let v: serde_json::Value = serde_json::from_slice(parts[0]).unwrap();
        assert_eq!(
            v["short_message"], "a\u{0}b",
            "NUL in text is escaped, not a frame end"
        );
        assert!(parts[2].is_empty());
    }
}
