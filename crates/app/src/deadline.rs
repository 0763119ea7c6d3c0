//! The invocation's deadline, from the Lambda context: work that cannot finish in time is
//! left for the next delivery (the row-worker) or the next invocation (the notifier).

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// When the invocation must have finished (Lambda's deadline), if there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// No deadline (tests, direct calls).
    pub const NONE: Self = Self(None);

    /// The deadline of a Lambda context (`deadline`, milliseconds since the Unix epoch; 0 when
    /// unset).
    #[must_use]
    pub fn from_epoch_millis(deadline_ms: u64) -> Self {
        if deadline_ms == 0 {
            return Self::NONE;
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self(Some(
            Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now_ms)),
        ))
    }

    /// A deadline `remaining` from now.
    #[must_use]
    pub fn after(remaining: Duration) -> Self {
        Self(Some(Instant::now() + remaining))
    }

    /// `true` while at least `needed` is left.
    #[must_use]
    pub fn allows(&self, needed: Duration) -> bool {
        self.0.is_none_or(|d| Instant::now() + needed <= d)
    }

    /// Waits for `work` while more than `keep` is left before the deadline; `None` when the
    /// wait reaches that point first (`work` is dropped). Bounds the waits a deadline check
    /// before starting cannot see: a queue for memory, for the compressor.
    pub async fn within<T>(&self, keep: Duration, work: impl Future<Output = T>) -> Option<T> {
        match self.0 {
            None => Some(work.await),
            Some(deadline) => {
                let until = deadline.checked_sub(keep).unwrap_or_else(Instant::now);
                tokio::time::timeout_at(until.into(), work).await.ok()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_when_only_the_time_to_keep_is_left() {
        let deadline = Deadline::after(Duration::from_secs(10));
        let slow = tokio::time::sleep(Duration::from_secs(8));
        assert_eq!(deadline.within(Duration::from_secs(5), slow).await, None);
        let quick = async { 7 };
        assert_eq!(
            deadline.within(Duration::from_secs(1), quick).await,
            Some(7)
        );
        let forever = std::future::pending::<()>();
        assert_eq!(
            deadline.within(Duration::from_secs(60), forever).await,
            None
        );
        let unbounded = tokio::time::sleep(Duration::from_secs(3600));
        assert_eq!(
            Deadline::NONE
                .within(Duration::from_secs(5), unbounded)
                .await,
            Some(())
        );
    }
}
