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
use base64::Engine;
use parking_lot::Mutex;
use rand::Rng;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{
    App, AppStore, AppendOutcome, MessageStore, NewMessage, Order, Store, StoreError, StoreResult,
    StoredMessage, TimelineRange, Topic, TopicStore, TopicSummary, TopicUpdate,
};
use crate::time::now_ms;

mod topics;

/// Completes a write operation once its transaction's commit result is known.
type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// A write operation, run by the writer thread inside the open transaction.
/// Given `None` (the transaction could not begin) it must not touch the database and
/// only yields a completion to answer with the error.
type WriteOp = Box<dyn FnOnce(Option<&Connection>) -> Completion + Send>;

/// Ordered schema migrations; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE apps (
    app_id     INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    app_key    TEXT    NOT NULL UNIQUE,
    app_secret TEXT    NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE accounts (
    uuid       INTEGER PRIMARY KEY,
    app_id     INTEGER NOT NULL,
    account    TEXT    NOT NULL,
    created_ms INTEGER NOT NULL,
    UNIQUE (app_id, account)
);
CREATE TABLE messages (
    seq           INTEGER PRIMARY KEY,
    ts            INTEGER NOT NULL,
    app_id        INTEGER NOT NULL,
    from_uuid     INTEGER NOT NULL,
    from_account  TEXT    NOT NULL,
    from_resource TEXT    NOT NULL,
    packet_id     TEXT    NOT NULL,
    to_uuid       INTEGER NOT NULL,
    to_account    TEXT    NOT NULL,
    to_resource   TEXT    NOT NULL,
    biz_type      TEXT    NOT NULL,
    payload       BLOB    NOT NULL
);
CREATE UNIQUE INDEX messages_dedup ON messages (from_uuid, packet_id);
CREATE TABLE timeline (
    uuid INTEGER NOT NULL,
    seq  INTEGER NOT NULL,
    PRIMARY KEY (uuid, seq)
) WITHOUT ROWID;
CREATE TABLE cursors (
    uuid     INTEGER NOT NULL,
    resource TEXT    NOT NULL,
    seq      INTEGER NOT NULL,
    PRIMARY KEY (uuid, resource)
) WITHOUT ROWID;
"#,
    r#"
ALTER TABLE messages ADD COLUMN topic_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE apps ADD COLUMN topic_member_limit INTEGER;
CREATE TABLE topics (
    topic_id   INTEGER PRIMARY KEY,
    app_id     INTEGER NOT NULL,
    owner_uuid INTEGER NOT NULL,
    name       TEXT    NOT NULL,
    bulletin   TEXT    NOT NULL DEFAULT '',
    created_ms INTEGER NOT NULL,
    dismissed  INTEGER NOT NULL DEFAULT 0,
    version    INTEGER NOT NULL DEFAULT 0
);
-- Current members, in the order they joined.
CREATE TABLE topic_members (
    topic_id INTEGER NOT NULL,
    uuid     INTEGER NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (topic_id, uuid)
) WITHOUT ROWID;
CREATE INDEX topic_members_by_user ON topic_members (uuid);
-- Membership history as sequence intervals (from_seq, to_seq): a member reads the
-- topic log entries sent while it belonged. to_seq is i64::MAX while it belongs.
CREATE TABLE topic_membership (
    uuid     INTEGER NOT NULL,
    topic_id INTEGER NOT NULL,
    from_seq INTEGER NOT NULL,
    to_seq   INTEGER NOT NULL
);
CREATE INDEX topic_membership_by_user ON topic_membership (uuid, topic_id);
-- A topic's messages, stored once (the rows live in messages).
CREATE TABLE topic_log (
    topic_id INTEGER NOT NULL,
    seq      INTEGER NOT NULL,
    PRIMARY KEY (topic_id, seq)
) WITHOUT ROWID;
"#,
];

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

/// Commits between the writer's own checkpoint passes.
const WRITER_CHECKPOINT_EVERY: u32 = 64;

