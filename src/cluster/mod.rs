//! Cluster mode: several identical nodes share one PostgreSQL database and one NATS
//! server (docs/cluster.md). This module owns everything that travels between
//! nodes; the store is already shared, so only what is live goes over NATS:
//!
//! - **Deliveries.** The fanout stage hands each committed (or online-only) message
//!   to [`Cluster`] once per destination — the recipient, the sender's other devices,
//!   the topic — and it is published on that destination's subject (`subject`). A
//!   node subscribes to a user's subject while it holds a device of that user, so a
//!   delivery reaches exactly the nodes with devices to take it. NATS does not echo a
//!   node's own messages back to it: its own devices were served by its hub.
//! - **Online-only answers.** A transient message no device of this node took is
//!   published as a request; a node whose devices took it answers with their count.
//! - **Kicks.** A login publishes a kick of its resource on the user's subject: the
//!   single-resource rule holds across nodes.
//! - **Invalidations.** Topic, blacklist and app changes tell the other nodes to
//!   read the entry again.
//! - **Heartbeats** every second carry each node's clock; a node whose clock is off
//!   by more than `cluster_overlap_ms` is warned about.
//! - **Resyncs.** After NATS was unreachable, or after another node dropped
//!   deliveries it could not publish, every device of this node reads its backlog
//!   again from its cursor (minus the overlap window) and deduplicates by sequence.
//!
//! Publishing never waits: deliveries go through a bounded queue
//! (`cluster_publish_queue`) to one publisher task. A NATS that is down fills it;
//! then deliveries are dropped (counted, logged) and the other nodes are told to
//! resync once NATS takes messages again. Local delivery never depends on NATS.

pub mod subject;

mod inbound;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::client::RequestErrorKind;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cluster_pb::{
    cluster_message::Kind, invalidate, Delivery, Heartbeat, Invalidate, Kick, Resync,
};
use crate::config::Config;
use crate::fanout::Remote;
use crate::state::AppState;
use subject::Subjects;

/// NATS messages published and dropped, by `kind`.
pub const PUBLISHED: &str = "courier_cluster_published_total";
/// Deliveries dropped because the publish queue was full (NATS down or slow).
pub const DROPPED: &str = "courier_cluster_dropped_total";
/// Deliveries received from other nodes.
pub const RECEIVED: &str = "courier_cluster_received_total";

/// How often a node publishes its heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Why the cluster could not be joined.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("nats_url {0:?} is not a NATS URL: {1}")]
    BadUrl(String, String),
}

/// This node's link to the others.
pub struct Cluster {
    client: async_nats::Client,
    node_id: u8,
    subjects: Subjects,
    /// (subject, payload) for the publisher task.
    outgoing: mpsc::Sender<(String, Bytes)>,
    /// Subscription changes for the inbound task.
    commands: mpsc::UnboundedSender<inbound::Command>,
    request_timeout: Duration,
    overlap_ms: u64,
    /// When the first delivery was dropped since the last resync request (Unix ms;
    /// 0: none).
    dropped_since: AtomicU64,
    /// Other nodes heard from lately (kept by the inbound task).
    live_peers: AtomicUsize,
}

/// What [`Cluster::start`] runs: the receiving ends of the cluster's channels.
pub struct Pending {
    /// NATS answered at start.
    connected: bool,
    /// The subscriptions every node has: all topics, control.
    shared: Vec<async_nats::Subscriber>,
    outgoing: mpsc::Receiver<(String, Bytes)>,
    commands: mpsc::UnboundedReceiver<inbound::Command>,
    events: mpsc::UnboundedReceiver<async_nats::Event>,
}

/// The cluster's running tasks.
#[derive(Debug)]
pub struct ClusterTasks {
    inbound: JoinHandle<()>,
    publisher: JoinHandle<()>,
}

impl ClusterTasks {
    /// Waits for the tasks after their stop token fired (the publisher first sends
    /// what is queued, for at most `grace`).
    pub async fn join(self, grace: Duration) {
        let inbound = self.inbound.abort_handle();
        if tokio::time::timeout(grace, self.inbound).await.is_err() {
            tracing::warn!("shutdown: cluster receiver did not stop in time");
            inbound.abort();
        }
        if tokio::time::timeout(grace, self.publisher).await.is_err() {
            tracing::warn!("shutdown: cluster publisher did not finish in time");
        }
    }
}

