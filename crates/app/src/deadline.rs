//! The invocation's deadline, from the Lambda context: work that cannot finish in time is
//! left for the next delivery (the row-worker) or the next invocation (the notifier).

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
}
