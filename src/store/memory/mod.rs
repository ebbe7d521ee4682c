//! An in-memory store: every aggregate in maps behind one lock, nothing durable.
//! It has the semantics of the embedded store (the conformance suite runs on both)
//! and serves the unit tests of the router and the session, which then need no
//! files. Not a production backend: it forgets everything on exit.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use async_trait::async_trait;
use parking_lot::Mutex;
use rand::Rng;

use super::{
    Account, App, AppSettings, AppStore, AppendOutcome, BlacklistStore, Member, MessageStore,
    NewMessage, Order, Store, StoreError, StoreResult, StoredMessage, TimelineRange, Topic,
    TopicStore, TopicSummary, TopicUpdate,
};
use crate::message::Target;

mod history;
mod outbox;
use crate::time::now_ms;

/// `to` of a membership that has not ended.
const OPEN: u64 = u64::MAX;

#[derive(Debug, Clone)]
struct TopicRow {
    app_id: u64,
    owner: u64,
    name: String,
    bulletin: String,
    dismissed: bool,
    version: u64,
    created_ms: u64,
    /// Current members in join order.
    members: Vec<u64>,
}

#[derive(Debug, Default)]
struct Inner {
    apps: BTreeMap<u64, App>,
    settings: HashMap<u64, AppSettings>,
    accounts: HashMap<(u64, String), u64>,
    names: HashMap<u64, String>,
    /// uuid → expiry (temporary accounts only).
    expires: HashMap<u64, u64>,
    /// Expired accounts whose data is not swept yet.
    retired: BTreeSet<u64>,
    /// Accounts ever created (uuids are never reused).
    created: u64,
    /// owner → peer → (last seq, hidden up to).
    contacts: HashMap<u64, HashMap<u64, (u64, u64)>>,
    /// (lower uuid, higher uuid) → the conversation's sequences.
    conversations: HashMap<(u64, u64), BTreeSet<u64>>,
    /// (owner, topic) → cleared up to seq.
    cleared: HashMap<(u64, u64), u64>,
    messages: HashMap<u64, StoredMessage>,
    dedup: HashMap<(u64, String), (u64, u64)>,
    topic_logs: HashMap<u64, BTreeSet<u64>>,
    cursors: HashMap<(u64, String), u64>,
    blacklists: HashMap<u64, BTreeSet<u64>>,
    topics: HashMap<u64, TopicRow>,
    /// (uuid, topic, from, to): what a member reads of the topic log.
    memberships: Vec<(u64, u64, u64, u64)>,
    /// The callback outbox: rows by message sequence, batches by batch id.
    callbacks: BTreeMap<u64, outbox::CallbackRow>,
    callback_batches: BTreeMap<u64, outbox::BatchRow>,
    /// Deleted apps (their messages are past retention).
    deleted_apps: BTreeSet<u64>,
}

/// The in-memory [`Store`].
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore::default()
    }
}

impl Inner {
    fn find(&self, app_id: u64, name: &str) -> Option<Account> {
        let uuid = *self.accounts.get(&(app_id, name.to_owned()))?;
        Some(Account {
            uuid,
            expires_ms: self.expires.get(&uuid).copied().unwrap_or(0),
        })
    }

    fn account(&mut self, app_id: u64, name: &str, create: bool, now_ms: u64) -> Option<Account> {
        match self.find(app_id, name) {
            Some(a) if !a.expired_at(now_ms) => return Some(a),
            Some(a) if create => self.retire(a.uuid),
            _ if !create => return None,
            _ => {}
        }
        self.created += 1;
        let uuid = self.created;
        let ttl = self.settings.get(&app_id).map_or(0, |s| s.user_ttl_secs);
        let expires_ms = if ttl > 0 {
            now_ms.saturating_add(ttl.saturating_mul(1000))
        } else {
            0
        };
        self.accounts.insert((app_id, name.to_owned()), uuid);
        self.names.insert(uuid, name.to_owned());
        if expires_ms > 0 {
            self.expires.insert(uuid, expires_ms);
        }
        Some(Account { uuid, expires_ms })
    }

    /// Frees an expired account's name and queues its data for the sweep.
    fn retire(&mut self, uuid: u64) {
        self.accounts.retain(|_, u| *u != uuid);
        self.expires.remove(&uuid);
        self.retired.insert(uuid);
    }

