//! The embedded store: SQLite in WAL mode in the data directory.
//!
//! One writer thread owns the only write connection. Callers queue write operations
//! on a bounded channel; the writer runs every operation waiting (up to a cap) inside
//! one transaction, each in its own savepoint, commits once (`synchronous=FULL`: the
//! WAL is fsync'd) and only then answers the callers — group commit. Reads run on a
//! small pool of read connections on the blocking thread pool; WAL lets them proceed
//! while the writer commits.

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use async_trait::async_trait;
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{
    Account, App, AppSettings, AppStore, AppendOutcome, BlacklistStore, Contact, HistoryRange,
    HistoryStore, MessageStore, NewCallback, NewMessage, Peer, Store, StoreError, StoreResult,
    StoredMessage, SweepPlan, SweepReport, SweepStore, TimelineRange, Topic, TopicStore,
    TopicSummary, TopicUpdate,
};
use crate::time::now_ms;

mod accounts;
mod apps;
mod history;
mod messages;
mod outbox;
mod schema;
mod sweep;
mod topics;
mod writer;

use messages::{append_in, count_user_messages, user_messages};
use schema::{
    migrate, open_connection, private_dir, private_file, READER_CACHE_KIB, WRITER_CACHE_KIB,
};
use writer::{checkpoint_loop, in_savepoint, writer_loop, WriteOp};

/// Size the WAL file is cut back to when it restarts after growing past it.
const WAL_SIZE_LIMIT_BYTES: i64 = 64 * 1024 * 1024;

/// Tuning of the embedded store.
#[derive(Debug, Clone, Copy)]
pub struct SqliteOptions {
    /// Read connections in the pool.
    pub readers: usize,
    /// Write operations queued before callers wait.
    pub write_queue: usize,
    /// Most write operations in one transaction.
    pub max_ops_per_commit: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            readers: 4,
            write_queue: 4096,
            max_ops_per_commit: 4096,
        }
    }
}

struct ReaderPool {
    conns: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

/// SQLite-backed [`Store`].
pub struct SqliteStore {
    writer: Mutex<Option<mpsc::Sender<WriteOp>>>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    /// Stops the checkpointer (dropping the sender wakes it).
    checkpointer: Mutex<Option<(std::sync::mpsc::Sender<()>, JoinHandle<()>)>>,
    readers: Arc<ReaderPool>,
}

impl SqliteStore {
    /// Opens (creating if needed) `dir/courier.db`, runs migrations and starts the writer.
    pub fn open(dir: &Path, options: SqliteOptions) -> StoreResult<SqliteStore> {
        private_dir(dir)?;
        let path = dir.join("courier.db");
        private_file(&path)?;
        let mut write_conn = open_connection(&path, WRITER_CACHE_KIB)?;
        migrate(&mut write_conn)?;
        // Checkpoints run on their own thread and connection (PASSIVE: they never block
        // the writer), so the group commit path does not pay for copying the WAL back.
        write_conn.execute_batch("PRAGMA wal_autocheckpoint = 0")?;
        // After a peak (a burst of large commits), the WAL file is cut back to this
        // size when it restarts instead of keeping its largest size on disk.
        write_conn.execute_batch(&format!(
            "PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES}"
        ))?;
        let checkpoint_conn = open_connection(&path, WRITER_CACHE_KIB)?;
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let checkpoint_thread = std::thread::Builder::new()
            .name("courier-store-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpoint_conn, stop_rx))
            .map_err(|e| StoreError::Database(format!("cannot start checkpoint thread: {e}")))?;
        let mut readers = Vec::with_capacity(options.readers);
        for _ in 0..options.readers.max(1) {
            readers.push(open_connection(&path, READER_CACHE_KIB)?);
        }
        let (tx, rx) = mpsc::channel::<WriteOp>(options.write_queue.max(1));
        let max_ops = options.max_ops_per_commit.max(1);
        let thread = std::thread::Builder::new()
            .name("courier-store-writer".into())
            .spawn(move || writer_loop(write_conn, rx, max_ops))
            .map_err(|e| StoreError::Database(format!("cannot start writer thread: {e}")))?;
        let permits = Arc::new(Semaphore::new(readers.len()));
        Ok(SqliteStore {
            writer: Mutex::new(Some(tx)),
            writer_thread: Mutex::new(Some(thread)),
            checkpointer: Mutex::new(Some((stop_tx, checkpoint_thread))),
            readers: Arc::new(ReaderPool {
                conns: Mutex::new(readers),
                permits,
            }),
        })
    }

    /// Commits what is queued, stops the writer and checkpoints the WAL.
    pub fn close(&self) {
        if let Some((stop, thread)) = self.checkpointer.lock().take() {
            drop(stop);
            let _ = thread.join();
        }
        drop(self.writer.lock().take());
        if let Some(thread) = self.writer_thread.lock().take() {
            let _ = thread.join();
        }
    }

    fn writer(&self) -> StoreResult<mpsc::Sender<WriteOp>> {
        self.writer.lock().clone().ok_or(StoreError::Closed)
    }

    /// Runs `f` in the writer's next transaction and answers after the commit.
    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let op: WriteOp = Box::new(move |conn| {
            let result = match conn {
                Some(conn) => in_savepoint(conn, f),
                None => Err(StoreError::Database("transaction did not begin".into())),
            };
            Box::new(move |committed| {
                let _ = tx.send(committed.and(result));
            })
        });
        self.writer()?
            .send(op)
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on a read connection on the blocking pool.
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let pool = self.readers.clone();
        // The permit moves into the blocking task: if this future is dropped (client
        // gone), the connection is still in use until the task puts it back.
        let permit = pool
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let conn = pool.conns.lock().pop().ok_or(StoreError::Closed)?;
        let joined = tokio::task::spawn_blocking(move || {
            let result = f(&conn);
            pool.conns.lock().push(conn);
            drop(permit);
            result
        })
        .await;
        joined.map_err(|e| StoreError::Database(format!("reader task failed: {e}")))?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

impl Store for SqliteStore {
    fn close(&self) {
        SqliteStore::close(self);
    }
}

#[async_trait]
impl AppStore for SqliteStore {
    async fn create_app(&self, name: &str) -> StoreResult<App> {
        let app = super::new_app(name);
        let stored = app.clone();
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO apps (app_id, name, app_key, app_secret, created_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    stored.app_id as i64,
                    stored.name,
                    stored.app_key,
                    stored.app_secret,
                    stored.created_ms as i64
                ],
            )?;
            Ok(())
        })
        .await?;
        Ok(app)
    }

