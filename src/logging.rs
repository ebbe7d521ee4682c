//! Rate-limited log lines. A peer that hits a limit thousands of times a second must
//! not flood the log: each call site of [`log_limited!`](crate::log_limited) writes at
//! most one line per second and says how many it skipped since the last one.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::time::now_ms;

/// Lets one log line through per second; counts the ones it holds back.
#[derive(Debug, Default)]
pub struct LogLimiter {
    last_ms: AtomicU64,
    skipped: AtomicU64,
}

/// Shortest time between two lines of one call site.
const INTERVAL_MS: u64 = 1000;

impl LogLimiter {
    pub const fn new() -> Self {
        LogLimiter {
            last_ms: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    /// `Some(lines skipped since the last one)` when a line may be written now.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(now_ms())
    }

    fn allow_at(&self, now: u64) -> Option<u64> {
        let last = self.last_ms.load(Ordering::Relaxed);
        if (last == 0 || now >= last.saturating_add(INTERVAL_MS))
            && self
                .last_ms
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.skipped.swap(0, Ordering::Relaxed));
        }
        self.skipped.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// `log_limited!(warn, field = value, "message")`: a tracing event at the given
/// level, at most once per second per call site, with a `skipped` count.
#[macro_export]
macro_rules! log_limited {
    ($level:ident, $($arg:tt)+) => {{
        static LIMIT: $crate::logging::LogLimiter = $crate::logging::LogLimiter::new();
        if let Some(skipped) = LIMIT.allow() {
            tracing::$level!(skipped, $($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_second_with_a_count_of_the_rest() {
        let l = LogLimiter::new();
        assert_eq!(l.allow_at(10_000), Some(0));
        assert_eq!(l.allow_at(10_001), None);
        assert_eq!(l.allow_at(10_999), None);
        assert_eq!(l.allow_at(11_000), Some(2));
        assert_eq!(l.allow_at(11_500), None);
    }
}
