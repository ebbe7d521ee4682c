//! Persistence: the async [`Store`] traits and their records, backend-neutral.
//!
//! One sub-trait per aggregate — [`AppStore`] (apps, settings, accounts),
//! [`MessageStore`] (messages, timelines, cursors, dedup), [`TopicStore`] (topics,
//! members, membership intervals), [`BlacklistStore`], [`HistoryStore`] (history
//! and recent contacts), [`SweepStore`] (retention and expired accounts) and
//! [`CallbackStore`] (the message-callback outbox) —
//! gathered under [`Store`]; [`open`] picks the
//! backend from a [`StoreConfig`]. Errors are [`StoreError`], which names no backend.
//! `sqlite` is the embedded implementation (the default): every write goes through
//! one writer that commits many operations per transaction and fsync (group commit).

#[cfg(test)]
pub mod conformance;
pub mod cursors;
#[cfg(test)]
pub mod faulty;
pub mod memory;
mod merge;
mod outbox;
pub mod postgres;
pub mod sqlite;

pub use outbox::{
    CallbackBatch, CallbackKind, CallbackOutcome, CallbackResult, CallbackStore, FailedCallback,
    NewCallback, PendingCallback,
};

use async_trait::async_trait;

pub use sqlite::SqliteStore;

/// Store failures. Cloneable so one failed group commit can answer every caller in it.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(String),
    #[error("store is closed")]
    Closed,
    #[error("not found: {0}")]
    NotFound(String),
    #[error("invalid: {0}")]
    Invalid(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A tenant and its credentials.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct App {
    pub app_id: u64,
    pub name: String,
    pub app_key: String,
    pub app_secret: String,
    pub created_ms: u64,
    /// The secret before the last rotation: it still verifies tokens issued
    /// before the rotation, until `previous_secret_until_ms` (never app calls).
    #[serde(skip)]
    pub previous_secret: Option<String>,
    #[serde(skip)]
    pub previous_secret_until_ms: u64,
}

/// An account of an app: its uuid, and when it expires (temporary accounts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    pub uuid: u64,
    /// Unix ms after which the account is gone; 0 = never (not a temporary account).
    pub expires_ms: u64,
}

impl Account {
    /// Whether the account has expired at `now_ms`.
    pub fn expired_at(&self, now_ms: u64) -> bool {
        self.expires_ms != 0 && self.expires_ms <= now_ms
    }
}

/// Per-app settings kept in the store (the manual keeps them in its admin console).
/// `None` = the server's configured default.
#[derive(utoipa::ToSchema, Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppSettings {
    /// Where message callbacks are POSTed (http or https); `None` = no callbacks.
    pub callback_url: Option<String>,
    /// Lifetime of accounts created from now on, seconds; 0 = forever (临时帐号).
    pub user_ttl_secs: u64,
    /// Largest message payload, bytes (never above the server's `max_payload_bytes`).
    pub max_payload_bytes: Option<u32>,
    /// Topic member limit, if it overrides the server default.
    pub topic_member_limit: Option<u32>,
    /// Offline delivery window, seconds (`offline_ttl_secs`).
    pub offline_ttl_secs: Option<u64>,
    /// Messages pending at login that are all sent (`backlog_limit`).
    pub backlog_limit: Option<u32>,
    /// History retention, if it overrides the server default, seconds.
    pub history_retention_secs: Option<u64>,
    /// Recent-contacts window, seconds (`contacts_window_secs`).
    pub contacts_window_secs: Option<u64>,
    /// Messages per second one user may send (all its devices and pushes as it);
    /// `None` = no per-user send rate.
    pub send_rate_per_user: Option<u32>,
}

/// A message to persist: the envelope with the sequence and time the router gave it.
pub type NewMessage = crate::message::Sequenced;

/// What became of one appended message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Written with the sequence the router assigned.
    Stored,
    /// (sender, packetId) was already stored: here is the original.
    Duplicate { seq: u64, ts: u64 },
}

/// A stored message as read back: the envelope with its sequence and time.
pub type StoredMessage = crate::message::Sequenced;

/// A topic (group) and its members, oldest member first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    pub topic_id: u64,
    pub app_id: u64,
    pub owner_uuid: u64,
    pub owner_account: String,
    pub name: String,
    pub bulletin: String,
    pub dismissed: bool,
    /// Bumped by every change, so a cache keeps only the newest read.
    pub version: u64,
    pub members: Vec<Member>,
}

/// One member of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub uuid: u64,
    pub account: String,
}

/// A topic without its members (for "topics I belong to").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSummary {
    pub topic_id: u64,
    pub owner_uuid: u64,
    pub owner_account: String,
    pub name: String,
    pub bulletin: String,
}

