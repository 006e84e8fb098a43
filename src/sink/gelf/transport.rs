//! What the transports share: their error type, name resolution, and the
//! choice of transport by the address scheme.

use std::net::SocketAddr;
use std::time::Duration;

use super::tcp::CONNECT_TIMEOUT;
use super::{tcp, udp, Endpoint, Frames};
use crate::sink::cause::Cause;

/// Longest a DNS lookup may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a delivery attempt failed. Every variant is retried; none carries
/// payload (only the peer, timeouts and OS/TLS errors).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{cause} (port {port}); check `address` and DNS", cause = Cause::of(source, host, RESOLVE_TIMEOUT))]
    Resolve {
        host: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("{peer} resolved to no address; check `address` and DNS")]
    NoAddress { peer: String },
    #[error("{cause} ({peer}); is the Graylog GELF input running?", cause = Cause::of(source, peer, CONNECT_TIMEOUT))]
    Connect {
        peer: String,
        source: std::io::Error,
    },
    #[error("{cause} ({peer}); check its certificate, `ca_file` and `server_name`", cause = tls_cause(source, peer))]
    Tls {
        peer: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    TlsSetup(#[from] tcp::TlsSetupError),
    #[error("{cause} ({peer}) while sending", cause = Cause::of(source, peer, CONNECT_TIMEOUT))]
    Send {
        peer: String,
        source: std::io::Error,
    },
    #[error("timeout after {secs}s ({what} to {peer})")]
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

/// A failed handshake is a TLS failure even when rustls's reason is not
/// in the chain (the server hung up mid-handshake, say).
fn tls_cause(source: &std::io::Error, peer: &str) -> Cause {
    match Cause::of(source, peer, CONNECT_TIMEOUT) {
        tls @ Cause::Tls(_) => tls,
        other => Cause::Tls(format!("handshake failed: {other}")),
    }
}

/// Resolves the endpoint's host now (DNS may change between reconnects).
pub(super) async fn resolve(endpoint: &Endpoint) -> Result<SocketAddr, SendError> {
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
            host: endpoint.host.clone(),
            port: endpoint.port,
            source,
        })?;
    addrs
        .next()
        .ok_or_else(|| SendError::NoAddress { peer: peer() })
}

/// One transport, chosen by the address scheme.
pub(super) enum Transport {
    Udp(udp::UdpSender),
    Stream(tcp::StreamSender),
    /// Acknowledged: the sink asks it for driver steps directly.
    Http(super::http::HttpSender),
}

impl Transport {
    pub(super) fn new(config: &super::Config) -> Transport {
        match config.endpoint.protocol {
            super::Protocol::Udp => Transport::Udp(udp::UdpSender::new(
                config.endpoint.clone(),
                config.chunk_size.0 as usize,
                super::pace::Pacer::new(config.max_rate),
            )),
            super::Protocol::Tcp | super::Protocol::Tls => {
                Transport::Stream(tcp::StreamSender::new(config))
            }
            super::Protocol::Http => Transport::Http(super::http::HttpSender::new(config)),
        }
    }

    /// Delivers the frames from `*next` on; see each transport for resends.
    pub(super) async fn send(
        &mut self,
        frames: &Frames,
        next: &mut usize,
    ) -> Result<(), SendError> {
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
            Transport::Http(_) => unreachable!("the HTTP transport is driven by steps"),
        }
    }
}
