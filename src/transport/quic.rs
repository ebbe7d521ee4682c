//! QUIC transport: a quinn endpoint with ALPN `courier/1`. A connection carries one
//! bidirectional stream, opened by the client, of length-prefixed frames
//! (`protocol::framing`); this module only turns that stream into
//! [`crate::session::Inbound`] items and a sink of frames for
//! [`crate::session::drive`], like the WebSocket transport does.
//!
//! Bounds (see `docs/security.md`):
//! - every connection, handshake included, takes one of the `max_connections` slots
//!   shared with the HTTP listener; over the limit a new connection is refused at
//!   once (a QUIC `CONNECTION_REFUSED`);
//! - the handshake must finish within `tls_handshake_timeout_secs`, and the session
//!   stream must be opened (its first bytes sent) within `login_timeout_secs`; both
//!   waits end at shutdown. Past 256 pending handshakes, unvalidated client addresses
//!   are sent a stateless Retry first, so spoofed sources hold at most 256 slots, each
//!   for at most the handshake timeout;
//! - a peer may open one more bidirectional stream than the session's; it is
//!   refused at once (`STOP_SENDING` and `RESET_STREAM` with code
//!   [`STREAM_REFUSED`]) and the session goes on; after [`MAX_REFUSED_STREAMS`]
//!   refusals the connection is closed with that code. Unidirectional streams are
//!   not allowed at all (stream limit 0: opening one is a `STREAM_LIMIT_ERROR`);
//! - flow control: the peer may send at most `2 × max_frame_bytes` ahead of the
//!   session reading its stream; a length prefix over `max_frame_bytes` is answered
//!   with a 413 Error frame and the connection closed before any of the body is read;
//! - unsent bytes are capped by the send window (`ws_max_write_buffer_bytes`), after
//!   which writes block and `write_timeout_secs` applies as on WebSocket;
//! - `quic_idle_timeout_secs` without any packet drops the connection.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Sink;
use quinn::crypto::rustls::QuicServerConfig;
use quinn::{Connection, RecvStream, SendStream, VarInt};
use tokio::sync::OwnedSemaphorePermit;

use crate::config::Config;
use crate::protocol::framing::{self, FrameDecoder, FramingError};
use crate::session::{self, FrameIo, Inbound};
use crate::state::AppState;
use crate::tls::{ServerCert, TlsError, QUIC_ALPN};

/// Application error code on a refused extra stream.
pub const STREAM_REFUSED: u32 = 0x10;
/// Application error code when the session ended normally.
pub const CLOSED_NORMALLY: u32 = 0;
/// Application error code when no session stream was opened in time.
pub const NO_SESSION_STREAM: u32 = 0x11;
/// Stream reset code when the server's last frame could not be written whole.
pub const FRAME_CUT_SHORT: u32 = 0x12;

/// Extra streams refused on one connection before the connection is closed.
const MAX_REFUSED_STREAMS: u32 = 8;

/// Handshakes in progress above which unvalidated addresses get a Retry first.
const HANDSHAKES_BEFORE_RETRY: usize = 256;

/// Most bytes taken from the stream per read (a stack buffer, not kept).
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// How long a finished session waits for the peer to acknowledge its last frames.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the QUIC listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("quic: {0}")]
    Crypto(String),
    #[error("cannot bind QUIC on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Binds the QUIC endpoint on `addr` with `cert`.
pub fn bind(
    addr: SocketAddr,
    cert: &ServerCert,
    config: &Config,
) -> Result<quinn::Endpoint, QuicError> {
    let tls = cert.server_config(&[QUIC_ALPN], true)?;
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| QuicError::Crypto(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport_config(config)));
    server.migration(true);
    quinn::Endpoint::server(server, addr).map_err(|source| QuicError::Bind { addr, source })
}

fn transport_config(config: &Config) -> quinn::TransportConfig {
    let window = VarInt::from_u64(2 * config.max_frame_bytes as u64).unwrap_or(VarInt::MAX);
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(2))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(window)
        .receive_window(window)
        .send_window(config.ws_max_write_buffer_bytes as u64)
        .datagram_receive_buffer_size(None)
        .max_idle_timeout(
            quinn::IdleTimeout::try_from(Duration::from_secs(config.quic_idle_timeout_secs)).ok(),
        )
        .keep_alive_interval(
            (config.quic_keep_alive_secs > 0)
                .then(|| Duration::from_secs(config.quic_keep_alive_secs)),
        );
    t
}

