//! Transports: bytes ⇄ frames over a network connection, one task per connection.
//!
//! `ws` adapts an axum WebSocket to a stream of inbound frames and a sink of outbound
//! frames; `connection` drives the protocol session over any such pair.

pub mod connection;
pub mod listener;
pub mod ws;

/// One inbound unit from a transport.
#[derive(Debug)]
pub enum Inbound {
    /// A binary frame.
    Frame(bytes::Bytes),
    /// Something the protocol does not accept (e.g. a text message).
    Unsupported(&'static str),
    /// A transport-level control message (a WebSocket ping): no frame, but it counts
    /// against the frame rate like one.
    Control,
}
