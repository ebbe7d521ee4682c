//! Messages in the PostgreSQL store: appending (dedup of (sender, packetId) by the
//! unique index, one topic-log row of a topic message, and for a p2p message the two
//! sides' conversation rows in `contacts`, once per conversation per commit) and
//! reading what one device sees: its conversations and the logs of its topics merged
//! in sequence order. A port of `sqlite/messages.rs`; the reading strategy is the
//! same (each part read in index order in chunks, merged here).

use std::collections::HashMap;

use tokio_postgres::{GenericClient, Row};

use super::{num, sql};
use crate::message::{Envelope, Target};
use crate::store::merge::{self, Part, Source};
use crate::store::{AppendOutcome, NewMessage, Order, StoreResult, StoredMessage};

/// A sequence as PostgreSQL's BIGINT.
pub(super) fn sql_seq(seq: u64) -> i64 {
    sql(seq)
}

pub(super) const MESSAGE_COLUMNS: &str = "m.seq, m.ts, m.packet_id, m.from_uuid, m.from_account, \
     m.from_resource, m.to_uuid, m.to_account, m.to_resource, m.biz_type, m.payload, m.topic_id, \
     m.app_id, m.blocked";

/// A row of [`MESSAGE_COLUMNS`]; 0 / '' in the table mean "none".
pub(super) fn row_to_message(r: &Row) -> StoredMessage {
    let topic_id = num(r, 11);
    let target = if topic_id != 0 {
        Target::Topic { topic_id }
    } else {
        let resource: String = r.get(8);
        Target::User {
            uuid: num(r, 6),
            account: r.get(7),
            resource: (!resource.is_empty()).then_some(resource),
            blocked: r.get::<_, bool>(13),
        }
    };
    StoredMessage {
        seq: num(r, 0),
        ts: num(r, 1),
        envelope: Envelope {
            app_id: num(r, 12),
            from_uuid: num(r, 3),
            from_account: r.get(4),
            from_resource: r.get(5),
            packet_id: r.get(2),
            target,
            biz_type: r.get(9),
            payload: r.get::<_, Vec<u8>>(10).into(),
        },
    }
}

/// One conversation's messages as device `$4` of user `$1` sees them, in
/// `$2 < seq < $3`; `$5`, `$6` = the pair's lower and higher uuid (served by
/// `messages_by_conversation`). Left out: what the user's blacklist blocked, and a
/// message addressed to another resource of this user.
const CONVERSATION_RANGE: &str = "least(m.from_uuid, m.to_uuid) = $5 \
     AND greatest(m.from_uuid, m.to_uuid) = $6 AND m.topic_id = 0 AND m.seq > $2 AND m.seq < $3 \
     AND (NOT m.blocked OR m.from_uuid = $1) \
     AND (m.to_resource = '' OR m.to_uuid <> $1 OR m.to_resource = $4)";

