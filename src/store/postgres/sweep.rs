//! The PostgreSQL store's background sweep, one bounded pass per call (one write
//! transaction, the caller's, so writes queued behind its locks wait at most one
//! pass):
//!
//! 1. accounts past their lifetime are retired: the name is freed (the row stays
//!    as a tombstone so its uuid is never given out again) and the uuid is queued
//!    in `retired_accounts`;
//! 2. retired accounts' data is deleted: cursors, conversation list, blacklist,
//!    topic memberships (the messages they exchanged stay in their peers' history
//!    until retention);
//! 3. messages past their app's retention are deleted with their topic-log row,
//!    their callback, and, when a message was its conversation's newest, the
//!    conversation rows (`messages_by_app` finds them, oldest first); every message
//!    of a deleted app is past retention.
//!
//! There are no per-user timeline rows to expire: the login backlog reads the
//! conversations, clamped to the offline window. The dedup record of a message is
//! its row (`messages_dedup`), so it goes with the message at retention.
//!
//! A port of `sqlite/sweep.rs`. Each step works on its whole batch with a few
//! set-based statements (`= ANY($1)`, `unnest`) rather than a round trip per row,
//! and the queues of steps 1 and 2 are read `FOR UPDATE SKIP LOCKED`, so nodes
//! sweeping at once take different accounts instead of waiting on each other.

use tokio_postgres::GenericClient;

use super::sql;
use super::topics::OPEN;
use crate::sequence::floor_at;
use crate::store::{StoreResult, SweepPlan, SweepReport};

/// A row count as PostgreSQL's BIGINT (for LIMIT).
fn sql_len(n: usize) -> i64 {
    sql(u64::try_from(n).unwrap_or(u64::MAX))
}

pub(super) async fn sweep(c: &impl GenericClient, plan: &SweepPlan) -> StoreResult<SweepReport> {
    let mut report = SweepReport::default();
    let batch = plan.batch.max(1);
    report.expired = retire_expired(c, plan.now_ms, batch).await?;
    let (purged, more) = purge_retired(c, plan.now_ms, batch, &mut report.topics).await?;
    report.purged = purged;
    report.more |= more || report.expired.len() == batch;
    let (messages, more) = delete_past_retention(c, plan, batch).await?;
    report.messages = messages;
    report.more |= more;
    Ok(report)
}

async fn retire_expired(
    c: &impl GenericClient,
    now_ms: u64,
    batch: usize,
) -> StoreResult<Vec<u64>> {
    let expired: Vec<i64> = c
        .query(
            "SELECT uuid FROM accounts WHERE expires_ms > 0 AND expires_ms <= $1 \
             ORDER BY expires_ms, uuid LIMIT $2 FOR UPDATE SKIP LOCKED",
            &[&sql(now_ms), &sql_len(batch)],
        )
        .await?
        .iter()
        .map(|r| r.get::<_, i64>(0))
        .collect();
    retire_all(c, &expired).await?;
    Ok(expired.into_iter().map(|u| u as u64).collect())
}

/// Frees the account's name and queues its data for deletion. The row stays (with
/// a name no client can send: names have no control characters) so its uuid is not
/// reused by the next account.
pub(super) async fn retire(c: &impl GenericClient, uuid: i64) -> StoreResult<()> {
    retire_all(c, &[uuid]).await
}

/// [`retire`] for each of `uuids`, in two statements.
async fn retire_all(c: &impl GenericClient, uuids: &[i64]) -> StoreResult<()> {
    if uuids.is_empty() {
        return Ok(());
    }
    c.execute(
        "UPDATE accounts SET account = chr(1) || 'expired:' || uuid::TEXT, expires_ms = 0 \
         WHERE uuid = ANY($1)",
        &[&uuids],
    )
    .await?;
    c.execute(
        "INSERT INTO retired_accounts (uuid) SELECT unnest($1::BIGINT[]) ON CONFLICT DO NOTHING",
        &[&uuids],
    )
    .await?;
    Ok(())
}

/// Deletes the data of at most `batch` retired accounts.
async fn purge_retired(
    c: &impl GenericClient,
    now_ms: u64,
    batch: usize,
    changed_topics: &mut Vec<u64>,
) -> StoreResult<(Vec<u64>, bool)> {
    let retired: Vec<i64> = c
        .query(
            "SELECT uuid FROM retired_accounts ORDER BY uuid LIMIT $1 FOR UPDATE SKIP LOCKED",
            &[&sql_len(batch)],
        )
        .await?
        .iter()
        .map(|r| r.get::<_, i64>(0))
        .collect();
    let more = retired.len() == batch;
    if retired.is_empty() {
        return Ok((Vec::new(), more));
    }
    let boundary = sql(floor_at(now_ms));
    for statement in [
        "DELETE FROM cursors WHERE uuid = ANY($1)",
        "DELETE FROM contacts WHERE owner_uuid = ANY($1)",
        "DELETE FROM contacts_cleared WHERE owner_uuid = ANY($1)",
        "DELETE FROM blacklist WHERE owner_uuid = ANY($1)",
    ] {
        c.execute(statement, &[&retired]).await?;
    }
    // Leaves its topics: current members lose it, its intervals end now.
    let mut left: Vec<(i64, i64)> = c
        .query(
            "DELETE FROM topic_members WHERE uuid = ANY($1) RETURNING uuid, topic_id",
            &[&retired],
        )
        .await?
        .iter()
        .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
        .collect();
    left.sort_unstable();
    c.execute(
        "UPDATE topic_membership SET to_seq = $2 WHERE uuid = ANY($1) AND to_seq = $3",
        &[&retired, &boundary, &OPEN],
    )
    .await?;
    // One version bump per account that left (as one update per account would).
    let topics: Vec<i64> = left.iter().map(|&(_, topic_id)| topic_id).collect();
    if !topics.is_empty() {
        c.execute(
            "UPDATE topics SET version = topics.version + n.bumps \
             FROM (SELECT topic_id, count(*) AS bumps FROM unnest($1::BIGINT[]) AS t(topic_id) \
             GROUP BY topic_id) AS n \
             WHERE topics.topic_id = n.topic_id",
            &[&topics],
        )
        .await?;
    }
    changed_topics.extend(topics.iter().map(|&t| t as u64));
    c.execute(
        "DELETE FROM retired_accounts WHERE uuid = ANY($1)",
        &[&retired],
    )
    .await?;
    Ok((retired.into_iter().map(|u| u as u64).collect(), more))
}

