//! Port traits: what the use cases need from storage and messaging, in domain terms.
//! Implementations: `adapters::local` (embedded) and, in deployments, the AWS adapters.

use std::future::Future;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use pixpress_domain::model::{
    ChunkJob, DeliveryState, Failure, ImageOutcome, ImageProgress, OutputPart, OutputProgress,
    RequestMeta, RequestStatus, RowJob, RowRecord, WebhookAttempt, WebhookJob,
};
use pixpress_domain::origin_slots::{LeaseRequest, OriginLease};

/// Failure of a port call.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The backend asked us to slow down (DynamoDB `ThrottlingException`,
    /// `ProvisionedThroughputExceededException`, `RequestLimitExceeded`, a transaction cancelled
    /// for `ThrottlingError`; S3 `SlowDown`); retry later.
    #[error("throttled: {0}")]
    Throttled(String),
    /// Another write was in progress on an item this one touches (DynamoDB
    /// `TransactionConflict`); retry later.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A documented service limit refuses the call (item size, transaction size, message size or
    /// characters, key length): the same call fails the same way again.
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    /// The backend refused access (S3 `AccessDenied`, an IAM misconfiguration): not retried in
    /// process.
    #[error("access denied: {0}")]
    Denied(String),
    /// An object exceeds the size the caller accepts.
    #[error("object {key} is {size} bytes; the limit is {limit} bytes")]
    TooLarge {
        /// Object key.
        key: String,
        /// Actual size in bytes.
        size: u64,
        /// Accepted size in bytes.
        limit: u64,
    },
    /// Anything else (I/O, network, a malformed stored item).
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl PortError {
    /// `true` when the same call may succeed later: everything but `TooLarge`, `LimitExceeded`
    /// and `Denied`. Queues redeliver and streams retry on these.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            Self::TooLarge { .. } | Self::LimitExceeded(_) | Self::Denied(_)
        )
    }

    /// `true` for throttling and transaction conflicts: the failures [`crate::retry`] retries in
    /// process, with jittered backoff, before giving up.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Throttled(_) | Self::Conflict(_))
    }
}

/// Result of creating a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The request and its rows were written.
    Inserted,
    /// A request with this id exists already (returned as stored); nothing was written.
    AlreadyExists(Box<RequestMeta>),
}

/// Result of a conditional status change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The change was applied: the request is now in this status.
    Applied(RequestStatus),
    /// The request was not in a state the change applies to (already moved on, not finished,
    /// or missing); nothing was written.
    NotApplied,
}

/// Result of recording a row's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowRecorded {
    /// Recorded now. `all_rows_done`: every row of the request is recorded, so the caller
    /// should [`RowLedger::complete`] it.
    Recorded {
        /// Every row of the request is recorded.
        all_rows_done: bool,
    },
    /// The row was already done (a redelivery, or a first delivery whose own write was
    /// applied but its answer lost); its outcome stays as first recorded, and the delivery is
    /// counted as a redelivery so a count its first writer never made is made up for
    /// ([`pixpress_domain::counting`]). `all_rows_done` as above.
    AlreadyRecorded {
        /// Every row of the request is recorded.
        all_rows_done: bool,
    },
}

impl RowRecorded {
    /// `true` when every row of the request is recorded.
    #[must_use]
    pub fn all_rows_done(self) -> bool {
        match self {
            Self::Recorded { all_rows_done } | Self::AlreadyRecorded { all_rows_done } => {
                all_rows_done
            }
        }
    }
}

/// A page of rows in input order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RowPage {
    /// Rows with index greater than the cursor, in order.
    pub rows: Vec<RowRecord>,
    /// Cursor for the next page (`Some(last index)`) or `None` at the end.
    pub next: Option<u32>,
}

