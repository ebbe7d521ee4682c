//! Frame codec: bytes ⇄ [`Frame`], enforcing the size limits while decoding.
//!
//! Every limit is checked before or during decode; a bad frame is a [`CodecError`]
//! that the session turns into an `Error` frame. Nothing here panics on peer input.

use bytes::Bytes;
use prost::Message;

use super::{KickReason, Status};
use crate::pb::{self, frame::Kind, Frame};

/// Size limits applied to every inbound frame.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest encoded frame accepted, in bytes.
    pub max_frame_bytes: usize,
    /// Largest `Send.payload`, in bytes (default 15 KiB).
    pub max_payload_bytes: usize,
    /// Longest id-like string (packet id, account, resource, biz type), in bytes.
    pub max_id_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 64 * 1024,
            max_payload_bytes: 15 * 1024,
            max_id_bytes: 128,
        }
    }
}

/// Why an inbound frame was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("frame of {size} bytes is over the limit of {limit}")]
    FrameTooLarge { size: usize, limit: usize },
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("empty or unknown frame type")]
    UnknownFrame,
    #[error("payload of {size} bytes is over the limit of {limit}")]
    PayloadTooLarge { size: usize, limit: usize },
    #[error("field {field} is {size} bytes, over the limit of {limit}")]
    FieldTooLong {
        field: &'static str,
        size: usize,
        limit: usize,
    },
}

/// Decodes one frame, checking the frame size first. Field limits are checked by
/// [`check_fields`] so the caller still knows which Send a refusal answers.
pub fn decode(buf: &[u8], limits: &Limits) -> Result<Kind, CodecError> {
    if buf.len() > limits.max_frame_bytes {
        return Err(CodecError::FrameTooLarge {
            size: buf.len(),
            limit: limits.max_frame_bytes,
        });
    }
    let frame = Frame::decode(buf).map_err(|e| CodecError::Malformed(e.to_string()))?;
    frame.kind.ok_or(CodecError::UnknownFrame)
}

fn check_len(field: &'static str, value: &str, limit: usize) -> Result<(), CodecError> {
    if value.len() > limit {
        return Err(CodecError::FieldTooLong {
            field,
            size: value.len(),
            limit,
        });
    }
    Ok(())
}

/// Checks payload and id lengths of a decoded frame.
pub fn check_fields(kind: &Kind, limits: &Limits) -> Result<(), CodecError> {
    let id = limits.max_id_bytes;
    match kind {
        Kind::Send(send) => {
            if send.payload.len() > limits.max_payload_bytes {
                return Err(CodecError::PayloadTooLarge {
                    size: send.payload.len(),
                    limit: limits.max_payload_bytes,
                });
            }
            check_len("packet_id", &send.packet_id, id)?;
            check_len("to_account", &send.to_account, id)?;
            check_len("to_resource", &send.to_resource, id)?;
            check_len("biz_type", &send.biz_type, id)
        }
        Kind::Login(login) => check_len("resource", &login.resource, id),
        _ => Ok(()),
    }
}

/// Encodes a frame kind once into shareable bytes.
pub fn encode(kind: Kind) -> Bytes {
    let frame = Frame { kind: Some(kind) };
    let mut buf = Vec::with_capacity(frame.encoded_len());
    // Encoding into a Vec with enough capacity cannot fail.
    let _ = frame.encode(&mut buf);
    Bytes::from(buf)
}

/// Encodes an `Error` frame.
pub fn error_frame(status: Status, desc: impl Into<String>, packet_id: impl Into<String>) -> Bytes {
    encode(Kind::Error(pb::Error {
        code: status.code(),
        desc: desc.into(),
        packet_id: packet_id.into(),
    }))
}

/// Encodes a `Kick` frame with the reason's code and text.
pub fn kick_frame(reason: KickReason) -> Bytes {
    encode(Kind::Kick(pb::Kick {
        code: reason.code(),
        reason: reason.text().to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(payload: usize) -> Kind {
        Kind::Send(pb::Send {
            packet_id: "p1".into(),
            to_account: "bob".into(),
            payload: vec![7u8; payload].into(),
            ..Default::default()
        })
    }

    #[test]
    fn round_trips_a_send() {
        let limits = Limits::default();
        let bytes = encode(send(10));
        assert_eq!(decode(&bytes, &limits), Ok(send(10)));
    }

    #[test]
    fn refuses_oversized_frame_before_decoding() {
        let limits = Limits {
            max_frame_bytes: 16,
            ..Limits::default()
        };
        let bytes = encode(send(100));
        assert!(matches!(
            decode(&bytes, &limits),
            Err(CodecError::FrameTooLarge { limit: 16, .. })
        ));
    }

    #[test]
    fn refuses_oversized_payload() {
        let limits = Limits::default();
        assert!(matches!(
            check_fields(&send(15 * 1024 + 1), &limits),
            Err(CodecError::PayloadTooLarge { .. })
        ));
        assert!(check_fields(&send(15 * 1024), &limits).is_ok());
    }

    #[test]
    fn refuses_garbage_truncated_and_empty_frames() {
        let limits = Limits::default();
        assert!(matches!(
            decode(&[0xff, 0xff, 0xff], &limits),
            Err(CodecError::Malformed(_))
        ));
        let bytes = encode(send(50));
        assert!(matches!(
            decode(&bytes[..bytes.len() - 5], &limits),
            Err(CodecError::Malformed(_))
        ));
        assert_eq!(decode(&[], &limits), Err(CodecError::UnknownFrame));
        // Field 99 (unknown to v1) decodes to no known kind.
        assert_eq!(
            decode(&[0x98, 0x06, 0x01], &limits),
            Err(CodecError::UnknownFrame)
        );
    }

    #[test]
    fn refuses_overlong_ids() {
        let limits = Limits::default();
        let kind = Kind::Send(pb::Send {
            packet_id: "x".repeat(129),
            to_account: "bob".into(),
            ..Default::default()
        });
        assert!(matches!(
            check_fields(&kind, &limits),
            Err(CodecError::FieldTooLong {
                field: "packet_id",
                ..
            })
        ));
    }
}
