//! Download slots per origin host for one worker process: the host's adaptive limit
//! ([`HostConcurrency`]) within the process's lease of the host's shared slots
//! ([`OriginSlots`]), so no host has more than `ORIGIN_MAX_CONCURRENCY` downloads in flight
//! across every invocation, and a host that answered 429 or 503 is left alone by all of them
//! until its `Retry-After` has passed.
//!
//! A process leases what its controller wants and the cap leaves: when it first downloads
//! from a host, when its controller grows past the lease (at most every
//! [`LEASE_RECHECK`]), when the lease nears its end, and at least every [`LEASE_REFRESH`]
//! (which is how a back-off set by another invocation is learnt). Slots are given back when
//! the last invocation of the process ends ([`OriginGate::invocation_finished`]); a process
//! that dies gives them back when its lease lapses ([`LEASE_TTL`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use pixpress_app::deadline::Deadline;
use pixpress_app::ports::OriginSlots;
use pixpress_domain::origin_slots::LeaseRequest;
use pixpress_fetch::{ControllerConfig, HostConcurrency, HostPermit};

/// How long a lease lasts unless renewed: a crashed invocation's slots come back after this.
pub const LEASE_TTL: Duration = Duration::from_secs(30);
/// Least time between two requests for more slots of one host.
pub const LEASE_RECHECK: Duration = Duration::from_millis(100);
/// Most time between two reads of a host's record while downloading from it.
pub const LEASE_REFRESH: Duration = Duration::from_secs(1);
/// How long a waiting download waits for a slot before it checks the lease and the deadline
/// again.
const SLOT_POLL: Duration = Duration::from_millis(250);
/// The back-off after a 429 or 503 that did not say how long (`Retry-After`).
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);
/// The longest back-off honoured; a longer `Retry-After` is cut to this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// Why no slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSlot {
    /// The host asked to be left alone for this long, longer than the invocation has left.
    BackedOff(Duration),
    /// The invocation's deadline came before a slot.
    Deadline,
}

#[derive(Debug, Default)]
struct Lease {
    granted: u32,
    expires_at: i64,
    checked_at: Option<Instant>,
    backoff_until: Option<i64>,
    refreshing: bool,
}

/// The download slots of one worker process. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct OriginGate<O> {
    hosts: HostConcurrency,
    slots: O,
    holder: String,
    cap: u32,
    leases: Arc<Mutex<HashMap<String, Lease>>>,
    active: Arc<AtomicUsize>,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

impl<O: OriginSlots> OriginGate<O> {
    /// Slots of at most `cap` per host across every process sharing `slots`.
    #[must_use]
    pub fn new(slots: O, cap: u32) -> Self {
        Self {
            hosts: HostConcurrency::new(ControllerConfig::with_max(cap as usize)),
            slots,
            holder: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
            cap,
            leases: Arc::default(),
            active: Arc::default(),
        }
    }

    /// The per-host controllers.
    #[must_use]
    pub fn hosts(&self) -> &HostConcurrency {
        &self.hosts
    }

    /// This process's holder id in the shared records.
    #[must_use]
    pub fn holder(&self) -> &str {
        &self.holder
    }

    fn with_lease<T>(&self, host: &str, f: impl FnOnce(&mut Lease) -> T) -> Option<T> {
        let mut leases = self.leases.lock().ok()?;
        Some(f(leases.entry(host.to_owned()).or_default()))
    }

    /// How long `host` is still backed off, if it is.
    fn backoff_left(&self, host: &str) -> Option<Duration> {
        let until = self.with_lease(host, |l| l.backoff_until).flatten()?;
        let left = until - now_ms();
        (left > 0).then(|| Duration::from_millis(left.unsigned_abs()))
    }

