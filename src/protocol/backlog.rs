//! The rules of what a device reads from its timeline, without I/O: where a device
//! starts, which pages of the login backlog to read and in which order, when a
//! `PullNotice` replaces the rest, how a `Pull` is bounded, how pages become frames,
//! which live frames the backlog already carried, and how far an ack may move the
//! cursor.
//!
//! The driver does the reads ([`PageRead`]) and hands the pages back as
//! `pb::Deliver`s; everything decided here is unit-tested without a store.

use bytes::Bytes;
use prost::Message;

use super::codec;
use crate::pb::{self, frame::Kind};

/// Bytes of message data in one `DeliverBatch` or `PullResult` frame (a single larger
/// message still goes alone), so no outbound frame outgrows the transport's write
/// buffer whatever `backlog_batch` is.
pub const MAX_BATCH_FRAME_BYTES: usize = 256 * 1024;

/// Backlog settings.
#[derive(Debug, Clone, Copy)]
pub struct BacklogRules {
    /// Most messages pending at login that are all sent (`backlog_limit`).
    pub limit: usize,
    /// Messages per page and per `Pull` (`backlog_batch`).
    pub batch: usize,
    /// Offline delivery window, ms (`offline_ttl_secs`).
    pub ttl_ms: u64,
}

/// A read of the device's timeline: `after < seq < before` (`before == 0`: no
/// bound), at most `limit` entries, from the newest end when `newest_first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRead {
    pub after: u64,
    pub before: u64,
    pub limit: usize,
    pub newest_first: bool,
}

/// The starting cursor of a device that was seen before: its stored cursor, or an
/// ack not yet written, whichever is higher. `None`: a device seen for the first time.
pub fn known_device_cursor(stored: Option<u64>, pending: Option<u64>) -> Option<u64> {
    match (stored, pending) {
        (Some(s), p) => Some(s.max(p.unwrap_or(0))),
        (None, p) => p,
    }
}

/// The starting cursor of a new device: the highest of the user's devices (stored
/// or pending), so it gets what no device has seen. The driver records it at once,
/// so a device that leaves before acking resumes there.
pub fn new_device_cursor(user_max_stored: u64, user_max_pending: Option<u64>) -> u64 {
    user_max_stored.max(user_max_pending.unwrap_or(0))
}

/// An ack may not move the cursor past the newest sequence assigned: a sequence
/// above it does not exist yet, and acking it would skip messages still to come.
pub fn clamp_ack(sequence: u64, newest_assigned: u64) -> u64 {
    sequence.min(newest_assigned)
}

/// Whether a live frame must be written: frames that are not timeline messages
/// (`seq == 0`) always; messages only when the backlog did not already carry them.
pub fn relays(seq: u64, backlog_through: u64) -> bool {
    seq == 0 || seq > backlog_through
}

/// Which live frames a device still needs once its backlog was sent.
#[derive(Debug, Default)]
pub struct LiveFilter {
    /// The newest sequence the backlog carried.
    through: u64,
    /// In a cluster, the sequences the backlog carried, sorted: another node may
    /// commit a smaller sequence after the backlog was read, so only these are
    /// skipped. On one node commits come in sequence order, and everything up to
    /// `through` was carried.
    carried: Option<Vec<u64>>,
}

impl LiveFilter {
    /// Whether a live frame of sequence `seq` must be written.
    pub fn relays(&self, seq: u64) -> bool {
        match &self.carried {
            _ if relays(seq, self.through) => true,
            None => false,
            Some(carried) => carried.binary_search(&seq).is_err(),
        }
    }
}

/// The login backlog of one device, step by step: count, then pages, then done.
#[derive(Debug)]
pub struct BacklogSync {
    rules: BacklogRules,
    after: u64,
    last: u64,
    sent: u64,
    newest_only: bool,
    /// The sequences sent, when the live filter needs them (cluster).
    carried: Option<Vec<u64>>,
}

/// What the driver does next for the backlog.
#[derive(Debug, PartialEq)]
pub enum BacklogStep {
    /// Read this page and call [`BacklogSync::on_page`].
    Read(PageRead),
    /// Write these frames; then the backlog is complete (the last one is `SyncDone`).
    Finish(Vec<Bytes>),
}

