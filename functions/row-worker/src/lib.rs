//! # row-worker — downloads, compresses and stores the images of CSV rows
//!
//! Trigger: the rows SQS queue (batch, `ReportBatchItemFailures`); locally, the CLI's pump.
//!
//! Per message (records of a batch run concurrently; compression on one engine thread per
//! core):
//! 1. parse the [`RowJob`]; if the row is already recorded (a redelivery), repeat only the
//!    completion check;
//! 2. per image URL not finished by an earlier delivery, once its origin host has a download
//!    slot ([`origin`]: a limit that adapts to the host, within the process's lease of the
//!    host's `ORIGIN_MAX_CONCURRENCY` slots shared by every invocation, and never while the
//!    host is backed off after a 429 or 503) and the invocation has time left to finish it:
//!    guarded download (memory for the body reserved from the byte budget,
//!    `WORKER_DOWNLOAD_BUDGET_BYTES`, before it is read; the reservation held until
//!    compression ends, so downloaded-but-not-compressed bytes stay bounded) → compression
//!    engine → object store (`images/<request>/<row>-<position>.jpg`). A 429 or 503 backs the
//!    host off for every invocation (`Retry-After`) and the download is tried again once the
//!    back-off ends; a reset or refused connection or another 5xx is tried again at once, up
//!    to [`QUICK_RETRIES`] times;
//! 3. record the row outcome (idempotent per row: a conditional row update, then its counter
//!    shard's increment, counted once — `pixpress_domain::counting`; conflicts and throttling
//!    retried in process);
//! 4. when every row of the request is recorded, flip the request to `COMPLETED` or
//!    `COMPLETED_WITH_ERRORS` with one conditional write (exactly one caller wins).
//!
//! Failure semantics: a bad image (404, not an image, too large, blocked address, decode error,
//! a codec panic) is a recorded per-image failure. Transient trouble (timeouts, 5xx, 429,
//! storage errors, throttling left after in-process retries) returns the message as a batch
//! item failure so SQS retries it, keeping on the row what this delivery achieved (finished
//! images, time spent on failing ones) so the retry fetches only what failed — unless this is
//! the last permitted receive (`MAX_RECEIVE_COUNT`) or the image has used its retry budget
//! ([`IMAGE_RETRY_BUDGET`]), which records the failure so the request still completes. A row with
//! an image the invocation could not finish before its deadline (fetch timeout + compression
//! budget, [`WorkerConfig::image_budget`]: checked before the download starts, and bounding the
//! waits for the byte budget and for the compressor), or whose host is backed off for longer than the
//! invocation has left, is returned unrecorded as a batch item failure, so one slow row never
//! times out the batch and its neighbours; neither counts against the image's retry budget. No message is ever dropped: a row
//! that cannot be processed at all is returned until it dead-letters, where `row-dead-letter`
//! records it as failed. The handler returns `Err` only if the whole batch must be retried
//! (never, today).
//!
//! Env vars: `MAX_RECEIVE_COUNT`, `ORIGIN_MAX_CONCURRENCY`, `WORKER_DOWNLOAD_BUDGET_BYTES`,
//! `MAX_IMAGE_BYTES`, `MAX_IMAGE_PIXELS`, `MAX_IMAGE_SIDE`, `FETCH_*`, `ALLOW_LOOPBACK` (see
//! [`pixpress_app::config::vars`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::Utc;
use lambda_runtime::LambdaEvent;
use pixpress_app::config::Config;
use pixpress_app::ports::{
    ObjectStore, OriginSlots, PortError, RequestReader, RowLedger, RowPage, RowQueue, RowRecorded,
    Transition,
};
use pixpress_app::retry::RedeliveryBackoff;
use pixpress_app::sqs_batch::{BatchMode, batch_item_failures};
use pixpress_domain::model::{
    ImageOutcome, ImageProgress, ImageStatus, OutputSpec, ROW_JOB_VERSION, RequestStatus, RowJob,
    RowState, Score,
};
use pixpress_domain::storage_keys::image_key;
use pixpress_domain::text;
use pixpress_engine::Engine;
use pixpress_fetch::{Fetched, Fetcher, Outcome};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub mod origin;

