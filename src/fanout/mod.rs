//! The seam between "committed, in order" and "delivered to devices".
//!
//! The router's commit loop hands every committed batch, in commit order, to the
//! fanout stage over a bounded channel ([`FANOUT_QUEUE_BATCHES`] batches), and goes
//! on committing: a 10,000-member fan-out runs beside the next commit instead of
//! inside it. The stage, one task, takes the batches in order and for each item
//! queues its delivery frame (encoded once) on the devices concerned through a
//! [`Fanout`], then answers the sender. Since one task does both in commit order,
//! every device still receives its timeline, and its own ServerAcks, in sequence
//! order.
//!
//! [`Fanout`] is where this node's devices are (the in-process [`Hub`]); in a cluster
//! a [`Remote`] also gets each delivery once per destination (the recipient, the
//! sender's other devices, the topic) and publishes it to the nodes holding those
//! devices (`crate::cluster`).
//!
//! The stage also owns the one outcome only delivery knows: whether a transient
//! (online-only) send reached any device. When no device of this node took it, a
//! cluster asks the other nodes (the ack waits for their answer, at most
//! `cluster_request_timeout_ms`). A retry of such a send is answered with the
//! original's outcome from [`UNDELIVERED_REMEMBERED`] recent ones.

use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use lru::LruCache;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::cluster_pb::Delivery;
use crate::directory::TopicView;
use crate::hub::{Audience, Hub, Outbound};
use crate::message::Target;
use crate::pb::{self, frame::Kind};
use crate::protocol::{codec, Status};
use crate::submission::{AckSink, Submission};

/// Committed batches waiting for the stage before the commit loop waits.
pub const FANOUT_QUEUE_BATCHES: usize = 8;

/// Transient sends that reached no device, remembered for their retries.
pub const UNDELIVERED_REMEMBERED: usize = 100_000;

/// Where devices are reached.
pub trait Fanout: Send + Sync + 'static {
    /// Queues `out` on the devices of user `uuid` that `audience` selects; returns
    /// how many took it.
    fn to_user(&self, uuid: u64, audience: Audience<'_>, out: &Outbound) -> usize;
    /// How many devices of user `uuid` that `audience` selects are online, queuing
    /// nothing (what a blocked message's ack reports, so its sender is not told).
    fn online(&self, uuid: u64, audience: Audience<'_>) -> usize;
}

impl Fanout for Hub {
    fn to_user(&self, uuid: u64, audience: Audience<'_>, out: &Outbound) -> usize {
        self.deliver(uuid, audience, out)
    }

    fn online(&self, uuid: u64, audience: Audience<'_>) -> usize {
        self.online_devices(uuid, audience)
    }
}

/// The other nodes of a cluster, as the stage reaches them.
pub trait Remote: Send + Sync + 'static {
    /// Hands `delivery` to the nodes holding its user's (or its topic's members')
    /// devices; never waits.
    fn publish(&self, delivery: Delivery);
    /// Like [`Remote::publish`], and resolves to whether a device on another node
    /// took it (or, for a probe, is online).
    fn ask(&self, delivery: Delivery) -> Pin<Box<dyn Future<Output = bool> + Send>>;
}

/// Queues `out` on the devices of a topic's `members` that `fanout` reaches: every
/// member's, except the sending connection `except_conn` among the sender's. Returns
/// how many devices of members other than the sender took it.
pub fn to_members<'a>(
    fanout: &dyn Fanout,
    members: impl IntoIterator<Item = &'a crate::store::Member>,
    from_uuid: u64,
    except_conn: Option<u64>,
    out: &Outbound,
) -> usize {
    let mut n = 0;
    for member in members {
        let audience = Audience {
            except_conn: except_conn.filter(|_| member.uuid == from_uuid),
            only_resource: None,
        };
        let got = fanout.to_user(member.uuid, audience, out);
        if member.uuid != from_uuid {
            n += got;
        }
    }
    n
}

