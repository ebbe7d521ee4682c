//! Apps of the embedded store: their settings (columns of `apps`), renaming,
//! secret rotation and deletion.

use rusqlite::{params, Connection, OptionalExtension};

use super::messages::sql_seq as sql_u64;
use crate::store::{App, AppSettings, StoreError, StoreResult};

const APP_COLUMNS: &str =
    "app_id, name, app_key, app_secret, created_ms, previous_secret, previous_secret_until_ms";

fn row_to_app(r: &rusqlite::Row<'_>) -> rusqlite::Result<App> {
    Ok(App {
        app_id: r.get::<_, i64>(0)? as u64,
        name: r.get(1)?,
        app_key: r.get(2)?,
        app_secret: r.get(3)?,
        created_ms: r.get::<_, i64>(4)? as u64,
        previous_secret: r.get(5)?,
        previous_secret_until_ms: r.get::<_, i64>(6)?.max(0) as u64,
    })
}

pub(super) fn app(conn: &Connection, app_id: u64) -> StoreResult<Option<App>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {APP_COLUMNS} FROM apps WHERE app_id = ?1"))?
        .query_row([app_id as i64], row_to_app)
        .optional()?)
}

pub(super) fn list(conn: &Connection) -> StoreResult<Vec<App>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {APP_COLUMNS} FROM apps ORDER BY created_ms, app_id"
    ))?;
    let rows = stmt.query_map([], row_to_app)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

fn existing(conn: &Connection, app_id: u64) -> StoreResult<App> {
    app(conn, app_id)?.ok_or_else(|| StoreError::NotFound(format!("app {app_id}")))
}

fn opt_u64(v: Option<i64>) -> Option<u64> {
    v.map(|n| n.max(0) as u64)
}

fn opt_u32(v: Option<i64>) -> Option<u32> {
    v.map(|n| n.clamp(0, i64::from(u32::MAX)) as u32)
}

pub(super) fn set_settings(conn: &Connection, app_id: u64, s: &AppSettings) -> StoreResult<()> {
    let n = conn
        .prepare_cached(
            "UPDATE apps SET callback_url = ?2, user_ttl_secs = ?3, max_payload_bytes = ?4, \
             topic_member_limit = ?5, offline_ttl_secs = ?6, backlog_limit = ?7, \
             history_retention_secs = ?8, contacts_window_secs = ?9, send_rate_per_user = ?10 \
             WHERE app_id = ?1",
        )?
        .execute(params![
            app_id as i64,
            s.callback_url,
            sql_u64(s.user_ttl_secs),
            s.max_payload_bytes.map(i64::from),
            s.topic_member_limit.map(i64::from),
            s.offline_ttl_secs.map(sql_u64),
            s.backlog_limit.map(i64::from),
            s.history_retention_secs.map(sql_u64),
            s.contacts_window_secs.map(sql_u64),
            s.send_rate_per_user.map(i64::from),
        ])?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("app {app_id}")));
    }
    Ok(())
}

pub(super) fn settings(conn: &Connection, app_id: u64) -> StoreResult<AppSettings> {
    let found = conn
        .prepare_cached(
            "SELECT callback_url, user_ttl_secs, max_payload_bytes, topic_member_limit, \
             offline_ttl_secs, backlog_limit, history_retention_secs, contacts_window_secs, \
             send_rate_per_user FROM apps WHERE app_id = ?1",
        )?
        .query_row([app_id as i64], |r| {
            Ok(AppSettings {
                callback_url: r.get(0)?,
                user_ttl_secs: r.get::<_, i64>(1)?.max(0) as u64,
                max_payload_bytes: opt_u32(r.get(2)?),
                topic_member_limit: opt_u32(r.get(3)?),
                offline_ttl_secs: opt_u64(r.get(4)?),
                backlog_limit: opt_u32(r.get(5)?),
                history_retention_secs: opt_u64(r.get(6)?),
                contacts_window_secs: opt_u64(r.get(7)?),
                send_rate_per_user: opt_u32(r.get(8)?),
            })
        })
        .optional()?;
    Ok(found.unwrap_or_default())
}

pub(super) fn rename(conn: &Connection, app_id: u64, name: &str) -> StoreResult<App> {
    conn.prepare_cached("UPDATE apps SET name = ?2 WHERE app_id = ?1")?
        .execute(params![app_id as i64, name])?;
    existing(conn, app_id)
}

pub(super) fn rotate_secret(
    conn: &Connection,
    app_id: u64,
    secret: &str,
    tokens_until_ms: u64,
) -> StoreResult<App> {
    conn.prepare_cached(
        "UPDATE apps SET previous_secret = app_secret, previous_secret_until_ms = ?3, \
         app_secret = ?2 WHERE app_id = ?1",
    )?
    .execute(params![app_id as i64, secret, sql_u64(tokens_until_ms)])?;
    existing(conn, app_id)
}

/// Deletes the app row; its accounts expire now (the sweep retires them, kicking
/// their sessions, and deletes their data), its topics are dismissed, its pending
/// callbacks dropped, and `deleted_apps` tells the sweep to delete its messages.
pub(super) fn delete(conn: &Connection, app_id: u64, now_ms: u64) -> StoreResult<()> {
    let id = app_id as i64;
    if conn
        .prepare_cached("DELETE FROM apps WHERE app_id = ?1")?
        .execute([id])?
        == 0
    {
        return Err(StoreError::NotFound(format!("app {app_id}")));
    }
    conn.prepare_cached("INSERT OR IGNORE INTO deleted_apps (app_id) VALUES (?1)")?
        .execute([id])?;
    // Tombstones of retired accounts (names starting with \x01) stay as they are.
    conn.prepare_cached(
        "UPDATE accounts SET expires_ms = ?2 WHERE app_id = ?1 \
         AND substr(account, 1, 1) <> char(1) AND (expires_ms = 0 OR expires_ms > ?2)",
    )?
    .execute(params![id, sql_u64(now_ms.max(1))])?;
    conn.prepare_cached(
        "UPDATE topics SET dismissed = 1, version = version + 1 WHERE app_id = ?1 AND dismissed = 0",
    )?
    .execute([id])?;
    conn.prepare_cached("DELETE FROM callbacks WHERE app_id = ?1")?
        .execute([id])?;
    conn.prepare_cached("DELETE FROM callback_batches WHERE app_id = ?1")?
        .execute([id])?;
    Ok(())
}