/// Writing requests: a new request and its rows, and its moves to `PROCESSING` or `FAILED`
/// while it is ingested (the API and s3-ingest, through [`crate::ingest`]).
pub trait RequestIntake: Send + Sync + Clone + 'static {
    /// Writes a new request and all its rows (and its counter shards).
    ///
    /// # Errors
    /// [`PortError`] on storage failure; a partial write MUST NOT be visible as a complete
    /// request: the request item is written only once every row item exists.
    ///
    /// # Idempotency
    /// Conditional on the id being new: an existing request MUST NOT be overwritten; its stored
    /// record is returned as [`Created::AlreadyExists`].
    fn create_request(
        &self,
        meta: &RequestMeta,
        rows: &[RowRecord],
    ) -> impl Future<Output = Result<Created, PortError>> + Send;

    /// Writes rows of a request that exists (one chunk of a large upload, after the request
    /// item: [`crate::ingest::expand_chunk`]), in transactions of at most 100 items.
    ///
    /// # Errors
    /// [`PortError`] on storage failure; rows written before the failure stay (a replay
    /// completes them).
    ///
    /// # Idempotency
    /// Each row is conditional on being new: a row that exists (a replayed chunk; a row a
    /// worker has already recorded) is left as it is.
    fn put_rows(
        &self,
        request_id: &str,
        rows: &[RowRecord],
    ) -> impl Future<Output = Result<(), PortError>> + Send;

    /// `PENDING` → `PROCESSING` once every row is enqueued.
    ///
    /// # Errors
    /// [`PortError`] on storage failure.
    ///
    /// # Idempotency
    /// Conditional on the status being `PENDING`; otherwise [`Transition::NotApplied`].
    fn mark_processing(
        &self,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Transition, PortError>> + Send;

    /// Any non-terminal status → `FAILED` with `failure`; a request still being created (its
    /// rows not all written, invisible to readers) fails too and becomes visible.
    ///
    /// # Errors
    /// [`PortError`] on storage failure.
    ///
    /// # Idempotency
    /// Conditional on the status being non-terminal; otherwise [`Transition::NotApplied`].
    fn mark_failed(
        &self,
        request_id: &str,
        failure: &Failure,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Transition, PortError>> + Send;
}

/// Reading requests and their rows (the status API, the worker, the notifier, the sender).
pub trait RequestReader: Send + Sync + Clone + 'static {
    /// The request record with its current counters (summed over the counter shards while the
    /// request runs), or `None` if unknown.
    ///
    /// # Errors
    /// [`PortError`] on storage failure.
    ///
    /// # Idempotency
    /// Read-only.
    fn get_request(
        &self,
        request_id: &str,
    ) -> impl Future<Output = Result<Option<RequestMeta>, PortError>> + Send;

    /// Up to `limit` rows with index greater than `after`, in input order.
    ///
    /// # Errors
    /// [`PortError`] on storage failure.
    ///
    /// # Idempotency
    /// Read-only.
    fn list_rows(
        &self,
        request_id: &str,
        after: Option<u32>,
        limit: u32,
    ) -> impl Future<Output = Result<RowPage, PortError>> + Send;
}

