//! MIMC web transport: `GET /mimc`, no subprotocol, one MIMC frame per binary
//! message (mimc-wire.md §3). The sans-IO [`MimcSession`] translates between the
//! MIMC wire and the session core; this adapter feeds it the socket's messages,
//! writes what it answers, looks up the app of a BIND for the signature check, and
//! hands the core's requests to the same driver as `/ws` and QUIC.
//!
//! Bounds: the same as `/ws` (frame size, frame rate, write buffer, timeouts), plus
//! the MIMC header limit (`mimc_max_header_bytes`) and the MIMC idle timeout
//! (`mimc_idle_timeout_secs`). Frames the codec answers itself count against the
//! frame rate; while its answers cannot be written the peer is not read. A frame
//! that is not MIMC (bad magic, checksum, lengths, protobuf, a text message) closes
//! the connection with 1002; a refused BIND is answered, and the socket closes 200 ms
//! later (the SDK reads frames asynchronously) with 1008.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};

use crate::directory::AppEntry;
use crate::mimc::session::{FromPeer, MimcSession};
use crate::session::{self, FrameIo, Inbound};
use crate::state::AppState;
use crate::store::StoreResult;

/// Per-connection read buffer, held for the connection's life, and the most
/// tungstenite reads at once. Tiny on purpose: tungstenite reserves a frame's length
/// again once its header is read, and the doubling that follows sizes the buffer for
/// good. From 16 bytes, the SDK's CONN and ~220-byte BIND leave it at ~230 bytes (a
/// 256-byte allocation); from 256 bytes they leave 512, from 512 bytes 1 KiB. That
/// makes an idle MIMC session cost what a `/ws` one does (BENCHMARKS.md). The reads
/// come from the socket's read-ahead (`read_ahead`), a copy each rather than a system
/// call: ~19 ns a read, so ~0.4 µs for a ~300-byte SECMSG and ~14 µs for a 12 KB one.
const READ_BUFFER_BYTES: usize = 16;

/// How long a refused BIND's answer is given to reach the SDK before the close.
const REFUSAL_GRACE: Duration = Duration::from_millis(200);

/// Upgrades the request and runs the session.
pub async fn upgrade(ws: WebSocketUpgrade, State(state): State<Arc<AppState>>) -> Response {
    if !state.config.mimc {
        return crate::api::ApiError::new(404, "MIMC web clients are off (mimc = false)")
            .into_response();
    }
    let max = state.config.max_frame_bytes.saturating_add(
        crate::mimc::frame::PREFIX_BYTES
            + crate::mimc::frame::TRAILER_BYTES
            + state.config.mimc_max_header_bytes,
    );
    let tracker = state.connections.clone();
    ws.read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(crate::config::WS_WRITE_BUFFER_BYTES)
        .max_write_buffer_size(state.config.ws_max_write_buffer_bytes)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| {
            let io: FrameIo<axum::Error> = Box::pin(MimcFrames::new(socket, state.clone()));
            tracker.track_future(session::drive(
                io,
                state.clone(),
                "mimc",
                state.config.mimc_session(),
            ))
        })
}

type AppLookup = Pin<Box<dyn Future<Output = StoreResult<Option<Arc<AppEntry>>>> + Send>>;

/// A WebSocket speaking MIMC, as session input and frame output. What MIMC adds is
/// boxed, so this object has the size of `/ws`'s (one allocation size class).
struct MimcFrames {
    ws: WebSocket,
    m: Box<MimcState>,
}

/// What one MIMC connection adds to its WebSocket.
struct MimcState {
    codec: MimcSession,
    state: Arc<AppState>,
    /// MIMC frames waiting for the socket; the first `sent` are written.
    out: Vec<Bytes>,
    sent: u32,
    /// Frames were written but not flushed.
    unflushed: bool,
    /// The codec closed the connection: the stream has ended.
    ended: bool,
    /// The close code to send when the connection closes.
    close_code: u16,
    /// The app lookup of a BIND in progress, or the pause before closing after a
    /// refused BIND.
    waiting: Option<Box<Waiting>>,
}

enum Waiting {
    Lookup(AppLookup),
    Grace(Pin<Box<tokio::time::Sleep>>),
}

impl MimcFrames {
    fn new(ws: WebSocket, state: Arc<AppState>) -> Self {
        let limits = state.config.mimc_frame_limits();
        MimcFrames {
            ws,
            m: Box::new(MimcState {
                codec: MimcSession::new(limits, rand::random(), rand::random()),
                state,
                out: Vec::new(),
                sent: 0,
                unflushed: false,
                ended: false,
                close_code: 1000,
                waiting: None,
            }),
        }
    }

    /// Writes the waiting frames (without flushing them).
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        while (self.m.sent as usize) < self.m.out.len() {
            ready!(self.ws.poll_ready_unpin(cx))?;
            // Taken, not cloned: a clone of a frame built from a Vec allocates.
            let frame = std::mem::take(&mut self.m.out[self.m.sent as usize]);
            self.ws.start_send_unpin(Message::Binary(frame))?;
            self.m.sent += 1;
            self.m.unflushed = true;
        }
        // Idle connections keep no buffer.
        self.m.out = Vec::new();
        self.m.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Writes and flushes the codec's own answers; a flush that must wait goes on
    /// at the next poll.
    fn answer(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        ready!(self.drain(cx))?;
        if self.m.unflushed {
            ready!(self.ws.poll_flush_unpin(cx))?;
            self.m.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }
}

impl MimcState {
    /// Starts the app lookup a BIND needs.
    fn look_up(&mut self, app_id: u64) {
        let state = self.state.clone();
        self.waiting = Some(Box::new(Waiting::Lookup(Box::pin(async move {
            state.directory.app_entry(app_id).await
        }))));
    }

