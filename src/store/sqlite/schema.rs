//! The embedded store's files and schema: the private data dir and database file,
//! connection settings (WAL, `synchronous=FULL`, page caches), and the ordered
//! migrations that `PRAGMA user_version` counts.

use std::path::Path;

use rusqlite::Connection;

use crate::store::{StoreError, StoreResult};

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
    r#"
-- One-way p2p blacklists: owner_uuid receives nothing from black_uuid.
CREATE TABLE blacklist (
    owner_uuid INTEGER NOT NULL,
    black_uuid INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (owner_uuid, black_uuid)
) WITHOUT ROWID;
-- 1: a p2p message its recipient had blacklisted the sender for: kept for the
-- sender's devices only (not in the recipient's timeline, history or contacts).
ALTER TABLE messages ADD COLUMN blocked INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
-- History of a p2p conversation (both directions), in sequence order: the index
-- holds (lower uuid, higher uuid, seq), seq being the rowid.
CREATE INDEX messages_by_conversation
    ON messages (min(from_uuid, to_uuid), max(from_uuid, to_uuid)) WHERE topic_id = 0;
-- Retention per app: (app_id, seq), appended at the end of each app's range.
CREATE INDEX messages_by_app ON messages (app_id);
-- Each user's p2p conversations, maintained at commit: the newest message with
-- peer that owner sees (last_seq), and where owner cleared it from its contacts
-- list (hidden_upto). The login backlog reads the conversations with
-- last_seq > cursor through messages_by_conversation; this replaces per-user
-- timeline rows (two B-tree inserts per message) with at most two upserts per
-- conversation per commit.
CREATE TABLE contacts (
    owner_uuid  INTEGER NOT NULL,
    peer_uuid   INTEGER NOT NULL,
    last_seq    INTEGER NOT NULL,
    hidden_upto INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (owner_uuid, peer_uuid)
) WITHOUT ROWID;
INSERT INTO contacts (owner_uuid, peer_uuid, last_seq)
    SELECT owner, peer, max(seq) FROM (
        SELECT from_uuid AS owner, to_uuid AS peer, seq FROM messages WHERE topic_id = 0
        UNION ALL
        SELECT to_uuid, from_uuid, seq FROM messages WHERE topic_id = 0 AND blocked = 0
    ) GROUP BY owner, peer;
DROP TABLE timeline;
-- A message's time is its sequence's millisecond (history reads a time range as a
-- sequence range); rows written before were stamped with the wall clock at commit.
UPDATE messages SET ts = (seq >> 12) + 1735689600000;
-- A topic conversation removed from owner's contacts: hidden until a message after
-- upto_seq.
CREATE TABLE contacts_cleared (
    owner_uuid INTEGER NOT NULL,
    topic_id   INTEGER NOT NULL,
    upto_seq   INTEGER NOT NULL,
    PRIMARY KEY (owner_uuid, topic_id)
) WITHOUT ROWID;
-- Temporary accounts (临时帐号): an app's account lifetime, and each account's end.
ALTER TABLE apps ADD COLUMN user_ttl_secs INTEGER NOT NULL DEFAULT 0;
ALTER TABLE apps ADD COLUMN history_retention_secs INTEGER;
ALTER TABLE accounts ADD COLUMN expires_ms INTEGER NOT NULL DEFAULT 0;
CREATE INDEX accounts_by_expiry ON accounts (expires_ms) WHERE expires_ms > 0;
-- Expired accounts whose data the sweep has not deleted yet.
CREATE TABLE retired_accounts (uuid INTEGER PRIMARY KEY);
"#,
    r#"
-- Per-app settings set through the admin API (NULL = the server's default).
ALTER TABLE apps ADD COLUMN callback_url TEXT;
ALTER TABLE apps ADD COLUMN max_payload_bytes INTEGER;
ALTER TABLE apps ADD COLUMN offline_ttl_secs INTEGER;
ALTER TABLE apps ADD COLUMN backlog_limit INTEGER;
ALTER TABLE apps ADD COLUMN contacts_window_secs INTEGER;
ALTER TABLE apps ADD COLUMN send_rate_per_user INTEGER;
-- The secret before the last rotation verifies tokens issued before it, until
-- previous_secret_until_ms.
ALTER TABLE apps ADD COLUMN previous_secret TEXT;
ALTER TABLE apps ADD COLUMN previous_secret_until_ms INTEGER NOT NULL DEFAULT 0;
-- Deleted apps whose messages the sweep has not deleted yet.
CREATE TABLE deleted_apps (app_id INTEGER PRIMARY KEY);
-- The message-callback outbox. callback_batches: the callbacks of one commit
-- for one app, written in the messages' transaction (batch_id = the first
-- callback's seq; entries = JSON [[seq, kind, "toAccounts joined by newlines"]]),
-- deleted once each has an outcome. callbacks: one row per callback that failed
-- an attempt (it then governs that callback); failed_ms = 0: pending (due at
-- due_ms); > 0: gave up then, until replayed.
CREATE TABLE callback_batches (
    batch_id INTEGER PRIMARY KEY,
    app_id   INTEGER NOT NULL,
    size     INTEGER NOT NULL,
    entries  TEXT    NOT NULL
);
CREATE INDEX callback_batches_by_app ON callback_batches (app_id, batch_id);
CREATE TABLE callbacks (
    seq         INTEGER PRIMARY KEY,
    app_id      INTEGER NOT NULL,
    kind        INTEGER NOT NULL,
    to_accounts TEXT    NOT NULL DEFAULT '',
    attempts    INTEGER NOT NULL DEFAULT 0,
    due_ms      INTEGER NOT NULL,
    failed_ms   INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX callbacks_pending ON callbacks (app_id, due_ms) WHERE failed_ms = 0;
CREATE INDEX callbacks_failed ON callbacks (app_id, seq) WHERE failed_ms > 0;
"#,
];

/// Page cache of the writer connection, KiB. SQLite walks the writer's page cache
/// at the end of every transaction (`pcache1TruncateUnsafe`): with a 32 MiB cache
/// that walk was 9 % of the server's CPU at 25k msgs/s; 4 MiB measured best (p99 at
/// 25k msgs/s over 50 pairs 15–16 ms vs 16–21 ms; 1 MiB was worse again).
pub(super) const WRITER_CACHE_KIB: i64 = 4 * 1024;
/// Page cache of each read connection, KiB (backlog and history reads).
pub(super) const READER_CACHE_KIB: i64 = 32 * 1024;

pub(super) fn open_connection(path: &Path, cache_kib: i64) -> StoreResult<Connection> {
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
pub(super) fn private_dir(dir: &Path) -> StoreResult<()> {
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
pub(super) fn private_file(path: &Path) -> StoreResult<()> {
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

pub(super) fn migrate(conn: &mut Connection) -> StoreResult<()> {
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
