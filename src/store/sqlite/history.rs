//! History (消息漫游) and recent contacts (最近通讯列表) in the embedded store.
//!
//! Access paths (docs/storage.md): a p2p conversation is read through
//! `messages_by_conversation` (lower uuid, higher uuid, seq); a topic through its
//! `topic_log` (topic_id, seq) within the viewer's `topic_membership` intervals. p2p
//! contacts are the `contacts` rows (owner_uuid, peer_uuid) written at commit (a
//! cleared one is hidden up to its `last_seq`, not deleted); a
//! topic's entry is its newest `topic_log` row inside the viewer's current
//! membership, read when asked. Every read is a bounded index range.

use rusqlite::{params, Connection, OptionalExtension};

use super::messages::{row_to_message, sql_seq, MESSAGE_COLUMNS};
use super::topics::OPEN;
use crate::store::{Contact, Conversation, HistoryRange, Order, Peer, StoreResult, StoredMessage};

pub(super) fn history(conn: &Connection, range: &HistoryRange) -> StoreResult<Vec<StoredMessage>> {
    let dir = match range.order {
        Order::OldestFirst => "ASC",
        Order::NewestFirst => "DESC",
    };
    let (from, to) = (sql_seq(range.from_seq), sql_seq(range.to_seq));
    if from >= to || range.limit == 0 {
        return Ok(Vec::new());
    }
    match range.conversation {
        Conversation::Pair(a, b) => {
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages m \
                 WHERE min(m.from_uuid, m.to_uuid) = ?1 AND max(m.from_uuid, m.to_uuid) = ?2 \
                 AND m.topic_id = 0 AND m.seq >= ?3 AND m.seq < ?4 \
                 AND (m.blocked = 0 OR m.from_uuid = ?5) \
                 ORDER BY m.seq {dir} LIMIT ?6"
            );
            let rows = conn
                .prepare_cached(&sql)?
                .query_map(
                    params![
                        a.min(b) as i64,
                        a.max(b) as i64,
                        from,
                        to,
                        range.viewer as i64,
                        range.limit as i64
                    ],
                    row_to_message,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        }
        Conversation::Topic(topic_id) => {
            let intervals = conn
                .prepare_cached(
                    "SELECT from_seq, to_seq FROM topic_membership \
                     WHERE uuid = ?1 AND topic_id = ?2",
                )?
                .query_map(params![range.viewer as i64, topic_id as i64], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} FROM topic_log l JOIN messages m ON m.seq = l.seq \
                 WHERE l.topic_id = ?1 AND l.seq >= ?2 AND l.seq < ?3 \
                 ORDER BY l.seq {dir} LIMIT ?4"
            );
            let mut read = conn.prepare_cached(&sql)?;
            let mut out = Vec::new();
            for (member_from, member_to) in intervals {
                // A member reads what was sent strictly inside its interval.
                let lo = from.max(member_from.saturating_add(1));
                let hi = to.min(member_to);
                if lo >= hi {
                    continue;
                }
                let rows = read.query_map(
                    params![topic_id as i64, lo, hi, range.limit as i64],
                    row_to_message,
                )?;
                for row in rows {
                    out.push(row?);
                }
            }
            match range.order {
                Order::OldestFirst => out.sort_unstable_by_key(|m| m.seq),
                Order::NewestFirst => out.sort_unstable_by_key(|m| std::cmp::Reverse(m.seq)),
            }
            out.dedup_by_key(|m| m.seq);
            out.truncate(range.limit);
            Ok(out)
        }
    }
}