    /// Deletes a retired account's data; returns the topics it left.
    fn purge(&mut self, uuid: u64, boundary: u64) -> Vec<u64> {
        self.cursors.retain(|(u, _), _| *u != uuid);
        self.contacts.remove(&uuid);
        self.cleared.retain(|(owner, _), _| *owner != uuid);
        self.blacklists.remove(&uuid);
        let mut left = Vec::new();
        for (&topic_id, t) in &mut self.topics {
            if t.members.contains(&uuid) {
                t.members.retain(|u| *u != uuid);
                t.version += 1;
                left.push(topic_id);
            }
        }
        for m in &mut self.memberships {
            if m.0 == uuid && m.3 == OPEN {
                m.3 = boundary;
            }
        }
        self.retired.remove(&uuid);
        left
    }

    fn delete_message(&mut self, seq: u64) {
        self.callbacks.remove(&seq);
        let Some(m) = self.messages.remove(&seq) else {
            return;
        };
        let e = &m.envelope;
        self.dedup.remove(&(e.from_uuid, e.packet_id.clone()));
        match &e.target {
            Target::Topic { topic_id } => {
                if let Some(log) = self.topic_logs.get_mut(topic_id) {
                    log.remove(&seq);
                }
            }
            Target::User { uuid, .. } => {
                let pair = (e.from_uuid.min(*uuid), e.from_uuid.max(*uuid));
                if let Some(c) = self.conversations.get_mut(&pair) {
                    c.remove(&seq);
                }
                for (owner, peer) in [(*uuid, e.from_uuid), (e.from_uuid, *uuid)] {
                    if let Some(c) = self.contacts.get_mut(&owner) {
                        if c.get(&peer).is_some_and(|(last, _)| *last == seq) {
                            c.remove(&peer);
                        }
                    }
                }
            }
        }
    }

    fn touch_contact(&mut self, owner: u64, peer: u64, seq: u64) {
        let (last, _) = self
            .contacts
            .entry(owner)
            .or_default()
            .entry(peer)
            .or_insert((seq, 0));
        *last = (*last).max(seq);
    }

    /// What device `resource` of `uuid` sees in `after < seq < before`.
    fn user_messages(
        &self,
        uuid: u64,
        resource: &str,
        after: u64,
        before: u64,
        limit: usize,
        order: Order,
    ) -> Vec<StoredMessage> {
        let before = if before == 0 { u64::MAX } else { before };
        let mut seqs: BTreeSet<u64> = BTreeSet::new();
        for (&peer, &(last, _)) in self.contacts.get(&uuid).into_iter().flatten() {
            if last <= after {
                continue;
            }
            let Some(conversation) = self.conversations.get(&(uuid.min(peer), uuid.max(peer)))
            else {
                continue;
            };
            if after.saturating_add(1) >= before {
                break;
            }
            for &seq in conversation.range(after.saturating_add(1)..before) {
                let m = &self.messages[&seq];
                let blocked = matches!(m.envelope.target, Target::User { blocked: true, .. });
                if (!blocked || m.envelope.from_uuid == uuid)
                    && m.envelope.visible_to(uuid, resource)
                {
                    seqs.insert(seq);
                }
            }
        }
        for &(member, topic_id, from, to) in &self.memberships {
            let (lo, hi) = (from.max(after), to.min(before));
            if member != uuid || lo >= hi {
                continue;
            }
            if let Some(log) = self.topic_logs.get(&topic_id) {
                seqs.extend(log.range(lo.saturating_add(1)..hi));
            }
        }
        let pick = |seq: &u64| self.messages[seq].clone();
        match order {
            Order::OldestFirst => seqs.iter().take(limit).map(pick).collect(),
            Order::NewestFirst => seqs.iter().rev().take(limit).map(pick).collect(),
        }
    }

    fn topic(&self, topic_id: u64) -> Option<Topic> {
        let t = self.topics.get(&topic_id)?;
        let name_of = |uuid: &u64| self.names.get(uuid).cloned().unwrap_or_default();
        Some(Topic {
            topic_id,
            app_id: t.app_id,
            owner_uuid: t.owner,
            owner_account: name_of(&t.owner),
            name: t.name.clone(),
            bulletin: t.bulletin.clone(),
            dismissed: t.dismissed,
            version: t.version,
            members: t
                .members
                .iter()
                .map(|uuid| Member {
                    uuid: *uuid,
                    account: name_of(uuid),
                })
                .collect(),
        })
    }

