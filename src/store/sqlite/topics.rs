//! Topic (group) records of the embedded store: the topic row, its current members
//! in join order, and the membership intervals that decide which topic-log entries
//! a user reads (see `user_messages_sql`).

use std::collections::HashSet;

use rand::Rng;
use rusqlite::{params, Connection, OptionalExtension};

use crate::store::{Member, StoreError, StoreResult, Topic, TopicSummary, TopicUpdate};
use crate::time::now_ms;

/// `to_seq` of a membership that has not ended.
pub(super) const OPEN: i64 = i64::MAX;

fn bump(conn: &Connection, topic_id: u64) -> StoreResult<()> {
    conn.prepare_cached("UPDATE topics SET version = version + 1 WHERE topic_id = ?1")?
        .execute([topic_id as i64])?;
    Ok(())
}

/// Adds the members not already in the topic, checking the limit first; returns
/// the uuids added.
pub(super) fn add_members(
    conn: &Connection,
    topic_id: u64,
    uuids: &[u64],
    limit: usize,
    boundary: u64,
) -> StoreResult<Vec<u64>> {
    // One read of the current members, then linear work in the names given.
    let mut seen: HashSet<u64> = conn
        .prepare_cached("SELECT uuid FROM topic_members WHERE topic_id = ?1")?
        .query_map([topic_id as i64], |r| r.get::<_, i64>(0))?
        .map(|r| r.map(|u| u as u64))
        .collect::<Result<_, _>>()?;
    let count = seen.len();
    let new: Vec<u64> = uuids.iter().copied().filter(|u| seen.insert(*u)).collect();
    if count + new.len() > limit {
        return Err(StoreError::Invalid(format!(
            "topic member limit is {limit}: it has {count} members, {} more would exceed it",
            new.len()
        )));
    }
    let mut insert = conn.prepare_cached(
        "INSERT INTO topic_members (topic_id, uuid, position) VALUES (?1, ?2, ?3)",
    )?;
    let mut interval = conn.prepare_cached(
        "INSERT INTO topic_membership (uuid, topic_id, from_seq, to_seq) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let next: i64 = conn
        .prepare_cached(
            "SELECT coalesce(max(position), -1) + 1 FROM topic_members WHERE topic_id = ?1",
        )?
        .query_row([topic_id as i64], |r| r.get(0))?;
    for (i, uuid) in new.iter().enumerate() {
        insert.execute(params![topic_id as i64, *uuid as i64, next + i as i64])?;
        interval.execute(params![
            *uuid as i64,
            topic_id as i64,
            boundary as i64,
            OPEN
        ])?;
    }
    bump(conn, topic_id)?;
    Ok(new)
}

pub(super) fn start_memberships(
    conn: &Connection,
    topic_id: u64,
    uuids: &[u64],
    boundary: u64,
) -> StoreResult<()> {
    let mut stmt = conn.prepare_cached(
        "UPDATE topic_membership SET from_seq = ?3 \
         WHERE uuid = ?1 AND topic_id = ?2 AND to_seq = ?4",
    )?;
    for &uuid in uuids {
        stmt.execute(params![uuid as i64, topic_id as i64, boundary as i64, OPEN])?;
    }
    Ok(())
}

pub(super) fn create(
    conn: &Connection,
    app_id: u64,
    owner: u64,
    name: &str,
    members: &[u64],
    limit: usize,
    boundary: u64,
) -> StoreResult<u64> {
    let mut rng = rand::rng();
    // Below 2^53 so JavaScript clients read it exactly as a JSON number.
    let topic_id = rng.random_range(1_000_000_000_000u64..9_000_000_000_000_000);
    conn.prepare_cached(
        "INSERT INTO topics (topic_id, app_id, owner_uuid, name, created_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        topic_id as i64,
        app_id as i64,
        owner as i64,
        name,
        now_ms() as i64
    ])?;
    let mut all = vec![owner];
    all.extend_from_slice(members);
    add_members(conn, topic_id, &all, limit, boundary)?;
    Ok(topic_id)
}

