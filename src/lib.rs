//! Courier: a self-hosted realtime messaging gateway.
//!
//! The message path (see `DESIGN.md` §3):
//! `transport` (bytes ⇄ frames) → `session` (the driver) running `protocol` (sans-IO
//! session rules) → `router`
//! (dedup, sequence, group commit through `store`) → `hub` (fan-out to online devices).
//! `api` serves the REST paths of the operation manual; `client` is the Rust client
//! library the CLI, tests and load generator use.

#![warn(unreachable_pub, missing_debug_implementations)]

pub mod admin;
pub mod api;
pub mod auth;
pub mod blacklist;
pub mod callbacks;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod directory;
pub mod fanout;
pub mod hub;
pub mod logging;
pub mod message;
pub mod mimc;
pub mod names;
pub mod protocol;
pub mod quota;
pub mod router;
pub mod sequence;
pub mod server;
pub mod session;
pub mod state;
pub mod store;
pub mod submission;
pub mod sweeper;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod topics;
pub mod transport;
pub mod wire;

/// Generated protobuf types of `proto/courier.proto`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/courier.v1.rs"));
}

/// Generated protobuf types of `proto/cluster.proto` (between nodes).
pub mod cluster_pb {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/courier.cluster.v1.rs"));
}
