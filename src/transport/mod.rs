//! Transports: bytes ⇄ frames over a network connection, one task per connection.
//!
//! `listener` accepts TCP connections under the connection limit and serves HTTP;
//! `framing` splits a byte stream into length-prefixed frames (for a stream transport
//! such as QUIC); `quic` runs the QUIC endpoint, one session stream per connection;
//! `ws` adapts an axum WebSocket to a stream of [`crate::session::Inbound`] items and
//! a sink of outbound frames, and hands both to the transport-agnostic
//! [`crate::session::drive`]. No session rule lives here.

pub mod framing;
pub mod listener;
pub mod quic;
pub mod ws;
