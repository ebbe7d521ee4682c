//! Quotas on REST calls that create state (accounts, topics, memberships, pushed
//! messages): a token bucket per account and one per app.
//!
//! - per account: `rest_rate_per_account` state-changing topic calls per second,
//!   bursts up to twice that;
//! - per app: `rest_rate_per_app` units per second, bursts up to twice that, where a
//!   call costs one unit per account or topic it names (at least one). Token
//!   requests, topic calls and pushes all draw from it, so no app can create
//!   accounts or messages faster than its rate, whoever calls.
//!
//! A call over either quota is refused with `429` before it does anything. Account
//! buckets live in a bounded LRU map ([`ACCOUNT_BUCKETS`]); an evicted bucket starts
//! full again, which can only let an account through, never block it wrongly.

use std::collections::HashMap;
use std::num::NonZeroUsize;

use lru::LruCache;
use parking_lot::Mutex;

/// Accounts whose buckets are remembered.
pub const ACCOUNT_BUCKETS: usize = 100_000;

/// Which quota a call went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuotaExceeded {
    #[error("more than {0} state-changing calls per second from this account; retry later")]
    Account(u32),
    #[error("more than {0} units of work per second for this app; retry later")]
    App(u32),
}

/// A token bucket: `rate` tokens per second, holding at most `2 * rate`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last_ms: u64,
}

impl Bucket {
    fn full(rate: u32, now_ms: u64) -> Self {
        Bucket {
            tokens: 2.0 * rate as f64,
            last_ms: now_ms,
        }
    }

    fn take(&mut self, rate: u32, cost: u32, now_ms: u64) -> bool {
        let rate = rate as f64;
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * rate).min(2.0 * rate);
        self.last_ms = now_ms;
        if self.tokens >= cost as f64 {
            self.tokens -= cost as f64;
            true
        } else {
            false
        }
    }
}

/// Every app's and account's bucket.
#[derive(Debug)]
pub struct Quotas {
    per_account: u32,
    per_app: u32,
    accounts: Mutex<LruCache<(u64, u64), Bucket>>,
    apps: Mutex<HashMap<u64, Bucket>>,
}

impl Quotas {
    /// Rates of 0 turn the quota off.
    pub fn new(per_account: u32, per_app: u32) -> Self {
        Quotas {
            per_account,
            per_app,
            accounts: Mutex::new(LruCache::new(
                NonZeroUsize::new(ACCOUNT_BUCKETS).unwrap_or(NonZeroUsize::MIN),
            )),
            apps: Mutex::new(HashMap::new()),
        }
    }

    /// Charges `cost` units to the app (an authenticated app: the map is bounded by
    /// the number of apps) and, when given, one call to the account `(app, uuid)`.
    pub fn charge(
        &self,
        app_id: u64,
        account: Option<u64>,
        cost: u32,
        now_ms: u64,
    ) -> Result<(), QuotaExceeded> {
        if let (Some(uuid), rate) = (account, self.per_account) {
            if rate > 0 {
                let mut accounts = self.accounts.lock();
                let bucket =
                    accounts.get_or_insert_mut((app_id, uuid), || Bucket::full(rate, now_ms));
                if !bucket.take(rate, 1, now_ms) {
                    return Err(QuotaExceeded::Account(rate));
                }
            }
        }
        let rate = self.per_app;
        if rate > 0 {
            let mut apps = self.apps.lock();
            let bucket = apps
                .entry(app_id)
                .or_insert_with(|| Bucket::full(rate, now_ms));
            if !bucket.take(rate, cost.max(1), now_ms) {
                return Err(QuotaExceeded::App(rate));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_bucket_allows_a_burst_then_the_rate() {
        let q = Quotas::new(10, 0);
        for _ in 0..20 {
            assert!(q.charge(1, Some(7), 1, 1000).is_ok());
        }
        assert_eq!(
            q.charge(1, Some(7), 1, 1000),
            Err(QuotaExceeded::Account(10))
        );
        // Another account is not affected; time refills.
        assert!(q.charge(1, Some(8), 1, 1000).is_ok());
        assert!(q.charge(1, Some(7), 1, 1100).is_ok());
        assert!(q.charge(1, Some(7), 1, 1100).is_err());
    }

    #[test]
    fn app_bucket_charges_by_cost() {
        let q = Quotas::new(0, 100);
        assert!(q.charge(1, None, 150, 0).is_ok());
        assert_eq!(q.charge(1, None, 60, 0), Err(QuotaExceeded::App(100)));
        assert!(q.charge(2, None, 200, 0).is_ok());
        assert!(q.charge(1, None, 0, 0).is_ok(), "cost 0 counts as 1");
    }
}