impl BacklogSync {
    /// Starts at `cursor`; the backlog holds what is after it and younger than the
    /// offline window. Returns the sync and the count to read first:
    /// `(after, cap)` — entries after `after`, counting stops at `cap`.
    pub fn start(cursor: u64, now_ms: u64, rules: BacklogRules) -> (BacklogSync, (u64, usize)) {
        let after = crate::sequence::backlog_after(cursor, now_ms, rules.ttl_ms);
        let sync = BacklogSync {
            rules,
            after,
            last: after,
            sent: 0,
            newest_only: false,
            carried: None,
        };
        (sync, (after, rules.limit.saturating_add(1)))
    }

    /// Keeps the sequences it sends, for an exact [`LiveFilter`] (cluster).
    pub fn keep_carried(&mut self) {
        self.carried = Some(Vec::new());
    }

    /// Given how many entries are pending: more than the limit reads only the newest
    /// page (and tells the client to pull the rest); otherwise pages oldest first.
    pub fn on_count(&mut self, pending: usize) -> PageRead {
        self.newest_only = pending > self.rules.limit;
        PageRead {
            after: self.after,
            before: 0,
            limit: self.rules.batch,
            newest_first: self.newest_only,
        }
    }

    /// Takes a page read as asked; returns the frames to write now and the next step.
    pub fn on_page(&mut self, mut page: Vec<pb::Deliver>) -> (Vec<Bytes>, BacklogStep) {
        let mut frames = Vec::new();
        if let Some(carried) = &mut self.carried {
            carried.extend(page.iter().map(|d| d.sequence));
        }
        if self.newest_only {
            page.reverse();
            if let (Some(first), Some(tail)) = (page.first(), page.last()) {
                frames.push(codec::encode(Kind::PullNotice(pb::PullNotice {
                    after_sequence: self.after,
                    before_sequence: first.sequence,
                })));
                self.last = tail.sequence;
                self.sent = page.len() as u64;
                frames.extend(batch_frames(page));
            }
            return (frames, BacklogStep::Finish(vec![self.done()]));
        }
        let Some(tail) = page.last() else {
            return (frames, BacklogStep::Finish(vec![self.done()]));
        };
        self.last = tail.sequence;
        let full = page.len() == self.rules.batch;
        self.sent += page.len() as u64;
        frames.extend(batch_frames(page));
        if !full {
            return (frames, BacklogStep::Finish(vec![self.done()]));
        }
        let next = PageRead {
            after: self.last,
            before: 0,
            limit: self.rules.batch,
            newest_first: false,
        };
        (frames, BacklogStep::Read(next))
    }

    /// Messages sent in this backlog so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Live frames with a sequence up to this were carried by the backlog.
    pub fn through(&self) -> u64 {
        self.last
    }

    /// The filter of live frames once this backlog is complete.
    pub fn live_filter(&mut self) -> LiveFilter {
        LiveFilter {
            through: self.last,
            carried: self.carried.take().map(|mut c| {
                c.sort_unstable();
                c.shrink_to_fit();
                c
            }),
        }
    }

    fn done(&self) -> Bytes {
        codec::encode(Kind::SyncDone(pb::SyncDone { count: self.sent }))
    }
}

/// The read a `Pull` asks for, bounded by `batch`; and the page size to answer with.
/// One more entry than the page is read, to know whether there are more.
pub fn pull_read(pull: &pb::Pull, batch: usize) -> (PageRead, usize) {
    let limit = match pull.limit as usize {
        0 => batch,
        n => n.min(batch),
    };
    let read = PageRead {
        after: pull.after_sequence,
        before: pull.before_sequence,
        limit: limit + 1,
        newest_first: false,
    };
    (read, limit)
}

/// The `PullResult` for a page read by [`pull_read`]: at most `limit` messages and
/// [`MAX_BATCH_FRAME_BYTES`]; `has_more` when anything was left out.
pub fn pull_result(mut page: Vec<pb::Deliver>, limit: usize) -> Bytes {
    let mut has_more = page.len() > limit;
    page.truncate(limit);
    let fits = fitting(&page);
    if fits < page.len() {
        page.truncate(fits);
        has_more = true;
    }
    codec::encode(Kind::PullResult(pb::PullResult {
        messages: page,
        has_more,
    }))
}

