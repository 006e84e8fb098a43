//! GELF over TCP and TLS: null-byte framed JSON on one long-lived connection.
//!
//! GELF TCP has no acknowledgement, so a batch counts as delivered once it is
//! written and flushed to the kernel (or through TLS). Before each batch the
//! connection is probed with a non-blocking read: a GELF server never sends
//! application data, so end-of-stream or an error means it went away (e.g.
//! Graylog restarted) and weir reconnects *before* writing, rather than
//! losing the batch into a half-closed socket. A server that dies between
//! that probe and the write can still lose what was in flight; weir then
//! resends the whole batch on a new connection, so a restart can duplicate
//! part of a batch but not lose it once the write reported an error.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, pki_types::ServerName, RootCertStore};
use tokio_rustls::TlsConnector;

use super::{resolve, Config, Endpoint, Protocol, SendError};

/// Longest a connect (TCP + TLS handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest writing and flushing one batch may take before the connection is
/// considered dead (a server that stopped reading).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a TLS client could not be set up. Says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read CA file {path}: {reason}; check `ca_file`")]
    CaFile { path: String, reason: String },
    #[error(
        "CA file {path} holds no usable certificate; it must be PEM (-----BEGIN CERTIFICATE-----)"
    )]
    NoCaCertificate { path: String },
    #[error("no system CA certificates found; install `ca-certificates` or set `ca_file`")]
    NoSystemRoots,
    #[error("`{name}` is not a valid TLS server name; set `server_name`")]
    ServerName { name: String },
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A TCP or TLS sender to one GELF input; reconnects lazily after an error.
pub struct StreamSender {
    endpoint: Endpoint,
    ca_file: Option<std::path::PathBuf>,
    server_name: Option<String>,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    conn: Option<(Box<dyn Stream>, SocketAddr)>,
}

impl StreamSender {
    pub fn new(config: &Config) -> StreamSender {
        StreamSender {
            endpoint: config.endpoint.clone(),
            ca_file: config.ca_file.clone(),
            server_name: config.server_name.clone(),
            tls: None,
            conn: None,
        }
    }

    /// The peer of the current connection, if any.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.conn.as_ref().map(|(_, p)| *p)
    }

    /// Writes and flushes `data` (null-terminated frames), connecting first if needed.
    pub async fn send(&mut self, data: &[u8]) -> Result<(), SendError> {
        if let Some((stream, peer)) = &mut self.conn {
            if peer_closed(stream).await {
                tracing::info!(peer = %peer, "GELF server closed the connection; reconnecting");
                self.conn = None;
            }
        }
        if self.conn.is_none() {
            self.conn = Some(self.connect().await?);
        }
        let (stream, peer) = self.conn.as_mut().expect("connected above");
        let peer = peer.to_string();
        let written = tokio::time::timeout(WRITE_TIMEOUT, async {
            stream.write_all(data).await?;
            stream.flush().await
        })
        .await;
        let result = match written {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(source)) => SendError::Send { peer, source },
            Err(_) => SendError::Timeout {
                what: "write",
                peer,
                secs: WRITE_TIMEOUT.as_secs(),
            },
        };
        self.conn = None;
        Err(result)
    }

    async fn connect(&mut self) -> Result<(Box<dyn Stream>, SocketAddr), SendError> {
        if self.endpoint.protocol == Protocol::Tls && self.tls.is_none() {
            let name = self.server_name.as_deref().unwrap_or(&self.endpoint.host);
            self.tls = Some(tls_connector(self.ca_file.as_deref(), name)?);
        }
        let peer = resolve(&self.endpoint).await?;
        let timed_out = || SendError::Timeout {
            what: "connect",
            peer: peer.to_string(),
            secs: CONNECT_TIMEOUT.as_secs(),
        };
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(peer))
            .await
            .map_err(|_| timed_out())?
            .map_err(|source| SendError::Connect {
                peer: peer.to_string(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let Some((connector, name)) = &self.tls else {
            return Ok((Box::new(tcp), peer));
        };
        let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), tcp))
            .await
            .map_err(|_| timed_out())?
            .map_err(|source| SendError::Tls {
                peer: peer.to_string(),
                source,
            })?;
        Ok((Box::new(tls), peer))
    }
}

/// Whether the server closed (or reset) the connection. Polls one read
/// without waiting: pending means alive. With TLS, handshake-level records
/// the server sends after the handshake (session tickets) are consumed by
/// rustls and also leave the read pending.
async fn peer_closed(stream: &mut Box<dyn Stream>) -> bool {
    let mut buf = [0u8; 512];
    match tokio::time::timeout(Duration::ZERO, stream.read(&mut buf)).await {
        Err(_) => false,
        Ok(Ok(0)) | Ok(Err(_)) => true,
        // A GELF server sends nothing; ignore what an odd one does.
        Ok(Ok(_)) => false,
    }
}

/// The TLS client: `ca_file`'s certificates if given, else the system's
/// roots (`/etc/ssl/certs` via rustls-native-certs, so the host's
/// `ca-certificates` updates and locally added CAs apply).
pub fn tls_connector(
    ca_file: Option<&Path>,
    server_name: &str,
) -> Result<(TlsConnector, ServerName<'static>), TlsSetupError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let shown = path.display().to_string();
            let iter = CertificateDer::pem_file_iter(path).map_err(|e| TlsSetupError::CaFile {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
            for cert in iter {
                let cert = cert.map_err(|e| TlsSetupError::CaFile {
                    path: shown.clone(),
                    reason: e.to_string(),
                })?;
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(TlsSetupError::NoCaCertificate { path: shown });
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(TlsSetupError::NoSystemRoots);
            }
        }
    }
    // The provider is named rather than taken from the process default, so
    // that another crate enabling a second provider cannot make this panic.
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name =
        ServerName::try_from(server_name.to_owned()).map_err(|_| TlsSetupError::ServerName {
            name: server_name.to_owned(),
        })?;
    Ok((TlsConnector::from(Arc::new(config)), name))
}

/// Checks at config time that a TLS client can be built (CA file readable).
pub fn check_tls(ca_file: Option<&Path>, server_name: &str) -> Result<(), TlsSetupError> {
    tls_connector(ca_file, server_name).map(drop)
}
