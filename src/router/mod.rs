//! The send path: dedup → sequence → persist (group commit) → ack → deliver.
//!
//! Sessions and the push API hand [`Submission`]s to the [`Router`] through a bounded
//! queue. One commit loop takes everything queued (up to `commit_batch_max`), assigns
//! sequences, answers retries from the dedup cache and hands the batch to the store,
//! which commits it (with whatever else is queued) in one transaction. Up to
//! [`MAX_BATCHES_IN_FLIGHT`] batches are handed over before the oldest commits;
//! their results are taken strictly in order, and only then does each batch go, in
//! that order, to the fanout stage (`crate::fanout`), which queues the delivery frame
//! — encoded once — on every device concerned and acks the senders. Sequences are
//! assigned in that same order, so every device's queue receives its timeline in
//! sequence order, and an ack never precedes durability.

pub use crate::sequence;

mod callbacks;

use std::collections::HashSet;
use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{FuturesOrdered, StreamExt};
use lru::LruCache;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::callbacks::OutboxFeed;
use crate::directory::{Directory, TopicLookup, TopicView};
use crate::fanout::{self, Committed, Fanout};
use crate::pb::{self, frame::Kind};
use crate::protocol::{codec, Status};
use crate::store::{AppendOutcome, NewCallback, NewMessage, Store};
use crate::time::now_ms;
pub use sequence::Sequencer;

pub use crate::message::Target;
pub use crate::submission::{AckSink, Submission};

/// Why a submission was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// The submission of `packet_id` was not taken.
    #[error("router is shut down")]
    Closed { packet_id: String },
}

/// Commit-loop settings.
#[derive(Debug, Clone, Copy)]
pub struct RouterConfig {
    pub node_id: u8,
    pub queue: usize,
    pub commit_batch_max: usize,
    pub dedup_cache: usize,
}

/// Handle to the commit loop.
#[derive(Clone)]
pub struct Router {
    tx: mpsc::Sender<Submission>,
    last_seq: Arc<AtomicU64>,
}

impl Router {
    /// Starts the commit loop. It stops after `stop` fires and the queue is drained.
    pub async fn start(
        config: RouterConfig,
        store: Arc<dyn Store>,
        fanout: Arc<dyn Fanout>,
        remote: Option<Arc<dyn fanout::Remote>>,
        directory: Arc<Directory>,
        outbox: Arc<OutboxFeed>,
        stop: CancellationToken,
    ) -> Result<(Router, tokio::task::JoinHandle<()>), crate::store::StoreError> {
        let last = store
            .max_sequence()
            .await?
            .max(sequence::floor_at(now_ms()));
        let last_seq = Arc::new(AtomicU64::new(last));
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let (fanout_tx, fanout_task) = fanout::start(fanout.clone(), remote);
        let commit = CommitLoop {
            store,
            fanout: fanout_tx,
            presence: fanout,
            outbox,
            directory,
            last_seq: last_seq.clone(),
            sequencer: Sequencer::new(config.node_id, last),
            dedup: LruCache::new(
                NonZeroUsize::new(config.dedup_cache.max(1)).unwrap_or(NonZeroUsize::MIN),
            ),
            batch_max: config.commit_batch_max.max(1),
            failed_seqs: HashSet::new(),
        };
        // The commit loop ends by dropping its side of the fanout channel; the stage
        // then finishes what it was given.
        let task = tokio::spawn(async move {
            commit.run(rx, stop).await;
            if let Err(e) = fanout_task.await {
                tracing::error!(error = %e, "fanout stage failed");
            }
        });
        Ok((Router { tx, last_seq }, task))
    }

    /// The highest sequence assigned so far. A membership change made now takes
    /// effect for sequences after it.
    pub fn last_sequence(&self) -> u64 {
        self.last_seq.load(Ordering::Acquire)
    }

