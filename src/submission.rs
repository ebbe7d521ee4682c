//! What a sender hands the router: one message to route, and where its ServerAck
//! goes. Shared by the senders (sessions, the push API), the router and the fanout
//! stage, so none of them depends on another for it.

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::directory::TopicView;
use crate::hub::DeviceHandle;
use crate::message::{Envelope, Sequenced};
use crate::pb;

/// Where the ServerAck of a submission goes.
#[derive(Debug)]
pub enum AckSink {
    /// The sending device's queue.
    Device(DeviceHandle),
    /// A caller awaiting the result (push API).
    Caller(oneshot::Sender<pb::ServerAck>),
}

/// One message to route: its envelope, and what the router needs besides.
#[derive(Debug)]
pub struct Submission {
    pub envelope: Envelope,
    /// For a topic message, the topic as the caller loaded it, used if the
    /// directory's cache evicted it meanwhile (the cache's copy wins when newer).
    pub topic_snapshot: Option<Arc<TopicView>>,
    /// The sending connection, which gets the ack instead of a delivery (`None`:
    /// a push from the REST API).
    pub from_conn: Option<u64>,
    /// Store it (offline delivery, history); false: online devices only.
    pub persist: bool,
    pub ack: AckSink,
    /// The sending connection's in-flight slot, given back when this send is
    /// answered (dropped with the submission right after its ack is queued).
    pub inflight: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Submission {
    /// The message with the sequence and time the router gave it.
    pub fn sequenced(&self, seq: u64, ts: u64) -> Sequenced {
        Sequenced {
            seq,
            ts,
            envelope: self.envelope.clone(),
        }
    }
}
