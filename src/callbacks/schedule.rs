//! What a failed attempt becomes: the next retry after the configured delay, or
//! failed once every retry is used (`callback_retries_ms`: the manual's 5 s, 30 s,
//! 5 min — at most four attempts). Sans-IO.

use std::time::Duration;

use crate::store::CallbackOutcome;

/// The outcome of attempt number `attempt` (1 = the first) that failed with
/// `error` at `now_ms`, given the retry delays.
pub fn after_failure(
    attempt: u32,
    error: String,
    now_ms: u64,
    retries: &[Duration],
) -> CallbackOutcome {
    match retries.get(attempt.saturating_sub(1) as usize) {
        Some(delay) => CallbackOutcome::Retry {
            due_ms: now_ms.saturating_add(delay.as_millis() as u64),
            error,
        },
        None => CallbackOutcome::Failed { now_ms, error },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_schedule_then_fails() {
        let retries = [5_000, 30_000, 300_000].map(Duration::from_millis);
        let at = |attempt| after_failure(attempt, "HTTP 500".into(), 1_000, &retries);
        assert_eq!(
            at(1),
            CallbackOutcome::Retry {
                due_ms: 6_000,
                error: "HTTP 500".into()
            }
        );
        assert!(matches!(
            at(2),
            CallbackOutcome::Retry { due_ms: 31_000, .. }
        ));
        assert!(matches!(
            at(3),
            CallbackOutcome::Retry {
                due_ms: 301_000,
                ..
            }
        ));
        assert_eq!(
            at(4),
            CallbackOutcome::Failed {
                now_ms: 1_000,
                error: "HTTP 500".into()
            }
        );
        assert!(matches!(
            after_failure(1, String::new(), 0, &[]),
            CallbackOutcome::Failed { .. }
        ));
    }
}