use origin::NoSlot;
pub use origin::OriginGate;

/// Time allowed to compress one image once downloaded (a 50 MP input takes about 2 s on one
/// vCPU; the rest is headroom for a queue of images ahead of it).
pub const COMPRESSION_BUDGET: Duration = Duration::from_secs(15);

/// Time kept at the end of an invocation to store the last image and record its row.
pub const RECORD_MARGIN: Duration = Duration::from_secs(5);

/// Time one image may spend failing transiently (timeouts, 5xx, dropped connections), summed
/// over the deliveries of its row, before its failure is recorded instead of retried: with
/// the default 20 s fetch timeout an image holds its row for at most three deliveries
/// (45 s + the last 20 s attempt), not five.
pub const IMAGE_RETRY_BUDGET: Duration = Duration::from_secs(45);

/// The byte budget counts in KiB, so it fits a semaphore's `u32` permits.
const BUDGET_UNIT: u64 = 1024;

/// Times an image's download is tried again at once, within one delivery, after a reset or
/// refused connection, a broken body or a 5xx other than 503 (an idempotent GET; RFC 9110
/// §9.2.2).
pub const QUICK_RETRIES: u32 = 2;

/// Times an image's download is tried again within one delivery after its host answered 429 or
/// 503 and its back-off passed.
pub const BACKOFF_RETRIES: u32 = 5;

/// Most time a worker goes on trusting that a request was not cancelled: an image that waited
/// for a download slot is not fetched once its request's cancellation is known.
pub const CANCEL_RECHECK: Duration = Duration::from_secs(1);

/// Settings of the worker.
#[derive(Debug, Clone, Copy)]
pub struct WorkerConfig {
    /// SQS `maxReceiveCount`: the receive with this count is the last one.
    pub max_receive_count: u32,
    /// Most downloads in flight per origin host across every invocation
    /// (`ORIGIN_MAX_CONCURRENCY`); below it the limit adapts to the host ([`origin`]).
    pub origin_max_concurrency: u32,
    /// Bytes held downloaded but not yet compressed at once per invocation.
    pub download_budget: u64,
    /// Largest accepted download in bytes (`MAX_IMAGE_BYTES`).
    pub max_image_bytes: u64,
    /// Time one image may take from download start to its row being recorded: the fetch
    /// timeout + [`COMPRESSION_BUDGET`] + [`RECORD_MARGIN`]. An image is started only when at
    /// least this much of the invocation is left.
    pub image_budget: Duration,
    /// Time one image may spend failing transiently over all deliveries of its row
    /// ([`IMAGE_RETRY_BUDGET`]).
    pub image_retry_budget: Duration,
    /// When a row that failed transiently is delivered again.
    pub redelivery: RedeliveryBackoff,
}

impl From<&Config> for WorkerConfig {
    fn from(config: &Config) -> Self {
        Self {
            max_receive_count: config.max_receive_count,
            origin_max_concurrency: config.origin_max_concurrency.max(1),
            download_budget: config.worker_download_budget.max(config.fetch.max_bytes),
            max_image_bytes: config.fetch.max_bytes,
            image_budget: config.fetch.timeout + COMPRESSION_BUDGET + RECORD_MARGIN,
            image_retry_budget: IMAGE_RETRY_BUDGET,
            redelivery: config.redelivery,
        }
    }
}

impl WorkerConfig {
    /// [`WorkerConfig::image_budget`] for an image encoded as `spec` asks: its compression
    /// part is [`OutputSpec::compression_budget`] (AVIF and quality searches take longer than
    /// [`COMPRESSION_BUDGET`]).
    #[must_use]
    pub fn image_budget_for(&self, spec: &OutputSpec) -> Duration {
        (self.image_budget + spec.compression_budget()).saturating_sub(COMPRESSION_BUDGET)
    }
}

/// The repository roles a worker uses: the row ledger it records into, and reading the
/// request (its status, cancellation, options).
pub trait WorkerRepository: RowLedger + RequestReader {}

impl<T: RowLedger + RequestReader> WorkerRepository for T {}

