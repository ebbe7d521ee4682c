//! The embedded store's background sweep, one bounded pass per call (one short
//! write transaction, so sends queued behind it wait at most one pass):
//!
//! 1. accounts past their lifetime are retired: the name is freed (the row stays
//!    as a tombstone so its uuid is never given out again) and the uuid is queued
//!    in `retired_accounts`;
//! 2. retired accounts' data is deleted: timeline, cursors, contacts, blacklist,
//!    topic memberships;
//! 3. messages past their app's retention are deleted with their timeline,
//!    topic-log and contact rows (`messages_by_app` finds them);
//! 4. timeline rows older than the offline window are deleted (the login backlog
//!    never reads them), walking the message log from a cursor in `sweep_state`.
//!
//! The dedup record of a message is its row (`messages_dedup`), so it goes with the
//! message at retention.

use rusqlite::{params, Connection};

use crate::sequence::floor_at;
use crate::store::{StoreResult, SweepPlan, SweepReport};

/// `to_seq` of a membership that has not ended.
const OPEN: i64 = i64::MAX;

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
    let (rows, more) = delete_past_offline_window(conn, plan, batch)?;
    report.timeline_rows = rows;
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

/// Deletes at most `batch` timeline rows and everything small of retired accounts;
/// an account leaves the queue once its timeline is empty.
fn purge_retired(
    conn: &Connection,
    now_ms: u64,
    batch: usize,
    changed_topics: &mut Vec<u64>,
) -> StoreResult<(usize, bool)> {
    let retired = conn
        .prepare_cached("SELECT uuid FROM retired_accounts LIMIT ?1")?
        .query_map([batch as i64], |r| r.get::<_, i64>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    let boundary = floor_at(now_ms) as i64;
    let mut budget = batch;
    let mut purged = 0;
    for uuid in retired {
        let deleted = conn
            .prepare_cached(
                "DELETE FROM timeline WHERE uuid = ?1 AND seq IN \
                 (SELECT seq FROM timeline WHERE uuid = ?1 LIMIT ?2)",
            )?
            .execute(params![uuid, budget as i64])?;
        budget = budget.saturating_sub(deleted);
        if budget == 0 {
            return Ok((purged, true));
        }
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
        purged += 1;
    }
    Ok((purged, false))
}

/// Deletes up to `batch` messages past their app's retention.
fn delete_past_retention(
    conn: &Connection,
    plan: &SweepPlan,
    batch: usize,
) -> StoreResult<(usize, bool)> {
    let apps = conn
        .prepare_cached("SELECT app_id, history_retention_secs FROM apps")?
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
        for (seq, from, to, topic_id) in rows {
            delete_message(conn, seq, from, to, topic_id)?;
            deleted += 1;
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
        let mut timeline =
            conn.prepare_cached("DELETE FROM timeline WHERE uuid = ?1 AND seq = ?2")?;
        timeline.execute(params![to, seq])?;
        timeline.execute(params![from, seq])?;
        let mut contact = conn.prepare_cached(
            "DELETE FROM contacts WHERE owner_uuid = ?1 AND peer_uuid = ?2 AND last_seq = ?3",
        )?;
        contact.execute(params![from, to, seq])?;
        contact.execute(params![to, from, seq])?;
    }
    conn.prepare_cached("DELETE FROM messages WHERE seq = ?1")?
        .execute([seq])?;
    Ok(())
}

/// Deletes the timeline rows of up to `batch` p2p messages older than the offline
/// window, continuing from where the last pass stopped.
fn delete_past_offline_window(
    conn: &Connection,
    plan: &SweepPlan,
    batch: usize,
) -> StoreResult<(usize, bool)> {
    let bound = floor_at(plan.now_ms.saturating_sub(plan.offline_ttl_ms)) as i64;
    let cursor: i64 = conn
        .prepare_cached("SELECT coalesce(max(seq), 0) FROM sweep_state WHERE name = 'timeline'")?
        .query_row([], |r| r.get(0))?;
    if cursor >= bound {
        return Ok((0, false));
    }
    let rows = conn
        .prepare_cached(
            "SELECT seq, from_uuid, to_uuid, topic_id FROM messages \
             WHERE seq > ?1 AND seq < ?2 ORDER BY seq LIMIT ?3",
        )?
        .query_map(params![cursor, bound, batch as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let more = rows.len() == batch;
    let reached = match rows.last() {
        Some(&(seq, ..)) if more => seq,
        _ => bound - 1,
    };
    let mut timeline = conn.prepare_cached("DELETE FROM timeline WHERE uuid = ?1 AND seq = ?2")?;
    let mut deleted = 0;
    for (seq, from, to, topic_id) in rows {
        if topic_id != 0 {
            continue;
        }
        deleted += timeline.execute(params![to, seq])?;
        if from != to {
            deleted += timeline.execute(params![from, seq])?;
        }
    }
    conn.prepare_cached(
        "INSERT INTO sweep_state (name, seq) VALUES ('timeline', ?1) \
         ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
    )?
    .execute([reached])?;
    Ok((deleted, more))
}
