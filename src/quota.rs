//! Quotas on REST calls that create state (accounts, topics, memberships, pushed
//! messages): a token bucket per account and one per app.
//!
//! - per account: `rest_rate_per_account` state-changing calls per second, and
//!   `rest_names_per_account` accounts named per second, each with bursts up to twice
//!   that — so one end user gets at most that share of its app's quota;
//! - per app: `rest_rate_per_app` units per second, bursts up to twice that, where a
//!   call costs one unit per account or topic it names (at least one). Token
//!   requests, topic calls, pushes, header-mode calls and wire sends to accounts not
//!   in the cache all draw from it, so no app can create accounts or messages faster
//!   than its rate, whoever calls.
//!
//! A call over any quota is refused with `429` before it does anything, and charges
//! nothing. Account buckets live in a bounded LRU map ([`ACCOUNT_BUCKETS`]); an
//! evicted bucket starts full again, which can only let an account through, never
//! block it wrongly.

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
    #[error("more than {0} accounts named per second by this account; retry later")]
    AccountNames(u32),
    #[error("more than {0} units of work per second for this app; retry later")]
    App(u32),
    #[error("more than {0} messages per second from this user (the app's send rate); retry later")]
    Sends(u32),
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

    /// Adds what `rate` gave since the last call; says whether `cost` is there.
    fn refill(&mut self, rate: u32, cost: u32, now_ms: u64) -> bool {
        let rate = rate as f64;
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * rate).min(2.0 * rate);
        self.last_ms = now_ms;
        self.tokens >= cost as f64
    }

    fn take(&mut self, cost: u32) {
        self.tokens -= cost as f64;
    }
}

/// One account's buckets: calls, and accounts named.
#[derive(Debug, Clone, Copy)]
struct AccountBuckets {
    calls: Bucket,
    names: Bucket,
}

/// Every app's and account's bucket.
#[derive(Debug)]
pub struct Quotas {
    per_account: u32,
    names_per_account: u32,
    per_app: u32,
    accounts: Mutex<LruCache<(u64, u64), AccountBuckets>>,
    apps: Mutex<HashMap<u64, Bucket>>,
    /// Per-user send buckets of apps that set `send_rate_per_user`.
    sends: Mutex<LruCache<u64, Bucket>>,
}