/// Accepts QUIC connections until shutdown, each running a session (tracked in
/// `state.connections`).
pub async fn serve(endpoint: quinn::Endpoint, state: Arc<AppState>) {
    let handshakes = Arc::new(AtomicUsize::new(0));
    let stop = state.shutdown.clone();
    loop {
        let incoming = tokio::select! {
            _ = stop.cancelled() => break,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
        };
        let peer = incoming.remote_address();
        let Some(slot) = state.slots.try_acquire() else {
            crate::log_limited!(warn, %peer, max_connections = state.slots.max(), "quic connection refused: max_connections reached");
            incoming.refuse();
            continue;
        };
        if !incoming.remote_address_validated()
            && handshakes.load(Ordering::Relaxed) >= HANDSHAKES_BEFORE_RETRY
        {
            // Stateless: costs nothing until the client proves its address.
            if let Err(e) = incoming.retry() {
                tracing::debug!(%peer, error = %e, "quic retry failed");
            }
            continue;
        }
        handshakes.fetch_add(1, Ordering::Relaxed);
        let conn_state = state.clone();
        let handshakes = handshakes.clone();
        state.connections.spawn(async move {
            let connection = handshake(incoming, peer, &conn_state).await;
            handshakes.fetch_sub(1, Ordering::Relaxed);
            if let Some(connection) = connection {
                run(connection, peer, conn_state, slot).await;
            }
        });
    }
    // New connections are refused from now on; the sessions, kicked on the same
    // token, close their own connections (see [`close`]).
    endpoint.set_server_config(None);
}

/// Closes the endpoint once the sessions are done, letting their last packets go out.
pub async fn close(endpoint: quinn::Endpoint) {
    endpoint.close(VarInt::from_u32(CLOSED_NORMALLY), b"server shutting down");
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, endpoint.wait_idle()).await;
}

async fn handshake(
    incoming: quinn::Incoming,
    peer: SocketAddr,
    state: &AppState,
) -> Option<Connection> {
    let limit = Duration::from_secs(state.config.tls_handshake_timeout_secs);
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(e) => {
            crate::log_limited!(info, %peer, error = %e, "quic connection not accepted");
            return None;
        }
    };
    let shutdown = state.shutdown.clone();
    let bounded = tokio::time::timeout(limit, connecting);
    let finished = tokio::select! {
        finished = bounded => finished,
        _ = shutdown.cancelled() => return None,
    };
    match finished {
        Ok(Ok(connection)) => Some(connection),
        Ok(Err(e)) => {
            crate::log_limited!(info, %peer, error = %e, "quic handshake failed");
            None
        }
        Err(_) => {
            crate::log_limited!(info, %peer, "quic handshake not finished within tls_handshake_timeout_secs");
            None
        }
    }
}

/// Runs the session of one connection: waits for its stream, drives it, refuses
/// any other stream meanwhile, then closes.
async fn run(
    connection: Connection,
    peer: SocketAddr,
    state: Arc<AppState>,
    slot: OwnedSemaphorePermit,
) {
    let _slot = slot;
    let login = Duration::from_secs(state.config.login_timeout_secs);
    let shutdown = state.shutdown.clone();
    let first_stream = tokio::select! {
        first = tokio::time::timeout(login, connection.accept_bi()) => first,
        _ = shutdown.cancelled() => {
            connection.close(VarInt::from_u32(CLOSED_NORMALLY), b"server shutting down");
            return;
        }
    };
    let (send, recv) = match first_stream {
        Ok(Ok(streams)) => streams,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "quic connection ended before its stream");
            return;
        }
        Err(_) => {
            crate::log_limited!(info, %peer, "quic connection closed: no stream opened within login_timeout_secs");
            connection.close(
                VarInt::from_u32(NO_SESSION_STREAM),
                b"no session stream opened in time",
            );
            return;
        }
    };
    let acknowledged = send.stopped();
    let io: FrameIo<std::io::Error> =
        Box::pin(QuicFrames::new(send, recv, state.config.max_frame_bytes));
    let session = session::drive(io, state.clone(), "quic", state.config.session());
    tokio::pin!(session);
    let mut refused = 0;
    loop {
        tokio::select! {
            _ = &mut session => break,
            extra = connection.accept_bi() => match extra {
                Ok((mut send, mut recv)) => {
                    let _ = recv.stop(VarInt::from_u32(STREAM_REFUSED));
                    let _ = send.reset(VarInt::from_u32(STREAM_REFUSED));
                    refused += 1;
                    if refused > MAX_REFUSED_STREAMS {
                        // A peer that keeps opening streams is not a client.
                        crate::log_limited!(info, %peer, "quic connection closed: too many extra streams");
                        connection.close(VarInt::from_u32(STREAM_REFUSED), b"one stream per connection");
                    } else {
                        crate::log_limited!(info, %peer, "quic stream refused: one stream per connection");
                    }
                }
                // The connection is gone; the session sees it on its stream.
                Err(_) => {
                    session.as_mut().await;
                    break;
                }
            },
        }
    }
    // The session finished its stream: give the peer a moment to receive the last
    // frames (a kick's reason) before the connection goes.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, acknowledged).await;
    connection.close(VarInt::from_u32(CLOSED_NORMALLY), b"");
}