    /// Queues a message; waits while the queue is full (backpressure).
    pub async fn submit(&self, sub: Submission) -> Result<(), RouterError> {
        self.tx.send(sub).await.map_err(|e| RouterError::Closed {
            packet_id: e.0.envelope.packet_id,
        })
    }
}

struct CommitLoop {
    store: Arc<dyn Store>,
    /// Committed batches, in commit order, to the fanout stage.
    fanout: mpsc::Sender<Vec<Committed>>,
    /// Who is online, for the callback kind (`callbacks`).
    presence: Arc<dyn Fanout>,
    /// Gets the callbacks of each commit.
    outbox: Arc<OutboxFeed>,
    directory: Arc<Directory>,
    /// Published copy of the sequencer's last value.
    last_seq: Arc<AtomicU64>,
    sequencer: Sequencer,
    /// (sender uuid, packetId) → (sequence, timestamp) of recent sends.
    dedup: LruCache<(u64, String), (u64, u64)>,
    batch_max: usize,
    /// Sequences of batches whose commit failed while later batches were in flight,
    /// so retries planned against them are not acked as stored.
    failed_seqs: HashSet<u64>,
}

/// A batch whose append is under way, with its plans.
type InFlight = Pin<
    Box<
        dyn Future<
                Output = (
                    Vec<Planned>,
                    Result<Vec<AppendOutcome>, crate::store::StoreError>,
                ),
            > + Send,
    >,
>;

/// Batches handed to the store before the oldest has committed. Lets the next batch
/// wait in the writer's queue while the current one commits, instead of being formed
/// only after it.
const MAX_BATCHES_IN_FLIGHT: usize = 4;

/// A submission with its fate decided before the commit.
enum Planned {
    /// New: written in this batch (index into the append) or transient.
    New {
        sub: Submission,
        seq: u64,
        ts: u64,
        frame: Bytes,
        append_index: Option<usize>,
        /// The topic's members when it was sent (topic messages only).
        topic: Option<Arc<TopicView>>,
    },
    /// A retry of a recent send.
    Retry { sub: Submission, seq: u64, ts: u64 },
}

impl CommitLoop {
    async fn run(mut self, mut rx: mpsc::Receiver<Submission>, stop: CancellationToken) {
        let mut batch = Vec::with_capacity(self.batch_max);
        let mut in_flight: FuturesOrdered<InFlight> = FuturesOrdered::new();
        let mut stopping = false;
        let mut drained = false;
        loop {
            tokio::select! {
                biased;
                Some((plans, outcomes)) = in_flight.next(), if !in_flight.is_empty() => {
                    let committed = self.finish(plans, outcomes);
                    if in_flight.is_empty() {
                        self.failed_seqs.clear();
                    }
                    // Waits only while the stage is FANOUT_QUEUE_BATCHES behind.
                    if self.fanout.send(committed).await.is_err() {
                        tracing::error!("fanout stage is gone; committed batch not delivered");
                    }
                }
                n = rx.recv_many(&mut batch, self.batch_max),
                    if !drained && in_flight.len() < MAX_BATCHES_IN_FLIGHT =>
                {
                    if n == 0 {
                        drained = true;
                        continue;
                    }
                    self.outbox.note_batch(n);
                    let (plans, to_store, callbacks) = self.plan(&mut batch);
                    let store = self.store.clone();
                    let outbox = self.outbox.clone();
                    in_flight.push_back(Box::pin(async move {
                        let outcomes = if to_store.is_empty() {
                            Ok(Vec::new())
                        } else if callbacks.is_empty() {
                            store.append(to_store).await
                        } else {
                            let fresh = callbacks::pending(&to_store, &callbacks);
                            let outcomes = store.append_with_callbacks(to_store, callbacks).await;
                            if let Ok(outcomes) = &outcomes {
                                outbox.offer(callbacks::committed(fresh, outcomes));
                            }
                            outcomes
                        };
                        (plans, outcomes)
                    }));
                }
                _ = stop.cancelled(), if !stopping => {
                    // Refuse new work, finish what is queued.
                    rx.close();
                    stopping = true;
                }
                else => break,
            }
            if drained && in_flight.is_empty() {
                break;
            }
        }
    }

