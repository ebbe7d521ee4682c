//! Topic membership: the one owner of who belongs to a topic, from which sequence.
//!
//! Every change — create, invite, quit, kick, update, dismiss — goes through
//! [`Topics`]: it checks the member limit before any account is created, reads the
//! sequence boundary of the change from the router, writes the store in one
//! transaction, refreshes the directory's snapshot (which the router checks sends
//! against), publishes a [`TopicChanged`] event to local subscribers, and in a cluster
//! waits until the other nodes have read the topic again (`Cluster::invalidate`).
//!
//! Boundaries: members added by a change read from the newest sequence assigned
//! after the router's view includes them (so a message is either before their
//! membership or delivered to them live, never lost in between); members removed see
//! nothing after the newest sequence assigned when the call returns.
//!
//! HTTP handlers (`api/topic.rs`) parse requests, check who may do what, and answer;
//! they make no membership decision of their own.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::directory::{Directory, TopicView};
use crate::router::Router;
use crate::store::{Store, StoreError, TopicUpdate};

/// Events kept for slow subscribers before the oldest are dropped.
const CHANGE_EVENTS: usize = 1024;

/// A topic changed in the store: snapshots older than `version` are stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicChanged {
    pub topic_id: u64,
    pub version: u64,
}

/// Why a membership change was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("topic member limit is {limit}: it has {have} members, {adding} more would exceed it")]
    OverLimit {
        limit: usize,
        have: usize,
        adding: usize,
    },
    #[error("unknown topic {0}")]
    Unknown(u64),
    #[error("temporary accounts cannot create topics (the app sets an account lifetime)")]
    TemporaryAccount,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The membership service.
pub struct Topics {
    store: Arc<dyn Store>,
    directory: Arc<Directory>,
    router: Router,
    default_limit: usize,
    changes: broadcast::Sender<TopicChanged>,
    /// The other nodes, told of every change (cluster mode).
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl Topics {
    pub fn new(
        store: Arc<dyn Store>,
        directory: Arc<Directory>,
        router: Router,
        default_limit: usize,
        cluster: Option<Arc<crate::cluster::Cluster>>,
    ) -> Self {
        Topics {
            store,
            directory,
            router,
            default_limit,
            changes: broadcast::channel(CHANGE_EVENTS).0,
            cluster,
        }
    }

    /// The newest sequence assigned so far: this node's; in a cluster also any
    /// other node's up to now (their sequences carry their clocks).
    fn newest_sequence(&self) -> u64 {
        let last = self.router.last_sequence();
        match &self.cluster {
            Some(_) => last.max(crate::sequence::floor_at(crate::time::now_ms())),
            None => last,
        }
    }

    /// Tells local subscribers of a change another node made (cluster mode).
    pub fn announce(&self, change: TopicChanged) {
        let _ = self.changes.send(change);
    }

    /// Change events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<TopicChanged> {
        self.changes.subscribe()
    }

    /// The app's member limit: its own, or the server's default.
    pub async fn member_limit(&self, app_id: u64) -> Result<usize, TopicError> {
        let custom = self
            .directory
            .app_entry(app_id)
            .await?
            .and_then(|e| e.settings.topic_member_limit);
        Ok(custom.map_or(self.default_limit, |n| n as usize))
    }

    /// Creates a topic owned by `owner` with the accounts `names` (the owner's own
    /// name among them is ignored); the limit is checked before any is created.
    pub async fn create(
        &self,
        app_id: u64,
        (owner_uuid, owner_account): (u64, &str),
        name: &str,
        mut names: Vec<String>,
    ) -> Result<Arc<TopicView>, TopicError> {
        names.retain(|n| n != owner_account);
        // 临时帐号: an account with a lifetime cannot create groups.
        if self
            .directory
            .account(app_id, owner_account)
            .await?
            .expires_ms
            != 0
        {
            return Err(TopicError::TemporaryAccount);
        }
        let limit = self.member_limit(app_id).await?;
        if names.len() + 1 > limit {
            return Err(TopicError::OverLimit {
                limit,
                have: 0,
                adding: names.len() + 1,
            });
        }
        let members = self.directory.uuids(app_id, names).await?;
        let boundary = self.newest_sequence();
        let topic = self
            .store
            .create_topic(app_id, owner_uuid, name, members, limit, boundary)
            .await?;
        let everyone = topic.members.iter().map(|m| m.uuid).collect();
        self.admit(topic.topic_id, everyone).await
    }