/// Deletes up to `batch` messages past their app's retention.
async fn delete_past_retention(
    c: &impl GenericClient,
    plan: &SweepPlan,
    batch: usize,
) -> StoreResult<(usize, bool)> {
    // A deleted app's messages are all past retention (the third column: the app
    // is in `deleted_apps`).
    let apps: Vec<(i64, Option<i64>, bool)> = c
        .query(
            "SELECT app_id, history_retention_secs, FALSE FROM apps \
             UNION ALL SELECT app_id, 0::BIGINT, TRUE FROM deleted_apps",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            (
                r.get::<_, i64>(0),
                r.get::<_, Option<i64>>(1),
                r.get::<_, bool>(2),
            )
        })
        .collect();
    if apps.is_empty() {
        return Ok((0, false));
    }
    let select = c
        .prepare(
            "SELECT seq, from_uuid, to_uuid, topic_id FROM messages \
             WHERE app_id = $1 AND seq < $2 ORDER BY app_id, seq LIMIT $3",
        )
        .await?;
    let mut deleted = 0;
    for (app_id, override_secs, was_deleted) in apps {
        let retention_ms = match override_secs {
            Some(secs) => (secs.max(0) as u64).saturating_mul(1000),
            None => plan.retention_ms,
        };
        let bound = sql(floor_at(plan.now_ms.saturating_sub(retention_ms)));
        let rows: Vec<(i64, i64, i64, i64)> = c
            .query(&select, &[&app_id, &bound, &sql_len(batch - deleted)])
            .await?
            .iter()
            .map(|r| {
                (
                    r.get::<_, i64>(0),
                    r.get::<_, i64>(1),
                    r.get::<_, i64>(2),
                    r.get::<_, i64>(3),
                )
            })
            .collect();
        let emptied = rows.len() < batch - deleted;
        delete_messages(c, &rows).await?;
        deleted += rows.len();
        if emptied && was_deleted {
            // No message of a deleted app is left: forget the app.
            c.execute("DELETE FROM deleted_apps WHERE app_id = $1", &[&app_id])
                .await?;
        }
        if deleted >= batch {
            return Ok((deleted, true));
        }
    }
    Ok((deleted, false))
}

/// Deletes the messages `(seq, from_uuid, to_uuid, topic_id)` with their topic-log
/// rows, callbacks, and the conversation rows whose newest message they are.
async fn delete_messages(c: &impl GenericClient, rows: &[(i64, i64, i64, i64)]) -> StoreResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let seqs: Vec<i64> = rows.iter().map(|&(seq, ..)| seq).collect();
    let (mut log_topics, mut log_seqs) = (Vec::new(), Vec::new());
    let (mut owners, mut peers, mut last_seqs) = (Vec::new(), Vec::new(), Vec::new());
    for &(seq, from, to, topic_id) in rows {
        if topic_id != 0 {
            log_topics.push(topic_id);
            log_seqs.push(seq);
        } else {
            // Only the newest message of a conversation ends it (older ones of the
            // same app were deleted first): both sides' rows, if their last_seq is it.
            owners.extend([from, to]);
            peers.extend([to, from]);
            last_seqs.extend([seq, seq]);
        }
    }
    if !log_topics.is_empty() {
        c.execute(
            "DELETE FROM topic_log l USING unnest($1::BIGINT[], $2::BIGINT[]) AS d(topic_id, seq) \
             WHERE l.topic_id = d.topic_id AND l.seq = d.seq",
            &[&log_topics, &log_seqs],
        )
        .await?;
    }
    if !owners.is_empty() {
        c.execute(
            "DELETE FROM contacts ct \
             USING unnest($1::BIGINT[], $2::BIGINT[], $3::BIGINT[]) AS d(owner, peer, seq) \
             WHERE ct.owner_uuid = d.owner AND ct.peer_uuid = d.peer AND ct.last_seq = d.seq",
            &[&owners, &peers, &last_seqs],
        )
        .await?;
    }
    c.execute("DELETE FROM messages WHERE seq = ANY($1)", &[&seqs])
        .await?;
    c.execute("DELETE FROM callbacks WHERE seq = ANY($1)", &[&seqs])
        .await?;
    Ok(())
}
