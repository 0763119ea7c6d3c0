//! Chaos for the local pipeline: `pixpress run --faults conflict=0.3,throttle=0.2,…`.
//!
//! [`SeededFaults`] is the [`FaultInjector`] the embedded adapters consult before every service
//! call, plus the pump's decision that a worker invocation crashes. Faults, each off unless
//! asked:
//!
//! - `conflict` — a DynamoDB transaction or a row outcome's write is refused with
//!   `TransactionConflict`;
//! - `throttle` — any repository or queue call is throttled;
//! - `duplicate` — a received message is delivered once more (possibly to a concurrent
//!   invocation at the same time);
//! - `crash` — a worker invocation dies mid-row: one of the two writes that record a row (the
//!   row's, or its count after the row's) never happens, nor does anything after it in that
//!   invocation, and no message of the invocation is deleted, so they come back after the
//!   visibility timeout;
//! - `timeout` — an invocation of any function the pump runs (api, worker, row-dead-letter,
//!   completion-notifier) is killed at a random point before it returns, as Lambda ends one
//!   at its deadline: at one of its calls to the repository or a queue, chosen at random, that
//!   call and every later one fail; the pump treats the invocation as Lambda treats a timeout
//!   (the API answers 500, a queue batch's messages are not deleted, a stream batch is
//!   retried);
//! - `drop-event` — a stream batch is lost after its retries: the notifier never sees it, and
//!   only the sweeper can finish those requests.
//!
//! Probabilities are per call (per invocation for `crash` and `timeout`, per batch for
//! `drop-event`); `seed=N` fixes the random choices. The injector counts what fired.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use pixpress_embedded::{Call, FaultInjector, InjectedFault};

/// Probabilities of each fault and the seed (`name=probability,…,seed=N`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FaultSpec {
    /// Transactions cancelled with `TransactionConflict`.
    pub conflict: f64,
    /// Repository and queue calls throttled.
    pub throttle: f64,
    /// Messages delivered twice.
    pub duplicate: f64,
    /// Worker invocations that die mid-row.
    pub crash: f64,
    /// Invocations of any function killed before they return.
    pub timeout: f64,
    /// Stream batches lost after their retries.
    pub drop_event: f64,
    /// Seed of the random choices.
    pub seed: u64,
}

impl FaultSpec {
    /// `true` when no fault can fire.
    #[must_use]
    pub fn is_off(&self) -> bool {
        [
            self.conflict,
            self.throttle,
            self.duplicate,
            self.crash,
            self.timeout,
            self.drop_event,
        ]
        .iter()
        .all(|p| *p == 0.0)
    }
}

impl std::str::FromStr for FaultSpec {
    type Err = String;

    /// Parses `conflict=0.3,throttle=0.2,duplicate=0.2,crash=0.1,timeout=0.1,drop-event=0.1,seed=7`; every entry is
    /// optional; probabilities are in `[0, 1)` (a fault that always fires would never let the
    /// work finish).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut spec = Self::default();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, value) = entry
                .split_once('=')
                .ok_or_else(|| format!("`{entry}`: expected name=value"))?;
            let (name, value) = (name.trim(), value.trim());
            if name == "seed" {
                spec.seed = value
                    .parse()
                    .map_err(|_| format!("seed must be a whole number, got `{value}`"))?;
                continue;
            }
            let p: f64 = value
                .parse()
                .map_err(|_| format!("{name}: `{value}` is not a number"))?;
            if !(0.0..1.0).contains(&p) {
                return Err(format!(
                    "{name}: the probability must be at least 0 and below 1, got {p}"
                ));
            }
            match name {
                "conflict" => spec.conflict = p,
                "throttle" => spec.throttle = p,
                "duplicate" => spec.duplicate = p,
                "crash" => spec.crash = p,
                "timeout" => spec.timeout = p,
                "drop-event" => spec.drop_event = p,
                other => {
                    return Err(format!(
                        "unknown fault `{other}`; known: conflict, throttle, duplicate, crash, timeout, drop-event, seed"
                    ));
                }
            }
        }
        Ok(spec)
    }
}

/// How many faults of each kind fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct FaultCounts {
    /// Transactions cancelled with `TransactionConflict`.
    pub conflicts: u64,
    /// Calls throttled.
    pub throttles: u64,
    /// Messages delivered twice.
    pub duplicates: u64,
    /// Worker invocations crashed.
    pub crashes: u64,
    /// Invocations killed before they returned.
    pub timeouts: u64,
    /// Stream batches lost.
    pub dropped_events: u64,
}

