//! In-process retries of transient port failures (throttling, transaction conflicts) with
//! capped exponential backoff and full jitter: the delay before retry `n` is uniform in
//! `[0, min(cap, base · 2ⁿ)]` (AWS Architecture Blog, "Exponential Backoff And Jitter"), so
//! writers that collided once do not collide again in lockstep.
//!
//! Only [`PortError::is_transient`] failures are retried here; what is left after the last
//! attempt goes back to the caller, whose delivery (SQS batch item failure, stream retry)
//! retries it later.

use std::future::Future;
use std::time::Duration;

use crate::ports::PortError;

/// How often and how long to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// Upper bound of the first delay.
    pub base: Duration,
    /// Upper bound of any delay.
    pub cap: Duration,
}

impl RetryPolicy {
    /// The policy of the repository and queue adapters: 8 attempts, delays up to 25 ms, 50 ms,
    /// … capped at 1 s (about 2.6 s of waiting at worst; a transaction that conflicts at a
    /// rate of 30 % fails all 8 attempts with probability 0.3⁸ ≈ 7·10⁻⁵).
    pub const STORAGE: Self = Self {
        attempts: 8,
        base: Duration::from_millis(25),
        cap: Duration::from_secs(1),
    };

    /// No retries (tests that count single calls).
    pub const NONE: Self = Self {
        attempts: 1,
        base: Duration::ZERO,
        cap: Duration::ZERO,
    };

    /// The jittered delay before retry `retry` (0 for the first retry).
    #[must_use]
    pub fn delay(&self, retry: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << retry.min(20))
            .min(self.cap);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=nanos))
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::STORAGE
    }
}

/// Runs `op` until it succeeds, fails with a non-transient error, or `policy.attempts` are
/// used; sleeps [`RetryPolicy::delay`] between attempts.
///
/// # Errors
/// The last error of `op`.
pub async fn retry<T, F, Fut>(policy: &RetryPolicy, what: &str, mut op: F) -> Result<T, PortError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, PortError>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if e.is_transient() && attempt < policy.attempts.max(1) => {
                tracing::debug!(what, attempt, error = %e, "transient failure; retrying");
                tokio::time::sleep(policy.delay(attempt - 1)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// When a queue message handed back as a batch item failure is delivered again: jittered
/// exponential backoff set with SQS `ChangeMessageVisibility`, instead of the queue's whole
/// visibility timeout (720 s for rows). Before receive `n + 1` the message stays hidden for a
/// time uniform in `[d/2, d]`, `d = min(cap, first · factorⁿ⁻¹)` — "equal jitter" (AWS
/// Architecture Blog, "Exponential Backoff And Jitter"), so a throttled batch's rows spread out
/// yet the series keeps its length — in whole seconds, as SQS counts visibility.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedeliveryBackoff {
    /// Upper bound of the first wait (after receive 1).
    pub first: Duration,
    /// How much each wait's bound grows over the one before.
    pub factor: u32,
    /// Upper bound of any wait (at most 12 hours, SQS's longest visibility timeout).
    pub cap: Duration,
}

impl RedeliveryBackoff {
    /// Rows, deployed: 10 s, 1 min, 6 min, 36 min — seconds, then minutes. With the rows
    /// queue's `maxReceiveCount` of 5 a row is tried over 22–43 minutes (the visibility
    /// timeout made it an hour), long enough to ride out a throttled partition, while a
    /// one-off failure is retried within seconds.
    pub const DEPLOYED: Self = Self {
        first: Duration::from_secs(10),
        factor: 6,
        cap: Duration::from_secs(3600),
    };

    /// Chunk jobs, deployed: 1 min, 6 min, 36 min, 3.6 h — a chunk's whole request fails when
    /// its last receive does, so its series spans 2–4.3 hours (within the sweeper's 8-hour
    /// ingest bound), not minutes.
    pub const CHUNKS: Self = Self {
        first: Duration::from_secs(60),
        factor: 6,
        cap: Duration::from_secs(4 * 3600),
    };

    /// How long the message received `receive_count` times (SQS `ApproximateReceiveCount`,
    /// from 1) stays hidden before its next delivery: at least 1 s.
    #[must_use]
    pub fn delay(&self, receive_count: u32) -> Duration {
        let exponent = receive_count.saturating_sub(1).min(15);
        let ceiling = self
            .first
            .saturating_mul(self.factor.max(1).saturating_pow(exponent))
            .min(self.cap)
            .max(Duration::from_secs(1));
        let seconds = ceiling.as_secs().max(1);
        Duration::from_secs(fastrand::u64(seconds.div_ceil(2)..=seconds))
    }
}

impl Default for RedeliveryBackoff {
    fn default() -> Self {
        Self::DEPLOYED
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn redeliveries_wait_seconds_then_minutes_jittered_in_the_upper_half() {
        let backoff = RedeliveryBackoff::DEPLOYED;
        for (receive, ceiling) in [
            (1, 10u64),
            (2, 60),
            (3, 360),
            (4, 2160),
            (5, 3600),
            (40, 3600),
        ] {
            for _ in 0..50 {
                let wait = backoff.delay(receive).as_secs();
                assert!(
                    (ceiling.div_ceil(2)..=ceiling).contains(&wait),
                    "receive {receive}: {wait} s outside [{}, {ceiling}]",
                    ceiling.div_ceil(2)
                );
            }
        }
        let distinct: std::collections::HashSet<Duration> =
            (0..30).map(|_| backoff.delay(3)).collect();
        assert!(distinct.len() > 1, "waits must vary");
        let tiny = RedeliveryBackoff {
            first: Duration::from_millis(10),
            factor: 6,
            cap: Duration::from_millis(10),
        };
        assert_eq!(
            tiny.delay(1),
            Duration::from_secs(1),
            "SQS counts whole seconds"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let result = retry(&RetryPolicy::STORAGE, "test", || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(PortError::Throttled("slow down".into()))
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(result.ok(), Some(7));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_failures_and_exhausted_attempts_return_the_error() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = retry(&RetryPolicy::STORAGE, "test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(PortError::LimitExceeded("item too large".into()))
        })
        .await;
        assert!(matches!(result, Err(PortError::LimitExceeded(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let calls = AtomicU32::new(0);
        let result: Result<(), _> = retry(&RetryPolicy::STORAGE, "test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(PortError::Conflict("TransactionConflict".into()))
        })
        .await;
        assert!(matches!(result, Err(PortError::Conflict(_))));
        assert_eq!(calls.load(Ordering::SeqCst), RetryPolicy::STORAGE.attempts);
    }

    #[test]
    fn delays_are_jittered_below_a_doubling_capped_ceiling() {
        let policy = RetryPolicy::STORAGE;
        for retry in 0..12 {
            let ceiling = (policy.base * (1 << retry)).min(policy.cap);
            for _ in 0..50 {
                assert!(policy.delay(retry) <= ceiling);
            }
        }
        let distinct: std::collections::HashSet<Duration> =
            (0..20).map(|_| policy.delay(3)).collect();
        assert!(distinct.len() > 1, "delays must vary");
    }
}
