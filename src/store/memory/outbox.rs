//! The in-memory store's callback outbox and app deletion: the same semantics as
//! the embedded store's (`sqlite/outbox.rs`, `sqlite/apps.rs`).

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::{Inner, MemoryStore};
use crate::store::{
    AppendOutcome, CallbackBatch, CallbackKind, CallbackOutcome, CallbackResult, CallbackStore,
    FailedCallback, NewCallback, PendingCallback, StoreError, StoreResult,
};

/// One callback's row (after a failed attempt).
#[derive(Debug, Clone)]
pub(super) struct CallbackRow {
    app_id: u64,
    kind: CallbackKind,
    to_accounts: Vec<String>,
    attempts: u32,
    due_ms: u64,
    /// 0 = pending.
    failed_ms: u64,
    last_error: String,
}

/// One batch: its app and `(seq, kind, toAccounts)` entries.
pub(super) type BatchRow = (u64, Vec<(u64, CallbackKind, Vec<String>)>);

impl Inner {
    /// Writes one batch per app of the callbacks whose message (`ids[i]` = (seq,
    /// app)) was stored.
    pub(super) fn queue_callbacks(
        &mut self,
        ids: &[(u64, u64)],
        outcomes: &[AppendOutcome],
        callbacks: Vec<NewCallback>,
    ) {
        // app → (batch id, entries)
        let mut batches: BTreeMap<u64, BatchRow> = BTreeMap::new();
        for cb in callbacks {
            let (Some(&(seq, app_id)), Some(AppendOutcome::Stored)) =
                (ids.get(cb.index), outcomes.get(cb.index))
            else {
                continue;
            };
            let batch = batches.entry(app_id).or_insert_with(|| (seq, Vec::new()));
            batch.1.push((seq, cb.kind, cb.to_accounts));
        }
        for (app_id, (batch_id, entries)) in batches {
            self.callback_batches
                .entry(batch_id)
                .or_insert((app_id, entries));
        }
    }

    pub(super) fn delete_app(&mut self, app_id: u64, now_ms: u64) -> StoreResult<()> {
        if self.apps.remove(&app_id).is_none() {
            return Err(StoreError::NotFound(format!("app {app_id}")));
        }
        self.settings.remove(&app_id);
        self.deleted_apps.insert(app_id);
        let now = now_ms.max(1);
        let uuids: Vec<u64> = self
            .accounts
            .iter()
            .filter(|((app, _), _)| *app == app_id)
            .map(|(_, &uuid)| uuid)
            .collect();
        for uuid in uuids {
            let at = self.expires.entry(uuid).or_insert(now);
            *at = (*at).min(now);
        }
        for topic in self.topics.values_mut() {
            if topic.app_id == app_id && !topic.dismissed {
                topic.dismissed = true;
                topic.version += 1;
            }
        }
        self.callbacks.retain(|_, row| row.app_id != app_id);
        self.callback_batches.retain(|_, (app, _)| *app != app_id);
        Ok(())
    }
}

#[async_trait]
impl CallbackStore for MemoryStore {
    async fn next_callback_app(&self, after_app: u64) -> StoreResult<Option<(u64, u64)>> {
        let inner = self.inner.lock();
        Ok(inner
            .callbacks
            .values()
            .filter(|r| r.failed_ms == 0 && r.app_id > after_app)
            .map(|r| (r.app_id, r.due_ms))
            .min())
    }

    async fn due_callbacks(
        &self,
        app_id: u64,
        now_ms: u64,
        limit: usize,
    ) -> StoreResult<Vec<PendingCallback>> {
        let inner = self.inner.lock();
        let mut due: Vec<(u64, u64)> = inner
            .callbacks
            .iter()
            .filter(|(_, r)| r.failed_ms == 0 && r.app_id == app_id && r.due_ms <= now_ms)
            .map(|(&seq, r)| (r.due_ms, seq))
            .collect();
        due.sort_unstable();
        due.truncate(limit);
        Ok(due
            .into_iter()
            .filter_map(|(_, seq)| {
                let r = inner.callbacks.get(&seq)?;
                Some(PendingCallback {
                    seq,
                    app_id,
                    kind: r.kind,
                    to_accounts: r.to_accounts.clone(),
                    attempts: r.attempts,
                    batch: None,
                    message: inner.messages.get(&seq).cloned(),
                })
            })
            .collect())
    }