/// The worker's dependencies.
#[derive(Debug, Clone)]
pub struct App<R, S, O, Q> {
    /// Requests and rows.
    pub repo: R,
    /// Where compressed images go.
    pub store: S,
    /// The rows queue, to delay a row whose origin asked to wait.
    pub queue: Q,
    /// Guarded downloader.
    pub fetcher: Fetcher,
    /// Compression engine.
    pub engine: Engine,
    /// Settings.
    pub config: WorkerConfig,
    /// Download slots per origin host.
    pub origins: OriginGate<O>,
    budget: Arc<Semaphore>,
    /// Requests seen stopped (cancelled or failed), or not stopped as of when (checked before
    /// every download at most once per [`CANCEL_RECHECK`] per request).
    stops: Arc<std::sync::Mutex<std::collections::HashMap<String, Option<Instant>>>>,
}

impl<R: WorkerRepository, S: ObjectStore, O: OriginSlots, Q: RowQueue> App<R, S, O, Q> {
    /// A worker from the process configuration.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(repo: R, store: S, slots: O, queue: Q, config: &Config) -> anyhow::Result<Self> {
        Ok(Self::with_fetcher(
            repo,
            store,
            slots,
            queue,
            Fetcher::new(config.fetch.clone())?,
            config,
        ))
    }

    /// A worker with a given fetcher (tests pass one with a fixed resolver).
    #[must_use]
    pub fn with_fetcher(
        repo: R,
        store: S,
        slots: O,
        queue: Q,
        fetcher: Fetcher,
        config: &Config,
    ) -> Self {
        Self::with_engine(
            repo,
            store,
            slots,
            queue,
            fetcher,
            Engine::per_core(config.decode),
            config,
        )
    }

    /// A worker with a given fetcher and engine (tests pass an engine that misbehaves).
    #[must_use]
    pub fn with_engine(
        repo: R,
        store: S,
        slots: O,
        queue: Q,
        fetcher: Fetcher,
        engine: Engine,
        config: &Config,
    ) -> Self {
        let config = WorkerConfig::from(config);
        let budget_units = u32::try_from(config.download_budget.div_ceil(BUDGET_UNIT))
            .unwrap_or(u32::MAX)
            .min(u32::try_from(Semaphore::MAX_PERMITS).unwrap_or(u32::MAX));
        Self {
            repo,
            store,
            queue,
            fetcher,
            engine,
            origins: OriginGate::new(slots, config.origin_max_concurrency),
            config,
            budget: Arc::new(Semaphore::new(budget_units as usize)),
            stops: Arc::default(),
        }
    }

    /// `true` once `request_id` was cancelled or has failed ([`RowLedger::stop_requested`]);
    /// read from the repository at most once per [`CANCEL_RECHECK`].
    async fn stopped(&self, request_id: &str) -> Result<bool, PortError> {
        let known = self
            .stops
            .lock()
            .ok()
            .and_then(|c| c.get(request_id).copied());
        match known {
            Some(None) => return Ok(true),
            Some(Some(checked)) if checked.elapsed() < CANCEL_RECHECK => return Ok(false),
            _ => {}
        }
        let stopped = self.repo.stop_requested(request_id).await?;
        if let Ok(mut known) = self.stops.lock() {
            if known.len() > 10_000 {
                known.clear();
            }
            known.insert(request_id.to_owned(), (!stopped).then(Instant::now));
        }
        Ok(stopped)
    }

    /// Memory reservation units for a body of `bytes` (never more than the whole budget, so a
    /// reservation can always be granted).
    fn units(&self, bytes: u64) -> u32 {
        let total =
            u32::try_from(self.config.download_budget.div_ceil(BUDGET_UNIT)).unwrap_or(u32::MAX);
        u32::try_from(bytes.div_ceil(BUDGET_UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, total.max(1))
    }
}

pub use pixpress_app::deadline::Deadline;

/// What processing one row came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowProcessed {
    /// Outcome recorded; `Some(status)` when this row completed the request.
    Recorded(Option<RequestStatus>),
    /// The row was recorded before (a redelivery); nothing was redone.
    AlreadyDone,
}

