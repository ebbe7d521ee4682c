//! The NATS subjects of a cluster, and the codec of what travels on them (sans-IO).
//!
//! - `<prefix>.u.<uuid>`: deliveries for one user's devices, and single-resource
//!   kicks; a node subscribes while it holds a device of that user.
//! - `<prefix>.t.<topic id>`: topic deliveries; every node subscribes to all
//!   (`<prefix>.t.*`) and queues them on its devices of the topic's members.
//! - `<prefix>.ctl`: heartbeats, cache invalidations, resync requests; every node.
//!
//! Payloads are `proto/cluster.proto`'s `ClusterMessage`.

use bytes::Bytes;
use prost::Message;

use crate::cluster_pb::{cluster_message::Kind, ClusterMessage};

/// Whether `prefix` is one NATS subject token Courier accepts: 1–64 ASCII letters,
/// digits, `-` or `_` (no `.`, no wildcards, no spaces).
pub fn valid_prefix(prefix: &str) -> bool {
    (1..=64).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The subjects of one cluster.
#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    pub fn new(prefix: &str) -> Self {
        Subjects {
            prefix: prefix.to_owned(),
        }
    }

    /// One user's deliveries and kicks.
    pub fn user(&self, uuid: u64) -> String {
        format!("{}.u.{uuid}", self.prefix)
    }

    /// One topic's deliveries.
    pub fn topic(&self, topic_id: u64) -> String {
        format!("{}.t.{topic_id}", self.prefix)
    }

    /// Every topic's deliveries (a subscription).
    pub fn all_topics(&self) -> String {
        format!("{}.t.*", self.prefix)
    }

    /// A subject nobody subscribes to: a request on it is answered by NATS itself
    /// ("no responders"), after everything sent before it (a round trip).
    pub fn probe(&self, node_id: u8) -> String {
        format!("{}.probe.{node_id}", self.prefix)
    }

    /// Heartbeats, invalidations, resyncs.
    pub fn control(&self) -> String {
        format!("{}.ctl", self.prefix)
    }
}

/// A payload that is not a `ClusterMessage` this version understands.
#[derive(Debug, thiserror::Error)]
#[error("undecodable cluster message: {0}")]
pub struct Undecodable(String);

/// Encodes one message.
pub fn encode(kind: Kind) -> Bytes {
    Bytes::from(ClusterMessage { kind: Some(kind) }.encode_to_vec())
}

/// Decodes one message; a `frame` inside shares `payload`'s memory.
pub fn decode(payload: Bytes) -> Result<Kind, Undecodable> {
    ClusterMessage::decode(payload)
        .map_err(|e| Undecodable(e.to_string()))?
        .kind
        .ok_or_else(|| Undecodable("no kind (a newer version?)".to_owned()))
}

/// How far another node's clock is from ours, in milliseconds, if by more than
/// `limit_ms` (a heartbeat's `unix_ms` against ours when it arrived).
pub fn clock_off_by(theirs_ms: u64, ours_ms: u64, limit_ms: u64) -> Option<i64> {
    let off = i128::from(theirs_ms) - i128::from(ours_ms);
    (off.unsigned_abs() > u128::from(limit_ms))
        .then(|| off.clamp(i64::MIN.into(), i64::MAX.into()) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster_pb::{Delivery, Heartbeat};

    #[test]
    fn prefixes_are_one_plain_token() {
        assert!(valid_prefix("courier"));
        assert!(valid_prefix("app-1_test"));
        for bad in ["", "a.b", "a*", ">", "a b", &"x".repeat(65)] {
            assert!(!valid_prefix(bad), "{bad:?}");
        }
    }

    #[test]
    fn subjects_name_users_topics_and_control() {
        let s = Subjects::new("c1");
        assert_eq!(s.user(42), "c1.u.42");
        assert_eq!(s.topic(7), "c1.t.7");
        assert_eq!(s.all_topics(), "c1.t.*");
        assert_eq!(s.control(), "c1.ctl");
    }

    #[test]
    fn messages_round_trip_and_garbage_is_an_error() {
        let delivery = Delivery {
            uuid: 5,
            only_resource: Some("phone".into()),
            sequence: 99,
            frame: Bytes::from_static(b"frame"),
            ..Delivery::default()
        };
        let bytes = encode(Kind::Delivery(delivery.clone()));
        match decode(bytes).unwrap() {
            Kind::Delivery(d) => assert_eq!(d, delivery),
            other => panic!("{other:?}"),
        }
        let beat = encode(Kind::Heartbeat(Heartbeat {
            node_id: 3,
            unix_ms: 1,
            leaving: false,
        }));
        assert!(matches!(decode(beat), Ok(Kind::Heartbeat(_))));
        assert!(decode(Bytes::from_static(&[0xff, 0xff, 0xff])).is_err());
        assert!(decode(Bytes::new()).is_err(), "no kind");
    }

    #[test]
    fn clocks_off_by_more_than_the_limit_are_reported() {
        assert_eq!(clock_off_by(10_000, 10_500, 1000), None);
        assert_eq!(clock_off_by(10_000, 12_000, 1000), Some(-2000));
        assert_eq!(clock_off_by(13_000, 12_000, 999), Some(1000));
        assert_eq!(
            clock_off_by(u64::MAX, 0, 1000),
            Some(i64::MAX),
            "no overflow"
        );
    }
}
