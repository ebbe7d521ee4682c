//! What a sender hands the router: one message to route, and where its ServerAck
//! goes. Shared by the senders (sessions, the push API), the router and the fanout
//! stage, so none of them depends on another for it.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::directory::TopicView;
use crate::hub::DeviceHandle;
use crate::pb;

/// Where the ServerAck of a submission goes.
#[derive(Debug)]
pub enum AckSink {
    /// The sending device's queue.
    Device(DeviceHandle),
    /// A caller awaiting the result (push API).
    Caller(oneshot::Sender<pb::ServerAck>),
}

/// One message to route.
#[derive(Debug)]
pub struct Submission {
    pub app_id: u64,
    pub from_uuid: u64,
    pub from_account: Arc<str>,
    pub from_resource: Arc<str>,
    /// The sending connection, which gets the ack instead of a delivery (0: none).
    pub from_conn: u64,
    pub packet_id: String,
    /// The recipient (p2p); 0 for a topic message.
    pub to_uuid: u64,
    pub to_account: String,
    /// Empty: every device of the recipient.
    pub to_resource: String,
    /// The topic (0 for p2p). The sender must be a member; every member's devices
    /// get it.
    pub topic_id: u64,
    /// The topic as the caller loaded it, used if the directory's cache evicted it
    /// meanwhile (the cache's copy wins when it is newer).
    pub topic: Option<Arc<TopicView>>,
    pub biz_type: String,
    pub payload: Bytes,
    /// Store it (offline delivery, history); false: online devices only.
    pub persist: bool,
    pub ack: AckSink,
    /// The sending connection's in-flight slot, given back when this send is
    /// answered (dropped with the submission right after its ack is queued).
    pub inflight: Option<tokio::sync::OwnedSemaphorePermit>,
}
