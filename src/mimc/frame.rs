//! The MIMC web SDK's frame layout (mimc-wire.md §3), sans-IO: one frame per binary
//! WebSocket message, big-endian —
//! `magic 0xC2FE · version · 3 · 2 · header length (u16) · payload length (u32) ·
//! ClientHeader · payload · Adler-32 of everything before it`.
//! Decoding checks the magic, the lengths against the message and the limits, and the
//! checksum, before anything is parsed; encoding writes the words the SDK sends (4, 3, 2).

use bytes::Bytes;

/// The first two bytes of every frame.
pub const MAGIC: u16 = 0xC2FE;
/// The version word the web SDK sends (it ignores the value on receive).
pub const VERSION: u16 = 4;
/// Fixed bytes before the header.
pub const PREFIX_BYTES: usize = 14;
/// The Adler-32 trailer.
pub const TRAILER_BYTES: usize = 4;

/// Bounds on a frame from a client.
#[derive(Debug, Clone, Copy)]
pub struct FrameLimits {
    pub max_header_bytes: usize,
    pub max_payload_bytes: usize,
}

/// Why bytes from a client are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is shorter than the 18-byte minimum")]
    TooShort(usize),
    #[error("bad magic {0:#06x} (want 0xc2fe)")]
    BadMagic(u16),
    #[error("header of {0} bytes is over the limit of {1}")]
    HeaderTooLong(usize, usize),
    #[error("payload of {0} bytes is over the limit of {1}")]
    PayloadTooLong(usize, usize),
    #[error("lengths say {announced} bytes, the message has {actual}")]
    LengthMismatch { announced: usize, actual: usize },
    #[error("checksum {got:#010x} does not match {want:#010x}")]
    Checksum { got: u32, want: u32 },
}

/// A decoded frame: the ClientHeader bytes and the payload bytes (not parsed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub header: Bytes,
    pub payload: Bytes,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Standard zlib Adler-32 (a = 1, b = 0, mod 65521), vectorised where the CPU
/// allows (`simd-adler32`: every byte of every MIMC frame is summed, both ways).
pub fn adler32(bytes: &[u8]) -> u32 {
    let mut sum = simd_adler32::Adler32::new();
    sum.write(bytes);
    sum.finish()
}

/// Decodes one whole message as one frame.
pub fn decode(message: &Bytes, limits: FrameLimits) -> Result<Frame, FrameError> {
    let len = message.len();
    if len < PREFIX_BYTES + TRAILER_BYTES {
        return Err(FrameError::TooShort(len));
    }
    let magic = u16_at(message, 0);
    if magic != MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    let header_len = usize::from(u16_at(message, 8));
    let payload_len = u32_at(message, 10) as usize;
    if header_len > limits.max_header_bytes {
        return Err(FrameError::HeaderTooLong(
            header_len,
            limits.max_header_bytes,
        ));
    }
    if payload_len > limits.max_payload_bytes {
        return Err(FrameError::PayloadTooLong(
            payload_len,
            limits.max_payload_bytes,
        ));
    }
    let body_end = PREFIX_BYTES + header_len + payload_len;
    let announced = body_end + TRAILER_BYTES;
    if announced != len {
        return Err(FrameError::LengthMismatch {
            announced,
            actual: len,
        });
    }
    let want = u32_at(message, body_end);
    let got = adler32(&message[..body_end]);
    if got != want {
        return Err(FrameError::Checksum { got, want });
    }
    Ok(Frame {
        header: message.slice(PREFIX_BYTES..PREFIX_BYTES + header_len),
        payload: message.slice(PREFIX_BYTES + header_len..body_end),
    })
}

/// Encodes one frame (the header must fit a u16 length; the server's are small).
pub fn encode(header: &[u8], payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(frame_len(header.len(), payload.len()));
    if put_prefix(&mut out, header.len(), payload.len()).is_none() {
        // Never for the server's own headers; refuse rather than cut one.
        return Bytes::new();
    }
    out.extend_from_slice(header);
    out.extend_from_slice(payload);
    finish(&mut out);
    Bytes::from(out)
}

/// The bytes of a frame with this header and payload.
pub fn frame_len(header_len: usize, payload_len: usize) -> usize {
    PREFIX_BYTES + header_len + payload_len + TRAILER_BYTES
}