/// Why a row must be retried.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The message body is not a row job of a known version.
    #[error("malformed row job: {0}")]
    Malformed(String),
    /// An image met transient trouble and attempts remain.
    #[error("image {position} ({url}) failed transiently ({code}): {message}")]
    Transient {
        /// Zero-based position in the row.
        position: usize,
        /// The input URL.
        url: String,
        /// Stable code.
        code: String,
        /// Detail.
        message: String,
    },
    /// An image was not started: the invocation could not have finished it before its
    /// deadline.
    #[error("image {position} ({url}) not started: the invocation's deadline is too close")]
    Deadline {
        /// Zero-based position in the row.
        position: usize,
        /// The input URL.
        url: String,
    },
    /// An image was not started: its host asked to be left alone (429 or 503 with
    /// `Retry-After`) for longer than the invocation has left.
    #[error("image {position} ({url}) delayed: its host asked to wait {wait:?}")]
    BackedOff {
        /// Zero-based position in the row.
        position: usize,
        /// The input URL.
        url: String,
        /// How long the host asked to wait.
        wait: Duration,
    },
    /// The repository failed.
    #[error(transparent)]
    Storage(#[from] PortError),
}

impl ProcessError {
    /// `true` when SQS should deliver the message again. Malformed messages are also returned,
    /// so they end in the dead-letter queue for inspection instead of vanishing.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Malformed(_)
            | Self::Transient { .. }
            | Self::Deadline { .. }
            | Self::BackedOff { .. } => true,
            Self::Storage(e) => e.is_retryable(),
        }
    }
}

/// An image failure with its retry classification.
enum ImageFailure {
    Failed {
        code: String,
        message: String,
        retryable: bool,
    },
    NotStarted,
    BackedOff(Duration),
    Cancelled,
}

impl ImageFailure {
    fn failed(code: impl Into<String>, message: impl std::fmt::Display, retryable: bool) -> Self {
        Self::Failed {
            code: code.into(),
            message: text::message(&message.to_string()),
            retryable,
        }
    }
}

/// The host a URL names, for its download limit (the whole URL when it has none: it fails at
/// once anyway).
fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        .unwrap_or_else(|| url.to_owned())
}

/// Downloads `url` through its host's slots, trying again after a back-off or a broken
/// connection as the module docs say. Returns the body and its memory reservation, held until
/// compression ends.
async fn download<R: WorkerRepository, S: ObjectStore, O: OriginSlots, Q: RowQueue>(
    app: &App<R, S, O, Q>,
    job: &RowJob,
    url: &str,
    deadline: Deadline,
) -> Result<(Fetched, OwnedSemaphorePermit), ImageFailure> {
    let host = host_of(url);
    let (mut quick, mut backed_off) = (0, 0);
    loop {
        let permit = match app
            .origins
            .acquire(
                &host,
                deadline,
                app.config.image_budget_for(&job.output_spec),
            )
            .await
        {
            Ok(permit) => permit,
            Err(NoSlot::BackedOff(wait)) => return Err(ImageFailure::BackedOff(wait)),
            Err(NoSlot::Deadline) => return Err(ImageFailure::NotStarted),
        };
        // The request may have been cancelled (or have failed) while this download waited for
        // its slot.
        match app.stopped(&job.request_id).await {
            Ok(true) => return Err(ImageFailure::Cancelled),
            Ok(false) => {}
            Err(e) => {
                let retryable = e.is_retryable();
                return Err(ImageFailure::failed("storage_error", e, retryable));
            }
        }
        let downloading = Instant::now();
        let attempt = async {
            let download = app.fetcher.open(url).await?;
            // Memory for the body is reserved before it is read and held until compression
            // ends, so downloaded-but-uncompressed bytes never exceed the budget.
            let expected = download
                .content_length()
                .unwrap_or(app.config.max_image_bytes)
                .min(app.config.max_image_bytes);
            // The wait ends while the body, its compression and the record still fit before
            // the deadline; past that the image is left for the next delivery.
            let reserving = app.budget.clone().acquire_many_owned(app.units(expected));
            let budget = app.config.image_budget_for(&job.output_spec);
            let Some(reserved) = deadline.within(budget, reserving).await else {
                return Ok(None);
            };
            let fetched = download.body().await?;
            Ok::<_, pixpress_fetch::FetchError>(Some((fetched, reserved)))
        };
        match attempt.await {
            Ok(Some((fetched, Ok(reserved)))) => {
                permit.finish(Outcome::Answered);
                metrics::histogram!("download_ms").record(elapsed_ms(downloading));
                return Ok((fetched, reserved));
            }
            Ok(Some((_, Err(e)))) => {
                permit.finish(Outcome::Neutral);
                return Err(ImageFailure::failed("internal", e, true));
            }
            Ok(None) => {
                permit.finish(Outcome::Neutral);
                return Err(ImageFailure::NotStarted);
            }
            Err(e) => {
                let outcome = e.outcome();
                permit.finish(outcome);
                if outcome == Outcome::Overloaded && backed_off < BACKOFF_RETRIES {
                    backed_off += 1;
                    metrics::counter!("origin_backoffs").increment(1);
                    app.origins.back_off(&host, e.retry_after).await;
                    continue;
                }
                // A reset, a refused connection or a 5xx may pass at once; a timeout or a
                // stuck body would only cost the same wait again.
                if outcome == Outcome::Failed
                    && !matches!(
                        e.kind,
                        pixpress_fetch::FetchErrorKind::Timeout
                            | pixpress_fetch::FetchErrorKind::TooSlow
                    )
                    && quick < QUICK_RETRIES
                {
                    quick += 1;
                    // Jittered, so the retries of one burst of resets do not arrive together.
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(20..=200))).await;
                    continue;
                }
                return Err(ImageFailure::failed(e.code(), &e.message, e.is_retryable()));
            }
        }
    }
}

