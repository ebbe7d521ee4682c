//! The in-memory store's callback outbox and app deletion: the same semantics as
//! the embedded store's (`sqlite/outbox.rs`, `sqlite/apps.rs`).

use async_trait::async_trait;

use super::{Inner, MemoryStore};
use crate::store::{
    AppendOutcome, CallbackKind, CallbackOutcome, CallbackStore, FailedCallback, NewCallback,
    PendingCallback, StoreError, StoreResult,
};

/// One outbox row.
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

impl Inner {
    /// Queues the callbacks of the messages (`ids[i]` = (seq, app)) that were stored.
    pub(super) fn queue_callbacks(
        &mut self,
        ids: &[(u64, u64)],
        outcomes: &[AppendOutcome],
        callbacks: Vec<NewCallback>,
        now_ms: u64,
    ) {
        for cb in callbacks {
            let (Some(&(seq, app_id)), Some(AppendOutcome::Stored)) =
                (ids.get(cb.index), outcomes.get(cb.index))
            else {
                continue;
            };
            self.callbacks.entry(seq).or_insert(CallbackRow {
                app_id,
                kind: cb.kind,
                to_accounts: cb.to_accounts,
                attempts: 0,
                due_ms: now_ms,
                failed_ms: 0,
                last_error: String::new(),
            });
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
                    message: inner.messages.get(&seq).cloned(),
                })
            })
            .collect())
    }

    async fn record_callbacks(&self, outcomes: Vec<(u64, CallbackOutcome)>) -> StoreResult<()> {
        let mut inner = self.inner.lock();
        for (seq, outcome) in outcomes {
            match outcome {
                CallbackOutcome::Delivered => {
                    inner.callbacks.remove(&seq);
                }
                CallbackOutcome::Retry { due_ms, error } => {
                    if let Some(r) = inner.callbacks.get_mut(&seq) {
                        r.attempts += 1;
                        r.due_ms = due_ms;
                        r.last_error = error;
                    }
                }
                CallbackOutcome::Failed { now_ms, error } => {
                    if let Some(r) = inner.callbacks.get_mut(&seq) {
                        r.attempts += 1;
                        r.failed_ms = now_ms.max(1);
                        r.last_error = error;
                    }
                }
            }
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
        let mut counts = (0, 0);
        for r in inner.callbacks.values() {
            if app_id.is_some_and(|a| a != r.app_id) {
                continue;
            }
            if r.failed_ms == 0 {
                counts.0 += 1;
            } else {
                counts.1 += 1;
            }
        }
        Ok(counts)
    }
}