/// Starts a frame in the empty `out`: the prefix announcing these lengths (the
/// header and the payload follow, then [`finish`]). `None` when the header is over
/// the u16 the layout has for it, or the payload over the u32.
pub fn put_prefix(out: &mut Vec<u8>, header_len: usize, payload_len: usize) -> Option<()> {
    let header_len = u16::try_from(header_len).ok()?;
    let payload_len = u32::try_from(payload_len).ok()?;
    for word in [MAGIC, VERSION, 3, 2, header_len] {
        out.extend_from_slice(&word.to_be_bytes());
    }
    out.extend_from_slice(&payload_len.to_be_bytes());
    Some(())
}

/// Ends a frame started by [`put_prefix`]: sets the payload length to what was
/// written after the header, and appends the checksum.
pub fn finish(out: &mut Vec<u8>) {
    let header_len = usize::from(u16_at(out, 8));
    let payload_len = out.len().saturating_sub(PREFIX_BYTES + header_len) as u32;
    out[10..14].copy_from_slice(&payload_len.to_be_bytes());
    let sum = adler32(out);
    out.extend_from_slice(&sum.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: FrameLimits = FrameLimits {
        max_header_bytes: 1024,
        max_payload_bytes: 64 * 1024,
    };

    use crate::mimc::captured_conn;

    #[test]
    fn the_captured_conn_frame_round_trips_with_its_checksum() {
        let (header, payload) = captured_conn();
        assert_eq!((header.len(), payload.len()), (37, 27));
        let frame = encode(&header, &payload);
        assert_eq!(frame.len(), 82);
        assert_eq!(
            &frame[..14],
            &[0xc2, 0xfe, 0, 4, 0, 3, 0, 2, 0, 0x25, 0, 0, 0, 0x1b]
        );
        assert_eq!(
            &frame[78..],
            &[0xdc, 0xc3, 0x14, 0x01],
            "zlib's adler32 of the first 78 bytes"
        );
        let decoded = decode(&frame, LIMITS).unwrap();
        assert_eq!(
            (&decoded.header[..], &decoded.payload[..]),
            (&header[..], &payload[..])
        );
    }

    #[test]
    fn bad_frames_are_refused_before_parsing() {
        let (header, payload) = captured_conn();
        let good = encode(&header, &payload);
        let refuse = |bytes: Vec<u8>| decode(&Bytes::from(bytes), LIMITS).unwrap_err();
        assert_eq!(refuse(good[..17].to_vec()), FrameError::TooShort(17));
        let mut magic = good.to_vec();
        magic[0] = 0;
        assert_eq!(refuse(magic), FrameError::BadMagic(0x00fe));
        let mut sum = good.to_vec();
        sum[81] ^= 1;
        assert!(matches!(refuse(sum), FrameError::Checksum { .. }));
        let mut body = good.to_vec();
        body[20] ^= 1;
        assert!(
            matches!(refuse(body), FrameError::Checksum { .. }),
            "a flipped body byte"
        );
        let mut extra = good.to_vec();
        extra.push(0);
        assert!(matches!(refuse(extra), FrameError::LengthMismatch { .. }));
        let mut huge = good.to_vec();
        huge[10..14].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(
            matches!(refuse(huge), FrameError::PayloadTooLong(..)),
            "before any allocation"
        );
        let tight = FrameLimits {
            max_header_bytes: 36,
            ..LIMITS
        };
        assert_eq!(
            decode(&good, tight).unwrap_err(),
            FrameError::HeaderTooLong(37, 36)
        );
    }

    #[test]
    fn any_bytes_decode_to_a_frame_or_an_error() {
        // A small deterministic fuzz: never a panic.
        let (header, payload) = captured_conn();
        let good = encode(&header, &payload).to_vec();
        let mut x: u32 = 0x1234_5678;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let mut bytes = good.clone();
            let at = x as usize % bytes.len();
            bytes[at] = (x >> 8) as u8;
            bytes.truncate(bytes.len() - (x as usize >> 24) % 4);
            let _ = decode(&Bytes::from(bytes), LIMITS);
        }
    }
}
