//! WebSocket transport: `GET /ws`, subprotocol `courier.v1`, one protobuf frame per
//! binary message. Control frames (ping/pong/close) are answered by tungstenite.
//!
//! Bounds: unsent bytes of a socket (frames and the pongs tungstenite queues by
//! itself) are capped at `ws_max_write_buffer_bytes`: a pong that does not fit is
//! not queued, and a frame that does not fit fails the write, which closes the
//! connection. Pings count against the frame rate and keep the connection alive;
//! a peer that only pings is still closed by the login timeout or, when it stops
//! reading, by `write_timeout_secs`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};

use crate::protocol::WS_SUBPROTOCOL;
use crate::session::{self, FrameIo, Inbound};
use crate::state::AppState;

/// Per-connection read buffer, held for the connection's life (tungstenite
/// allocates and zero-fills it up front); a larger frame grows it while it is read.
const READ_BUFFER_BYTES: usize = 512;

/// Upgrades the request and runs the session.
pub async fn upgrade(ws: WebSocketUpgrade, State(state): State<Arc<AppState>>) -> Response {
    // Let oversize messages through to the codec (up to 2x) so the client gets an
    // Error frame with the limit instead of a bare close.
    let max = state.config.max_frame_bytes.saturating_mul(2);
    let tracker = state.connections.clone();
    ws.protocols([WS_SUBPROTOCOL])
        // tungstenite allocates and zero-fills this much per connection for its
        // whole life; the 128 KiB default would dominate an idle connection's cost.
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(crate::config::WS_WRITE_BUFFER_BYTES)
        .max_write_buffer_size(state.config.ws_max_write_buffer_bytes)
        .max_message_size(max)
        .max_frame_size(max)
        // No async block around the session: it would keep a second copy of the
        // WebSocket in the connection's task for its whole life.
        .on_upgrade(move |socket| {
            let io: FrameIo<axum::Error> = Box::pin(WsFrames { ws: socket });
            tracker.track_future(session::drive(
                io,
                state.clone(),
                "ws",
                state.config.session(),
            ))
        })
}

/// A WebSocket as session input and frame output: binary messages are frames.
struct WsFrames {
    ws: WebSocket,
}

impl Stream for WsFrames {
    type Item = Result<Inbound, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let inbound = match ready!(self.ws.poll_next_unpin(cx)) {
            None | Some(Ok(Message::Close(_))) => return Poll::Ready(None),
            Some(Ok(Message::Binary(b))) => Inbound::Frame(b),
            Some(Ok(Message::Text(_))) => Inbound::Unsupported(
                "text messages are not supported; send protobuf frames as binary messages",
            ),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Inbound::Control,
            Some(Err(e)) => return Poll::Ready(Some(Err(e))),
        };
        Poll::Ready(Some(Ok(inbound)))
    }
}

impl Sink<Bytes> for WsFrames {
    type Error = axum::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.ws.poll_ready_unpin(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, frame: Bytes) -> Result<(), Self::Error> {
        self.ws.start_send_unpin(Message::Binary(frame))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.ws.poll_flush_unpin(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.ws.poll_close_unpin(cx)
    }
}
