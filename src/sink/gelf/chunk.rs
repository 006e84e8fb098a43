//! GELF UDP chunking.
//!
//! A message larger than one datagram is cut into at most [`MAX_CHUNKS`]
//! chunks, each a datagram of this layout (GELF 1.1 specification):
//!
//! ```text
//! 0x1e 0x0f | message id: 8 bytes | sequence number: 1 byte | sequence count: 1 byte | data
//! ```
//!
//! Every chunk of a message carries the same id; the server reassembles by
//! sequence number (0-based) once it has `count` chunks, and drops a message
//! whose chunks do not all arrive within 5 seconds or that announces more
//! than 128 chunks. A message that fits in one datagram is sent as is,
//! without a header.

/// The two bytes that open every chunk.
pub const MAGIC: [u8; 2] = [0x1e, 0x0f];
/// Magic, message id, sequence number and count.
pub const HEADER_LEN: usize = 12;
/// The most chunks a GELF server reassembles; more and it drops the message.
pub const MAX_CHUNKS: usize = 128;

/// Payload bytes carried by one chunk of a `chunk_size`-byte datagram.
pub fn data_per_chunk(chunk_size: usize) -> usize {
    chunk_size - HEADER_LEN
}

/// The largest payload (compressed message) that fits in [`MAX_CHUNKS`] chunks.
pub fn max_payload(chunk_size: usize) -> usize {
    data_per_chunk(chunk_size) * MAX_CHUNKS
}

/// The chunks of one payload, written one at a time into a reused buffer
/// (each is sent before the next is built, so no payload is copied twice).
#[derive(Debug)]
pub struct Chunks<'a> {
    payload: &'a [u8],
    id: [u8; 8],
    per_chunk: usize,
    seq: u8,
    count: u8,
}

impl<'a> Chunks<'a> {
    /// Cuts `payload` into `chunk_size`-byte datagrams with message id `id`.
    ///
    /// # Panics
    /// If the payload needs more than [`MAX_CHUNKS`] chunks: callers shrink
    /// messages to [`max_payload`] first.
    pub fn new(payload: &'a [u8], chunk_size: usize, id: u64) -> Chunks<'a> {
        let per_chunk = data_per_chunk(chunk_size);
        let count = payload.len().div_ceil(per_chunk).max(1);
        assert!(
            count <= MAX_CHUNKS,
            "payload of {} bytes needs {count} chunks",
            payload.len()
        );
        Chunks {
            payload,
            id: id.to_be_bytes(),
            per_chunk,
            seq: 0,
            count: count as u8,
        }
    }

    /// How many chunks the payload makes.
    pub fn count(&self) -> u8 {
        self.count
    }

    /// Replaces `out` with the next chunk; `false` once all were written.
    pub fn write_next(&mut self, out: &mut Vec<u8>) -> bool {
        if self.seq >= self.count {
            return false;
        }
        let start = usize::from(self.seq) * self.per_chunk;
        let end = (start + self.per_chunk).min(self.payload.len());
        out.clear();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.id);
        out.push(self.seq);
        out.push(self.count);
        out.extend_from_slice(&self.payload[start..end]);
        self.seq += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(payload: &[u8], chunk_size: usize, id: u64) -> Vec<Vec<u8>> {
        let mut c = Chunks::new(payload, chunk_size, id);
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while c.write_next(&mut buf) {
            out.push(buf.clone());
        }
        out
    }

    #[test]
    fn header_layout_and_reassembly() {
        let payload: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let chunks = all(&payload, 1000, 0x0102_0304_0506_0708);
        assert_eq!(chunks.len(), 3); // 988 + 988 + 524
        let mut joined = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            assert!(c.len() <= 1000);
            assert_eq!(&c[..2], &[0x1e, 0x0f]);
            assert_eq!(&c[2..10], &[1, 2, 3, 4, 5, 6, 7, 8]);
            assert_eq!(c[10], i as u8);
            assert_eq!(c[11], 3);
            joined.extend_from_slice(&c[HEADER_LEN..]);
        }
        assert_eq!(joined, payload);
    }

    #[test]
    fn exactly_max_chunks_fits() {
        let payload = vec![7u8; max_payload(100)];
        let chunks = all(&payload, 100, 1);
        assert_eq!(chunks.len(), MAX_CHUNKS);
        assert!(chunks.iter().all(|c| c.len() == 100 && c[11] == 128));
        assert_eq!(chunks[127][10], 127);
    }

    #[test]
    #[should_panic(expected = "needs 129 chunks")]
    fn one_byte_more_than_max_is_refused() {
        let payload = vec![7u8; max_payload(100) + 1];
        Chunks::new(&payload, 100, 1);
    }
}