async fn process_image<R: WorkerRepository, S: ObjectStore, O: OriginSlots, Q: RowQueue>(
    app: &App<R, S, O, Q>,
    job: &RowJob,
    position: usize,
    url: &str,
    deadline: Deadline,
) -> Result<ImageOutcome, ImageFailure> {
    let (compressed, bytes_in) = {
        // Boxed: the download's retry loop would otherwise nest the handler's future type
        // past the compiler's layout depth.
        let (fetched, reserved) = Box::pin(download(app, job, url, deadline)).await?;
        let bytes_in = fetched.bytes.len() as u64;
        let compressing = Instant::now();
        // Images queue for the engine's threads: the wait ends while the image can still be
        // stored and its row recorded. The body's reservation goes with the job, so memory
        // stays accounted for while an engine thread still holds the body of an image nobody
        // waits for (a job not started by then is skipped).
        let compressing_in_time =
            app.engine
                .compress_holding(fetched.bytes, job.output_spec, reserved);
        let Some(compressed) = deadline.within(RECORD_MARGIN, compressing_in_time).await else {
            return Err(ImageFailure::NotStarted);
        };
        let compressed = compressed.map_err(|e| {
            tracing::info!(url, error = %e, "image could not be compressed");
            ImageFailure::failed(e.code(), e.client_message(), e.is_retryable())
        })?;
        metrics::histogram!("compress_ms").record(elapsed_ms(compressing));
        (compressed, bytes_in)
    };
    let storing = Instant::now();
    let key = image_key(
        &job.tenant,
        &job.request_id,
        job.row_index,
        position,
        job.output_spec.format.extension(),
    );
    let bytes_out = compressed.bytes.len() as u64;
    app.store
        .put(
            &key,
            compressed.bytes.into(),
            job.output_spec.format.content_type(),
        )
        .await
        .map_err(|e| {
            tracing::warn!(%key, error = %e, "storing an image failed");
            ImageFailure::failed(
                "storage_error",
                "the compressed image could not be stored",
                e.is_retryable(),
            )
        })?;
    metrics::histogram!("store_ms").record(elapsed_ms(storing));
    metrics::counter!("images_ok").increment(1);
    metrics::counter!("bytes_in").increment(bytes_in);
    metrics::counter!("bytes_out").increment(bytes_out);
    Ok(ImageOutcome {
        status: ImageStatus::Ok,
        output_url: Some(app.store.public_url(&key)),
        output_key: Some(key),
        error_code: None,
        error: None,
        bytes_in: Some(bytes_in),
        bytes_out: Some(bytes_out),
        width: Some(compressed.width),
        height: Some(compressed.height),
        kept_original: compressed.kept_original,
        quality: Some(compressed.quality),
        score: compressed.score.and_then(Score::new),
    })
}

