//! Download concurrency that adapts per origin host, instead of one fixed global cap.
//!
//! Each host gets its own limit of downloads in flight, adjusted after every download by the
//! gradient of its response time (the approach of Netflix's `concurrency-limits`, "Gradient2"):
//! the limit grows while answers come as fast as the fastest seen — latency is being hidden, so
//! more parallel downloads cost nothing — and shrinks in proportion when they slow down (the
//! origin is queueing our requests), or by half on an error that signals overload (timeouts,
//! connection failures, 429, 5xx). A distant CDN at 100 ms gets dozens of downloads in flight; a
//! small shop's server that slows down under load gets few.
//!
//! Response time here is the time to the response head (time to first byte), which does not
//! grow with the image's size.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Bounds of the per-host limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConcurrencyConfig {
    /// Limit of a host not seen before.
    pub initial: f64,
    /// The limit never goes below this.
    pub min: f64,
    /// Nor above this (`WORKER_CONCURRENCY`).
    pub max: f64,
}

impl Default for ConcurrencyConfig {
    fn default() -> Self {
        Self {
            initial: 16.0,
            min: 1.0,
            max: 64.0,
        }
    }
}

#[derive(Debug)]
struct HostState {
    limit: f64,
    in_flight: usize,
    /// Fastest response time seen recently (the "no queueing" baseline).
    min_rtt: Option<Duration>,
    /// Smoothed recent response time.
    rtt: Option<Duration>,
    samples: u64,
    available: Arc<Notify>,
}

impl HostState {
    fn new(initial: f64) -> Self {
        Self {
            limit: initial,
            in_flight: 0,
            min_rtt: None,
            rtt: None,
            samples: 0,
            available: Arc::new(Notify::new()),
        }
    }
}

/// Per-host download limits. Share one per process (clones share state).
#[derive(Debug, Clone, Default)]
pub struct HostConcurrency {
    hosts: Arc<Mutex<HashMap<String, HostState>>>,
    config: ConcurrencyConfig,
}

/// How a download ended, for the limit of its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The response head came after `Duration`.
    Answered(Duration),
    /// The origin is overloaded or unreachable (timeout, connection failure, 429, 5xx).
    Overloaded,
    /// Nothing to learn (a 404, a refused address).
    Neutral,
}

/// A download slot for one host; give it back with [`HostPermit::finish`] (dropping it is
/// [`Outcome::Neutral`]).
#[derive(Debug)]
pub struct HostPermit {
    limits: HostConcurrency,
    host: String,
    started: Instant,
    done: bool,
}

impl HostPermit {
    /// When the download started (after the slot was granted).
    #[must_use]
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Returns the slot and adjusts the host's limit by `outcome`.
    pub fn finish(mut self, outcome: Outcome) {
        self.done = true;
        self.limits.release(&self.host, outcome);
    }
}

impl Drop for HostPermit {
    fn drop(&mut self) {
        if !self.done {
            self.limits.release(&self.host, Outcome::Neutral);
        }
    }
}

impl HostConcurrency {
    /// Limits within `config`.
    #[must_use]
    pub fn new(config: ConcurrencyConfig) -> Self {
        Self {
            hosts: Arc::default(),
            config,
        }
    }

    /// The current limit of `host` (the initial one for a host not seen yet).
    #[must_use]
    pub fn limit(&self, host: &str) -> f64 {
        self.hosts
            .lock()
            .ok()
            .and_then(|h| h.get(host).map(|s| s.limit))
            .unwrap_or(self.config.initial)
    }

    /// Waits for a download slot for `host`.
    pub async fn acquire(&self, host: &str) -> HostPermit {
        loop {
            let notified = {
                let Ok(mut hosts) = self.hosts.lock() else {
                    break;
                };
                let state = hosts
                    .entry(host.to_owned())
                    .or_insert_with(|| HostState::new(self.config.initial));
                // The limit is fractional; the slots are its floor (at least one).
                if (state.in_flight as f64) < state.limit.floor().max(1.0) {
                    state.in_flight += 1;
                    break;
                }
                let available = state.available.clone();
                let notified = available.notified_owned();
                drop(hosts);
                notified
            };
            notified.await;
        }
        HostPermit {
            limits: self.clone(),
            host: host.to_owned(),
            started: Instant::now(),
            done: false,
        }
    }

