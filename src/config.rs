//! Server configuration: defaults, overlaid by a TOML file, overlaid by `COURIER_*`
//! environment variables and command-line flags (clap reads both).
//!
//! Every limit the server enforces has a key here; `courier.example.toml` documents them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::protocol::codec::Limits;
use crate::protocol::session::SessionConfig;

/// Bytes a WebSocket gathers before writing to its socket (tungstenite's default);
/// `ws_max_write_buffer_bytes` must leave room above it.
pub const WS_WRITE_BUFFER_BYTES: usize = 128 * 1024;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid setting: {0}")]
    Invalid(String),
}

/// The whole server configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP + WebSocket listen address.
    pub listen: SocketAddr,
    /// Directory of the embedded store.
    pub data_dir: PathBuf,
    /// Node id (0–15), part of every sequence.
    pub node_id: u8,
    /// Token lifetime in seconds.
    pub token_ttl_secs: u64,
    /// Largest inbound frame in bytes.
    pub max_frame_bytes: usize,
    /// Largest message payload in bytes.
    pub max_payload_bytes: usize,
    /// Frames per second accepted per connection (0 = unlimited).
    pub max_frames_per_sec: u32,
    /// Frames queued for one device before it is kicked as a slow consumer.
    pub device_queue_frames: usize,
    /// Seconds a connection may stay silent before it is closed.
    pub idle_timeout_secs: u64,
    /// Seconds a connection may take to log in.
    pub login_timeout_secs: u64,
    /// Seconds stored messages remain offline-deliverable (default 7 days).
    pub offline_ttl_secs: u64,
    /// Most backlog messages sent at login; above it the newest are sent with a pull notice.
    pub backlog_limit: usize,
    /// Messages per backlog batch frame.
    pub backlog_batch: usize,
    /// (sender, packetId) pairs remembered in memory for dedup (the store remembers all).
    pub dedup_cache: usize,
    /// Most messages in one group commit.
    pub commit_batch_max: usize,
    /// Sends queued to the router before senders wait.
    pub router_queue: usize,
    /// Seconds to drain connections and the store on shutdown.
    pub shutdown_grace_secs: u64,
    /// Read connections of the embedded store.
    pub store_readers: usize,
    /// Members a topic may have, unless the app sets its own limit.
    pub topic_member_limit: usize,

    // --- bounds on what peers control (docs/security.md) ---
    /// Open TCP connections on the HTTP listener (HTTP and WebSocket together).
    pub max_connections: usize,
    /// Seconds a connection may take to send a request's headers; also how long a
    /// kept-alive connection may wait idle for its next request.
    pub http_header_timeout_secs: u64,
    /// Seconds a request body may take to arrive completely.
    pub http_body_timeout_secs: u64,
    /// Most header fields in one request.
    pub http_max_headers: usize,
    /// Largest request head (request line and headers), bytes.
    pub http_max_header_bytes: usize,
    /// Largest body of `POST /api/account/token`, bytes.
    pub body_limit_token_bytes: usize,
    /// Largest body of a topic call, bytes.
    pub body_limit_topic_bytes: usize,
    /// Largest body of a push call, bytes.
    pub body_limit_push_bytes: usize,
    /// Bytes a WebSocket may hold unsent (frames and control replies) before the
    /// connection is closed.
    pub ws_max_write_buffer_bytes: usize,
    /// Seconds one write may stay blocked on a peer that does not read.
    pub write_timeout_secs: u64,
    /// Bytes queued for one device before it is kicked as a slow consumer.
    pub device_queue_bytes: usize,
    /// Devices (resources) of one user online at once; another login is refused.
    pub max_devices_per_user: usize,
    /// Sends of one connection waiting for their ServerAck; the connection reads
    /// no further frame until one is answered.
    pub max_inflight_sends: usize,
    /// Longest topic name, bytes.
    pub max_topic_name_bytes: usize,
    /// Longest topic bulletin, bytes.
    pub max_bulletin_bytes: usize,
    /// Most account names (or topic ids) in one REST call.
    pub max_names_per_call: usize,
    /// State-changing calls per second of one account (burst: twice this).
    pub rest_rate_per_account: u32,
    /// Accounts one account may name per second in state-changing calls (burst:
    /// twice this).
    pub rest_names_per_account: u32,
    /// Units of state-changing REST work per second of one app (a call costs one
    /// unit per account or topic it names, at least one; burst: twice this).
    pub rest_rate_per_app: u32,
    /// Topics kept in the in-memory topic cache (least recently used evicted).
    pub topic_cache: usize,
    /// Account → uuid entries kept in memory.
    pub account_cache: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("courier-data"),
            node_id: 0,
            token_ttl_secs: 24 * 3600,
            max_frame_bytes: 64 * 1024,
            max_payload_bytes: 15 * 1024,
            max_frames_per_sec: 10_000,
            device_queue_frames: 4096,
            idle_timeout_secs: 180,
            login_timeout_secs: 10,
            offline_ttl_secs: 7 * 24 * 3600,
            backlog_limit: 1000,
            backlog_batch: 100,
            dedup_cache: 200_000,
            commit_batch_max: 2048,
            router_queue: 16_384,
            shutdown_grace_secs: 10,
            store_readers: 4,
            topic_member_limit: 500,
            max_connections: 10_000,
            http_header_timeout_secs: 10,
            http_body_timeout_secs: 10,
            http_max_headers: 64,
            http_max_header_bytes: 64 * 1024,
            body_limit_token_bytes: 4 * 1024,
            body_limit_topic_bytes: 128 * 1024,
            body_limit_push_bytes: 128 * 1024,
            ws_max_write_buffer_bytes: 1024 * 1024,
            write_timeout_secs: 30,
            device_queue_bytes: 4 * 1024 * 1024,
            max_devices_per_user: 10,
            max_inflight_sends: 128,
            max_topic_name_bytes: 256,
            max_bulletin_bytes: 4096,
            max_names_per_call: 500,
            rest_rate_per_account: 10,
            rest_names_per_account: 1000,
            rest_rate_per_app: 5000,
            topic_cache: 100_000,
            account_cache: 1_000_000,
        }
    }
}

