//! The sweep: the last resort that brings every request to a terminal status and its
//! completion to the notifier, whatever event was lost on the way (DESIGN §5, "No dead ends").
//! Run on a schedule (the `sweeper` function; locally the pump).
//!
//! Every open request ([`OpenRequests`]) created more than [`SweepConfig::idle`] ago is
//! examined:
//!
//! - **Running** (`PENDING`, `PROCESSING`) and no row recorded for [`SweepConfig::idle`]
//!   (the sweeper notes the rows-done count and when it first saw it — the creation time
//!   while no row is done — and starts the wait again after each repair):
//!   - every row item exists and some are unrecorded: their row jobs are enqueued again (an
//!     ingest that stopped before enqueueing, a lost message) and a `PENDING` request is
//!     flipped to `PROCESSING`. Row recording is idempotent, so a job that was only slow costs
//!     a second download at most;
//!   - every row is recorded: the counter shards are checked again and the request completed
//!     (a completion lost after the last row);
//!   - row items are missing (chunks of a catalogue never expanded) and nothing has moved for
//!     [`SweepConfig::ingest_idle`] (longer than a chunk's whole retry series): `FAILED`,
//!     code `rows_missing`.
//! - **Terminal** but not handed on (no output CSV for a request that has one, or a webhook
//!   pending with no attempt) for [`SweepConfig::idle`] after its completion: the notifier
//!   is run for it (a lost stream batch, a failure record nothing repaired).
//! - **Terminal and handed on**: taken out of the open requests ([`OpenRequests::settle`]).
//! - **Never finished creating** (open but invisible: every attempt at its upload stopped
//!   before its rows were written): `FAILED`, code `ingest_incomplete`.
//!
//! A failure on one request is logged and counted; the sweep goes on with the next.

use std::future::Future;

use chrono::{DateTime, Duration, Utc};

use crate::deadline::Deadline;
use crate::ports::{
    OpenRequests, PortError, RequestIntake, RequestReader, RowLedger, RowQueue, Transition,
};
use pixpress_domain::counting::shards_with_rows;
use pixpress_domain::model::{
    DeliveryState, Failure, RequestMeta, RequestStatus, RowJob, RowState,
};

/// Error code of a request the sweeper fails because some of its rows never arrived.
pub const ROWS_MISSING: &str = "rows_missing";
/// Error code of a request the sweeper fails because its creation never finished.
pub const INGEST_INCOMPLETE: &str = "ingest_incomplete";

/// Rows read per page while a request is examined.
const ROWS_PER_PAGE: u32 = 1_000;
/// Open requests read per page.
const REQUESTS_PER_PAGE: u32 = 100;
/// Time kept back from the invocation's deadline for the request in hand.
const DEADLINE_MARGIN: std::time::Duration = std::time::Duration::from_secs(20);

/// How long a request may stand still before the sweeper repairs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepConfig {
    /// A running request with no row recorded for this long, or a terminal one not handed on
    /// this long after its completion, is repaired (`SWEEP_IDLE_SECONDS`, default 2 hours:
    /// longer than a row's whole retry series, 5 deliveries × 720 s).
    pub idle: Duration,
    /// A request whose row items are missing is failed only after this long without progress
    /// (`SWEEP_INGEST_IDLE_SECONDS`, default 8 hours: longer than a chunk's whole retry series,
    /// 5 deliveries × 5,400 s, after which the ingest dead-letter queue's reader fails it).
    pub ingest_idle: Duration,
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self {
            idle: Duration::hours(2),
            ingest_idle: Duration::hours(8),
        }
    }
}

/// What the sweeper did to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// Unrecorded rows were enqueued again (`rows` jobs).
    Enqueued {
        /// Row jobs sent.
        rows: u64,
    },
    /// Every row was recorded; the request was completed with this status.
    Completed(RequestStatus),
    /// Rows never arrived; the request was failed (`rows_missing`).
    FailedRowsMissing {
        /// Rows of the request without a row item.
        missing: u64,
    },
    /// Its creation never finished; the request was failed (`ingest_incomplete`).
    FailedIncomplete,
    /// The notifier was run for a terminal request not handed on.
    Notified,
}