/// A change to a topic's fields (owner only); `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicUpdate {
    pub owner_uuid: Option<u64>,
    pub name: Option<String>,
    pub bulletin: Option<String>,
}

/// Which end of a timeline range to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    OldestFirst,
    NewestFirst,
}

/// A range of a user's timeline: `after < seq < before` (`before == 0`: no bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelineRange {
    pub uuid: u64,
    pub after: u64,
    pub before: u64,
    pub limit: usize,
    pub order: Order,
}

/// Apps (tenants), their settings, and accounts.
///
/// An account that expired at `now_ms` (a temporary account past its lifetime) is
/// gone: lookups do not find it, and creating it again makes a new account (a new
/// uuid, with the app's current lifetime) while the old one waits for the sweep.
#[async_trait]
pub trait AppStore: Send + Sync + 'static {
    /// Creates an app with fresh credentials.
    async fn create_app(&self, name: &str) -> StoreResult<App>;
    async fn list_apps(&self) -> StoreResult<Vec<App>>;
    async fn app(&self, app_id: u64) -> StoreResult<Option<App>>;
    /// (app, account), created if `create` and absent (or expired).
    async fn account(
        &self,
        app_id: u64,
        account: &str,
        create: bool,
        now_ms: u64,
    ) -> StoreResult<Option<Account>>;
    /// `accounts` of one app, in order, creating the missing ones in one write.
    async fn accounts(
        &self,
        app_id: u64,
        accounts: Vec<String>,
        now_ms: u64,
    ) -> StoreResult<Vec<Account>>;
    /// Replaces an app's settings ([`StoreError::NotFound`] for an unknown app).
    async fn set_app_settings(&self, app_id: u64, settings: AppSettings) -> StoreResult<()>;
    /// An app's settings (the defaults for an unknown app).
    async fn app_settings(&self, app_id: u64) -> StoreResult<AppSettings>;
    /// Renames an app ([`StoreError::NotFound`] for an unknown app).
    async fn rename_app(&self, app_id: u64, name: &str) -> StoreResult<App>;
    /// Gives an app a fresh random appSecret; the old one stops working at once
    /// for app calls, and verifies tokens (issued before) until `tokens_until_ms`.
    async fn rotate_app_secret(&self, app_id: u64, tokens_until_ms: u64) -> StoreResult<App>;
    /// Deletes an app: it is gone at once (no token, no login, no call); its
    /// accounts expire at `now_ms` and its topics are dismissed, so the sweep
    /// kicks their sessions and deletes their data, and its messages are deleted by
    /// the sweep as if past retention. Its pending callbacks are dropped.
    async fn delete_app(&self, app_id: u64, now_ms: u64) -> StoreResult<()>;
}

/// Messages, what each device reads of them, device cursors and the dedup record.
#[async_trait]
pub trait MessageStore: Send + Sync + 'static {
    /// Persists messages in one transaction, deduplicating on (sender, packetId).
    async fn append(&self, messages: Vec<NewMessage>) -> StoreResult<Vec<AppendOutcome>> {
        self.append_with_callbacks(messages, Vec::new()).await
    }
    /// [`MessageStore::append`], and in the same transaction the callbacks of the
    /// messages actually stored (a duplicate's callback is not written again).
    async fn append_with_callbacks(
        &self,
        messages: Vec<NewMessage>,
        callbacks: Vec<NewCallback>,
    ) -> StoreResult<Vec<AppendOutcome>>;
    /// Reads a range of a user's timeline as device `resource` sees it: messages
    /// addressed to another resource of this user are left out.
    async fn timeline(
        &self,
        range: TimelineRange,
        resource: &str,
    ) -> StoreResult<Vec<StoredMessage>>;
    /// Counts the timeline entries after `after` that device `resource` would read,
    /// stopping at `cap`.
    async fn count_after(
        &self,
        uuid: u64,
        resource: &str,
        after: u64,
        cap: usize,
    ) -> StoreResult<usize>;
    /// The cursor of one device, if it was ever seen.
    async fn cursor(&self, uuid: u64, resource: &str) -> StoreResult<Option<u64>>;
    /// The highest cursor of any device of the user (0 if none).
    async fn max_cursor(&self, uuid: u64) -> StoreResult<u64>;
    /// Advances device cursors `(uuid, resource, seq)` (never moves one back).
    async fn set_cursors(&self, cursors: Vec<(u64, String, u64)>) -> StoreResult<()>;
    /// Highest stored sequence, so a restarted sequencer stays above it.
    async fn max_sequence(&self) -> StoreResult<u64>;
    /// Waits until every write queued so far is committed.
    async fn flush(&self) -> StoreResult<()>;
}

