//! Length-prefixed frames on a byte stream, without I/O: the framing QUIC puts around
//! each protobuf `Frame` (docs/protocol.md §1.2), where WebSocket has its own
//! messages. Server (`transport::quic`) and client (`client`) share it.
//!
//! Each frame is a 4-byte big-endian length followed by that many bytes of one
//! encoded `Frame`. The decoder refuses a length over its limit as soon as the four
//! prefix bytes arrive — before any of the body is buffered — so a peer announcing a
//! huge frame costs nothing; it never holds more than one frame's bytes (plus what
//! the last read brought) at a time.

use bytes::{Buf, Bytes, BytesMut};

/// Bytes of the length prefix.
pub const PREFIX_BYTES: usize = 4;

/// Why the byte stream cannot be framed any further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("frame of {announced} bytes announced, over the limit of {limit}")]
    TooLarge { announced: usize, limit: usize },
}

/// Splits a byte stream into frames.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_frame: usize,
}

impl FrameDecoder {
    /// A decoder refusing frames over `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder {
            buf: BytesMut::new(),
            max_frame,
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `Ok(None)` until one has fully arrived. After an
    /// error the stream cannot be resynchronised: close it.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FramingError> {
        if self.buf.len() < PREFIX_BYTES {
            return Ok(None);
        }
        let mut prefix = [0u8; PREFIX_BYTES];
        prefix.copy_from_slice(&self.buf[..PREFIX_BYTES]);
        let announced = u32::from_be_bytes(prefix) as usize;
        if announced > self.max_frame {
            return Err(FramingError::TooLarge {
                announced,
                limit: self.max_frame,
            });
        }
        if self.buf.len() < PREFIX_BYTES + announced {
            // Reserve for the rest of this frame only, never more than the limit.
            self.buf.reserve(PREFIX_BYTES + announced - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(PREFIX_BYTES);
        Ok(Some(self.buf.split_to(announced).freeze()))
    }
}

/// The length prefix of an encoded frame, written before it.
pub fn prefix(frame: &[u8]) -> [u8; PREFIX_BYTES] {
    // Outbound frames are bounded far below 4 GiB (batches by bytes, messages by
    // `max_payload_bytes`); saturate rather than wrap if that ever changed.
    u32::try_from(frame.len()).unwrap_or(u32::MAX).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(frames: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in frames {
            out.extend_from_slice(&prefix(f));
            out.extend_from_slice(f);
        }
        out
    }

    #[test]
    fn frames_come_out_whole_however_the_bytes_are_split() {
        let stream = framed(&[b"hello", b"", b"world!"]);
        // All at once.
        let mut d = FrameDecoder::new(64);
        d.push(&stream);
        let mut got = Vec::new();
        while let Some(f) = d.next_frame().unwrap() {
            got.push(f);
        }
        assert_eq!(got, [&b"hello"[..], b"", b"world!"]);
        assert_eq!(d.buffered(), 0);
        // One byte at a time.
        let mut d = FrameDecoder::new(64);
        let mut got = Vec::new();
        for b in &stream {
            d.push(std::slice::from_ref(b));
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, [&b"hello"[..], b"", b"world!"]);
    }

    #[test]
    fn an_oversized_length_is_refused_before_the_body_arrives() {
        let mut d = FrameDecoder::new(16);
        d.push(&prefix(&[0u8; 17]));
        assert_eq!(
            d.next_frame(),
            Err(FramingError::TooLarge {
                announced: 17,
                limit: 16
            })
        );
        let mut d = FrameDecoder::new(16);
        d.push(&[0xff, 0xff, 0xff, 0xff]);
        assert!(d.next_frame().is_err());
        // A frame at the limit is fine; a partial prefix waits.
        let mut d = FrameDecoder::new(16);
        d.push(&framed(&[&[7u8; 16]]));
        assert_eq!(d.next_frame().unwrap().unwrap().len(), 16);
        d.push(&[0, 0]);
        assert_eq!(d.next_frame(), Ok(None));
    }
}
