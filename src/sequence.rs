//! Sequence numbers: global, increasing, time-ordered, unique across nodes.
//!
//! Layout (53 bits, so JSON numbers stay exact in JavaScript):
//! `ms since 2025-01-01` (41 bits, ~69 years) · `node id` (4 bits) · `counter` (8 bits).
//! Up to 256 sequences per millisecond per node; a burst beyond that borrows the next
//! millisecond, so the sequence never repeats or goes back, even if the clock does.

/// 2025-01-01T00:00:00Z in Unix milliseconds.
pub const EPOCH_MS: u64 = 1_735_689_600_000;
const NODE_BITS: u32 = 4;
const COUNTER_BITS: u32 = 8;
const LOW_BITS: u32 = NODE_BITS + COUNTER_BITS;
const COUNTER_MAX: u64 = (1 << COUNTER_BITS) - 1;

/// The smallest sequence that could have been assigned at `unix_ms`.
/// Times past the 41-bit millisecond range map to 2^53, above every sequence (a
/// far-future bound from a client does not wrap around).
pub fn floor_at(unix_ms: u64) -> u64 {
    unix_ms.saturating_sub(EPOCH_MS).min(1 << 41) << LOW_BITS
}

/// The distance between sequences assigned `ms` milliseconds apart.
pub fn span_of_ms(ms: u64) -> u64 {
    ms.min(1 << 41) << LOW_BITS
}

/// Where a login backlog starts: after the device's cursor, but never before the
/// offline TTL (messages older than `ttl_ms` at `now_ms` are not sent).
pub fn backlog_after(cursor: u64, now_ms: u64, ttl_ms: u64) -> u64 {
    cursor.max(floor_at(now_ms.saturating_sub(ttl_ms)).saturating_sub(1))
}

/// The Unix millisecond a sequence was assigned at (or borrowed up to).
pub fn time_of(seq: u64) -> u64 {
    (seq >> LOW_BITS) + EPOCH_MS
}

/// Assigns sequences for one node. Not thread-safe: owned by the router's commit loop.
#[derive(Debug)]
pub struct Sequencer {
    node: u64,
    last: u64,
}

impl Sequencer {
    /// `last` is the highest sequence already used (e.g. the store's maximum).
    pub fn new(node_id: u8, last: u64) -> Self {
        Sequencer {
            node: u64::from(node_id) & ((1 << NODE_BITS) - 1),
            last,
        }
    }

    /// The next sequence at wall-clock `unix_ms`.
    pub fn next(&mut self, unix_ms: u64) -> u64 {
        let now = unix_ms.saturating_sub(EPOCH_MS);
        let last_ms = self.last >> LOW_BITS;
        let last_counter = self.last & COUNTER_MAX;
        let (ms, counter) = if now > last_ms {
            (now, 0)
        } else if last_counter < COUNTER_MAX {
            (last_ms, last_counter + 1)
        } else {
            (last_ms + 1, 0)
        };
        let seq = (ms << LOW_BITS) | (self.node << COUNTER_BITS) | counter;
        self.last = seq;
        seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_migration_computes_time_of_as_written_here() {
        // schema.rs migration 4: ts = (seq >> 12) + 1735689600000
        let seq = Sequencer::new(3, 0).next(crate::time::now_ms());
        assert_eq!(time_of(seq), (seq >> 12) + 1_735_689_600_000);
    }

    #[test]
    fn far_future_times_bound_above_every_sequence_without_wrapping() {
        let top = floor_at(u64::MAX);
        assert_eq!(top, 1 << 53);
        assert!(floor_at(i64::MAX as u64) == top);
        let mut s = Sequencer::new(15, 0);
        assert!(s.next(crate::time::now_ms()) < top);
        assert!(floor_at(EPOCH_MS + 1) < floor_at(EPOCH_MS + 2));
    }

    #[test]
    fn increases_within_and_across_milliseconds() {
        let mut s = Sequencer::new(3, 0);
        let t = EPOCH_MS + 1000;
        let a = s.next(t);
        let b = s.next(t);
        let c = s.next(t + 1);
        assert!(a < b && b < c);
        assert_eq!(time_of(a), t);
        assert_eq!((a >> 8) & 0xF, 3);
        assert!(floor_at(t) <= a && a < floor_at(t + 1));
    }

    #[test]
    fn never_repeats_when_the_counter_overflows_or_clock_goes_back() {
        let mut s = Sequencer::new(15, 0);
        let t = EPOCH_MS + 5000;
        let mut prev = 0;
        for _ in 0..1000 {
            let n = s.next(t);
            assert!(n > prev);
            assert_eq!((n >> 8) & 0xF, 15);
            prev = n;
        }
        assert!(s.next(t - 3000) > prev);
    }

    #[test]
    fn backlog_skips_messages_older_than_the_ttl() {
        let day = 24 * 3600 * 1000;
        let now = EPOCH_MS + 30 * day;
        let mut s = Sequencer::new(0, 0);
        let old = s.next(now - 8 * day);
        let young = s.next(now - 6 * day);
        let after = backlog_after(0, now, 7 * day);
        assert!(old <= after && young > after);
        // A cursor past the TTL floor wins.
        assert_eq!(backlog_after(young, now, 7 * day), young);
    }

    #[test]
    fn restarts_above_the_stored_maximum_and_fits_53_bits() {
        let far = EPOCH_MS + 60 * 365 * 24 * 3600 * 1000;
        let mut s = Sequencer::new(0, 0);
        let high = s.next(far);
        assert!(high < (1u64 << 53));
        let mut s = Sequencer::new(0, high);
        assert!(s.next(EPOCH_MS) > high);
    }
}