    /// Waits for a download slot of `host` that leaves `needed` before the deadline; waits out
    /// the host's back-off when the deadline allows.
    ///
    /// # Errors
    /// [`NoSlot`] when the back-off or the wait for a slot would run past the deadline.
    pub async fn acquire(
        &self,
        host: &str,
        deadline: Deadline,
        needed: Duration,
    ) -> Result<HostPermit, NoSlot> {
        loop {
            if let Some(wait) = self.backoff_left(host) {
                if !deadline.allows(wait + needed) {
                    return Err(NoSlot::BackedOff(wait));
                }
                tokio::time::sleep(wait).await;
                continue;
            }
            if !deadline.allows(needed) {
                return Err(NoSlot::Deadline);
            }
            self.refresh(host).await;
            if self.backoff_left(host).is_some() {
                continue;
            }
            if let Some(permit) = self.hosts.acquire_within(host, SLOT_POLL).await {
                return Ok(permit);
            }
        }
    }

    /// Asks for the slots `host`'s controller wants when the lease is short of them, nearly
    /// lapsed, or not read for [`LEASE_REFRESH`]; one request per host at a time.
    async fn refresh(&self, host: &str) {
        let want = self.hosts.wanted(host) as u32;
        let due = self.with_lease(host, |l| {
            let since = l.checked_at.map(|at| at.elapsed());
            let due = match since {
                None => true,
                Some(since) => {
                    (want > l.granted && since >= LEASE_RECHECK)
                        || since >= LEASE_REFRESH
                        || (l.granted > 0
                            && l.expires_at - now_ms()
                                < i64::try_from(LEASE_TTL.as_millis() / 2).unwrap_or(0))
                }
            };
            if due && !l.refreshing {
                l.refreshing = true;
                true
            } else {
                false
            }
        });
        if due != Some(true) {
            return;
        }
        self.lease(host, want).await;
    }

    async fn lease(&self, host: &str, want: u32) {
        let request = LeaseRequest {
            holder: &self.holder,
            want,
            cap: self.cap,
            ttl: LEASE_TTL,
        };
        // Boxed: the store's future (an SDK call in a retry loop) is deep, and it is awaited
        // inside every download's future.
        let result = Box::pin(self.slots.lease(host, request, Utc::now())).await;
        let granted = self.with_lease(host, |l| {
            l.refreshing = false;
            l.checked_at = Some(Instant::now());
            match &result {
                Ok(lease) => {
                    l.granted = lease.granted;
                    l.expires_at = lease.expires_at;
                    l.backoff_until = lease.backoff_until;
                }
                Err(e) => {
                    // Keep what is held: the lease outlives a failed renewal by half its time.
                    tracing::warn!(host, error = %e, "the origin's download slots could not be leased");
                }
            }
            l.granted
        });
        if let Some(granted) = granted {
            self.hosts.set_external_cap(host, granted as usize);
        }
    }

    /// Leaves `host` alone, in this process and every other, for `wait` (a 429 or 503's
    /// `Retry-After`, [`DEFAULT_BACKOFF`] when it gave none, at most [`MAX_BACKOFF`]).
    pub async fn back_off(&self, host: &str, wait: Option<Duration>) {
        let wait = wait.unwrap_or(DEFAULT_BACKOFF).min(MAX_BACKOFF);
        let until: DateTime<Utc> =
            Utc::now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::zero());
        let until_ms = until.timestamp_millis();
        self.with_lease(host, |l| {
            l.backoff_until = Some(l.backoff_until.map_or(until_ms, |b| b.max(until_ms)));
        });
        if let Err(e) = Box::pin(self.slots.back_off(host, until)).await {
            tracing::warn!(host, error = %e, "the origin's back-off could not be shared");
        }
    }

    /// An invocation of this process starts.
    pub fn invocation_started(&self) {
        self.active.fetch_add(1, Ordering::SeqCst);
    }

    /// An invocation of this process ended; the last one gives every lease back (a frozen
    /// Lambda instance must not keep slots other invocations could use).
    pub async fn invocation_finished(&self) {
        if self.active.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        let held: Vec<String> = self
            .leases
            .lock()
            .map(|leases| {
                leases
                    .iter()
                    .filter(|(_, l)| l.granted > 0)
                    .map(|(h, _)| h.clone())
                    .collect()
            })
            .unwrap_or_default();
        for host in held {
            if self.active.load(Ordering::SeqCst) > 0 {
                // A new invocation started meanwhile: it uses the leases.
                return;
            }
            self.with_lease(&host, |l| l.refreshing = true);
            self.lease(&host, 0).await;
        }
    }
}
