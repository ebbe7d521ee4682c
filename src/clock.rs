//! The server's clock for expiry decisions (tokens, temporary accounts, retention):
//! wall-clock time plus an offset that only tests move, so a test can make an
//! account expire without waiting. Sequences and message times never use the
//! offset: they follow the wall clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Wall-clock milliseconds, plus a test-controlled offset. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicU64>,
}

impl Clock {
    /// Unix milliseconds as the server's expiry checks see them.
    pub fn now_ms(&self) -> u64 {
        crate::time::now_ms().saturating_add(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Moves this clock forward (tests).
    pub fn advance(&self, by: Duration) {
        self.offset_ms
            .fetch_add(by.as_millis() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_every_clone() {
        let clock = Clock::default();
        let shared = clock.clone();
        let before = shared.now_ms();
        clock.advance(Duration::from_secs(3600));
        assert!(shared.now_ms() >= before + 3_600_000);
    }
}