/// Milliseconds since `since`, for a latency histogram.
fn elapsed_ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// Flips the request when `recorded` says every row is done.
async fn complete_if_done<R: WorkerRepository>(
    repo: &R,
    request_id: &str,
    recorded: RowRecorded,
) -> Result<Option<RequestStatus>, ProcessError> {
    if !recorded.all_rows_done() {
        return Ok(None);
    }
    match repo.complete(request_id, Utc::now()).await? {
        Transition::Applied(status) => Ok(Some(status)),
        Transition::NotApplied => Ok(None),
    }
}

/// Error code of the images of a row processed after its request was cancelled.
pub const CANCELLED: &str = "cancelled";

/// Processes one row job at receive number `receive_count` (see the crate docs). A row of a
/// request whose cancellation was asked is recorded without fetching: images an earlier
/// delivery finished keep their outcome, the others fail as [`CANCELLED`].
///
/// # Errors
/// [`ProcessError`]: the message should be delivered again.
pub async fn process_row<R: WorkerRepository, S: ObjectStore, O: OriginSlots, Q: RowQueue>(
    app: &App<R, S, O, Q>,
    job: &RowJob,
    receive_count: u32,
    deadline: Deadline,
) -> Result<RowProcessed, ProcessError> {
    if job.version != ROW_JOB_VERSION {
        return Err(ProcessError::Malformed(format!(
            "unknown version {}",
            job.version
        )));
    }
    // A first delivery of a fresh row finds it as the ingest wrote it (pending, no progress),
    // so only a redelivery, or a job sent again for a row with progress, reads it: one read
    // unit less per row. A duplicate first delivery of a row recorded meanwhile (SQS delivers
    // at least once) is refused by the row's condition when its outcome is written, and the
    // first outcome stays.
    let existing = if receive_count > 1 || job.resume {
        app.repo
            .list_rows(&job.request_id, job.row_index.checked_sub(1), 1)
            .await?
    } else {
        RowPage::default()
    };
    if let Some(done) = existing
        .rows
        .first()
        .filter(|r| r.index == job.row_index && r.state == RowState::Done)
    {
        // A redelivery after the outcome was recorded: repeat the count and the completion
        // check, which an invocation that died after recording may not have reached (the
        // row's own write is refused by its condition).
        let recorded = app
            .repo
            .record_row_outcome(&job.request_id, job.row_index, &done.images, Utc::now())
            .await?;
        complete_if_done(&app.repo, &job.request_id, recorded).await?;
        return Ok(RowProcessed::AlreadyDone);
    }
    let earlier: Vec<ImageProgress> = existing
        .rows
        .first()
        .filter(|r| r.index == job.row_index)
        .map(|r| r.progress.clone())
        .unwrap_or_default();
    let progress_of = |position: usize| {
        earlier
            .iter()
            .find(|p| p.position as usize == position)
            .cloned()
            .unwrap_or(ImageProgress {
                position: u32::try_from(position).unwrap_or(u32::MAX),
                outcome: None,
                spent_ms: 0,
                failures: 0,
            })
    };
    // Read at most once a second per request ([`CANCEL_RECHECK`]), not once per row.
    if app.stopped(&job.request_id).await? {
        // Cancelled (or failed): what an earlier delivery finished stays, the rest is not
        // fetched.
        let images: Vec<ImageOutcome> = (0..job.input_urls.len())
            .map(|position| {
                progress_of(position).outcome.unwrap_or_else(|| {
                    ImageOutcome::failed(
                        CANCELLED,
                        "the request was cancelled (or failed) before this image was processed",
                    )
                })
            })
            .collect();
        metrics::counter!("rows_cancelled").increment(1);
        let recorded = app
            .repo
            .record_row_outcome(&job.request_id, job.row_index, &images, Utc::now())
            .await?;
        let completed = complete_if_done(&app.repo, &job.request_id, recorded).await?;
        return Ok(match recorded {
            RowRecorded::Recorded { .. } => RowProcessed::Recorded(completed),
            RowRecorded::AlreadyRecorded { .. } => RowProcessed::AlreadyDone,
        });
    }
    let last_attempt = receive_count >= app.config.max_receive_count;
    // Images finished by an earlier delivery are not fetched again.
    let results: Vec<(Result<ImageOutcome, ImageFailure>, Duration)> =
        futures::future::join_all(job.input_urls.iter().enumerate().map(|(position, url)| {
            let finished = progress_of(position).outcome;
            async move {
                if let Some(outcome) = finished {
                    return (Ok(outcome), Duration::ZERO);
                }
                let started = Instant::now();
                let result = process_image(app, job, position, url, deadline).await;
                (result, started.elapsed())
            }
        }))
        .await;
    let mut images = Vec::with_capacity(results.len());
    let mut progress = Vec::with_capacity(results.len());
    let mut retry: Option<ProcessError> = None;
    for (position, (result, spent)) in results.into_iter().enumerate() {
        let before = progress_of(position);
        let spent_ms = before
            .spent_ms
            .saturating_add(u64::try_from(spent.as_millis()).unwrap_or(u64::MAX));
        match result {
            Ok(outcome) => {
                progress.push(ImageProgress {
                    outcome: Some(outcome.clone()),
                    ..before
                });
                images.push(outcome);
            }
            Err(ImageFailure::NotStarted) => {
                progress.push(before);
                retry.get_or_insert(ProcessError::Deadline {
                    position,
                    url: text::message(&job.input_urls[position]),
                });
            }
            Err(ImageFailure::Cancelled) => {
                let cancelled = ImageOutcome::failed(
                    CANCELLED,
                    "the request was cancelled (or failed) before this image was processed",
                );
                progress.push(ImageProgress {
                    outcome: Some(cancelled.clone()),
                    ..before
                });
                images.push(cancelled);
            }
            Err(ImageFailure::BackedOff(wait)) => {
                progress.push(before);
                retry.get_or_insert(ProcessError::BackedOff {
                    position,
                    url: text::message(&job.input_urls[position]),
                    wait,
                });
            }
            Err(ImageFailure::Failed {
                code,
                message,
                retryable,
            }) if retryable
                && !last_attempt
                && Duration::from_millis(spent_ms) < app.config.image_retry_budget =>
            {
                progress.push(ImageProgress {
                    outcome: None,
                    spent_ms,
                    failures: before.failures + 1,
                    ..before
                });
                metrics::counter!("image_retries", "code" => code.clone()).increment(1);
                retry.get_or_insert(ProcessError::Transient {
                    position,
                    url: text::message(&job.input_urls[position]),
                    code,
                    message,
                });
            }
            Err(ImageFailure::Failed {
                code,
                message,
                retryable,
            }) => {
                let message = if retryable {
                    format!(
                        "{message} (gave up after {} attempts, {:.0} s)",
                        before.failures + 1,
                        Duration::from_millis(spent_ms).as_secs_f64()
                    )
                } else {
                    message
                };
                metrics::counter!("images_failed", "code" => code.clone()).increment(1);
                let failed = ImageOutcome::failed(code, message);
                progress.push(ImageProgress {
                    outcome: Some(failed.clone()),
                    ..before
                });
                images.push(failed);
            }
        }
    }
    if let Some(error) = retry {
        // What this delivery achieved is kept for the next one: finished images are not
        // fetched again, and time spent on failing ones counts toward their budget.
        let worth_keeping = progress
            .iter()
            .any(|p| p.outcome.is_some() || p.spent_ms > 0);
        if worth_keeping && progress != earlier {
            app.repo
                .record_row_progress(&job.request_id, job.row_index, &progress)
                .await?;
        }
        return Err(error);
    }
    let recorded = match app
        .repo
        .record_row_outcome(&job.request_id, job.row_index, &images, Utc::now())
        .await
    {
        Ok(recorded) => recorded,
        Err(error) => {
            // The outcome could not be recorded or counted (throttled past the in-process
            // retries, or an answer lost): the finished images are kept as progress (refused
            // if the row was recorded), so the next delivery downloads nothing.
            if progress != earlier
                && let Err(e) = app
                    .repo
                    .record_row_progress(&job.request_id, job.row_index, &progress)
                    .await
            {
                tracing::warn!(error = %e, "the row's progress could not be saved either");
            }
            return Err(error.into());
        }
    };
    let completed = complete_if_done(&app.repo, &job.request_id, recorded).await?;
    Ok(match recorded {
        RowRecorded::Recorded { .. } => RowProcessed::Recorded(completed),
        RowRecorded::AlreadyRecorded { .. } => RowProcessed::AlreadyDone,
    })
}