/// The session stream: its frames as session input (a length over the limit ends
/// the input with [`Inbound::TooLarge`]), and a sink of frames, each written after
/// its length prefix (closing finishes the stream).
struct QuicFrames {
    recv: RecvStream,
    decoder: FrameDecoder,
    /// The input ended (finished, failed or refused).
    ended: bool,
    send: SendStream,
    prefix: [u8; framing::PREFIX_BYTES],
    /// Bytes of the prefix already written.
    prefix_done: usize,
    /// The frame being written (its unwritten rest).
    pending: Option<Bytes>,
}

impl QuicFrames {
    fn new(send: SendStream, recv: RecvStream, max_frame: usize) -> Self {
        QuicFrames {
            recv,
            decoder: FrameDecoder::new(max_frame),
            ended: false,
            send,
            prefix: [0; framing::PREFIX_BYTES],
            prefix_done: framing::PREFIX_BYTES,
            pending: None,
        }
    }

    /// Writes what is left of the current frame (prefix, then body).
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        while self.prefix_done < framing::PREFIX_BYTES {
            let rest = &self.prefix[self.prefix_done..];
            self.prefix_done += ready!(Pin::new(&mut self.send).poll_write(cx, rest))?;
        }
        while let Some(frame) = self.pending.as_mut() {
            if frame.is_empty() {
                self.pending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.send).poll_write(cx, frame))?;
            let _ = frame.split_to(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl futures_util::Stream for QuicFrames {
    type Item = Result<Inbound, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        while !this.ended {
            match this.decoder.next_frame() {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(Inbound::Frame(frame)))),
                Ok(None) => {}
                Err(FramingError::TooLarge { announced, .. }) => {
                    this.ended = true;
                    let _ = this.recv.stop(VarInt::from_u32(CLOSED_NORMALLY));
                    return Poll::Ready(Some(Ok(Inbound::TooLarge(announced))));
                }
            }
            // Read into uninitialized stack space: nothing to zero on every read.
            let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK_BYTES];
            let mut read = tokio::io::ReadBuf::uninit(&mut chunk);
            match ready!(this.recv.poll_read_buf(cx, &mut read)) {
                Ok(()) if read.filled().is_empty() => this.ended = true,
                Ok(()) => this.decoder.push(read.filled()),
                Err(e) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
        Poll::Ready(None)
    }
}

impl Sink<Bytes> for QuicFrames {
    type Error = std::io::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.get_mut().poll_pending(cx)
    }

    fn start_send(self: Pin<&mut Self>, frame: Bytes) -> Result<(), Self::Error> {
        let this = self.get_mut();
        this.prefix = framing::prefix(&frame);
        this.prefix_done = 0;
        this.pending = Some(frame);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Written bytes are in quinn's send buffer; it sends them as soon as it can.
        self.get_mut().poll_pending(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        let _ = this.send.finish();
        Poll::Ready(Ok(()))
    }
}

impl Drop for QuicFrames {
    /// A frame cut short (a close or write that timed out mid-frame) must not read
    /// as a clean end: the stream is reset instead of finished.
    fn drop(&mut self) {
        let partial = self.prefix_done < framing::PREFIX_BYTES
            || self.pending.as_ref().is_some_and(|f| !f.is_empty());
        if partial {
            let _ = self.send.reset(VarInt::from_u32(FRAME_CUT_SHORT));
        }
    }
}
