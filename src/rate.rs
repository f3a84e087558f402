//! Token buckets: how fast one member may post and one peer may push.
//! Pure: the caller passes the time.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One bucket per key (a member, a peer), all with the same rate and burst,
/// each full when first used.
#[derive(Debug)]
pub struct Buckets<K> {
    rate: u32,
    burst: u32,
    buckets: Mutex<HashMap<K, TokenBucket>>,
}

impl<K: Eq + Hash + Clone> Buckets<K> {
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate,
            burst,
            buckets: Mutex::default(),
        }
    }

    fn with<R>(&self, key: &K, now: Instant, take: impl FnOnce(&mut TokenBucket) -> R) -> R {
        let mut buckets = crate::locks::lock(&self.buckets);
        let bucket = buckets
            .entry(key.clone())
            .or_insert_with(|| TokenBucket::new(self.rate, self.burst, now));
        take(bucket)
    }

    /// [`TokenBucket::try_take`] on `key`'s bucket.
    pub fn try_take(&self, key: &K, now: Instant) -> bool {
        self.with(key, now, |b| b.try_take(now))
    }

    /// [`TokenBucket::take_or_wait`] on `key`'s bucket.
    pub fn take_or_wait(&self, key: &K, n: u32, now: Instant) -> Duration {
        self.with(key, now, |b| b.take_or_wait(n, now))
    }
}

/// `rate` tokens per second, at most `burst` saved up. A rate of 0 means no limit.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: now,
        }
    }

    pub fn unlimited(&self) -> bool {
        self.rate == 0.0
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        if self.unlimited() {
            return true;
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Takes `n` tokens, going into debt if needed, and says how long to wait
    /// before acting so that the long-run rate holds (zero when in credit).
    pub fn take_or_wait(&mut self, n: u32, now: Instant) -> Duration {
        if self.unlimited() {
            return Duration::ZERO;
        }
        self.refill(now);
        self.tokens -= f64::from(n);
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_allows_its_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 5, t0);
        assert_eq!((0..8).filter(|_| b.try_take(t0)).count(), 5);
        // 10 per second: one more after 100 ms, not before.
        assert!(!b.try_take(t0 + Duration::from_millis(50)));
        assert!(b.try_take(t0 + Duration::from_millis(100)));
        // Saving up stops at the burst.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..8).filter(|_| b.try_take(later)).count(), 5);
    }

    #[test]
    fn debt_is_paid_by_waiting() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, 100, t0);
        assert_eq!(b.take_or_wait(100, t0), Duration::ZERO);
        assert_eq!(b.take_or_wait(50, t0), Duration::from_millis(500));
        let mut free = TokenBucket::new(0, 0, t0);
        assert!(free.try_take(t0) && free.take_or_wait(1_000_000, t0).is_zero());
    }
}
