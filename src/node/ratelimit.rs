//! `ingest_rate_limit`: events per second per account, as a token bucket per account
//! holding at most one second's worth. Kept in memory: a restart forgets the buckets, which
//! only ever lets a burst through, never refuses one.

use crate::model::AccountId;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

/// Per-account token buckets refilled at `per_second`.
pub struct IngestLimiter {
    per_second: f64,
    buckets: Mutex<HashMap<AccountId, Bucket>>,
}

impl IngestLimiter {
    pub fn new(per_second: u32) -> Self {
        Self { per_second: f64::from(per_second.max(1)), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes `n` events' worth for `account`, or says after how many whole seconds to retry.
    pub fn take(&self, account: &AccountId, n: usize) -> Result<(), u64> {
        self.take_at(account, n, Instant::now())
    }

    fn take_at(&self, account: &AccountId, n: usize, now: Instant) -> Result<(), u64> {
        let Ok(mut buckets) = self.buckets.lock() else { return Ok(()) };
        let bucket = buckets.entry(account.clone()).or_insert(Bucket { tokens: self.per_second, refilled: now });
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.per_second);
        bucket.refilled = now;
        // A batch larger than a second's worth needs a full bucket and leaves it in debt, so
        // it can pass at all and the average rate still holds.
        let want = n as f64;
        let need = want.min(self.per_second);
        if need <= bucket.tokens {
            bucket.tokens -= want;
            return Ok(());
        }
        Err(((need - bucket.tokens) / self.per_second).ceil().max(1.0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn refills_at_the_configured_rate_per_account() {
        let l = IngestLimiter::new(10);
        let (a, b) = (AccountId::default_account(), AccountId::generate());
        let t0 = Instant::now();
        assert!(l.take_at(&a, 10, t0).is_ok());
        assert_eq!(l.take_at(&a, 1, t0), Err(1));
        assert!(l.take_at(&b, 10, t0).is_ok(), "accounts do not share a bucket");
        assert!(l.take_at(&a, 5, t0 + Duration::from_millis(500)).is_ok());
        assert!(l.take_at(&a, 1, t0 + Duration::from_millis(500)).is_err());
        // A batch of 35 passes on a full bucket (10) and leaves 25 events, 2.5 seconds, of debt.
        let t1 = t0 + Duration::from_secs(10);
        assert!(l.take_at(&a, 35, t1).is_ok());
        assert_eq!(l.take_at(&a, 1, t1 + Duration::from_secs(2)), Err(1));
        assert!(l.take_at(&a, 1, t1 + Duration::from_secs(3)).is_ok());
    }
}