/// Stores `messages` (in the caller's transaction) with one multi-row insert; a
/// message whose (sender, packetId) is stored already — by any node, or earlier in
/// this batch — is a duplicate and keeps its first sequence.
pub(super) async fn append_in(
    c: &impl GenericClient,
    messages: &[NewMessage],
) -> StoreResult<Vec<AppendOutcome>> {
    if messages.is_empty() {
        return Ok(Vec::new());
    }
    let n = messages.len();
    let mut seq = Vec::with_capacity(n);
    let mut ts = Vec::with_capacity(n);
    let mut app = Vec::with_capacity(n);
    let mut from = Vec::with_capacity(n);
    let mut from_account = Vec::with_capacity(n);
    let mut from_resource = Vec::with_capacity(n);
    let mut packet = Vec::with_capacity(n);
    let mut to = Vec::with_capacity(n);
    let mut to_account = Vec::with_capacity(n);
    let mut to_resource = Vec::with_capacity(n);
    let mut biz = Vec::with_capacity(n);
    let mut payload = Vec::with_capacity(n);
    let mut topic = Vec::with_capacity(n);
    let mut blocked = Vec::with_capacity(n);
    for stored in messages {
        let m = &stored.envelope;
        let (to_uuid, account, resource, topic_id, is_blocked) =
            crate::store::target_columns(&m.target);
        seq.push(sql(stored.seq));
        ts.push(sql(stored.ts));
        app.push(sql(m.app_id));
        from.push(sql(m.from_uuid));
        from_account.push(m.from_account.as_str());
        from_resource.push(m.from_resource.as_str());
        packet.push(m.packet_id.as_str());
        to.push(sql(to_uuid));
        to_account.push(account);
        to_resource.push(resource);
        biz.push(m.biz_type.as_str());
        payload.push(m.payload.as_ref());
        topic.push(sql(topic_id));
        blocked.push(is_blocked);
    }
    // Typed queries: parse, bind and execute in one round trip.
    use tokio_postgres::types::Type;
    let inserted: std::collections::HashSet<i64> = c
        .query_typed(
            "INSERT INTO messages (seq, ts, app_id, from_uuid, from_account, from_resource, \
             packet_id, to_uuid, to_account, to_resource, biz_type, payload, topic_id, blocked) \
             SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT (from_uuid, packet_id) DO NOTHING RETURNING seq",
            &[
                (&seq, Type::INT8_ARRAY),
                (&ts, Type::INT8_ARRAY),
                (&app, Type::INT8_ARRAY),
                (&from, Type::INT8_ARRAY),
                (&from_account, Type::TEXT_ARRAY),
                (&from_resource, Type::TEXT_ARRAY),
                (&packet, Type::TEXT_ARRAY),
                (&to, Type::INT8_ARRAY),
                (&to_account, Type::TEXT_ARRAY),
                (&to_resource, Type::TEXT_ARRAY),
                (&biz, Type::TEXT_ARRAY),
                (&payload, Type::BYTEA_ARRAY),
                (&topic, Type::INT8_ARRAY),
                (&blocked, Type::BOOL_ARRAY),
            ],
        )
        .await?
        .iter()
        .map(|r| r.get::<_, i64>(0))
        .collect();
    // The duplicates' first sequences, in one read.
    let mut firsts: HashMap<(i64, String), (u64, u64)> = HashMap::new();
    if inserted.len() < n {
        let (dup_from, dup_packet): (Vec<i64>, Vec<&str>) = (0..n)
            .filter(|&i| !inserted.contains(&seq[i]))
            .map(|i| (from[i], packet[i]))
            .unzip();
        let rows = c
            .query_typed(
                "SELECT m.from_uuid, m.packet_id, m.seq, m.ts FROM messages m \
                 JOIN unnest($1, $2) AS d (from_uuid, packet_id) \
                 ON m.from_uuid = d.from_uuid AND m.packet_id = d.packet_id",
                &[
                    (&dup_from, Type::INT8_ARRAY),
                    (&dup_packet, Type::TEXT_ARRAY),
                ],
            )
            .await?;
        for r in &rows {
            firsts.insert((r.get(0), r.get(1)), (num(r, 2), num(r, 3)));
        }
    }
    let mut outcomes = Vec::with_capacity(n);
    let mut contacts: HashMap<(u64, u64), u64> = HashMap::new();
    let mut touch = |owner: u64, peer: u64, seq: u64| {
        let last = contacts.entry((owner, peer)).or_insert(seq);
        *last = (*last).max(seq);
    };
    let mut log_topic = Vec::new();
    let mut log_seq = Vec::new();
    for (i, stored) in messages.iter().enumerate() {
        if !inserted.contains(&seq[i]) {
            let key = (from[i], packet[i].to_owned());
            let Some(&(first, first_ts)) = firsts.get(&key) else {
                return Err(crate::store::StoreError::Database(format!(
                    "message {} neither stored nor found",
                    stored.seq
                )));
            };
            outcomes.push(AppendOutcome::Duplicate {
                seq: first,
                ts: first_ts,
            });
            continue;
        }
        outcomes.push(AppendOutcome::Stored);
        let m = &stored.envelope;
        match &m.target {
            Target::Topic { topic_id } => {
                log_topic.push(sql(*topic_id));
                log_seq.push(seq[i]);
            }
            Target::User { uuid, blocked, .. } => {
                if !blocked {
                    touch(*uuid, m.from_uuid, stored.seq);
                }
                touch(m.from_uuid, *uuid, stored.seq);
            }
        }
    }
    if !log_topic.is_empty() {
        c.execute_typed(
            "INSERT INTO topic_log (topic_id, seq) \
             SELECT * FROM unnest($1, $2) ON CONFLICT DO NOTHING",
            &[(&log_topic, Type::INT8_ARRAY), (&log_seq, Type::INT8_ARRAY)],
        )
        .await?;
    }
    if !contacts.is_empty() {
        // One statement for every conversation side of the batch, in a fixed order
        // (two nodes upserting the same rows take their locks in the same order).
        let mut sides: Vec<((u64, u64), u64)> = contacts.into_iter().collect();
        sides.sort_unstable();
        let owners: Vec<i64> = sides.iter().map(|((o, _), _)| sql(*o)).collect();
        let peers: Vec<i64> = sides.iter().map(|((_, p), _)| sql(*p)).collect();
        let seqs: Vec<i64> = sides.iter().map(|(_, s)| sql(*s)).collect();
        c.execute_typed(
            "INSERT INTO contacts (owner_uuid, peer_uuid, last_seq) \
             SELECT * FROM unnest($1, $2, $3) \
             ON CONFLICT (owner_uuid, peer_uuid) \
             DO UPDATE SET last_seq = greatest(contacts.last_seq, excluded.last_seq)",
            &[
                (&owners, Type::INT8_ARRAY),
                (&peers, Type::INT8_ARRAY),
                (&seqs, Type::INT8_ARRAY),
            ],
        )
        .await?;
    }
    Ok(outcomes)
}