    /// Decides each submission's fate and assigns sequences, before the commit.
    fn plan(
        &mut self,
        batch: &mut Vec<Submission>,
    ) -> (Vec<Planned>, Vec<NewMessage>, Vec<NewCallback>) {
        let now = now_ms();
        let mut plans = Vec::with_capacity(batch.len());
        let mut to_store = Vec::new();
        let mut callbacks = Vec::new();
        for sub in batch.drain(..) {
            let key = (sub.envelope.from_uuid, sub.envelope.packet_id.clone());
            if let Some(&(seq, ts)) = self.dedup.get(&key) {
                plans.push(Planned::Retry { sub, seq, ts });
                continue;
            }
            // Publish the sequence before reading the topic's members: a membership
            // change that reads `last_sequence` after this sees it, so a member added
            // concurrently starts after it (or got it live), never in between.
            let seq = self.sequencer.next(now);
            // The message's time is its sequence's millisecond: time order and
            // sequence order agree, so history reads a time range as a sequence range.
            let ts = crate::sequence::time_of(seq);
            self.last_seq.store(seq, Ordering::Release);
            let topic = if sub.envelope.topic_id().is_none() {
                None
            } else {
                match self.check_topic(&sub) {
                    Ok(view) => Some(view),
                    Err((code, desc)) => {
                        refuse(sub, code, desc);
                        continue;
                    }
                }
            };
            self.dedup.put(key, (seq, ts));
            let deliver = sub.envelope.to_deliver(seq, ts, !sub.persist);
            let frame = codec::encode(Kind::Deliver(deliver));
            let append_index = if sub.persist {
                to_store.push(sub.sequenced(seq, ts));
                let index = to_store.len() - 1;
                let wants_callbacks = self
                    .directory
                    .cached_app(sub.envelope.app_id)
                    .is_some_and(|app| app.settings.callback_url.is_some());
                if wants_callbacks {
                    let presence = self.presence.as_ref();
                    callbacks.extend(callbacks::plan(presence, &sub, topic.as_deref(), index));
                }
                Some(index)
            } else {
                None
            };
            plans.push(Planned::New {
                sub,
                seq,
                ts,
                frame,
                append_index,
                topic,
            });
        }
        (plans, to_store, callbacks)
    }

    /// After the commit (in commit order): what the fanout stage delivers and acks.
    fn finish(
        &mut self,
        plans: Vec<Planned>,
        outcomes: Result<Vec<AppendOutcome>, crate::store::StoreError>,
    ) -> Vec<Committed> {
        let mut committed = Vec::with_capacity(plans.len());
        let failure = match &outcomes {
            Ok(_) => None,
            Err(e) => {
                tracing::error!(error = %e, "router: append failed; senders get an error ack");
                for plan in &plans {
                    if let Planned::New {
                        seq,
                        append_index: Some(_),
                        ..
                    } = plan
                    {
                        self.failed_seqs.insert(*seq);
                    }
                }
                Some(e.to_string())
            }
        };

        for plan in plans {
            match plan {
                Planned::Retry { sub, seq, ts } => {
                    // The original was finished before this retry (same or earlier
                    // batch): its final outcome is now in the cache (the store may
                    // have answered with an older sequence).
                    let (seq, ts) = self
                        .dedup
                        .peek(&(sub.envelope.from_uuid, sub.envelope.packet_id.clone()))
                        .copied()
                        .unwrap_or((seq, ts));
                    if self.failed_seqs.contains(&seq) {
                        committed.push(self.fail(sub, seq, "the original send failed; retry"));
                        continue;
                    }
                    committed.push(Committed::Retry { sub, seq, ts });
                }
                Planned::New {
                    sub,
                    seq,
                    ts,
                    frame,
                    append_index,
                    topic,
                } => {
                    let outcome = match (&outcomes, append_index) {
                        (Ok(out), Some(i)) => out.get(i).copied(),
                        (Ok(_), None) => None,
                        (Err(_), Some(_)) => {
                            let desc = failure.as_deref().unwrap_or("store error").to_owned();
                            committed.push(self.fail(sub, seq, &desc));
                            continue;
                        }
                        (Err(_), None) => None,
                    };
                    match outcome {
                        Some(AppendOutcome::Duplicate { seq, ts }) => {
                            // Retried after a restart: the store had it.
                            self.dedup.put(
                                (sub.envelope.from_uuid, sub.envelope.packet_id.clone()),
                                (seq, ts),
                            );
                            committed.push(Committed::Retry { sub, seq, ts });
                        }
                        Some(AppendOutcome::Stored) | None => {
                            committed.push(Committed::Message {
                                sub,
                                seq,
                                ts,
                                frame,
                                topic,
                            });
                        }
                    }
                }
            }
        }
        committed
    }