async fn process_message<R: WorkerRepository, S: ObjectStore, O: OriginSlots, Q: RowQueue>(
    app: &App<R, S, O, Q>,
    message: &SqsMessage,
    deadline: Deadline,
) -> Result<RowProcessed, ProcessError> {
    let body = message.body.as_deref().unwrap_or_default();
    let job: RowJob = serde_json::from_str(body)
        .map_err(|e| ProcessError::Malformed(text::message(&e.to_string())))?;
    process_row(app, &job, receive_count(message), deadline).await
}

/// How many times SQS has delivered `message` (`ApproximateReceiveCount`, from 1).
fn receive_count(message: &SqsMessage) -> u32 {
    message
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|c| c.parse().ok())
        .unwrap_or(1)
}

impl ProcessError {
    /// How long the row stays hidden before it is delivered again, when not the queue's
    /// visibility timeout: after [`RedeliveryBackoff`] for transient trouble and for a row
    /// the deadline cut short (each delivery spends one of its receives, so it must not come
    /// straight back), a host's `Retry-After` when it asked. A malformed message waits out
    /// the timeout on its way to the dead-letter queue.
    #[must_use]
    pub fn redelivery_after(
        &self,
        receive_count: u32,
        backoff: &RedeliveryBackoff,
    ) -> Option<Duration> {
        match self {
            Self::Malformed(_) => None,
            Self::BackedOff { wait, .. } => Some(*wait),
            Self::Deadline { .. } | Self::Transient { .. } | Self::Storage(_) => {
                Some(backoff.delay(receive_count))
            }
        }
    }
}

