//! In-memory directory of apps, accounts and topics in front of the store.
//!
//! Token checks and sends look up an app's secret and settings and an account's
//! uuid on every request; this caches them. Apps are few and cached whole, with
//! their settings ([`AppEntry`]): the admin API reloads an app's entry when it
//! changes it ([`Directory::reload_app`]), and every entry is reloaded from the
//! store every [`APP_RELOAD_INTERVAL`] ([`Directory::reload_apps`]), so a change
//! made by `courier app` on the data dir applies too. Accounts are cached as they
//! are used (one entry per active account) and never change once created; a
//! temporary account's entry holds its expiry and is not used past it (the store
//! then makes a new account).
//!
//! The account cache holds at most `account_cache` entries; past that it is emptied
//! and refills from the store (a client addressing endless new accounts cannot grow
//! it without bound).
//!
//! Topics are cached as immutable [`TopicView`] snapshots that the router reads
//! without waiting: whoever changes a topic in the store calls
//! [`Directory::refresh_topic`], which installs the newer snapshot (by version).
//! At most `topic_cache` topics are kept; the least recently used is evicted. A
//! sender loads its topic before submitting and hands the snapshot to the router with
//! the send (`Submission::topic`), so an eviction in between cannot make the router
//! refuse it. What makes eviction safe is a second, never-evicted map of the newest
//! version ever read of each topic (8 bytes a topic, bounded by the topics in the
//! store): no snapshot older than it is installed or used ([`Directory::current_topic`]),
//! so a membership change is never undone by an eviction.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::sync::Arc;

use dashmap::DashMap;
use lru::LruCache;
use parking_lot::Mutex;

use crate::clock::Clock;
use crate::store::{Account, App, AppSettings, Store, StoreResult, Topic};

/// How often every cached app is read again from the store.
pub const APP_RELOAD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// An app and its settings, as cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppEntry {
    pub app: App,
    pub settings: AppSettings,
}

/// A topic as the router sees it: the record plus a member set for O(1) checks.
#[derive(Debug)]
pub struct TopicView {
    pub topic: Topic,
    pub member_set: HashSet<u64>,
}

impl TopicView {
    fn new(topic: Topic) -> Self {
        let member_set = topic.members.iter().map(|m| m.uuid).collect();
        TopicView { topic, member_set }
    }

    pub fn is_member(&self, uuid: u64) -> bool {
        self.member_set.contains(&uuid)
    }
}

/// Apps and account uuids, cached.
pub struct Directory {
    store: Arc<dyn Store>,
    apps: DashMap<u64, Arc<AppEntry>>,
    /// Held by app reloads, so an older read never replaces a newer one.
    app_reloads: tokio::sync::Mutex<()>,
    accounts: DashMap<(u64, String), Account>,
    max_accounts: usize,
    clock: Clock,
    topics: Mutex<LruCache<u64, Arc<TopicView>>>,
    /// Newest version ever read of each topic.
    versions: DashMap<u64, u64>,
}

/// What the router may use for a topic message.
#[derive(Debug)]
pub enum TopicLookup {
    /// The newest snapshot known.
    Current(Arc<TopicView>),
    /// Neither the cache nor the sender holds the topic.
    Unknown,
    /// The sender's snapshot is older than a change already seen, and the cache
    /// evicted the newer one: the send must be retried.
    Stale,
}

impl Directory {
    /// A directory caching at most `max_accounts` account ids and `max_topics` topics.
    /// Expiry is judged by `clock`.
    pub fn new(
        store: Arc<dyn Store>,
        max_accounts: usize,
        max_topics: usize,
        clock: Clock,
    ) -> Self {
        Directory {
            store,
            apps: DashMap::new(),
            app_reloads: tokio::sync::Mutex::new(()),
            accounts: DashMap::new(),
            max_accounts: max_accounts.max(1),
            clock,
            topics: Mutex::new(LruCache::new(
                NonZeroUsize::new(max_topics).unwrap_or(NonZeroUsize::MIN),
            )),
            versions: DashMap::new(),
        }
    }

    fn floor(&self, topic_id: u64) -> u64 {
        self.versions.get(&topic_id).map_or(0, |v| *v)
    }