/// The rows' ledger a worker records into: each row's outcome or progress, the completion
/// that follows the last row, and whether cancelling was asked (row-worker, row-dead-letter).
pub trait RowLedger: Send + Sync + Clone + 'static {
    /// Records the outcome of row `row_index` (images aligned with its input URLs) and counts
    /// it in the request's counters; then reports whether every row of the request is recorded
    /// and counted ([`pixpress_domain::counting`]: two single-item writes, no transaction).
    ///
    /// # Errors
    /// [`PortError`] on storage failure; then the row may be recorded and not yet counted, and
    /// its redelivery (this call again) counts it. Conflicts and throttling are retried in
    /// process first ([`crate::retry::RetryPolicy::STORAGE`]) and come back as
    /// [`PortError::Conflict`] / [`PortError::Throttled`] only when every attempt failed.
    ///
    /// # Idempotency
    /// Conditional on the row being `PENDING`: a redelivered row MUST return
    /// [`RowRecorded::AlreadyRecorded`] and MUST NOT count twice. Only the row's own failed
    /// condition means "already recorded".
    fn record_row_outcome(
        &self,
        request_id: &str,
        row_index: u32,
        images: &[ImageOutcome],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<RowRecorded, PortError>> + Send;

    /// Saves what a delivery of row `row_index` achieved before it failed transiently (images
    /// stored, time spent on the failing ones), for the next delivery.
    ///
    /// # Errors
    /// [`PortError`] on storage failure.
    ///
    /// # Idempotency
    /// Conditional on the row being `PENDING` (a late writer never touches a recorded row);
    /// overwrites the previous progress, so the last writer's view wins — every writer extends
    /// what it read.
    fn record_row_progress(
        &self,
        request_id: &str,
        row_index: u32,
        progress: &[ImageProgress],
    ) -> impl Future<Output = Result<(), PortError>> + Send;

    /// Flips the request to its terminal status ([`pixpress_domain::model::Counters::terminal_status`]) once every row
    /// is recorded, storing the final counters on the request.
    ///
    /// # Errors
    /// [`PortError`] on storage failure.
    ///
    /// A cancellation accepted before the flip ends the request `CANCELLED`, also one
    /// accepted after the request was read: it must never end `COMPLETED` once a cancellation
    /// was answered 202.
    ///
    /// # Idempotency
    /// One conditional write: applies only if the status is non-terminal and every row is
    /// done, so among concurrent callers exactly one gets [`Transition::Applied`].
    fn complete(
        &self,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Transition, PortError>> + Send;

    /// `true` when the request's rows are not to be processed any more: cancelling it was
    /// asked, or it has `FAILED` (it never completes, so downloading its rows would be wasted).
    /// `false` too for an unknown request. One small read of the request item (a worker asks
    /// once per request per invocation).
    ///
    /// # Errors
    /// [`PortError`] on storage failure.
    fn stop_requested(
        &self,
        request_id: &str,
    ) -> impl Future<Output = Result<bool, PortError>> + Send;
}

/// What the completion notifier and the webhook sender record: the output CSV (or its progress)
/// and every webhook attempt.
pub trait OutputLedger: Send + Sync + Clone + 'static {
    /// Records the object key of the output CSV (and drops any saved progress).
    ///
    /// # Errors
    /// [`PortError`] on storage failure.
    ///
    /// # Idempotency
    /// Overwrites with the same value on replays.
    fn record_output_csv(
        &self,
        request_id: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), PortError>> + Send;

    /// The output CSV's progress saved by an invocation that ran out of time, if any.
    ///
    /// # Errors
    /// [`PortError`] on storage failure.
    ///
    /// # Idempotency
    /// Read-only.
    fn output_progress(
        &self,
        request_id: &str,
    ) -> impl Future<Output = Result<Option<OutputProgress>, PortError>> + Send;

    /// Saves the output CSV's progress on the request item (the change is what brings the
    /// next invocation); [`OutputLedger::record_output_csv`] removes it.
    ///
    /// # Errors
    /// [`PortError`] on storage failure.
    ///
    /// # Idempotency
    /// Overwrites: the last writer's progress stands.
    fn record_output_progress(
        &self,
        request_id: &str,
        progress: &OutputProgress,
    ) -> impl Future<Output = Result<(), PortError>> + Send;

    /// Appends a webhook attempt and sets the delivery state, if the request holds
    /// `recorded_before` attempts; `false` (nothing written) otherwise.
    ///
    /// # Errors
    /// [`PortError`] on storage failure.
    ///
    /// # Idempotency
    /// Conditional on the number of attempts recorded: a call retried after its first write
    /// landed (a response lost on the way back) records nothing twice, so a series never ends
    /// an attempt early. One series runs at a time ([`RequestControl::redeliver_webhook`]), so
    /// no other writer appends meanwhile.
    fn record_webhook_attempt(
        &self,
        request_id: &str,
        attempt: &WebhookAttempt,
        state: DeliveryState,
        recorded_before: u32,
    ) -> impl Future<Output = Result<bool, PortError>> + Send;
}

/// A tenant's control of a request it made: cancel, redeliver the webhook (the API).
pub trait RequestControl: Send + Sync + Clone + 'static {
    /// Sets a terminal request's webhook back to pending for a redelivery, keeping every
    /// attempt made so far. `false` (nothing changed) when the request has no webhook or has
    /// not finished.
    ///
    /// # Errors
    /// [`PortError`] on storage failure.
    ///
    /// # Idempotency
    /// Setting pending twice leaves it pending.
    fn redeliver_webhook(
        &self,
        request_id: &str,
    ) -> impl Future<Output = Result<bool, PortError>> + Send;

    /// Asks to cancel a request that has not finished: records `cancel_requested_at` = `now`
    /// (the first time only). `false` (nothing changed) when the request does not exist or has
    /// finished. Rows processed afterwards are recorded as `cancelled`, and the completion that
    /// follows the last row makes the request `CANCELLED` ([`RowLedger::complete`]).
    ///
    /// # Errors
    /// [`PortError`] on storage failure.
    ///
    /// # Idempotency
    /// Asking twice keeps the first time and answers `true` again.
    fn request_cancel(
        &self,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, PortError>> + Send;
}