    async fn list_apps(&self) -> StoreResult<Vec<App>> {
        self.read(apps::list).await
    }

    async fn app(&self, app_id: u64) -> StoreResult<Option<App>> {
        self.read(move |conn| apps::app(conn, app_id)).await
    }

    async fn account(
        &self,
        app_id: u64,
        account: &str,
        create: bool,
        now_ms: u64,
    ) -> StoreResult<Option<Account>> {
        let name = account.to_owned();
        let found = self
            .read(move |conn| accounts::find(conn, app_id, &name))
            .await?;
        match found {
            Some(a) if !a.expired_at(now_ms) => return Ok(Some(a)),
            _ if !create => return Ok(None),
            _ => {}
        }
        let name = account.to_owned();
        self.write(move |conn| accounts::find_or_create(conn, app_id, &name, now_ms).map(Some))
            .await
    }

    async fn accounts(
        &self,
        app_id: u64,
        names: Vec<String>,
        now_ms: u64,
    ) -> StoreResult<Vec<Account>> {
        let wanted = names.clone();
        let found = self
            .read(move |conn| {
                wanted
                    .iter()
                    .map(|name| accounts::find(conn, app_id, name))
                    .collect::<StoreResult<Vec<_>>>()
            })
            .await?;
        if found
            .iter()
            .all(|a| a.is_some_and(|a| !a.expired_at(now_ms)))
        {
            return Ok(found.into_iter().flatten().collect());
        }
        self.write(move |conn| {
            names
                .iter()
                .map(|name| accounts::find_or_create(conn, app_id, name, now_ms))
                .collect()
        })
        .await
    }

    async fn set_app_settings(&self, app_id: u64, settings: AppSettings) -> StoreResult<()> {
        self.write(move |conn| apps::set_settings(conn, app_id, &settings))
            .await
    }

    async fn app_settings(&self, app_id: u64) -> StoreResult<AppSettings> {
        self.read(move |conn| apps::settings(conn, app_id)).await
    }

    async fn rename_app(&self, app_id: u64, name: &str) -> StoreResult<App> {
        let name = name.to_owned();
        self.write(move |conn| apps::rename(conn, app_id, &name))
            .await
    }

    async fn rotate_app_secret(&self, app_id: u64, tokens_until_ms: u64) -> StoreResult<App> {
        let secret = super::new_app_secret();
        self.write(move |conn| apps::rotate_secret(conn, app_id, &secret, tokens_until_ms))
            .await
    }

    async fn delete_app(&self, app_id: u64, now_ms: u64) -> StoreResult<()> {
        self.write(move |conn| apps::delete(conn, app_id, now_ms))
            .await
    }
}