    /// The topic of a topic message, if the sender may send there.
    fn check_topic(&self, sub: &Submission) -> Result<Arc<TopicView>, (Status, String)> {
        let Some(topic_id) = sub.envelope.topic_id() else {
            return Err((Status::BadRequest, "not a topic message".into()));
        };
        let view = match self
            .directory
            .current_topic(topic_id, sub.topic_snapshot.as_ref())
        {
            TopicLookup::Current(view) => view,
            TopicLookup::Unknown => {
                return Err((Status::NotFound, format!("unknown topic {topic_id}")))
            }
            TopicLookup::Stale => {
                return Err((
                    Status::Unavailable,
                    format!("topic {topic_id} changed while sending; retry"),
                ))
            }
        };
        if view.topic.app_id != sub.envelope.app_id {
            return Err((Status::NotFound, format!("unknown topic {topic_id}")));
        }
        if view.topic.dismissed {
            return Err((Status::NotFound, format!("topic {topic_id} was dismissed")));
        }
        if !view.is_member(sub.envelope.from_uuid) {
            return Err((
                Status::Forbidden,
                format!("not a member of topic {topic_id}"),
            ));
        }
        Ok(view)
    }

    /// The answer to a send that cannot go through and is not remembered for dedup.
    fn fail(&mut self, sub: Submission, seq: u64, desc: &str) -> Committed {
        // Forget it so a retry is attempted for real — unless the cache already
        // holds a newer attempt of the same packet.
        let key = (sub.envelope.from_uuid, sub.envelope.packet_id.clone());
        if self.dedup.peek(&key).is_some_and(|entry| entry.0 == seq) {
            self.dedup.pop(&key);
        }
        let ack = error_ack(&sub, Status::Internal, format!("not stored: {desc}"));
        Committed::Answer { sub, ack }
    }
}

/// Answers a refused send (not a member, unknown topic) with an error ack.
fn refuse(sub: Submission, status: Status, desc: String) {
    let ack = error_ack(&sub, status, desc);
    fanout::send_ack(sub.ack, ack);
}

/// The ServerAck of a send that was not stored: no sequence, not delivered.
fn error_ack(sub: &Submission, status: Status, desc: String) -> pb::ServerAck {
    pb::ServerAck {
        packet_id: sub.envelope.packet_id.clone(),
        sequence: 0,
        timestamp: now_ms(),
        code: status.code(),
        desc,
        delivered: false,
    }
}

/// Converts a stored message to its delivery record.
pub fn stored_to_deliver(m: crate::store::StoredMessage) -> pb::Deliver {
    m.to_deliver()
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").finish_non_exhaustive()
    }
}

