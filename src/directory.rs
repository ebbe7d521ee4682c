//! In-memory directory of apps, accounts and topics in front of the store.
//!
//! Token checks and sends look up an app's secret and an account's uuid on every
//! request; this caches both. Apps are few and cached whole; accounts are cached as
//! they are used (one entry per active account). Apps and accounts never change once
//! created, so their cache needs no invalidation.
//!
//! The account cache holds at most [`MAX_CACHED_ACCOUNTS`] entries; past that it is
//! emptied and refills from the store (a client addressing endless new accounts cannot
//! grow it without bound).
//!
//! Topics are cached as immutable [`TopicView`] snapshots that the router reads
//! without waiting: whoever changes a topic in the store calls
//! [`Directory::refresh_topic`], which installs the newer snapshot (by version).

use std::collections::HashSet;
use std::sync::Arc;

use dashmap::DashMap;

use crate::store::{App, Store, StoreResult, Topic};

/// Most account → uuid entries kept in memory.
pub const MAX_CACHED_ACCOUNTS: usize = 1_000_000;

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
    apps: DashMap<u64, App>,
    accounts: DashMap<(u64, String), u64>,
    topics: DashMap<u64, Arc<TopicView>>,
}

impl Directory {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Directory {
            store,
            apps: DashMap::new(),
            accounts: DashMap::new(),
            topics: DashMap::new(),
        }
    }

    /// The cached topic, without touching the store.
    pub fn cached_topic(&self, topic_id: u64) -> Option<Arc<TopicView>> {
        self.topics.get(&topic_id).map(|t| t.clone())
    }

    /// The topic, loading it into the cache on a miss.
    pub async fn topic(&self, topic_id: u64) -> StoreResult<Option<Arc<TopicView>>> {
        if let Some(t) = self.cached_topic(topic_id) {
            return Ok(Some(t));
        }
        self.refresh_topic(topic_id).await
    }

    /// Re-reads the topic after a change and installs it unless a newer one is there.
    pub async fn refresh_topic(&self, topic_id: u64) -> StoreResult<Option<Arc<TopicView>>> {
        let Some(topic) = self.store.topic(topic_id).await? else {
            return Ok(None);
        };
        let fresh = Arc::new(TopicView::new(topic));
        let mut entry = self.topics.entry(topic_id).or_insert_with(|| fresh.clone());
        if entry.topic.version < fresh.topic.version {
            *entry = fresh;
        }
        Ok(Some(entry.clone()))
    }

    /// The app with this id, from cache or store.
    pub async fn app(&self, app_id: u64) -> StoreResult<Option<App>> {
        if let Some(app) = self.apps.get(&app_id) {
            return Ok(Some(app.clone()));
        }
        let app = self.store.app(app_id).await?;
        if let Some(app) = &app {
            self.apps.insert(app_id, app.clone());
        }
        Ok(app)
    }

    /// The uuid of (app, account), created on first use.
    pub async fn uuid(&self, app_id: u64, account: &str) -> StoreResult<u64> {
        if let Some(uuid) = self.accounts.get(&(app_id, account.to_owned())) {
            return Ok(*uuid);
        }
        let uuid = self
            .store
            .account(app_id, account, true)
            .await?
            .ok_or_else(|| crate::store::StoreError::NotFound(account.to_owned()))?;
        if self.accounts.len() >= MAX_CACHED_ACCOUNTS {
            self.accounts.clear();
        }
        self.accounts.insert((app_id, account.to_owned()), uuid);
        Ok(uuid)
    }
}