/// One-way p2p blacklists (单聊黑名单): `owner` receives nothing from the accounts
/// on its list.
#[async_trait]
pub trait BlacklistStore: Send + Sync + 'static {
    /// Puts `black` on `owner`'s list (no change if it is there already).
    async fn blacklist_add(&self, owner: u64, black: u64) -> StoreResult<()>;
    /// Takes `black` off `owner`'s list (no change if it is not there).
    async fn blacklist_remove(&self, owner: u64, black: u64) -> StoreResult<()>;
    /// Everyone on `owner`'s list.
    async fn blacklist_of(&self, owner: u64) -> StoreResult<Vec<u64>>;
}

/// The messages of one conversation, as history reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversation {
    /// Both directions between two accounts (either order).
    Pair(u64, u64),
    /// A topic, as far as `viewer` may read it (its membership intervals).
    Topic(u64),
}

/// A history read: `from_seq <= seq < to_seq` of a conversation as `viewer` sees it
/// (a p2p message the viewer's blacklist blocked is left out; a topic's messages
/// only within the viewer's membership intervals), at most `limit` from the `order`
/// end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryRange {
    pub conversation: Conversation,
    pub viewer: u64,
    pub from_seq: u64,
    pub to_seq: u64,
    pub limit: usize,
    pub order: Order,
}

/// The other side of a recent conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    User(u64),
    Topic(u64),
}

/// One entry of a user's recent contacts: the peer, its name (account or topic
/// name), and the conversation's last message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub peer: Peer,
    pub name: String,
    pub last: StoredMessage,
}

impl Contact {
    /// `owner`'s conversation with `peer` whose newest message is `last`: named by
    /// the topic's name, else by the other account (the recipient of what `owner`
    /// sent, the sender of what it received).
    pub(crate) fn of(
        owner: u64,
        peer: Peer,
        topic_name: Option<String>,
        last: StoredMessage,
    ) -> Self {
        let name = match (topic_name, &last.envelope.target) {
            (Some(name), _) => name,
            (None, crate::message::Target::User { account, .. })
                if last.envelope.from_uuid == owner =>
            {
                account.clone()
            }
            (None, _) => last.envelope.from_account.clone(),
        };
        Contact { peer, name, last }
    }
}

/// The columns the SQL stores keep a message's target in: (to_uuid, to_account,
/// to_resource, topic_id, blocked), 0 / "" meaning none.
pub(crate) fn target_columns(target: &crate::message::Target) -> (u64, &str, &str, u64, bool) {
    match target {
        crate::message::Target::User {
            uuid,
            account,
            resource,
            blocked,
        } => (
            *uuid,
            account.as_str(),
            resource.as_deref().unwrap_or(""),
            0,
            *blocked,
        ),
        crate::message::Target::Topic { topic_id } => (0, "", "", *topic_id, false),
    }
}

/// Message history (消息漫游) and recent contacts (最近通讯列表).
#[async_trait]
pub trait HistoryStore: Send + Sync + 'static {
    /// One range of a conversation, read through its index (never a scan).
    async fn history(&self, range: HistoryRange) -> StoreResult<Vec<StoredMessage>>;
    /// `owner`'s conversations whose last message has `seq >= since_seq`, newest
    /// first, at most `limit`: p2p peers (maintained at commit) and the topics it is
    /// a member of (their last message read from the topic log). A conversation
    /// cleared with [`HistoryStore::clear_contact`] is left out until a newer
    /// message.
    async fn contacts(&self, owner: u64, since_seq: u64, limit: usize)
        -> StoreResult<Vec<Contact>>;
    /// Removes one conversation from `owner`'s contacts until its next message.
    async fn clear_contact(&self, owner: u64, peer: Peer) -> StoreResult<()>;
}

/// What one sweep pass may delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepPlan {
    pub now_ms: u64,
    /// Server-wide history retention, ms; apps may override it (their settings).
    pub retention_ms: u64,
    /// Most messages (and most expired accounts) handled in this pass.
    pub batch: usize,
}

/// What one sweep pass deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Messages past retention deleted (with their topic-log and conversation
    /// rows).
    pub messages: usize,
    /// Accounts found expired in this pass (their sessions must be kicked).
    pub expired: Vec<u64>,
    /// Expired accounts whose data was deleted in this pass (found expired by the
    /// sweep or replaced when their name was used again): their sessions must be
    /// kicked too.
    pub purged: Vec<u64>,
    /// Topics that lost members in this pass (caches must reload them).
    pub topics: Vec<u64>,
    /// True if a limit stopped the pass: there is more to sweep now.
    pub more: bool,
}

