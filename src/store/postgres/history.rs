//! History (消息漫游) and recent contacts (最近通讯列表) in the PostgreSQL store. A
//! port of `sqlite/history.rs`.
//!
//! Access paths (docs/storage.md): a p2p conversation is read through
//! `messages_by_conversation` (least uuid, greatest uuid, seq); a topic through its
//! `topic_log` (topic_id, seq) within the viewer's `topic_membership` intervals. p2p
//! contacts are the `contacts` rows (owner_uuid, peer_uuid) written at commit (a
//! cleared one is hidden up to its `last_seq`, not deleted); a
//! topic's entry is its newest `topic_log` row inside the viewer's current
//! membership, read when asked. Every read is a bounded index range.

use std::collections::HashMap;

use tokio_postgres::GenericClient;

use super::messages::{row_to_message, sql_seq, MESSAGE_COLUMNS};
use super::topics::OPEN;
use super::{num, sql};
use crate::store::{Contact, Conversation, HistoryRange, Order, Peer, StoreResult, StoredMessage};

/// A row count as a LIMIT (PostgreSQL refuses a negative one).
fn sql_limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(super) async fn history(
    c: &impl GenericClient,
    range: &HistoryRange,
) -> StoreResult<Vec<StoredMessage>> {
    let dir = match range.order {
        Order::OldestFirst => "ASC",
        Order::NewestFirst => "DESC",
    };
    let (from, to) = (sql_seq(range.from_seq), sql_seq(range.to_seq));
    if from >= to || range.limit == 0 {
        return Ok(Vec::new());
    }
    let limit = sql_limit(range.limit);
    match range.conversation {
        Conversation::Pair(a, b) => {
            let rows = c
                .query(
                    &format!(
                        "SELECT {MESSAGE_COLUMNS} FROM messages m \
                         WHERE least(m.from_uuid, m.to_uuid) = $1 \
                         AND greatest(m.from_uuid, m.to_uuid) = $2 \
                         AND m.topic_id = 0 AND m.seq >= $3 AND m.seq < $4 \
                         AND (NOT m.blocked OR m.from_uuid = $5) \
                         ORDER BY m.seq {dir} LIMIT $6"
                    ),
                    &[
                        &sql(a.min(b)),
                        &sql(a.max(b)),
                        &from,
                        &to,
                        &sql(range.viewer),
                        &limit,
                    ],
                )
                .await?;
            Ok(rows.iter().map(row_to_message).collect())
        }
        Conversation::Topic(topic_id) => {
            let topic = sql(topic_id);
            let intervals: Vec<(i64, i64)> = c
                .query(
                    "SELECT from_seq, to_seq FROM topic_membership \
                     WHERE uuid = $1 AND topic_id = $2",
                    &[&sql(range.viewer), &topic],
                )
                .await?
                .iter()
                .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
                .collect();
            let read = format!(
                "SELECT {MESSAGE_COLUMNS} FROM topic_log l JOIN messages m ON m.seq = l.seq \
                 WHERE l.topic_id = $1 AND l.seq >= $2 AND l.seq < $3 \
                 ORDER BY l.seq {dir} LIMIT $4"
            );
            let mut out = Vec::new();
            for (member_from, member_to) in intervals {
                // A member reads what was sent strictly inside its interval.
                let lo = from.max(member_from.saturating_add(1));
                let hi = to.min(member_to);
                if lo >= hi {
                    continue;
                }
                let rows = c.query(&read, &[&topic, &lo, &hi, &limit]).await?;
                out.extend(rows.iter().map(row_to_message));
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
/// (the owner's conversation rows, and per current topic its newest log entry inside
/// the membership), then the last message of only the `limit` newest.
pub(super) async fn contacts(
    c: &impl GenericClient,
    owner: u64,
    since: u64,
    limit: usize,
) -> StoreResult<Vec<Contact>> {
    let me = sql(owner);
    let mut candidates: Vec<(i64, Peer, Option<String>)> = c
        .query(
            "SELECT last_seq, peer_uuid FROM contacts \
             WHERE owner_uuid = $1 AND last_seq >= $2 AND last_seq > hidden_upto",
            &[&me, &sql_seq(since)],
        )
        .await?
        .iter()
        .map(|r| (r.get::<_, i64>(0), Peer::User(num(r, 1)), None))
        .collect();
    // Topics: the newest log entry inside the current membership, after any clear
    // (one statement; per topic a probe of the end of its `topic_log` range).
    let topics = c
        .query(
            "SELECT ms.topic_id, t.name, \
             (SELECT max(l.seq) FROM topic_log l WHERE l.topic_id = ms.topic_id \
              AND l.seq > greatest(ms.from_seq, coalesce(cc.upto_seq, 0), $3::BIGINT)) \
             FROM topic_membership ms JOIN topics t ON t.topic_id = ms.topic_id \
             LEFT JOIN contacts_cleared cc ON cc.owner_uuid = ms.uuid AND cc.topic_id = ms.topic_id \
             WHERE ms.uuid = $1 AND ms.to_seq = $2 AND NOT t.dismissed",
            &[&me, &OPEN, &sql_seq(since).saturating_sub(1)],
        )
        .await?;
    for r in &topics {
        if let Some(seq) = r.get::<_, Option<i64>>(2) {
            candidates.push((seq, Peer::Topic(num(r, 0)), Some(r.get(1))));
        }
    }
    candidates.sort_unstable_by_key(|k| std::cmp::Reverse(k.0));
    // The last messages of the newest candidates, a batch at a time: a candidate
    // whose message is gone (swept) is skipped and the next one takes its place.
    let read = format!("SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.seq = ANY($1)");
    let mut out = Vec::with_capacity(candidates.len().min(limit));
    let mut rest = candidates.into_iter();
    while out.len() < limit {
        let batch: Vec<(i64, Peer, Option<String>)> =
            rest.by_ref().take(limit - out.len()).collect();
        if batch.is_empty() {
            break;
        }
        let seqs: Vec<i64> = batch.iter().map(|b| b.0).collect();
        let found: HashMap<i64, StoredMessage> = c
            .query(&read, &[&seqs])
            .await?
            .iter()
            .map(|r| {
                let m = row_to_message(r);
                (sql_seq(m.seq), m)
            })
            .collect();
        for (seq, peer, topic_name) in batch {
            let Some(last) = found.get(&seq).cloned() else {
                continue;
            };
            out.push(Contact::of(owner, peer, topic_name, last));
        }
    }
    Ok(out)
}

pub(super) async fn clear_contact(
    c: &impl GenericClient,
    owner: u64,
    peer: Peer,
) -> StoreResult<()> {
    match peer {
        Peer::User(peer) => {
            // The row stays: the login backlog reads the conversation through it.
            c.execute(
                "UPDATE contacts SET hidden_upto = last_seq WHERE owner_uuid = $1 AND peer_uuid = $2",
                &[&sql(owner), &sql(peer)],
            )
            .await?;
        }
        Peer::Topic(topic_id) => {
            c.execute(
                "INSERT INTO contacts_cleared (owner_uuid, topic_id, upto_seq) \
                 VALUES ($1, $2, (SELECT coalesce(max(seq), 0) FROM topic_log WHERE topic_id = $2)) \
                 ON CONFLICT (owner_uuid, topic_id) DO UPDATE SET upto_seq = excluded.upto_seq",
                &[&sql(owner), &sql(topic_id)],
            )
            .await?;
        }
    }
    Ok(())
}
