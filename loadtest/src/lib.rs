//! Load generator for Courier.
//!
//! By default it starts its own `courier serve` (the release binary) on a free
//! 127.0.0.1 port with a temporary data dir, so the server's memory can be read from
//! /proc; `--server` targets a running gateway instead. Every scenario runs over
//! WebSocket or QUIC (`--transport`), spreads its connections over several source
//! addresses in 127.0.0.0/8 (`--source-ips`), shows progress bars on stderr and ends
//! with a table (or JSON with `--json`). Every run is bounded and stops by itself.
//!
//! - `p2p`: K sender→receiver pairs; durable sends with a window of in-flight
//!   messages, optionally paced; acked msgs/s, end-to-end latency, server RSS.
//! - `fanout`: one topic with every member online; senders post at a fixed rate.
//! - `backlog`: users with stored messages log in at once; time until each has all
//!   of them (paging with `Pull` past the login backlog limit).
//! - `connections`: N logged-in idle connections; server RSS per connection. With
//!   `--processes P` the connections come from P processes (each process may hold
//!   at most ~19,900 sockets here).
//! - `abuse`: the attacks of docs/security.md, phase by phase (WebSocket and HTTP).

mod abuse;
mod conn;
mod gateway;
mod report;
mod sessions;
mod throughput;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub use gateway::Gateway;
pub use report::Report;

#[derive(Parser, Debug)]
#[command(about = "Courier load generator")]
pub struct Cli {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(subcommand)]
    pub mode: Mode,
}

/// The gateway to load.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// Gateway to load (default: start one from --courier-bin).
    #[arg(long, global = true)]
    pub server: Option<String>,
    #[arg(long, global = true, requires = "server")]
    pub app_id: Option<u64>,
    #[arg(long, global = true, requires = "server")]
    pub app_key: Option<String>,
    #[arg(long, global = true, requires = "server")]
    pub app_secret: Option<String>,
    /// The running gateway's QUIC URL (quic://host:port), for --transport quic.
    #[arg(long, global = true, requires = "server")]
    pub quic_url: Option<String>,
    /// SHA-256 of the running gateway's certificate (as `courier serve` prints it).
    #[arg(long, global = true, requires = "server")]
    pub cert_fingerprint: Option<String>,
    /// The courier binary to start when --server is not given.
    #[arg(long, global = true, default_value = "target/release/courier")]
    pub courier_bin: PathBuf,
    /// Extra flags for the started server, e.g. "--commit-batch-max 4096". Unless
    /// they set it, `--max-connections 19900` is added.
    #[arg(long, global = true, default_value = "", allow_hyphen_values = true)]
    pub server_args: String,
    /// Nodes to start (node ids 0, 1, …), a cluster when more than one: the
    /// server args must then name a shared PostgreSQL and NATS
    /// (`--store-kind postgres --postgres-url URL --nats-url URL`). Connections go
    /// to the nodes in turn.
    #[arg(long, global = true, default_value_t = 1)]
    pub nodes: usize,
    /// Message callbacks of the started gateway's app: `off`; `receiver` (an HTTP
    /// receiver in this process answers 200 at once and counts them); `dead` (the
    /// callback URL is a closed port: every attempt fails and is retried).
    #[arg(long, global = true, value_enum, default_value_t = Callbacks::Off)]
    pub callbacks: Callbacks,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Callbacks {
    Off,
    Receiver,
    Dead,
}

/// How the load connects and reports.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// Transport of every client connection.
    #[arg(long, global = true, value_enum, default_value_t = Transport::Ws)]
    pub transport: Transport,
    /// Source addresses (127.0.0.1, 127.0.0.2, …) connections are spread over when
    /// the gateway is on loopback; each has its own ~28,000 ephemeral ports (and,
    /// for QUIC, its own UDP socket).
    #[arg(long, global = true, default_value_t = 4)]
    pub source_ips: usize,
    /// Start the source addresses this many after 127.0.0.1 (used by --processes).
    #[arg(long, global = true, default_value_t = 0)]
    pub source_offset: usize,
    /// Print the result as one JSON object instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The Courier protocol over WebSocket (`/ws`).
    Ws,
    /// The Courier protocol over QUIC.
    Quic,
    /// The MIMC web SDK's protocol over WebSocket (`/mimc`): p2p and connections only.
    Mimc,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Quic => "quic",
            Transport::Mimc => "mimc",
        }
    }
}

