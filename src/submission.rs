//! What a sender hands the router: one message to route, and where its ServerAck
//! goes. Shared by the senders (sessions, the push API), the router and the fanout
//! stage, so none of them depends on another for it.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::directory::TopicView;
use crate::hub::DeviceHandle;
use crate::pb;
use crate::store::NewMessage;

/// Where the ServerAck of a submission goes.
#[derive(Debug)]
pub enum AckSink {
    /// The sending device's queue.
    Device(DeviceHandle),
    /// A caller awaiting the result (push API).
    Caller(oneshot::Sender<pb::ServerAck>),
}

/// Whom a message is for.
#[derive(Debug, Clone)]
pub enum Target {
    /// A p2p message to an account: every device of it, or one resource.
    User {
        uuid: u64,
        account: String,
        resource: Option<String>,
    },
    /// A topic message: every member's devices. The sender must be a member.
    Topic {
        topic_id: u64,
        /// The topic as the caller loaded it, used if the directory's cache evicted
        /// it meanwhile (the cache's copy wins when it is newer).
        snapshot: Option<Arc<TopicView>>,
    },
}

/// One message to route.
#[derive(Debug)]
pub struct Submission {
    pub app_id: u64,
    pub from_uuid: u64,
    pub from_account: Arc<str>,
    pub from_resource: Arc<str>,
    /// The sending connection, which gets the ack instead of a delivery (`None`:
    /// a push from the REST API).
    pub from_conn: Option<u64>,
    pub packet_id: String,
    pub target: Target,
    pub biz_type: String,
    pub payload: Bytes,
    /// Store it (offline delivery, history); false: online devices only.
    pub persist: bool,
    pub ack: AckSink,
    /// The sending connection's in-flight slot, given back when this send is
    /// answered (dropped with the submission right after its ack is queued).
    pub inflight: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Submission {
    /// The topic of a topic message.
    pub fn topic_id(&self) -> Option<u64> {
        match self.target {
            Target::Topic { topic_id, .. } => Some(topic_id),
            Target::User { .. } => None,
        }
    }

    /// The message as the store keeps it, with its sequence and time.
    pub fn new_message(&self, seq: u64, ts: u64) -> NewMessage {
        let (to_uuid, to_account, to_resource, topic_id) = match &self.target {
            Target::User {
                uuid,
                account,
                resource,
            } => (
                *uuid,
                account.clone(),
                resource.clone().unwrap_or_default(),
                0,
            ),
            Target::Topic { topic_id, .. } => (0, String::new(), String::new(), *topic_id),
        };
        NewMessage {
            seq,
            ts,
            app_id: self.app_id,
            from_uuid: self.from_uuid,
            from_account: self.from_account.to_string(),
            from_resource: self.from_resource.to_string(),
            packet_id: self.packet_id.clone(),
            to_uuid,
            to_account,
            to_resource,
            topic_id,
            biz_type: self.biz_type.clone(),
            payload: self.payload.clone(),
        }
    }

    /// The message as devices receive it.
    pub fn deliver(&self, seq: u64, ts: u64) -> pb::Deliver {
        let (to_account, topic_id) = match &self.target {
            Target::User { account, .. } => (account.clone(), 0),
            Target::Topic { topic_id, .. } => (String::new(), *topic_id),
        };
        pb::Deliver {
            sequence: seq,
            timestamp: ts,
            packet_id: self.packet_id.clone(),
            from_uuid: self.from_uuid,
            from_account: self.from_account.to_string(),
            from_resource: self.from_resource.to_string(),
            to_account,
            topic_id,
            payload: self.payload.clone(),
            biz_type: self.biz_type.clone(),
            transient: !self.persist,
        }
    }
}