/// One committed item, in commit order.
pub enum Committed {
    /// A message committed (or transient) in this batch: deliver it, then ack.
    Message {
        sub: Submission,
        seq: u64,
        ts: u64,
        frame: Bytes,
        /// The topic's members when it was sent (topic messages only).
        topic: Option<Arc<TopicView>>,
    },
    /// A retry of a recent send: ack with the original's sequence and outcome.
    Retry { sub: Submission, seq: u64, ts: u64 },
    /// An answer the commit loop decided (a duplicate the store had, a failure).
    Answer { sub: Submission, ack: pb::ServerAck },
}

/// Starts the stage; it ends when the sender side is dropped and what was sent is done.
pub fn start(
    fanout: Arc<dyn Fanout>,
    remote: Option<Arc<dyn Remote>>,
) -> (mpsc::Sender<Vec<Committed>>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(FANOUT_QUEUE_BATCHES);
    let stage = Stage {
        fanout,
        remote,
        undelivered: Arc::new(Mutex::new(LruCache::new(
            NonZeroUsize::new(UNDELIVERED_REMEMBERED).unwrap_or(NonZeroUsize::MIN),
        ))),
        tally: Tally::default(),
    };
    (tx, tokio::spawn(stage.run(rx)))
}

/// (sender uuid, packetId) of transient sends no device took.
type Undelivered = Arc<Mutex<LruCache<(u64, String), ()>>>;

/// How far a message got on this node, and what the other nodes still owe.
struct Reach {
    /// Devices of recipients (not the sender's own) that took it here.
    here: usize,
    /// The other nodes' answer, for a transient message no device here took.
    elsewhere: Option<Pin<Box<dyn Future<Output = bool> + Send>>>,
}

struct Stage {
    fanout: Arc<dyn Fanout>,
    /// The other nodes, in a cluster.
    remote: Option<Arc<dyn Remote>>,
    undelivered: Undelivered,
    /// Counted per batch, recorded once per batch.
    tally: Tally,
}

/// What one batch did, for the metrics.
#[derive(Debug, Default)]
struct Tally {
    deliveries: u64,
    /// p2p, topic, push_p2p, push_topic.
    sends: [u64; 4],
}

impl Tally {
    fn record(&mut self) {
        let t = std::mem::take(self);
        metrics::counter!(crate::telemetry::DELIVERIES).increment(t.deliveries);
        for (kind, n) in ["p2p", "topic", "push_p2p", "push_topic"]
            .iter()
            .zip(t.sends)
        {
            if n > 0 {
                metrics::counter!(crate::telemetry::SENDS, "kind" => *kind).increment(n);
            }
        }
    }
}

impl Stage {
    async fn run(mut self, mut rx: mpsc::Receiver<Vec<Committed>>) {
        while let Some(batch) = rx.recv().await {
            for item in batch {
                self.handle(item);
            }
            self.tally.record();
        }
    }

    fn handle(&mut self, item: Committed) {
        match item {
            Committed::Message {
                sub,
                seq,
                ts,
                frame,
                topic,
            } => {
                let out = Outbound {
                    seq: if sub.persist { seq } else { 0 },
                    frame,
                };
                let reach = match &topic {
                    Some(view) => self.to_topic(&sub, out, view),
                    None => self.to_users(&sub, out),
                };
                // Index into Tally::sends: p2p, topic, push_p2p, push_topic.
                let kind = match (sub.from_conn.is_some(), topic.is_some()) {
                    (true, false) => 0,
                    (true, true) => 1,
                    (false, false) => 2,
                    (false, true) => 3,
                };
                self.tally.sends[kind] += 1;
                self.tally.deliveries += reach.here as u64;
                if let Some(elsewhere) = reach.elsewhere {
                    // Answered when the other nodes have: later acks of this
                    // connection may overtake it (acks are matched by packetId).
                    // A retry meanwhile is told "not delivered" (not yet known).
                    let key = (sub.envelope.from_uuid, sub.envelope.packet_id.clone());
                    self.undelivered.lock().put(key, ());
                    let undelivered = self.undelivered.clone();
                    tokio::spawn(async move {
                        let delivered = elsewhere.await;
                        answer(&undelivered, sub, seq, ts, delivered);
                    });
                    return;
                }
                let delivered = sub.persist || reach.here > 0;
                answer(&self.undelivered, sub, seq, ts, delivered);
            }
            Committed::Retry { sub, seq, ts } => {
                let key = (sub.envelope.from_uuid, sub.envelope.packet_id.clone());
                let delivered = self.undelivered.lock().peek(&key).is_none();
                ack(sub.ack, &sub.envelope.packet_id, seq, ts, delivered);
            }
            Committed::Answer { sub, ack } => send_ack(sub.ack, ack),
        }
    }

