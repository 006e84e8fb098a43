//! Listening, shared by the forward source and the metrics endpoint.
//!
//! - [`endpoint`]: the one address type (`unix:///path` | `tcp://host:port`).
//! - [`slots`]: connection slots; the longest-idle connection gives way.
//! - [`budget`]: bytes held by all connections beyond their fixed share;
//!   the longest-idle holder gives way to a waiter.
//! - [`turns`]: turns at a shared resource, the connection that used the
//!   least of it first.
//! - [`Listener::serve`]: the one accept loop.

pub mod budget;
pub mod endpoint;
pub mod slots;
pub mod turns;

pub use budget::{Budget, Share};
pub use endpoint::{host_port, Bound, Endpoint, EndpointError};
pub use slots::{Slot, Slots};
pub use turns::{Flow, Turn, Turns};

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

/// A listening socket.
pub enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// An accepted connection.
pub enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Listener {
    /// Where the socket is bound.
    pub fn bound(&self) -> io::Result<Bound> {
        match self {
            Listener::Unix(l) => Ok(Bound::Unix(
                l.local_addr()?
                    .as_pathname()
                    .map(|p| p.to_owned())
                    .unwrap_or_default(),
            )),
            Listener::Tcp(l) => Ok(Bound::Tcp(l.local_addr()?)),
        }
    }

    /// Accepts one connection, with a description of the peer for logs
    /// (`unix:pid=N` or the TCP address).
    pub async fn accept(&self) -> io::Result<(Stream, String)> {
        match self {
            Listener::Unix(l) => {
                let (s, _) = l.accept().await?;
                let peer = match s.peer_cred() {
                    Ok(c) => format!("unix:pid={}", c.pid().unwrap_or(0)),
                    Err(_) => "unix".to_owned(),
                };
                Ok((Stream::Unix(s), peer))
            }
            Listener::Tcp(l) => {
                let (s, addr) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), addr.to_string()))
            }
        }
    }

    /// The accept loop, until `shutdown`: each connection gets a slot (the
    /// longest-idle connection giving way when all are taken) and is handed
    /// to `serve`; one that gets none is closed and handed to `refused`.
    /// Accept errors (EMFILE and friends) are logged and retried after a
    /// short sleep rather than spun on.
    pub async fn serve(
        &self,
        what: &str,
        slots: &Arc<Slots>,
        shutdown: &CancellationToken,
        mut refused: impl FnMut(&str),
        mut serve: impl FnMut(Stream, String, Slot),
    ) {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = self.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(listener = what, error = %e, "accept failed; retrying in 100ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let slot = tokio::select! {
                _ = shutdown.cancelled() => break,
                s = slots.acquire() => s,
            };
            match slot {
                Some(slot) => serve(stream, peer, slot),
                None => refused(&peer),
            }
        }
    }
}
