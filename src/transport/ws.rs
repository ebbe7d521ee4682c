//! WebSocket transport: `GET /ws`, subprotocol `courier.v1`, one protobuf frame per
//! binary message. Control frames (ping/pong/close) are answered by tungstenite.
//!
//! Bounds: unsent bytes of a socket (frames and the pongs tungstenite queues by
//! itself) are capped at `ws_max_write_buffer_bytes`: a pong that does not fit is
//! not queued, and a frame that does not fit fails the write, which closes the
//! connection. Pings count against the frame rate and keep the connection alive;
//! a peer that only pings is still closed by the login timeout or, when it stops
//! reading, by `write_timeout_secs`.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};

use crate::protocol::WS_SUBPROTOCOL;
use crate::session::{self, Inbound};
use crate::state::AppState;

/// Per-connection read buffer; larger frames grow it as needed.
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// Upgrades the request and runs the session.
pub async fn upgrade(ws: WebSocketUpgrade, State(state): State<Arc<AppState>>) -> Response {
    // Let oversize messages through to the codec (up to 2x) so the client gets an
    // Error frame with the limit instead of a bare close.
    let max = state.config.max_frame_bytes.saturating_mul(2);
    let tracker = state.connections.clone();
    ws.protocols([WS_SUBPROTOCOL])
        // tungstenite zero-fills up to this much per socket read and keeps it per
        // connection: the 128 KiB default costs CPU and memory for small frames.
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(crate::config::WS_WRITE_BUFFER_BYTES)
        .max_write_buffer_size(state.config.ws_max_write_buffer_bytes)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| async move {
            // Refused once shutdown began (tracker closed is still fine to spawn on).
            tracker.track_future(serve(socket, state)).await;
        })
}

async fn serve(socket: WebSocket, state: Arc<AppState>) {
    let (sink, stream) = socket.split();
    let sink =
        sink.with(|frame: Bytes| async move { Ok::<_, axum::Error>(Message::Binary(frame)) });
    let stream = stream.filter_map(|msg| async move {
        match msg {
            Ok(Message::Binary(b)) => Some(Ok(Inbound::Frame(b))),
            Ok(Message::Text(_)) => Some(Ok(Inbound::Unsupported(
                "text messages are not supported; send protobuf frames as binary messages",
            ))),
            Ok(Message::Close(_)) => None,
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => Some(Ok(Inbound::Control)),
            Err(e) => Some(Err(e)),
        }
    });
    session::drive(Box::pin(stream), Box::pin(sink), state).await;
}