/// How often the checkpointer copies the WAL into the database file.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// SQLite-backed [`Store`].
pub struct SqliteStore {
    writer: Mutex<Option<mpsc::Sender<WriteOp>>>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    /// Stops the checkpointer (dropping the sender wakes it).
    checkpointer: Mutex<Option<(std::sync::mpsc::Sender<()>, JoinHandle<()>)>>,
    readers: Arc<ReaderPool>,
}

/// Page cache of the writer connection, KiB. SQLite walks the writer's page cache
/// at the end of every transaction (`pcache1TruncateUnsafe`): with a 32 MiB cache
/// that walk was 9 % of the server's CPU at 25k msgs/s; 4 MiB measured best (p99 at
/// 25k msgs/s over 50 pairs 15–16 ms vs 16–21 ms; 1 MiB was worse again).
const WRITER_CACHE_KIB: i64 = 4 * 1024;
/// Page cache of each read connection, KiB (backlog and history reads).
const READER_CACHE_KIB: i64 = 32 * 1024;

fn open_connection(path: &Path, cache_kib: i64) -> StoreResult<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch(&format!(
        "PRAGMA page_size = 2048;
         PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = OFF;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -{cache_kib};"
    ))?;
    Ok(conn)
}

/// Creates the data dir readable by its owner only (0700): it holds app secrets.
/// An existing directory's mode is tightened too.
fn private_dir(dir: &Path) -> StoreResult<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let fail = |e: std::io::Error| StoreError::Database(format!("data dir {}: {e}", dir.display()));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(fail)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(fail)
}

/// Creates the database file 0600 before SQLite opens it (SQLite gives its WAL and
/// shared-memory files the database file's mode).
fn private_file(path: &Path) -> StoreResult<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let fail = |e: std::io::Error| StoreError::Database(format!("{}: {e}", path.display()));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    // WAL files left by an older version keep their own mode: tighten them too.
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let side = Path::new(&name);
        if side.exists() {
            std::fs::set_permissions(side, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
        }
    }
    Ok(())
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > MIGRATIONS.len() {
        return Err(StoreError::Invalid(format!(
            "data dir schema version {version} is newer than this binary ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
    }
    Ok(())
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

fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> StoreResult<T>,
) -> StoreResult<T> {
    conn.execute_batch("SAVEPOINT op")?;
    let result = f(conn).and_then(|v| {
        conn.execute_batch("RELEASE op")?;
        Ok(v)
    });
    if result.is_err() {
        // Undo this op's writes so they do not commit with the others.
        let _ = conn.execute_batch("ROLLBACK TO op; RELEASE op");
    }
    result
}

fn writer_loop(conn: Connection, mut rx: mpsc::Receiver<WriteOp>, max_ops: usize) {
    let mut completions: Vec<Completion> = Vec::new();
    let mut commits_since_checkpoint = 0u32;
    while let Some(first) = rx.blocking_recv() {
        commits_since_checkpoint += 1;
        if commits_since_checkpoint >= WRITER_CHECKPOINT_EVERY {
            // Under constant load the background checkpointer never catches up with
            // the end of the WAL, so the WAL could never restart and would grow
            // without bound. Between transactions nothing is appended, so this pass
            // (copying only what the background pass has not) lets the next
            // transaction restart the WAL from its beginning.
            commits_since_checkpoint = 0;
            if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)") {
                tracing::debug!(error = %e, "store: writer checkpoint skipped");
            }
        }
        let t_begin = std::time::Instant::now();
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let err = StoreError::from(e);
            tracing::error!(error = %err, "store: cannot begin transaction");
            // Answer without running: outside a transaction its writes would commit
            // on their own while its caller is told it failed.
            first(None)(Err(err));
            continue;
        }
        completions.push(first(Some(&conn)));
        while completions.len() < max_ops {
            match rx.try_recv() {
                Ok(op) => completions.push(op(Some(&conn))),
                Err(_) => break,
            }
        }
        let t_commit = std::time::Instant::now();
        let committed = conn.execute_batch("COMMIT").map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            let err = StoreError::from(e);
            tracing::error!(error = %err, "store: commit failed");
            err
        });
        tracing::trace!(
            ops = completions.len(),
            work_us = (t_commit - t_begin).as_micros() as u64,
            commit_us = t_commit.elapsed().as_micros() as u64,
            "store: group commit"
        );
        for done in completions.drain(..) {
            done(committed.clone());
        }
    }
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
        tracing::warn!(error = %e, "store: final checkpoint failed");
    }
}

