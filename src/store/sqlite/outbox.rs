//! The callback outbox of the embedded store, and its `CallbackStore`:
//! `callback_batches` (one row per commit and app, written with the messages) and
//! `callbacks` (one row per callback that failed an attempt: pending while
//! `failed_ms = 0`).

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::SqliteStore;

use super::messages::{row_to_message, sql_seq, MESSAGE_COLUMNS};
use crate::store::outbox::text;
use crate::store::{
    AppendOutcome, CallbackBatch, CallbackKind, CallbackOutcome, CallbackResult, CallbackStore,
    FailedCallback, NewCallback, NewMessage, PendingCallback, StoreResult, StoredMessage,
};

fn message(conn: &Connection, seq: u64) -> StoreResult<Option<StoredMessage>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.seq = ?1"
        ))?
        .query_row([sql_seq(seq)], row_to_message)
        .optional()?)
}

/// Writes one batch per app of the callbacks whose message was stored.
pub(super) fn insert(
    conn: &Connection,
    messages: &[NewMessage],
    outcomes: &[AppendOutcome],
    callbacks: &[NewCallback],
) -> StoreResult<()> {
    let mut insert = conn.prepare_cached(
        "INSERT OR IGNORE INTO callback_batches (batch_id, app_id, size, entries) \
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    for row in text::batch_rows(messages, outcomes, callbacks) {
        insert.execute(params![
            sql_seq(row.batch_id),
            row.app_id as i64,
            row.size as i64,
            row.entries
        ])?;
    }
    Ok(())
}

pub(super) fn batch_apps(conn: &Connection) -> StoreResult<Vec<u64>> {
    let mut stmt = conn.prepare_cached("SELECT DISTINCT app_id FROM callback_batches")?;
    let rows = stmt.query_map([], |r| r.get::<_, i64>(0))?;
    Ok(rows
        .map(|r| r.map(|a| a as u64))
        .collect::<Result<Vec<_>, _>>()?)
}

pub(super) fn batches(
    conn: &Connection,
    app_id: u64,
    from: u64,
    budget: usize,
) -> StoreResult<Vec<CallbackBatch>> {
    let mut rows = Vec::new();
    let mut taken = 0;
    {
        let mut stmt = conn.prepare_cached(
            "SELECT batch_id, size, entries FROM callback_batches \
             WHERE app_id = ?1 AND batch_id >= ?2 ORDER BY batch_id",
        )?;
        let mut found = stmt.query(params![app_id as i64, sql_seq(from)])?;
        while taken < budget.max(1) {
            let Some(r) = found.next()? else {
                break;
            };
            let size = r.get::<_, i64>(1)?.max(0) as usize;
            taken += size.max(1);
            rows.push((r.get::<_, i64>(0)? as u64, size, r.get::<_, String>(2)?));
        }
    }
    let mut has_row = conn.prepare_cached("SELECT 1 FROM callbacks WHERE seq = ?1")?;
    let mut out = Vec::with_capacity(rows.len());
    for (batch_id, size, text) in rows {
        let entries = text::entries(&text);
        let mut callbacks = Vec::with_capacity(entries.len());
        for (seq, kind, to) in entries {
            if has_row.exists([sql_seq(seq)])? {
                continue;
            }
            callbacks.push(PendingCallback {
                seq,
                app_id,
                kind: CallbackKind::from_code(i64::from(kind)),
                to_accounts: text::split_accounts(&to),
                attempts: 0,
                batch: Some(batch_id),
                message: message(conn, seq)?,
            });
        }
        out.push(CallbackBatch {
            batch_id,
            app_id,
            size,
            callbacks,
        });
    }
    Ok(out)
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
    let mut out = Vec::with_capacity(rows.len());
    for (seq, kind, to, attempts) in rows {
        out.push(PendingCallback {
            seq,
            app_id,
            kind: CallbackKind::from_code(kind),
            to_accounts: text::split_accounts(&to),
            attempts: attempts.clamp(0, i64::from(u32::MAX)) as u32,
            batch: None,
            message: message(conn, seq)?,
        });
    }
    Ok(out)
}

