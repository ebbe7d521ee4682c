//! Messages in the embedded store: appending (with dedup of (sender, packetId), one
//! topic-log row of a topic message, and for a p2p message the two sides'
//! conversation rows in `contacts`, once per conversation per commit) and reading
//! what one device sees: its conversations and the logs of its topics merged in
//! sequence order.

use std::collections::HashMap;

use rusqlite::{params, Connection};

use crate::message::{Envelope, Target};
use crate::store::merge::{self, Part, Source};
use crate::store::{AppendOutcome, NewMessage, Order, StoreResult, StoredMessage};

/// Reads what a user sees, oldest or newest first, at most `limit` messages with
/// `after < seq < before`: its p2p conversations with a message after `after`
/// (from `contacts`) merged with the log of every topic it belonged to, within each
/// membership interval. Each part is read in index order in small chunks (a
/// conversation's slice of `messages_by_conversation`, a membership's slice of its
/// topic log) and merged here, refilling a part only when its chunk is used up: a
/// page reads about `limit` + a few rows per part, however many conversations have
/// news, and nothing is sorted whole.
pub(super) fn user_messages(
    conn: &Connection,
    uuid: u64,
    resource: &str,
    after: u64,
    before: u64,
    limit: usize,
    order: Order,
) -> StoreResult<Vec<StoredMessage>> {
    let dir = match order {
        Order::OldestFirst => "ASC",
        Order::NewestFirst => "DESC",
    };
    // Bounds come from clients (`Pull`): clamp into SQLite's signed range.
    let after = sql_seq(after);
    let before = if before == 0 {
        i64::MAX
    } else {
        sql_seq(before)
    };
    let mut parts = parts(conn, uuid, after, before)?;
    if parts.is_empty() || limit == 0 {
        return Ok(Vec::new());
    }
    let mut conversation = conn.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE {CONVERSATION_RANGE} \
         ORDER BY m.seq {dir} LIMIT ?7"
    ))?;
    let mut log = conn.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM topic_log l JOIN messages m ON m.seq = l.seq \
         WHERE l.topic_id = ?1 AND l.seq > ?2 AND l.seq < ?3 ORDER BY l.seq {dir} LIMIT ?4"
    ))?;
    let chunk = merge::chunk_size(limit, parts.len());
    let mut fill = |part: &mut Part| -> StoreResult<()> {
        let rows: Vec<StoredMessage> = match part.source {
            Source::Conversation((lo, hi)) => conversation
                .query_map(
                    params![
                        uuid as i64,
                        part.lower,
                        part.upper,
                        resource,
                        lo,
                        hi,
                        chunk as i64
                    ],
                    row_to_message,
                )?
                .collect::<Result<_, _>>()?,
            Source::Topic(topic_id) => log
                .query_map(
                    params![topic_id, part.lower, part.upper, chunk as i64],
                    row_to_message,
                )?
                .collect::<Result<_, _>>()?,
        };
        part.absorb(rows, chunk, order);
        Ok(())
    };
    for part in &mut parts {
        fill(part)?;
    }
    let mut out: Vec<StoredMessage> = Vec::with_capacity(limit);
    while out.len() < limit {
        let Some(i) = merge::take_next(&mut parts, &mut out, order) else {
            break;
        };
        if parts[i].wants_more() && out.len() < limit {
            fill(&mut parts[i])?;
        }
    }
    Ok(out)
}

/// Counts what [`user_messages`] would return after `after`, stopping at `cap`: each
/// conversation and topic log is counted only up to what is still missing, so a
/// login reads at most about `cap` index entries however many conversations have
/// news.
pub(super) fn count_user_messages(
    conn: &Connection,
    uuid: u64,
    resource: &str,
    after: u64,
    cap: usize,
) -> StoreResult<usize> {
    let mut conversation = conn.prepare_cached(&format!(
        "SELECT count(*) FROM (SELECT 1 FROM messages m WHERE {CONVERSATION_RANGE} LIMIT ?7)"
    ))?;
    let mut log = conn.prepare_cached(
        "SELECT count(*) FROM (SELECT 1 FROM topic_log \
         WHERE topic_id = ?1 AND seq > ?2 AND seq < ?3 LIMIT ?4)",
    )?;
    let mut total = 0usize;
    for part in parts(conn, uuid, sql_seq(after), i64::MAX)? {
        let missing = cap.saturating_sub(total) as i64;
        let n: i64 = match part.source {
            Source::Conversation((lo, hi)) => conversation.query_row(
                params![
                    uuid as i64,
                    part.lower,
                    part.upper,
                    resource,
                    lo,
                    hi,
                    missing
                ],
                |r| r.get(0),
            )?,
            Source::Topic(topic_id) => log
                .query_row(params![topic_id, part.lower, part.upper, missing], |r| {
                    r.get(0)
                })?,
        };
        total += n as usize;
        if total >= cap {
            return Ok(cap);
        }
    }
    Ok(total)
}