/// A page of open requests ([`OpenRequests::list_open`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpenPage {
    /// Request ids, oldest first.
    pub request_ids: Vec<String>,
    /// Opaque cursor of the next page, `None` at the end.
    pub next: Option<String>,
}

/// The open requests the sweeper watches ([`crate::sweep`]): every request from its creation
/// until it is settled (terminal, with its output CSV and webhook handed on). On DynamoDB a
/// sparse index ([`pixpress_domain::item::OPEN_INDEX`]), so a sweep reads only these.
pub trait OpenRequests: Send + Sync + Clone + 'static {
    /// Open requests created before `created_before`, oldest first, at most `limit` per page,
    /// after `cursor` (from the previous page).
    ///
    /// # Errors
    /// [`PortError`] on storage failure.
    ///
    /// # Idempotency
    /// Read-only (eventually consistent, as a global secondary index is).
    fn list_open(
        &self,
        created_before: DateTime<Utc>,
        cursor: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = Result<OpenPage, PortError>> + Send;

    /// Since when the request's rows done have stood at `rows_done`: the time stored with that
    /// count, or `first_seen` (stored) when the count differs from the one stored or none is.
    ///
    /// # Errors
    /// [`PortError`] on storage failure.
    ///
    /// # Idempotency
    /// Conditional on the stored count differing: two sweeps that see the same count keep the
    /// first time.
    fn progress_unchanged_since(
        &self,
        request_id: &str,
        rows_done: u64,
        first_seen: DateTime<Utc>,
    ) -> impl Future<Output = Result<DateTime<Utc>, PortError>> + Send;

    /// Starts the wait again at `now` with `rows_done` rows done (after a repair, so the next
    /// one comes only after another idle bound).
    ///
    /// # Errors
    /// [`PortError`] on storage failure.
    ///
    /// # Idempotency
    /// Overwrites the stored mark; conditional on the request existing.
    fn restart_wait(
        &self,
        request_id: &str,
        rows_done: u64,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), PortError>> + Send;

    /// Adds counter shard `shard` to the request's done shards if every row of it is recorded
    /// (what the writer of its last row does, and may have died before doing); `true` when
    /// every shard is done, so [`RowLedger::complete`] can apply.
    ///
    /// # Errors
    /// [`PortError`] on storage failure, or when the shard does not exist.
    ///
    /// # Idempotency
    /// The shard is added only if missing.
    fn mark_shard_if_full(
        &self,
        request_id: &str,
        shard: u32,
    ) -> impl Future<Output = Result<bool, PortError>> + Send;

    /// Takes a settled request out of the open requests. `false` when it was not open or is not
    /// terminal.
    ///
    /// # Errors
    /// [`PortError`] on storage failure.
    ///
    /// # Idempotency
    /// Conditional on the request being terminal; removing twice changes nothing.
    fn settle(&self, request_id: &str) -> impl Future<Output = Result<bool, PortError>> + Send;
}

/// Requests and rows (DESIGN §3, one table): every role at once, for what composes the apps.
/// The AWS adapter (DynamoDB) and the embedded one implement every role; each function's app
/// asks only for the roles it uses.
pub trait RequestRepository:
    RequestIntake + RequestReader + RowLedger + OutputLedger + RequestControl + OpenRequests
{
}

impl<T> RequestRepository for T where
    T: RequestIntake + RequestReader + RowLedger + OutputLedger + RequestControl + OpenRequests
{
}

/// The message bodies of `jobs`: each [`RowJob`] as JSON, the format every queue adapter sends
/// and the worker parses, each checked against SQS's message limits
/// ([`crate::limits::check_sqs_body`]) before anything is sent.
///
/// # Errors
/// [`PortError::Unexpected`] if a job cannot be encoded; [`PortError::LimitExceeded`] naming
/// the row and request whose message SQS would refuse.
pub fn message_bodies(jobs: &[RowJob]) -> Result<Vec<String>, PortError> {
    let bodies = jobs
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PortError::Unexpected(anyhow::anyhow!("row job encoding: {e}")))?;
    for (body, job) in bodies.iter().zip(jobs) {
        crate::limits::check_sqs_body(body).map_err(|e| {
            PortError::LimitExceeded(format!(
                "row {} of request {}: {e}",
                job.row_index, job.request_id
            ))
        })?;
    }
    Ok(bodies)
}

