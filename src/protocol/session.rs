//! The per-connection session state machine, without I/O.
//!
//! The transport hands every inbound frame's bytes to [`Session::on_frame`] and acts on
//! the returned [`SessionEvent`]: reply with a frame, close, or pass a request (login,
//! send, ack, pull) to the server side. The session owns the rules that do not need the
//! network or the store: frame limits, what is allowed in which state, the frame-rate
//! limit, and the login and idle timeouts.

use std::sync::Arc;

use bytes::Bytes;

use super::codec::{self, CodecError, Limits};
use super::{KickReason, Status, PROTOCOL_VERSION};
use crate::names;
use crate::pb::{self, frame::Kind};

/// Who a logged-in session belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub app_id: u64,
    pub uuid: u64,
    pub account: Arc<str>,
    pub resource: Arc<str>,
}

/// Session timing and rate settings.
#[derive(Debug, Clone, Copy)]
pub struct SessionConfig {
    pub limits: Limits,
    /// Close a connection that has not logged in after this long (ms).
    pub login_timeout_ms: u64,
    /// Close a logged-in connection that sent nothing for this long (ms).
    pub idle_timeout_ms: u64,
    /// Frames accepted per second per connection; 0 = unlimited.
    pub max_frames_per_sec: u32,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            limits: Limits::default(),
            login_timeout_ms: 10_000,
            idle_timeout_ms: 180_000,
            max_frames_per_sec: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    AwaitingLogin,
    LoggingIn,
    Active(Identity),
    Closed,
}

/// What the transport must do with one inbound frame.
#[derive(Debug, PartialEq)]
pub enum SessionEvent {
    /// Nothing to do (e.g. a frame dropped by the rate limit).
    None,
    /// Write this frame back; the session goes on.
    Reply(Bytes),
    /// Write this frame, then close the connection.
    Close(Bytes),
    /// The protocol version and the resource passed the session's checks: verify
    /// the token, then call [`Session::login_succeeded`] or [`Session::refuse_login`].
    Login {
        token: String,
        /// The resource after the name rule (`crate::names`).
        resource: String,
    },
    /// A valid Send from the logged-in user.
    Send(pb::Send),
    /// Cumulative device ack.
    Ack(u64),
    /// Page stored messages.
    Pull(pb::Pull),
    /// The client is leaving.
    Logout,
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    state: State,
    opened_ms: u64,
    last_rx_ms: u64,
    window_start_ms: u64,
    frames_in_window: u32,
}

impl Session {
    pub fn new(config: SessionConfig, now_ms: u64) -> Self {
        Session {
            config,
            state: State::AwaitingLogin,
            opened_ms: now_ms,
            last_rx_ms: now_ms,
            window_start_ms: now_ms,
            frames_in_window: 0,
        }
    }

