//! Reading what one device sees, backend-neutral and sans-IO: the parts of a
//! user's messages (its p2p conversations and its topic memberships), each read in
//! index order in chunks by the backend, merged here in sequence order. A part is
//! refilled only when its chunk is used up, so a page reads about `limit` + a few
//! rows per part, however many conversations have news.

use std::collections::VecDeque;

use super::{Order, StoredMessage};

/// Smallest chunk read from one part at a time.
const MIN_CHUNK: usize = 8;

/// Where a part is read from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source {
    /// A p2p conversation: (lower uuid, higher uuid).
    Conversation((i64, i64)),
    /// A topic's log (within one membership interval: the part's bounds).
    Topic(i64),
}

/// One part being merged: its remaining bounds (exclusive), what was read of it
/// and not merged yet, and whether it has more.
#[derive(Debug)]
pub(crate) struct Part {
    pub(crate) source: Source,
    pub(crate) lower: i64,
    pub(crate) upper: i64,
    buffer: VecDeque<StoredMessage>,
    exhausted: bool,
}

impl Part {
    pub(crate) fn new(source: Source, lower: i64, upper: i64) -> Self {
        Part {
            source,
            lower,
            upper,
            buffer: VecDeque::new(),
            exhausted: false,
        }
    }

    /// Takes a chunk read (at most `chunk` rows, in `order`) and narrows the
    /// bounds past it.
    pub(crate) fn absorb(&mut self, rows: Vec<StoredMessage>, chunk: usize, order: Order) {
        self.exhausted = rows.len() < chunk;
        if let Some(last) = rows.last() {
            let seq = last.seq.min(i64::MAX as u64) as i64;
            match order {
                Order::OldestFirst => self.lower = seq,
                Order::NewestFirst => self.upper = seq,
            }
        }
        self.buffer.extend(rows);
    }

    /// Whether the next chunk should be read now.
    pub(crate) fn wants_more(&self) -> bool {
        self.buffer.is_empty() && !self.exhausted
    }
}

/// Rows per chunk for a page of `limit` over `parts` parts.
pub(crate) fn chunk_size(limit: usize, parts: usize) -> usize {
    limit
        .div_ceil(parts.max(1))
        .clamp(MIN_CHUNK.min(limit), limit.max(1))
}

/// Moves the next message in `order` from `parts` to `out` (a message already
/// last in `out` is not repeated) and returns the index of the part it came from,
/// or `None` when every buffer is empty.
pub(crate) fn take_next(
    parts: &mut [Part],
    out: &mut Vec<StoredMessage>,
    order: Order,
) -> Option<usize> {
    let (i, _) = parts
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.buffer.front().map(|m| (i, m.seq)))
        .min_by_key(|&(_, seq)| match order {
            Order::OldestFirst => seq,
            Order::NewestFirst => u64::MAX - seq,
        })?;
    if let Some(m) = parts[i].buffer.pop_front() {
        if out.last().is_none_or(|prev| prev.seq != m.seq) {
            out.push(m);
        }
    }
    Some(i)
}