    fn release(&self, host: &str, outcome: Outcome) {
        let Ok(mut hosts) = self.hosts.lock() else {
            return;
        };
        let Some(state) = hosts.get_mut(host) else {
            return;
        };
        state.in_flight = state.in_flight.saturating_sub(1);
        let (min, max) = (self.config.min, self.config.max);
        match outcome {
            Outcome::Answered(rtt) => {
                state.samples += 1;
                // The baseline forgets slowly (every 500 answers it is re-learnt from the
                // current smoothed time), so a host that got faster or slower is re-measured.
                if state.samples % 500 == 0 {
                    state.min_rtt = state.rtt;
                }
                let min_rtt = *state.min_rtt.get_or_insert(rtt);
                if rtt < min_rtt {
                    state.min_rtt = Some(rtt);
                }
                let smoothed = match state.rtt {
                    None => rtt,
                    Some(previous) => previous.mul_f64(0.8) + rtt.mul_f64(0.2),
                };
                state.rtt = Some(smoothed);
                let baseline = state.min_rtt.unwrap_or(rtt).as_secs_f64().max(1e-4);
                // Tolerate twice the baseline before calling it queueing: small responses jitter.
                let gradient = (2.0 * baseline / smoothed.as_secs_f64().max(1e-4)).clamp(0.5, 1.0);
                // Grow by half the square root of the limit per answer while there is no
                // queueing (8 → 64 in about 20 answers); shrink in proportion to the queueing.
                let target = state.limit * gradient + 0.5 * state.limit.sqrt();
                state.limit = (state.limit * 0.5 + target * 0.5).clamp(min, max);
            }
            Outcome::Overloaded => state.limit = (state.limit * 0.5).clamp(min, max),
            Outcome::Neutral => {}
        }
        state.available.notify_waiters();
        state.available.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HostConcurrency {
        HostConcurrency::new(ConcurrencyConfig::default())
    }

    #[tokio::test]
    async fn a_steady_distant_origin_gets_more_downloads_in_flight() {
        let limits = limits();
        for _ in 0..200 {
            let permit = limits.acquire("cdn.example").await;
            permit.finish(Outcome::Answered(Duration::from_millis(100)));
        }
        assert_eq!(limits.limit("cdn.example"), 64.0);
    }

    #[tokio::test]
    async fn an_origin_that_slows_under_load_gets_fewer() {
        let limits = limits();
        for _ in 0..20 {
            limits
                .acquire("shop.example")
                .await
                .finish(Outcome::Answered(Duration::from_millis(20)));
        }
        let grown = limits.limit("shop.example");
        for _ in 0..60 {
            limits
                .acquire("shop.example")
                .await
                .finish(Outcome::Answered(Duration::from_millis(400)));
        }
        assert!(
            limits.limit("shop.example") < grown / 2.0,
            "{}",
            limits.limit("shop.example")
        );
    }

    #[tokio::test]
    async fn errors_halve_the_limit_and_other_hosts_are_unaffected() {
        let limits = limits();
        limits
            .acquire("a.example")
            .await
            .finish(Outcome::Overloaded);
        assert_eq!(limits.limit("a.example"), 8.0);
        assert_eq!(limits.limit("b.example"), 16.0);
    }

    #[tokio::test]
    async fn no_more_than_the_limit_are_in_flight() {
        let limits = HostConcurrency::new(ConcurrencyConfig {
            initial: 2.0,
            min: 1.0,
            max: 2.0,
        });
        let first = limits.acquire("h").await;
        let _second = limits.acquire("h").await;
        let third = tokio::time::timeout(Duration::from_millis(50), limits.acquire("h")).await;
        assert!(third.is_err(), "a third download must wait");
        drop(first);
        let third = tokio::time::timeout(Duration::from_millis(500), limits.acquire("h")).await;
        assert!(third.is_ok(), "a slot was given back");
    }
}
