//! Server configuration: defaults, overlaid by a TOML file, overlaid by `COURIER_*`
//! environment variables and command-line flags (clap reads both).
//!
//! Every limit the server enforces has a key here; `courier.example.toml` documents them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::protocol::codec::Limits;
use crate::protocol::session::SessionConfig;

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

    /// Rejects settings the server cannot run with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |what: &str| Err(ConfigError::Invalid(what.to_owned()));
        if self.node_id > 15 {
            return bad("node_id must be 0..=15");
        }
        if self.max_payload_bytes + 1024 > self.max_frame_bytes {
            return bad("max_frame_bytes must exceed max_payload_bytes by at least 1024");
        }
        if self.device_queue_frames < 16 {
            return bad("device_queue_frames must be at least 16");
        }
        if self.backlog_batch == 0 || self.backlog_limit < self.backlog_batch {
            return bad("backlog_batch must be >= 1 and <= backlog_limit");
        }
        if self.topic_member_limit == 0 {
            return bad("topic_member_limit must be >= 1");
        }
        if self.commit_batch_max == 0 || self.router_queue == 0 || self.store_readers == 0 {
            return bad("commit_batch_max, router_queue and store_readers must be >= 1");
        }
        if self.token_ttl_secs == 0 || self.login_timeout_secs == 0 || self.idle_timeout_secs == 0 {
            return bad("token_ttl_secs, login_timeout_secs and idle_timeout_secs must be >= 1");
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
}

impl ServeArgs {
    /// Defaults, then the config file, then these flags / environment variables.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        macro_rules! overlay {
            ($($field:ident),*) => {$(
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
            topic_member_limit
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
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("courier.example.toml");
        let c = Config::from_file(&path).unwrap();
        c.validate().unwrap();
    }
}