/// Background maintenance: retention and expired accounts.
#[async_trait]
pub trait SweepStore: Send + Sync + 'static {
    /// One bounded pass, in one short transaction: retires expired accounts and
    /// deletes their data, and deletes messages past their app's retention.
    async fn sweep(&self, plan: SweepPlan) -> StoreResult<SweepReport>;
}

/// Topics, their members, and the membership intervals that decide what a member
/// reads from the topic log.
#[async_trait]
pub trait TopicStore: Send + Sync + 'static {
    /// Creates a topic owned by `owner` with `members` (owner first; duplicates
    /// ignored). Membership starts after sequence `boundary`. Fails with
    /// [`StoreError::Invalid`] above `limit` members.
    async fn create_topic(
        &self,
        app_id: u64,
        owner: u64,
        name: &str,
        members: Vec<u64>,
        limit: usize,
        boundary: u64,
    ) -> StoreResult<Topic>;
    /// A topic with its members (dismissed topics included).
    async fn topic(&self, topic_id: u64) -> StoreResult<Option<Topic>>;
    /// The live topics a user belongs to.
    async fn topics_of(&self, uuid: u64) -> StoreResult<Vec<TopicSummary>>;
    /// Whether `uuid` belongs or ever belonged to the topic.
    async fn was_member(&self, uuid: u64, topic_id: u64) -> StoreResult<bool>;
    /// Adds members (existing ones are skipped) from after sequence `boundary`;
    /// returns the uuids actually added.
    async fn add_members(
        &self,
        topic_id: u64,
        uuids: Vec<u64>,
        limit: usize,
        boundary: u64,
    ) -> StoreResult<Vec<u64>>;
    /// Moves the start of the current membership of `uuids` to after `boundary`.
    async fn start_memberships(
        &self,
        topic_id: u64,
        uuids: Vec<u64>,
        boundary: u64,
    ) -> StoreResult<()>;
    /// Removes members; they see nothing after sequence `boundary`.
    async fn remove_members(
        &self,
        topic_id: u64,
        uuids: Vec<u64>,
        boundary: u64,
    ) -> StoreResult<()>;
    async fn update_topic(&self, topic_id: u64, update: TopicUpdate) -> StoreResult<()>;
    /// Marks the topic dismissed and ends every membership at `boundary`.
    async fn dismiss_topic(&self, topic_id: u64, boundary: u64) -> StoreResult<()>;
}

/// A whole store: every aggregate, plus its lifecycle. `Arc<dyn Store>` is what the
/// server holds; [`open`] picks the backend.
pub trait Store:
    AppStore + MessageStore + TopicStore + BlacklistStore + HistoryStore + SweepStore + CallbackStore
{
    /// Commits what is queued and releases the backend (blocking: call it from a
    /// blocking context at shutdown).
    fn close(&self);

    /// The node ids of the nodes that have this store open now (a shared store
    /// knows; one that only this node opens answers none).
    fn live_nodes(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = StoreResult<Vec<u8>>> + Send + '_>>
    {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }
}

/// A new app with fresh random credentials (any backend stores what this makes).
pub(crate) fn new_app(name: &str) -> App {
    use rand::Rng;
    let mut rng = rand::rng();
    // Below 2^53 so JavaScript clients read it exactly as a JSON number.
    let app_id = rng.random_range(2_000_000_000_000u64..9_000_000_000_000_000);
    let app_key = format!(
        "{:013}",
        rng.random_range(1_000_000_000_000u64..10_000_000_000_000)
    );
    App {
        app_id,
        name: name.to_owned(),
        app_key,
        app_secret: new_app_secret(),
        created_ms: crate::time::now_ms(),
        previous_secret: None,
        previous_secret_until_ms: 0,
    }
}

/// A fresh random appSecret (18 random bytes, base64).
pub(crate) fn new_app_secret() -> String {
    use base64::Engine;
    use rand::Rng;
    let secret: [u8; 18] = rand::rng().random();
    base64::engine::general_purpose::STANDARD.encode(secret)
}

/// Which backend to open, and its settings.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// The embedded SQLite store in a data directory.
    Embedded {
        dir: std::path::PathBuf,
        options: sqlite::SqliteOptions,
    },
    /// A PostgreSQL database (shared by the nodes of a cluster).
    Postgres {
        url: String,
        options: postgres::PgOptions,
    },
}

/// Opens the configured backend.
pub async fn open(config: &StoreConfig) -> StoreResult<std::sync::Arc<dyn Store>> {
    match config {
        StoreConfig::Embedded { dir, options } => {
            Ok(std::sync::Arc::new(SqliteStore::open(dir, *options)?))
        }
        StoreConfig::Postgres { url, options } => Ok(std::sync::Arc::new(
            postgres::PgStore::open(url, options.clone()).await?,
        )),
    }
}