#[derive(Subcommand, Debug, Clone)]
pub enum Mode {
    /// Sender→receiver pairs, durable acknowledged sends.
    P2p {
        /// Sender/receiver pairs.
        #[arg(long, default_value_t = 50)]
        pairs: usize,
        /// Seconds of sending.
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Unacknowledged sends allowed per sender.
        #[arg(long, default_value_t = 64)]
        window: usize,
        /// Total target rate in msgs/s (0 = as fast as acks allow).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Payload bytes (at least 8: the send timestamp).
        #[arg(long, default_value_t = 100)]
        payload: usize,
    },
    /// One topic with every member online; senders post to it at a fixed rate.
    Fanout {
        /// Topic members, each online on one connection.
        #[arg(long, default_value_t = 500)]
        members: usize,
        /// Sending connections (members' second devices).
        #[arg(long, default_value_t = 2)]
        senders: usize,
        /// Total topic messages per second (each is delivered to every member).
        #[arg(long, default_value_t = 600)]
        rate: u64,
        /// Seconds of sending.
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Payload bytes (at least 8: the send timestamp).
        #[arg(long, default_value_t = 100)]
        payload: usize,
    },
    /// Login backlog: users with stored messages all log in at once.
    Backlog {
        /// Users that log in.
        #[arg(long, default_value_t = 200)]
        users: usize,
        /// Stored messages waiting for each user.
        #[arg(long, default_value_t = 200)]
        per_user: usize,
        /// Payload bytes.
        #[arg(long, default_value_t = 100)]
        payload: usize,
    },
    /// Idle logged-in connections; reports server memory per connection.
    Connections {
        #[arg(long, default_value_t = 5000)]
        count: usize,
        /// Load processes sharing the connections (one process holds at most
        /// ~19,900 sockets here); they run this same binary.
        #[arg(long, default_value_t = 1)]
        processes: usize,
        /// (Internal, for --processes) connect, print `ready N`, and hold the
        /// connections until stdin closes.
        #[arg(long, hide = true)]
        hold: bool,
    },
    /// p2p rounds on one gateway alternating `--transport` and `--other`
    /// (`ws` and `mimc`), then the median of each and their ratio.
    Compare {
        /// The transport compared with `--transport`.
        #[arg(long, value_enum, default_value_t = Transport::Mimc)]
        other: Transport,
        /// Rounds of each transport.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Sender/receiver pairs.
        #[arg(long, default_value_t = 50)]
        pairs: usize,
        /// Seconds of sending per round.
        #[arg(long, default_value_t = 8)]
        secs: u64,
        /// Unacknowledged sends allowed per sender.
        #[arg(long, default_value_t = 64)]
        window: usize,
        /// Payload bytes (at least 8: the send timestamp).
        #[arg(long, default_value_t = 100)]
        payload: usize,
    },
    /// Attack phases (ping flood, slowloris, stalled uploads, oversized calls, a
    /// non-reading device) with server RSS and a bystander's latency during each.
    Abuse {
        /// Seconds per phase.
        #[arg(long, default_value_t = 5)]
        secs: u64,
        /// Attacking sockets per phase (where it applies).
        #[arg(long, default_value_t = 200)]
        attackers: usize,
    },
}

/// A name part unique to one scenario run (process id, clock, counter): accounts
/// and packet ids of two runs against one gateway never collide (the gateway would
/// deduplicate the second run's sends).
pub(crate) fn run_id() -> String {
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    format!("{:x}-{clock:x}-{n}", std::process::id())
}

/// Runs one scenario and returns its result (`None` for a `--hold` helper process).
pub async fn run(cli: Cli) -> anyhow::Result<Option<Report>> {
    let p2p_or_connections = matches!(
        cli.mode,
        Mode::P2p { .. } | Mode::Connections { .. } | Mode::Compare { .. }
    );
    if cli.load.transport == Transport::Mimc && !p2p_or_connections {
        anyhow::bail!("--transport mimc runs p2p and connections only");
    }
    let mut gw = Gateway::start(&cli.target, &cli.load)?;
    let report = match cli.mode {
        Mode::P2p {
            pairs,
            secs,
            window,
            rate,
            payload,
        } => throughput::p2p(&gw, pairs, secs, window, rate, payload.max(8)).await?,
        Mode::Fanout {
            members,
            senders,
            rate,
            secs,
            payload,
        } => {
            throughput::fanout(
                &gw,
                members.max(1),
                senders.max(1),
                rate.max(1),
                secs,
                payload.max(8),
            )
            .await?
        }
        Mode::Backlog {
            users,
            per_user,
            payload,
        } => sessions::backlog(&gw, users.max(1), per_user, payload).await?,
        Mode::Connections {
            count, hold: true, ..
        } => {
            sessions::hold(&gw, count).await?;
            return Ok(None);
        }
        Mode::Connections {
            count, processes, ..
        } => sessions::connections(&gw, &cli.load, count, processes.max(1)).await?,
        Mode::Compare {
            other,
            rounds,
            pairs,
            secs,
            window,
            payload,
        } => {
            throughput::compare(
                &mut gw,
                other,
                rounds.max(1),
                pairs,
                secs,
                window,
                payload.max(8),
            )
            .await?
        }
        Mode::Abuse { secs, attackers } => {
            if gw.transport != Transport::Ws {
                anyhow::bail!("abuse attacks the HTTP/WebSocket listener: use --transport ws");
            }
            abuse::run(&gw, secs, attackers).await?
        }
    };
    Ok(Some(report))
}
