//! Topic (group) records of the PostgreSQL store: the topic row, its current
//! members in join order, and the membership intervals that decide which topic-log
//! entries a user reads (see `messages::user_messages`). A port of
//! `sqlite/topics.rs`.
//!
//! The embedded store has one writer; here several nodes may change one topic at
//! once, so the writes that change its members or its row (`add_members`,
//! `remove_members`, `update`, `dismiss`) lock the topic row before anything else:
//! they run one after the other per topic, each seeing what the previous one
//! committed, and take their locks in the same order.

use std::collections::HashSet;

use rand::Rng;
use tokio_postgres::GenericClient;

use super::{num, sql};
use crate::store::{Member, StoreError, StoreResult, Topic, TopicSummary, TopicUpdate};
use crate::time::now_ms;

/// `to_seq` of a membership that has not ended.
pub(super) const OPEN: i64 = i64::MAX;

async fn bump(c: &impl GenericClient, topic_id: u64) -> StoreResult<()> {
    c.execute(
        "UPDATE topics SET version = version + 1 WHERE topic_id = $1",
        &[&sql(topic_id)],
    )
    .await?;
    Ok(())
}

fn over_limit(limit: usize, count: usize, more: usize) -> StoreError {
    StoreError::Invalid(format!(
        "topic member limit is {limit}: it has {count} members, {more} more would exceed it"
    ))
}

/// Adds the members not already in the topic, checking the limit first; returns
/// the uuids added.
pub(super) async fn add_members(
    c: &impl GenericClient,
    topic_id: u64,
    uuids: &[u64],
    limit: usize,
    boundary: u64,
) -> StoreResult<Vec<u64>> {
    let id = sql(topic_id);
    // Concurrent additions to this topic wait here, then read the members below
    // with what the other committed (READ COMMITTED: a new snapshot per statement).
    // A lock, not a write: the limit check below must fail before any write.
    c.query_opt(
        "SELECT 1 FROM topics WHERE topic_id = $1 FOR UPDATE",
        &[&id],
    )
    .await?;
    // One read of the current members (and the last position), then linear work in
    // the names given.
    let rows = c
        .query(
            "SELECT uuid, position FROM topic_members WHERE topic_id = $1",
            &[&id],
        )
        .await?;
    let next: i64 = rows
        .iter()
        .map(|r| r.get::<_, i64>(1))
        .max()
        .map_or(0, |p| p + 1);
    let mut seen: HashSet<u64> = rows.iter().map(|r| num(r, 0)).collect();
    let count = seen.len();
    let new: Vec<u64> = uuids.iter().copied().filter(|u| seen.insert(*u)).collect();
    if count + new.len() > limit {
        return Err(over_limit(limit, count, new.len()));
    }
    if !new.is_empty() {
        let added: Vec<i64> = new.iter().map(|&u| sql(u)).collect();
        let positions: Vec<i64> = (0..added.len()).map(|i| next + i as i64).collect();
        c.execute(
            "INSERT INTO topic_members (topic_id, uuid, position) \
             SELECT $1::BIGINT, u, p FROM unnest($2::BIGINT[], $3::BIGINT[]) AS t(u, p)",
            &[&id, &added, &positions],
        )
        .await?;
        c.execute(
            "INSERT INTO topic_membership (uuid, topic_id, from_seq, to_seq) \
             SELECT u, $2::BIGINT, $3::BIGINT, $4::BIGINT FROM unnest($1::BIGINT[]) AS t(u)",
            &[&added, &id, &sql(boundary), &OPEN],
        )
        .await?;
    }
    bump(c, topic_id).await?;
    Ok(new)
}

pub(super) async fn start_memberships(
    c: &impl GenericClient,
    topic_id: u64,
    uuids: &[u64],
    boundary: u64,
) -> StoreResult<()> {
    if uuids.is_empty() {
        return Ok(());
    }
    let uuids: Vec<i64> = uuids.iter().map(|&u| sql(u)).collect();
    c.execute(
        "UPDATE topic_membership SET from_seq = $3 \
         WHERE uuid = ANY($1) AND topic_id = $2 AND to_seq = $4",
        &[&uuids, &sql(topic_id), &sql(boundary), &OPEN],
    )
    .await?;
    Ok(())
}

pub(super) async fn create(
    c: &impl GenericClient,
    app_id: u64,
    owner: u64,
    name: &str,
    members: &[u64],
    limit: usize,
    boundary: u64,
) -> StoreResult<u64> {
    // Below 2^53 so JavaScript clients read it exactly as a JSON number. (The rng is
    // not Send: it is gone before the first await.)
    let topic_id = {
        let mut rng = rand::rng();
        rng.random_range(1_000_000_000_000u64..9_000_000_000_000_000)
    };
    let mut all = vec![owner];
    all.extend_from_slice(members);
    // `add_members` checks this too, but after the topic row is written: fail
    // before writing anything, so a refused create leaves nothing behind even if
    // the caller commits.
    let distinct = all.iter().collect::<HashSet<_>>().len();
    if distinct > limit {
        return Err(over_limit(limit, 0, distinct));
    }
    c.execute(
        "INSERT INTO topics (topic_id, app_id, owner_uuid, name, created_ms) \
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &sql(topic_id),
            &sql(app_id),
            &sql(owner),
            &name,
            &sql(now_ms()),
        ],
    )
    .await?;
    add_members(c, topic_id, &all, limit, boundary).await?;
    Ok(topic_id)
}