/// The parts of what `uuid` sees in `after < seq < before`: its conversations with a
/// message after `after`, and each topic membership overlapping the range.
fn parts(conn: &Connection, uuid: u64, after: i64, before: i64) -> StoreResult<Vec<Part>> {
    let mut parts: Vec<Part> = conn
        .prepare_cached("SELECT peer_uuid FROM contacts WHERE owner_uuid = ?1 AND last_seq > ?2")?
        .query_map(params![uuid as i64, after], |r| r.get::<_, i64>(0))?
        .map(|peer| {
            peer.map(|peer| {
                let pair = ((uuid as i64).min(peer), (uuid as i64).max(peer));
                Part::new(Source::Conversation(pair), after, before)
            })
        })
        .collect::<Result<_, _>>()?;
    let memberships = conn
        .prepare_cached(
            "SELECT topic_id, max(from_seq, ?2), min(to_seq, ?3) FROM topic_membership \
             WHERE uuid = ?1 AND to_seq > ?2 AND from_seq < ?3",
        )?
        .query_map(params![uuid as i64, after, before], |r| {
            Ok(Part::new(
                Source::Topic(r.get::<_, i64>(0)?),
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    parts.extend(memberships);
    Ok(parts)
}

/// A sequence as SQLite's signed integer (bounds from clients may exceed it).
pub(super) fn sql_seq(seq: u64) -> i64 {
    seq.min(i64::MAX as u64) as i64
}

/// One conversation's messages as device `?4` of user `?1` sees them, in
/// `?2 < seq < ?3`; `?5`, `?6` = the pair's lower and higher uuid (served by
/// `messages_by_conversation`). Left out: what the user's blacklist blocked, and a
/// message addressed to another resource of this user (one sent to one resource is
/// seen only by that device; what this user sent is seen by all its devices).
const CONVERSATION_RANGE: &str = "min(m.from_uuid, m.to_uuid) = ?5 \
     AND max(m.from_uuid, m.to_uuid) = ?6 AND m.topic_id = 0 AND m.seq > ?2 AND m.seq < ?3 \
     AND (m.blocked = 0 OR m.from_uuid = ?1) \
     AND (m.to_resource = '' OR m.to_uuid != ?1 OR m.to_resource = ?4)";

pub(super) const MESSAGE_COLUMNS: &str = "m.seq, m.ts, m.packet_id, m.from_uuid, m.from_account, \
     m.from_resource, m.to_uuid, m.to_account, m.to_resource, m.biz_type, m.payload, m.topic_id, \
     m.app_id, m.blocked";

/// A row of `messages`; 0 / '' in the table mean "none" and become enums here.
pub(super) fn row_to_message(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMessage> {
    let topic_id = r.get::<_, i64>(11)? as u64;
    let target = if topic_id != 0 {
        Target::Topic { topic_id }
    } else {
        let resource: String = r.get(8)?;
        Target::User {
            uuid: r.get::<_, i64>(6)? as u64,
            account: r.get(7)?,
            resource: (!resource.is_empty()).then_some(resource),
            blocked: r.get::<_, i64>(13)? != 0,
        }
    };
    Ok(StoredMessage {
        seq: r.get::<_, i64>(0)? as u64,
        ts: r.get::<_, i64>(1)? as u64,
        envelope: Envelope {
            app_id: r.get::<_, i64>(12)? as u64,
            from_uuid: r.get::<_, i64>(3)? as u64,
            from_account: r.get(4)?,
            from_resource: r.get(5)?,
            packet_id: r.get(2)?,
            target,
            biz_type: r.get(9)?,
            payload: r.get::<_, Vec<u8>>(10)?.into(),
        },
    })
}

pub(super) fn append_in(
    conn: &Connection,
    messages: &[NewMessage],
) -> StoreResult<Vec<AppendOutcome>> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO messages (seq, ts, app_id, from_uuid, from_account, from_resource, \
         packet_id, to_uuid, to_account, to_resource, biz_type, payload, topic_id, blocked) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
         ON CONFLICT (from_uuid, packet_id) DO NOTHING",
    )?;
    let mut existing = conn
        .prepare_cached("SELECT seq, ts FROM messages WHERE from_uuid = ?1 AND packet_id = ?2")?;
    let mut topic_log =
        conn.prepare_cached("INSERT OR IGNORE INTO topic_log (topic_id, seq) VALUES (?1, ?2)")?;
    let mut outcomes = Vec::with_capacity(messages.len());
    // (owner, peer) → newest seq in this batch: one write per conversation side per
    // commit, however many messages the batch holds for it.
    let mut contacts: HashMap<(u64, u64), u64> = HashMap::new();
    let mut touch = |owner: u64, peer: u64, seq: u64| {
        let last = contacts.entry((owner, peer)).or_insert(seq);
        *last = (*last).max(seq);
    };
    for stored in messages {
        let m = &stored.envelope;
        let (to_uuid, to_account, to_resource, topic_id, blocked) =
            crate::store::target_columns(&m.target);
        let inserted = insert.execute(params![
            stored.seq as i64,
            stored.ts as i64,
            m.app_id as i64,
            m.from_uuid as i64,
            m.from_account,
            m.from_resource,
            m.packet_id,
            to_uuid as i64,
            to_account,
            to_resource,
            m.biz_type,
            m.payload.as_ref(),
            topic_id as i64,
            i64::from(blocked),
        ])?;
        if inserted == 0 {
            let (seq, ts) = existing.query_row(params![m.from_uuid as i64, m.packet_id], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
            })?;
            outcomes.push(AppendOutcome::Duplicate { seq, ts });
            continue;
        }
        if topic_id != 0 {
            // Stored once, in the topic's log, whatever the topic's size.
            topic_log.execute(params![topic_id as i64, stored.seq as i64])?;
            outcomes.push(AppendOutcome::Stored);
            continue;
        }
        // A recipient who blacklisted the sender never sees the message: its side
        // of the conversation does not move.
        if !blocked {
            touch(to_uuid, m.from_uuid, stored.seq);
        }
        touch(m.from_uuid, to_uuid, stored.seq);
        outcomes.push(AppendOutcome::Stored);
    }
    if !contacts.is_empty() {
        let mut upsert = conn.prepare_cached(
            "INSERT INTO contacts (owner_uuid, peer_uuid, last_seq) VALUES (?1, ?2, ?3) \
             ON CONFLICT (owner_uuid, peer_uuid) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)",
        )?;
        for ((owner, peer), seq) in contacts {
            upsert.execute(params![owner as i64, peer as i64, seq as i64])?;
        }
    }
    Ok(outcomes)
}
