//! The callback outbox of the PostgreSQL store, and its `CallbackStore`:
//! `callback_batches` (one row per commit and app, written with the messages) and
//! `callbacks` (one row per callback that failed an attempt: pending while
//! `failed_ms = 0`). A port of `sqlite/outbox.rs`; the messages and rows a list of
//! callbacks needs are read in one statement each (`= ANY($1)`), not per callback.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use tokio_postgres::GenericClient;

use super::messages::{row_to_message, sql_seq, MESSAGE_COLUMNS};
use super::{num, sql, PgStore};
use crate::store::outbox::text;
use crate::store::{
    AppendOutcome, CallbackBatch, CallbackKind, CallbackOutcome, CallbackResult, CallbackStore,
    FailedCallback, NewCallback, NewMessage, PendingCallback, StoreResult, StoredMessage,
};

/// A row count as PostgreSQL's BIGINT (for LIMIT).
fn sql_len(n: usize) -> i64 {
    sql(u64::try_from(n).unwrap_or(u64::MAX))
}

/// An attempt count as stored (BIGINT) read back as u32.
fn attempts(v: i64) -> u32 {
    v.clamp(0, i64::from(u32::MAX)) as u32
}

/// The stored messages among `seqs`, by sequence.
async fn messages(
    c: &impl GenericClient,
    seqs: &[i64],
) -> StoreResult<HashMap<u64, StoredMessage>> {
    if seqs.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = c
        .query(
            &format!("SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.seq = ANY($1)"),
            &[&seqs],
        )
        .await?;
    Ok(rows
        .iter()
        .map(row_to_message)
        .map(|m| (m.seq, m))
        .collect())
}

/// Writes one batch per app of the callbacks whose message was stored.
pub(super) async fn insert(
    c: &impl GenericClient,
    messages: &[NewMessage],
    outcomes: &[AppendOutcome],
    callbacks: &[NewCallback],
) -> StoreResult<()> {
    let rows = text::batch_rows(messages, outcomes, callbacks);
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = rows.iter().map(|r| sql_seq(r.batch_id)).collect();
    let apps: Vec<i64> = rows.iter().map(|r| sql(r.app_id)).collect();
    let sizes: Vec<i64> = rows.iter().map(|r| r.size as i64).collect();
    let texts: Vec<&str> = rows.iter().map(|r| r.entries.as_str()).collect();
    c.execute(
        "INSERT INTO callback_batches (batch_id, app_id, size, entries) \
         SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::TEXT[]) \
         ON CONFLICT DO NOTHING",
        &[&ids, &apps, &sizes, &texts],
    )
    .await?;
    Ok(())
}

pub(super) async fn batch_apps(c: &impl GenericClient) -> StoreResult<Vec<u64>> {
    let rows = c
        .query(
            "SELECT DISTINCT app_id FROM callback_batches ORDER BY app_id",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect())
}