impl Config {
    /// Reads a TOML file; keys it does not set keep their defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Rejects settings the server cannot run with: every number is checked
    /// against a range, so no later arithmetic on it can overflow.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const DAY: u64 = 24 * 3600;
        const KIB: usize = 1024;
        const MIB: usize = 1024 * 1024;
        fn within<T: PartialOrd + std::fmt::Display>(
            key: &str,
            value: T,
            min: T,
            max: T,
        ) -> Result<(), ConfigError> {
            if value < min || value > max {
                return Err(ConfigError::Invalid(format!(
                    "{key} = {value} is outside {min}..={max}"
                )));
            }
            Ok(())
        }
        let bad = |what: &str| Err(ConfigError::Invalid(what.to_owned()));
        within("node_id", self.node_id, 0, 15)?;
        within("token_ttl_secs", self.token_ttl_secs, 1, 365 * DAY)?;
        within("max_frame_bytes", self.max_frame_bytes, 2 * KIB, 16 * MIB)?;
        within("max_payload_bytes", self.max_payload_bytes, 1, 15 * MIB)?;
        within("max_frames_per_sec", self.max_frames_per_sec, 0, 1_000_000)?;
        within("device_queue_frames", self.device_queue_frames, 16, 1 << 20)?;
        within("idle_timeout_secs", self.idle_timeout_secs, 1, DAY)?;
        within("login_timeout_secs", self.login_timeout_secs, 1, 3600)?;
        within("offline_ttl_secs", self.offline_ttl_secs, 0, 10 * 365 * DAY)?;
        within("backlog_limit", self.backlog_limit, 1, 1_000_000)?;
        within("backlog_batch", self.backlog_batch, 1, 10_000)?;
        within("dedup_cache", self.dedup_cache, 0, 100_000_000)?;
        within("commit_batch_max", self.commit_batch_max, 1, 100_000)?;
        within("router_queue", self.router_queue, 1, 10_000_000)?;
        within("shutdown_grace_secs", self.shutdown_grace_secs, 0, 3600)?;
        within("store_readers", self.store_readers, 1, 256)?;
        within("topic_member_limit", self.topic_member_limit, 1, 1_000_000)?;
        within("max_connections", self.max_connections, 1, 10_000_000)?;
        within(
            "http_header_timeout_secs",
            self.http_header_timeout_secs,
            1,
            3600,
        )?;
        within(
            "http_body_timeout_secs",
            self.http_body_timeout_secs,
            1,
            3600,
        )?;
        within("http_max_headers", self.http_max_headers, 8, 1000)?;
        within(
            "body_limit_token_bytes",
            self.body_limit_token_bytes,
            256,
            16 * MIB,
        )?;
        within(
            "body_limit_topic_bytes",
            self.body_limit_topic_bytes,
            1024,
            16 * MIB,
        )?;
        within(
            "body_limit_push_bytes",
            self.body_limit_push_bytes,
            1024,
            64 * MIB,
        )?;
        within(
            "ws_max_write_buffer_bytes",
            self.ws_max_write_buffer_bytes,
            0,
            1024 * MIB,
        )?;
        within("write_timeout_secs", self.write_timeout_secs, 1, 3600)?;
        within(
            "device_queue_bytes",
            self.device_queue_bytes,
            64 * KIB,
            1024 * MIB,
        )?;
        within("max_devices_per_user", self.max_devices_per_user, 1, 10_000)?;
        within("max_inflight_sends", self.max_inflight_sends, 1, 1 << 20)?;
        within(
            "max_topic_name_bytes",
            self.max_topic_name_bytes,
            1,
            64 * KIB,
        )?;
        within("max_bulletin_bytes", self.max_bulletin_bytes, 1, MIB)?;
        within("max_names_per_call", self.max_names_per_call, 1, 100_000)?;
        within(
            "rest_rate_per_account",
            self.rest_rate_per_account,
            0,
            1_000_000,
        )?;
        within("rest_rate_per_app", self.rest_rate_per_app, 0, 100_000_000)?;
        within(
            "rest_names_per_account",
            self.rest_names_per_account,
            0,
            100_000_000,
        )?;
        within(
            "http_max_header_bytes",
            self.http_max_header_bytes,
            8192,
            16 * MIB,
        )?;
        within("topic_cache", self.topic_cache, 16, 100_000_000)?;
        within("account_cache", self.account_cache, 16, 100_000_000)?;
        if self.max_payload_bytes + 1024 > self.max_frame_bytes {
            return bad("max_frame_bytes must exceed max_payload_bytes by at least 1024");
        }
        if self.backlog_limit < self.backlog_batch {
            return bad("backlog_batch must be <= backlog_limit");
        }
        // The largest frame the server writes: a backlog batch, or one message.
        let biggest_out =
            crate::protocol::backlog::MAX_BATCH_FRAME_BYTES.max(self.max_payload_bytes + 1024);
        if self.ws_max_write_buffer_bytes < WS_WRITE_BUFFER_BYTES + 2 * biggest_out {
            return bad(
                "ws_max_write_buffer_bytes must be at least 128 KiB + 2 * max(256 KiB, max_payload_bytes + 1 KiB)",
            );
        }
        // One connection's sends in flight must fit its own queue (their acks) and a
        // reader's queue (one burst of their deliveries) twice over: a client within
        // its limits is never kicked by its own traffic while it reads.
        // A call naming the most names allowed must fit in a full bucket.
        let names = self.max_names_per_call as u64;
        let fits = |rate: u32| rate == 0 || 2 * rate as u64 >= names;
        if !fits(self.rest_rate_per_app) || !fits(self.rest_names_per_account) {
            return bad("2 * rest_rate_per_app and 2 * rest_names_per_account must be >= max_names_per_call (or 0)");
        }
        if self.max_inflight_sends * 2 > self.device_queue_frames {
            return bad("max_inflight_sends must be at most device_queue_frames / 2");
        }
        let biggest_frame = self.max_payload_bytes + 1024;
        if self.max_inflight_sends * biggest_frame * 2 > self.device_queue_bytes {
            return bad(
                "device_queue_bytes must hold max_inflight_sends messages of max_payload_bytes (+1 KiB) twice over",
            );
        }
        Ok(())
    }

    /// The session rules derived from this configuration.
    pub fn session(&self) -> SessionConfig {
        SessionConfig {
            limits: Limits {
                max_frame_bytes: self.max_frame_bytes,
                max_payload_bytes: self.max_payload_bytes,
                ..Limits::default()
            },
            login_timeout_ms: self.login_timeout_secs * 1000,
            idle_timeout_ms: self.idle_timeout_secs * 1000,
            max_frames_per_sec: self.max_frames_per_sec,
        }
    }
}

