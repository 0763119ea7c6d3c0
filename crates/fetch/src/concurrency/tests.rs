//! The controller on simulated origins: a discrete-event simulation in virtual time, no
//! sockets. Each origin is a model of a kind of image server; the client is a pool of
//! download tasks (the rows of a batch) that take a slot, download, give the slot back and,
//! where the client's CPU is the bottleneck, queue for compression before the next download.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use super::*;

/// How an origin answers one request.
trait Origin {
    /// A request arriving at `t` (seconds since the start) while `in_flight` requests, this one
    /// included, are at the origin: when it answers (seconds after `t`) and how.
    fn serve(&mut self, t: f64, in_flight: usize, rng: &mut fastrand::Rng) -> (f64, Outcome);
    /// Seconds the origin asks clients to wait after an overload answer (`Retry-After`).
    fn retry_after(&self) -> f64 {
        0.0
    }
}

/// Every answer after the same delay; unlimited capacity (a distant CDN).
struct Constant(f64);
impl Origin for Constant {
    fn serve(&mut self, _: f64, _: usize, _: &mut fastrand::Rng) -> (f64, Outcome) {
        (self.0, Outcome::Answered)
    }
}

/// Every other answer after `miss` seconds, the rest after 1 ms (a CDN's misses and hits).
struct HitMiss {
    miss: f64,
    count: u64,
}
impl Origin for HitMiss {
    fn serve(&mut self, _: f64, _: usize, _: &mut fastrand::Rng) -> (f64, Outcome) {
        self.count += 1;
        let latency = if self.count.is_multiple_of(2) {
            self.miss
        } else {
            0.001
        };
        (latency, Outcome::Answered)
    }
}

/// Log-normal response times with the given median and 99th percentile.
struct LogNormal {
    median: f64,
    p99: f64,
}
impl Origin for LogNormal {
    fn serve(&mut self, _: f64, _: usize, rng: &mut fastrand::Rng) -> (f64, Outcome) {
        let sigma = (self.p99 / self.median).ln() / 2.326;
        // Box–Muller.
        let (u1, u2) = (rng.f64().max(1e-12), rng.f64());
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        (
            (self.median.ln() + sigma * z).exp().min(19.0),
            Outcome::Answered,
        )
    }
}

/// Response times that drift from `from` to `to` seconds over `over` seconds.
struct Drifting {
    from: f64,
    to: f64,
    over: f64,
}
impl Origin for Drifting {
    fn serve(&mut self, t: f64, _: usize, _: &mut fastrand::Rng) -> (f64, Outcome) {
        let share = (t / self.over).min(1.0);
        (self.from + (self.to - self.from) * share, Outcome::Answered)
    }
}

/// `servers` workers, each busy `service` seconds per request, behind a FIFO queue and
/// `rtt` seconds of network; a connection beyond `backlog` waiting ones is dropped by the
/// kernel and retried after 1 s (a SYN retransmit); past `timeout` seconds a request fails.
struct Server {
    servers: Vec<f64>,
    service: f64,
    rtt: f64,
    backlog: usize,
    timeout: f64,
}
impl Server {
    fn new(servers: usize, service: f64, backlog: usize) -> Self {
        Self {
            servers: vec![0.0; servers],
            service,
            rtt: 0.0005,
            backlog,
            timeout: 20.0,
        }
    }
}
impl Origin for Server {
    fn serve(&mut self, t: f64, in_flight: usize, _: &mut fastrand::Rng) -> (f64, Outcome) {
        // The retransmitted SYN is accepted a second later; the workers serve others meanwhile.
        let dropped = if in_flight > self.servers.len() + self.backlog {
            1.0
        } else {
            0.0
        };
        let (i, free) = self
            .servers
            .iter()
            .copied()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or((0, 0.0));
        let done = t.max(free) + self.service;
        self.servers[i] = done;
        let latency = done - t + self.rtt + dropped;
        if latency > self.timeout {
            (self.timeout, Outcome::Failed)
        } else {
            (latency, Outcome::Answered)
        }
    }
}

/// Answers after `latency`, but 429 with `Retry-After: 1` beyond `max` requests in flight.
struct RateLimited {
    max: usize,
    latency: f64,
}
impl Origin for RateLimited {
    fn serve(&mut self, _: f64, in_flight: usize, _: &mut fastrand::Rng) -> (f64, Outcome) {
        if in_flight > self.max {
            (0.001, Outcome::Overloaded)
        } else {
            (self.latency, Outcome::Answered)
        }
    }
    fn retry_after(&self) -> f64 {
        1.0
    }
}