    /// The codec's answer to the looked-up app.
    fn bind_checked(&mut self, found: StoreResult<Option<Arc<AppEntry>>>) -> FromPeer {
        let now = self.state.clock.now_ms();
        match found {
            Ok(entry) => {
                let app = entry.as_deref().map(|e| &e.app);
                self.codec.bind_checked(Ok(app), now)
            }
            Err(e) => {
                crate::log_limited!(error, error = %e, "MIMC BIND: app lookup failed");
                self.codec.bind_checked(Err(()), now)
            }
        }
    }
}

impl Stream for MimcFrames {
    type Item = Result<Inbound, axum::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        // A peer whose answers cannot be written is not read.
        if let Err(e) = ready!(this.answer(cx)) {
            return Poll::Ready(Some(Err(e)));
        }
        if this.m.ended {
            return Poll::Ready(None);
        }
        loop {
            let step = match this.m.waiting.as_deref_mut() {
                Some(Waiting::Lookup(lookup)) => {
                    let found = ready!(lookup.as_mut().poll(cx));
                    this.m.waiting = None;
                    this.m.bind_checked(found)
                }
                _ => match ready!(this.ws.poll_next_unpin(cx)) {
                    None | Some(Ok(Message::Close(_))) => return Poll::Ready(None),
                    Some(Ok(Message::Binary(message))) => {
                        let now = this.m.state.clock.now_ms();
                        this.m.codec.on_message(&message, now)
                    }
                    Some(Ok(Message::Text(_))) => FromPeer::Close(crate::mimc::session::Close {
                        last: None,
                        why: "text message on a MIMC connection".into(),
                        code: 1002,
                    }),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                        return Poll::Ready(Some(Ok(Inbound::Control)))
                    }
                    Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                },
            };
            let inbound = match step {
                FromPeer::Nothing => Inbound::Control,
                FromPeer::Answer(frame) => {
                    this.m.out.push(frame);
                    Inbound::Control
                }
                FromPeer::CheckBind { app_id } => {
                    this.m.look_up(app_id);
                    continue;
                }
                FromPeer::Core(inbound) => inbound,
                FromPeer::Logout { kick, logout } => {
                    this.m.out.push(kick);
                    logout
                }
                FromPeer::Close(close) => {
                    crate::log_limited!(info, why = %close.why, "MIMC connection closed");
                    this.m.out.extend(close.last);
                    this.m.close_code = close.code;
                    this.m.ended = true;
                    let _ = this.answer(cx);
                    return Poll::Ready(None);
                }
            };
            if let Poll::Ready(Err(e)) = this.answer(cx) {
                return Poll::Ready(Some(Err(e)));
            }
            return Poll::Ready(Some(Ok(inbound)));
        }
    }
}

impl Sink<Bytes> for MimcFrames {
    type Error = axum::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        this.ws.poll_ready_unpin(cx)
    }

    fn start_send(self: Pin<&mut Self>, frame: Bytes) -> Result<(), Self::Error> {
        let m = &mut *self.get_mut().m;
        m.codec.to_peer(&frame, &mut m.out);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        let m = &mut *this.m;
        m.codec.flush(&mut m.out);
        ready!(this.drain(cx))?;
        this.m.unflushed = false;
        this.ws.poll_flush_unpin(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        let m = &mut *this.m;
        m.codec.flush(&mut m.out);
        ready!(this.drain(cx))?;
        if this.m.codec.refused() {
            if !matches!(this.m.waiting.as_deref(), Some(Waiting::Grace(_))) {
                let grace = Box::pin(tokio::time::sleep(REFUSAL_GRACE));
                this.m.waiting = Some(Box::new(Waiting::Grace(grace)));
            }
            if let Some(Waiting::Grace(grace)) = this.m.waiting.as_deref_mut() {
                ready!(grace.as_mut().poll(cx));
            }
        }
        if this.m.close_code != 0 {
            ready!(this.ws.poll_ready_unpin(cx))?;
            let code = match this.m.codec.refused() {
                true => 1008,
                false => this.m.close_code,
            };
            let close = CloseFrame {
                code,
                reason: "".into(),
            };
            this.m.close_code = 0;
            // A peer that closed first refuses the frame: close all the same.
            let _ = this.ws.start_send_unpin(Message::Close(Some(close)));
        }
        this.ws.poll_close_unpin(cx)
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    /// The connection's transport object stays in the size class of `/ws`'s (a
    /// WebSocket and one pointer), and what MIMC adds fits 128 bytes: each idle
    /// connection pays for them.
    #[test]
    fn a_mimc_connection_adds_one_small_allocation() {
        assert!(std::mem::size_of::<MimcFrames>() <= std::mem::size_of::<WebSocket>() + 8);
        assert!(std::mem::size_of::<MimcState>() <= 128);
    }
}
