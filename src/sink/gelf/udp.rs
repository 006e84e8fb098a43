//! GELF over UDP: one datagram per message, or chunks (see [`super::chunk`]).
//!
//! The socket is connected to the resolved peer so that the kernel reports
//! an ICMP "port unreachable" as an error on a later send: weir then backs
//! off and resends from the message that failed, instead of sending into the
//! void at full speed. The name is resolved again on every reconnect.
//!
//! Sends are paced ([`super::pace`], `max_rate`): the kernel hands a
//! datagram on as fast as it is given one, and a receiver that falls behind
//! drops what its socket buffer cannot hold, without anyone noticing.

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;

use super::chunk::Chunks;
use super::pace::Pacer;
use super::transport::resolve;
use super::{Endpoint, Frames, SendError};

/// A UDP sender to one GELF input; reconnects lazily after an error.
pub struct UdpSender {
    endpoint: Endpoint,
    chunk_size: usize,
    socket: Option<(UdpSocket, SocketAddr)>,
    pacer: Pacer,
    /// One chunk at a time is built here and sent.
    scratch: Vec<u8>,
}

impl UdpSender {
    pub fn new(endpoint: Endpoint, chunk_size: usize, pacer: Pacer) -> UdpSender {
        UdpSender {
            endpoint,
            chunk_size,
            socket: None,
            pacer,
            scratch: Vec::with_capacity(chunk_size),
        }
    }

    /// Sends the frames from `*next` on, advancing `*next` past each message
    /// sent, so that a retry after an error resends nothing twice.
    pub async fn send(&mut self, frames: &Frames, next: &mut usize) -> Result<(), SendError> {
        if self.socket.is_none() {
            self.socket = Some(self.connect().await?);
        }
        let (socket, peer) = self.socket.as_ref().expect("connected above");
        let peer = *peer;
        while let Some(payload) = frames.get(*next) {
            let sent = if payload.len() <= self.chunk_size {
                self.pacer.wait(payload.len(), true).await;
                socket.send(payload).await.map(drop)
            } else {
                let (size, scratch, pacer) = (self.chunk_size, &mut self.scratch, &mut self.pacer);
                send_chunks(socket, payload, size, scratch, pacer).await
            };
            if let Err(source) = sent {
                self.socket = None;
                return Err(SendError::Send {
                    peer: peer.to_string(),
                    source,
                });
            }
            *next += 1;
        }
        Ok(())
    }

    async fn connect(&self) -> Result<(UdpSocket, SocketAddr), SendError> {
        let peer = resolve(&self.endpoint).await?;
        let local: SocketAddr = if peer.is_ipv4() {
            "0.0.0.0:0".parse().expect("valid address")
        } else {
            "[::]:0".parse().expect("valid address")
        };
        let fail = |source| SendError::Connect {
            peer: peer.to_string(),
            source,
        };
        let socket = UdpSocket::bind(local).await.map_err(fail)?;
        socket.connect(peer).await.map_err(fail)?;
        Ok((socket, peer))
    }
}

async fn send_chunks(
    socket: &UdpSocket,
    payload: &[u8],
    chunk_size: usize,
    scratch: &mut Vec<u8>,
    pacer: &mut Pacer,
) -> io::Result<()> {
    let mut chunks = Chunks::new(payload, chunk_size, rand::random());
    let mut first = true;
    while chunks.write_next(scratch) {
        pacer.wait(scratch.len(), first).await;
        first = false;
        socket.send(scratch).await?;
    }
    Ok(())
}
