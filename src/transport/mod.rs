//! Transports: bytes ⇄ frames over a network connection, one task per connection.
//!
//! `listener` accepts TCP connections under the connection limit and serves HTTP;
//! `quic` runs the QUIC endpoint, one session stream per connection, split into frames
//! by `protocol::framing`;
//! `ws` adapts an axum WebSocket to a stream of [`crate::session::Inbound`] items and
//! a sink of outbound frames, in one object, and hands it to the transport-agnostic
//! [`crate::session::drive`]; `quic` does the same for a QUIC stream; `mimc` runs the
//! MIMC web codec (`crate::mimc`) on a WebSocket the same way. No session rule
//! lives here.

pub mod listener;
pub mod mimc;
pub mod quic;
pub mod read_ahead;
pub mod ws;
