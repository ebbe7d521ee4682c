//! The store-bound steps of a session, as [`Connection`] methods: the device's start
//! cursor, the login backlog as `protocol::backlog` plans it (from the cursor minus the
//! overlap window on a cluster), a resync of a logged-in device, and `Pull` pages.

use std::fmt::Display;

use super::driver::{Connection, Flow};
use crate::pb;
use crate::protocol::backlog::{self, BacklogRules, BacklogStep, BacklogSync, PageRead};
use crate::protocol::codec;
use crate::protocol::session::Identity;
use crate::protocol::Status;
use crate::router;
use crate::store::{Order, StoreError, TimelineRange};
use crate::telemetry;
use crate::time::now_ms;

impl<E: Display> Connection<E> {
    /// The device's starting cursor (rules in `protocol::backlog`); a new device's
    /// start is recorded at once.
    pub(super) async fn start_cursor(&mut self, id: &Identity) -> Result<u64, StoreError> {
        let store = &self.state.store;
        let cursors = &self.state.cursors;
        let stored = store.cursor(id.uuid, &id.resource).await?;
        let pending = cursors.pending(id.uuid, &id.resource);
        if let Some(start) = backlog::known_device_cursor(stored, pending) {
            return Ok(start);
        }
        let start = backlog::new_device_cursor(
            store.max_cursor(id.uuid).await?,
            cursors.pending_max(id.uuid),
        );
        cursors.advance(id.uuid, &id.resource, start);
        if self.state.cluster.is_some() {
            // Another node must find this device known from now on.
            cursors
                .flush_device(store.as_ref(), id.uuid, &id.resource)
                .await;
        }
        Ok(start)
    }

    /// The backlog rules of the device's app.
    pub(super) fn backlog_rules(&self, id: &Identity) -> BacklogRules {
        let cfg = &self.state.config;
        let app = self.state.directory.cached_app(id.app_id);
        let settings = app.as_ref().map(|e| &e.settings);
        BacklogRules {
            limit: settings
                .and_then(|s| s.backlog_limit)
                .map_or(cfg.backlog_limit, |n| n as usize),
            batch: cfg.backlog_batch,
            ttl_ms: settings
                .and_then(|s| s.offline_ttl_secs)
                .unwrap_or(cfg.offline_ttl_secs)
                .saturating_mul(1000),
        }
    }

    /// LoginResult, then the backlog.
    pub(super) async fn sync_backlog(&mut self, id: &Identity) -> Result<Flow, StoreError> {
        let rules = self.backlog_rules(id);
        let cursor = self.start_cursor(id).await?;
        let Some(result) = self.session.login_result(cursor, now_ms()) else {
            return Ok(Flow::Close);
        };
        if let Flow::Close = self.write_one(result).await {
            return Ok(Flow::Close);
        }
        let from = cursor.saturating_sub(self.overlap());
        self.send_backlog(id, from, rules).await
    }

    /// How far a backlog reaches back before the cursor (0 on one node).
    pub(super) fn overlap(&self) -> u64 {
        self.state.cluster.as_ref().map_or(0, |c| c.overlap())
    }

    /// The backlog after `from` as `protocol::backlog::BacklogSync` plans it, then
    /// SyncDone. In a cluster `from` is `cluster_overlap_ms` before the cursor (a
    /// message another node committed late is not skipped; the device deduplicates
    /// by sequence).
    pub(super) async fn send_backlog(
        &mut self,
        id: &Identity,
        from: u64,
        rules: BacklogRules,
    ) -> Result<Flow, StoreError> {
        let (mut sync, (after, cap)) = BacklogSync::start(from, now_ms(), rules);
        if self.state.cluster.is_some() {
            sync.keep_carried();
        }
        let store = self.state.store.clone();
        let pending = store.count_after(id.uuid, &id.resource, after, cap).await?;
        let mut read = sync.on_count(pending);
        loop {
            let page = store
                .timeline(timeline_range(id.uuid, read), &id.resource)
                .await?;
            let page = page.into_iter().map(router::stored_to_deliver).collect();
            let (frames, step) = sync.on_page(page);
            if let Flow::Close = self.write_all(frames).await {
                return Ok(Flow::Close);
            }
            match step {
                BacklogStep::Read(next) => read = next,
                BacklogStep::Finish(last) => {
                    self.live = sync.live_filter();
                    metrics::histogram!(telemetry::BACKLOG_MESSAGES).record(sync.sent() as f64);
                    return Ok(self.write_all(last).await);
                }
            }
        }
    }

    /// Reads the backlog again from the device's cursor, or from `reach` if older
    /// (a cluster asked: NATS was interrupted, a node was lost or dropped
    /// deliveries).
    pub(super) async fn resync(&mut self, reach: u64) -> Flow {
        let Some(id) = self.session.identity().cloned() else {
            return Flow::Continue;
        };
        let rules = self.backlog_rules(&id);
        let sent = match self.start_cursor(&id).await {
            Ok(cursor) => {
                let from = cursor.saturating_sub(self.overlap()).min(reach);
                self.send_backlog(&id, from, rules).await
            }
            Err(e) => Err(e),
        };
        sent.unwrap_or_else(|e| {
            crate::log_limited!(warn, conn = self.conn_id, error = %e, "resync failed: store unavailable; the device gets its messages at its next login");
            Flow::Continue
        })
    }

    pub(super) async fn pull(&mut self, pull: pb::Pull) -> Flow {
        let Some(id) = self.session.identity().cloned() else {
            return Flow::Continue;
        };
        let (read, limit) = backlog::pull_read(&pull, self.state.config.backlog_batch);
        match self
            .state
            .store
            .timeline(timeline_range(id.uuid, read), &id.resource)
            .await
        {
            Ok(page) => {
                let page = page.into_iter().map(router::stored_to_deliver).collect();
                self.write_one(backlog::pull_result(page, limit)).await
            }
            Err(e) => {
                crate::log_limited!(error, error = %e, "pull failed");
                self.write_one(codec::error_frame(
                    Status::Internal,
                    "store unavailable",
                    "",
                ))
                .await
            }
        }
    }
}

/// The store's form of a page read for the user `uuid`.
fn timeline_range(uuid: u64, read: PageRead) -> TimelineRange {
    TimelineRange {
        uuid,
        after: read.after,
        before: read.before,
        limit: read.limit,
        order: if read.newest_first {
            Order::NewestFirst
        } else {
            Order::OldestFirst
        },
    }
}
