//! Events -> the wire form of one transport: GELF JSON per message
//! ([`super::message`]), shrunk to the transport's limit, then compressed
//! (UDP) or null-terminated (TCP/TLS).

use super::message::{self, DockerLevels, Message};
use super::{chunk, compress, Config, Protocol};
use crate::event::Event;

/// Compression level for gzip/zlib: 1, as Docker's gelf driver; log text
/// compresses well already and level 1 is several times faster than 6.
pub const COMPRESSION_LEVEL: u32 = 1;

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

    /// Bytes of messages `from..to`.
    pub fn range_bytes(&self, from: usize, to: usize) -> u64 {
        if to <= from {
            return 0;
        }
        let start = if from == 0 { 0 } else { self.ends[from - 1] };
        (self.ends[to - 1] - start) as u64
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
            Protocol::Http => config.max_message_bytes.0 as usize,
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
                    // Compressed per request body, not per message.
                    Protocol::Http => out.extend_from_slice(json),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problems::Problems;
    use crate::sink::gelf::RawConfig;

    fn validate(toml_text: &str) -> (Config, Problems) {
        let raw: RawConfig = toml::from_str(toml_text).unwrap();
        let mut problems = Problems::default();
        let c = raw.validate("sinks.g", &mut problems);
        (c, problems)
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
