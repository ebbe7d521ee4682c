//! Sans-IO protocol core: the frame codec with its limits and the per-connection
//! session state machine. Nothing here touches a socket; `transport` feeds bytes in
//! and writes the frames out.

pub mod backlog;
pub mod codec;
pub mod session;

pub use codec::{CodecError, Limits};
pub use session::{Session, SessionEvent};

/// The protocol version this server speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// WebSocket subprotocol name for version 1.
pub const WS_SUBPROTOCOL: &str = "courier.v1";

/// Error and kick codes carried by `Error.code`, `Kick.code` and `ServerAck.code`.
pub mod codes {
    /// Success.
    pub const OK: u32 = 200;
    /// Malformed frame, unknown frame type or invalid field.
    pub const BAD_REQUEST: u32 = 400;
    /// Token missing, wrong, expired or for another app.
    pub const UNAUTHORIZED: u32 = 401;
    /// The sender may not send there (not a member, …).
    pub const FORBIDDEN: u32 = 403;
    /// Target does not exist.
    pub const NOT_FOUND: u32 = 404;
    /// Frame not allowed in the current session state (Send before Login, second Login).
    pub const CONFLICT: u32 = 409;
    /// Frame or payload over the configured size limit.
    pub const TOO_LARGE: u32 = 413;
    /// Too many frames per second.
    pub const RATE_LIMITED: u32 = 429;
    /// Server-side failure (store unavailable, …).
    pub const INTERNAL: u32 = 500;
    /// The server is shutting down or overloaded.
    pub const UNAVAILABLE: u32 = 503;

    /// Kick: the same (user, resource) logged in again elsewhere.
    pub const KICK_REPLACED: u32 = 1;
    /// Kick: the device did not read fast enough; its send queue filled.
    pub const KICK_SLOW_CONSUMER: u32 = 2;
    /// Kick: nothing received for the idle timeout.
    pub const KICK_IDLE: u32 = 3;
    /// Kick: no Login within the login timeout.
    pub const KICK_LOGIN_TIMEOUT: u32 = 4;
    /// Kick: the server is shutting down.
    pub const KICK_SHUTDOWN: u32 = 5;
    /// Kick: the server could not read the store during login; reconnect later.
    pub const KICK_STORE_UNAVAILABLE: u32 = 6;
}