/// Handles one SQS batch; returns the messages to retry as batch item failures.
///
/// # Errors
/// Never: every failure is reported per message.
pub async fn handle<R: WorkerRepository, S: ObjectStore, O: OriginSlots, Q: RowQueue>(
    app: &App<R, S, O, Q>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, lambda_runtime::Error> {
    let deadline = Deadline::from_epoch_millis(event.context.deadline);
    app.origins.invocation_started();
    // Every record of the batch runs at once; downloads and compression are bounded inside.
    let records = &event.payload.records;
    let mode = BatchMode::Concurrent;
    let response = batch_item_failures(records, mode, "processing a row", |message| async move {
        // Every outcome is logged here, at the level it deserves: nothing is left to the
        // helper's generic error line.
        Ok::<_, std::convert::Infallible>(match process_message(app, message, deadline).await {
            Ok(processed) => {
                tracing::debug!(?processed, "row processed");
                false
            }
            Err(e) if e.is_retryable() => {
                // Back when the origin is ready or after a jittered backoff, not after the
                // queue's visibility timeout.
                let after = e.redelivery_after(receive_count(message), &app.config.redelivery);
                if let Some(wait) = after {
                    let receipt = message.receipt_handle.as_deref().unwrap_or_default();
                    if let Err(e) = app.queue.retry_row_later(receipt, wait).await {
                        tracing::warn!(error = %e, "a row to retry could not be hidden; it comes back after the visibility timeout");
                    }
                }
                if matches!(e, ProcessError::BackedOff { .. }) {
                    tracing::info!(?after, "row delayed: its origin asked to wait");
                } else {
                    tracing::warn!(error = %e, ?after, "row will be retried");
                }
                true
            }
            // Never dropped: deleting the message would strand its request. Redelivered until
            // it dead-letters, where the row is recorded as failed (`dead_lettered`).
            Err(e) => {
                tracing::error!(error = %e, "row cannot be processed; it will dead-letter");
                true
            }
        })
    })
    .await;
    app.origins.invocation_finished().await;
    Ok(response)
}