impl Repair {
    /// A short name for logs and metrics.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Enqueued { .. } => "enqueued",
            Self::Completed(_) => "completed",
            Self::FailedRowsMissing { .. } => "failed_rows_missing",
            Self::FailedIncomplete => "failed_incomplete",
            Self::Notified => "notified",
        }
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    /// Open requests examined.
    pub examined: u64,
    /// Requests taken out of the open requests (settled).
    pub settled: u64,
    /// Repairs made, by request id.
    pub repairs: Vec<(String, Repair)>,
    /// Requests whose examination failed (logged; the next sweep tries again).
    pub errors: u64,
    /// `false` when the deadline ended the sweep before every open request was examined.
    pub complete: bool,
}

/// `true` when a terminal request still has something for the notifier: an output CSV (every
/// status but `FAILED` has one) or a webhook pending with no attempt made.
#[must_use]
pub fn needs_notifier(meta: &RequestMeta) -> bool {
    let csv_missing = meta.status != RequestStatus::Failed && meta.output_csv_key.is_none();
    let webhook_unsent = meta
        .webhook
        .as_ref()
        .is_some_and(|hook| hook.state == DeliveryState::Pending && hook.attempts.is_empty());
    csv_missing || webhook_unsent
}

/// Runs one sweep (see the module docs) at `now`, within `deadline`. `notify` runs the
/// completion notifier for one request id.
///
/// # Errors
/// [`PortError`] when the open requests cannot be listed; failures on single requests are
/// counted in [`Swept::errors`].
pub async fn sweep<R, Q, N, F>(
    repo: &R,
    queue: &Q,
    config: &SweepConfig,
    now: DateTime<Utc>,
    deadline: Deadline,
    mut notify: N,
) -> Result<Swept, PortError>
where
    R: OpenRequests + RequestReader + RequestIntake + RowLedger,
    Q: RowQueue,
    N: FnMut(String) -> F,
    F: Future<Output = Result<(), PortError>>,
{
    let mut swept = Swept::default();
    let mut cursor: Option<String> = None;
    loop {
        let page = repo
            .list_open(now - config.idle, cursor.as_deref(), REQUESTS_PER_PAGE)
            .await?;
        for request_id in page.request_ids {
            if !deadline.allows(DEADLINE_MARGIN) {
                return Ok(swept);
            }
            swept.examined += 1;
            match examine(repo, queue, config, now, deadline, &request_id, &mut notify).await {
                Ok(Examined::Settled) => swept.settled += 1,
                Ok(Examined::Repaired(repair)) => {
                    tracing::warn!(%request_id, repair = ?repair, "idle request repaired");
                    swept.repairs.push((request_id, repair));
                }
                Ok(Examined::Left) => {}
                Err(e) => {
                    tracing::error!(%request_id, error = %e, "examining an open request failed");
                    swept.errors += 1;
                }
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    swept.complete = true;
    Ok(swept)
}

/// What examining one request came to.
enum Examined {
    Settled,
    Repaired(Repair),
    Left,
}

async fn examine<R, Q, N, F>(
    repo: &R,
    queue: &Q,
    config: &SweepConfig,
    now: DateTime<Utc>,
    deadline: Deadline,
    request_id: &str,
    notify: &mut N,
) -> Result<Examined, PortError>
where
    R: OpenRequests + RequestReader + RequestIntake + RowLedger,
    Q: RowQueue,
    N: FnMut(String) -> F,
    F: Future<Output = Result<(), PortError>>,
{
    let Some(meta) = repo.get_request(request_id).await? else {
        // Open but invisible: its creation stopped before every row was written (an upload
        // whose every attempt died, a client that never retried) and it is older than the
        // idle bound. It ends FAILED (which also shows it); an item TTL removed is left.
        let failure = Failure {
            code: INGEST_INCOMPLETE.to_owned(),
            message: "the upload stopped before all its rows were recorded; submit the CSV again"
                .to_owned(),
            issues: Vec::new(),
        };
        return Ok(match repo.mark_failed(request_id, &failure, now).await? {
            Transition::Applied(_) => Examined::Repaired(Repair::FailedIncomplete),
            Transition::NotApplied => Examined::Left,
        });
    };
    if meta.status.is_terminal() {
        if !needs_notifier(&meta) {
            repo.settle(request_id).await?;
            return Ok(Examined::Settled);
        }
        let completed = meta.completed_at.unwrap_or(meta.updated_at);
        if now - completed < config.idle {
            return Ok(Examined::Left);
        }
        notify(request_id.to_owned()).await?;
        return Ok(Examined::Repaired(Repair::Notified));
    }
    // A count not seen before counts from now; no row recorded at all, from the creation.
    let done = meta.counters.rows_done;
    let first_seen = if done == 0 { meta.created_at } else { now };
    let since = repo
        .progress_unchanged_since(request_id, done, first_seen)
        .await?;
    if now - since < config.idle {
        return Ok(Examined::Left);
    }
    let Some((rows, unrecorded)) = count_rows(repo, request_id, deadline).await? else {
        // Too many rows to count before the deadline: the next sweep starts again.
        tracing::warn!(%request_id, "the sweep's deadline came before this request's rows were counted");
        return Ok(Examined::Left);
    };
    if rows < meta.counters.rows_total {
        if now - since < config.ingest_idle {
            return Ok(Examined::Left);
        }
        let missing = meta.counters.rows_total - rows;
        let failure = Failure {
            code: ROWS_MISSING.to_owned(),
            message: format!(
                "{missing} of the {} rows never reached processing (the upload's ingest stopped); submit the CSV again",
                meta.counters.rows_total
            ),
            issues: Vec::new(),
        };
        return Ok(match repo.mark_failed(request_id, &failure, now).await? {
            Transition::Applied(_) => Examined::Repaired(Repair::FailedRowsMissing { missing }),
            Transition::NotApplied => Examined::Left,
        });
    }
    if unrecorded == 0 {
        // A writer that recorded a shard's last row and died before marking the shard done
        // leaves it undone: mark every full shard.
        for shard in shards_with_rows(meta.counters.rows_total) {
            repo.mark_shard_if_full(request_id, shard).await?;
        }
        return Ok(match repo.complete(request_id, now).await? {
            Transition::Applied(status) => Examined::Repaired(Repair::Completed(status)),
            Transition::NotApplied => Examined::Left,
        });
    }
    let sent = enqueue_unrecorded(repo, queue, &meta, deadline).await?;
    if meta.status == RequestStatus::Pending {
        repo.mark_processing(request_id, now).await?;
    }
    // The jobs sent get a whole idle bound before they are sent again (a sweep that failed
    // to send comes back at the next run instead).
    repo.restart_wait(request_id, done, now).await?;
    Ok(Examined::Repaired(Repair::Enqueued { rows: sent }))
}

/// The row items of a request and how many are unrecorded, a page at a time; `None` when the
/// deadline comes first.
async fn count_rows<R: RequestReader>(
    repo: &R,
    request_id: &str,
    deadline: Deadline,
) -> Result<Option<(u64, u64)>, PortError> {
    let (mut rows, mut unrecorded) = (0, 0);
    let mut after = None;
    loop {
        if !deadline.allows(DEADLINE_MARGIN) {
            return Ok(None);
        }
        let page = repo.list_rows(request_id, after, ROWS_PER_PAGE).await?;
        rows += page.rows.len() as u64;
        unrecorded += page
            .rows
            .iter()
            .filter(|r| r.state == RowState::Pending)
            .count() as u64;
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(Some((rows, unrecorded))),
        }
    }
}

/// Enqueues the job of every unrecorded row, a page at a time, while the deadline allows;
/// returns how many.
async fn enqueue_unrecorded<R: RequestReader, Q: RowQueue>(
    repo: &R,
    queue: &Q,
    meta: &RequestMeta,
    deadline: Deadline,
) -> Result<u64, PortError> {
    let mut sent = 0;
    let mut after = None;
    loop {
        if !deadline.allows(DEADLINE_MARGIN) {
            return Ok(sent);
        }
        let page = repo
            .list_rows(&meta.request_id, after, ROWS_PER_PAGE)
            .await?;
        let jobs: Vec<RowJob> = page
            .rows
            .iter()
            .filter(|r| r.state == RowState::Pending)
            .map(|r| RowJob::for_row(meta, r))
            .collect();
        queue.enqueue(&jobs).await?;
        sent += jobs.len() as u64;
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(sent),
        }
    }
}
