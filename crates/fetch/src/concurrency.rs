//! How many downloads one origin host gets at once: a controller per host that finds the
//! concurrency at which the host delivers the most, and holds there under variance.
//!
//! # The algorithm
//! A delivery-rate model after TCP BBR (Cardwell et al., "BBR Congestion Control",
//! draft-cardwell-iccrg-bbr-congestion-control, §4.3 "State machine"), with Little's law
//! (in flight = delivery rate × time in flight) in place of BBR's bandwidth-delay product, and
//! TCP's multiplicative decrease (RFC 5681 §3.1) on overload:
//!
//! 1. **Rounds.** Time is cut into rounds of at least `max(2 × slots, 8)` answers (about two
//!    response times). A round measures the delivery rate (answers per second) and the average
//!    downloads in flight (integrated over time); only a round in which the host was the limit
//!    — downloads were waiting for a slot at least half the time — teaches anything about the
//!    host (BBR's "application-limited" samples are skipped the same way).
//! 2. **Startup.** A host starts at [`ControllerConfig::initial`] (4: below the listen backlog
//!    of a small server) and gains one slot per answer while downloads wait, doubling per round
//!    like TCP slow start but opening at most two connections per answer. Startup ends once
//!    three rounds in a row failed to raise the rate by 25 % (BBR's "full pipe" test).
//! 3. **Cruise.** The window of the last ten useful rounds gives the *knee*: the fewest
//!    downloads in flight of any round that delivered at least 90 % of the window's best rate —
//!    by Little's law, the concurrency the host's best rate needs at its current response times
//!    (means, not minima: an origin whose answers are bimodal, cache hits and misses, needs as
//!    many downloads in flight as its mean response time asks for). The limit is the knee times
//!    a gain that cycles like BBR's ProbeBW (`1.5` to probe for more, `0.8` to find out whether
//!    fewer suffice, then `1.2` for six rounds). While more downloads deliver proportionally
//!    more the limit grows by 1.2 per round; at a plateau it stays within 20 % of the knee.
//! 4. **Overload.** A 429 or 503 (the origin says so), a round in which at least 30 % of
//!    attempts failed by timeout or a broken connection (one failure in ten is noise, not
//!    overload), or a round delivering less than half the window's best rate halves the limit,
//!    at most once per round, and sets a *ceiling* one below the concurrency that overloaded
//!    the host for [`CEILING_HOLD`]. The limit never goes below [`ControllerConfig::floor`].
//!
//! Everything here is pure: time comes in as arguments, so the controller is tested on
//! simulated origins (bimodal, heavy-tailed, drifting, overloaded, rate-limiting) without a
//! socket. [`HostConcurrency`] wraps one controller per host for async callers.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

pub use pixpress_domain::egress::Outcome;

/// How long the concurrency that overloaded a host stays out of reach.
pub const CEILING_HOLD: Duration = Duration::from_secs(60);

/// Rounds kept to find the knee.
const WINDOW: usize = 10;
/// Fewest answers in a round.
const MIN_ROUND: u32 = 8;
/// Startup continues while a round delivers this much more than the best so far (BBR: 25 %).
const STARTUP_GROWTH: f64 = 1.25;
/// Rounds without that growth that end startup (BBR: three).
const STARTUP_STALE_ROUNDS: u32 = 3;
/// A round is "near the best" when it delivers this share of the window's best rate.
const KNEE_SHARE: f64 = 0.9;
/// The cruise gains, one per round (BBR's ProbeBW cycle: probe up, drain, cruise).
const CYCLE: [f64; 8] = [1.5, 0.8, 1.2, 1.2, 1.2, 1.2, 1.2, 1.2];
/// Share of failed attempts in a round that means the host is overloaded.
const FAILURE_SHARE: f64 = 0.3;
/// Fewest failed attempts that can mean overload.
const MIN_FAILURES: u32 = 3;
/// A round below this share of the window's best rate means the host is falling behind.
const FALLING_SHARE: f64 = 0.5;
/// Share of a round with downloads waiting for a slot that makes it a measurement of the host.
const SATURATED_SHARE: f64 = 0.5;

/// Bounds of the per-host limit, in downloads in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControllerConfig {
    /// Limit of a host not seen before (default 4).
    pub initial: usize,
    /// The limit never goes below this (default 2).
    pub floor: usize,
    /// Nor above this (`ORIGIN_MAX_CONCURRENCY`, default 32).
    pub max: usize,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            initial: 4,
            floor: 2,
            max: 32,
        }
    }
}