    /// The snapshot the router must check a topic message against: the cache's or the
    /// sender's (`hint`), whichever is newer, and never one older than a version
    /// already read.
    pub fn current_topic(&self, topic_id: u64, hint: Option<&Arc<TopicView>>) -> TopicLookup {
        let cached = self.cached_topic(topic_id);
        let newest = match (cached, hint) {
            (Some(c), Some(h)) if h.topic.version > c.topic.version => h.clone(),
            (Some(c), _) => c,
            (None, Some(h)) => h.clone(),
            (None, None) => return TopicLookup::Unknown,
        };
        if newest.topic.topic_id != topic_id {
            return TopicLookup::Unknown;
        }
        if newest.topic.version < self.floor(topic_id) {
            return TopicLookup::Stale;
        }
        TopicLookup::Current(newest)
    }

    /// The cached topic, without touching the store.
    pub fn cached_topic(&self, topic_id: u64) -> Option<Arc<TopicView>> {
        self.topics.lock().get(&topic_id).cloned()
    }

    /// The topic, loading it into the cache on a miss.
    pub async fn topic(&self, topic_id: u64) -> StoreResult<Option<Arc<TopicView>>> {
        if let Some(t) = self.cached_topic(topic_id) {
            return Ok(Some(t));
        }
        self.refresh_topic(topic_id).await
    }

    /// Re-reads the topic after a change and installs it unless a newer one is there.
    /// A read that comes back older than a version already seen (a concurrent
    /// refresh read later, and its result was evicted since) is read again.
    pub async fn refresh_topic(&self, topic_id: u64) -> StoreResult<Option<Arc<TopicView>>> {
        loop {
            let Some(topic) = self.store.topic(topic_id).await? else {
                return Ok(None);
            };
            let fresh = Arc::new(TopicView::new(topic));
            let floor = {
                let mut v = self.versions.entry(topic_id).or_insert(0);
                *v = (*v).max(fresh.topic.version);
                *v
            };
            let mut topics = self.topics.lock();
            let entry = topics.get_or_insert_mut(topic_id, || fresh.clone());
            if entry.topic.version < fresh.topic.version {
                *entry = fresh;
            }
            if entry.topic.version >= floor {
                return Ok(Some(entry.clone()));
            }
            // The cache holds something older than a version seen: drop it, read again.
            topics.pop(&topic_id);
        }
    }

    /// The app with this id, from cache or store.
    pub async fn app(&self, app_id: u64) -> StoreResult<Option<App>> {
        Ok(self.app_entry(app_id).await?.map(|e| e.app.clone()))
    }

    /// The app with this id and its settings, from cache or store.
    pub async fn app_entry(&self, app_id: u64) -> StoreResult<Option<Arc<AppEntry>>> {
        if let Some(entry) = self.cached_app(app_id) {
            return Ok(Some(entry));
        }
        self.reload_app(app_id).await
    }

    /// The cached app and settings, without touching the store.
    pub fn cached_app(&self, app_id: u64) -> Option<Arc<AppEntry>> {
        self.apps.get(&app_id).map(|e| e.clone())
    }

    /// Reads the app and its settings again (after a change), or forgets it if it
    /// is gone.
    pub async fn reload_app(&self, app_id: u64) -> StoreResult<Option<Arc<AppEntry>>> {
        let _one_at_a_time = self.app_reloads.lock().await;
        let Some(app) = self.store.app(app_id).await? else {
            self.apps.remove(&app_id);
            return Ok(None);
        };
        let settings = self.store.app_settings(app_id).await?;
        let entry = Arc::new(AppEntry { app, settings });
        self.apps.insert(app_id, entry.clone());
        Ok(Some(entry))
    }

    /// Reads every app again; apps gone from the store are forgotten.
    pub async fn reload_apps(&self) -> StoreResult<()> {
        let _one_at_a_time = self.app_reloads.lock().await;
        let apps = self.store.list_apps().await?;
        let live: HashSet<u64> = apps.iter().map(|a| a.app_id).collect();
        for app in apps {
            let settings = self.store.app_settings(app.app_id).await?;
            self.apps
                .insert(app.app_id, Arc::new(AppEntry { app, settings }));
        }
        self.apps.retain(|id, _| live.contains(id));
        Ok(())
    }