pub(super) fn record(
    conn: &Connection,
    results: &[CallbackResult],
    finished: &[u64],
) -> StoreResult<()> {
    let mut delete = conn.prepare_cached("DELETE FROM callbacks WHERE seq = ?1")?;
    // A first failure creates the row; later ones update it.
    let mut failed = conn.prepare_cached(
        "INSERT INTO callbacks (seq, app_id, kind, to_accounts, attempts, due_ms, failed_ms, last_error) \
         VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7) \
         ON CONFLICT (seq) DO UPDATE SET attempts = attempts + 1, due_ms = excluded.due_ms, \
         failed_ms = excluded.failed_ms, last_error = excluded.last_error",
    )?;
    for r in results {
        let seq = sql_seq(r.seq);
        let (due_ms, failed_ms, error) = match &r.outcome {
            CallbackOutcome::Delivered => {
                delete.execute([seq])?;
                continue;
            }
            CallbackOutcome::Retry { due_ms, error } => (*due_ms, 0, error),
            CallbackOutcome::Failed { now_ms, error } => (*now_ms, (*now_ms).max(1), error),
        };
        failed.execute(params![
            seq,
            r.app_id as i64,
            r.kind as i64,
            text::join_accounts(&r.to_accounts),
            sql_seq(due_ms),
            sql_seq(failed_ms),
            error
        ])?;
    }
    let mut finish = conn.prepare_cached("DELETE FROM callback_batches WHERE batch_id = ?1")?;
    for &batch in finished {
        finish.execute([sql_seq(batch)])?;
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
    let (filter, app) = match app_id {
        Some(app) => ("AND app_id = ?1", app as i64),
        None => ("AND ?1 = ?1", 0),
    };
    let count = |sql: String| -> StoreResult<u64> {
        let n: i64 = conn.prepare_cached(&sql)?.query_row([app], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    };
    let pending = count(format!(
        "SELECT count(*) FROM callbacks WHERE failed_ms = 0 {filter}"
    ))? + count(format!(
        "SELECT coalesce(sum(size), 0) FROM callback_batches WHERE 1 {filter}"
    ))?;
    let failed = count(format!(
        "SELECT count(*) FROM callbacks WHERE failed_ms > 0 {filter}"
    ))?;
    Ok((pending, failed))
}

#[async_trait]
impl CallbackStore for SqliteStore {
    async fn next_callback_app(&self, after_app: u64) -> StoreResult<Option<(u64, u64)>> {
        self.read(move |conn| next_app(conn, after_app)).await
    }

    async fn due_callbacks(
        &self,
        app_id: u64,
        now_ms: u64,
        limit: usize,
    ) -> StoreResult<Vec<PendingCallback>> {
        self.read(move |conn| due(conn, app_id, now_ms, limit))
            .await
    }

    async fn callback_batch_apps(&self) -> StoreResult<Vec<u64>> {
        self.read(batch_apps).await
    }

    async fn callback_batches(
        &self,
        app_id: u64,
        from: u64,
        budget: usize,
    ) -> StoreResult<Vec<CallbackBatch>> {
        self.read(move |conn| batches(conn, app_id, from, budget))
            .await
    }

    async fn record_callbacks(
        &self,
        results: Vec<CallbackResult>,
        finished: Vec<u64>,
    ) -> StoreResult<()> {
        self.write(move |conn| record(conn, &results, &finished))
            .await
    }

    async fn failed_callbacks(
        &self,
        app_id: u64,
        after_seq: u64,
        limit: usize,
    ) -> StoreResult<Vec<FailedCallback>> {
        self.read(move |conn| failed(conn, app_id, after_seq, limit))
            .await
    }

    async fn replay_callbacks(
        &self,
        app_id: u64,
        seqs: Option<Vec<u64>>,
        now_ms: u64,
    ) -> StoreResult<usize> {
        self.write(move |conn| replay(conn, app_id, seqs.as_deref(), now_ms))
            .await
    }

    async fn callback_counts(&self, app_id: Option<u64>) -> StoreResult<(u64, u64)> {
        self.read(move |conn| counts(conn, app_id)).await
    }
}
