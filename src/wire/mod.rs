//! Types on the wire that the server and the client library share, so the client
//! depends on nothing of the server: REST answers (`rest`). (The protobuf frames are
//! `crate::pb`, the frame codec `crate::protocol::codec`.)

pub mod rest;