    fn add_members(
        &mut self,
        topic_id: u64,
        uuids: &[u64],
        limit: usize,
        boundary: u64,
    ) -> StoreResult<Vec<u64>> {
        let t = self
            .topics
            .get_mut(&topic_id)
            .ok_or_else(|| StoreError::NotFound(format!("topic {topic_id}")))?;
        let mut seen: HashSet<u64> = t.members.iter().copied().collect();
        let count = seen.len();
        let new: Vec<u64> = uuids.iter().copied().filter(|u| seen.insert(*u)).collect();
        if count + new.len() > limit {
            return Err(StoreError::Invalid(format!(
                "topic member limit is {limit}: it has {count} members, {} more would exceed it",
                new.len()
            )));
        }
        t.members.extend(&new);
        t.version += 1;
        for &uuid in &new {
            self.memberships.push((uuid, topic_id, boundary, OPEN));
        }
        Ok(new)
    }

    fn close_memberships(&mut self, topic_id: u64, uuids: Option<&[u64]>, boundary: u64) {
        for m in &mut self.memberships {
            if m.1 == topic_id && m.3 == OPEN && uuids.is_none_or(|u| u.contains(&m.0)) {
                m.3 = boundary;
            }
        }
    }
}

impl Store for MemoryStore {
    fn close(&self) {}
}

#[async_trait]
impl AppStore for MemoryStore {
    async fn create_app(&self, name: &str) -> StoreResult<App> {
        let app = super::new_app(name);
        self.inner.lock().apps.insert(app.app_id, app.clone());
        Ok(app)
    }

    async fn list_apps(&self) -> StoreResult<Vec<App>> {
        Ok(self.inner.lock().apps.values().cloned().collect())
    }

    async fn app(&self, app_id: u64) -> StoreResult<Option<App>> {
        Ok(self.inner.lock().apps.get(&app_id).cloned())
    }

    async fn account(
        &self,
        app_id: u64,
        account: &str,
        create: bool,
        now_ms: u64,
    ) -> StoreResult<Option<Account>> {
        Ok(self.inner.lock().account(app_id, account, create, now_ms))
    }

    async fn accounts(
        &self,
        app_id: u64,
        accounts: Vec<String>,
        now_ms: u64,
    ) -> StoreResult<Vec<Account>> {
        let mut inner = self.inner.lock();
        Ok(accounts
            .iter()
            .filter_map(|a| inner.account(app_id, a, true, now_ms))
            .collect())
    }

    async fn set_app_settings(&self, app_id: u64, settings: AppSettings) -> StoreResult<()> {
        let mut inner = self.inner.lock();
        if !inner.apps.contains_key(&app_id) {
            return Err(StoreError::NotFound(format!("app {app_id}")));
        }
        inner.settings.insert(app_id, settings);
        Ok(())
    }

    async fn app_settings(&self, app_id: u64) -> StoreResult<AppSettings> {
        Ok(self
            .inner
            .lock()
            .settings
            .get(&app_id)
            .cloned()
            .unwrap_or_default())
    }

    async fn rename_app(&self, app_id: u64, name: &str) -> StoreResult<App> {
        let mut inner = self.inner.lock();
        let app = inner
            .apps
            .get_mut(&app_id)
            .ok_or_else(|| StoreError::NotFound(format!("app {app_id}")))?;
        app.name = name.to_owned();
        Ok(app.clone())
    }

    async fn rotate_app_secret(&self, app_id: u64, tokens_until_ms: u64) -> StoreResult<App> {
        let mut inner = self.inner.lock();
        let app = inner
            .apps
            .get_mut(&app_id)
            .ok_or_else(|| StoreError::NotFound(format!("app {app_id}")))?;
        let old = std::mem::replace(&mut app.app_secret, super::new_app_secret());
        app.previous_secret = Some(old);
        app.previous_secret_until_ms = tokens_until_ms;
        Ok(app.clone())
    }

    async fn delete_app(&self, app_id: u64, now_ms: u64) -> StoreResult<()> {
        self.inner.lock().delete_app(app_id, now_ms)
    }
}