/// `courier serve` flags; each also reads a `COURIER_*` variable and overrides the file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML config file (see courier.example.toml).
    #[arg(long, short, env = "COURIER_CONFIG")]
    pub config: Option<PathBuf>,
    /// HTTP + WebSocket listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "COURIER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Data directory of the embedded store [default: ./courier-data].
    #[arg(long, env = "COURIER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Node id 0-15, part of every sequence [default: 0].
    #[arg(long, env = "COURIER_NODE_ID")]
    pub node_id: Option<u8>,
    /// Token lifetime in seconds [default: 86400].
    #[arg(long, env = "COURIER_TOKEN_TTL_SECS")]
    pub token_ttl_secs: Option<u64>,
    /// Largest inbound frame in bytes [default: 65536].
    #[arg(long, env = "COURIER_MAX_FRAME_BYTES")]
    pub max_frame_bytes: Option<usize>,
    /// Largest message payload in bytes [default: 15360].
    #[arg(long, env = "COURIER_MAX_PAYLOAD_BYTES")]
    pub max_payload_bytes: Option<usize>,
    /// Frames per second per connection, 0 = unlimited [default: 10000].
    #[arg(long, env = "COURIER_MAX_FRAMES_PER_SEC")]
    pub max_frames_per_sec: Option<u32>,
    /// Frames queued per device before it is kicked as a slow consumer [default: 4096].
    #[arg(long, env = "COURIER_DEVICE_QUEUE_FRAMES")]
    pub device_queue_frames: Option<usize>,
    /// Seconds of silence before a connection is closed [default: 180].
    #[arg(long, env = "COURIER_IDLE_TIMEOUT_SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// Seconds a connection may take to log in [default: 10].
    #[arg(long, env = "COURIER_LOGIN_TIMEOUT_SECS")]
    pub login_timeout_secs: Option<u64>,
    /// Seconds stored messages stay offline-deliverable [default: 604800].
    #[arg(long, env = "COURIER_OFFLINE_TTL_SECS")]
    pub offline_ttl_secs: Option<u64>,
    /// Most backlog messages sent at login [default: 1000].
    #[arg(long, env = "COURIER_BACKLOG_LIMIT")]
    pub backlog_limit: Option<usize>,
    /// Messages per backlog batch frame [default: 100].
    #[arg(long, env = "COURIER_BACKLOG_BATCH")]
    pub backlog_batch: Option<usize>,
    /// (sender, packetId) pairs kept in memory for dedup [default: 200000].
    #[arg(long, env = "COURIER_DEDUP_CACHE")]
    pub dedup_cache: Option<usize>,
    /// Most messages per group commit [default: 2048].
    #[arg(long, env = "COURIER_COMMIT_BATCH_MAX")]
    pub commit_batch_max: Option<usize>,
    /// Sends queued to the router before senders wait [default: 16384].
    #[arg(long, env = "COURIER_ROUTER_QUEUE")]
    pub router_queue: Option<usize>,
    /// Seconds to drain on shutdown [default: 10].
    #[arg(long, env = "COURIER_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// Read connections of the embedded store [default: 4].
    #[arg(long, env = "COURIER_STORE_READERS")]
    pub store_readers: Option<usize>,
    /// Members per topic unless the app sets its own limit [default: 500].
    #[arg(long, env = "COURIER_TOPIC_MEMBER_LIMIT")]
    pub topic_member_limit: Option<usize>,
    /// Open connections on the HTTP listener (HTTP + WebSocket) [default: 10000].
    #[arg(long, env = "COURIER_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Seconds to receive request headers; also the keep-alive idle limit [default: 10].
    #[arg(long, env = "COURIER_HTTP_HEADER_TIMEOUT_SECS")]
    pub http_header_timeout_secs: Option<u64>,
    /// Seconds to receive a request body [default: 10].
    #[arg(long, env = "COURIER_HTTP_BODY_TIMEOUT_SECS")]
    pub http_body_timeout_secs: Option<u64>,
    /// Most header fields per request [default: 64].
    #[arg(long, env = "COURIER_HTTP_MAX_HEADERS")]
    pub http_max_headers: Option<usize>,
    /// Largest token request body [default: 4096].
    #[arg(long, env = "COURIER_BODY_LIMIT_TOKEN_BYTES")]
    pub body_limit_token_bytes: Option<usize>,
    /// Largest topic call body [default: 131072].
    #[arg(long, env = "COURIER_BODY_LIMIT_TOPIC_BYTES")]
    pub body_limit_topic_bytes: Option<usize>,
    /// Largest push call body [default: 131072].
    #[arg(long, env = "COURIER_BODY_LIMIT_PUSH_BYTES")]
    pub body_limit_push_bytes: Option<usize>,
    /// Unsent bytes a WebSocket may hold before it is closed [default: 1048576].
    #[arg(long, env = "COURIER_WS_MAX_WRITE_BUFFER_BYTES")]
    pub ws_max_write_buffer_bytes: Option<usize>,
    /// Seconds a write may stay blocked on a peer that does not read [default: 30].
    #[arg(long, env = "COURIER_WRITE_TIMEOUT_SECS")]
    pub write_timeout_secs: Option<u64>,
    /// Bytes queued per device before a slow-consumer kick [default: 4194304].
    #[arg(long, env = "COURIER_DEVICE_QUEUE_BYTES")]
    pub device_queue_bytes: Option<usize>,
    /// Devices of one user online at once [default: 10].
    #[arg(long, env = "COURIER_MAX_DEVICES_PER_USER")]
    pub max_devices_per_user: Option<usize>,
    /// Unacknowledged sends per connection [default: 128].
    #[arg(long, env = "COURIER_MAX_INFLIGHT_SENDS")]
    pub max_inflight_sends: Option<usize>,
    /// Longest topic name in bytes [default: 256].
    #[arg(long, env = "COURIER_MAX_TOPIC_NAME_BYTES")]
    pub max_topic_name_bytes: Option<usize>,
    /// Longest topic bulletin in bytes [default: 4096].
    #[arg(long, env = "COURIER_MAX_BULLETIN_BYTES")]
    pub max_bulletin_bytes: Option<usize>,
    /// Most accounts or topic ids named in one REST call [default: 500].
    #[arg(long, env = "COURIER_MAX_NAMES_PER_CALL")]
    pub max_names_per_call: Option<usize>,
    /// State-changing calls per second per account, 0 = unlimited [default: 10].
    #[arg(long, env = "COURIER_REST_RATE_PER_ACCOUNT")]
    pub rest_rate_per_account: Option<u32>,
    /// Accounts named per second per account, 0 = unlimited [default: 1000].
    #[arg(long, env = "COURIER_REST_NAMES_PER_ACCOUNT")]
    pub rest_names_per_account: Option<u32>,
    /// Largest request head in bytes [default: 65536].
    #[arg(long, env = "COURIER_HTTP_MAX_HEADER_BYTES")]
    pub http_max_header_bytes: Option<usize>,
    /// REST work units per second per app, 0 = unlimited [default: 5000].
    #[arg(long, env = "COURIER_REST_RATE_PER_APP")]
    pub rest_rate_per_app: Option<u32>,
    /// Topics kept in memory [default: 100000].
    #[arg(long, env = "COURIER_TOPIC_CACHE")]
    pub topic_cache: Option<usize>,
    /// Account ids kept in memory [default: 1000000].
    #[arg(long, env = "COURIER_ACCOUNT_CACHE")]
    pub account_cache: Option<usize>,
}

