//! Write-behind buffer for device cursors.
//!
//! Clients ack often; writing every ack would cost a store operation each. Acks land
//! here (the highest per device wins) and a flusher writes them all in one store
//! operation every interval. Reads consult the buffer first, so a device that logs in
//! again right after acking still starts from its newest cursor.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::Store;

type DeviceKey = (u64, Arc<str>);

/// Pending cursor advances, flushed periodically.
#[derive(Default)]
pub struct CursorBuffer {
    pending: Mutex<HashMap<DeviceKey, u64>>,
}

impl CursorBuffer {
    pub fn new() -> Self {
        CursorBuffer::default()
    }

    /// Records that device (uuid, resource) has everything up to `seq`.
    pub fn advance(&self, uuid: u64, resource: &Arc<str>, seq: u64) {
        let mut pending = self.pending.lock();
        let entry = pending.entry((uuid, resource.clone())).or_insert(0);
        *entry = (*entry).max(seq);
    }

    /// The buffered cursor of a device, if any.
    pub fn pending(&self, uuid: u64, resource: &str) -> Option<u64> {
        let key = (uuid, Arc::<str>::from(resource));
        self.pending.lock().get(&key).copied()
    }

    /// The highest buffered cursor of any device of the user.
    pub fn pending_max(&self, uuid: u64) -> Option<u64> {
        self.pending
            .lock()
            .iter()
            .filter(|((u, _), _)| *u == uuid)
            .map(|(_, s)| *s)
            .max()
    }

    /// Writes everything buffered. Entries stay readable here until their write
    /// has committed (a login in between must still find them), and are removed
    /// only if no newer ack came meanwhile. On failure they stay for the next flush.
    pub async fn flush(&self, store: &dyn Store) {
        let batch: Vec<(DeviceKey, u64)> = self
            .pending
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        self.write(store, batch).await;
    }

    /// Writes one device's buffered cursor now (in a cluster: before its device
    /// may log in again on another node, which reads the store).
    pub async fn flush_device(&self, store: &dyn Store, uuid: u64, resource: &Arc<str>) {
        let key = (uuid, resource.clone());
        let pending = self.pending.lock().get(&key).copied();
        if let Some(seq) = pending {
            self.write(store, vec![(key, seq)]).await;
        }
    }

    /// Writes `batch`; each entry leaves the buffer once written, unless a newer ack
    /// came meanwhile. On failure they stay for the next flush.
    async fn write(&self, store: &dyn Store, batch: Vec<(DeviceKey, u64)>) {
        if batch.is_empty() {
            return;
        }
        let rows: Vec<(u64, String, u64)> = batch
            .iter()
            .map(|((u, r), s)| (*u, r.to_string(), *s))
            .collect();
        match store.set_cursors(rows).await {
            Ok(()) => {
                let mut pending = self.pending.lock();
                for (key, seq) in batch {
                    if pending.get(&key) == Some(&seq) {
                        pending.remove(&key);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cursor flush failed; will retry"),
        }
    }

    /// Flushes every `interval` until `stop`, then once more.
    pub async fn run_flusher(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        interval: Duration,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => self.flush(store.as_ref()).await,
            }
        }
        self.flush(store.as_ref()).await;
    }
}

impl std::fmt::Debug for CursorBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CursorBuffer").finish_non_exhaustive()
    }
}
