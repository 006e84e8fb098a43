//! Listening: the unix socket (bound here, or passed by systemd), optional
//! TCP with TLS, on the accept loop and slots of [`crate::net`]. A TLS or
//! shared-key handshake must finish within `handshake_timeout`.
//!
//! # The unix socket
//!
//! Under systemd, `weir.socket` owns the socket from early boot, before
//! dockerd starts: Docker's connections wait in the kernel's accept backlog
//! until weir is ready, so nothing written before weir started is lost
//! (incident 1). weir then receives it through `LISTEN_FDS` and uses the first
//! unix stream socket passed instead of binding; it never removes that file.
//!
//! Otherwise weir binds the path itself: it creates the parent directory,
//! replaces a stale socket file (one nobody accepts on: connecting is
//! refused), refuses to start when another process is listening there, and
//! binds under a temporary name, sets the mode, then renames into place, so
//! the socket is never reachable with looser permissions than configured.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::{connection, Config, Shared};
use crate::net::{self, Endpoint, Slots, Stream};
use crate::source::SourceError;

/// How long connections get to flush and send their last acks at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// A bound listener, ready to accept.
pub struct Listener {
    listener: net::Listener,
    /// The socket file to remove at shutdown (`None` when systemd owns it,
    /// or for TCP).
    owned_path: Option<PathBuf>,
    tls: Option<TlsAcceptor>,
}