pub(super) async fn get(c: &impl GenericClient, topic_id: u64) -> StoreResult<Option<Topic>> {
    let id = sql(topic_id);
    let Some(r) = c
        .query_opt(
            "SELECT t.app_id, t.owner_uuid, coalesce(a.account, ''), t.name, t.bulletin, \
             t.dismissed, t.version FROM topics t LEFT JOIN accounts a ON a.uuid = t.owner_uuid \
             WHERE t.topic_id = $1",
            &[&id],
        )
        .await?
    else {
        return Ok(None);
    };
    let mut topic = Topic {
        topic_id,
        app_id: num(&r, 0),
        owner_uuid: num(&r, 1),
        owner_account: r.get(2),
        name: r.get(3),
        bulletin: r.get(4),
        dismissed: r.get::<_, bool>(5),
        version: num(&r, 6),
        members: Vec::new(),
    };
    topic.members = c
        .query(
            "SELECT m.uuid, coalesce(a.account, '') FROM topic_members m \
             LEFT JOIN accounts a ON a.uuid = m.uuid WHERE m.topic_id = $1 ORDER BY m.position",
            &[&id],
        )
        .await?
        .iter()
        .map(|r| Member {
            uuid: num(r, 0),
            account: r.get(1),
        })
        .collect();
    Ok(Some(topic))
}

pub(super) async fn topics_of(c: &impl GenericClient, uuid: u64) -> StoreResult<Vec<TopicSummary>> {
    let rows = c
        .query(
            "SELECT t.topic_id, t.owner_uuid, coalesce(a.account, ''), t.name, t.bulletin \
             FROM topic_members m JOIN topics t ON t.topic_id = m.topic_id \
             LEFT JOIN accounts a ON a.uuid = t.owner_uuid \
             WHERE m.uuid = $1 AND NOT t.dismissed ORDER BY t.created_ms, t.topic_id",
            &[&sql(uuid)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| TopicSummary {
            topic_id: num(r, 0),
            owner_uuid: num(r, 1),
            owner_account: r.get(2),
            name: r.get(3),
            bulletin: r.get(4),
        })
        .collect())
}

pub(super) async fn remove_members(
    c: &impl GenericClient,
    topic_id: u64,
    uuids: &[u64],
    boundary: u64,
) -> StoreResult<()> {
    // The version first: it locks the topic row, as `add_members` does, so changes
    // of one topic's members take their locks in the same order.
    bump(c, topic_id).await?;
    if uuids.is_empty() {
        return Ok(());
    }
    let id = sql(topic_id);
    let uuids: Vec<i64> = uuids.iter().map(|&u| sql(u)).collect();
    c.execute(
        "DELETE FROM topic_members WHERE topic_id = $1 AND uuid = ANY($2)",
        &[&id, &uuids],
    )
    .await?;
    c.execute(
        "UPDATE topic_membership SET to_seq = $3 \
         WHERE uuid = ANY($1) AND topic_id = $2 AND to_seq = $4",
        &[&uuids, &id, &sql(boundary), &OPEN],
    )
    .await?;
    Ok(())
}

pub(super) async fn update(
    c: &impl GenericClient,
    topic_id: u64,
    u: &TopicUpdate,
) -> StoreResult<()> {
    // One statement: a field left out (NULL) keeps its value; the version moves
    // whether or not anything changed, as in the embedded store.
    c.execute(
        "UPDATE topics SET owner_uuid = coalesce($2, owner_uuid), name = coalesce($3, name), \
         bulletin = coalesce($4, bulletin), version = version + 1 WHERE topic_id = $1",
        &[&sql(topic_id), &u.owner_uuid.map(sql), &u.name, &u.bulletin],
    )
    .await?;
    Ok(())
}

pub(super) async fn dismiss(
    c: &impl GenericClient,
    topic_id: u64,
    boundary: u64,
) -> StoreResult<()> {
    let id = sql(topic_id);
    // Marking it dismissed also moves the version (and locks the row first).
    c.execute(
        "UPDATE topics SET dismissed = TRUE, version = version + 1 WHERE topic_id = $1",
        &[&id],
    )
    .await?;
    c.execute(
        "UPDATE topic_membership SET to_seq = $2 WHERE topic_id = $1 AND to_seq = $3",
        &[&id, &sql(boundary), &OPEN],
    )
    .await?;
    c.execute("DELETE FROM topic_members WHERE topic_id = $1", &[&id])
        .await?;
    Ok(())
}