/// The parts of what `uuid` sees in `after < seq < before`: its conversations with
/// a message after `after`, and each topic membership overlapping the range.
async fn parts(
    c: &impl GenericClient,
    uuid: u64,
    after: i64,
    before: i64,
) -> StoreResult<Vec<Part>> {
    let me = sql(uuid);
    let mut parts: Vec<Part> = c
        .query(
            "SELECT peer_uuid FROM contacts WHERE owner_uuid = $1 AND last_seq > $2",
            &[&me, &after],
        )
        .await?
        .iter()
        .map(|r| {
            let peer: i64 = r.get(0);
            Part::new(
                Source::Conversation((me.min(peer), me.max(peer))),
                after,
                before,
            )
        })
        .collect();
    let memberships = c
        .query(
            "SELECT topic_id, greatest(from_seq, $2), least(to_seq, $3) FROM topic_membership \
             WHERE uuid = $1 AND to_seq > $2 AND from_seq < $3",
            &[&me, &after, &before],
        )
        .await?;
    parts.extend(
        memberships
            .iter()
            .map(|r| Part::new(Source::Topic(r.get(0)), r.get(1), r.get(2))),
    );
    Ok(parts)
}

/// Reads a chunk of `part` into its buffer.
async fn fill(
    c: &impl GenericClient,
    part: &mut Part,
    uuid: u64,
    resource: &str,
    chunk: usize,
    order: Order,
) -> StoreResult<()> {
    let dir = match order {
        Order::OldestFirst => "ASC",
        Order::NewestFirst => "DESC",
    };
    let limit = chunk as i64;
    let rows = match part.source {
        Source::Conversation((lo, hi)) => {
            c.query(
                &format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE {CONVERSATION_RANGE} \
                     ORDER BY m.seq {dir} LIMIT $7"
                ),
                &[
                    &sql(uuid),
                    &part.lower,
                    &part.upper,
                    &resource,
                    &lo,
                    &hi,
                    &limit,
                ],
            )
            .await?
        }
        Source::Topic(topic_id) => {
            c.query(
                &format!(
                    "SELECT {MESSAGE_COLUMNS} FROM topic_log l JOIN messages m ON m.seq = l.seq \
                     WHERE l.topic_id = $1 AND l.seq > $2 AND l.seq < $3 \
                     ORDER BY l.seq {dir} LIMIT $4"
                ),
                &[&topic_id, &part.lower, &part.upper, &limit],
            )
            .await?
        }
    };
    part.absorb(rows.iter().map(row_to_message).collect(), chunk, order);
    Ok(())
}

/// What a user sees, oldest or newest first, at most `limit` messages with
/// `after < seq < before` (`before` 0: no upper bound); see `sqlite/messages.rs`.
pub(super) async fn user_messages(
    c: &impl GenericClient,
    uuid: u64,
    resource: &str,
    after: u64,
    before: u64,
    limit: usize,
    order: Order,
) -> StoreResult<Vec<StoredMessage>> {
    let after = sql(after);
    let before = if before == 0 { i64::MAX } else { sql(before) };
    let mut parts = parts(c, uuid, after, before).await?;
    if parts.is_empty() || limit == 0 {
        return Ok(Vec::new());
    }
    let chunk = merge::chunk_size(limit, parts.len());
    for part in &mut parts {
        fill(c, part, uuid, resource, chunk, order).await?;
    }
    let mut out: Vec<StoredMessage> = Vec::with_capacity(limit);
    while out.len() < limit {
        let Some(i) = merge::take_next(&mut parts, &mut out, order) else {
            break;
        };
        if parts[i].wants_more() && out.len() < limit {
            fill(c, &mut parts[i], uuid, resource, chunk, order).await?;
        }
    }
    Ok(out)
}

/// Counts what [`user_messages`] would return after `after`, stopping at `cap`.
pub(super) async fn count_user_messages(
    c: &impl GenericClient,
    uuid: u64,
    resource: &str,
    after: u64,
    cap: usize,
) -> StoreResult<usize> {
    let mut total = 0usize;
    for part in parts(c, uuid, sql(after), i64::MAX).await? {
        let missing = cap.saturating_sub(total) as i64;
        let row = match part.source {
            Source::Conversation((lo, hi)) => {
                c.query_one(
                    &format!(
                        "SELECT count(*) FROM (SELECT 1 FROM messages m \
                         WHERE {CONVERSATION_RANGE} LIMIT $7) AS t"
                    ),
                    &[
                        &sql(uuid),
                        &part.lower,
                        &part.upper,
                        &resource,
                        &lo,
                        &hi,
                        &missing,
                    ],
                )
                .await?
            }
            Source::Topic(topic_id) => {
                c.query_one(
                    "SELECT count(*) FROM (SELECT 1 FROM topic_log \
                     WHERE topic_id = $1 AND seq > $2 AND seq < $3 LIMIT $4) AS t",
                    &[&topic_id, &part.lower, &part.upper, &missing],
                )
                .await?
            }
        };
        total += num(&row, 0) as usize;
        if total >= cap {
            return Ok(cap);
        }
    }
    Ok(total)
}