impl std::fmt::Display for FaultCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} conflicts, {} throttles, {} duplicate deliveries, {} crashed invocations, {} timed-out invocations, {} lost stream batches",
            self.conflicts,
            self.throttles,
            self.duplicates,
            self.crashes,
            self.timeouts,
            self.dropped_events
        )
    }
}

/// The fate of one invocation: it dies at its `crash_at`-th write recording a row outcome (or
/// creation transaction; worker invocations only) or is killed at its `timeout_at`-th call of any kind,
/// and every call after that fails too.
#[derive(Debug)]
pub struct Invocation {
    crash_at: Option<usize>,
    timeout_at: Option<usize>,
    transactions: AtomicUsize,
    calls: AtomicUsize,
    crashed: AtomicBool,
}

impl Invocation {
    fn new(crash_at: Option<usize>, timeout_at: Option<usize>) -> Arc<Self> {
        Arc::new(Self {
            crash_at,
            timeout_at,
            transactions: AtomicUsize::new(0),
            calls: AtomicUsize::new(0),
            crashed: AtomicBool::new(false),
        })
    }

    /// `true` once the invocation has died.
    #[must_use]
    pub fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }
}

tokio::task_local! {
    /// The worker invocation the current task runs, set by the pump.
    pub static INVOCATION: Arc<Invocation>;
}

/// The seeded injector. Share one per pipeline.
#[derive(Debug)]
pub struct SeededFaults {
    spec: FaultSpec,
    rng: Mutex<fastrand::Rng>,
    conflicts: AtomicU64,
    throttles: AtomicU64,
    duplicates: AtomicU64,
    crashes: AtomicU64,
    timeouts: AtomicU64,
    dropped_events: AtomicU64,
}

impl SeededFaults {
    /// An injector for `spec`.
    #[must_use]
    pub fn new(spec: FaultSpec) -> Self {
        Self {
            spec,
            rng: Mutex::new(fastrand::Rng::with_seed(spec.seed)),
            conflicts: AtomicU64::new(0),
            throttles: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            crashes: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            dropped_events: AtomicU64::new(0),
        }
    }

    /// The spec in force.
    #[must_use]
    pub fn spec(&self) -> FaultSpec {
        self.spec
    }

    fn chance(&self, p: f64) -> bool {
        p > 0.0 && self.rng.lock().map(|mut r| r.f64() < p).unwrap_or(false)
    }

    /// The fate of a new worker invocation of `messages` messages: with probability `crash`
    /// it dies at one of the writes recording its rows (two per row), and with probability
    /// `timeout` it is killed at one of its first `calls` calls.
    #[must_use]
    pub fn invocation(&self, messages: usize) -> Arc<Invocation> {
        let crash_at = self.pick(self.spec.crash, 2 * messages);
        let timeout_at = self.pick(self.spec.timeout, 4 * messages.max(1));
        Invocation::new(crash_at, timeout_at)
    }

    /// The fate of a new invocation of another function that makes about `calls` calls: with
    /// probability `timeout` it is killed at one of them.
    #[must_use]
    pub fn other_invocation(&self, calls: usize) -> Arc<Invocation> {
        Invocation::new(None, self.pick(self.spec.timeout, calls))
    }

    /// With probability `p`, a position in `1..=n`.
    fn pick(&self, p: f64, n: usize) -> Option<usize> {
        if !self.chance(p) {
            return None;
        }
        self.rng.lock().ok().map(|mut r| r.usize(1..=n.max(1)))
    }

    /// `true` when a stream batch is to be lost (`drop-event`), counted.
    pub fn drop_event(&self) -> bool {
        let fired = self.chance(self.spec.drop_event);
        if fired {
            self.dropped_events.fetch_add(1, Ordering::SeqCst);
        }
        fired
    }

    /// What fired so far.
    #[must_use]
    pub fn counts(&self) -> FaultCounts {
        FaultCounts {
            conflicts: self.conflicts.load(Ordering::SeqCst),
            throttles: self.throttles.load(Ordering::SeqCst),
            duplicates: self.duplicates.load(Ordering::SeqCst),
            crashes: self.crashes.load(Ordering::SeqCst),
            timeouts: self.timeouts.load(Ordering::SeqCst),
            dropped_events: self.dropped_events.load(Ordering::SeqCst),
        }
    }