#[async_trait]
impl MessageStore for MemoryStore {
    async fn append_with_callbacks(
        &self,
        messages: Vec<NewMessage>,
        callbacks: Vec<super::NewCallback>,
    ) -> StoreResult<Vec<AppendOutcome>> {
        let mut inner = self.inner.lock();
        let ids: Vec<(u64, u64)> = messages
            .iter()
            .map(|m| (m.seq, m.envelope.app_id))
            .collect();
        let mut outcomes = Vec::with_capacity(messages.len());
        for m in messages {
            let e = &m.envelope;
            let key = (e.from_uuid, e.packet_id.clone());
            if let Some(&(seq, ts)) = inner.dedup.get(&key) {
                outcomes.push(AppendOutcome::Duplicate { seq, ts });
                continue;
            }
            inner.dedup.insert(key, (m.seq, m.ts));
            match &e.target {
                Target::Topic { topic_id } => {
                    inner.topic_logs.entry(*topic_id).or_default().insert(m.seq);
                }
                Target::User { uuid, blocked, .. } => {
                    if !blocked {
                        inner.touch_contact(*uuid, e.from_uuid, m.seq);
                    }
                    inner.touch_contact(e.from_uuid, *uuid, m.seq);
                    let pair = (e.from_uuid.min(*uuid), e.from_uuid.max(*uuid));
                    inner.conversations.entry(pair).or_default().insert(m.seq);
                }
            }
            inner.messages.insert(m.seq, m);
            outcomes.push(AppendOutcome::Stored);
        }
        inner.queue_callbacks(&ids, &outcomes, callbacks);
        Ok(outcomes)
    }

    async fn timeline(
        &self,
        range: TimelineRange,
        resource: &str,
    ) -> StoreResult<Vec<StoredMessage>> {
        Ok(self.inner.lock().user_messages(
            range.uuid,
            resource,
            range.after,
            range.before,
            range.limit,
            range.order,
        ))
    }

    async fn count_after(
        &self,
        uuid: u64,
        resource: &str,
        after: u64,
        cap: usize,
    ) -> StoreResult<usize> {
        let inner = self.inner.lock();
        Ok(inner
            .user_messages(uuid, resource, after, 0, cap, Order::OldestFirst)
            .len())
    }

    async fn cursor(&self, uuid: u64, resource: &str) -> StoreResult<Option<u64>> {
        Ok(self
            .inner
            .lock()
            .cursors
            .get(&(uuid, resource.to_owned()))
            .copied())
    }

    async fn max_cursor(&self, uuid: u64) -> StoreResult<u64> {
        let inner = self.inner.lock();
        Ok(inner
            .cursors
            .iter()
            .filter(|((u, _), _)| *u == uuid)
            .map(|(_, seq)| *seq)
            .max()
            .unwrap_or(0))
    }

    async fn set_cursors(&self, cursors: Vec<(u64, String, u64)>) -> StoreResult<()> {
        let mut inner = self.inner.lock();
        for (uuid, resource, seq) in cursors {
            let cursor = inner.cursors.entry((uuid, resource)).or_insert(0);
            *cursor = (*cursor).max(seq);
        }
        Ok(())
    }

    async fn max_sequence(&self) -> StoreResult<u64> {
        Ok(self
            .inner
            .lock()
            .messages
            .keys()
            .max()
            .copied()
            .unwrap_or(0))
    }

    async fn flush(&self) -> StoreResult<()> {
        Ok(())
    }
}

#[async_trait]
impl BlacklistStore for MemoryStore {
    async fn blacklist_add(&self, owner: u64, black: u64) -> StoreResult<()> {
        self.inner
            .lock()
            .blacklists
            .entry(owner)
            .or_default()
            .insert(black);
        Ok(())
    }

    async fn blacklist_remove(&self, owner: u64, black: u64) -> StoreResult<()> {
        if let Some(list) = self.inner.lock().blacklists.get_mut(&owner) {
            list.remove(&black);
        }
        Ok(())
    }

    async fn blacklist_of(&self, owner: u64) -> StoreResult<Vec<u64>> {
        let inner = self.inner.lock();
        Ok(inner
            .blacklists
            .get(&owner)
            .map(|l| l.iter().copied().collect())
            .unwrap_or_default())
    }
}