    /// The identity once logged in.
    pub fn identity(&self) -> Option<&Identity> {
        match &self.state {
            State::Active(id) => Some(id),
            _ => None,
        }
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Handles one inbound frame.
    pub fn on_frame(&mut self, buf: &[u8], now_ms: u64) -> SessionEvent {
        if self.state == State::Closed {
            return SessionEvent::None;
        }
        let decoded = codec::decode(buf, &self.config.limits);
        self.on_decoded(decoded, now_ms)
    }

    /// Handles a request another codec decoded (MIMC): the same rules as a frame
    /// (rate, field limits, state), from the field checks on.
    pub fn on_request(&mut self, kind: Kind, now_ms: u64) -> SessionEvent {
        if self.state == State::Closed {
            return SessionEvent::None;
        }
        self.on_decoded(Ok(kind), now_ms)
    }

    fn on_decoded(&mut self, decoded: Result<Kind, CodecError>, now_ms: u64) -> SessionEvent {
        self.last_rx_ms = now_ms;
        if let Some(first_in_window) = self.rate_limited(now_ms) {
            let max = self.config.max_frames_per_sec;
            return match decoded {
                // Every refused Send is answered, so its sender knows to retry it.
                Ok(Kind::Send(send)) if send.packet_id.len() <= self.config.limits.max_id_bytes => {
                    SessionEvent::Reply(codec::error_frame(
                        Status::RateLimited,
                        format!("more than {max} frames per second; this send was not processed, retry it"),
                        send.packet_id,
                    ))
                }
                // Other frames: the first refused one of a window is answered.
                _ if first_in_window => self.frames_dropped(),
                _ => SessionEvent::None,
            };
        }
        let kind = match decoded {
            Ok(kind) => kind,
            Err(err @ CodecError::FrameTooLarge { .. }) => return self.close_too_large(err),
            Err(err) => {
                return SessionEvent::Reply(codec::error_frame(
                    Status::BadRequest,
                    err.to_string(),
                    "",
                ))
            }
        };
        if let Err(err) = codec::check_fields(&kind, &self.config.limits) {
            let packet_id = match &kind {
                Kind::Send(send) if send.packet_id.len() <= self.config.limits.max_id_bytes => {
                    send.packet_id.clone()
                }
                _ => String::new(),
            };
            let code = match err {
                CodecError::PayloadTooLarge { .. } => Status::TooLarge,
                _ => Status::BadRequest,
            };
            return SessionEvent::Reply(codec::error_frame(code, err.to_string(), packet_id));
        }
        self.on_kind(kind, now_ms)
    }

    fn on_kind(&mut self, kind: Kind, now_ms: u64) -> SessionEvent {
        match kind {
            Kind::Login(login) => match self.state {
                State::AwaitingLogin => {
                    let version = login.protocol_version;
                    if version != PROTOCOL_VERSION {
                        let desc = format!(
                            "unsupported protocol version {version}; this server speaks {PROTOCOL_VERSION}"
                        );
                        return SessionEvent::Close(self.refuse_login(
                            Status::BadRequest,
                            &desc,
                            now_ms,
                        ));
                    }
                    let resource = match names::name("resource", &login.resource) {
                        Ok(r) => r.to_owned(),
                        Err(e) => {
                            let desc = e.to_string();
                            return SessionEvent::Close(self.refuse_login(
                                Status::BadRequest,
                                &desc,
                                now_ms,
                            ));
                        }
                    };
                    self.state = State::LoggingIn;
                    SessionEvent::Login {
                        token: login.token,
                        resource,
                    }
                }
                _ => SessionEvent::Reply(codec::error_frame(
                    Status::Conflict,
                    "already logged in on this connection",
                    "",
                )),
            },
            Kind::Send(send) => {
                if self.identity().is_none() {
                    return SessionEvent::Reply(codec::error_frame(
                        Status::Conflict,
                        "send before login",
                        send.packet_id,
                    ));
                }
                let mut send = send;
                if let Err(desc) = validate_send(&mut send) {
                    return SessionEvent::Reply(codec::error_frame(
                        Status::BadRequest,
                        desc,
                        send.packet_id,
                    ));
                }
                SessionEvent::Send(send)
            }
            Kind::Ack(ack) => match self.identity() {
                Some(_) => SessionEvent::Ack(ack.sequence),
                None => not_logged_in("ack"),
            },
            Kind::Pull(pull) => match self.identity() {
                Some(_) => SessionEvent::Pull(pull),
                None => not_logged_in("pull"),
            },
            Kind::Ping(ping) => SessionEvent::Reply(codec::encode(Kind::Pong(pb::Pong {
                nonce: ping.nonce,
                server_time: now_ms,
            }))),
            Kind::Logout(_) => {
                self.state = State::Closed;
                SessionEvent::Logout
            }
            _ => SessionEvent::Reply(codec::error_frame(
                Status::BadRequest,
                "frame type is server-to-client only",
                "",
            )),
        }
    }

    /// Handles a frame a stream transport refused from its length prefix alone
    /// (over `max_frame_bytes`): answered 413, then the connection closes.
    pub fn on_too_large(&mut self, size: usize, now_ms: u64) -> SessionEvent {
        if self.state == State::Closed {
            return SessionEvent::None;
        }
        self.last_rx_ms = now_ms;
        let limit = self.config.limits.max_frame_bytes;
        self.close_too_large(CodecError::FrameTooLarge { size, limit })
    }

    fn close_too_large(&mut self, err: CodecError) -> SessionEvent {
        self.state = State::Closed;
        SessionEvent::Close(codec::error_frame(Status::TooLarge, err.to_string(), ""))
    }

    /// Handles an inbound message the protocol does not accept at all (e.g. a
    /// WebSocket text message): counted against the rate limit, answered with 400.
    pub fn on_unsupported(&mut self, why: &str, now_ms: u64) -> SessionEvent {
        if self.state == State::Closed {
            return SessionEvent::None;
        }
        self.last_rx_ms = now_ms;
        match self.rate_limited(now_ms) {
            Some(false) => SessionEvent::None,
            Some(true) => self.frames_dropped(),
            None => SessionEvent::Reply(codec::error_frame(Status::BadRequest, why, "")),
        }
    }

    /// Handles a transport-level control message (a WebSocket ping): it keeps the
    /// connection alive and counts against the frame rate like any frame.
    pub fn on_control(&mut self, now_ms: u64) -> SessionEvent {
        if self.state == State::Closed {
            return SessionEvent::None;
        }
        self.last_rx_ms = now_ms;
        match self.rate_limited(now_ms) {
            Some(true) => self.frames_dropped(),
            _ => SessionEvent::None,
        }
    }

    /// The answer to the first frame of a window dropped by the rate limit.
    fn frames_dropped(&self) -> SessionEvent {
        SessionEvent::Reply(codec::error_frame(
            Status::RateLimited,
            format!(
                "more than {} frames per second; frames dropped",
                self.config.max_frames_per_sec
            ),
            "",
        ))
    }

    /// The token was valid: the session is now active.
    pub fn login_succeeded(&mut self, identity: Identity) {
        self.state = State::Active(identity);
    }

    /// The login is refused (bad token, too many devices, …): the session ends, and
    /// this `LoginResult` is the last frame to write.
    pub fn refuse_login(&mut self, status: Status, desc: &str, now_ms: u64) -> Bytes {
        self.state = State::Closed;
        codec::encode(Kind::LoginResult(pb::LoginResult {
            code: status.code(),
            desc: desc.to_owned(),
            protocol_version: PROTOCOL_VERSION,
            server_time: now_ms,
            ..Default::default()
        }))
    }

    /// The successful `LoginResult` of an active session, with the device's starting
    /// cursor.
    pub fn login_result(&self, cursor: u64, now_ms: u64) -> Option<Bytes> {
        let id = self.identity()?;
        Some(codec::encode(Kind::LoginResult(pb::LoginResult {
            code: Status::Ok.code(),
            desc: "ok".into(),
            app_id: id.app_id,
            uuid: id.uuid,
            account: id.account.to_string(),
            cursor,
            server_time: now_ms,
            protocol_version: PROTOCOL_VERSION,
        })))
    }

    /// Marks the session closed (kicked, shut down, connection lost).
    pub fn close(&mut self) {
        self.state = State::Closed;
    }

    /// Whether more frames than the rate allows were counted in the current window
    /// (a cheap test before [`Session::read_paused_until_ms`]).
    pub fn over_rate_limit(&self) -> bool {
        let max = self.config.max_frames_per_sec;
        max > 0 && self.frames_in_window > max
    }

    /// While the frame rate limit is exceeded: when the current window ends. The
    /// transport stops reading until then, so a flood costs the server no more than
    /// `max_frames_per_sec` frames per second; what the peer sends meanwhile waits
    /// in TCP and is read in the next window.
    pub fn read_paused_until_ms(&self, now_ms: u64) -> Option<u64> {
        let max = self.config.max_frames_per_sec;
        let window_end = self.window_start_ms.saturating_add(1000);
        (max > 0 && self.frames_in_window > max && now_ms < window_end).then_some(window_end)
    }

    /// When the transport should next call [`Session::check_timeout`].
    pub fn next_deadline_ms(&self) -> u64 {
        match self.state {
            State::AwaitingLogin | State::LoggingIn => {
                self.opened_ms + self.config.login_timeout_ms
            }
            _ => self.last_rx_ms + self.config.idle_timeout_ms,
        }
    }

    /// Returns the kick to send if a timeout has passed at `now_ms`.
    pub fn check_timeout(&mut self, now_ms: u64) -> Option<Bytes> {
        let reason = match self.state {
            State::Closed => return None,
            State::AwaitingLogin | State::LoggingIn => KickReason::LoginTimeout,
            State::Active(_) => KickReason::Idle,
        };
        if now_ms < self.next_deadline_ms() {
            return None;
        }
        self.state = State::Closed;
        Some(codec::kick_frame(reason))
    }

    /// Counts a frame against the per-second limit: `None` if it is within it,
    /// otherwise whether it is the first refused frame of this one-second window.
    fn rate_limited(&mut self, now_ms: u64) -> Option<bool> {
        let max = self.config.max_frames_per_sec;
        if max == 0 {
            return None;
        }
        if now_ms >= self.window_start_ms + 1000 {
            self.window_start_ms = now_ms;
            self.frames_in_window = 0;
        }
        self.frames_in_window = self.frames_in_window.saturating_add(1);
        if self.frames_in_window <= max {
            return None;
        }
        let first = self.frames_in_window == max + 1;
        if first {
            crate::log_limited!(info, max, "frames dropped: max_frames_per_sec reached");
        }
        Some(first)
    }
}

fn not_logged_in(what: &str) -> SessionEvent {
    SessionEvent::Reply(codec::error_frame(
        Status::Conflict,
        format!("{what} before login"),
        "",
    ))
}

/// Checks a Send and applies the name rule (`crate::names`) to its `to_account`
/// and `to_resource`, which it trims.
fn validate_send(send: &mut pb::Send) -> Result<(), String> {
    if send.packet_id.is_empty() {
        return Err("packet_id is required".into());
    }
    // Text columns of some stores (PostgreSQL) cannot hold U+0000.
    if send.packet_id.contains('\0') || send.biz_type.contains('\0') {
        return Err("packet_id and biz_type must not contain U+0000".into());
    }
    match (send.to_account.is_empty(), send.topic_id) {
        (true, 0) => return Err("one of to_account or topic_id is required".into()),
        (false, t) if t != 0 => return Err("to_account and topic_id are exclusive".into()),
        (true, _) if !send.to_resource.is_empty() => {
            return Err("to_resource is for p2p sends; a topic message goes to every member".into())
        }
        _ => {}
    }
    if !send.to_account.is_empty() {
        let name = names::name("to_account", &send.to_account).map_err(|e| e.to_string())?;
        if name.len() != send.to_account.len() {
            send.to_account = name.to_owned();
        }
    }
    if !send.to_resource.trim().is_empty() {
        let name = names::name("to_resource", &send.to_resource).map_err(|e| e.to_string())?;
        if name.len() != send.to_resource.len() {
            send.to_resource = name.to_owned();
        }
    } else {
        send.to_resource.clear();
    }
    Ok(())
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