fn checkpoint_loop(conn: Connection, stop: std::sync::mpsc::Receiver<()>) {
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
        stop.recv_timeout(CHECKPOINT_INTERVAL)
    {
        if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)") {
            tracing::warn!(error = %e, "store: checkpoint failed");
        }
    }
}

fn random_app(name: &str) -> App {
    let mut rng = rand::rng();
    // Below 2^53 so JavaScript clients read it exactly as a JSON number.
    let app_id = rng.random_range(2_000_000_000_000u64..9_000_000_000_000_000);
    let app_key = format!(
        "{:013}",
        rng.random_range(1_000_000_000_000u64..10_000_000_000_000)
    );
    let secret: [u8; 18] = rng.random();
    App {
        app_id,
        name: name.to_owned(),
        app_key,
        app_secret: base64::engine::general_purpose::STANDARD.encode(secret),
        created_ms: now_ms(),
    }
}

fn row_to_app(r: &rusqlite::Row<'_>) -> rusqlite::Result<App> {
    Ok(App {
        app_id: r.get::<_, i64>(0)? as u64,
        name: r.get(1)?,
        app_key: r.get(2)?,
        app_secret: r.get(3)?,
        created_ms: r.get::<_, i64>(4)? as u64,
    })
}

/// Reads what a user sees, oldest or newest first, at most `limit` messages with
/// `after < seq < before`: its p2p timeline merged with the log of every topic it
/// belonged to, within each membership interval. Every part is one index-ordered,
/// limited range read (the timeline, then each overlapping membership's slice of its
/// topic log), merged here; nothing is sorted whole, however large the backlog.
fn user_messages(
    conn: &Connection,
    uuid: u64,
    resource: &str,
    after: u64,
    before: u64,
    limit: usize,
    order: Order,
) -> StoreResult<Vec<StoredMessage>> {
    let dir = match order {
        Order::OldestFirst => "ASC",
        Order::NewestFirst => "DESC",
    };
    let before = if before == 0 { i64::MAX } else { before as i64 };
    let timeline_sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM timeline t JOIN messages m ON m.seq = t.seq \
         WHERE t.uuid = ?1 AND t.seq > ?2 AND t.seq < ?3 AND {VISIBLE_TO_DEVICE} \
         ORDER BY t.seq {dir} LIMIT ?5"
    );
    let mut out = conn
        .prepare_cached(&timeline_sql)?
        .query_map(
            params![uuid as i64, after as i64, before, resource, limit as i64],
            row_to_message,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    let memberships = conn
        .prepare_cached(
            "SELECT topic_id, max(from_seq, ?2), min(to_seq, ?3) FROM topic_membership \
             WHERE uuid = ?1 AND to_seq > ?2 AND from_seq < ?3",
        )?
        .query_map(params![uuid as i64, after as i64, before], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    if memberships.is_empty() {
        return Ok(out);
    }
    let log_sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM topic_log l JOIN messages m ON m.seq = l.seq \
         WHERE l.topic_id = ?1 AND l.seq > ?2 AND l.seq < ?3 ORDER BY l.seq {dir} LIMIT ?4"
    );
    let mut log = conn.prepare_cached(&log_sql)?;
    for (topic_id, from, to) in memberships {
        let rows = log.query_map(params![topic_id, from, to, limit as i64], row_to_message)?;
        for row in rows {
            out.push(row?);
        }
    }
    match order {
        Order::OldestFirst => out.sort_unstable_by_key(|m| m.seq),
        Order::NewestFirst => out.sort_unstable_by_key(|m| std::cmp::Reverse(m.seq)),
    }
    out.dedup_by_key(|m| m.seq);
    out.truncate(limit);
    Ok(out)
}