/// Answers after `latency`; one connection in `every` is reset instead.
struct Resetting {
    latency: f64,
    every: u64,
    count: u64,
}
impl Origin for Resetting {
    fn serve(&mut self, _: f64, _: usize, _: &mut fastrand::Rng) -> (f64, Outcome) {
        self.count += 1;
        if self.count.is_multiple_of(self.every) {
            (self.latency / 2.0, Outcome::Failed)
        } else {
            (self.latency, Outcome::Answered)
        }
    }
}

/// The client: `tasks` downloads wanted at once; after each answer a task spends `cpu`
/// seconds on one of `cores` (compression) before it wants the next download.
#[derive(Clone, Copy)]
struct Client {
    tasks: usize,
    cpu: f64,
    cores: usize,
}

const UNLIMITED: Client = Client {
    tasks: 64,
    cpu: 0.0,
    cores: 1,
};

#[derive(Debug)]
struct Report {
    /// Answers per second over the second half of the run.
    rate: f64,
    /// Most requests at the origin at once.
    peak: usize,
    /// Mean requests in flight over the second half.
    mean_in_flight: f64,
    /// Overload answers (429, 503) over the whole run.
    overloads: u32,
    /// Failed requests over the whole run.
    failures: u32,
}

enum Event {
    Answer(usize, Outcome, usize),
    CpuDone(usize),
    Wake,
}

/// An event at a time (seconds); earlier first, then in the order scheduled.
struct Scheduled(f64, u64, Event);
impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

/// Runs `client` against `origin` for `seconds` of virtual time.
fn simulate(origin: &mut dyn Origin, client: Client, seconds: f64) -> Report {
    simulate_with(origin, client, seconds, ControllerConfig::default())
}

fn simulate_with(
    origin: &mut dyn Origin,
    client: Client,
    seconds: f64,
    config: ControllerConfig,
) -> Report {
    let base = Instant::now();
    let at = |t: f64| base + Duration::from_secs_f64(t);
    let mut rng = fastrand::Rng::with_seed(7);
    let mut controller = Controller::new(config, base);
    let mut events: BinaryHeap<Reverse<Scheduled>> = BinaryHeap::new();
    let mut sequence = 0u64;
    let mut schedule = |events: &mut BinaryHeap<Reverse<Scheduled>>, t: f64, event: Event| {
        sequence += 1;
        events.push(Reverse(Scheduled(t, sequence, event)));
    };
    let mut waiting: VecDeque<usize> = (0..client.tasks).collect();
    for _ in 0..client.tasks {
        controller.start_waiting(base);
    }
    let mut cpu_free = vec![0.0f64; client.cores.max(1)];
    let mut backoff_until = 0.0f64;
    let mut at_origin = 0usize;
    let mut report = Report {
        rate: 0.0,
        peak: 0,
        mean_in_flight: 0.0,
        overloads: 0,
        failures: 0,
    };
    let (mut answers_late, mut in_flight_integral, mut last_t) = (0u64, 0.0f64, 0.0f64);
    let half = seconds / 2.0;
    let mut t = 0.0f64;
    loop {
        // Start every download a slot is free for (none while the origin asked us to wait).
        while t >= backoff_until && !waiting.is_empty() {
            let Some(started_with) = controller.try_acquire(at(t)) else {
                break;
            };
            let task = waiting.pop_front().unwrap_or_default();
            controller.stop_waiting(at(t));
            at_origin += 1;
            report.peak = report.peak.max(at_origin);
            let (latency, outcome) = origin.serve(t, at_origin, &mut rng);
            schedule(
                &mut events,
                t + latency,
                Event::Answer(task, outcome, started_with),
            );
        }
        let Some(Reverse(Scheduled(next, _, event))) = events.pop() else {
            break;
        };
        if next > seconds {
            break;
        }
        if next > half {
            in_flight_integral += controller.in_flight() as f64 * (next - last_t.max(half));
        }
        last_t = next;
        t = next;
        match event {
            Event::Answer(task, outcome, started_with) => {
                at_origin -= 1;
                controller.release(at(t), outcome, started_with);
                match outcome {
                    Outcome::Answered => {
                        if t > half {
                            answers_late += 1;
                        }
                        if client.cpu > 0.0 {
                            let (core, free) = cpu_free
                                .iter()
                                .copied()
                                .enumerate()
                                .min_by(|a, b| a.1.total_cmp(&b.1))
                                .unwrap_or((0, 0.0));
                            let done = t.max(free) + client.cpu;
                            cpu_free[core] = done;
                            schedule(&mut events, done, Event::CpuDone(task));
                            continue;
                        }
                    }
                    Outcome::Overloaded => {
                        report.overloads += 1;
                        backoff_until = backoff_until.max(t + origin.retry_after());
                        schedule(&mut events, backoff_until, Event::Wake);
                    }
                    Outcome::Failed => report.failures += 1,
                    Outcome::Neutral => {}
                }
                waiting.push_back(task);
                controller.start_waiting(at(t));
            }
            Event::CpuDone(task) => {
                waiting.push_back(task);
                controller.start_waiting(at(t));
            }
            Event::Wake => {}
        }
    }
    report.rate = answers_late as f64 / half;
    report.mean_in_flight = in_flight_integral / half;
    report
}

