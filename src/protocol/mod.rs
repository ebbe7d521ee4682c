//! Sans-IO protocol core: the frame codec with its limits, the length-prefix framing
//! of stream transports, and the per-connection session state machine. Nothing here touches a socket; `transport` feeds bytes in
//! and writes the frames out.

pub mod backlog;
pub mod codec;
pub mod framing;
pub mod session;
#[cfg(test)]
mod whole_session;

pub use codec::{CodecError, Limits};
pub use session::{Session, SessionEvent};

/// The protocol version this server speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// WebSocket subprotocol name for version 1.
pub const WS_SUBPROTOCOL: &str = "courier.v1";

/// Status codes of `Error.code`, `ServerAck.code` and `LoginResult.code`: the
/// HTTP-like values of docs/protocol.md §7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Status {
    /// Success.
    Ok = 200,
    /// Malformed frame, unknown frame type or invalid field.
    BadRequest = 400,
    /// Token missing, wrong, expired or for another app.
    Unauthorized = 401,
    /// The sender may not send there (not a member, …).
    Forbidden = 403,
    /// Target does not exist.
    NotFound = 404,
    /// Frame not allowed in the current session state (Send before Login, second Login).
    Conflict = 409,
    /// Frame or payload over the configured size limit.
    TooLarge = 413,
    /// Too many frames per second, devices, or a quota.
    RateLimited = 429,
    /// Server-side failure (store unavailable, …).
    Internal = 500,
    /// The server is shutting down, or the send must be retried.
    Unavailable = 503,
}

impl Status {
    /// The value on the wire.
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// The status with this wire value.
    pub fn from_code(code: u32) -> Option<Status> {
        const ALL: [Status; 10] = [
            Status::Ok,
            Status::BadRequest,
            Status::Unauthorized,
            Status::Forbidden,
            Status::NotFound,
            Status::Conflict,
            Status::TooLarge,
            Status::RateLimited,
            Status::Internal,
            Status::Unavailable,
        ];
        ALL.into_iter().find(|s| s.code() == code)
    }
}

/// Why the server ends a connection: `Kick.code` and its reason text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum KickReason {
    /// The same (user, resource) logged in again elsewhere.
    Replaced = 1,
    /// The device did not read fast enough; its queue filled.
    SlowConsumer = 2,
    /// Nothing received for the idle timeout.
    Idle = 3,
    /// No Login within the login timeout.
    LoginTimeout = 4,
    /// The server is shutting down.
    Shutdown = 5,
    /// The server could not read the store during login; reconnect later.
    StoreUnavailable = 6,
    /// The account was a temporary account and its lifetime ended.
    AccountExpired = 7,
}

impl KickReason {
    /// The value on the wire.
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// The reason with this wire value.
    pub fn from_code(code: u32) -> Option<KickReason> {
        const ALL: [KickReason; 7] = [
            KickReason::Replaced,
            KickReason::SlowConsumer,
            KickReason::Idle,
            KickReason::LoginTimeout,
            KickReason::Shutdown,
            KickReason::StoreUnavailable,
            KickReason::AccountExpired,
        ];
        ALL.into_iter().find(|r| r.code() == code)
    }

    /// A short name for metrics labels.
    pub const fn label(self) -> &'static str {
        match self {
            KickReason::Replaced => "replaced",
            KickReason::SlowConsumer => "slow_consumer",
            KickReason::Idle => "idle",
            KickReason::LoginTimeout => "login_timeout",
            KickReason::Shutdown => "shutdown",
            KickReason::StoreUnavailable => "store_unavailable",
            KickReason::AccountExpired => "account_expired",
        }
    }

    /// The `Kick.reason` text.
    pub const fn text(self) -> &'static str {
        match self {
            KickReason::Replaced => "logged in again elsewhere with the same resource",
            KickReason::AccountExpired => "account expired: the app's account lifetime ended",
            KickReason::SlowConsumer => "slow consumer: send queue full; reconnect to resync",
            KickReason::Idle => "idle timeout",
            KickReason::LoginTimeout => "no login within the login timeout",
            KickReason::Shutdown => "server shutting down",
            KickReason::StoreUnavailable => "store unavailable",
        }
    }
}

/// The wire values of [`Status`] and [`KickReason`] as plain numbers, for clients
/// and tests that compare the `code` fields of decoded frames.
pub mod codes {
    use super::{KickReason, Status};

    pub const OK: u32 = Status::Ok.code();
    pub const BAD_REQUEST: u32 = Status::BadRequest.code();
    pub const UNAUTHORIZED: u32 = Status::Unauthorized.code();
    pub const FORBIDDEN: u32 = Status::Forbidden.code();
    pub const NOT_FOUND: u32 = Status::NotFound.code();
    pub const CONFLICT: u32 = Status::Conflict.code();
    pub const TOO_LARGE: u32 = Status::TooLarge.code();
    pub const RATE_LIMITED: u32 = Status::RateLimited.code();
    pub const INTERNAL: u32 = Status::Internal.code();
    pub const UNAVAILABLE: u32 = Status::Unavailable.code();

    pub const KICK_REPLACED: u32 = KickReason::Replaced.code();
    pub const KICK_SLOW_CONSUMER: u32 = KickReason::SlowConsumer.code();
    pub const KICK_IDLE: u32 = KickReason::Idle.code();
    pub const KICK_LOGIN_TIMEOUT: u32 = KickReason::LoginTimeout.code();
    pub const KICK_SHUTDOWN: u32 = KickReason::Shutdown.code();
    pub const KICK_STORE_UNAVAILABLE: u32 = KickReason::StoreUnavailable.code();
}