    /// Queues a topic message on every member's devices but the sending one, here
    /// and (in a cluster) on the other nodes.
    fn to_topic(&self, sub: &Submission, out: Outbound, view: &TopicView) -> Reach {
        let from_uuid = sub.envelope.from_uuid;
        let here = to_members(
            self.fanout.as_ref(),
            &view.topic.members,
            from_uuid,
            sub.from_conn,
            &out,
        );
        let remote = || Delivery {
            topic_id: view.topic.topic_id,
            from_uuid,
            except_conn: sub.from_conn.unwrap_or(0),
            sequence: out.seq,
            frame: out.frame.clone(),
            ..Delivery::default()
        };
        Reach {
            here,
            elsewhere: self.to_remote(remote, !sub.persist && here == 0),
        }
    }

    /// Queues a p2p message on the recipient's devices and the sender's other
    /// devices, here and (in a cluster) on the other nodes.
    fn to_users(&self, sub: &Submission, out: Outbound) -> Reach {
        let nobody = Reach {
            here: 0,
            elsewhere: None,
        };
        let Target::User {
            uuid,
            resource,
            blocked,
            ..
        } = &sub.envelope.target
        else {
            return nobody;
        };
        let (to_uuid, to_resource) = (*uuid, resource.as_deref());
        let from_uuid = sub.envelope.from_uuid;
        let except_conn = sub.from_conn;
        let remote =
            |uuid, except_conn: Option<u64>, only_resource: Option<&str>, probe| Delivery {
                uuid,
                from_uuid,
                except_conn: except_conn.unwrap_or(0),
                only_resource: only_resource.map(str::to_owned),
                sequence: out.seq,
                frame: out.frame.clone(),
                probe,
                ..Delivery::default()
            };
        if to_uuid == from_uuid {
            let audience = Audience {
                except_conn,
                only_resource: to_resource,
            };
            let here = self.fanout.to_user(to_uuid, audience, &out);
            let elsewhere = self.to_remote(
                || remote(to_uuid, except_conn, to_resource, false),
                !sub.persist && here == 0,
            );
            return Reach { here, elsewhere };
        }
        let to_recipient = Audience {
            except_conn: None,
            only_resource: to_resource,
        };
        // A recipient who blacklisted the sender gets nothing, and the sender's ack
        // reads as if it had (the sender is not told).
        let here = if *blocked {
            self.fanout.online(to_uuid, to_recipient)
        } else {
            self.fanout.to_user(to_uuid, to_recipient, &out)
        };
        let ask = !sub.persist && here == 0;
        // A blocked message goes to no other node, unless its ack needs a count.
        let elsewhere = if *blocked && !ask {
            None
        } else {
            self.to_remote(|| remote(to_uuid, None, to_resource, *blocked), ask)
        };
        // The sender's other devices keep their view of the conversation.
        let to_sender = Audience {
            except_conn,
            only_resource: None,
        };
        self.fanout.to_user(from_uuid, to_sender, &out);
        self.to_remote(|| remote(from_uuid, except_conn, None, false), false);
        Reach { here, elsewhere }
    }

