//! The receiving side of a node: its NATS subscriptions (one per user it holds a
//! device of, counted per device; all topics; control) and what it does with what
//! arrives — queue deliveries on its devices, answer online-only requests, kick,
//! drop cached entries, check clocks, resync — plus its heartbeat and the NATS
//! connection's events. One task, so subscription changes never race each other.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{SelectAll, TakeUntil};
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::subject::{self, Subjects};
use super::{Cluster, RECEIVED};
use crate::cluster_pb::{cluster_message::Kind, invalidate, Delivery, Heartbeat, Reached};
use crate::fanout::{self, Fanout};
use crate::hub::{Audience, Outbound};
use crate::state::AppState;
use crate::time::now_ms;

/// How often this node checks for silent peers.
const PEER_CHECK: Duration = Duration::from_secs(1);

/// A node not heard from for this long is taken for lost: it may have committed
/// messages it never published, so this node's devices resync.
const PEER_LOST: Duration = Duration::from_secs(3);

/// Sequences are below 2^53 (`crate::sequence`); [`crate::hub::RESYNC`] is above.
const MAX_SEQUENCE: u64 = 1 << 53;

/// A subscription change, from the connections of this node.
pub(super) enum Command {
    /// A device of `uuid` logged in; `done` once the subscription is asked for.
    Join {
        uuid: u64,
        done: oneshot::Sender<()>,
    },
    /// A device of `uuid` that joined is gone.
    Leave { uuid: u64 },
}

/// A subscription that ends when its stop sender is dropped or fires.
type Feed = TakeUntil<async_nats::Subscriber, oneshot::Receiver<()>>;

pub(super) struct Inbound {
    cluster: Arc<Cluster>,
    state: Arc<AppState>,
    subjects: Subjects,
    /// Per user: devices here that joined, and the stop of its subscription (none
    /// if subscribing failed).
    users: HashMap<u64, (usize, Option<oneshot::Sender<()>>)>,
    /// Stops of the topic and control subscriptions (kept for the task's life).
    shared: Vec<oneshot::Sender<()>>,
    feeds: SelectAll<Feed>,
    /// When NATS went away (Unix ms), until it is back.
    disconnected_at: Option<u64>,
    /// When anything last came from NATS (Unix ms): a connection that died silently
    /// is noticed late, but nothing came after this.
    last_heard_ms: u64,
    /// Other nodes heard from: the clock of their last heartbeat, and when it came.
    peers: HashMap<u32, (u64, Instant)>,
}

impl Inbound {
    pub(super) fn new(cluster: Arc<Cluster>, state: Arc<AppState>, connected: bool) -> Self {
        let now = now_ms();
        Inbound {
            // Not connected at start: the first connect resyncs (devices may log
            // in meanwhile).
            disconnected_at: (!connected).then_some(now),
            last_heard_ms: now,
            subjects: cluster.subjects.clone(),
            cluster,
            state,
            users: HashMap::new(),
            shared: Vec::new(),
            feeds: SelectAll::new(),
            peers: HashMap::new(),
        }
    }

