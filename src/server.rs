//! Assembles and runs the gateway: store, router, hub, HTTP + WebSocket listener,
//! and their orderly shutdown.
//!
//! Shutdown (SIGINT/SIGTERM or [`RunningServer::shutdown`]): stop accepting, kick
//! every session with a "server shutting down" reason, wait for connections to end
//! (up to `shutdown_grace_secs`), drain the router's queue, flush cursors, commit and
//! close the store.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::directory::Directory;
use crate::hub::Hub;
use crate::quota::Quotas;
use crate::router::{Router, RouterConfig};
use crate::state::AppState;
use crate::store::cursors::CursorBuffer;
use crate::store::sqlite::SqliteOptions;
use crate::store::{self, App, StoreConfig};
use crate::topics::Topics;
use crate::transport::listener::{self, ConnectionSlots};

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    #[error("server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A started server.
pub struct RunningServer {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The app created on first start of an empty data dir.
    pub created_app: Option<App>,
    pub state: Arc<AppState>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl RunningServer {
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Starts the graceful shutdown and waits for it to finish.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        self.state.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the server has stopped.
    pub async fn wait(self) -> Result<(), ServerError> {
        self.task.await?
    }
}

/// Opens the store, binds the listener and starts serving.
pub async fn start(config: Config) -> Result<RunningServer, ServerError> {
    config.validate()?;
    let store = store::open(&StoreConfig::Embedded {
        dir: config.data_dir.clone(),
        options: SqliteOptions {
            readers: config.store_readers,
            write_queue: config.router_queue,
            max_ops_per_commit: config.commit_batch_max * 2,
        },
    })?;
    let created_app = if store.list_apps().await?.is_empty() {
        Some(store.create_app("default").await?)
    } else {
        None
    };

    let shutdown = CancellationToken::new();
    let router_stop = CancellationToken::new();
    let hub = Arc::new(Hub::with_device_limit(config.max_devices_per_user));
    let directory = Arc::new(Directory::new(
        store.clone(),
        config.account_cache,
        config.topic_cache,
    ));
    let (router, router_task) = Router::start(
        RouterConfig {
            node_id: config.node_id,
            queue: config.router_queue,
            commit_batch_max: config.commit_batch_max,
            dedup_cache: config.dedup_cache,
        },
        store.clone(),
        hub.clone(),
        directory.clone(),
        router_stop.clone(),
    )
    .await?;
    let cursors = Arc::new(CursorBuffer::new());
    let cursor_stop = CancellationToken::new();
    let cursor_task = tokio::spawn(cursors.clone().run_flusher(
        store.clone(),
        Duration::from_millis(200),
        cursor_stop.clone(),
    ));

    let topics = Topics::new(
        store.clone(),
        directory.clone(),
        router.clone(),
        config.topic_member_limit,
    );
    let state = Arc::new(AppState {
        directory,
        config: config.clone(),
        store: store.clone(),
        hub,
        router,
        cursors,
        shutdown: shutdown.clone(),
        connections: TaskTracker::new(),
        slots: ConnectionSlots::new(config.max_connections),
        quotas: Quotas::new(
            config.rest_rate_per_account,
            config.rest_names_per_account,
            config.rest_rate_per_app,
        ),
        topics,
        next_conn_id: AtomicU64::new(1),
    });

    listener::raise_open_files_limit(config.max_connections);
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let app = crate::api::router(state.clone());
    let serve_state = state.clone();
    let task = tokio::spawn(async move {
        let http_stop = serve_state.shutdown.clone();
        listener::serve(
            listener,
            app,
            &serve_state.config,
            &serve_state.slots,
            http_stop,
        )
        .await;
        // Connections see the shutdown token and leave with a kick.
        serve_state.connections.close();
        let grace = Duration::from_secs(serve_state.config.shutdown_grace_secs);
        if tokio::time::timeout(grace, serve_state.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown: connections still open after the grace period");
        }
        router_stop.cancel();
        if let Err(e) = router_task.await {
            tracing::error!(error = %e, "router task failed");
        }
        cursor_stop.cancel();
        let _ = cursor_task.await;
        serve_state.store.flush().await.ok();
        let store = serve_state.store.clone();
        tokio::task::spawn_blocking(move || store.close()).await?;
        tracing::info!("shutdown complete");
        Ok(())
    });
    Ok(RunningServer {
        addr,
        created_app,
        state,
        task,
    })
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer").finish_non_exhaustive()
    }
}