    async fn callback_batch_apps(&self) -> StoreResult<Vec<u64>> {
        let inner = self.inner.lock();
        let mut apps: Vec<u64> = inner.callback_batches.values().map(|(a, _)| *a).collect();
        apps.sort_unstable();
        apps.dedup();
        Ok(apps)
    }

    async fn callback_batches(
        &self,
        app_id: u64,
        from: u64,
        budget: usize,
    ) -> StoreResult<Vec<CallbackBatch>> {
        let inner = self.inner.lock();
        let mut taken = 0;
        Ok(inner
            .callback_batches
            .range(from..)
            .filter(|(_, (app, _))| *app == app_id)
            .take_while(|(_, (_, entries))| {
                let more = taken < budget.max(1);
                taken += entries.len().max(1);
                more
            })
            .map(|(&batch_id, (_, entries))| CallbackBatch {
                batch_id,
                app_id,
                size: entries.len(),
                callbacks: entries
                    .iter()
                    .filter(|(seq, _, _)| !inner.callbacks.contains_key(seq))
                    .map(|(seq, kind, to)| PendingCallback {
                        seq: *seq,
                        app_id,
                        kind: *kind,
                        to_accounts: to.clone(),
                        attempts: 0,
                        batch: Some(batch_id),
                        message: inner.messages.get(seq).cloned(),
                    })
                    .collect(),
            })
            .collect())
    }

    async fn record_callbacks(
        &self,
        results: Vec<CallbackResult>,
        finished: Vec<u64>,
    ) -> StoreResult<()> {
        let mut inner = self.inner.lock();
        for r in results {
            let (due_ms, failed_ms, error) = match r.outcome {
                CallbackOutcome::Delivered => {
                    inner.callbacks.remove(&r.seq);
                    continue;
                }
                CallbackOutcome::Retry { due_ms, error } => (due_ms, 0, error),
                CallbackOutcome::Failed { now_ms, error } => (now_ms, now_ms.max(1), error),
            };
            let row = inner.callbacks.entry(r.seq).or_insert(CallbackRow {
                app_id: r.app_id,
                kind: r.kind,
                to_accounts: r.to_accounts,
                attempts: 0,
                due_ms,
                failed_ms: 0,
                last_error: String::new(),
            });
            row.attempts += 1;
            row.due_ms = due_ms;
            row.failed_ms = failed_ms;
            row.last_error = error;
        }
        for batch in finished {
            inner.callback_batches.remove(&batch);
        }
        Ok(())
    }

    async fn failed_callbacks(
        &self,
        app_id: u64,
        after_seq: u64,
        limit: usize,
    ) -> StoreResult<Vec<FailedCallback>> {
        let inner = self.inner.lock();
        Ok(inner
            .callbacks
            .range(after_seq.saturating_add(1)..)
            .filter(|(_, r)| r.failed_ms > 0 && r.app_id == app_id)
            .take(limit)
            .map(|(&seq, r)| FailedCallback {
                seq,
                app_id,
                kind: r.kind,
                attempts: r.attempts,
                last_error: r.last_error.clone(),
                failed_ms: r.failed_ms,
            })
            .collect())
    }

    async fn replay_callbacks(
        &self,
        app_id: u64,
        seqs: Option<Vec<u64>>,
        now_ms: u64,
    ) -> StoreResult<usize> {
        let mut inner = self.inner.lock();
        let mut n = 0;
        for (seq, r) in inner.callbacks.iter_mut() {
            let wanted = seqs.as_ref().is_none_or(|s| s.contains(seq));
            if r.failed_ms > 0 && r.app_id == app_id && wanted {
                r.failed_ms = 0;
                r.attempts = 0;
                r.due_ms = now_ms;
                n += 1;
            }
        }
        Ok(n)
    }

    async fn callback_counts(&self, app_id: Option<u64>) -> StoreResult<(u64, u64)> {
        let inner = self.inner.lock();
        let mine = |app: u64| app_id.is_none_or(|a| a == app);
        let mut counts = (0, 0);
        for r in inner.callbacks.values().filter(|r| mine(r.app_id)) {
            if r.failed_ms == 0 {
                counts.0 += 1;
            } else {
                counts.1 += 1;
            }
        }
        for (app, entries) in inner.callback_batches.values() {
            if mine(*app) {
                counts.0 += entries.len() as u64;
            }
        }
        Ok(counts)
    }
}
