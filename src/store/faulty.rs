//! A fault-injecting store for tests: delegates to a real store, and fails the
//! operations a test switches on, so the failure paths of the router and the
//! session (a failed commit, a failed lookup) are exercised for real.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use super::{
    Account, App, AppSettings, AppStore, AppendOutcome, BlacklistStore, CallbackBatch,
    CallbackResult, CallbackStore, Contact, FailedCallback, HistoryRange, HistoryStore,
    MessageStore, NewCallback, NewMessage, Peer, PendingCallback, Store, StoreError, StoreResult,
    StoredMessage, SweepPlan, SweepReport, SweepStore, TimelineRange, Topic, TopicStore,
    TopicSummary, TopicUpdate,
};

/// Which operations fail.
#[derive(Debug, Default)]
pub struct Faults {
    /// `append`: the group commit of messages.
    pub append: AtomicBool,
    /// `account` and `accounts`: account lookups and creation.
    pub accounts: AtomicBool,
}

/// A store whose operations fail while their fault is on.
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    pub faults: Arc<Faults>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        FaultyStore {
            inner,
            faults: Arc::new(Faults::default()),
        }
    }
}

impl std::fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyStore")
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

fn check(fault: &AtomicBool) -> StoreResult<()> {
    if fault.load(Ordering::SeqCst) {
        return Err(StoreError::Database("injected fault".into()));
    }
    Ok(())
}

impl Store for FaultyStore {
    fn close(&self) {
        self.inner.close();
    }
}

#[async_trait]
impl AppStore for FaultyStore {
    async fn create_app(&self, name: &str) -> StoreResult<App> {
        self.inner.create_app(name).await
    }
    async fn list_apps(&self) -> StoreResult<Vec<App>> {
        self.inner.list_apps().await
    }
    async fn app(&self, app_id: u64) -> StoreResult<Option<App>> {
        self.inner.app(app_id).await
    }
    async fn account(
        &self,
        app_id: u64,
        account: &str,
        create: bool,
        now_ms: u64,
    ) -> StoreResult<Option<Account>> {
        check(&self.faults.accounts)?;
        self.inner.account(app_id, account, create, now_ms).await
    }
    async fn accounts(
        &self,
        app_id: u64,
        accounts: Vec<String>,
        now_ms: u64,
    ) -> StoreResult<Vec<Account>> {
        check(&self.faults.accounts)?;
        self.inner.accounts(app_id, accounts, now_ms).await
    }
    async fn set_app_settings(&self, app_id: u64, settings: AppSettings) -> StoreResult<()> {
        self.inner.set_app_settings(app_id, settings).await
    }
    async fn app_settings(&self, app_id: u64) -> StoreResult<AppSettings> {
        self.inner.app_settings(app_id).await
    }
    async fn rename_app(&self, app_id: u64, name: &str) -> StoreResult<App> {
        self.inner.rename_app(app_id, name).await
    }
    async fn rotate_app_secret(&self, app_id: u64, tokens_until_ms: u64) -> StoreResult<App> {
        self.inner.rotate_app_secret(app_id, tokens_until_ms).await
    }
    async fn delete_app(&self, app_id: u64, now_ms: u64) -> StoreResult<()> {
        self.inner.delete_app(app_id, now_ms).await
    }
}

#[async_trait]
impl HistoryStore for FaultyStore {
    async fn history(&self, range: HistoryRange) -> StoreResult<Vec<StoredMessage>> {
        self.inner.history(range).await
    }
    async fn contacts(
        &self,
        owner: u64,
        since_seq: u64,
        limit: usize,
    ) -> StoreResult<Vec<Contact>> {
        self.inner.contacts(owner, since_seq, limit).await
    }
    async fn clear_contact(&self, owner: u64, peer: Peer) -> StoreResult<()> {
        self.inner.clear_contact(owner, peer).await
    }
}

#[async_trait]
impl CallbackStore for FaultyStore {
    async fn next_callback_app(&self, after_app: u64) -> StoreResult<Option<(u64, u64)>> {
        self.inner.next_callback_app(after_app).await
    }
    async fn due_callbacks(
        &self,
        app_id: u64,
        now_ms: u64,
        limit: usize,
    ) -> StoreResult<Vec<PendingCallback>> {
        self.inner.due_callbacks(app_id, now_ms, limit).await
    }
    async fn callback_batch_apps(&self) -> StoreResult<Vec<u64>> {
        self.inner.callback_batch_apps().await
    }
    async fn callback_batches(
        &self,
        app_id: u64,
        from: u64,
        budget: usize,
    ) -> StoreResult<Vec<CallbackBatch>> {
        self.inner.callback_batches(app_id, from, budget).await
    }
    async fn record_callbacks(
        &self,
        results: Vec<CallbackResult>,
        finished: Vec<u64>,
    ) -> StoreResult<()> {
        self.inner.record_callbacks(results, finished).await
    }
    async fn failed_callbacks(
        &self,
        app_id: u64,
        after_seq: u64,
        limit: usize,
    ) -> StoreResult<Vec<FailedCallback>> {
        self.inner.failed_callbacks(app_id, after_seq, limit).await
    }
    async fn replay_callbacks(
        &self,
        app_id: u64,
        seqs: Option<Vec<u64>>,
        now_ms: u64,
    ) -> StoreResult<usize> {
        self.inner.replay_callbacks(app_id, seqs, now_ms).await
    }
    async fn callback_counts(&self, app_id: Option<u64>) -> StoreResult<(u64, u64)> {
        self.inner.callback_counts(app_id).await
    }
}