impl Cluster {
    /// Connects to NATS (in the background: a NATS that is down does not stop the
    /// node; it connects, and resyncs, when NATS is up).
    pub async fn connect(config: &Config) -> Result<(Arc<Cluster>, Pending), ClusterError> {
        let (events_tx, events) = mpsc::unbounded_channel();
        let request_timeout = Duration::from_millis(config.cluster_request_timeout_ms);
        let options = async_nats::ConnectOptions::new()
            .name(format!("courier node {}", config.node_id))
            .no_echo()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .request_timeout(Some(request_timeout))
            // A connection that went silent is noticed within ~10 s.
            .ping_interval(Duration::from_secs(5))
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((attempts as u64).saturating_mul(100).min(2000))
            })
            .event_callback(move |event| {
                let events_tx = events_tx.clone();
                async move {
                    let _ = events_tx.send(event);
                }
            });
        let addrs = config
            .nats_url
            .split(',')
            .map(|one| one.trim().parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ClusterError::BadUrl(redacted_url(&config.nats_url), e.to_string()))?;
        let client = options
            .connect(addrs)
            .await
            .map_err(|e| ClusterError::BadUrl(redacted_url(&config.nats_url), e.to_string()))?;
        let subjects = Subjects::new(&config.cluster_subject_prefix);
        let mut shared = Vec::new();
        for subject in [subjects.all_topics(), subjects.control()] {
            match client.subscribe(subject.clone()).await {
                Ok(subscriber) => shared.push(subscriber),
                Err(e) => tracing::error!(subject, error = %e, "cluster: cannot subscribe"),
            }
        }
        // Subscribed before serving, when NATS is up (else once it is).
        let connected = round_trip(&client, subjects.probe(config.node_id), request_timeout).await;
        if !connected {
            tracing::warn!(url = %redacted_url(&config.nats_url), "cluster: NATS is not reachable yet; serving this node's devices meanwhile");
        }
        let max_payload = client.server_info().max_payload;
        let largest = config.max_payload_bytes + 2048;
        if connected && max_payload < largest {
            tracing::error!(
                max_payload,
                largest,
                "cluster: NATS's max_payload is below the largest delivery (max_payload_bytes + 2 KiB); larger messages reach other nodes' devices only at their next login"
            );
        }
        let (outgoing_tx, outgoing) = mpsc::channel(config.cluster_publish_queue);
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let cluster = Arc::new(Cluster {
            client,
            node_id: config.node_id,
            subjects,
            outgoing: outgoing_tx,
            commands: commands_tx,
            request_timeout,
            overlap_ms: config.cluster_overlap_ms,
            dropped_since: AtomicU64::new(0),
            live_peers: AtomicUsize::new(0),
        });
        let pending = Pending {
            connected,
            shared,
            outgoing,
            commands,
            events,
        };
        Ok((cluster, pending))
    }

    /// Starts receiving and publishing; both stop when `stop` fires.
    pub fn start(
        self: &Arc<Self>,
        pending: Pending,
        state: Arc<AppState>,
        stop: CancellationToken,
    ) -> ClusterTasks {
        let inbound = inbound::Inbound::new(self.clone(), state, pending.connected);
        tokio::spawn(self.clone().heartbeat_loop(stop.clone()));
        let inbound = tokio::spawn(inbound.run(
            pending.shared,
            pending.commands,
            pending.events,
            stop.clone(),
        ));
        let publisher = tokio::spawn(self.clone().publish_loop(pending.outgoing, stop));
        ClusterTasks { inbound, publisher }
    }

    pub fn node_id(&self) -> u8 {
        self.node_id
    }

    /// How far (in sequence units) a login backlog reaches back before a cursor.
    pub fn overlap(&self) -> u64 {
        crate::sequence::span_of_ms(self.overlap_ms)
    }

    pub fn overlap_ms(&self) -> u64 {
        self.overlap_ms
    }

    /// Subscribes this node to `uuid`'s subject (one call per device logging in;
    /// [`Cluster::leave`] once per device leaving) and waits until NATS has it, so
    /// whatever another node publishes after this returns reaches this node. Gives
    /// up after `cluster_request_timeout_ms` (NATS down): the device is served from
    /// this node meanwhile, and resynced when NATS is back.
    /// Returns whether NATS confirmed in time; if not, the caller resyncs the device
    /// once it is logged in.
    pub async fn join(&self, uuid: u64) -> bool {
        let (done, subscribed) = oneshot::channel();
        if self
            .commands
            .send(inbound::Command::Join { uuid, done })
            .is_err()
        {
            return false;
        }
        // A round trip after the subscription: NATS has it.
        let confirmed = async {
            let _ = subscribed.await;
            let probe = self.subjects.probe(self.node_id);
            round_trip(&self.client, probe, self.request_timeout).await
        };
        let confirmed = matches!(
            tokio::time::timeout(self.request_timeout, confirmed).await,
            Ok(true)
        );
        if !confirmed {
            crate::log_limited!(
                warn,
                uuid,
                "cluster: NATS did not confirm a login's subscription in time; the device will be resynced"
            );
        }
        confirmed
    }

    /// The device that joined for `uuid` left.
    pub fn leave(&self, uuid: u64) {
        let _ = self.commands.send(inbound::Command::Leave { uuid });
    }

    /// A device of `resource` logged in here as connection `conn_id`: other nodes
    /// kick theirs.
    pub fn kick_elsewhere(&self, uuid: u64, resource: &str, conn_id: u64) {
        let kick = Kind::Kick(Kick {
            uuid,
            resource: resource.to_owned(),
            conn_id,
            account_expired: false,
        });
        self.enqueue(self.subjects.user(uuid), subject::encode(kick), "kick");
    }

    /// The account of `uuid` expired (or its app is gone): other nodes kick its
    /// devices too.
    pub fn kick_expired_elsewhere(&self, uuid: u64) {
        let kick = Kind::Kick(Kick {
            uuid,
            account_expired: true,
            ..Kick::default()
        });
        self.enqueue(self.subjects.user(uuid), subject::encode(kick), "kick");
    }

    /// Tells the other nodes to read a cached entry again, and waits until every
    /// node heard from lately has (at most `cluster_request_timeout_ms`): a change
    /// made through one node applies on all when the call that made it returns.
    pub async fn invalidate(&self, store: &dyn crate::store::Store, what: invalidate::What) {
        let all = self.invalidate_everywhere(store, what);
        if tokio::time::timeout(self.request_timeout * 2, all)
            .await
            .is_err()
        {
            crate::log_limited!(
                warn,
                "cluster: a cache invalidation was not confirmed in time (NATS or the store slow)"
            );
        }
    }

    async fn invalidate_everywhere(&self, store: &dyn crate::store::Store, what: invalidate::What) {
        let payload = subject::encode(Kind::Invalidate(Invalidate { what: Some(what) }));
        let control = self.subjects.control();
        // Every node with the store open (each holds its node-id lock there), or
        // at least those heard from.
        let holding = match store.live_nodes().await {
            Ok(nodes) => nodes.iter().filter(|&&n| n != self.node_id).count(),
            Err(e) => {
                crate::log_limited!(warn, error = %e, "cluster: cannot list the live nodes");
                0
            }
        };
        let expected = holding.max(self.live_peers.load(Ordering::Acquire));
        if expected == 0 {
            self.enqueue(control, payload, "invalidate");
            return;
        }
        let inbox = self.client.new_inbox();
        let answers = match self.client.subscribe(inbox.clone()).await {
            Ok(answers) => answers,
            Err(e) => {
                crate::log_limited!(warn, error = %e, "cluster: invalidation not confirmed");
                self.enqueue(control, payload, "invalidate");
                return;
            }
        };
        if let Err(e) = self
            .client
            .publish_with_reply(control, inbox, payload)
            .await
        {
            crate::log_limited!(warn, error = %e, "cluster: invalidation not published");
            return;
        }
        let confirmed = answers.take(expected).count();
        if tokio::time::timeout(self.request_timeout, confirmed)
            .await
            .is_err()
        {
            crate::log_limited!(
                warn,
                expected,
                "cluster: not every node confirmed a cache invalidation in time"
            );
        }
    }

    /// Queues a publication; a full queue drops it and marks a resync as owed.
    fn enqueue(&self, subject: String, payload: Bytes, kind: &'static str) {
        match self.outgoing.try_send((subject, payload)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.note_drop();
                metrics::counter!(DROPPED).increment(1);
                crate::log_limited!(
                    warn,
                    kind,
                    "cluster: publish queue full (NATS down or slow); dropped, other nodes will resync"
                );
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Publishes what is queued, in order, until `stop` (then what is left, briefly).
    /// Once the queue is empty after drops, asks the other nodes to resync.
    async fn publish_loop(
        self: Arc<Self>,
        mut outgoing: mpsc::Receiver<(String, Bytes)>,
        stop: CancellationToken,
    ) {
        loop {
            let next = tokio::select! {
                next = outgoing.recv() => next,
                _ = stop.cancelled() => break,
            };
            let Some((subject, payload)) = next else {
                return;
            };
            self.publish_now(subject, payload).await;
            // Once the queue drained, or a second after the first drop at the latest.
            let owed = self.dropped_since.load(Ordering::Acquire);
            let due = owed != 0
                && (outgoing.is_empty() || crate::time::now_ms() >= owed.saturating_add(1000));
            let since = match due {
                true => self.dropped_since.swap(0, Ordering::AcqRel),
                false => 0,
            };
            if since != 0 {
                tracing::warn!(
                    "cluster: deliveries were dropped; asking the other nodes to resync"
                );
                let resync = Kind::Resync(Resync {
                    node_id: u32::from(self.node_id),
                    since_unix_ms: since,
                });
                self.publish_now(self.subjects.control(), subject::encode(resync))
                    .await;
            }
        }
        while let Ok((subject, payload)) = outgoing.try_recv() {
            self.publish_now(subject, payload).await;
        }
        // Gone on purpose: the other nodes need not resync for this silence.
        let leaving = Kind::Heartbeat(Heartbeat {
            node_id: u32::from(self.node_id),
            unix_ms: crate::time::now_ms(),
            leaving: true,
        });
        self.publish_now(self.subjects.control(), subject::encode(leaving))
            .await;
        let _ = tokio::time::timeout(self.request_timeout, self.client.flush()).await;
    }

    async fn publish_now(&self, subject: String, payload: Bytes) {
        match self.client.publish(subject, payload).await {
            Ok(()) => metrics::counter!(PUBLISHED).increment(1),
            Err(e) => {
                self.note_drop();
                crate::log_limited!(warn, error = %e, "cluster: publish failed");
            }
        }
    }

    /// Publishes this node's heartbeat every [`HEARTBEAT`] until `stop` (its own
    /// task: a busy receiving side does not silence it).
    async fn heartbeat_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut beat = tokio::time::interval(HEARTBEAT);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = beat.tick() => {}
            }
            let beat = Kind::Heartbeat(Heartbeat {
                node_id: u32::from(self.node_id),
                unix_ms: crate::time::now_ms(),
                leaving: false,
            });
            self.enqueue(self.subjects.control(), subject::encode(beat), "heartbeat");
        }
    }

    /// Asks the other nodes to resync their devices back to `since_ms` (this node
    /// may have lost publications: it was cut off from NATS).
    fn ask_resync(&self, since_ms: u64) {
        let resync = Kind::Resync(Resync {
            node_id: u32::from(self.node_id),
            since_unix_ms: since_ms,
        });
        self.enqueue(self.subjects.control(), subject::encode(resync), "resync");
    }

    /// Remembers when deliveries started to be dropped.
    fn note_drop(&self) {
        let _ = self.dropped_since.compare_exchange(
            0,
            crate::time::now_ms().max(1),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// The sequence a resync reaches back to when what was published after
    /// `since_ms` (Unix ms) may have been missed: the overlap window before it
    /// (commit latency, clocks).
    fn reach_back(&self, since_ms: u64) -> u64 {
        crate::sequence::floor_at(since_ms.saturating_sub(self.overlap_ms))
    }

    fn delivery_subject(&self, delivery: &Delivery) -> String {
        if delivery.topic_id != 0 {
            self.subjects.topic(delivery.topic_id)
        } else {
            self.subjects.user(delivery.uuid)
        }
    }
}

impl Remote for Cluster {
    fn publish(&self, mut delivery: Delivery) {
        delivery.origin = Some(u32::from(self.node_id));
        let subject = self.delivery_subject(&delivery);
        self.enqueue(
            subject,
            subject::encode(Kind::Delivery(delivery)),
            "delivery",
        );
    }

    fn ask(&self, mut delivery: Delivery) -> Pin<Box<dyn Future<Output = bool> + Send>> {
        delivery.origin = Some(u32::from(self.node_id));
        let subject = self.delivery_subject(&delivery);
        let payload = subject::encode(Kind::Delivery(delivery));
        let client = self.client.clone();
        let limit = self.request_timeout;
        Box::pin(async move {
            match tokio::time::timeout(limit, client.request(subject, payload)).await {
                Ok(Ok(answer)) => matches!(
                    subject::decode(answer.payload),
                    Ok(Kind::Reached(r)) if r.devices > 0
                ),
                // Nobody holds a device of that user (or topic): not delivered.
                Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => false,
                // Nodes hold devices but none took it, or NATS is down.
                Ok(Err(_)) | Err(_) => false,
            }
        })
    }
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// Whether NATS answers within `limit`: a request on `probe`, which nobody
/// subscribes to, is answered by NATS itself ("no responders") after everything this
/// connection sent before it.
async fn round_trip(client: &async_nats::Client, probe: String, limit: Duration) -> bool {
    let answered = async {
        match client.request(probe, Bytes::new()).await {
            Ok(_) => true,
            Err(e) => e.kind() == RequestErrorKind::NoResponders,
        }
    };
    matches!(tokio::time::timeout(limit, answered).await, Ok(true))
}

/// `url` without credentials, for logs and the start banner.
pub fn redacted_url(url: &str) -> String {
    url.split(',')
        .map(|one| match (one.find("://"), one.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}{}", &one[..scheme + 3], &one[at + 1..])
            }
            (None, Some(at)) => one[at + 1..].to_owned(),
            _ => one.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            super::redacted_url("nats://u:p@10.0.0.1:4222,nats://h2:4222"),
            "nats://10.0.0.1:4222,nats://h2:4222"
        );
        assert_eq!(super::redacted_url("tok@h:4222"), "h:4222");
        assert_eq!(super::redacted_url("nats://h:4222"), "nats://h:4222");
    }
}