impl ServeArgs {
    /// Defaults, then the config file, then these flags / environment variables.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        macro_rules! overlay {
            ($($field:ident),* $(,)?) => {$(
                if let Some(v) = self.$field.clone() { c.$field = v; }
            )*};
        }
        overlay!(
            listen,
            data_dir,
            node_id,
            token_ttl_secs,
            max_frame_bytes,
            max_payload_bytes,
            max_frames_per_sec,
            device_queue_frames,
            idle_timeout_secs,
            login_timeout_secs,
            offline_ttl_secs,
            backlog_limit,
            backlog_batch,
            dedup_cache,
            commit_batch_max,
            router_queue,
            shutdown_grace_secs,
            store_readers,
            topic_member_limit,
            max_connections,
            http_header_timeout_secs,
            http_body_timeout_secs,
            http_max_headers,
            body_limit_token_bytes,
            body_limit_topic_bytes,
            body_limit_push_bytes,
            ws_max_write_buffer_bytes,
            write_timeout_secs,
            device_queue_bytes,
            max_devices_per_user,
            max_inflight_sends,
            max_topic_name_bytes,
            max_bulletin_bytes,
            max_names_per_call,
            rest_rate_per_account,
            rest_names_per_account,
            http_max_header_bytes,
            rest_rate_per_app,
            topic_cache,
            account_cache,
        );
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_flags_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\nbacklog_limit = 500\n").unwrap();
        let args = ServeArgs {
            config: Some(path),
            backlog_limit: Some(600),
            ..ServeArgs::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.backlog_limit, 600);
        assert_eq!(c.max_payload_bytes, 15 * 1024);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "listn = \"x\"\n").unwrap();
        assert!(Config::from_file(&path).is_err());
        let c = Config {
            node_id: 16,
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn out_of_range_settings_are_refused() {
        for c in [
            Config {
                token_ttl_secs: u64::MAX,
                ..Config::default()
            },
            Config {
                idle_timeout_secs: 0,
                ..Config::default()
            },
            Config {
                max_inflight_sends: 4096,
                ..Config::default()
            },
            Config {
                ws_max_write_buffer_bytes: 4096,
                ..Config::default()
            },
        ] {
            let err = c.validate().unwrap_err().to_string();
            assert!(err.starts_with("invalid setting"), "{err}");
        }
        Config::default().validate().unwrap();
    }

    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("courier.example.toml");
        let c = Config::from_file(&path).unwrap();
        c.validate().unwrap();
    }
}