/// How many of the first messages fit in one batch frame (at least one).
fn fitting(messages: &[pb::Deliver]) -> usize {
    let mut total = 0;
    for (i, m) in messages.iter().enumerate() {
        total += m.encoded_len();
        if total > MAX_BATCH_FRAME_BYTES && i > 0 {
            return i;
        }
    }
    messages.len()
}

/// `DeliverBatch` frames of the messages in order, each within
/// [`MAX_BATCH_FRAME_BYTES`].
pub fn batch_frames(mut messages: Vec<pb::Deliver>) -> Vec<Bytes> {
    let mut frames = Vec::new();
    while !messages.is_empty() {
        let rest = messages.split_off(fitting(&messages));
        frames.push(codec::encode(Kind::DeliverBatch(pb::DeliverBatch {
            messages,
        })));
        messages = rest;
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(sequence: u64, payload: usize) -> pb::Deliver {
        pb::Deliver {
            sequence,
            payload: Bytes::from(vec![b'x'; payload]),
            ..Default::default()
        }
    }

    fn decode(frame: &Bytes) -> Kind {
        pb::Frame::decode(frame.as_ref()).unwrap().kind.unwrap()
    }

    #[test]
    fn start_cursor_rules() {
        assert_eq!(known_device_cursor(Some(5), Some(9)), Some(9));
        assert_eq!(known_device_cursor(Some(9), Some(5)), Some(9));
        assert_eq!(known_device_cursor(None, Some(4)), Some(4));
        assert_eq!(known_device_cursor(None, None), None);
        assert_eq!(new_device_cursor(7, Some(3)), 7);
        assert_eq!(new_device_cursor(7, Some(12)), 12);
        assert_eq!(clamp_ack(100, 40), 40);
        assert!(relays(0, 10) && relays(11, 10) && !relays(10, 10));
    }

    #[test]
    fn a_cluster_live_filter_skips_only_what_the_backlog_carried() {
        let rules = BacklogRules {
            limit: 100,
            batch: 10,
            ttl_ms: u64::MAX,
        };
        let page = |seqs: &[u64]| seqs.iter().map(|&s| msg(s, 1)).collect::<Vec<_>>();
        // One node: everything up to the newest carried is skipped.
        let (mut one, _) = BacklogSync::start(0, 0, rules);
        one.on_count(3);
        one.on_page(page(&[10, 30, 50]));
        let live = one.live_filter();
        assert!(!live.relays(20) && !live.relays(50) && live.relays(51) && live.relays(0));
        // A cluster: 20 was committed by another node after the read: it is relayed.
        let (mut many, _) = BacklogSync::start(0, 0, rules);
        many.keep_carried();
        many.on_count(3);
        many.on_page(page(&[10, 30, 50]));
        let live = many.live_filter();
        assert!(live.relays(20), "a late commit below the newest carried");
        assert!(!live.relays(10) && !live.relays(30) && !live.relays(50));
        assert!(live.relays(51) && live.relays(0));
    }

    #[test]
    fn large_pages_are_split_by_bytes_and_pulls_cut_short() {
        let big: Vec<_> = (1..=40).map(|s| msg(s, 15 * 1024)).collect();
        let frames = batch_frames(big.clone());
        assert!(frames.len() >= 3, "{} frames", frames.len());
        let mut seqs = Vec::new();
        for f in &frames {
            assert!(f.len() <= MAX_BATCH_FRAME_BYTES + 16 * 1024);
            match decode(f) {
                Kind::DeliverBatch(b) => seqs.extend(b.messages.iter().map(|m| m.sequence)),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
        let (read, limit) = pull_read(
            &pb::Pull {
                limit: 0,
                ..Default::default()
            },
            100,
        );
        assert_eq!((read.limit, limit), (101, 100));
        match decode(&pull_result(big, limit)) {
            Kind::PullResult(r) => {
                assert!(r.has_more);
                assert!(r.messages.len() < 40);
            }
            other => panic!("{other:?}"),
        }
    }
}