#[async_trait]
impl HistoryStore for SqliteStore {
    async fn history(&self, range: HistoryRange) -> StoreResult<Vec<StoredMessage>> {
        self.read(move |conn| history::history(conn, &range)).await
    }

    async fn contacts(
        &self,
        owner: u64,
        since_seq: u64,
        limit: usize,
    ) -> StoreResult<Vec<Contact>> {
        self.read(move |conn| history::contacts(conn, owner, since_seq, limit))
            .await
    }

    async fn clear_contact(&self, owner: u64, peer: Peer) -> StoreResult<()> {
        self.write(move |conn| history::clear_contact(conn, owner, peer))
            .await
    }
}

#[async_trait]
impl SweepStore for SqliteStore {
    async fn sweep(&self, plan: SweepPlan) -> StoreResult<SweepReport> {
        self.write(move |conn| sweep::sweep(conn, &plan)).await
    }
}

#[async_trait]
impl MessageStore for SqliteStore {
    async fn append_with_callbacks(
        &self,
        messages: Vec<NewMessage>,
        callbacks: Vec<NewCallback>,
    ) -> StoreResult<Vec<AppendOutcome>> {
        self.write(move |conn| {
            let outcomes = append_in(conn, &messages)?;
            if !callbacks.is_empty() {
                outbox::insert(conn, &messages, &outcomes, &callbacks)?;
            }
            Ok(outcomes)
        })
        .await
    }

    async fn timeline(
        &self,
        range: TimelineRange,
        resource: &str,
    ) -> StoreResult<Vec<StoredMessage>> {
        let resource = resource.to_owned();
        self.read(move |conn| {
            user_messages(
                conn,
                range.uuid,
                &resource,
                range.after,
                range.before,
                range.limit,
                range.order,
            )
        })
        .await
    }

    async fn count_after(
        &self,
        uuid: u64,
        resource: &str,
        after: u64,
        cap: usize,
    ) -> StoreResult<usize> {
        let resource = resource.to_owned();
        self.read(move |conn| count_user_messages(conn, uuid, &resource, after, cap))
            .await
    }

    async fn cursor(&self, uuid: u64, resource: &str) -> StoreResult<Option<u64>> {
        let resource = resource.to_owned();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT seq FROM cursors WHERE uuid = ?1 AND resource = ?2")?
                .query_row(params![uuid as i64, resource], |r| r.get::<_, i64>(0))
                .optional()?
                .map(|s| s as u64))
        })
        .await
    }

    async fn max_cursor(&self, uuid: u64) -> StoreResult<u64> {
        self.read(move |conn| {
            let max: Option<i64> = conn
                .prepare_cached("SELECT max(seq) FROM cursors WHERE uuid = ?1")?
                .query_row([uuid as i64], |r| r.get(0))?;
            Ok(max.unwrap_or(0) as u64)
        })
        .await
    }

    async fn set_cursors(&self, cursors: Vec<(u64, String, u64)>) -> StoreResult<()> {
        self.write(move |conn| {
            let mut stmt = conn.prepare_cached(
                "INSERT INTO cursors (uuid, resource, seq) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (uuid, resource) DO UPDATE SET seq = max(seq, excluded.seq)",
            )?;
            for (uuid, resource, seq) in &cursors {
                stmt.execute(params![*uuid as i64, resource, *seq as i64])?;
            }
            Ok(())
        })
        .await
    }

    async fn max_sequence(&self) -> StoreResult<u64> {
        self.read(|conn| {
            let max: Option<i64> =
                conn.query_row("SELECT max(seq) FROM messages", [], |r| r.get(0))?;
            Ok(max.unwrap_or(0) as u64)
        })
        .await
    }

    async fn flush(&self) -> StoreResult<()> {
        self.write(|_| Ok(())).await
    }
}