pub(super) fn get(conn: &Connection, topic_id: u64) -> StoreResult<Option<Topic>> {
    let row = conn
        .prepare_cached(
            "SELECT t.app_id, t.owner_uuid, coalesce(a.account, ''), t.name, t.bulletin, \
             t.dismissed, t.version FROM topics t LEFT JOIN accounts a ON a.uuid = t.owner_uuid \
             WHERE t.topic_id = ?1",
        )?
        .query_row([topic_id as i64], |r| {
            Ok(Topic {
                topic_id,
                app_id: r.get::<_, i64>(0)? as u64,
                owner_uuid: r.get::<_, i64>(1)? as u64,
                owner_account: r.get(2)?,
                name: r.get(3)?,
                bulletin: r.get(4)?,
                dismissed: r.get::<_, i64>(5)? != 0,
                version: r.get::<_, i64>(6)? as u64,
                members: Vec::new(),
            })
        })
        .optional()?;
    let Some(mut topic) = row else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT m.uuid, coalesce(a.account, '') FROM topic_members m \
         LEFT JOIN accounts a ON a.uuid = m.uuid WHERE m.topic_id = ?1 ORDER BY m.position",
    )?;
    let members = stmt.query_map([topic_id as i64], |r| {
        Ok(Member {
            uuid: r.get::<_, i64>(0)? as u64,
            account: r.get(1)?,
        })
    })?;
    topic.members = members.collect::<Result<_, _>>()?;
    Ok(Some(topic))
}

pub(super) fn topics_of(conn: &Connection, uuid: u64) -> StoreResult<Vec<TopicSummary>> {
    let mut stmt = conn.prepare_cached(
        "SELECT t.topic_id, t.owner_uuid, coalesce(a.account, ''), t.name, t.bulletin \
         FROM topic_members m JOIN topics t ON t.topic_id = m.topic_id \
         LEFT JOIN accounts a ON a.uuid = t.owner_uuid \
         WHERE m.uuid = ?1 AND t.dismissed = 0 ORDER BY t.created_ms, t.topic_id",
    )?;
    let rows = stmt.query_map([uuid as i64], |r| {
        Ok(TopicSummary {
            topic_id: r.get::<_, i64>(0)? as u64,
            owner_uuid: r.get::<_, i64>(1)? as u64,
            owner_account: r.get(2)?,
            name: r.get(3)?,
            bulletin: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn remove_members(
    conn: &Connection,
    topic_id: u64,
    uuids: &[u64],
    boundary: u64,
) -> StoreResult<()> {
    let mut delete =
        conn.prepare_cached("DELETE FROM topic_members WHERE topic_id = ?1 AND uuid = ?2")?;
    let mut close = conn.prepare_cached(
        "UPDATE topic_membership SET to_seq = ?3 WHERE uuid = ?1 AND topic_id = ?2 AND to_seq = ?4",
    )?;
    for &uuid in uuids {
        delete.execute(params![topic_id as i64, uuid as i64])?;
        close.execute(params![uuid as i64, topic_id as i64, boundary as i64, OPEN])?;
    }
    bump(conn, topic_id)
}

pub(super) fn update(conn: &Connection, topic_id: u64, u: &TopicUpdate) -> StoreResult<()> {
    if let Some(owner) = u.owner_uuid {
        conn.prepare_cached("UPDATE topics SET owner_uuid = ?2 WHERE topic_id = ?1")?
            .execute(params![topic_id as i64, owner as i64])?;
    }
    if let Some(name) = &u.name {
        conn.prepare_cached("UPDATE topics SET name = ?2 WHERE topic_id = ?1")?
            .execute(params![topic_id as i64, name])?;
    }
    if let Some(bulletin) = &u.bulletin {
        conn.prepare_cached("UPDATE topics SET bulletin = ?2 WHERE topic_id = ?1")?
            .execute(params![topic_id as i64, bulletin])?;
    }
    bump(conn, topic_id)
}

pub(super) fn dismiss(conn: &Connection, topic_id: u64, boundary: u64) -> StoreResult<()> {
    conn.prepare_cached("UPDATE topics SET dismissed = 1 WHERE topic_id = ?1")?
        .execute([topic_id as i64])?;
    conn.prepare_cached(
        "UPDATE topic_membership SET to_seq = ?2 WHERE topic_id = ?1 AND to_seq = ?3",
    )?
    .execute(params![topic_id as i64, boundary as i64, OPEN])?;
    conn.prepare_cached("DELETE FROM topic_members WHERE topic_id = ?1")?
        .execute([topic_id as i64])?;
    bump(conn, topic_id)
}
