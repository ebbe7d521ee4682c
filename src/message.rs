//! One message, in every stage: the [`Envelope`] a sender hands in (who sends what
//! to whom), and [`Sequenced`], the envelope with the sequence and time the router
//! gave it — what the store keeps and reads back and what devices receive.
//! "None" is an `Option` or an enum variant here, never a zero.

use bytes::Bytes;

use crate::pb;

/// Whom a message is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A p2p message to an account: every device of it, or only `resource`.
    User {
        uuid: u64,
        account: String,
        resource: Option<String>,
        /// The recipient has blacklisted the sender: the message is kept for the
        /// sender's devices only, never delivered to or listed for the recipient.
        blocked: bool,
    },
    /// A topic message: every member's devices.
    Topic { topic_id: u64 },
}

/// Who sends what to whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub app_id: u64,
    pub from_uuid: u64,
    pub from_account: String,
    pub from_resource: String,
    /// Chosen by the sender; (sender, packet id) is deduplicated.
    pub packet_id: String,
    pub target: Target,
    pub biz_type: String,
    pub payload: Bytes,
}

impl Envelope {
    /// The topic of a topic message.
    pub fn topic_id(&self) -> Option<u64> {
        match self.target {
            Target::Topic { topic_id } => Some(topic_id),
            Target::User { .. } => None,
        }
    }

    /// The `Deliver` devices receive for this message at `seq`, `ts`;
    /// `transient` for messages never stored.
    pub fn to_deliver(&self, seq: u64, ts: u64, transient: bool) -> pb::Deliver {
        let (to_account, topic_id) = match &self.target {
            Target::User { account, .. } => (account.clone(), 0),
            Target::Topic { topic_id } => (String::new(), *topic_id),
        };
        pb::Deliver {
            sequence: seq,
            timestamp: ts,
            packet_id: self.packet_id.clone(),
            from_uuid: self.from_uuid,
            from_account: self.from_account.clone(),
            from_resource: self.from_resource.clone(),
            to_account,
            topic_id,
            payload: self.payload.clone(),
            biz_type: self.biz_type.clone(),
            transient,
        }
    }

    /// Whether device `resource` of user `uuid` sees this p2p message in its
    /// timeline: a message addressed to one resource of that user is seen only by
    /// that device; messages the user sent to others are seen by all its devices.
    pub fn visible_to(&self, uuid: u64, resource: &str) -> bool {
        match &self.target {
            Target::User {
                uuid: to,
                resource: Some(only),
                ..
            } => *to != uuid || only == resource,
            _ => true,
        }
    }
}

/// An envelope with its sequence and timestamp: stored, read back, delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequenced {
    pub seq: u64,
    pub ts: u64,
    pub envelope: Envelope,
}

impl Sequenced {
    /// The `Deliver` devices receive (read back from the store: never transient).
    pub fn to_deliver(&self) -> pb::Deliver {
        self.envelope.to_deliver(self.seq, self.ts, false)
    }
}
