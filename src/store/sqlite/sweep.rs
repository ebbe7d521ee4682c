//! The embedded store's background sweep, one bounded pass per call (one short
//! write transaction, so sends queued behind it wait at most one pass):
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

use rusqlite::{params, Connection};

use super::topics::OPEN;
use crate::sequence::floor_at;
use crate::store::{StoreResult, SweepPlan, SweepReport};

pub(super) fn sweep(conn: &Connection, plan: &SweepPlan) -> StoreResult<SweepReport> {
    let mut report = SweepReport::default();
    let batch = plan.batch.max(1);
    report.expired = retire_expired(conn, plan.now_ms, batch)?;
    let (purged, more) = purge_retired(conn, plan.now_ms, batch, &mut report.topics)?;
    report.purged = purged;
    report.more |= more || report.expired.len() == batch;
    let (messages, more) = delete_past_retention(conn, plan, batch)?;
    report.messages = messages;
    report.more |= more;
    Ok(report)
}

fn retire_expired(conn: &Connection, now_ms: u64, batch: usize) -> StoreResult<Vec<u64>> {
    let expired = conn
        .prepare_cached(
            "SELECT uuid FROM accounts WHERE expires_ms > 0 AND expires_ms <= ?1 LIMIT ?2",
        )?
        .query_map(params![now_ms as i64, batch as i64], |r| r.get::<_, i64>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    for &uuid in &expired {
        retire(conn, uuid)?;
    }
    Ok(expired.into_iter().map(|u| u as u64).collect())
}

/// Frees the account's name and queues its data for deletion. The row stays (with
/// a name no client can send: names have no control characters) so its uuid is not
/// reused by the next account.
pub(super) fn retire(conn: &Connection, uuid: i64) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE accounts SET account = char(1) || 'expired:' || uuid, expires_ms = 0 \
         WHERE uuid = ?1",
    )?
    .execute([uuid])?;
    conn.prepare_cached("INSERT OR IGNORE INTO retired_accounts (uuid) VALUES (?1)")?
        .execute([uuid])?;
    Ok(())
}

/// Deletes the data of at most `batch` retired accounts.
fn purge_retired(
    conn: &Connection,
    now_ms: u64,
    batch: usize,
    changed_topics: &mut Vec<u64>,
) -> StoreResult<(Vec<u64>, bool)> {
    let retired = conn
        .prepare_cached("SELECT uuid FROM retired_accounts LIMIT ?1")?
        .query_map([batch as i64], |r| r.get::<_, i64>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    let boundary = floor_at(now_ms) as i64;
    let more = retired.len() == batch;
    let mut purged = Vec::with_capacity(retired.len());
    for uuid in retired {
        for sql in [
            "DELETE FROM cursors WHERE uuid = ?1",
            "DELETE FROM contacts WHERE owner_uuid = ?1",
            "DELETE FROM contacts_cleared WHERE owner_uuid = ?1",
            "DELETE FROM blacklist WHERE owner_uuid = ?1",
        ] {
            conn.prepare_cached(sql)?.execute([uuid])?;
        }
        // Leaves its topics: current members lose it, its intervals end now.
        let topics = conn
            .prepare_cached("SELECT topic_id FROM topic_members WHERE uuid = ?1")?
            .query_map([uuid], |r| r.get::<_, i64>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        conn.prepare_cached("DELETE FROM topic_members WHERE uuid = ?1")?
            .execute([uuid])?;
        conn.prepare_cached(
            "UPDATE topic_membership SET to_seq = ?2 WHERE uuid = ?1 AND to_seq = ?3",
        )?
        .execute(params![uuid, boundary, OPEN])?;
        for topic_id in topics {
            conn.prepare_cached("UPDATE topics SET version = version + 1 WHERE topic_id = ?1")?
                .execute([topic_id])?;
            changed_topics.push(topic_id as u64);
        }
        conn.prepare_cached("DELETE FROM retired_accounts WHERE uuid = ?1")?
            .execute([uuid])?;
        purged.push(uuid as u64);
    }
    Ok((purged, more))
}

/// Deletes up to `batch` messages past their app's retention.
fn delete_past_retention(
    conn: &Connection,
    plan: &SweepPlan,
    batch: usize,
) -> StoreResult<(usize, bool)> {
    // A deleted app's messages are all past retention.
    let apps = conn
        .prepare_cached(
            "SELECT app_id, history_retention_secs FROM apps \
             UNION ALL SELECT app_id, 0 FROM deleted_apps",
        )?
        .query_map([], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut select = conn.prepare_cached(
        "SELECT seq, from_uuid, to_uuid, topic_id FROM messages \
         WHERE app_id = ?1 AND seq < ?2 ORDER BY app_id, seq LIMIT ?3",
    )?;
    let mut deleted = 0;
    for (app_id, override_secs) in apps {
        let retention_ms = match override_secs {
            Some(secs) => (secs.max(0) as u64).saturating_mul(1000),
            None => plan.retention_ms,
        };
        let bound = floor_at(plan.now_ms.saturating_sub(retention_ms)) as i64;
        let rows = select
            .query_map(params![app_id, bound, (batch - deleted) as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let emptied = rows.len() < batch - deleted;
        for (seq, from, to, topic_id) in rows {
            delete_message(conn, seq, from, to, topic_id)?;
            deleted += 1;
        }
        if emptied {
            // No message of a deleted app is left: forget the app.
            conn.prepare_cached("DELETE FROM deleted_apps WHERE app_id = ?1")?
                .execute([app_id])?;
        }
        if deleted >= batch {
            return Ok((deleted, true));
        }
    }
    Ok((deleted, false))
}

fn delete_message(
    conn: &Connection,
    seq: i64,
    from: i64,
    to: i64,
    topic_id: i64,
) -> StoreResult<()> {
    if topic_id != 0 {
        conn.prepare_cached("DELETE FROM topic_log WHERE topic_id = ?1 AND seq = ?2")?
            .execute(params![topic_id, seq])?;
    } else {
        // Only the newest message of a conversation ends it (older ones of the same
        // app were deleted first).
        let mut contact = conn.prepare_cached(
            "DELETE FROM contacts WHERE owner_uuid = ?1 AND peer_uuid = ?2 AND last_seq = ?3",
        )?;
        contact.execute(params![from, to, seq])?;
        contact.execute(params![to, from, seq])?;
    }
    conn.prepare_cached("DELETE FROM messages WHERE seq = ?1")?
        .execute([seq])?;
    conn.prepare_cached("DELETE FROM callbacks WHERE seq = ?1")?
        .execute([seq])?;
    Ok(())
}