#[async_trait]
impl TopicStore for MemoryStore {
    async fn create_topic(
        &self,
        app_id: u64,
        owner: u64,
        name: &str,
        members: Vec<u64>,
        limit: usize,
        boundary: u64,
    ) -> StoreResult<Topic> {
        let mut inner = self.inner.lock();
        let topic_id = rand::rng().random_range(1_000_000_000_000u64..9_000_000_000_000_000);
        inner.topics.insert(
            topic_id,
            TopicRow {
                app_id,
                owner,
                name: name.to_owned(),
                bulletin: String::new(),
                dismissed: false,
                version: 0,
                created_ms: now_ms(),
                members: Vec::new(),
            },
        );
        let mut all = vec![owner];
        all.extend(members);
        if let Err(e) = inner.add_members(topic_id, &all, limit, boundary) {
            inner.topics.remove(&topic_id);
            return Err(e);
        }
        inner
            .topic(topic_id)
            .ok_or_else(|| StoreError::NotFound(format!("topic {topic_id}")))
    }

    async fn topic(&self, topic_id: u64) -> StoreResult<Option<Topic>> {
        Ok(self.inner.lock().topic(topic_id))
    }

    async fn topics_of(&self, uuid: u64) -> StoreResult<Vec<TopicSummary>> {
        let inner = self.inner.lock();
        let mut mine: Vec<(u64, u64, TopicSummary)> = inner
            .topics
            .iter()
            .filter(|(_, t)| !t.dismissed && t.members.contains(&uuid))
            .map(|(&topic_id, t)| {
                let summary = TopicSummary {
                    topic_id,
                    owner_uuid: t.owner,
                    owner_account: inner.names.get(&t.owner).cloned().unwrap_or_default(),
                    name: t.name.clone(),
                    bulletin: t.bulletin.clone(),
                };
                (t.created_ms, topic_id, summary)
            })
            .collect();
        mine.sort_by_key(|(created, id, _)| (*created, *id));
        Ok(mine.into_iter().map(|(_, _, s)| s).collect())
    }

    async fn was_member(&self, uuid: u64, topic_id: u64) -> StoreResult<bool> {
        Ok(self
            .inner
            .lock()
            .memberships
            .iter()
            .any(|m| m.0 == uuid && m.1 == topic_id))
    }

    async fn add_members(
        &self,
        topic_id: u64,
        uuids: Vec<u64>,
        limit: usize,
        boundary: u64,
    ) -> StoreResult<Vec<u64>> {
        self.inner
            .lock()
            .add_members(topic_id, &uuids, limit, boundary)
    }

    async fn start_memberships(
        &self,
        topic_id: u64,
        uuids: Vec<u64>,
        boundary: u64,
    ) -> StoreResult<()> {
        for m in &mut self.inner.lock().memberships {
            if m.1 == topic_id && m.3 == OPEN && uuids.contains(&m.0) {
                m.2 = boundary;
            }
        }
        Ok(())
    }

    async fn remove_members(
        &self,
        topic_id: u64,
        uuids: Vec<u64>,
        boundary: u64,
    ) -> StoreResult<()> {
        let mut inner = self.inner.lock();
        inner.close_memberships(topic_id, Some(&uuids), boundary);
        if let Some(t) = inner.topics.get_mut(&topic_id) {
            t.members.retain(|u| !uuids.contains(u));
            t.version += 1;
        }
        Ok(())
    }

    async fn update_topic(&self, topic_id: u64, update: TopicUpdate) -> StoreResult<()> {
        let mut inner = self.inner.lock();
        if let Some(t) = inner.topics.get_mut(&topic_id) {
            if let Some(owner) = update.owner_uuid {
                t.owner = owner;
            }
            if let Some(name) = update.name {
                t.name = name;
            }
            if let Some(bulletin) = update.bulletin {
                t.bulletin = bulletin;
            }
            t.version += 1;
        }
        Ok(())
    }

    async fn dismiss_topic(&self, topic_id: u64, boundary: u64) -> StoreResult<()> {
        let mut inner = self.inner.lock();
        inner.close_memberships(topic_id, None, boundary);
        if let Some(t) = inner.topics.get_mut(&topic_id) {
            t.dismissed = true;
            t.members.clear();
            t.version += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn conformance_suite() {
        crate::store::conformance::run_all(|| (Arc::new(MemoryStore::new()) as Arc<dyn Store>, ()))
            .await;
    }
}