#[async_trait]
impl BlacklistStore for SqliteStore {
    async fn blacklist_add(&self, owner: u64, black: u64) -> StoreResult<()> {
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT OR IGNORE INTO blacklist (owner_uuid, black_uuid, created_ms) \
                 VALUES (?1, ?2, ?3)",
            )?
            .execute(params![owner as i64, black as i64, now_ms() as i64])?;
            Ok(())
        })
        .await
    }

    async fn blacklist_remove(&self, owner: u64, black: u64) -> StoreResult<()> {
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM blacklist WHERE owner_uuid = ?1 AND black_uuid = ?2")?
                .execute(params![owner as i64, black as i64])?;
            Ok(())
        })
        .await
    }

    async fn blacklist_of(&self, owner: u64) -> StoreResult<Vec<u64>> {
        self.read(move |conn| {
            let mut stmt =
                conn.prepare_cached("SELECT black_uuid FROM blacklist WHERE owner_uuid = ?1")?;
            let rows = stmt.query_map([owner as i64], |r| r.get::<_, i64>(0))?;
            Ok(rows
                .map(|r| r.map(|v| v as u64))
                .collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}

#[async_trait]
impl TopicStore for SqliteStore {
    async fn create_topic(
        &self,
        app_id: u64,
        owner: u64,
        name: &str,
        members: Vec<u64>,
        limit: usize,
        boundary: u64,
    ) -> StoreResult<Topic> {
        let name = name.to_owned();
        self.write(move |conn| {
            let id = topics::create(conn, app_id, owner, &name, &members, limit, boundary)?;
            topics::get(conn, id)?.ok_or_else(|| StoreError::NotFound(format!("topic {id}")))
        })
        .await
    }

    async fn topic(&self, topic_id: u64) -> StoreResult<Option<Topic>> {
        self.read(move |conn| topics::get(conn, topic_id)).await
    }

    async fn topics_of(&self, uuid: u64) -> StoreResult<Vec<TopicSummary>> {
        self.read(move |conn| topics::topics_of(conn, uuid)).await
    }

    async fn was_member(&self, uuid: u64, topic_id: u64) -> StoreResult<bool> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT 1 FROM topic_membership WHERE uuid = ?1 AND topic_id = ?2 LIMIT 1",
                )?
                .query_row(params![uuid as i64, topic_id as i64], |_| Ok(()))
                .optional()?
                .is_some())
        })
        .await
    }

    async fn add_members(
        &self,
        topic_id: u64,
        uuids: Vec<u64>,
        limit: usize,
        boundary: u64,
    ) -> StoreResult<Vec<u64>> {
        self.write(move |conn| topics::add_members(conn, topic_id, &uuids, limit, boundary))
            .await
    }

    async fn start_memberships(
        &self,
        topic_id: u64,
        uuids: Vec<u64>,
        boundary: u64,
    ) -> StoreResult<()> {
        self.write(move |conn| topics::start_memberships(conn, topic_id, &uuids, boundary))
            .await
    }

    async fn remove_members(
        &self,
        topic_id: u64,
        uuids: Vec<u64>,
        boundary: u64,
    ) -> StoreResult<()> {
        self.write(move |conn| topics::remove_members(conn, topic_id, &uuids, boundary))
            .await
    }

    async fn update_topic(&self, topic_id: u64, update: TopicUpdate) -> StoreResult<()> {
        self.write(move |conn| topics::update(conn, topic_id, &update))
            .await
    }

    async fn dismiss_topic(&self, topic_id: u64, boundary: u64) -> StoreResult<()> {
        self.write(move |conn| topics::dismiss(conn, topic_id, boundary))
            .await
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;

    #[tokio::test]
    async fn conformance_suite() {
        conformance::run_all(|| {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap();
            (std::sync::Arc::new(store) as std::sync::Arc<dyn Store>, dir)
        })
        .await;
    }

    #[tokio::test]
    async fn data_survives_reopen_and_cursors_only_advance() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap();
            let app = store.create_app("demo").await.unwrap();
            let now = conformance::NOW;
            assert_eq!(
                store.account(app.app_id, "bob", false, now).await.unwrap(),
                None
            );
            let uuid = store
                .account(app.app_id, "bob", true, now)
                .await
                .unwrap()
                .unwrap()
                .uuid;
            store
                .append(vec![conformance::msg(5, 1, uuid, "p")])
                .await
                .unwrap();
            store
                .set_cursors(vec![(uuid, "phone".into(), 5)])
                .await
                .unwrap();
            store
                .set_cursors(vec![(uuid, "phone".into(), 3)])
                .await
                .unwrap();
        }
        let store = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap();
        let apps = store.list_apps().await.unwrap();
        assert_eq!(apps.len(), 1);
        let uuid = store
            .account(apps[0].app_id, "bob", false, conformance::NOW)
            .await
            .unwrap()
            .unwrap()
            .uuid;
        assert_eq!(store.cursor(uuid, "phone").await.unwrap(), Some(5));
        assert_eq!(store.cursor(uuid, "tablet").await.unwrap(), None);
        assert_eq!(store.max_cursor(uuid).await.unwrap(), 5);
        // Dedup survives the restart too.
        assert_eq!(
            store
                .append(vec![conformance::msg(9, 1, uuid, "p")])
                .await
                .unwrap(),
            vec![AppendOutcome::Duplicate { seq: 5, ts: 1005 }]
        );
    }
}