    /// Hands a delivery to the other nodes (none without a cluster); with `ask`,
    /// returns their answer to come.
    fn to_remote(
        &self,
        delivery: impl FnOnce() -> Delivery,
        ask: bool,
    ) -> Option<Pin<Box<dyn Future<Output = bool> + Send>>> {
        let remote = self.remote.as_ref()?;
        if ask {
            return Some(remote.ask(delivery()));
        }
        remote.publish(delivery());
        None
    }
}

/// Acks a message that went through, and remembers a transient one no device took
/// (for its retries).
fn answer(undelivered: &Undelivered, sub: Submission, seq: u64, ts: u64, delivered: bool) {
    let key = (sub.envelope.from_uuid, sub.envelope.packet_id.clone());
    if delivered {
        undelivered.lock().pop(&key);
    } else {
        undelivered.lock().put(key, ());
    }
    ack(sub.ack, &sub.envelope.packet_id, seq, ts, delivered);
}

/// Answers a send that went through.
fn ack(sink: AckSink, packet_id: &str, seq: u64, ts: u64, delivered: bool) {
    let frame = pb::ServerAck {
        packet_id: packet_id.to_owned(),
        sequence: seq,
        timestamp: ts,
        code: Status::Ok.code(),
        desc: if delivered {
            "ok".to_owned()
        } else {
            "no online device received it".to_owned()
        },
        delivered,
    };
    send_ack(sink, frame);
}

/// Queues a ServerAck on the sending device, or hands it to a waiting caller.
pub fn send_ack(sink: AckSink, frame: pb::ServerAck) {
    match sink {
        AckSink::Device(device) => {
            device.push(Outbound {
                seq: 0,
                frame: codec::encode(Kind::ServerAck(frame)),
            });
        }
        AckSink::Caller(tx) => {
            let _ = tx.send(frame);
        }
    }
}