/// The best a client limited to 32 downloads at once could do against an origin whose
/// answers take `mean` seconds on average.
fn ideal(mean: f64) -> f64 {
    32.0 / mean
}

#[test]
fn a_distant_cdn_gets_every_download_the_cap_allows() {
    let report = simulate(&mut Constant(0.1), UNLIMITED, 60.0);
    assert!(report.rate >= 0.9 * ideal(0.1), "{report:?}");
    assert!(report.peak <= 32, "{report:?}");
}

#[test]
fn a_cdn_mixing_hits_and_misses_is_not_mistaken_for_a_queue() {
    // The old controller took every miss for queueing behind the hits and fell to one or two
    // downloads at once.
    let report = simulate(
        &mut HitMiss {
            miss: 0.1,
            count: 0,
        },
        UNLIMITED,
        60.0,
    );
    assert!(report.rate >= 0.8 * ideal(0.0505), "{report:?}");
    let report = simulate(
        &mut HitMiss {
            miss: 0.04,
            count: 0,
        },
        UNLIMITED,
        60.0,
    );
    assert!(report.rate >= 0.8 * ideal(0.0205), "{report:?}");
}

#[test]
fn heavy_tailed_response_times_keep_the_downloads_in_flight() {
    // Median 50 ms, p99 1 s: the mean is about 115 ms.
    let report = simulate(
        &mut LogNormal {
            median: 0.05,
            p99: 1.0,
        },
        UNLIMITED,
        120.0,
    );
    assert!(report.mean_in_flight >= 24.0, "{report:?}");
    assert!(report.rate >= 0.7 * ideal(0.115), "{report:?}");
}

#[test]
fn an_origin_that_slows_down_without_queueing_keeps_its_rate() {
    let report = simulate(
        &mut Drifting {
            from: 0.02,
            to: 0.2,
            over: 60.0,
        },
        UNLIMITED,
        120.0,
    );
    assert!(report.rate >= 0.8 * ideal(0.2), "{report:?}");
}

#[test]
fn a_small_server_is_held_near_its_knee_and_its_backlog_never_overflows_for_long() {
    // Two workers of 5 ms each (400 answers/s at most), five connections of backlog: beyond
    // seven at once, connections wait a second for a SYN retransmit.
    let mut server = Server::new(2, 0.005, 5);
    let report = simulate(&mut server, UNLIMITED, 60.0);
    assert!(report.rate >= 0.9 * 400.0, "{report:?}");
    assert!(report.mean_in_flight <= 8.0, "{report:?}");
}

#[test]
fn a_busy_server_is_not_pushed_into_timeouts() {
    // One worker, 50 ms per request: 20 answers/s whatever the concurrency.
    let mut server = Server::new(1, 0.05, 1000);
    let report = simulate(&mut server, UNLIMITED, 120.0);
    assert!(report.rate >= 0.9 * 20.0, "{report:?}");
    assert_eq!(report.failures, 0, "{report:?}");
    assert!(report.mean_in_flight <= 12.0, "{report:?}");
}

#[test]
fn a_rate_limiting_origin_is_overloaded_only_while_its_limit_is_found() {
    let report = simulate(
        &mut RateLimited {
            max: 8,
            latency: 0.02,
        },
        UNLIMITED,
        60.0,
    );
    // 429s come only in the first burst, while the origin's limit is unknown.
    assert!(report.overloads <= 8, "{report:?}");
    assert!(report.rate >= 0.75 * 8.0 / 0.02, "{report:?}");
}

