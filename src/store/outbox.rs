//! The message-callback outbox (消息回调), in two parts:
//!
//! - **batches**: the callbacks of one commit for one app, written as one row in
//!   the same transaction as their messages (one write per commit, not per
//!   message), and deleted once every callback in it has an outcome;
//! - **rows**: one per callback that failed an attempt — its retries, or its
//!   failure after the last retry (until replayed). A batch's callback that has a
//!   row is governed by the row.
//!
//! A callback is keyed by its message's sequence, which is also the delivery id a
//! receiver dedups on. A batch is keyed by the sequence of its first callback. The
//! delivery itself is `crate::callbacks`.

use async_trait::async_trait;

use super::{StoreResult, StoredMessage};

/// Which of the manual's four callback bodies a message becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallbackKind {
    /// p2p, a device of the recipient was online.
    Normal = 1,
    /// p2p, none of the recipient's devices was online.
    Offline = 2,
    /// topic, every member (but the sender) had a device online.
    NormalTopic = 3,
    /// topic, some members had no device online.
    OfflineTopic = 4,
}

impl CallbackKind {
    /// The manual's `msgType`.
    pub fn msg_type(self) -> &'static str {
        match self {
            CallbackKind::Normal => "NORMAL_MSG",
            CallbackKind::Offline => "OFFLINE_MSG",
            CallbackKind::NormalTopic => "NORMAL_TOPIC_MSG",
            CallbackKind::OfflineTopic => "OFFLINE_TOPIC_MSG",
        }
    }

    /// The kind stored as `code` (unknown codes read as `Normal`).
    pub fn from_code(code: i64) -> Self {
        match code {
            2 => CallbackKind::Offline,
            3 => CallbackKind::NormalTopic,
            4 => CallbackKind::OfflineTopic,
            _ => CallbackKind::Normal,
        }
    }
}

/// A callback to write with the message at `index` of the same append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCallback {
    pub index: usize,
    pub kind: CallbackKind,
    /// Topic messages: the `toAccounts` of the body (empty for p2p).
    pub to_accounts: Vec<String>,
}

/// A callback due for delivery, with the message it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCallback {
    pub seq: u64,
    pub app_id: u64,
    pub kind: CallbackKind,
    pub to_accounts: Vec<String>,
    /// Attempts made so far.
    pub attempts: u32,
    /// The batch it came from (`None`: from its own row, after a failed attempt).
    pub batch: Option<u64>,
    /// The message (`None` if it is no longer stored: deleted by retention).
    pub message: Option<StoredMessage>,
}

/// The callbacks of one commit for one app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackBatch {
    /// The sequence of its first callback.
    pub batch_id: u64,
    pub app_id: u64,
    /// Callbacks written in it (those with a row included).
    pub size: usize,
    pub callbacks: Vec<PendingCallback>,
}

/// The outcome of one attempt, with what its row needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackResult {
    pub seq: u64,
    pub app_id: u64,
    pub kind: CallbackKind,
    pub to_accounts: Vec<String>,
    pub outcome: CallbackOutcome,
}

/// A callback that failed its last retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedCallback {
    pub seq: u64,
    pub app_id: u64,
    pub kind: CallbackKind,
    pub attempts: u32,
    pub last_error: String,
    /// When it was given up, unix ms.
    pub failed_ms: u64,
}

/// What became of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackOutcome {
    /// The receiver answered 200: the row goes.
    Delivered,
    /// Try again at `due_ms`.
    Retry { due_ms: u64, error: String },
    /// No retry left: kept as failed until replayed.
    Failed { now_ms: u64, error: String },
}