/// The queue of row jobs.
pub trait RowQueue: Send + Sync + Clone + 'static {
    /// Enqueues every job.
    ///
    /// # Errors
    /// [`PortError`] if any job could not be enqueued after the adapter's own retries; some
    /// jobs may have been enqueued.
    ///
    /// # Idempotency
    /// At-least-once: re-enqueueing a job is safe because row completion is idempotent.
    fn enqueue(&self, jobs: &[RowJob]) -> impl Future<Output = Result<(), PortError>> + Send;

    /// Hides the received row message `receipt_handle` for `delay` (SQS
    /// `ChangeMessageVisibility`, at most 12 hours): a row handed back as a batch item failure
    /// comes back when its origin is ready, not after the queue's visibility timeout.
    ///
    /// # Errors
    /// [`PortError`] when the visibility cannot be changed (the row then comes back after the
    /// visibility timeout).
    ///
    /// # Idempotency
    /// Idempotent: the last call sets the delay.
    fn retry_row_later(
        &self,
        receipt_handle: &str,
        delay: std::time::Duration,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// Download slots of origin hosts shared by every worker invocation
/// ([`pixpress_domain::origin_slots`]): the bound `ORIGIN_MAX_CONCURRENCY` holds across
/// invocations, and a host that answered 429 or 503 with `Retry-After` is left alone by all of
/// them.
pub trait OriginSlots: Send + Sync + Clone + 'static {
    /// Sets `request.holder`'s lease of `host` to what it wants, within what the cap leaves
    /// after every other unexpired lease (see
    /// [`pixpress_domain::origin_slots::OriginSlotsRecord::lease`]).
    ///
    /// # Errors
    /// [`PortError`] when the record cannot be read or written after the adapter's retries.
    ///
    /// # Idempotency
    /// Idempotent: asking again for the same number of slots changes nothing. Writes MUST be
    /// conditional on the version read, so concurrent holders never hold more than the cap.
    fn lease(
        &self,
        host: &str,
        request: LeaseRequest<'_>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<OriginLease, PortError>> + Send;

    /// No download of `host` may start before `until`, for any holder (a later end wins).
    ///
    /// # Errors
    /// [`PortError`] when the record cannot be written after the adapter's retries.
    ///
    /// # Idempotency
    /// Idempotent.
    fn back_off(
        &self,
        host: &str,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// The ingest queue: slices of validated uploads waiting to be expanded into rows.
pub trait ChunkQueue: Send + Sync + Clone + 'static {
    /// Sends `jobs`, in batches within SQS's limits.
    ///
    /// # Errors
    /// [`PortError`] when a job cannot be sent.
    ///
    /// # Idempotency
    /// Not idempotent (a retry sends duplicates); expanding a chunk twice creates nothing
    /// twice.
    fn enqueue_chunks(
        &self,
        jobs: &[ChunkJob],
    ) -> impl Future<Output = Result<(), PortError>> + Send;

    /// Hides the received chunk message `receipt_handle` for `delay` (SQS
    /// `ChangeMessageVisibility`, at most 12 hours after receipt): a chunk handed back for
    /// transient trouble comes back after a backoff, not the queue's 5,400-s visibility
    /// timeout.
    ///
    /// # Errors
    /// [`PortError`] when the visibility cannot be changed (the chunk then comes back after the
    /// visibility timeout).
    ///
    /// # Idempotency
    /// Idempotent: the last call sets the delay.
    fn retry_chunk_later(
        &self,
        receipt_handle: &str,
        delay: std::time::Duration,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// The message bodies of `jobs` as JSON, each checked against SQS's message limits.
///
/// # Errors
/// [`PortError::Unexpected`] if a job cannot be encoded; [`PortError::LimitExceeded`] for a
/// message SQS would refuse.
pub fn chunk_bodies(jobs: &[ChunkJob]) -> Result<Vec<String>, PortError> {
    let bodies = jobs
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PortError::Unexpected(anyhow::anyhow!("chunk job encoding: {e}")))?;
    for body in &bodies {
        crate::limits::check_sqs_body(body).map_err(PortError::LimitExceeded)?;
    }
    Ok(bodies)
}

/// A stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// The bytes.
    pub bytes: Bytes,
    /// MIME type as stored.
    pub content_type: String,
}

/// The webhooks queue: one message per completion event to deliver; the sender hides a message
/// it could not deliver until its next attempt is due.
pub trait WebhookQueue: Send + Sync + Clone + 'static {
    /// Queues `job`.
    ///
    /// # Errors
    /// [`PortError`] when the message cannot be sent.
    fn send_webhook(&self, job: &WebhookJob) -> impl Future<Output = Result<(), PortError>> + Send;

    /// Hides the received message `receipt_handle` for `delay` (SQS `ChangeMessageVisibility`,
    /// at most 12 hours: longer delays are cut to 12 hours).
    ///
    /// # Errors
    /// [`PortError`] when the visibility cannot be changed.
    fn retry_webhook_later(
        &self,
        receipt_handle: &str,
        delay: std::time::Duration,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// No queue: the type of an app's queue that is never there (`webhooks: None`, `chunks: None`):
/// the app then does the work in its own invocation. It has no values, so none of its methods
/// can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoQueue {}

impl WebhookQueue for NoQueue {
    async fn send_webhook(&self, _job: &WebhookJob) -> Result<(), PortError> {
        match *self {}
    }

    async fn retry_webhook_later(
        &self,
        _receipt_handle: &str,
        _delay: std::time::Duration,
    ) -> Result<(), PortError> {
        match *self {}
    }
}

impl ChunkQueue for NoQueue {
    async fn enqueue_chunks(&self, _jobs: &[ChunkJob]) -> Result<(), PortError> {
        match *self {}
    }

    async fn retry_chunk_later(
        &self,
        _receipt_handle: &str,
        _delay: std::time::Duration,
    ) -> Result<(), PortError> {
        match *self {}
    }
}

/// Longest SQS visibility timeout: 12 hours (Amazon SQS Developer Guide, "Visibility timeout").
/// It counts from the message's receipt: `ChangeMessageVisibility` to more than the time left
/// of those 12 hours is refused (Amazon SQS API Reference, `ChangeMessageVisibility`).
pub const SQS_MAX_VISIBILITY: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// The longest delay a handler may set on a message it holds: [`SQS_MAX_VISIBILITY`] less the
/// most time that can have passed since the event source mapping received it (a function's
/// timeout, at most 15 minutes, covers the batching window and the invocation). In seconds:
/// 42,300.
pub const SQS_MAX_DELAY_AFTER_RECEIVE: std::time::Duration =
    std::time::Duration::from_secs(12 * 3600 - 15 * 60);

/// One stored part of a multipart object: its 1-based number and the tag the store gave it
/// (S3's `ETag`), both needed to complete the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedPart {
    /// Part number, 1–10,000.
    pub number: u32,
    /// The store's tag of the part.
    pub tag: String,
}

impl From<&UploadedPart> for OutputPart {
    fn from(part: &UploadedPart) -> Self {
        Self {
            number: part.number,
            tag: part.tag.clone(),
        }
    }
}

impl From<&OutputPart> for UploadedPart {
    fn from(part: &OutputPart) -> Self {
        Self {
            number: part.number,
            tag: part.tag.clone(),
        }
    }
}

/// An object's bytes as they arrive, in pieces of the store's choosing.
pub struct ObjectReader {
    /// Bytes this reader yields (the range's length for a range read).
    pub size: u64,
    /// The object's entity tag, if the store has one.
    pub etag: Option<String>,
    /// The bytes.
    pub body: futures::stream::BoxStream<'static, Result<Bytes, PortError>>,
}

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectReader")
            .field("size", &self.size)
            .field("etag", &self.etag)
            .finish_non_exhaustive()
    }
}

