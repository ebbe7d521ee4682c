//! The shared state every connection and request handler sees: configuration,
//! store, directory, hub, router, cursor buffer, quotas, the topics service, blacklists, the
//! connection slots and the shutdown signal. Built by `server` (the composition
//! root); the handlers (`api`, `session`, `transport`) depend on this module, never
//! on `server`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::blacklist::Blacklists;
use crate::clock::Clock;
use crate::config::Config;
use crate::directory::Directory;
use crate::hub::Hub;
use crate::quota::Quotas;
use crate::router::Router;
use crate::store::cursors::CursorBuffer;
use crate::store::Store;
use crate::topics::Topics;
use crate::transport::listener::ConnectionSlots;

/// Everything a connection or request handler needs, shared.
pub struct AppState {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub directory: Arc<Directory>,
    /// The clock expiry decisions use (tests move it).
    pub clock: Clock,
    pub hub: Arc<Hub>,
    pub router: Router,
    pub cursors: Arc<CursorBuffer>,
    /// Fires when the server starts shutting down.
    pub shutdown: CancellationToken,
    /// Tracks connection tasks so shutdown can wait for them.
    pub connections: TaskTracker,
    /// Open connections of the HTTP listener, bounded by `max_connections`.
    pub slots: ConnectionSlots,
    /// REST quotas per account and per app.
    pub quotas: Quotas,
    /// Topic membership: every change goes through it.
    pub topics: Topics,
    /// Who blacklisted whom, cached for the send path.
    pub blacklists: Blacklists,
    /// Hands callbacks to the dispatcher, or wakes it (replays).
    pub callbacks: Arc<crate::callbacks::OutboxFeed>,
    /// The other nodes, in cluster mode (`nats_url`).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    pub(crate) next_conn_id: AtomicU64,
}

impl AppState {
    /// The highest sequence a device may acknowledge: none above it exists yet. On
    /// one node, the newest this node assigned; in a cluster, other nodes assign
    /// too, so anything up to now plus the overlap window (their clocks may be
    /// that far ahead).
    pub fn newest_ackable(&self) -> u64 {
        let local = self.router.last_sequence();
        match &self.cluster {
            Some(cluster) => local.max(crate::sequence::floor_at(
                crate::time::now_ms().saturating_add(cluster.overlap_ms()),
            )),
            None => local,
        }
    }

    /// Tells the other nodes of a cluster (if any) to read a cached entry again.
    /// Waits (briefly) until they have.
    pub async fn cluster_invalidate(&self, what: crate::cluster_pb::invalidate::What) {
        if let Some(cluster) = &self.cluster {
            cluster.invalidate(self.store.as_ref(), what).await;
        }
    }

    /// A fresh id for a new connection, unique across the nodes of a cluster: the
    /// node id in the top 8 bits, a counter below (never 0, which means "none").
    pub fn next_conn_id(&self) -> u64 {
        let counter = self.next_conn_id.fetch_add(1, Ordering::Relaxed) & ((1 << 56) - 1);
        (u64::from(self.config.node_id) << 56) | counter
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}