/// The router's failure paths, on the in-memory store with injected faults: a failed
/// commit, a retry after it, and shutdown with sends still queued.
#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering as AtomicOrdering;

    use tokio::sync::oneshot;

    use super::*;
    use crate::hub::Hub;
    use crate::protocol::codes;
    use crate::store::faulty::FaultyStore;
    use crate::store::memory::MemoryStore;
    use crate::store::MessageStore;

    struct Fixture {
        router: Router,
        task: tokio::task::JoinHandle<()>,
        stop: CancellationToken,
        store: Arc<FaultyStore>,
    }

    async fn fixture() -> Fixture {
        let store = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new())));
        let directory = Arc::new(Directory::new(
            store.clone(),
            16,
            16,
            crate::clock::Clock::default(),
        ));
        let stop = CancellationToken::new();
        let config = RouterConfig {
            node_id: 0,
            queue: 64,
            commit_batch_max: 16,
            dedup_cache: 64,
        };
        let (router, task) = Router::start(
            config,
            store.clone(),
            Arc::new(Hub::new()),
            None,
            directory,
            OutboxFeed::new(),
            stop.clone(),
        )
        .await
        .unwrap();
        Fixture {
            router,
            task,
            stop,
            store,
        }
    }

    fn send(packet_id: &str) -> (Submission, oneshot::Receiver<pb::ServerAck>) {
        let (tx, rx) = oneshot::channel();
        let sub = Submission {
            envelope: crate::message::Envelope {
                app_id: 1,
                from_uuid: 1,
                from_account: "ann".into(),
                from_resource: "phone".into(),
                packet_id: packet_id.into(),
                target: Target::User {
                    uuid: 2,
                    account: "ben".into(),
                    resource: None,
                    blocked: false,
                },
                biz_type: String::new(),
                payload: Bytes::from_static(b"hi"),
            },
            topic_snapshot: None,
            from_conn: None,
            persist: true,
            ack: AckSink::Caller(tx),
            inflight: None,
        };
        (sub, rx)
    }

    #[tokio::test]
    async fn a_failed_commit_answers_500_and_its_retry_is_stored_for_real() {
        let f = fixture().await;
        f.store.faults.append.store(true, AtomicOrdering::SeqCst);
        let (sub, rx) = send("p1");
        f.router.submit(sub).await.unwrap();
        let ack = rx.await.unwrap();
        assert_eq!((ack.code, ack.sequence), (codes::INTERNAL, 0));
        assert!(ack.desc.starts_with("not stored"), "{}", ack.desc);

        // The failure was not remembered for dedup: the retry is stored.
        f.store.faults.append.store(false, AtomicOrdering::SeqCst);
        let (sub, rx) = send("p1");
        f.router.submit(sub).await.unwrap();
        let ack = rx.await.unwrap();
        assert_eq!(ack.code, codes::OK);
        assert!(ack.sequence > 0);
        let stored = f.store.max_sequence().await.unwrap();
        assert_eq!(stored, ack.sequence);
        // A second retry now is a duplicate: the same sequence, nothing stored again.
        let (sub, rx) = send("p1");
        f.router.submit(sub).await.unwrap();
        assert_eq!(rx.await.unwrap().sequence, ack.sequence);
    }

    #[tokio::test]
    async fn shutdown_mid_batch_answers_every_queued_send() {
        let f = fixture().await;
        let mut acks = Vec::new();
        for i in 0..50 {
            let (sub, rx) = send(&format!("s{i}"));
            f.router.submit(sub).await.unwrap();
            acks.push(rx);
        }
        f.stop.cancel();
        let mut sequences = Vec::new();
        for rx in acks {
            let ack = rx.await.expect("every queued send is answered");
            assert_eq!(ack.code, codes::OK);
            sequences.push(ack.sequence);
        }
        f.task.await.unwrap();
        // In order, all stored.
        assert!(sequences.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            f.store.max_sequence().await.unwrap(),
            *sequences.last().unwrap()
        );
        // After shutdown the router refuses new work with the packet id.
        let (sub, _rx) = send("late");
        match f.router.submit(sub).await {
            Err(RouterError::Closed { packet_id }) => assert_eq!(packet_id, "late"),
            Ok(()) => panic!("a stopped router took a send"),
        }
    }
}