/// The outbox. Batches are written by [`super::MessageStore::append_with_callbacks`].
#[async_trait]
pub trait CallbackStore: Send + Sync + 'static {
    /// The first app above `after_app` with pending (not failed) rows, and the
    /// earliest due time among them.
    async fn next_callback_app(&self, after_app: u64) -> StoreResult<Option<(u64, u64)>>;
    /// Up to `limit` pending rows of `app_id` due at `now_ms`, earliest due first.
    async fn due_callbacks(
        &self,
        app_id: u64,
        now_ms: u64,
        limit: usize,
    ) -> StoreResult<Vec<PendingCallback>>;
    /// The apps that have batches.
    async fn callback_batch_apps(&self) -> StoreResult<Vec<u64>>;
    /// Batches of `app_id` with `batch_id >= from`, oldest first, until their
    /// sizes reach `budget` callbacks (at least one batch); a batch lists its
    /// callbacks that have no row.
    async fn callback_batches(
        &self,
        app_id: u64,
        from: u64,
        budget: usize,
    ) -> StoreResult<Vec<CallbackBatch>>;
    /// Records attempts (a failed one writes or updates the callback's row, a
    /// delivered one deletes it) and deletes `finished` batches, in one write.
    async fn record_callbacks(
        &self,
        results: Vec<CallbackResult>,
        finished: Vec<u64>,
    ) -> StoreResult<()>;
    /// Failed callbacks of `app_id` with `seq > after_seq`, oldest first, at most `limit`.
    async fn failed_callbacks(
        &self,
        app_id: u64,
        after_seq: u64,
        limit: usize,
    ) -> StoreResult<Vec<FailedCallback>>;
    /// Makes failed callbacks of `app_id` pending again, due at `now_ms`, with their
    /// retries restored: those in `seqs`, or all if `None`. Returns how many.
    async fn replay_callbacks(
        &self,
        app_id: u64,
        seqs: Option<Vec<u64>>,
        now_ms: u64,
    ) -> StoreResult<usize>;
    /// (pending, failed) callbacks of `app_id`, or of every app (pending counts
    /// every callback of a batch until the batch is finished).
    async fn callback_counts(&self, app_id: Option<u64>) -> StoreResult<(u64, u64)>;
}

/// How the SQL stores keep the outbox as text: `toAccounts` joined by a newline
/// (names hold no control characters), and a batch row's callbacks as JSON
/// `[[seq, kind, "toAccounts joined"]]`. Sans-IO, shared by SQLite and PostgreSQL.
pub(crate) mod text {
    use std::collections::BTreeMap;

    use crate::store::{AppendOutcome, NewCallback, NewMessage};

    const SEPARATOR: &str = "\n";

    pub(crate) fn join_accounts(accounts: &[String]) -> String {
        accounts.join(SEPARATOR)
    }

    pub(crate) fn split_accounts(text: &str) -> Vec<String> {
        if text.is_empty() {
            return Vec::new();
        }
        text.split(SEPARATOR).map(str::to_owned).collect()
    }

    /// One entry of a batch row: (seq, kind code, toAccounts joined).
    pub(crate) type Entry = (u64, u8, String);

    /// The entries of a batch row (none if the text is not what this server wrote).
    pub(crate) fn entries(text: &str) -> Vec<Entry> {
        serde_json::from_str(text).unwrap_or_default()
    }

    /// A `callback_batches` row to write.
    pub(crate) struct BatchRow {
        pub(crate) batch_id: u64,
        pub(crate) app_id: u64,
        pub(crate) size: usize,
        pub(crate) entries: String,
    }

    /// One row per app of the callbacks whose message this append stored, keyed
    /// by its first callback's sequence.
    pub(crate) fn batch_rows(
        messages: &[NewMessage],
        outcomes: &[AppendOutcome],
        callbacks: &[NewCallback],
    ) -> Vec<BatchRow> {
        let mut batches: BTreeMap<u64, (u64, Vec<serde_json::Value>)> = BTreeMap::new();
        for cb in callbacks {
            let (Some(m), Some(AppendOutcome::Stored)) =
                (messages.get(cb.index), outcomes.get(cb.index))
            else {
                continue;
            };
            let batch = batches
                .entry(m.envelope.app_id)
                .or_insert_with(|| (m.seq, Vec::new()));
            let to = join_accounts(&cb.to_accounts);
            batch.1.push(serde_json::json!([m.seq, cb.kind as u8, to]));
        }
        batches
            .into_iter()
            .map(|(app_id, (batch_id, entries))| BatchRow {
                batch_id,
                app_id,
                size: entries.len(),
                entries: serde_json::Value::Array(entries).to_string(),
            })
            .collect()
    }
}