    pub(super) async fn run(
        mut self,
        shared: Vec<async_nats::Subscriber>,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut events: mpsc::UnboundedReceiver<async_nats::Event>,
        stop: CancellationToken,
    ) {
        for subscriber in shared {
            let (stop, stopped) = oneshot::channel();
            self.feeds.push(subscriber.take_until(stopped));
            self.shared.push(stop);
        }
        let mut check = tokio::time::interval(PEER_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                Some(command) = commands.recv() => self.command(command).await,
                Some(event) = events.recv() => self.event(event),
                Some(msg) = self.feeds.next(), if !self.feeds.is_empty() => self.dispatch(msg).await,
                _ = check.tick() => self.forget_lost_peers(),
            }
        }
    }

    async fn subscribe(&mut self, subject: String) -> Option<oneshot::Sender<()>> {
        match self.cluster.client.subscribe(subject).await {
            Ok(subscriber) => {
                let (stop, stopped) = oneshot::channel();
                self.feeds.push(subscriber.take_until(stopped));
                Some(stop)
            }
            Err(e) => {
                crate::log_limited!(warn, error = %e, "cluster: subscribe failed");
                None
            }
        }
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Join { uuid, done } => {
                if let Some((devices, _)) = self.users.get_mut(&uuid) {
                    *devices += 1;
                } else {
                    let stop = self.subscribe(self.subjects.user(uuid)).await;
                    self.users.insert(uuid, (1, stop));
                }
                let _ = done.send(());
            }
            Command::Leave { uuid } => {
                if let Some((devices, _)) = self.users.get_mut(&uuid) {
                    *devices -= 1;
                    if *devices == 0 {
                        // Dropping the stop ends the feed; the subscriber, dropped,
                        // unsubscribes.
                        self.users.remove(&uuid);
                    }
                }
            }
        }
    }

    fn event(&mut self, event: async_nats::Event) {
        match event {
            async_nats::Event::Disconnected => {
                // Nothing came after the last message heard: reach back to it.
                let heard = self.last_heard_ms;
                self.disconnected_at.get_or_insert(heard);
                tracing::warn!(
                    "cluster: NATS connection lost; serving this node's devices, reconnecting"
                );
            }
            async_nats::Event::Connected => {
                if let Some(at) = self.disconnected_at.take() {
                    let now = Instant::now();
                    self.peers.values_mut().for_each(|(_, heard)| *heard = now);
                    // Twice the window: other nodes' clocks, then their commits.
                    let from = self
                        .cluster
                        .reach_back(at.saturating_sub(self.cluster.overlap_ms));
                    let n = self.state.hub.resync_all(from);
                    // What this node published meanwhile may be lost too.
                    self.cluster.ask_resync(at);
                    tracing::info!(
                        devices = n,
                        "cluster: NATS reconnected; resyncing this node's devices from the store"
                    );
                } else {
                    tracing::info!("cluster: connected to NATS");
                }
            }
            async_nats::Event::SlowConsumer(_) => {
                // NATS dropped messages of a subscription this node did not read in
                // time: its devices read their backlog again.
                let from = self.cluster.reach_back(now_ms());
                let n = self.state.hub.resync_all(from);
                crate::log_limited!(
                    warn,
                    devices = n,
                    "cluster: this node fell behind NATS and lost messages; resyncing its devices"
                );
            }
            other => crate::log_limited!(warn, event = %other, "cluster: NATS event"),
        }
    }

    async fn dispatch(&mut self, msg: async_nats::Message) {
        self.last_heard_ms = now_ms();
        let kind = match subject::decode(msg.payload) {
            Ok(kind) => kind,
            Err(e) => {
                crate::log_limited!(warn, subject = %msg.subject, error = %e, "cluster: message ignored");
                return;
            }
        };
        match kind {
            Kind::Delivery(delivery) if delivery.sequence >= MAX_SEQUENCE => {
                crate::log_limited!(warn, subject = %msg.subject, "cluster: delivery with an impossible sequence ignored");
            }
            Kind::Delivery(delivery) => {
                metrics::counter!(RECEIVED).increment(1);
                if let Some(origin) = delivery.origin {
                    // Its sequence's time is on its clock, like a heartbeat's.
                    let clock = (delivery.sequence != 0)
                        .then(|| crate::sequence::time_of(delivery.sequence));
                    self.heard_from(origin, clock);
                }
                let n = self.deliver_counted(&delivery).await;
                if let (Some(reply), true) = (msg.reply, n > 0) {
                    let answer = subject::encode(Kind::Reached(Reached { devices: n as u64 }));
                    let client = self.cluster.client.clone();
                    // Not awaited here: a full NATS buffer must not stall receiving.
                    tokio::spawn(async move {
                        if let Err(e) = client.publish(reply, answer).await {
                            crate::log_limited!(warn, error = %e, "cluster: answer failed");
                        }
                    });
                }
            }
            Kind::Kick(kick) if kick.account_expired => self
                .state
                .hub
                .kick_user(kick.uuid, crate::protocol::KickReason::AccountExpired),
            Kind::Kick(kick) => {
                self.state
                    .hub
                    .kick_resource(kick.uuid, &kick.resource, kick.conn_id)
            }
            Kind::Invalidate(inv) => self.invalidate(inv.what, msg.reply),
            Kind::Heartbeat(beat) => self.heartbeat(beat),
            Kind::Resync(r) => {
                let n = self
                    .state
                    .hub
                    .resync_all(self.cluster.reach_back(r.since_unix_ms));
                tracing::info!(
                    node = r.node_id,
                    devices = n,
                    "cluster: a node dropped deliveries; resyncing this node's devices"
                );
            }
            // Answers go to request inboxes, not to these subscriptions.
            Kind::Reached(_) => {}
        }
    }

    /// Queues a delivery on this node's devices; returns how many took it (for a
    /// probe: how many are online).
    async fn deliver(&self, d: &Delivery) -> usize {
        let hub = self.state.hub.as_ref();
        let out = Outbound {
            seq: d.sequence,
            frame: d.frame.clone(),
        };
        let except_conn = (d.except_conn != 0).then_some(d.except_conn);
        if d.topic_id == 0 {
            let audience = Audience {
                except_conn,
                only_resource: d.only_resource.as_deref(),
            };
            return if d.probe {
                hub.online(d.uuid, audience)
            } else {
                hub.to_user(d.uuid, audience, &out)
            };
        }
        let view = match self.state.directory.topic(d.topic_id).await {
            Ok(Some(view)) => view,
            Ok(None) => return 0,
            Err(e) => {
                crate::log_limited!(warn, topic = d.topic_id, error = %e, "cluster: topic delivery dropped: store unavailable; resyncing this node's devices");
                let since = crate::sequence::time_of(d.sequence.max(1));
                self.state.hub.resync_all(self.cluster.reach_back(since));
                return 0;
            }
        };
        fanout::to_members(hub, &view.topic.members, d.from_uuid, except_conn, &out)
    }

    /// Queues a delivery here, counted like the fanout stage's.
    async fn deliver_counted(&self, d: &Delivery) -> usize {
        let n = self.deliver(d).await;
        if !d.probe {
            metrics::counter!(crate::telemetry::DELIVERIES).increment(n as u64);
        }
        n
    }

    /// Reads a changed entry again (in a task of its own: it reads the store), then
    /// confirms to the node that changed it.
    fn invalidate(&self, what: Option<invalidate::What>, reply: Option<async_nats::Subject>) {
        let state = self.state.clone();
        let client = self.cluster.client.clone();
        tokio::spawn(async move {
            match what {
                Some(invalidate::What::TopicId(topic_id)) => {
                    match state.directory.refresh_topic(topic_id).await {
                        Ok(Some(view)) => state.topics.announce(crate::topics::TopicChanged {
                            topic_id,
                            version: view.topic.version,
                        }),
                        Ok(None) => {}
                        Err(e) => {
                            crate::log_limited!(warn, topic_id, error = %e, "cluster: topic refresh failed");
                        }
                    }
                }
                Some(invalidate::What::BlacklistOwner(owner)) => state.blacklists.forget(owner),
                Some(invalidate::What::AppId(app_id)) => {
                    if let Err(e) = state.directory.reload_app(app_id).await {
                        crate::log_limited!(warn, app_id, error = %e, "cluster: app reload failed");
                    }
                }
                None => {}
            }
            if let Some(reply) = reply {
                let done = subject::encode(Kind::Reached(Reached { devices: 0 }));
                if let Err(e) = client.publish(reply, done).await {
                    crate::log_limited!(warn, error = %e, "cluster: invalidation answer failed");
                }
            }
        });
    }

    /// Resyncs this node's devices for each node not heard from for [`PEER_LOST`]:
    /// back to its last heartbeat (everything it queued before that heartbeat was
    /// published before it; the window covers its commits under way).
    fn forget_lost_peers(&mut self) {
        if self.disconnected_at.is_some() {
            // Nobody is heard while NATS is away; the reconnect resyncs.
            return;
        }
        let lost: Vec<(u32, u64)> = self
            .peers
            .iter()
            .filter(|(_, (_, heard))| heard.elapsed() > PEER_LOST)
            .map(|(node, (clock, _))| (*node, *clock))
            .collect();
        for (node, clock) in lost {
            self.peers.remove(&node);
            self.count_peers();
            let n = self.state.hub.resync_all(self.cluster.reach_back(clock));
            tracing::warn!(node, devices = n, "cluster: node {node} went silent (stopped, or cut off from NATS); resyncing this node's devices");
        }
    }

    /// Notes that `node` is up, and how far its clock got (if known).
    fn heard_from(&mut self, node: u32, clock: Option<u64>) {
        let now = Instant::now();
        match self.peers.get_mut(&node) {
            Some((last, heard)) => {
                *last = (*last).max(clock.unwrap_or(0));
                *heard = now;
            }
            None => {
                let clock = clock.unwrap_or_else(now_ms);
                self.peers.insert(node, (clock, now));
                self.count_peers();
                tracing::info!(node, "cluster: node {node} is up");
            }
        }
    }

    fn count_peers(&self) {
        self.cluster
            .live_peers
            .store(self.peers.len(), std::sync::atomic::Ordering::Release);
    }

    fn heartbeat(&mut self, beat: Heartbeat) {
        if beat.leaving {
            if self.peers.remove(&beat.node_id).is_some() {
                self.count_peers();
                tracing::info!(node = beat.node_id, "cluster: node {} left", beat.node_id);
            }
            return;
        }
        self.heard_from(beat.node_id, Some(beat.unix_ms));
        if beat.node_id == u32::from(self.cluster.node_id) {
            crate::log_limited!(
                error,
                node = beat.node_id,
                "cluster: another node uses this node's node_id (and another database?); sequences may collide"
            );
        }
        if let Some(off) = subject::clock_off_by(beat.unix_ms, now_ms(), self.cluster.overlap_ms) {
            crate::log_limited!(
                warn,
                node = beat.node_id,
                off_ms = off,
                overlap_ms = self.cluster.overlap_ms,
                "cluster: clock of node {} is off by {off} ms, more than cluster_overlap_ms: a device may miss a message that node commits late",
                beat.node_id
            );
        }
    }
}