    /// Counts by name, for reports.
    #[must_use]
    pub fn counts_by_name(&self) -> BTreeMap<&'static str, u64> {
        let c = self.counts();
        BTreeMap::from([
            ("conflict", c.conflicts),
            ("throttle", c.throttles),
            ("duplicate", c.duplicates),
            ("crash", c.crashes),
            ("timeout", c.timeouts),
            ("drop-event", c.dropped_events),
        ])
    }

    fn crash_check(&self, call: Call) -> Option<InjectedFault> {
        INVOCATION
            .try_with(|invocation| {
                if invocation.crashed() {
                    return Some(InjectedFault::Crash);
                }
                if let Some(timeout_at) = invocation.timeout_at {
                    let n = invocation.calls.fetch_add(1, Ordering::SeqCst) + 1;
                    if n >= timeout_at && !invocation.crashed.swap(true, Ordering::SeqCst) {
                        self.timeouts.fetch_add(1, Ordering::SeqCst);
                        return Some(InjectedFault::Crash);
                    }
                }
                let crash_at = invocation.crash_at?;
                if !matches!(call, Call::Transaction | Call::Outcome) {
                    return None;
                }
                let n = invocation.transactions.fetch_add(1, Ordering::SeqCst) + 1;
                if n >= crash_at && !invocation.crashed.swap(true, Ordering::SeqCst) {
                    self.crashes.fetch_add(1, Ordering::SeqCst);
                    return Some(InjectedFault::Crash);
                }
                None
            })
            .ok()
            .flatten()
    }
}

impl FaultInjector for SeededFaults {
    fn before(&self, call: Call) -> Option<InjectedFault> {
        if let Some(crash) = self.crash_check(call) {
            return Some(crash);
        }
        // Single-item writes meet `TransactionConflict` too, on an item a transaction holds.
        if matches!(call, Call::Transaction | Call::Outcome) && self.chance(self.spec.conflict) {
            self.conflicts.fetch_add(1, Ordering::SeqCst);
            return Some(InjectedFault::Conflict);
        }
        if self.chance(self.spec.throttle) {
            self.throttles.fetch_add(1, Ordering::SeqCst);
            return Some(InjectedFault::Throttle);
        }
        None
    }

    fn duplicate_delivery(&self) -> bool {
        let fired = self.chance(self.spec.duplicate);
        if fired {
            self.duplicates.fetch_add(1, Ordering::SeqCst);
        }
        fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_say_why() {
        let spec: FaultSpec = "conflict=0.3,throttle=0.2,duplicate=0.2,crash=0.1,seed=7"
            .parse()
            .unwrap();
        assert_eq!(
            spec,
            FaultSpec {
                conflict: 0.3,
                throttle: 0.2,
                duplicate: 0.2,
                crash: 0.1,
                seed: 7,
                ..FaultSpec::default()
            }
        );
        assert!(FaultSpec::default().is_off());
        assert!(
            "flood=0.1"
                .parse::<FaultSpec>()
                .unwrap_err()
                .contains("unknown fault")
        );
        assert!(
            "crash=1"
                .parse::<FaultSpec>()
                .unwrap_err()
                .contains("below 1")
        );
        assert!(
            "crash"
                .parse::<FaultSpec>()
                .unwrap_err()
                .contains("name=value")
        );
    }

    #[tokio::test]
    async fn a_timed_out_invocation_dies_at_a_call_of_any_kind_and_lost_batches_are_counted() {
        let spec: FaultSpec = "timeout=0.999,drop-event=0.999,seed=3".parse().unwrap();
        assert!((spec.timeout, spec.drop_event) == (0.999, 0.999) && !spec.is_off());
        let faults = SeededFaults::new(spec);
        // About one call: it is killed at the first, a read, and stays dead.
        let invocation = faults.other_invocation(1);
        INVOCATION
            .scope(invocation.clone(), async {
                assert_eq!(faults.before(Call::Read), Some(InjectedFault::Crash));
                assert_eq!(faults.before(Call::Enqueue), Some(InjectedFault::Crash));
            })
            .await;
        assert!(invocation.crashed());
        assert!(faults.drop_event());
        let counts = faults.counts();
        assert_eq!(
            (counts.timeouts, counts.dropped_events, counts.crashes),
            (1, 1, 0)
        );
    }

    #[tokio::test]
    async fn a_doomed_invocation_dies_at_a_write_recording_its_row_and_stays_dead() {
        let faults = SeededFaults::new(FaultSpec {
            crash: 0.999,
            ..FaultSpec::default()
        });
        let invocation = faults.invocation(1);
        let fate = invocation.clone();
        INVOCATION
            .scope(invocation, async {
                assert_eq!(faults.before(Call::Read), None);
                // One message: it dies at the row's write or at its count, the one after.
                let _row = faults.before(Call::Outcome);
                assert_eq!(faults.before(Call::Outcome), Some(InjectedFault::Crash));
                assert_eq!(faults.before(Call::Read), Some(InjectedFault::Crash));
            })
            .await;
        assert!(fate.crashed());
        assert_eq!(faults.counts().crashes, 1);
        // Outside an invocation nothing crashes.
        assert_eq!(faults.before(Call::Transaction), None);
    }
}