#[test]
fn one_reset_connection_in_ten_is_noise_not_overload() {
    let report = simulate(
        &mut Resetting {
            latency: 0.05,
            every: 10,
            count: 0,
        },
        UNLIMITED,
        60.0,
    );
    assert!(report.mean_in_flight >= 24.0, "{report:?}");
}

#[test]
fn when_compression_is_the_bottleneck_few_downloads_stay_in_flight() {
    // 150 images/s of CPU; the origin answers in 20 ms, so 3 downloads at once feed it.
    let client = Client {
        tasks: 40,
        cpu: 2.0 / 150.0,
        cores: 2,
    };
    let report = simulate(&mut Constant(0.02), client, 60.0);
    assert!(report.rate >= 0.95 * 150.0, "{report:?}");
    assert!(report.mean_in_flight <= 12.0, "{report:?}");
}

#[test]
fn a_new_host_starts_with_four_downloads_and_never_exceeds_the_cap() {
    let base = Instant::now();
    let mut controller = Controller::new(ControllerConfig::default(), base);
    let granted = (0..10)
        .filter(|_| controller.try_acquire(base).is_some())
        .count();
    assert_eq!(granted, 4);
    let report = simulate_with(
        &mut Constant(0.05),
        UNLIMITED,
        30.0,
        ControllerConfig::with_max(12),
    );
    assert_eq!(report.peak, 12, "{report:?}");
}

/// Every 10 ms, everything in flight is answered and every free slot taken again: the rate
/// grows with the slots, as from an origin with capacity to spare.
fn tick(controller: &mut Controller, t: &mut Instant, ticks: usize) {
    for _ in 0..ticks {
        while controller.try_acquire(*t).is_some() {}
        *t += Duration::from_millis(10);
        for _ in 0..controller.in_flight() {
            controller.release(*t, Outcome::Answered, 1);
        }
    }
}

#[test]
fn an_overload_answer_halves_the_limit_and_caps_it_where_the_origin_coped() {
    let base = Instant::now();
    let mut controller = Controller::new(ControllerConfig::default(), base);
    let mut t = base;
    controller.start_waiting(t);
    tick(&mut controller, &mut t, 100);
    let grown = controller.limit();
    assert_eq!(grown, 32.0);
    // A burst of 20 downloads is out; the origin refuses those that started beyond 16 in
    // flight. The first 429 halves the limit; each further one of the burst lowers the
    // ceiling to what was in flight before it started.
    let started: Vec<usize> = (0..20).filter_map(|_| controller.try_acquire(t)).collect();
    assert_eq!(started.len(), 20);
    for &with in started.iter().rev().take(4) {
        controller.release(t, Outcome::Overloaded, with);
    }
    assert_eq!(controller.limit(), 16.0);
    for &with in started.iter().take(16) {
        controller.release(t, Outcome::Answered, with);
    }
    tick(&mut controller, &mut t, 500);
    assert_eq!(controller.limit(), 16.0);
    // The ceiling lapses after CEILING_HOLD and the limit grows again.
    t += CEILING_HOLD;
    tick(&mut controller, &mut t, 100);
    assert_eq!(controller.limit(), 32.0);
}

#[tokio::test]
async fn no_more_than_the_slots_are_in_flight_and_a_returned_slot_wakes_a_waiter() {
    let limits = HostConcurrency::new(ControllerConfig {
        initial: 2,
        floor: 1,
        max: 2,
    });
    let first = limits.acquire("h").await;
    let _second = limits.acquire("h").await;
    let third = limits.acquire_within("h", Duration::from_millis(50)).await;
    assert!(third.is_none(), "a third download must wait");
    let waiter = {
        let limits = limits.clone();
        tokio::spawn(async move { limits.acquire_within("h", Duration::from_secs(5)).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    first.finish(Outcome::Answered);
    let third = waiter.await.unwrap_or_default();
    assert!(third.is_some(), "a slot was given back");
    assert_eq!(limits.in_flight("h"), 2);
}

#[tokio::test]
async fn an_external_cap_binds_and_lifting_it_wakes_waiters() {
    let limits = HostConcurrency::default();
    limits.set_external_cap("h", 1);
    let _first = limits.acquire("h").await;
    assert!(limits.try_acquire("h").is_none());
    let waiter = {
        let limits = limits.clone();
        tokio::spawn(async move { limits.acquire_within("h", Duration::from_secs(5)).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    limits.set_external_cap("h", 4);
    assert!(waiter.await.unwrap_or_default().is_some());
    assert_eq!(limits.limit("other"), 4.0);
}