    /// Adds the accounts `names` that are not members yet; the limit is checked
    /// before any account is created.
    pub async fn invite(
        &self,
        view: &TopicView,
        mut names: Vec<String>,
    ) -> Result<Arc<TopicView>, TopicError> {
        let topic = &view.topic;
        let current: HashSet<&str> = topic.members.iter().map(|m| m.account.as_str()).collect();
        names.retain(|n| !current.contains(n.as_str()));
        let limit = self.member_limit(topic.app_id).await?;
        let have = topic.members.len();
        if have + names.len() > limit {
            return Err(TopicError::OverLimit {
                limit,
                have,
                adding: names.len(),
            });
        }
        let members = self.directory.uuids(topic.app_id, names).await?;
        let boundary = self.newest_sequence();
        let added = self
            .store
            .add_members(topic.topic_id, members, limit, boundary)
            .await?;
        self.admit(topic.topic_id, added).await
    }

    /// Removes members (quit or kick): they see nothing sent after this returns.
    pub async fn remove(
        &self,
        topic_id: u64,
        uuids: Vec<u64>,
    ) -> Result<Arc<TopicView>, TopicError> {
        let boundary = self.newest_sequence().saturating_add(1);
        self.store.remove_members(topic_id, uuids, boundary).await?;
        self.changed(topic_id).await
    }

    /// Changes owner, name or bulletin.
    pub async fn update(
        &self,
        topic_id: u64,
        change: TopicUpdate,
    ) -> Result<Arc<TopicView>, TopicError> {
        self.store.update_topic(topic_id, change).await?;
        self.changed(topic_id).await
    }

    /// Dismisses the topic: every membership ends now.
    pub async fn dismiss(&self, topic_id: u64) -> Result<(), TopicError> {
        let boundary = self.newest_sequence().saturating_add(1);
        self.store.dismiss_topic(topic_id, boundary).await?;
        self.changed(topic_id).await.map(|_| ())
    }

    /// After members were added in the store: the router's view first, then the new
    /// members' reading starts after the newest sequence. Every message sent before
    /// the view changed is either before that boundary (not theirs) or was delivered
    /// to them live; none falls between.
    async fn admit(&self, topic_id: u64, added: Vec<u64>) -> Result<Arc<TopicView>, TopicError> {
        let view = self.changed(topic_id).await?;
        if !added.is_empty() {
            let boundary = self.newest_sequence();
            self.store
                .start_memberships(topic_id, added, boundary)
                .await?;
        }
        Ok(view)
    }

    /// Re-reads the topic into the directory and tells subscribers.
    async fn changed(&self, topic_id: u64) -> Result<Arc<TopicView>, TopicError> {
        let view = self
            .directory
            .refresh_topic(topic_id)
            .await?
            .ok_or(TopicError::Unknown(topic_id))?;
        // No subscriber is fine.
        let _ = self.changes.send(TopicChanged {
            topic_id,
            version: view.topic.version,
        });
        // The change applies on every node when the call returns.
        if let Some(cluster) = &self.cluster {
            let what = crate::cluster_pb::invalidate::What::TopicId(topic_id);
            cluster.invalidate(self.store.as_ref(), what).await;
        }
        Ok(view)
    }
}

impl std::fmt::Debug for Topics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topics").finish_non_exhaustive()
    }
}
