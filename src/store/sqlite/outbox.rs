//! The callback outbox of the embedded store: table `callbacks`, one row per
//! message (keyed by its sequence), pending while `failed_ms = 0`.

use rusqlite::{params, Connection};

use super::messages::{row_to_message, sql_seq, MESSAGE_COLUMNS};
use crate::store::{CallbackKind, CallbackOutcome, FailedCallback, NewCallback, PendingCallback};
use crate::store::{NewMessage, StoreResult};

/// `toAccounts` are stored joined by a newline (names hold no control characters).
const SEPARATOR: char = '\n';

fn split(text: String) -> Vec<String> {
    if text.is_empty() {
        return Vec::new();
    }
    text.split(SEPARATOR).map(str::to_owned).collect()
}

/// Writes the callbacks of the messages `stored[i]` says were stored.
pub(super) fn insert(
    conn: &Connection,
    messages: &[NewMessage],
    stored: &[bool],
    callbacks: &[NewCallback],
    now_ms: u64,
) -> StoreResult<()> {
    if callbacks.is_empty() {
        return Ok(());
    }
    let mut insert = conn.prepare_cached(
        "INSERT OR IGNORE INTO callbacks (seq, app_id, kind, to_accounts, due_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for cb in callbacks {
        let (Some(m), Some(true)) = (messages.get(cb.index), stored.get(cb.index).copied()) else {
            continue;
        };
        let to = cb.to_accounts.join(&SEPARATOR.to_string());
        insert.execute(params![
            sql_seq(m.seq),
            m.envelope.app_id as i64,
            cb.kind as i64,
            to,
            now_ms as i64
        ])?;
    }
    Ok(())
}

pub(super) fn next_app(conn: &Connection, after_app: u64) -> StoreResult<Option<(u64, u64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT app_id, due_ms FROM callbacks WHERE failed_ms = 0 AND app_id > ?1 \
         ORDER BY app_id, due_ms LIMIT 1",
    )?;
    let mut rows = stmt.query([sql_seq(after_app)])?;
    Ok(match rows.next()? {
        Some(r) => Some((
            r.get::<_, i64>(0)? as u64,
            r.get::<_, i64>(1)?.max(0) as u64,
        )),
        None => None,
    })
}

pub(super) fn due(
    conn: &Connection,
    app_id: u64,
    now_ms: u64,
    limit: usize,
) -> StoreResult<Vec<PendingCallback>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, kind, to_accounts, attempts FROM callbacks \
         WHERE failed_ms = 0 AND app_id = ?1 AND due_ms <= ?2 ORDER BY due_ms, seq LIMIT ?3",
    )?;
    let rows = stmt
        .query_map(params![app_id as i64, sql_seq(now_ms), limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut message = conn.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.seq = ?1"
    ))?;
    let mut out = Vec::with_capacity(rows.len());
    for (seq, kind, to, attempts) in rows {
        let mut found = message.query_map([sql_seq(seq)], row_to_message)?;
        let message = found.next().transpose()?;
        out.push(PendingCallback {
            seq,
            app_id,
            kind: CallbackKind::from_code(kind),
            to_accounts: split(to),
            attempts: attempts.clamp(0, i64::from(u32::MAX)) as u32,
            message,
        });
    }
    Ok(out)
}

pub(super) fn record(conn: &Connection, outcomes: &[(u64, CallbackOutcome)]) -> StoreResult<()> {
    let mut delete = conn.prepare_cached("DELETE FROM callbacks WHERE seq = ?1")?;
    let mut retry = conn.prepare_cached(
        "UPDATE callbacks SET attempts = attempts + 1, due_ms = ?2, last_error = ?3 WHERE seq = ?1",
    )?;
    let mut fail = conn.prepare_cached(
        "UPDATE callbacks SET attempts = attempts + 1, failed_ms = ?2, last_error = ?3 WHERE seq = ?1",
    )?;
    for (seq, outcome) in outcomes {
        let seq = sql_seq(*seq);
        match outcome {
            CallbackOutcome::Delivered => delete.execute([seq])?,
            CallbackOutcome::Retry { due_ms, error } => {
                retry.execute(params![seq, sql_seq(*due_ms), error])?
            }
            CallbackOutcome::Failed { now_ms, error } => {
                fail.execute(params![seq, sql_seq((*now_ms).max(1)), error])?
            }
        };
    }
    Ok(())
}

pub(super) fn failed(
    conn: &Connection,
    app_id: u64,
    after_seq: u64,
    limit: usize,
) -> StoreResult<Vec<FailedCallback>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, kind, attempts, last_error, failed_ms FROM callbacks \
         WHERE failed_ms > 0 AND app_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    )?;
    let rows = stmt.query_map(
        params![app_id as i64, sql_seq(after_seq), limit as i64],
        |r| {
            Ok(FailedCallback {
                seq: r.get::<_, i64>(0)? as u64,
                app_id,
                kind: CallbackKind::from_code(r.get(1)?),
                attempts: r.get::<_, i64>(2)?.clamp(0, i64::from(u32::MAX)) as u32,
                last_error: r.get(3)?,
                failed_ms: r.get::<_, i64>(4)?.max(0) as u64,
            })
        },
    )?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

pub(super) fn replay(
    conn: &Connection,
    app_id: u64,
    seqs: Option<&[u64]>,
    now_ms: u64,
) -> StoreResult<usize> {
    let now = sql_seq(now_ms);
    match seqs {
        None => Ok(conn
            .prepare_cached(
                "UPDATE callbacks SET failed_ms = 0, attempts = 0, due_ms = ?2 \
                 WHERE failed_ms > 0 AND app_id = ?1",
            )?
            .execute(params![app_id as i64, now])?),
        Some(seqs) => {
            let mut one = conn.prepare_cached(
                "UPDATE callbacks SET failed_ms = 0, attempts = 0, due_ms = ?3 \
                 WHERE failed_ms > 0 AND app_id = ?1 AND seq = ?2",
            )?;
            let mut n = 0;
            for &seq in seqs {
                n += one.execute(params![app_id as i64, sql_seq(seq), now])?;
            }
            Ok(n)
        }
    }
}

pub(super) fn counts(conn: &Connection, app_id: Option<u64>) -> StoreResult<(u64, u64)> {
    let count = |sql: &str, app: Option<i64>| -> StoreResult<u64> {
        let mut stmt = conn.prepare_cached(sql)?;
        let n: i64 = match app {
            Some(a) => stmt.query_row([a], |r| r.get(0))?,
            None => stmt.query_row([], |r| r.get(0))?,
        };
        Ok(n.max(0) as u64)
    };
    Ok(match app_id {
        Some(app) => (
            count(
                "SELECT count(*) FROM callbacks WHERE failed_ms = 0 AND app_id = ?1",
                Some(app as i64),
            )?,
            count(
                "SELECT count(*) FROM callbacks WHERE failed_ms > 0 AND app_id = ?1",
                Some(app as i64),
            )?,
        ),
        None => (
            count("SELECT count(*) FROM callbacks WHERE failed_ms = 0", None)?,
            count("SELECT count(*) FROM callbacks WHERE failed_ms > 0", None)?,
        ),
    })
}