/// A signed upload form (S3 POST Object): `POST` a `multipart/form-data` body to `url` with
/// every one of `fields`, then the object in a last field named `file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignedPost {
    /// Where the form goes (the bucket's URL).
    pub url: String,
    /// Form fields, in order: `key`, `Content-Type`, the SigV4 fields and `policy`.
    pub fields: Vec<(String, String)>,
}

/// The bucket of uploads, images and output CSVs.
pub trait ObjectStore: Send + Sync + Clone + 'static {
    /// Stores `bytes` under `key` with `content_type`.
    ///
    /// # Errors
    /// [`PortError`] on storage failure; a failed put MUST NOT leave a partial object visible.
    ///
    /// # Idempotency
    /// Overwrites: the same put twice leaves the same object.
    fn put(
        &self,
        key: &str,
        bytes: Bytes,
        content_type: &str,
    ) -> impl Future<Output = Result<(), PortError>> + Send;

    /// The object under `key`, or `None`.
    ///
    /// # Errors
    /// [`PortError::TooLarge`] when it exceeds `max_bytes` (without reading it);
    /// [`PortError`] on storage failure.
    ///
    /// # Idempotency
    /// Read-only.
    fn get(
        &self,
        key: &str,
        max_bytes: u64,
    ) -> impl Future<Output = Result<Option<StoredObject>, PortError>> + Send;

    /// `true` when an object exists under `key` (S3 `HeadObject`; a missing key is 404 only
    /// to a caller that may list the bucket).
    ///
    /// # Errors
    /// [`PortError`] on storage failure.
    ///
    /// # Idempotency
    /// Read-only.
    fn exists(&self, key: &str) -> impl Future<Output = Result<bool, PortError>> + Send;

    /// The object under `key` (or its bytes `range`, offsets in bytes, end exclusive) as a
    /// stream, so an upload of any size is read in bounded memory; `None` when it does not
    /// exist.
    ///
    /// # Errors
    /// [`PortError`] on storage failure (also while reading the body).
    ///
    /// # Idempotency
    /// Read-only.
    fn open(
        &self,
        key: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> impl Future<Output = Result<Option<ObjectReader>, PortError>> + Send;

    /// The URL under which `key` is published (for output image URLs).
    fn public_url(&self, key: &str) -> String;

    /// A presigned URL a client can `GET` the object under `key` from, valid for `expires_in`
    /// (SigV4 allows at most 7 days); `None` when the store cannot issue one (the embedded
    /// directory store), and the caller serves the bytes itself.
    ///
    /// # Errors
    /// [`PortError`] when the expiry is out of range or signing fails.
    ///
    /// # Idempotency
    /// Reads nothing; every call signs a new URL.
    fn presigned_get(
        &self,
        key: &str,
        expires_in: std::time::Duration,
    ) -> impl Future<Output = Result<Option<String>, PortError>> + Send;

    /// A signed form a client (a browser too) can `POST` one object with under `key`, sending
    /// `Content-Type: content_type`, of 1 to `max_bytes` bytes — the store itself refuses a
    /// larger one — within `expires_in` (S3 POST Object with a SigV4 POST policy and its
    /// `content-length-range` condition:
    /// <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-HTTPPOSTConstructPolicy.html>);
    /// `None` when the store cannot issue one (the embedded directory store).
    ///
    /// # Errors
    /// [`PortError`] when no credentials can be had or signing fails.
    ///
    /// # Idempotency
    /// Writes nothing; every call signs a new form.
    fn presigned_post(
        &self,
        key: &str,
        content_type: &str,
        max_bytes: u64,
        expires_in: std::time::Duration,
    ) -> impl Future<Output = Result<Option<PresignedPost>, PortError>> + Send;

    /// Starts an object written in parts (S3 `CreateMultipartUpload`); returns the upload id.
    /// Nothing is visible under `key` until [`ObjectStore::complete_multipart`].
    ///
    /// # Errors
    /// [`PortError`] on storage failure.
    fn create_multipart(
        &self,
        key: &str,
        content_type: &str,
    ) -> impl Future<Output = Result<String, PortError>> + Send;

    /// Stores part `number` (1–10,000) of upload `upload_id`. Every part but the last must hold
    /// at least 5 MiB ([`crate::limits::S3_MIN_PART_BYTES`]).
    ///
    /// # Errors
    /// [`PortError`] on storage failure or an unknown upload.
    fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        bytes: Bytes,
    ) -> impl Future<Output = Result<UploadedPart, PortError>> + Send;

    /// Makes the object from `parts`, in order, visible under `key` at once.
    ///
    /// # Errors
    /// [`PortError::LimitExceeded`] when a part but the last is under 5 MiB (S3's
    /// `EntityTooSmall`); [`PortError`] on storage failure.
    fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
    ) -> impl Future<Output = Result<(), PortError>> + Send;

    /// Drops an unfinished upload and its parts.
    ///
    /// # Errors
    /// [`PortError`] on storage failure.
    fn abort_multipart(
        &self,
        key: &str,
        upload_id: &str,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// Writes one object through a multipart upload in bounded memory: bytes are buffered and sent
/// as parts of `part_bytes` (at least S3's 5 MiB minimum), the last part whatever is left.
/// Memory held: about one part.
#[derive(Debug)]
pub struct MultipartWriter<'a, S: ObjectStore> {
    store: &'a S,
    key: String,
    upload_id: String,
    part_bytes: usize,
    buffer: Vec<u8>,
    parts: Vec<UploadedPart>,
}

