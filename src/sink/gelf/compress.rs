//! gzip / zlib for UDP messages, with one reused deflate state.
//!
//! Starting a deflate stream costs far more than compressing a 100-300 byte
//! log line: `GzEncoder::new` per message ran at 9k messages/s, and with
//! miniz_oxide even a reset rebuilds ~250 KB of state (3k/s). weir builds
//! flate2 with the zlib-rs backend, whose reset only clears its hash heads,
//! and keeps one [`Compressor`] per sink: 31k messages/s encoded with gzip
//! (`cargo bench --bench gelf`, 2 loaded vCPUs).
//!
//! Even that reset clears a 128 KiB hash table, which costs more than the
//! line it prepares for: a message shorter than `min_bytes` (default 1 KiB,
//! [`DEFAULT_MIN_BYTES`]) goes out uncompressed. GELF UDP inputs tell the
//! two apart per datagram by its first bytes (Graylog and go-gelf alike), a
//! short message fits one datagram either way, and it is what most log
//! lines are: the whole-pipeline benchmark spent a quarter of weir's CPU in
//! that memset before.
//!
//! gzip's header and trailer (RFC 1952) are written here around a raw
//! deflate stream; zlib's (RFC 1950) come from the deflate state itself.

use flate2::{Compress, Crc, FlushCompress, Status};

use super::Compression;

/// gzip header: magic, deflate, no flags, no mtime, no extra flags, OS unknown.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// Default `compress_min_bytes`.
pub const DEFAULT_MIN_BYTES: u64 = 1024;

/// Compresses one message at a time into a caller's buffer.
pub struct Compressor {
    kind: Compression,
    deflate: Option<Compress>,
    /// Shorter messages are sent as they are.
    min_bytes: usize,
}

impl Compressor {
    /// `level` is 0 (store) to 9 (smallest); messages shorter than
    /// `min_bytes` are not compressed.
    pub fn new(kind: Compression, level: u32, min_bytes: usize) -> Compressor {
        let level = flate2::Compression::new(level);
        let deflate = match kind {
            Compression::None => None,
            Compression::Gzip => Some(Compress::new(level, false)),
            Compression::Zlib => Some(Compress::new(level, true)),
        };
        Compressor {
            kind,
            deflate,
            min_bytes,
        }
    }

    /// Appends `data`, compressed as configured, to `out`.
    pub fn compress(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let deflate = match &mut self.deflate {
            Some(d) if data.len() >= self.min_bytes => d,
            _ => {
                out.extend_from_slice(data);
                return;
            }
        };
        deflate.reset();
        let gzip = self.kind == Compression::Gzip;
        if gzip {
            out.extend_from_slice(&GZIP_HEADER);
        }
        let mut input = data;
        loop {
            // compress_vec only fills spare capacity: leave room for the
            // worst case (stored blocks) so one pass usually suffices.
            out.reserve(input.len() + input.len() / 64 + 64);
            let before = deflate.total_in();
            let status = deflate
                .compress_vec(input, out, FlushCompress::Finish)
                .expect("deflate into a Vec with spare room cannot fail");
            input = &input[(deflate.total_in() - before) as usize..];
            if status == Status::StreamEnd {
                break;
            }
        }
        if gzip {
            let mut crc = Crc::new();
            crc.update(data);
            out.extend_from_slice(&crc.sum().to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn text(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| b"abcdefgh ij\n"[i % 12] ^ (i % 7) as u8)
            .collect()
    }

    #[test]
    fn gzip_and_zlib_decode_and_state_is_reused() {
        for kind in [Compression::Gzip, Compression::Zlib, Compression::None] {
            let mut c = Compressor::new(kind, 1, 0);
            for n in [0, 1, 200, 70_000, 5] {
                let data = text(n);
                let mut out = b"xx".to_vec();
                c.compress(&data, &mut out);
                let body = &out[2..];
                let mut back = Vec::new();
                match kind {
                    Compression::Gzip => {
                        flate2::read::GzDecoder::new(body)
                            .read_to_end(&mut back)
                            .unwrap();
                    }
                    Compression::Zlib => {
                        flate2::read::ZlibDecoder::new(body)
                            .read_to_end(&mut back)
                            .unwrap();
                    }
                    Compression::None => back.extend_from_slice(body),
                }
                assert_eq!(back, data, "{kind:?} {n}");
            }
        }
    }

    #[test]
    fn gzip_trailer_is_checked_by_decoders() {
        let mut c = Compressor::new(Compression::Gzip, 1, 0);
        let mut out = Vec::new();
        c.compress(b"hello gelf", &mut out);
        assert_eq!(&out[..2], &[0x1f, 0x8b]);
        let n = out.len();
        out[n - 5] ^= 1; // corrupt the CRC
        let mut back = Vec::new();
        assert!(flate2::read::GzDecoder::new(&out[..])
            .read_to_end(&mut back)
            .is_err());
    }

    #[test]
    fn messages_under_min_bytes_are_sent_as_they_are() {
        for kind in [Compression::Gzip, Compression::Zlib] {
            let mut c = Compressor::new(kind, 1, 1024);
            let short = text(1023);
            let mut out = Vec::new();
            c.compress(&short, &mut out);
            assert_eq!(out, short, "{kind:?}");
            let long = text(1024);
            out.clear();
            c.compress(&long, &mut out);
            assert_ne!(out, long, "{kind:?}: 1024 bytes are compressed");
            let magic = match kind {
                Compression::Gzip => 0x1f,
                _ => 0x78,
            };
            assert_eq!(out[0], magic, "{kind:?}");
        }
    }
}