impl std::fmt::Debug for Committed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committed").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use tokio::sync::oneshot;

    use super::*;
    use crate::hub::{DeviceHandle, DeviceQueue};

    fn submission(to_uuid: u64, persist: bool, ack: AckSink) -> Submission {
        Submission {
            envelope: crate::message::Envelope {
                app_id: 1,
                from_uuid: 1,
                from_account: "ann".into(),
                from_resource: "phone".into(),
                packet_id: "p1".into(),
                target: Target::User {
                    uuid: to_uuid,
                    account: "x".into(),
                    resource: None,
                    blocked: false,
                },
                biz_type: String::new(),
                payload: Bytes::from_static(b"hi"),
            },
            topic_snapshot: None,
            from_conn: None,
            persist,
            ack,
            inflight: None,
        }
    }

    #[tokio::test]
    async fn delivers_then_acks_in_order_and_remembers_undelivered_transients() {
        let hub = Arc::new(Hub::new());
        let queue = DeviceQueue::new(16, 1 << 20);
        let device = DeviceHandle::new(7, "phone".into(), queue.clone());
        hub.register(2, device).unwrap();
        let (stage, task) = start(hub.clone(), None);

        let (stored_tx, stored_rx) = oneshot::channel();
        let (lost_tx, lost_rx) = oneshot::channel();
        let (retry_tx, retry_rx) = oneshot::channel();
        let frame = Bytes::from_static(b"frame");
        stage
            .send(vec![
                // Stored, to user 2 who is online.
                Committed::Message {
                    sub: submission(2, true, AckSink::Caller(stored_tx)),
                    seq: 10,
                    ts: 1,
                    frame: frame.clone(),
                    topic: None,
                },
                // Transient, to user 3 who is not.
                Committed::Message {
                    sub: submission(3, false, AckSink::Caller(lost_tx)),
                    seq: 11,
                    ts: 1,
                    frame,
                    topic: None,
                },
                Committed::Retry {
                    sub: submission(3, false, AckSink::Caller(retry_tx)),
                    seq: 11,
                    ts: 1,
                },
            ])
            .await
            .unwrap();
        drop(stage);
        task.await.unwrap();

        let out = queue.take().await;
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].seq, 10);
        let stored = stored_rx.await.unwrap();
        assert_eq!((stored.sequence, stored.delivered), (10, true));
        let lost = lost_rx.await.unwrap();
        assert_eq!((lost.sequence, lost.delivered), (11, false));
        let retry = retry_rx.await.unwrap();
        assert_eq!((retry.sequence, retry.delivered), (11, false));
        assert_eq!(retry.desc, "no online device received it");
        // The ack of a device sender is a ServerAck frame in its queue.
        let queue = DeviceQueue::new(4, 1 << 20);
        let sender = DeviceHandle::new(8, "pad".into(), queue.clone());
        send_ack(AckSink::Device(sender), pb::ServerAck::default());
        let frame = queue.take().await[0].frame.clone();
        let kind = pb::Frame::decode(frame.as_ref()).unwrap().kind.unwrap();
        assert!(matches!(kind, Kind::ServerAck(_)));
    }

    /// What a cluster's other nodes were handed.
    #[derive(Default)]
    struct FakeRemote {
        published: parking_lot::Mutex<Vec<Delivery>>,
        asked: parking_lot::Mutex<Vec<Delivery>>,
        /// What the other nodes answer to an ask.
        answer: bool,
    }

    impl Remote for FakeRemote {
        fn publish(&self, delivery: Delivery) {
            self.published.lock().push(delivery);
        }

        fn ask(&self, delivery: Delivery) -> Pin<Box<dyn Future<Output = bool> + Send>> {
            self.asked.lock().push(delivery);
            let answer = self.answer;
            Box::pin(async move { answer })
        }
    }

    fn message(sub: Submission, seq: u64) -> Committed {
        Committed::Message {
            sub,
            seq,
            ts: 1,
            frame: Bytes::from_static(b"frame"),
            topic: None,
        }
    }

    #[tokio::test]
    async fn a_cluster_gets_each_delivery_once_per_destination_and_answers_transients() {
        let remote = Arc::new(FakeRemote {
            answer: true,
            ..FakeRemote::default()
        });
        let (stage, task) = start(Arc::new(Hub::new()), Some(remote.clone()));
        let (stored_tx, stored_rx) = oneshot::channel();
        let (typing_tx, typing_rx) = oneshot::channel();
        let (retry_tx, retry_rx) = oneshot::channel();
        let mut stored = submission(2, true, AckSink::Caller(stored_tx));
        stored.from_conn = Some(77);
        stage
            .send(vec![
                message(stored, 10),
                // Transient, to user 3: no device here; a device elsewhere takes it.
                message(submission(3, false, AckSink::Caller(typing_tx)), 11),
            ])
            .await
            .unwrap();
        let stored = stored_rx.await.unwrap();
        assert_eq!((stored.sequence, stored.delivered), (10, true));
        let typing = typing_rx.await.unwrap();
        assert!(typing.delivered, "the other nodes' answer: {typing:?}");
        // Its retry reports the same outcome.
        stage
            .send(vec![Committed::Retry {
                sub: submission(3, false, AckSink::Caller(retry_tx)),
                seq: 11,
                ts: 1,
            }])
            .await
            .unwrap();
        assert!(retry_rx.await.unwrap().delivered);
        drop(stage);
        task.await.unwrap();

        // The stored message: the recipient's subject and the sender's (its other
        // devices, not the sending connection), each once, with the sequence.
        let published = remote.published.lock();
        let to: Vec<(u64, u64, u64)> = published
            .iter()
            .map(|d| (d.uuid, d.except_conn, d.sequence))
            .collect();
        assert_eq!(to, [(2, 0, 10), (1, 77, 10), (1, 0, 0)]);
        // The transient went to user 3 as a question, sequence 0.
        let asked = remote.asked.lock();
        assert_eq!(asked.len(), 1);
        assert_eq!((asked[0].uuid, asked[0].sequence), (3, 0));
    }
}