impl Quotas {
    /// Rates of 0 turn that quota off.
    pub fn new(per_account: u32, names_per_account: u32, per_app: u32) -> Self {
        Quotas {
            per_account,
            names_per_account,
            per_app,
            accounts: Mutex::new(LruCache::new(
                NonZeroUsize::new(ACCOUNT_BUCKETS).unwrap_or(NonZeroUsize::MIN),
            )),
            apps: Mutex::new(HashMap::new()),
            sends: Mutex::new(LruCache::new(
                NonZeroUsize::new(ACCOUNT_BUCKETS).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// Charges `count` messages to user `uuid` at `rate` messages per second
    /// (bursts up to twice that); `None` = no send rate for its app.
    pub fn charge_send(
        &self,
        uuid: u64,
        rate: Option<u32>,
        count: u32,
        now_ms: u64,
    ) -> Result<(), QuotaExceeded> {
        let Some(rate) = rate.filter(|r| *r > 0) else {
            return Ok(());
        };
        let mut sends = self.sends.lock();
        let b = sends.get_or_insert_mut(uuid, || Bucket::full(rate, now_ms));
        if !b.refill(rate, count, now_ms) {
            return Err(QuotaExceeded::Sends(rate));
        }
        b.take(count);
        Ok(())
    }

    /// Charges `cost` units to the app (an authenticated app: the map is bounded by
    /// the number of apps) and, when given, one call and `cost` names to the account
    /// `(app, uuid)`. Nothing is charged unless every bucket has room.
    pub fn charge(
        &self,
        app_id: u64,
        account: Option<u64>,
        cost: u32,
        now_ms: u64,
    ) -> Result<(), QuotaExceeded> {
        self.charge_inner(app_id, account, true, cost, now_ms)
    }

    /// Like [`Quotas::charge`] for work that is not a REST call (a wire send naming
    /// an account the cache does not know): names and app units, no call.
    pub fn charge_names(
        &self,
        app_id: u64,
        account: u64,
        cost: u32,
        now_ms: u64,
    ) -> Result<(), QuotaExceeded> {
        self.charge_inner(app_id, Some(account), false, cost, now_ms)
    }

    fn charge_inner(
        &self,
        app_id: u64,
        account: Option<u64>,
        call: bool,
        cost: u32,
        now_ms: u64,
    ) -> Result<(), QuotaExceeded> {
        let per_account = if call { self.per_account } else { 0 };
        let cost = cost.max(1);
        // Lock order: accounts, then apps.
        let mut accounts = self.accounts.lock();
        let mut mine = match account {
            Some(uuid) if per_account > 0 || self.names_per_account > 0 => {
                let b = accounts.get_or_insert_mut((app_id, uuid), || AccountBuckets {
                    calls: Bucket::full(self.per_account, now_ms),
                    names: Bucket::full(self.names_per_account, now_ms),
                });
                if per_account > 0 && !b.calls.refill(per_account, 1, now_ms) {
                    return Err(QuotaExceeded::Account(per_account));
                }
                if self.names_per_account > 0
                    && !b.names.refill(self.names_per_account, cost, now_ms)
                {
                    return Err(QuotaExceeded::AccountNames(self.names_per_account));
                }
                Some(b)
            }
            _ => None,
        };
        let mut apps = self.apps.lock();
        let app = if self.per_app > 0 {
            let b = apps
                .entry(app_id)
                .or_insert_with(|| Bucket::full(self.per_app, now_ms));
            if !b.refill(self.per_app, cost, now_ms) {
                return Err(QuotaExceeded::App(self.per_app));
            }
            Some(b)
        } else {
            None
        };
        if let Some(b) = mine.as_mut() {
            if per_account > 0 {
                b.calls.take(1);
            }
            if self.names_per_account > 0 {
                b.names.take(cost);
            }
        }
        if let Some(b) = app {
            b.take(cost);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_bucket_allows_a_burst_then_the_rate() {
        let q = Quotas::new(10, 0, 0);
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
    fn send_rate_is_per_user_and_off_without_a_rate() {
        let q = Quotas::new(0, 0, 0);
        for _ in 0..1000 {
            assert!(q.charge_send(7, None, 1, 0).is_ok());
        }
        assert!(q.charge_send(7, Some(1), 1, 0).is_ok());
        assert!(q.charge_send(7, Some(1), 1, 0).is_ok());
        assert_eq!(
            q.charge_send(7, Some(1), 1, 0),
            Err(QuotaExceeded::Sends(1))
        );
        assert!(q.charge_send(8, Some(1), 1, 0).is_ok());
        assert!(q.charge_send(7, Some(1), 1, 1000).is_ok());
    }

    #[test]
    fn app_bucket_charges_by_cost() {
        let q = Quotas::new(0, 0, 100);
        assert!(q.charge(1, None, 150, 0).is_ok());
        assert_eq!(q.charge(1, None, 60, 0), Err(QuotaExceeded::App(100)));
        assert!(q.charge(2, None, 200, 0).is_ok());
        assert!(q.charge(1, None, 0, 0).is_ok(), "cost 0 counts as 1");
    }

    #[test]
    fn a_refused_call_charges_nothing() {
        let q = Quotas::new(10, 100, 50);
        // The app bucket (100 tokens) refuses 150 units: the account keeps its tokens.
        assert_eq!(q.charge(1, Some(7), 150, 0), Err(QuotaExceeded::App(50)));
        assert_eq!(
            q.charge(2, Some(9), 250, 0),
            Err(QuotaExceeded::AccountNames(100))
        );
        assert!(q.charge(1, Some(7), 90, 0).is_ok());
        assert_eq!(q.charge(1, Some(8), 20, 0), Err(QuotaExceeded::App(50)));
        // Account 8 was not charged by the refusal: it still has 20 calls of burst.
        for _ in 0..10 {
            assert!(q.charge(1, Some(8), 1, 0).is_ok());
        }
    }
}