impl<'a, S: ObjectStore> MultipartWriter<'a, S> {
    /// Starts an upload of `key`. `part_bytes` is raised to S3's 5 MiB minimum.
    ///
    /// # Errors
    /// [`PortError`] when the upload cannot be started.
    pub async fn start(
        store: &'a S,
        key: &str,
        content_type: &str,
        part_bytes: usize,
    ) -> Result<Self, PortError> {
        let upload_id = store.create_multipart(key, content_type).await?;
        Ok(Self {
            store,
            key: key.to_owned(),
            upload_id,
            part_bytes: part_bytes.max(crate::limits::S3_MIN_PART_BYTES),
            buffer: Vec::new(),
            parts: Vec::new(),
        })
    }

    /// Appends `bytes`, sending a part whenever a full one is buffered.
    ///
    /// # Errors
    /// [`PortError`] when a part cannot be stored, or past S3's 10,000 parts.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), PortError> {
        self.buffer.extend_from_slice(bytes);
        while self.buffer.len() >= self.part_bytes {
            let rest = self.buffer.split_off(self.part_bytes);
            let part = std::mem::replace(&mut self.buffer, rest);
            self.send(part).await?;
        }
        Ok(())
    }

    async fn send(&mut self, part: Vec<u8>) -> Result<(), PortError> {
        let number = u32::try_from(self.parts.len()).unwrap_or(u32::MAX) + 1;
        if number > crate::limits::S3_MAX_PARTS {
            return Err(PortError::LimitExceeded(format!(
                "{} would need more than {} parts",
                self.key,
                crate::limits::S3_MAX_PARTS
            )));
        }
        let uploaded = self
            .store
            .upload_part(&self.key, &self.upload_id, number, Bytes::from(part))
            .await?;
        self.parts.push(uploaded);
        Ok(())
    }

    /// Sends what is left and makes the object visible; returns how many parts it took.
    /// On failure the upload is left as it is: saved progress may name it and a retry continue
    /// it; [`Self::abort`] drops one nothing names (the bucket's lifecycle rule aborts what is
    /// left after a day).
    ///
    /// # Errors
    /// [`PortError`] when the last part or the completion fails.
    pub async fn finish(&mut self) -> Result<u64, PortError> {
        if !self.buffer.is_empty() || self.parts.is_empty() {
            let last = std::mem::take(&mut self.buffer);
            self.send(last).await?;
        }
        self.store
            .complete_multipart(&self.key, &self.upload_id, &self.parts)
            .await?;
        Ok(self.parts.len() as u64)
    }

    /// Continues the upload `upload_id` of `key` after `parts` (saved by an earlier writer that
    /// stopped on a part boundary).
    #[must_use]
    pub fn resume(
        store: &'a S,
        key: &str,
        upload_id: &str,
        parts: Vec<UploadedPart>,
        part_bytes: usize,
    ) -> Self {
        Self {
            store,
            key: key.to_owned(),
            upload_id: upload_id.to_owned(),
            part_bytes: part_bytes.max(crate::limits::S3_MIN_PART_BYTES),
            buffer: Vec::new(),
            parts,
        }
    }

    /// Bytes buffered and not yet sent.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Sends everything buffered as one part if it is at least S3's 5 MiB minimum, so the
    /// upload stops on a part boundary and can be resumed; returns whether it did.
    ///
    /// # Errors
    /// [`PortError`] when the part cannot be stored.
    pub async fn flush_part(&mut self) -> Result<bool, PortError> {
        if self.buffer.len() < crate::limits::S3_MIN_PART_BYTES {
            return Ok(false);
        }
        let part = std::mem::take(&mut self.buffer);
        self.send(part).await?;
        Ok(true)
    }

    /// The upload's id.
    #[must_use]
    pub fn upload_id(&self) -> &str {
        &self.upload_id
    }

    /// The parts sent so far.
    #[must_use]
    pub fn parts(&self) -> &[UploadedPart] {
        &self.parts
    }

    /// Drops the upload (after a failure elsewhere).
    ///
    /// # Errors
    /// [`PortError`] when the store cannot abort it.
    pub async fn abort(self) -> Result<(), PortError> {
        self.store.abort_multipart(&self.key, &self.upload_id).await
    }
}
