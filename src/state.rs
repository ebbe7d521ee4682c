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
    pub(crate) next_conn_id: AtomicU64,
}

impl AppState {
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