/// Timeline filter for one device (`?1` = uuid, `?4` = resource): a message addressed
/// to one resource of this user is seen only by that device; messages this user sent
/// to others are seen by all its devices.
const VISIBLE_TO_DEVICE: &str = "(m.to_resource = '' OR m.to_uuid != ?1 OR m.to_resource = ?4)";

const MESSAGE_COLUMNS: &str = "m.seq, m.ts, m.packet_id, m.from_uuid, m.from_account, \
     m.from_resource, m.to_uuid, m.to_account, m.to_resource, m.biz_type, m.payload, m.topic_id";

fn row_to_message(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMessage> {
    Ok(StoredMessage {
        seq: r.get::<_, i64>(0)? as u64,
        ts: r.get::<_, i64>(1)? as u64,
        packet_id: r.get(2)?,
        from_uuid: r.get::<_, i64>(3)? as u64,
        from_account: r.get(4)?,
        from_resource: r.get(5)?,
        to_uuid: r.get::<_, i64>(6)? as u64,
        to_account: r.get(7)?,
        to_resource: r.get(8)?,
        biz_type: r.get(9)?,
        payload: r.get::<_, Vec<u8>>(10)?.into(),
        topic_id: r.get::<_, i64>(11)? as u64,
    })
}

fn append_in(conn: &Connection, messages: &[NewMessage]) -> StoreResult<Vec<AppendOutcome>> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO messages (seq, ts, app_id, from_uuid, from_account, from_resource, \
         packet_id, to_uuid, to_account, to_resource, biz_type, payload, topic_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
         ON CONFLICT (from_uuid, packet_id) DO NOTHING",
    )?;
    let mut existing = conn
        .prepare_cached("SELECT seq, ts FROM messages WHERE from_uuid = ?1 AND packet_id = ?2")?;
    let mut timeline =
        conn.prepare_cached("INSERT OR IGNORE INTO timeline (uuid, seq) VALUES (?1, ?2)")?;
    let mut topic_log =
        conn.prepare_cached("INSERT OR IGNORE INTO topic_log (topic_id, seq) VALUES (?1, ?2)")?;
    let mut outcomes = Vec::with_capacity(messages.len());
    for m in messages {
        let inserted = insert.execute(params![
            m.seq as i64,
            m.ts as i64,
            m.app_id as i64,
            m.from_uuid as i64,
            m.from_account,
            m.from_resource,
            m.packet_id,
            m.to_uuid as i64,
            m.to_account,
            m.to_resource,
            m.biz_type,
            m.payload.as_ref(),
            m.topic_id as i64,
        ])?;
        if inserted == 0 {
            let (seq, ts) = existing.query_row(params![m.from_uuid as i64, m.packet_id], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
            })?;
            outcomes.push(AppendOutcome::Duplicate { seq, ts });
            continue;
        }
        if m.topic_id != 0 {
            // Stored once, in the topic's log, whatever the topic's size.
            topic_log.execute(params![m.topic_id as i64, m.seq as i64])?;
            outcomes.push(AppendOutcome::Stored);
            continue;
        }
        timeline.execute(params![m.to_uuid as i64, m.seq as i64])?;
        if m.from_uuid != m.to_uuid {
            timeline.execute(params![m.from_uuid as i64, m.seq as i64])?;
        }
        outcomes.push(AppendOutcome::Stored);
    }
    Ok(outcomes)
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
        let app = random_app(name);
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
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT app_id, name, app_key, app_secret, created_ms FROM apps ORDER BY created_ms",
            )?;
            let rows = stmt.query_map([], row_to_app)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn app(&self, app_id: u64) -> StoreResult<Option<App>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT app_id, name, app_key, app_secret, created_ms FROM apps WHERE app_id = ?1",
                )?
                .query_row([app_id as i64], row_to_app)
                .optional()?)
        })
        .await
    }

    async fn account(&self, app_id: u64, account: &str, create: bool) -> StoreResult<Option<u64>> {
        let name = account.to_owned();
        let found = self
            .read(move |conn| {
                Ok(conn
                    .prepare_cached("SELECT uuid FROM accounts WHERE app_id = ?1 AND account = ?2")?
                    .query_row(params![app_id as i64, name], |r| r.get::<_, i64>(0))
                    .optional()?)
            })
            .await?;
        if let Some(uuid) = found {
            return Ok(Some(uuid as u64));
        }
        if !create {
            return Ok(None);
        }
        let name = account.to_owned();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO accounts (app_id, account, created_ms) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (app_id, account) DO NOTHING",
            )?
            .execute(params![app_id as i64, name, now_ms() as i64])?;
            let uuid: i64 = conn
                .prepare_cached("SELECT uuid FROM accounts WHERE app_id = ?1 AND account = ?2")?
                .query_row(params![app_id as i64, name], |r| r.get(0))?;
            Ok(Some(uuid as u64))
        })
        .await
    }

    async fn accounts(&self, app_id: u64, accounts: Vec<String>) -> StoreResult<Vec<u64>> {
        let names = accounts.clone();
        let found = self
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT uuid FROM accounts WHERE app_id = ?1 AND account = ?2",
                )?;
                let mut out = Vec::with_capacity(names.len());
                for name in &names {
                    out.push(
                        stmt.query_row(params![app_id as i64, name], |r| r.get::<_, i64>(0))
                            .optional()?
                            .map(|u| u as u64),
                    );
                }
                Ok(out)
            })
            .await?;
        if found.iter().all(Option::is_some) {
            return Ok(found.into_iter().flatten().collect());
        }
        self.write(move |conn| {
            let mut insert = conn.prepare_cached(
                "INSERT INTO accounts (app_id, account, created_ms) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (app_id, account) DO NOTHING",
            )?;
            let mut select = conn
                .prepare_cached("SELECT uuid FROM accounts WHERE app_id = ?1 AND account = ?2")?;
            let now = now_ms() as i64;
            let mut out = Vec::with_capacity(accounts.len());
            for (name, known) in accounts.iter().zip(found) {
                let uuid = match known {
                    Some(uuid) => uuid,
                    None => {
                        insert.execute(params![app_id as i64, name, now])?;
                        select.query_row(params![app_id as i64, name], |r| r.get::<_, i64>(0))?
                            as u64
                    }
                };
                out.push(uuid);
            }
            Ok(out)
        })
        .await
    }

    async fn set_topic_member_limit(&self, app_id: u64, limit: Option<u32>) -> StoreResult<()> {
        self.write(move |conn| {
            let n = conn
                .prepare_cached("UPDATE apps SET topic_member_limit = ?2 WHERE app_id = ?1")?
                .execute(params![app_id as i64, limit.map(i64::from)])?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("app {app_id}")));
            }
            Ok(())
        })
        .await
    }

    async fn topic_member_limit(&self, app_id: u64) -> StoreResult<Option<u32>> {
        self.read(move |conn| {
            let v: Option<Option<i64>> = conn
                .prepare_cached("SELECT topic_member_limit FROM apps WHERE app_id = ?1")?
                .query_row([app_id as i64], |r| r.get(0))
                .optional()?;
            Ok(v.flatten().map(|n| n as u32))
        })
        .await
    }
}

#[async_trait]
impl MessageStore for SqliteStore {
    async fn append(&self, messages: Vec<NewMessage>) -> StoreResult<Vec<AppendOutcome>> {
        self.write(move |conn| append_in(conn, &messages)).await
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
        self.read(move |conn| {
            let found = user_messages(conn, uuid, &resource, after, 0, cap, Order::OldestFirst)?;
            Ok(found.len())
        })
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
            assert_eq!(store.account(app.app_id, "bob", false).await.unwrap(), None);
            let uuid = store
                .account(app.app_id, "bob", true)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                store.account(app.app_id, "bob", true).await.unwrap(),
                Some(uuid)
            );
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
            .account(apps[0].app_id, "bob", false)
            .await
            .unwrap()
            .unwrap();
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