#[async_trait]
impl SweepStore for FaultyStore {
    async fn sweep(&self, plan: SweepPlan) -> StoreResult<SweepReport> {
        self.inner.sweep(plan).await
    }
}

#[async_trait]
impl MessageStore for FaultyStore {
    async fn append_with_callbacks(
        &self,
        messages: Vec<NewMessage>,
        callbacks: Vec<NewCallback>,
    ) -> StoreResult<Vec<AppendOutcome>> {
        check(&self.faults.append)?;
        self.inner.append_with_callbacks(messages, callbacks).await
    }
    async fn timeline(
        &self,
        range: TimelineRange,
        resource: &str,
    ) -> StoreResult<Vec<StoredMessage>> {
        self.inner.timeline(range, resource).await
    }
    async fn count_after(
        &self,
        uuid: u64,
        resource: &str,
        after: u64,
        cap: usize,
    ) -> StoreResult<usize> {
        self.inner.count_after(uuid, resource, after, cap).await
    }
    async fn cursor(&self, uuid: u64, resource: &str) -> StoreResult<Option<u64>> {
        self.inner.cursor(uuid, resource).await
    }
    async fn max_cursor(&self, uuid: u64) -> StoreResult<u64> {
        self.inner.max_cursor(uuid).await
    }
    async fn set_cursors(&self, cursors: Vec<(u64, String, u64)>) -> StoreResult<()> {
        self.inner.set_cursors(cursors).await
    }
    async fn max_sequence(&self) -> StoreResult<u64> {
        self.inner.max_sequence().await
    }
    async fn flush(&self) -> StoreResult<()> {
        self.inner.flush().await
    }
}

#[async_trait]
impl BlacklistStore for FaultyStore {
    async fn blacklist_add(&self, owner: u64, black: u64) -> StoreResult<()> {
        self.inner.blacklist_add(owner, black).await
    }
    async fn blacklist_remove(&self, owner: u64, black: u64) -> StoreResult<()> {
        self.inner.blacklist_remove(owner, black).await
    }
    async fn blacklist_of(&self, owner: u64) -> StoreResult<Vec<u64>> {
        self.inner.blacklist_of(owner).await
    }
}

#[async_trait]
impl TopicStore for FaultyStore {
    async fn create_topic(
        &self,
        app_id: u64,
        owner: u64,
        name: &str,
        members: Vec<u64>,
        limit: usize,
        boundary: u64,
    ) -> StoreResult<Topic> {
        self.inner
            .create_topic(app_id, owner, name, members, limit, boundary)
            .await
    }
    async fn topic(&self, topic_id: u64) -> StoreResult<Option<Topic>> {
        self.inner.topic(topic_id).await
    }
    async fn topics_of(&self, uuid: u64) -> StoreResult<Vec<TopicSummary>> {
        self.inner.topics_of(uuid).await
    }
    async fn was_member(&self, uuid: u64, topic_id: u64) -> StoreResult<bool> {
        self.inner.was_member(uuid, topic_id).await
    }
    async fn add_members(
        &self,
        topic_id: u64,
        uuids: Vec<u64>,
        limit: usize,
        boundary: u64,
    ) -> StoreResult<Vec<u64>> {
        self.inner
            .add_members(topic_id, uuids, limit, boundary)
            .await
    }
    async fn start_memberships(
        &self,
        topic_id: u64,
        uuids: Vec<u64>,
        boundary: u64,
    ) -> StoreResult<()> {
        self.inner
            .start_memberships(topic_id, uuids, boundary)
            .await
    }
    async fn remove_members(
        &self,
        topic_id: u64,
        uuids: Vec<u64>,
        boundary: u64,
    ) -> StoreResult<()> {
        self.inner.remove_members(topic_id, uuids, boundary).await
    }
    async fn update_topic(&self, topic_id: u64, update: TopicUpdate) -> StoreResult<()> {
        self.inner.update_topic(topic_id, update).await
    }
    async fn dismiss_topic(&self, topic_id: u64, boundary: u64) -> StoreResult<()> {
        self.inner.dismiss_topic(topic_id, boundary).await
    }
}