    /// Reloads every app every [`APP_RELOAD_INTERVAL`] until `stop` fires.
    pub async fn run_app_reloader(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(APP_RELOAD_INTERVAL) => {}
            }
            if let Err(e) = self.reload_apps().await {
                crate::log_limited!(warn, error = %e, "directory: reloading apps failed");
            }
        }
    }

    /// The uuid of (app, account) if the cache holds it (and it has not expired).
    pub fn cached_uuid(&self, app_id: u64, account: &str) -> Option<u64> {
        self.cached(app_id, account, self.clock.now_ms())
            .map(|a| a.uuid)
    }

    fn cached(&self, app_id: u64, account: &str, now_ms: u64) -> Option<Account> {
        let found = *self.accounts.get(&(app_id, account.to_owned()))?;
        (!found.expired_at(now_ms)).then_some(found)
    }

    /// The uuid of (app, account) if the account exists (none is created).
    pub async fn existing_uuid(&self, app_id: u64, account: &str) -> StoreResult<Option<u64>> {
        let now = self.clock.now_ms();
        if let Some(found) = self.cached(app_id, account, now) {
            return Ok(Some(found.uuid));
        }
        let found = self.store.account(app_id, account, false, now).await?;
        if let Some(found) = found {
            self.remember(app_id, account.to_owned(), found);
        }
        Ok(found.map(|a| a.uuid))
    }

    /// The uuid of (app, account), created on first use.
    pub async fn uuid(&self, app_id: u64, account: &str) -> StoreResult<u64> {
        Ok(self.account(app_id, account).await?.uuid)
    }

    /// (app, account) with its expiry, created on first use (or anew once expired).
    pub async fn account(&self, app_id: u64, account: &str) -> StoreResult<Account> {
        let now = self.clock.now_ms();
        if let Some(found) = self.cached(app_id, account, now) {
            return Ok(found);
        }
        let found = self
            .store
            .account(app_id, account, true, now)
            .await?
            .ok_or_else(|| crate::store::StoreError::NotFound(account.to_owned()))?;
        self.remember(app_id, account.to_owned(), found);
        Ok(found)
    }

    /// The uuids of many accounts of one app, in order, created where missing: one
    /// store call for all the names the cache does not know.
    pub async fn uuids(&self, app_id: u64, names: Vec<String>) -> StoreResult<Vec<u64>> {
        let now = self.clock.now_ms();
        let mut out = Vec::with_capacity(names.len());
        let mut missing = Vec::new();
        let mut keys = Vec::with_capacity(names.len());
        for name in names {
            match self.cached(app_id, &name, now) {
                Some(found) => out.push(found.uuid),
                None => {
                    missing.push(out.len());
                    out.push(0);
                }
            }
            keys.push(name);
        }
        if missing.is_empty() {
            return Ok(out);
        }
        let wanted: Vec<String> = missing.iter().map(|&i| keys[i].clone()).collect();
        let found = self.store.accounts(app_id, wanted, now).await?;
        if found.len() != missing.len() {
            return Err(crate::store::StoreError::Database(format!(
                "asked for {} accounts, got {}",
                missing.len(),
                found.len()
            )));
        }
        for (&i, account) in missing.iter().zip(found) {
            out[i] = account.uuid;
            self.remember(app_id, std::mem::take(&mut keys[i]), account);
        }
        Ok(out)
    }

    fn remember(&self, app_id: u64, name: String, account: Account) {
        if self.accounts.len() >= self.max_accounts {
            self.accounts.clear();
        }
        self.accounts.insert((app_id, name), account);
    }
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Member;

    fn view(version: u64, members: &[u64]) -> Arc<TopicView> {
        Arc::new(TopicView::new(Topic {
            topic_id: 7,
            app_id: 1,
            owner_uuid: members[0],
            owner_account: String::new(),
            name: String::new(),
            bulletin: String::new(),
            dismissed: false,
            version,
            members: members
                .iter()
                .map(|&uuid| Member {
                    uuid,
                    account: String::new(),
                })
                .collect(),
        }))
    }

    fn directory(max_topics: usize) -> Directory {
        let store = crate::store::memory::MemoryStore::new();
        Directory::new(Arc::new(store), 16, max_topics, Clock::default())
    }

    #[tokio::test]
    async fn an_evicted_change_is_never_undone_by_an_older_snapshot() {
        let d = directory(1);
        // Version 6 (member 2 kicked) was read, then evicted by another topic.
        d.versions.insert(7, 6);
        d.topics.lock().put(7, view(6, &[1]));
        d.topics.lock().put(8, view(1, &[1]));
        assert!(d.cached_topic(7).is_none());
        // A sender still holding version 5 (member 2 in it) is not believed.
        let old = view(5, &[1, 2]);
        assert!(matches!(d.current_topic(7, Some(&old)), TopicLookup::Stale));
        // A snapshot as new as the newest read is used.
        let current = view(6, &[1]);
        match d.current_topic(7, Some(&current)) {
            TopicLookup::Current(v) => assert!(!v.is_member(2)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(d.current_topic(9, None), TopicLookup::Unknown));
    }
}