/// The newest `limit` conversations of `owner`: first the candidates' sequences
/// (the owner's conversation rows, and one topic-log probe per current topic), then
/// the last message of only the `limit` newest.
pub(super) fn contacts(
    conn: &Connection,
    owner: u64,
    since: u64,
    limit: usize,
) -> StoreResult<Vec<Contact>> {
    let mut candidates: Vec<(i64, Peer, Option<String>)> = conn
        .prepare_cached(
            "SELECT last_seq, peer_uuid FROM contacts \
             WHERE owner_uuid = ?1 AND last_seq >= ?2 AND last_seq > hidden_upto",
        )?
        .query_map(params![owner as i64, sql_seq(since)], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                Peer::User(r.get::<_, i64>(1)? as u64),
                None,
            ))
        })?
        .collect::<Result<_, _>>()?;
    // Topics: the newest log entry inside the current membership, after any clear.
    let topics = conn
        .prepare_cached(
            "SELECT ms.topic_id, ms.from_seq, t.name, coalesce(cc.upto_seq, 0) \
             FROM topic_membership ms JOIN topics t ON t.topic_id = ms.topic_id \
             LEFT JOIN contacts_cleared cc ON cc.owner_uuid = ms.uuid AND cc.topic_id = ms.topic_id \
             WHERE ms.uuid = ?1 AND ms.to_seq = ?2 AND t.dismissed = 0",
        )?
        .query_map(params![owner as i64, OPEN], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut newest =
        conn.prepare_cached("SELECT max(seq) FROM topic_log WHERE topic_id = ?1 AND seq > ?2")?;
    for (topic_id, member_from, name, cleared) in topics {
        let after = member_from
            .max(cleared)
            .max(sql_seq(since).saturating_sub(1));
        if let Some(seq) =
            newest.query_row(params![topic_id, after], |r| r.get::<_, Option<i64>>(0))?
        {
            candidates.push((seq, Peer::Topic(topic_id as u64), Some(name)));
        }
    }
    candidates.sort_unstable_by_key(|c| std::cmp::Reverse(c.0));
    let mut message = conn.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.seq = ?1"
    ))?;
    let mut out = Vec::with_capacity(candidates.len().min(limit));
    for (seq, peer, topic_name) in candidates {
        if out.len() == limit {
            break;
        }
        let Some(last) = message.query_row([seq], row_to_message).optional()? else {
            continue;
        };
        out.push(Contact::of(owner, peer, topic_name, last));
    }
    Ok(out)
}

pub(super) fn clear_contact(conn: &Connection, owner: u64, peer: Peer) -> StoreResult<()> {
    match peer {
        Peer::User(peer) => {
            // The row stays: the login backlog reads the conversation through it.
            conn.prepare_cached(
                "UPDATE contacts SET hidden_upto = last_seq WHERE owner_uuid = ?1 AND peer_uuid = ?2",
            )?
            .execute(params![owner as i64, peer as i64])?;
        }
        Peer::Topic(topic_id) => {
            conn.prepare_cached(
                "INSERT INTO contacts_cleared (owner_uuid, topic_id, upto_seq) \
                 VALUES (?1, ?2, (SELECT coalesce(max(seq), 0) FROM topic_log WHERE topic_id = ?2)) \
                 ON CONFLICT (owner_uuid, topic_id) DO UPDATE SET upto_seq = excluded.upto_seq",
            )?
            .execute(params![owner as i64, topic_id as i64])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        rows.join("\n")
    }

    /// Every history and contacts read is an index range, never a table scan.
    #[test]
    fn history_and_contacts_reads_use_their_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut conn = super::super::schema::open_connection(&path, 1024).unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        let pair = plan(
            &conn,
            &format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages m \
                 WHERE min(m.from_uuid, m.to_uuid) = 1 AND max(m.from_uuid, m.to_uuid) = 2 \
                 AND m.topic_id = 0 AND m.seq >= 0 AND m.seq < 100 \
                 AND (m.blocked = 0 OR m.from_uuid = 1) ORDER BY m.seq DESC LIMIT 10"
            ),
        );
        assert!(pair.contains("messages_by_conversation"), "{pair}");
        assert!(!pair.contains("TEMP B-TREE"), "{pair}");
        let topic = plan(
            &conn,
            &format!(
                "SELECT {MESSAGE_COLUMNS} FROM topic_log l JOIN messages m ON m.seq = l.seq \
                 WHERE l.topic_id = 1 AND l.seq >= 0 AND l.seq < 100 ORDER BY l.seq DESC LIMIT 10"
            ),
        );
        assert!(!topic.contains("SCAN"), "{topic}");
        let contacts = plan(
            &conn,
            "SELECT last_seq, peer_uuid FROM contacts \
             WHERE owner_uuid = 1 AND last_seq >= 0 AND last_seq > hidden_upto",
        );
        assert!(!contacts.contains("SCAN"), "{contacts}");
        let by_app = plan(
            &conn,
            "SELECT seq FROM messages WHERE app_id = 1 AND seq < 100 ORDER BY seq LIMIT 10",
        );
        assert!(by_app.contains("messages_by_app"), "{by_app}");
    }
}
