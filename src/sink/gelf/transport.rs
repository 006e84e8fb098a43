//! What the transports share: their error type, name resolution, and the
//! choice of transport by the address scheme.

use std::net::SocketAddr;
use std::time::Duration;

use super::{tcp, udp, Endpoint, Frames};

/// Longest a DNS lookup may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

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
            peer: peer(),
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
