//! The in-memory store's history, recent contacts and sweep: the same semantics as
//! the embedded store's (`sqlite/history.rs`, `sqlite/sweep.rs`), by scanning maps.

use std::collections::BTreeSet;

use async_trait::async_trait;

use super::{MemoryStore, OPEN};
use crate::message::Target;
use crate::sequence::floor_at;
use crate::store::{
    Contact, Conversation, HistoryRange, HistoryStore, Order, Peer, StoreResult, StoredMessage,
    SweepPlan, SweepReport, SweepStore,
};

#[async_trait]
impl HistoryStore for MemoryStore {
    async fn history(&self, range: HistoryRange) -> StoreResult<Vec<StoredMessage>> {
        let inner = self.inner.lock();
        let (from, to) = (range.from_seq, range.to_seq);
        let mut seqs: BTreeSet<u64> = BTreeSet::new();
        match range.conversation {
            Conversation::Pair(a, b) => {
                // BTreeSet::range panics on an inverted range: an empty one reads nothing.
                let conversation = inner
                    .conversations
                    .get(&(a.min(b), a.max(b)))
                    .filter(|_| from < to);
                for &seq in conversation.into_iter().flat_map(|c| c.range(from..to)) {
                    let e = &inner.messages[&seq].envelope;
                    let blocked = matches!(e.target, Target::User { blocked: true, .. });
                    if !blocked || e.from_uuid == range.viewer {
                        seqs.insert(seq);
                    }
                }
            }
            Conversation::Topic(topic_id) => {
                for &(member, topic, m_from, m_to) in &inner.memberships {
                    if member != range.viewer || topic != topic_id {
                        continue;
                    }
                    let (lo, hi) = (from.max(m_from.saturating_add(1)), to.min(m_to));
                    if let (Some(log), true) = (inner.topic_logs.get(&topic_id), lo < hi) {
                        seqs.extend(log.range(lo..hi));
                    }
                }
            }
        }
        let pick = |seq: &u64| inner.messages[seq].clone();
        Ok(match range.order {
            Order::OldestFirst => seqs.iter().take(range.limit).map(pick).collect(),
            Order::NewestFirst => seqs.iter().rev().take(range.limit).map(pick).collect(),
        })
    }

    async fn contacts(
        &self,
        owner: u64,
        since_seq: u64,
        limit: usize,
    ) -> StoreResult<Vec<Contact>> {
        let inner = self.inner.lock();
        let mut out = Vec::new();
        for (&peer, &(seq, hidden_upto)) in inner.contacts.get(&owner).into_iter().flatten() {
            if seq < since_seq || seq <= hidden_upto {
                continue;
            }
            let Some(last) = inner.messages.get(&seq) else {
                continue;
            };
            let name = match &last.envelope.target {
                Target::User { account, .. } if last.envelope.from_uuid == owner => account.clone(),
                _ => last.envelope.from_account.clone(),
            };
            out.push(Contact {
                peer: Peer::User(peer),
                name,
                last: last.clone(),
            });
        }
        for &(member, topic_id, m_from, m_to) in &inner.memberships {
            let Some(t) = inner.topics.get(&topic_id) else {
                continue;
            };
            if member != owner || m_to != OPEN || t.dismissed {
                continue;
            }
            let cleared = inner.cleared.get(&(owner, topic_id)).copied().unwrap_or(0);
            let after = m_from.max(cleared).max(since_seq.saturating_sub(1));
            let newest = inner
                .topic_logs
                .get(&topic_id)
                .and_then(|log| log.range(after.saturating_add(1)..).next_back().copied());
            if let Some(last) = newest.and_then(|seq| inner.messages.get(&seq)) {
                out.push(Contact {
                    peer: Peer::Topic(topic_id),
                    name: t.name.clone(),
                    last: last.clone(),
                });
            }
        }
        out.sort_unstable_by_key(|c| std::cmp::Reverse(c.last.seq));
        out.truncate(limit);
        Ok(out)
    }

    async fn clear_contact(&self, owner: u64, peer: Peer) -> StoreResult<()> {
        let mut inner = self.inner.lock();
        match peer {
            Peer::User(peer) => {
                if let Some((last, hidden)) = inner
                    .contacts
                    .get_mut(&owner)
                    .and_then(|c| c.get_mut(&peer))
                {
                    *hidden = *last;
                }
            }
            Peer::Topic(topic_id) => {
                let upto = inner
                    .topic_logs
                    .get(&topic_id)
                    .and_then(|log| log.last().copied())
                    .unwrap_or(0);
                inner.cleared.insert((owner, topic_id), upto);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl SweepStore for MemoryStore {
    async fn sweep(&self, plan: SweepPlan) -> StoreResult<SweepReport> {
        let mut inner = self.inner.lock();
        let batch = plan.batch.max(1);
        let mut report = SweepReport::default();
        let expired: Vec<u64> = inner
            .expires
            .iter()
            .filter(|(_, &at)| at <= plan.now_ms)
            .map(|(&uuid, _)| uuid)
            .take(batch)
            .collect();
        for &uuid in &expired {
            inner.retire(uuid);
        }
        report.more |= expired.len() == batch;
        report.expired = expired;
        let boundary = floor_at(plan.now_ms);
        let retired: Vec<u64> = inner.retired.iter().copied().take(batch).collect();
        for uuid in retired {
            let left = inner.purge(uuid, boundary);
            report.topics.extend(left);
            report.purged.push(uuid);
        }
        let mut old: Vec<u64> = inner
            .messages
            .values()
            .filter(|m| {
                let app_id = m.envelope.app_id;
                let retention_ms = if inner.deleted_apps.contains(&app_id) {
                    0
                } else {
                    inner
                        .settings
                        .get(&app_id)
                        .and_then(|s| s.history_retention_secs)
                        .map_or(plan.retention_ms, |secs| secs.saturating_mul(1000))
                };
                m.seq < floor_at(plan.now_ms.saturating_sub(retention_ms))
            })
            .map(|m| m.seq)
            .collect();
        old.sort_unstable();
        report.more |= old.len() > batch;
        old.truncate(batch);
        for seq in old {
            inner.delete_message(seq);
            report.messages += 1;
        }
        Ok(report)
    }
}