pub(super) async fn batches(
    c: &impl GenericClient,
    app_id: u64,
    from: u64,
    budget: usize,
) -> StoreResult<Vec<CallbackBatch>> {
    // Oldest first while the sizes of those before stay under the budget (each
    // batch counts at least one, so at most `budget` of them are looked at).
    let rows = c
        .query(
            "SELECT b.batch_id, b.size, b.entries FROM ( \
                 SELECT batch_id, \
                        (sum(greatest(size, 1)) OVER (ORDER BY batch_id))::BIGINT \
                            - greatest(size, 1) AS before \
                 FROM (SELECT batch_id, size FROM callback_batches \
                       WHERE app_id = $1 AND batch_id >= $2 ORDER BY batch_id LIMIT $3) AS f \
             ) AS w JOIN callback_batches b ON b.batch_id = w.batch_id \
             WHERE w.before < $3 ORDER BY b.batch_id",
            &[&sql(app_id), &sql_seq(from), &sql_len(budget.max(1))],
        )
        .await?;
    let rows: Vec<(u64, usize, Vec<text::Entry>)> = rows
        .iter()
        .map(|r| {
            let size = r.get::<_, i64>(1).max(0) as usize;
            let text: &str = r.get(2);
            let entries = text::entries(text);
            (num(r, 0), size, entries)
        })
        .collect();
    let seqs: Vec<i64> = rows
        .iter()
        .flat_map(|(_, _, entries)| entries.iter().map(|&(seq, ..)| sql_seq(seq)))
        .collect();
    // Callbacks with a row are governed by the row.
    let with_row: HashSet<u64> = if seqs.is_empty() {
        HashSet::new()
    } else {
        c.query("SELECT seq FROM callbacks WHERE seq = ANY($1)", &[&seqs])
            .await?
            .iter()
            .map(|r| num(r, 0))
            .collect()
    };
    let without_row: Vec<i64> = seqs
        .into_iter()
        .filter(|&seq| !with_row.contains(&(seq as u64)))
        .collect();
    let found = messages(c, &without_row).await?;
    let mut out = Vec::with_capacity(rows.len());
    for (batch_id, size, entries) in rows {
        let mut callbacks = Vec::with_capacity(entries.len());
        for (seq, kind, to) in entries {
            if with_row.contains(&seq) {
                continue;
            }
            callbacks.push(PendingCallback {
                seq,
                app_id,
                kind: CallbackKind::from_code(i64::from(kind)),
                to_accounts: text::split_accounts(&to),
                attempts: 0,
                batch: Some(batch_id),
                message: found.get(&seq).cloned(),
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

pub(super) async fn next_app(
    c: &impl GenericClient,
    after_app: u64,
) -> StoreResult<Option<(u64, u64)>> {
    let row = c
        .query_opt(
            "SELECT app_id, due_ms FROM callbacks WHERE failed_ms = 0 AND app_id > $1 \
             ORDER BY app_id, due_ms LIMIT 1",
            &[&sql_seq(after_app)],
        )
        .await?;
    Ok(row.map(|r| (r.get::<_, i64>(0) as u64, num(&r, 1))))
}

pub(super) async fn due(
    c: &impl GenericClient,
    app_id: u64,
    now_ms: u64,
    limit: usize,
) -> StoreResult<Vec<PendingCallback>> {
    let rows = c
        .query(
            "SELECT seq, kind, to_accounts, attempts FROM callbacks \
             WHERE failed_ms = 0 AND app_id = $1 AND due_ms <= $2 ORDER BY due_ms, seq LIMIT $3",
            &[&sql(app_id), &sql_seq(now_ms), &sql_len(limit)],
        )
        .await?;
    let seqs: Vec<i64> = rows.iter().map(|r| r.get::<_, i64>(0)).collect();
    let mut found = messages(c, &seqs).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let seq = r.get::<_, i64>(0) as u64;
            let to: &str = r.get(2);
            PendingCallback {
                seq,
                app_id,
                kind: CallbackKind::from_code(r.get(1)),
                to_accounts: text::split_accounts(to),
                attempts: attempts(r.get(3)),
                batch: None,
                // `seq` is the key of `callbacks`: each at most once.
                message: found.remove(&seq),
            }
        })
        .collect())
}

pub(super) async fn record(
    c: &impl GenericClient,
    results: &[CallbackResult],
    finished: &[u64],
) -> StoreResult<()> {
    if !results.is_empty() {
        let delete = c.prepare("DELETE FROM callbacks WHERE seq = $1").await?;
        // A first failure creates the row; later ones update it.
        let failed = c
            .prepare(
                "INSERT INTO callbacks \
                 (seq, app_id, kind, to_accounts, attempts, due_ms, failed_ms, last_error) \
                 VALUES ($1, $2, $3, $4, 1, $5, $6, $7) \
                 ON CONFLICT (seq) DO UPDATE SET attempts = callbacks.attempts + 1, \
                 due_ms = excluded.due_ms, failed_ms = excluded.failed_ms, \
                 last_error = excluded.last_error",
            )
            .await?;
        for r in results {
            let seq = sql_seq(r.seq);
            let (due_ms, failed_ms, error) = match &r.outcome {
                CallbackOutcome::Delivered => {
                    c.execute(&delete, &[&seq]).await?;
                    continue;
                }
                CallbackOutcome::Retry { due_ms, error } => (*due_ms, 0, error),
                CallbackOutcome::Failed { now_ms, error } => (*now_ms, (*now_ms).max(1), error),
            };
            c.execute(
                &failed,
                &[
                    &seq,
                    &sql(r.app_id),
                    &(r.kind as i64),
                    &text::join_accounts(&r.to_accounts),
                    &sql_seq(due_ms),
                    &sql_seq(failed_ms),
                    error,
                ],
            )
            .await?;
        }
    }
    if !finished.is_empty() {
        let batches: Vec<i64> = finished.iter().map(|&b| sql_seq(b)).collect();
        c.execute(
            "DELETE FROM callback_batches WHERE batch_id = ANY($1)",
            &[&batches],
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn failed(
    c: &impl GenericClient,
    app_id: u64,
    after_seq: u64,
    limit: usize,
) -> StoreResult<Vec<FailedCallback>> {
    let rows = c
        .query(
            "SELECT seq, kind, attempts, last_error, failed_ms FROM callbacks \
             WHERE failed_ms > 0 AND app_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            &[&sql(app_id), &sql_seq(after_seq), &sql_len(limit)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| FailedCallback {
            seq: r.get::<_, i64>(0) as u64,
            app_id,
            kind: CallbackKind::from_code(r.get(1)),
            attempts: attempts(r.get(2)),
            last_error: r.get(3),
            failed_ms: num(r, 4),
        })
        .collect())
}

pub(super) async fn replay(
    c: &impl GenericClient,
    app_id: u64,
    seqs: Option<&[u64]>,
    now_ms: u64,
) -> StoreResult<usize> {
    let now = sql_seq(now_ms);
    let n = match seqs {
        None => {
            c.execute(
                "UPDATE callbacks SET failed_ms = 0, attempts = 0, due_ms = $2 \
                 WHERE failed_ms > 0 AND app_id = $1",
                &[&sql(app_id), &now],
            )
            .await?
        }
        Some(seqs) => {
            if seqs.is_empty() {
                return Ok(0);
            }
            let seqs: Vec<i64> = seqs.iter().map(|&s| sql_seq(s)).collect();
            c.execute(
                "UPDATE callbacks SET failed_ms = 0, attempts = 0, due_ms = $3 \
                 WHERE failed_ms > 0 AND app_id = $1 AND seq = ANY($2)",
                &[&sql(app_id), &seqs, &now],
            )
            .await?
        }
    };
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

pub(super) async fn counts(c: &impl GenericClient, app_id: Option<u64>) -> StoreResult<(u64, u64)> {
    let app = app_id.map(sql);
    let filter = if app.is_some() { "AND app_id = $1" } else { "" };
    let statement = format!(
        "SELECT (SELECT count(*) FROM callbacks WHERE failed_ms = 0 {filter}), \
         (SELECT coalesce(sum(size), 0)::BIGINT FROM callback_batches WHERE TRUE {filter}), \
         (SELECT count(*) FROM callbacks WHERE failed_ms > 0 {filter})"
    );
    let row = match &app {
        Some(app) => c.query_one(&statement, &[app]).await?,
        None => c.query_one(&statement, &[]).await?,
    };
    let pending = num(&row, 0).saturating_add(num(&row, 1));
    Ok((pending, num(&row, 2)))
}

#[async_trait]
impl CallbackStore for PgStore {
    async fn next_callback_app(&self, after_app: u64) -> StoreResult<Option<(u64, u64)>> {
        let client = self.client().await?;
        next_app(&**client, after_app).await
    }

    async fn due_callbacks(
        &self,
        app_id: u64,
        now_ms: u64,
        limit: usize,
    ) -> StoreResult<Vec<PendingCallback>> {
        let client = self.client().await?;
        due(&**client, app_id, now_ms, limit).await
    }

    async fn callback_batch_apps(&self) -> StoreResult<Vec<u64>> {
        let client = self.client().await?;
        batch_apps(&**client).await
    }

    async fn callback_batches(
        &self,
        app_id: u64,
        from: u64,
        budget: usize,
    ) -> StoreResult<Vec<CallbackBatch>> {
        let client = self.client().await?;
        batches(&**client, app_id, from, budget).await
    }

    async fn record_callbacks(
        &self,
        results: Vec<CallbackResult>,
        finished: Vec<u64>,
    ) -> StoreResult<()> {
        let mut client = self.client().await?;
        // tokio-postgres's transaction (deadpool's wrapper is no `GenericClient` of it).
        let tx = tokio_postgres::Client::transaction(&mut client).await?;
        record(&tx, &results, &finished).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn failed_callbacks(
        &self,
        app_id: u64,
        after_seq: u64,
        limit: usize,
    ) -> StoreResult<Vec<FailedCallback>> {
        let client = self.client().await?;
        failed(&**client, app_id, after_seq, limit).await
    }

    async fn replay_callbacks(
        &self,
        app_id: u64,
        seqs: Option<Vec<u64>>,
        now_ms: u64,
    ) -> StoreResult<usize> {
        let mut client = self.client().await?;
        let tx = tokio_postgres::Client::transaction(&mut client).await?;
        let n = replay(&tx, app_id, seqs.as_deref(), now_ms).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn callback_counts(&self, app_id: Option<u64>) -> StoreResult<(u64, u64)> {
        let client = self.client().await?;
        counts(&**client, app_id).await
    }
}
