//! The transport-agnostic session driver: runs the sans-IO session rules of
//! `crate::protocol` for one connection against the router, the store and the hub.
//! A transport (WebSocket or QUIC) only turns its bytes into [`Inbound`]
//! items and writes the frames it is given.

mod driver;
mod sync;

pub use driver::{drive, FrameIo, FrameTransport};

/// One inbound unit from a transport.
#[derive(Debug, PartialEq)]
pub enum Inbound {
    /// A binary frame.
    Frame(bytes::Bytes),
    /// A request a second codec (MIMC) already decoded into the core's frame kinds:
    /// checked and handled like a decoded frame, without encoding it again.
    Request(Box<crate::pb::frame::Kind>),
    /// Something the protocol does not accept (e.g. a text message).
    Unsupported(&'static str),
    /// A frame announced larger than `max_frame_bytes`, refused before its body was
    /// read (stream transports); the session answers 413 and closes.
    TooLarge(usize),
    /// A transport-level control message (a WebSocket ping), or a frame a second
    /// codec answered itself (MIMC's CONN): no frame for the core, but it counts
    /// against the frame rate like one.
    Control,
    /// The peer asks for its backlog again (MIMC's PULL): read from the device's
    /// cursor, as at login. Counts against the frame rate like a frame.
    Resync,
}