impl Listener {
    /// Opens what `config.listen` names, preferring a socket systemd passed.
    pub fn open(name: &str, config: &Config) -> Result<Listener, SourceError> {
        let io_err = |what: String| {
            let name = name.to_owned();
            move |source| SourceError::Io { name, what, source }
        };
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(tls_acceptor(name, cert, key)?),
            _ => None,
        };
        if let Some(inherited) = crate::systemd::inherited_listener(&config.address) {
            let what = || "inherited socket".to_owned();
            let listener = match inherited.map_err(io_err(what()))? {
                crate::systemd::Listener::Unix(l) => {
                    l.set_nonblocking(true).map_err(io_err(what()))?;
                    net::Listener::Unix(UnixListener::from_std(l).map_err(io_err(what()))?)
                }
                crate::systemd::Listener::Tcp(l) => {
                    l.set_nonblocking(true).map_err(io_err(what()))?;
                    net::Listener::Tcp(TcpListener::from_std(l).map_err(io_err(what()))?)
                }
            };
            tracing::info!(source = name, listen = %config.listen, "using the socket passed by systemd (LISTEN_FDS)");
            return Ok(Listener {
                listener,
                owned_path: None,
                tls,
            });
        }
        match &config.address {
            Endpoint::Unix(path) => {
                let listener = bind_unix(path, config.mode).map_err(|e| match e {
                    BindError::Io(what, source) => SourceError::Io {
                        name: name.to_owned(),
                        what: format!("{what} {}", path.display()),
                        source,
                    },
                    BindError::InUse => SourceError::Setup {
                        name: name.to_owned(),
                        reason: format!(
                            "{} is in use: another process accepts connections on it; stop it or choose another `listen` path",
                            path.display()
                        ),
                    },
                    BindError::NotASocket => SourceError::Setup {
                        name: name.to_owned(),
                        reason: format!(
                            "{} exists and is not a socket; remove it or choose another `listen` path",
                            path.display()
                        ),
                    },
                })?;
                tracing::info!(source = name, path = %path.display(), mode = %config.socket_mode, "listening");
                Ok(Listener {
                    listener: net::Listener::Unix(listener),
                    owned_path: Some(path.clone()),
                    tls,
                })
            }
            Endpoint::Tcp(addr) => {
                let std = std::net::TcpListener::bind(addr.as_str())
                    .map_err(io_err(format!("bind tcp://{addr}")))?;
                std.set_nonblocking(true)
                    .map_err(io_err(format!("bind tcp://{addr}")))?;
                let listener =
                    TcpListener::from_std(std).map_err(io_err(format!("bind tcp://{addr}")))?;
                tracing::info!(source = name, address = %addr, tls = tls.is_some(), handshake = config.shared_key.is_some(), "listening");
                Ok(Listener {
                    listener: net::Listener::Tcp(listener),
                    owned_path: None,
                    tls,
                })
            }
        }
    }

    /// The accept loop: runs until `shutdown`, then lets connections flush.
    pub async fn run(
        self,
        shared: Arc<Shared>,
        max_connections: usize,
        shutdown: CancellationToken,
    ) {
        let slots = Slots::new(max_connections);
        let mut tasks = JoinSet::new();
        let refused = |peer: &str| {
            shared.metrics.decode_error("too_many_connections");
            tracing::warn!(source = %shared.name, peer = %peer, max_connections, "connection limit reached and no idle connection gave way; closing the new connection (raise max_connections)");
        };
        let serve = |stream: Stream, peer: String, slot: net::Slot| {
            // Reap finished connection tasks so the set does not grow.
            while tasks.try_join_next().is_some() {}
            let shared = shared.clone();
            let shutdown = shutdown.clone();
            let tls = self.tls.clone();
            let slot = Slot::new(slot, shared.metrics.connections.clone());
            tasks.spawn(async move {
                let slot = slot;
                let timeout = shared.handshake_timeout;
                match (stream, tls) {
                    (Stream::Unix(s), _) => {
                        connection::serve(s, peer, &shared, &slot.slot, shutdown).await
                    }
                    (Stream::Tcp(s), None) => {
                        connection::serve(s, peer, &shared, &slot.slot, shutdown).await
                    }
                    (Stream::Tcp(s), Some(tls)) => {
                        let accepted = tokio::select! {
                            a = tokio::time::timeout(timeout, tls.accept(s)) => a,
                            _ = slot.slot.give_way().cancelled() => {
                                shared.metrics.decode_error("gave_way");
                                return;
                            }
                        };
                        match accepted {
                            Ok(Ok(s)) => {
                                connection::serve(s, peer, &shared, &slot.slot, shutdown).await
                            }
                            Ok(Err(e)) => {
                                shared.metrics.decode_error("tls_handshake");
                                tracing::warn!(source = %shared.name, peer = %peer, error = %e, "TLS handshake failed");
                            }
                            Err(_) => {
                                shared.metrics.decode_error("handshake_timeout");
                                tracing::warn!(source = %shared.name, peer = %peer, ?timeout, "TLS handshake not finished in time (handshake_timeout); connection closed");
                            }
                        }
                    }
                }
            });
        };
        self.listener
            .serve(&shared.name, &slots, &shutdown, refused, serve)
            .await;
        self.stop_listening();
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
            tracing::warn!(source = %shared.name, "connections did not finish within {DRAIN_TIMEOUT:?}; closing them");
        }
    }

    /// Closes the listening socket and removes the file weir created.
    fn stop_listening(self) {
        drop(self.listener);
        if let Some(path) = self.owned_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A connection slot: counted in the gauge for exactly as long as it holds
/// its permit.
struct Slot {
    slot: net::Slot,
    gauge: crate::metrics::Gauge,
}

impl Slot {
    fn new(slot: net::Slot, gauge: crate::metrics::Gauge) -> Slot {
        gauge.add(1);
        Slot { slot, gauge }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // The slot is freed (field drop) right after the gauge says so; a
        // client that sees the gauge drop and connects at once may wait
        // for it a moment (`net::slots::GIVE_WAY_WAIT`), not be refused.
        self.gauge.add(-1);
    }
}

#[derive(Debug)]
enum BindError {
    Io(&'static str, io::Error),
    InUse,
    NotASocket,
}

fn bind_unix(path: &Path, mode: u32) -> Result<UnixListener, BindError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| BindError::Io("create the directory of", e))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => return Err(BindError::InUse),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path)
                        .map_err(|e| BindError::Io("remove stale socket", e))?;
                    tracing::info!(path = %path.display(), "replaced a stale socket file");
                }
                Err(e) => return Err(BindError::Io("probe existing socket", e)),
            }
        }
        Ok(_) => return Err(BindError::NotASocket),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(BindError::Io("inspect", e)),
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let std = std::os::unix::net::UnixListener::bind(&tmp).map_err(|e| BindError::Io("bind", e))?;
    let finish = || -> io::Result<()> {
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&tmp, path)?;
        std.set_nonblocking(true)
    };
    if let Err(e) = finish() {
        let _ = std::fs::remove_file(&tmp);
        return Err(BindError::Io("bind", e));
    }
    UnixListener::from_std(std).map_err(|e| BindError::Io("bind", e))
}

fn tls_acceptor(name: &str, cert: &Path, key: &Path) -> Result<TlsAcceptor, SourceError> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let setup = |reason: String| SourceError::Setup {
        name: name.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| setup(format!("cannot read tls_cert {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(setup(format!(
            "tls_cert {} holds no certificate",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| setup(format!("cannot read tls_key {}: {e}", key.display())))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| {
            setup(format!(
                "TLS setup failed: {e}; check that tls_key matches tls_cert"
            ))
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_socket_is_replaced_and_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/forward.sock");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let live = bind_unix(&path, 0o600).unwrap();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            assert!(matches!(bind_unix(&path, 0o600), Err(BindError::InUse)));
            drop(live); // the file stays: now stale
            assert!(path.exists());
            let again = bind_unix(&path, 0o660).unwrap();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o660);
            drop(again);
        });
        let file = dir.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            bind_unix(&file, 0o600),
            Err(BindError::NotASocket)
        ));
    }
}
