//! Server configuration: defaults, overlaid by a TOML file, overlaid by `COURIER_*`
//! environment variables and command-line flags (clap reads both).
//!
//! Every limit the server enforces has a key here; `courier.example.toml` documents them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;

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
    #[error("invalid setting: {0}")]
    Invalid(String),
}

const DAY: u64 = 24 * 3600;
const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// Refuses `value` outside `min..=max`, naming the key.
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

/// Defines every setting once — its section, name, type, default, environment
/// variable, doc and (numbers) allowed range — and from that the [`Config`] struct, its defaults, the TOML
/// reader, the `courier serve` flags ([`ServeArgs`]) and their overlay.
macro_rules! settings {
    ($( $section:ident { $( $(#[doc = $doc:literal])* $name:ident : $ty:ty = $default:expr, env $env:literal $(, range $min:expr => $max:expr)?; )* } )*) => {
        /// The whole server configuration (flat in code; sectioned in TOML).
        #[derive(Debug, Clone, PartialEq, Serialize)]
        pub struct Config {
            $( $( $(#[doc = $doc])* pub $name: $ty, )* )*
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $( $( $name: $default, )* )* }
            }
        }

        /// Every setting as `(section, key)`, in the order of the docs.
        pub const KEYS: &[(&str, &str)] = &[ $( $( (stringify!($section), stringify!($name)), )* )* ];

        impl Config {
            /// Checks every numeric setting against its range.
            fn check_ranges(&self) -> Result<(), ConfigError> {
                $( $( $( within(stringify!($name), self.$name, $min, $max)?; )? )* )*
                Ok(())
            }

            /// Sets `key` from a TOML value; `Ok(false)` for an unknown key.
            fn set(&mut self, key: &str, value: toml::Value) -> Result<bool, toml::de::Error> {
                match key {
                    $( $( stringify!($name) => { self.$name = value.try_into()?; Ok(true) } )* )*
                    _ => Ok(false),
                }
            }
        }

        /// `courier serve` flags; each also reads a `COURIER_*` variable and
        /// overrides the file.
        #[derive(Debug, Clone, Default, clap::Args)]
        pub struct ServeArgs {
            /// TOML config file (see courier.example.toml).
            #[arg(long, short, env = "COURIER_CONFIG")]
            pub config: Option<PathBuf>,
            $( $( $(#[doc = $doc])* #[arg(long, env = $env, hide_env_values = true)] pub $name: Option<$ty>, )* )*
        }

        impl ServeArgs {
            fn overlay(&self, c: &mut Config) {
                $( $( if let Some(v) = self.$name.clone() { c.$name = v; } )* )*
            }
        }
    };
}

settings! {
    server {
        /// HTTP + WebSocket listen address.
        listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080)), env "COURIER_LISTEN";
        /// Directory of the embedded store.
        data_dir: PathBuf = PathBuf::from("courier-data"), env "COURIER_DATA_DIR";
        /// Node id (0–15), part of every sequence.
        node_id: u8 = 0, env "COURIER_NODE_ID", range 0 => 15;
        /// Token lifetime in seconds.
        token_ttl_secs: u64 = 24 * 3600, env "COURIER_TOKEN_TTL_SECS", range 1 => 365 * DAY;
        /// Seconds to drain connections and the store on shutdown.
        shutdown_grace_secs: u64 = 10, env "COURIER_SHUTDOWN_GRACE_SECS", range 0 => 3600;
        /// Topics kept in the in-memory topic cache (least recently used evicted).
        topic_cache: usize = 100_000, env "COURIER_TOPIC_CACHE", range 16 => 100_000_000;
        /// Account → uuid entries kept in memory.
        account_cache: usize = 1_000_000, env "COURIER_ACCOUNT_CACHE", range 16 => 100_000_000;
        /// Users whose blacklist is kept in memory (the longest-loaded evicted first).
        blacklist_cache: usize = 100_000, env "COURIER_BLACKLIST_CACHE", range 16 => 100_000_000;
    }
    limits {
        /// Largest inbound frame in bytes.
        max_frame_bytes: usize = 64 * 1024, env "COURIER_MAX_FRAME_BYTES", range 2 * KIB => 16 * MIB;
        /// Largest message payload in bytes.
        max_payload_bytes: usize = 15 * 1024, env "COURIER_MAX_PAYLOAD_BYTES", range 1 => 15 * MIB;
        /// Frames per second accepted per connection (0 = unlimited).
        max_frames_per_sec: u32 = 10_000, env "COURIER_MAX_FRAMES_PER_SEC", range 0 => 1_000_000;
        /// Frames queued for one device before it is kicked as a slow consumer.
        device_queue_frames: usize = 4096, env "COURIER_DEVICE_QUEUE_FRAMES", range 16 => 1 << 20;
        /// Bytes queued for one device before it is kicked as a slow consumer.
        device_queue_bytes: usize = 4 * 1024 * 1024, env "COURIER_DEVICE_QUEUE_BYTES", range 64 * KIB => 1024 * MIB;
        /// Seconds a logged-in connection may stay silent before it is closed.
        idle_timeout_secs: u64 = 180, env "COURIER_IDLE_TIMEOUT_SECS", range 1 => DAY;
        /// Seconds a connection may take to log in.
        login_timeout_secs: u64 = 10, env "COURIER_LOGIN_TIMEOUT_SECS", range 1 => 3600;
        /// Seconds one write may stay blocked on a peer that does not read.
        write_timeout_secs: u64 = 30, env "COURIER_WRITE_TIMEOUT_SECS", range 1 => 3600;
        /// Bytes a WebSocket may hold unsent (frames and owed pongs) before it is closed; also each QUIC connection's send window.
        ws_max_write_buffer_bytes: usize = 1024 * 1024, env "COURIER_WS_MAX_WRITE_BUFFER_BYTES", range 0 => 1024 * MIB;
        /// Open connections: HTTP, WebSocket and QUIC together.
        max_connections: usize = 10_000, env "COURIER_MAX_CONNECTIONS", range 1 => 10_000_000;
        /// Seconds to receive a request's headers; also the idle limit of a kept-alive connection.
        http_header_timeout_secs: u64 = 10, env "COURIER_HTTP_HEADER_TIMEOUT_SECS", range 1 => 3600;
        /// Seconds a request body may take to arrive completely.
        http_body_timeout_secs: u64 = 10, env "COURIER_HTTP_BODY_TIMEOUT_SECS", range 1 => 3600;
        /// Most header fields in one request.
        http_max_headers: usize = 64, env "COURIER_HTTP_MAX_HEADERS", range 8 => 1000;
        /// Largest request head (request line and headers), bytes.
        http_max_header_bytes: usize = 64 * 1024, env "COURIER_HTTP_MAX_HEADER_BYTES", range 8192 => 16 * MIB;
        /// Largest body of `POST /api/account/token`, bytes.
        body_limit_token_bytes: usize = 4 * 1024, env "COURIER_BODY_LIMIT_TOKEN_BYTES", range 256 => 16 * MIB;
        /// Largest body of a topic call, bytes.
        body_limit_topic_bytes: usize = 128 * 1024, env "COURIER_BODY_LIMIT_TOPIC_BYTES", range 1024 => 16 * MIB;
        /// Largest body of a history query, bytes.
        body_limit_query_bytes: usize = 4 * 1024, env "COURIER_BODY_LIMIT_QUERY_BYTES", range 256 => MIB;
        /// Largest body of a push call, bytes.
        body_limit_push_bytes: usize = 128 * 1024, env "COURIER_BODY_LIMIT_PUSH_BYTES", range 1024 => 64 * MIB;
        /// Devices (resources) of one user online at once; another login is refused.
        max_devices_per_user: usize = 10, env "COURIER_MAX_DEVICES_PER_USER", range 1 => 10_000;
        /// Sends of one connection waiting for their ServerAck; at the limit the connection is not read.
        max_inflight_sends: usize = 128, env "COURIER_MAX_INFLIGHT_SENDS", range 1 => 1 << 20;
        /// Longest topic name, bytes.
        max_topic_name_bytes: usize = 256, env "COURIER_MAX_TOPIC_NAME_BYTES", range 1 => 64 * KIB;
        /// Longest topic bulletin, bytes.
        max_bulletin_bytes: usize = 4096, env "COURIER_MAX_BULLETIN_BYTES", range 1 => MIB;
        /// Most account names (or topic ids, push targets) in one REST call.
        max_names_per_call: usize = 500, env "COURIER_MAX_NAMES_PER_CALL", range 1 => 100_000;
        /// State-changing calls per second of one account (burst: twice this; 0 = unlimited).
        rest_rate_per_account: u32 = 50, env "COURIER_REST_RATE_PER_ACCOUNT", range 0 => 1_000_000;
        /// Accounts one account may name per second (burst: twice this; 0 = unlimited).
        rest_names_per_account: u32 = 1000, env "COURIER_REST_NAMES_PER_ACCOUNT", range 0 => 100_000_000;
        /// Units of state-changing work per second of one app, one per name (burst: twice this; 0 = unlimited).
        rest_rate_per_app: u32 = 5000, env "COURIER_REST_RATE_PER_APP", range 0 => 100_000_000;
        /// Accounts one user may have on its blacklist.
        max_blacklist_per_user: usize = 1000, env "COURIER_MAX_BLACKLIST_PER_USER", range 1 => 1_000_000;
        /// Members a topic may have, unless the app sets its own limit.
        topic_member_limit: usize = 500, env "COURIER_TOPIC_MEMBER_LIMIT", range 1 => 1_000_000;
    }
    delivery {
        /// Seconds stored messages remain offline-deliverable (default 7 days).
        offline_ttl_secs: u64 = 7 * 24 * 3600, env "COURIER_OFFLINE_TTL_SECS", range 0 => 10 * 365 * DAY;
        /// Most backlog messages sent at login; above it the newest are sent with a pull notice.
        backlog_limit: usize = 1000, env "COURIER_BACKLOG_LIMIT", range 1 => 1_000_000;
        /// Messages per backlog batch frame and most per Pull.
        backlog_batch: usize = 100, env "COURIER_BACKLOG_BATCH", range 1 => 10_000;
        /// (sender, packetId) pairs remembered in memory for dedup (the store remembers all).
        dedup_cache: usize = 200_000, env "COURIER_DEDUP_CACHE", range 0 => 100_000_000;
    }
    history {
        /// Seconds messages stay in history before the sweep deletes them, unless the app sets its own (default 180 days, the manual's half year).
        history_retention_secs: u64 = 180 * DAY, env "COURIER_HISTORY_RETENTION_SECS", range 60 => 100 * 365 * DAY;
        /// Most messages in one history answer; also the largest `count`.
        history_max_messages: usize = 1000, env "COURIER_HISTORY_MAX_MESSAGES", range 1 => 100_000;
        /// Longest span of a history query by time, seconds (the manual's 24 hours).
        history_max_span_secs: u64 = DAY, env "COURIER_HISTORY_MAX_SPAN_SECS", range 1 => 365 * DAY;
        /// Seconds of conversations the recent contacts list covers (the manual's month).
        contacts_window_secs: u64 = 30 * DAY, env "COURIER_CONTACTS_WINDOW_SECS", range 60 => 365 * DAY;
        /// Most entries in a recent contacts answer (the newest are kept).
        contacts_max_entries: usize = 2000, env "COURIER_CONTACTS_MAX_ENTRIES", range 1 => 1_000_000;
        /// Seconds between passes of the background sweep (retention, offline rows, expired accounts).
        sweep_interval_secs: u64 = 10, env "COURIER_SWEEP_INTERVAL_SECS", range 1 => DAY;
        /// Most messages (or expired accounts) one sweep pass deletes; passes repeat while there is more.
        sweep_batch: usize = 1000, env "COURIER_SWEEP_BATCH", range 1 => 1_000_000;
    }
    tls {
        /// PEM certificate chain; set with `tls_key_file` and the HTTP listener serves only `https://` and `wss://`, and QUIC uses it. Empty: plain HTTP, and QUIC uses a self-signed certificate kept in the data dir.
        tls_cert_file: PathBuf = PathBuf::new(), env "COURIER_TLS_CERT_FILE";
        /// PEM private key of `tls_cert_file`.
        tls_key_file: PathBuf = PathBuf::new(), env "COURIER_TLS_KEY_FILE";
        /// Seconds a TLS or QUIC handshake may take.
        tls_handshake_timeout_secs: u64 = 10, env "COURIER_TLS_HANDSHAKE_TIMEOUT_SECS", range 1 => 3600;
    }
    quic {
        /// UDP address of the QUIC listener: empty = the `listen` address (same port number, UDP); `off` = no QUIC.
        quic_listen: String = String::new(), env "COURIER_QUIC_LISTEN";
        /// Seconds without a packet from the peer before a QUIC connection is dropped (clients send keep-alives).
        quic_idle_timeout_secs: u64 = 60, env "COURIER_QUIC_IDLE_TIMEOUT_SECS", range 5 => 3600;
        /// Seconds between keep-alive packets the server sends on QUIC connections (0 = none: clients keep alive).
        quic_keep_alive_secs: u64 = 0, env "COURIER_QUIC_KEEP_ALIVE_SECS", range 0 => 3600;
    }
    store {
        /// Which store: "embedded" (SQLite in data_dir) or "postgres" (postgres_url; several nodes may share it).
        store_kind: String = "embedded".to_owned(), env "COURIER_STORE_KIND";
        /// PostgreSQL URL for store_kind = "postgres", e.g. postgres://user:password@host:5432/db (prefer the environment variable: it may hold a password).
        postgres_url: String = String::new(), env "COURIER_POSTGRES_URL";
        /// Connections in the PostgreSQL store's pool.
        postgres_pool_size: usize = 16, env "COURIER_POSTGRES_POOL_SIZE", range 1 => 1024;
        /// Seconds `serve` keeps retrying (with backoff) a PostgreSQL that is not up yet before it gives up.
        postgres_connect_secs: u64 = 30, env "COURIER_POSTGRES_CONNECT_SECS", range 0 => 3600;
        /// Milliseconds the PostgreSQL store waits for a pooled connection, a new connection, or one statement before the call fails (a database that stops answering fails sends instead of hanging them).
        postgres_timeout_ms: u64 = 10_000, env "COURIER_POSTGRES_TIMEOUT_MS", range 100 => 600_000;
        /// Read connections of the embedded store.
        store_readers: usize = 4, env "COURIER_STORE_READERS", range 1 => 256;
        /// Most messages in one group commit.
        commit_batch_max: usize = 2048, env "COURIER_COMMIT_BATCH_MAX", range 1 => 100_000;
        /// Sends queued to the router before senders wait.
        router_queue: usize = 16_384, env "COURIER_ROUTER_QUEUE", range 1 => 10_000_000;
    }
    demo {
        /// Serve the web demo at /demo (a chat page built from the JavaScript SDK).
        demo: bool = true, env "COURIER_DEMO";
        /// Who may get tokens from the demo's POST /demo/token, for any account of the app named "default": "loopback" (only when the HTTP listener is on a loopback address), "on" (anyone who can reach the gateway: for a private network only), "off".
        demo_tokens: String = "loopback".to_owned(), env "COURIER_DEMO_TOKENS";
    }
    mimc {
        /// Serve MIMC web SDK clients at /mimc (docs/mimc-compat.md).
        mimc: bool = true, env "COURIER_MIMC";
        /// Seconds a bound MIMC connection may stay silent before it is closed: above the web SDK's 180 s ping, which is all it sends when idle.
        mimc_idle_timeout_secs: u64 = 300, env "COURIER_MIMC_IDLE_TIMEOUT_SECS", range 1 => DAY;
        /// Largest ClientHeader of a MIMC frame, in bytes (the frame as a whole is bounded by max_frame_bytes).
        mimc_max_header_bytes: usize = 1024, env "COURIER_MIMC_MAX_HEADER_BYTES", range 64 => 16 * KIB;
    }
    cluster {
        /// NATS server(s) of a cluster, e.g. nats://10.0.0.7:4222 (comma-separated for several); empty = one node, no cluster. Needs store_kind = "postgres", and a node_id of its own per node.
        nats_url: String = String::new(), env "COURIER_NATS_URL";
        /// First token of every NATS subject this cluster uses: clusters sharing one NATS keep apart by it.
        cluster_subject_prefix: String = "courier".to_owned(), env "COURIER_CLUSTER_SUBJECT_PREFIX";
        /// Milliseconds a login backlog (and a resync) reaches back before the device's cursor: covers messages that other nodes committed late, and the clocks of the nodes may differ by less than this. Devices deduplicate by sequence.
        cluster_overlap_ms: u64 = 2000, env "COURIER_CLUSTER_OVERLAP_MS", range 0 => 600_000;
        /// Milliseconds a node waits on NATS: for its subscription when a device logs in, and for other nodes' answers to an online-only message no local device took.
        cluster_request_timeout_ms: u64 = 250, env "COURIER_CLUSTER_REQUEST_TIMEOUT_MS", range 10 => 60_000;
        /// Deliveries waiting to be published to NATS; beyond it they are dropped, and the other nodes are told to resync their devices from the store.
        cluster_publish_queue: usize = 65_536, env "COURIER_CLUSTER_PUBLISH_QUEUE", range 1024 => 10_000_000;
    }
    admin {
        /// Bearer token of the admin API (`/admin/…`, `Authorization: Bearer <token>`); empty = the admin API is off. Prefer the environment variable to a file.
        admin_token: String = String::new(), env "COURIER_ADMIN_TOKEN";
        /// Largest admin request body, bytes.
        body_limit_admin_bytes: usize = 64 * KIB, env "COURIER_BODY_LIMIT_ADMIN_BYTES", range 256 => 16 * MIB;
    }
    callbacks {
        /// Delays before the retries of a failed message callback, milliseconds, comma-separated (the manual's 5 s, 30 s, 5 min); after the last one fails the callback is kept as failed and listed by the admin API.
        callback_retries_ms: String = "5000,30000,300000".into(), env "COURIER_CALLBACK_RETRIES_MS";
        /// Milliseconds a receiver has for one callback: connect, request, status and the read of its answer.
        callback_timeout_ms: u64 = 5000, env "COURIER_CALLBACK_TIMEOUT_MS", range 10 => 600_000;
        /// Callback requests in flight per app: one app's slow receiver never takes another app's.
        callback_concurrency_per_app: usize = 128, env "COURIER_CALLBACK_CONCURRENCY_PER_APP", range 1 => 4096;
        /// Most bytes of a receiver's answer read (a longer answer is dropped with its connection).
        callback_max_response_bytes: usize = 64 * KIB, env "COURIER_CALLBACK_MAX_RESPONSE_BYTES", range 0 => 16 * MIB;
        /// Longest callback URL an app may set, bytes.
        callback_max_url_bytes: usize = 2048, env "COURIER_CALLBACK_MAX_URL_BYTES", range 16 => 64 * KIB;
        /// Run the callback threads at idle priority (Linux SCHED_IDLE): they take only CPU nothing else wants, and fall behind whenever the machine is busy (on a CPU busy all the time they wait on disk). Off: they run at `callback_nice` and yield a busy message path (`callback_yield_batch`).
        callback_idle: bool = false, env "COURIER_CALLBACK_IDLE";
        /// Scheduling niceness of the callback threads when `callback_idle` is off (0 = the message path's priority, 19 = lowest).
        callback_nice: i32 = 0, env "COURIER_CALLBACK_NICE", range 0 => 19;
        /// Messages per router commit batch (a moving average) from which the message path counts as busy: sends arrive faster than they commit, so batches grow with the load (about 11 at 20,000 msgs/s, 350-400 at full speed on two cores). While it is busy, callbacks yield it the CPU. 0: never.
        callback_yield_batch: usize = 128, env "COURIER_CALLBACK_YIELD_BATCH", range 0 => 100_000;
        /// Percent of each second in which callbacks are sent while the message path is busy (the rest of the second they wait, on disk if need be, and catch up after the burst): what they may cost a saturated message path, and how fast they still move meanwhile. 100: no yielding.
        callback_yield_share_percent: u64 = 5, env "COURIER_CALLBACK_YIELD_SHARE_PERCENT", range 0 => 100;
        /// Refuse callback URLs whose host is, or resolves to, a loopback, private, link-local or other non-public address (SSRF protection: whoever may set a callback URL could otherwise make the gateway POST into its own network). Off by default: receivers usually run next to the gateway.
        callback_refuse_private: bool = false, env "COURIER_CALLBACK_REFUSE_PRIVATE";
    }
}

/// The section a key belongs to.
pub fn section_of(key: &str) -> Option<&'static str> {
    KEYS.iter().find(|(_, k)| *k == key).map(|(s, _)| *s)
}

impl Config {
    /// Reads a TOML file; keys it does not set keep their defaults. Returns the
    /// configuration and warnings (flat keys of the old layout).
    pub fn from_file(path: &Path) -> Result<(Config, Vec<String>), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text).map_err(|e| match e {
            ConfigError::Invalid(msg) => ConfigError::Invalid(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// Reads TOML text: keys under their `[section]`; a key at the top level (the
    /// old flat layout) still works for one release, with a warning.
    pub fn from_toml(text: &str) -> Result<(Config, Vec<String>), ConfigError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
        let mut config = Config::default();
        let mut warnings = Vec::new();
        let bad = |what: String| ConfigError::Invalid(what);
        for (name, value) in table {
            match value {
                toml::Value::Table(keys) if KEYS.iter().any(|(s, _)| *s == name) => {
                    for (key, value) in keys {
                        if section_of(&key) != Some(name.as_str()) {
                            return Err(bad(match section_of(&key) {
                                Some(right) => {
                                    format!("key `{key}` belongs in [{right}], not [{name}]")
                                }
                                None => format!("unknown key `{key}` in [{name}]"),
                            }));
                        }
                        config
                            .set(&key, value)
                            .map_err(|e| bad(format!("[{name}] {key}: {e}")))?;
                    }
                }
                toml::Value::Table(_) => return Err(bad(format!("unknown section [{name}]"))),
                value => match section_of(&name) {
                    Some(section) => {
                        config
                            .set(&name, value)
                            .map_err(|e| bad(format!("{name}: {e}")))?;
                        warnings.push(format!(
                            "config key `{name}` at the top level is deprecated: put it under [{section}]"
                        ));
                    }
                    None => return Err(bad(format!("unknown key `{name}`"))),
                },
            }
        }
        Ok((config, warnings))
    }

    /// Rejects settings the server cannot run with: every number is checked
    /// against a range, so no later arithmetic on it can overflow.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_ranges()?;
        self.callback_retries()?;
        let bad = |what: &str| Err(ConfigError::Invalid(what.to_owned()));
        match self.store_kind.as_str() {
            "embedded" => {}
            "postgres" if self.postgres_url.is_empty() => {
                return bad("store_kind = \"postgres\" needs postgres_url (COURIER_POSTGRES_URL)")
            }
            "postgres" => {}
            _ => return bad("store_kind must be \"embedded\" or \"postgres\""),
        }
        if !["loopback", "on", "off"].contains(&self.demo_tokens.as_str()) {
            return bad("demo_tokens must be \"loopback\", \"on\" or \"off\"");
        }
        if !self.nats_url.is_empty() && self.store_kind != "postgres" {
            return bad("a cluster (nats_url) needs store_kind = \"postgres\": its nodes share one database");
        }
        if !crate::cluster::subject::valid_prefix(&self.cluster_subject_prefix) {
            return bad("cluster_subject_prefix must be 1-64 letters, digits, '-' or '_' (one NATS subject token)");
        }
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
        if self.tls_cert_file.as_os_str().is_empty() != self.tls_key_file.as_os_str().is_empty() {
            return bad("tls_cert_file and tls_key_file must be set together");
        }
        if self.quic_keep_alive_secs >= self.quic_idle_timeout_secs {
            return bad("quic_keep_alive_secs must be below quic_idle_timeout_secs");
        }
        self.quic_addr()?;
        let biggest_frame = self.max_payload_bytes + 1024;
        if self.max_inflight_sends * biggest_frame * 2 > self.device_queue_bytes {
            return bad(
                "device_queue_bytes must hold max_inflight_sends messages of max_payload_bytes (+1 KiB) twice over",
            );
        }
        Ok(())
    }

    /// The delays before each callback retry (`callback_retries_ms`).
    pub fn callback_retries(&self) -> Result<Vec<std::time::Duration>, ConfigError> {
        let text = self.callback_retries_ms.trim();
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let delays = text
            .split(',')
            .map(|d| d.trim().parse::<u64>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                ConfigError::Invalid(format!(
                    "callback_retries_ms = {text:?} is not a comma-separated list of milliseconds"
                ))
            })?;
        if delays.len() > 16 || delays.iter().any(|&d| d > 7 * DAY * 1000) {
            return Err(ConfigError::Invalid(format!(
                "callback_retries_ms = {text:?}: at most 16 retries of at most 7 days each"
            )));
        }
        Ok(delays
            .into_iter()
            .map(std::time::Duration::from_millis)
            .collect())
    }

    /// The QUIC listener's UDP address, `None` when QUIC is off.
    pub fn quic_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        match self.quic_listen.trim() {
            "" => Ok(Some(self.listen)),
            "off" => Ok(None),
            text => text.parse().map(Some).map_err(|_| {
                ConfigError::Invalid(format!(
                    "quic_listen = {text:?} is not an address (ip:port), empty or \"off\""
                ))
            }),
        }
    }

    /// Whether the HTTP listener serves TLS (`https://`, `wss://`).
    pub fn http_tls(&self) -> bool {
        !self.tls_cert_file.as_os_str().is_empty()
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

    /// The session rules of MIMC web connections: the server's, with their own
    /// idle timeout.
    pub fn mimc_session(&self) -> SessionConfig {
        SessionConfig {
            idle_timeout_ms: self.mimc_idle_timeout_secs * 1000,
            ..self.session()
        }
    }

    /// Bounds on a MIMC frame: its header, and its payload within `max_frame_bytes`.
    pub fn mimc_frame_limits(&self) -> crate::mimc::frame::FrameLimits {
        crate::mimc::frame::FrameLimits {
            max_header_bytes: self.mimc_max_header_bytes,
            max_payload_bytes: self.max_frame_bytes,
        }
    }
}

impl ServeArgs {
    /// Defaults, then the config file, then these flags / environment variables;
    /// validated. Warnings about the file are logged.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let mut c = match &self.config {
            Some(path) => {
                let (c, warnings) = Config::from_file(path)?;
                for w in warnings {
                    tracing::warn!("{w}");
                }
                c
            }
            None => Config::default(),
        };
        self.overlay(&mut c);
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
        let text = "[server]\nlisten = \"127.0.0.1:9000\"\n[delivery]\nbacklog_limit = 500\n";
        std::fs::write(&path, text).unwrap();
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
        for text in [
            "listn = \"x\"\n",
            "[server]\nlistn = \"x\"\n",
            "[limits]\nlisten = \"127.0.0.1:1\"\n",
            "[quic]\nport = 1\n",
            "[limits]\nmax_frame_bytes = \"big\"\n",
        ] {
            std::fs::write(&path, text).unwrap();
            let err = Config::from_file(&path).unwrap_err().to_string();
            assert!(err.contains("c.toml"), "{err}");
        }
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
    fn flat_keys_of_the_old_layout_still_work_with_a_warning() {
        let (c, warnings) =
            Config::from_toml("backlog_limit = 500\n[limits]\nmax_connections = 7\n").unwrap();
        assert_eq!((c.backlog_limit, c.max_connections), (500, 7));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("[delivery]"), "{}", warnings[0]);
    }

    /// A value different from the default for `key`, as TOML and as a flag value.
    fn other_value(defaults: &toml::Table, key: &str) -> (toml::Value, String) {
        match &defaults[key] {
            toml::Value::Integer(n) => (toml::Value::Integer(n + 1), (n + 1).to_string()),
            toml::Value::String(_) if key == "listen" => {
                let v = "127.0.0.1:9999".to_owned();
                (toml::Value::String(v.clone()), v)
            }
            toml::Value::String(_) => {
                let v = "elsewhere".to_owned();
                (toml::Value::String(v.clone()), v)
            }
            toml::Value::Boolean(b) => (toml::Value::Boolean(!b), (!b).to_string()),
            other => panic!("{key}: unexpected default {other:?}"),
        }
    }

    /// Every key can be set from its TOML section, its flag and its environment
    /// variable — none is left out of any of the three.
    #[test]
    fn every_key_is_reachable_from_toml_flags_and_env() {
        use clap::Parser;

        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        assert_eq!(defaults.len(), KEYS.len(), "every field is a key");
        for (section, key) in KEYS {
            let (value, text) = other_value(&defaults, key);
            let toml_text = format!("[{section}]\n{key} = {value}\n");
            let (c, warnings) = Config::from_toml(&toml_text).unwrap();
            assert!(warnings.is_empty());
            let got = toml::Table::try_from(&c).unwrap();
            assert_eq!(got[*key], value, "TOML [{section}] {key}");

            let flag = format!("--{}", key.replace('_', "-"));
            let cli = Cli::try_parse_from(["serve", flag.as_str(), text.as_str()]).unwrap();
            let mut c = Config::default();
            cli.serve.overlay(&mut c);
            assert_eq!(
                toml::Table::try_from(&c).unwrap()[*key],
                value,
                "flag {flag}"
            );

            let env = format!("COURIER_{}", key.to_uppercase());
            // SAFETY: only this test sets COURIER_* variables, one at a time.
            unsafe { std::env::set_var(&env, &text) };
            let cli = Cli::try_parse_from(["serve"]).unwrap();
            unsafe { std::env::remove_var(&env) };
            let mut c = Config::default();
            cli.serve.overlay(&mut c);
            assert_eq!(toml::Table::try_from(&c).unwrap()[*key], value, "env {env}");
        }
    }

    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("courier.example.toml");
        let (c, warnings) = Config::from_file(&path).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(c, Config::default(), "the example shows the defaults");
        for (section, key) in KEYS {
            let text = std::fs::read_to_string(&path).unwrap();
            let docs = std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md"),
            )
            .unwrap();
            assert!(
                text.contains(&format!("\n{key} = ")),
                "{key} missing from the example"
            );
            assert!(
                docs.contains(&format!("`{key}`")),
                "{key} missing from docs/configuration.md"
            );
            let _ = section;
        }
        c.validate().unwrap();
    }
}
