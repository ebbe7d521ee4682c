//! Black-box tests: a real server on 127.0.0.1:0 driven over real sockets with the
//! Rust client. One test binary (modules below) keeps CI link time down.

mod abuse;
mod admin;
mod bad_input;
mod blacklist;
mod callbacks;
mod cluster;
mod common;
mod contacts;
mod crash;
mod dedup;
mod demo;
mod history;
mod lifetimes;
mod mimc;
mod observability;
mod openapi;
mod p2p;
mod postgres;
mod push;
mod services;
mod sessions;
mod token_api;
mod topics;
mod transports;
