//! Accounts of the embedded store: lookup by (app, name), creation with the app's
//! account lifetime (temporary accounts), and replacing an expired account.

use rusqlite::{params, Connection, OptionalExtension};

use super::sweep::retire;
use crate::store::{Account, StoreResult};

pub(super) fn find(conn: &Connection, app_id: u64, name: &str) -> StoreResult<Option<Account>> {
    Ok(conn
        .prepare_cached("SELECT uuid, expires_ms FROM accounts WHERE app_id = ?1 AND account = ?2")?
        .query_row(params![app_id as i64, name], |r| {
            Ok(Account {
                uuid: r.get::<_, i64>(0)? as u64,
                expires_ms: r.get::<_, i64>(1)?.max(0) as u64,
            })
        })
        .optional()?)
}

/// The live account named `name`, created if absent. An expired one is retired
/// first (its data waits for the sweep) and a new account takes the name, with the
/// app's current lifetime.
pub(super) fn find_or_create(
    conn: &Connection,
    app_id: u64,
    name: &str,
    now_ms: u64,
) -> StoreResult<Account> {
    match find(conn, app_id, name)? {
        Some(a) if !a.expired_at(now_ms) => return Ok(a),
        Some(a) => retire(conn, a.uuid as i64)?,
        None => {}
    }
    let ttl_secs: i64 = conn
        .prepare_cached("SELECT user_ttl_secs FROM apps WHERE app_id = ?1")?
        .query_row([app_id as i64], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    let expires_ms = if ttl_secs > 0 {
        now_ms.saturating_add((ttl_secs as u64).saturating_mul(1000))
    } else {
        0
    };
    conn.prepare_cached(
        "INSERT INTO accounts (app_id, account, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        app_id as i64,
        name,
        now_ms as i64,
        expires_ms.min(i64::MAX as u64) as i64
    ])?;
    Ok(Account {
        uuid: conn.last_insert_rowid() as u64,
        expires_ms,
    })
}