impl ControllerConfig {
    /// The bounds with `max` as the most downloads in flight, the others lowered to fit.
    #[must_use]
    pub fn with_max(max: usize) -> Self {
        let max = max.max(1);
        let d = Self::default();
        Self {
            initial: d.initial.min(max),
            floor: d.floor.min(max),
            max,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Startup { best_rate: f64, stale: u32 },
    Cruise { round: usize },
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct RoundSample {
    rate: f64,
    in_flight: f64,
}

#[derive(Debug, Clone, Copy)]
struct Round {
    started: Instant,
    answers: u32,
    failures: u32,
    /// ∫ in flight dt, in download-seconds.
    in_flight_integral: f64,
    /// Time with downloads waiting while every slot was taken.
    saturated: Duration,
    /// The limit may grow this far during the round (startup doubles per round).
    growth_cap: f64,
    overload_seen: bool,
}

impl Round {
    fn new(now: Instant, limit: f64) -> Self {
        Self {
            started: now,
            answers: 0,
            failures: 0,
            in_flight_integral: 0.0,
            saturated: Duration::ZERO,
            growth_cap: limit * 2.0,
            overload_seen: false,
        }
    }
}

/// The concurrency controller of one host (see the module docs). Pure: every method takes the
/// current time.
#[derive(Debug, Clone)]
pub struct Controller {
    config: ControllerConfig,
    limit: f64,
    in_flight: usize,
    waiting: usize,
    /// A cap from outside (the host's share of a cross-invocation budget), in slots.
    external_cap: usize,
    phase: Phase,
    round: Round,
    last_event: Instant,
    window: VecDeque<RoundSample>,
    ceiling: Option<(f64, Instant)>,
    /// Rounds in a row that delivered less than fewer downloads did.
    falling: u32,
}

impl Controller {
    /// A controller for a host not seen before, at `now`.
    #[must_use]
    pub fn new(config: ControllerConfig, now: Instant) -> Self {
        let limit = config.initial.clamp(config.floor.max(1), config.max.max(1)) as f64;
        Self {
            config,
            limit,
            in_flight: 0,
            waiting: 0,
            external_cap: usize::MAX,
            phase: Phase::Startup {
                best_rate: 0.0,
                stale: 0,
            },
            round: Round::new(now, limit),
            last_event: now,
            window: VecDeque::with_capacity(WINDOW),
            ceiling: None,
            falling: 0,
        }
    }

    /// The limit, in downloads in flight (fractional; [`Controller::slots`] is what is granted).
    #[must_use]
    pub fn limit(&self) -> f64 {
        self.limit
    }

    /// Downloads that may be in flight now: the limit's floor, within the bounds and the
    /// external cap.
    #[must_use]
    pub fn slots(&self) -> usize {
        self.own_slots().min(self.external_cap)
    }

    /// The slots the controller itself wants, whatever the external cap.
    #[must_use]
    pub fn wanted(&self) -> usize {
        self.own_slots()
    }

    fn own_slots(&self) -> usize {
        (self.limit.floor() as usize).clamp(self.config.floor.max(1), self.config.max.max(1))
    }

    /// Downloads in flight.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// `true` once startup has ended.
    #[must_use]
    pub fn cruising(&self) -> bool {
        matches!(self.phase, Phase::Cruise { .. })
    }

    /// Caps the slots from outside (a share of a budget held across processes); `usize::MAX`
    /// lifts the cap. While the cap binds, the host is not the limit, so rounds teach nothing.
    pub fn set_external_cap(&mut self, now: Instant, cap: usize) {
        self.advance(now);
        self.external_cap = cap;
    }

    /// Takes a slot if one is free: `Some(downloads in flight, this one included)`, to be
    /// handed back to [`Controller::release`].
    pub fn try_acquire(&mut self, now: Instant) -> Option<usize> {
        self.advance(now);
        if self.in_flight < self.slots() {
            self.in_flight += 1;
            Some(self.in_flight)
        } else {
            None
        }
    }

    /// A caller starts waiting for a slot.
    pub fn start_waiting(&mut self, now: Instant) {
        self.advance(now);
        self.waiting += 1;
    }

    /// A caller stopped waiting for a slot.
    pub fn stop_waiting(&mut self, now: Instant) {
        self.advance(now);
        self.waiting = self.waiting.saturating_sub(1);
    }

    /// Gives a slot back with the download's outcome and the downloads that were in flight
    /// when it started (what [`Controller::try_acquire`] answered), and adapts the limit.
    pub fn release(&mut self, now: Instant, outcome: Outcome, started_with: usize) {
        self.advance(now);
        self.in_flight = self.in_flight.saturating_sub(1);
        match outcome {
            Outcome::Answered => {
                self.round.answers += 1;
                if matches!(self.phase, Phase::Startup { stale: 0, .. }) && self.waiting > 0 {
                    // Slow start: one more slot per answer while downloads wait, and while the
                    // last round showed that more slots delivered more.
                    self.limit = (self.limit + 1.0).min(self.round.growth_cap);
                    self.limit = self.bounded(self.limit, now);
                }
            }
            Outcome::Overloaded => {
                self.round.failures += 1;
                // The origin refused this one: it coped with the others then in flight.
                self.decrease(now, started_with.saturating_sub(1) as f64);
            }
            Outcome::Failed => self.round.failures += 1,
            Outcome::Neutral => {}
        }
        let attempts = self.round.answers + self.round.failures;
        if attempts >= MIN_ROUND.max(2 * self.own_slots() as u32) {
            self.end_round(now);
        }
    }

    /// Accumulates in-flight and saturation time up to `now`.
    fn advance(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last_event);
        self.last_event = self.last_event.max(now);
        self.round.in_flight_integral += self.in_flight as f64 * dt.as_secs_f64();
        // The host is the limit only while its own slots (not an outside cap) are all taken and
        // more downloads wait.
        if self.waiting > 0
            && self.in_flight >= self.own_slots()
            && self.own_slots() <= self.external_cap
        {
            self.round.saturated += dt;
        }
    }

    fn ceiling_at(&self, now: Instant) -> Option<f64> {
        self.ceiling
            .filter(|(_, at)| now.saturating_duration_since(*at) < CEILING_HOLD)
            .map(|(c, _)| c)
    }

    fn bounded(&self, limit: f64, now: Instant) -> f64 {
        let mut max = self.config.max.max(1) as f64;
        if let Some(ceiling) = self.ceiling_at(now) {
            max = max.min(ceiling);
        }
        let floor = self.config.floor.max(1) as f64;
        limit.min(max).max(floor)
    }

    /// The fewest downloads in flight of a round near the window's best rate.
    fn knee(&self) -> Option<f64> {
        let best = self.window.iter().map(|s| s.rate).fold(0.0, f64::max);
        self.window
            .iter()
            .filter(|s| s.rate >= KNEE_SHARE * best)
            .map(|s| s.in_flight)
            .reduce(f64::min)
    }

    /// The knee among the rounds with at most `in_flight` downloads in flight.
    fn knee_below(&self, in_flight: f64) -> Option<f64> {
        let below = self.window.iter().filter(|s| s.in_flight <= in_flight);
        let best = below.clone().map(|s| s.rate).fold(0.0, f64::max);
        below
            .filter(|s| s.rate >= KNEE_SHARE * best)
            .map(|s| s.in_flight)
            .reduce(f64::min)
    }

    /// The origin said it is overloaded, or too many attempts failed: halve the limit (once per
    /// round) and keep it at or below the concurrency the origin still coped with.
    fn decrease(&mut self, now: Instant, coped_with: f64) {
        let floor = self.config.floor.max(1) as f64;
        let coped_with = coped_with.floor().max(floor);
        if self.round.overload_seen {
            // More answers of the same burst: each one lowers the ceiling to what was in flight
            // before it started, so the ceiling ends where the origin's own limit is.
            if let Some((ceiling, at)) = self.ceiling.as_mut() {
                *ceiling = ceiling.min(coped_with);
                *at = now;
            }
            self.limit = self.bounded(self.limit, now);
            return;
        }
        self.ceiling = Some((coped_with, now));
        self.limit = self.bounded(self.limit * 0.5, now);
        self.phase = Phase::Cruise { round: 0 };
        self.window.clear();
        self.round = Round::new(now, self.limit);
        self.round.overload_seen = true;
    }

    fn end_round(&mut self, now: Instant) {
        let round = self.round;
        let elapsed = now.saturating_duration_since(round.started).as_secs_f64();
        self.round = Round::new(now, self.limit);
        if elapsed <= 0.0 {
            return;
        }
        let attempts = round.answers + round.failures;
        let in_flight = round.in_flight_integral / elapsed;
        if !round.overload_seen
            && round.failures >= MIN_FAILURES
            && f64::from(round.failures) >= FAILURE_SHARE * f64::from(attempts)
        {
            self.decrease(now, in_flight);
            return;
        }
        if round.saturated.as_secs_f64() < SATURATED_SHARE * elapsed {
            // Demand, not the host, set this round's pace.
            self.falling = 0;
            return;
        }
        let sample = RoundSample {
            rate: f64::from(round.answers) / elapsed,
            in_flight,
        };
        // More downloads in flight delivering less than half of what fewer delivered: past the
        // origin's cliff (a listen backlog overflowing, a server thrashing). Twice in a row, so
        // one unlucky round of a heavy-tailed origin is not taken for it.
        let fewer_did_better = self
            .window
            .iter()
            .any(|s| s.in_flight <= in_flight && sample.rate < FALLING_SHARE * s.rate);
        if fewer_did_better && !round.overload_seen {
            self.falling += 1;
            if self.falling >= 2 {
                self.falling = 0;
                let knee = self.knee_below(in_flight).unwrap_or(self.limit * 0.5);
                self.ceiling = Some(((in_flight - 1.0).max(knee), now));
                self.phase = Phase::Cruise { round: 0 };
                self.limit = self.bounded(knee, now);
                self.round.growth_cap = self.limit * 2.0;
            }
            return;
        }
        self.falling = 0;
        if self.window.len() == WINDOW {
            self.window.pop_front();
        }
        self.window.push_back(sample);
        match self.phase {
            Phase::Startup { best_rate, stale } => {
                if sample.rate >= STARTUP_GROWTH * best_rate {
                    self.phase = Phase::Startup {
                        best_rate: sample.rate,
                        stale: 0,
                    };
                } else if stale + 1 >= STARTUP_STALE_ROUNDS {
                    self.phase = Phase::Cruise { round: 0 };
                    self.limit = self.bounded(self.knee().unwrap_or(self.limit) * CYCLE[2], now);
                } else {
                    self.phase = Phase::Startup {
                        best_rate,
                        stale: stale + 1,
                    };
                }
            }
            Phase::Cruise { round } => {
                let next = round + 1;
                self.phase = Phase::Cruise { round: next };
                let knee = self.knee().unwrap_or(self.limit);
                self.limit = self.bounded(knee * CYCLE[next % CYCLE.len()], now);
            }
        }
        self.round.growth_cap = self.limit * 2.0;
    }
}

#[derive(Debug)]
struct HostState {
    controller: Controller,
    available: Arc<Notify>,
}

/// One [`Controller`] per host, for async callers. Share one per process (clones share state).
#[derive(Debug, Clone)]
pub struct HostConcurrency {
    hosts: Arc<Mutex<HashMap<String, HostState>>>,
    config: ControllerConfig,
}

impl Default for HostConcurrency {
    fn default() -> Self {
        Self::new(ControllerConfig::default())
    }
}

/// A download slot of one host; give it back with [`HostPermit::finish`] (dropping it is
/// [`Outcome::Neutral`]).
#[derive(Debug)]
pub struct HostPermit {
    limits: HostConcurrency,
    host: String,
    started: Instant,
    started_with: usize,
    done: bool,
}

impl HostPermit {
    /// When the download started (after the slot was granted).
    #[must_use]
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The host this slot belongs to.
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Returns the slot and adapts the host's limit to `outcome`.
    pub fn finish(mut self, outcome: Outcome) {
        self.done = true;
        self.limits.release(&self.host, outcome, self.started_with);
    }
}

impl Drop for HostPermit {
    fn drop(&mut self) {
        if !self.done {
            self.limits
                .release(&self.host, Outcome::Neutral, self.started_with);
        }
    }
}

impl HostConcurrency {
    /// Limits within `config`.
    #[must_use]
    pub fn new(config: ControllerConfig) -> Self {
        Self {
            hosts: Arc::default(),
            config,
        }
    }

    /// The bounds every host's limit keeps to.
    #[must_use]
    pub fn config(&self) -> ControllerConfig {
        self.config
    }

    fn with_host<T>(&self, host: &str, f: impl FnOnce(&mut HostState) -> T) -> Option<T> {
        let mut hosts = self.hosts.lock().ok()?;
        let state = hosts.entry(host.to_owned()).or_insert_with(|| HostState {
            controller: Controller::new(self.config, Instant::now()),
            available: Arc::new(Notify::new()),
        });
        Some(f(state))
    }

    /// The current limit of `host` (the initial one for a host not seen yet).
    #[must_use]
    pub fn limit(&self, host: &str) -> f64 {
        self.with_host(host, |s| s.controller.limit())
            .unwrap_or(self.config.initial as f64)
    }

    /// Slots of `host` now (its limit within the bounds and the external cap).
    #[must_use]
    pub fn slots(&self, host: &str) -> usize {
        self.with_host(host, |s| s.controller.slots())
            .unwrap_or(self.config.initial)
    }

    /// Slots `host`'s controller wants, whatever its external cap.
    #[must_use]
    pub fn wanted(&self, host: &str) -> usize {
        self.with_host(host, |s| s.controller.wanted())
            .unwrap_or(self.config.initial)
    }

    /// Downloads of `host` in flight.
    #[must_use]
    pub fn in_flight(&self, host: &str) -> usize {
        self.with_host(host, |s| s.controller.in_flight())
            .unwrap_or(0)
    }

    /// Caps `host`'s slots from outside (see [`Controller::set_external_cap`]); waiters are
    /// woken when the cap rises.
    pub fn set_external_cap(&self, host: &str, cap: usize) {
        let notify = self.with_host(host, |s| {
            s.controller.set_external_cap(Instant::now(), cap);
            s.available.clone()
        });
        if let Some(notify) = notify {
            notify.notify_waiters();
        }
    }

    /// Takes a slot of `host` if one is free now.
    #[must_use]
    pub fn try_acquire(&self, host: &str) -> Option<HostPermit> {
        let started_with = self.with_host(host, |s| s.controller.try_acquire(Instant::now()))??;
        Some(self.permit(host, started_with))
    }

    fn permit(&self, host: &str, started_with: usize) -> HostPermit {
        HostPermit {
            limits: self.clone(),
            host: host.to_owned(),
            started: Instant::now(),
            started_with,
            done: false,
        }
    }

    /// Waits for a slot of `host`, or until `patience` passes (`None` then).
    pub async fn acquire_within(&self, host: &str, patience: Duration) -> Option<HostPermit> {
        let give_up = Instant::now() + patience;
        let mut waiting = false;
        loop {
            let Some((granted, notified)) = self.with_host(host, |s| {
                let now = Instant::now();
                if let Some(started_with) = s.controller.try_acquire(now) {
                    if waiting {
                        s.controller.stop_waiting(now);
                    }
                    return (Some(started_with), None);
                }
                if !waiting {
                    s.controller.start_waiting(now);
                }
                (None, Some(s.available.clone().notified_owned()))
            }) else {
                break None;
            };
            if let Some(started_with) = granted {
                break Some(self.permit(host, started_with));
            }
            waiting = true;
            let Some(notified) = notified else {
                break None;
            };
            if tokio::time::timeout_at(give_up.into(), notified)
                .await
                .is_err()
            {
                self.with_host(host, |s| s.controller.stop_waiting(Instant::now()));
                break None;
            }
        }
    }

    /// Waits for a slot of `host`.
    pub async fn acquire(&self, host: &str) -> HostPermit {
        loop {
            if let Some(permit) = self.acquire_within(host, Duration::from_secs(3600)).await {
                return permit;
            }
        }
    }

    fn release(&self, host: &str, outcome: Outcome, started_with: usize) {
        let notify = self.with_host(host, |s| {
            let before = s.controller.slots();
            s.controller.release(Instant::now(), outcome, started_with);
            let after = s.controller.slots();
            if after != before {
                tracing::debug!(
                    host,
                    slots = after,
                    limit = s.controller.limit(),
                    cruising = s.controller.cruising(),
                    ?outcome,
                    "download limit changed"
                );
            }
            s.available.clone()
        });
        if let Some(notify) = notify {
            // Every waiter re-checks: the limit may have grown by more than one slot.
            notify.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests;
