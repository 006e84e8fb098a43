//! The threads that inflate a source's gzip frames.
//!
//! Inflating is CPU work a client chooses the size of (up to
//! `max_decompressed_bytes` per frame, again and again). On the runtime's
//! threads it held up every other connection; on tokio's blocking threads
//! it still competed for the CPU as their equal: with four 40 MiB gzip
//! frames among other attacks on two cores, a valid client's read waited
//! over a second. Here a source has [`super::INFLATES_IN_FLIGHT`] threads
//! of its own at the lowest CPU priority (nice 19): they use what the
//! runtime leaves, so serving sockets always comes first, and at most that
//! many frames are being inflated at once.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::decode::{gunzip, DecodeError};

type Job = (
    Vec<u8>,
    usize,
    oneshot::Sender<Result<Vec<u8>, DecodeError>>,
);

/// A source's inflating threads; they end when this is dropped.
pub struct Inflater {
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl Inflater {
    /// Starts `threads` threads named `weir-inflate`.
    pub fn start(threads: usize) -> std::io::Result<Inflater> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name("weir-inflate".into())
                .spawn(move || {
                    // This thread only (on Linux, "the calling process" of
                    // setpriority is the calling thread). Failing is
                    // harmless: it then runs at normal priority.
                    let _ = rustix::process::setpriority_process(None, 19);
                    loop {
                        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok((gz, limit, reply)) = job else { return };
                        // A panic in flate2: the frame is as bad as corrupt gzip.
                        let inflated = std::panic::catch_unwind(|| gunzip(&gz, limit))
                            .unwrap_or(Err(DecodeError::BadGzip));
                        drop(gz);
                        let _ = reply.send(inflated);
                    }
                })?;
        }
        Ok(Inflater {
            jobs: Mutex::new(tx),
        })
    }

    /// Inflates `gz`, refusing more than `limit` bytes ([`gunzip`]), on one
    /// of the threads, in turn with the other connections' frames.
    pub async fn inflate(&self, gz: Vec<u8>, limit: usize) -> Result<Vec<u8>, DecodeError> {
        let (reply, rx) = oneshot::channel();
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send((gz, limit, reply));
        if sent.is_err() {
            return Err(DecodeError::BadGzip);
        }
        rx.await.unwrap_or(Err(DecodeError::BadGzip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn frames_are_inflated_on_the_threads_and_errors_come_back() {
        let inflater = Inflater::start(2).unwrap();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&[7u8; 100_000]).unwrap();
        let gz = enc.finish().unwrap();
        let (a, b, c) = tokio::join!(
            inflater.inflate(gz.clone(), 100_000),
            inflater.inflate(gz.clone(), 99_999),
            inflater.inflate(gz[..20].to_vec(), 100_000),
        );
        assert_eq!(a.unwrap(), vec![7u8; 100_000]);
        assert!(matches!(b, Err(DecodeError::DecompressedTooLarge { .. })));
        assert!(matches!(c, Err(DecodeError::BadGzip)));
    }
}
