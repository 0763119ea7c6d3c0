//! # row-worker — downloads, compresses and stores the images of CSV rows
//!
//! Trigger: the rows SQS queue (batch, `ReportBatchItemFailures`); locally, the CLI's pump.
//!
//! Per message (records of a batch run concurrently, downloads bounded by
//! `WORKER_CONCURRENCY`, compression on one engine thread per core):
//! 1. parse the [`RowJob`]; skip work if the row is already recorded (a redelivery);
//! 2. per image URL: guarded download → compression engine → object store
//!    (`images/<request>/<row>-<position>.jpg`);
//! 3. record the row outcome (idempotent per row: a conditional row update and the counter
//!    increment together);
//! 4. when that was the last row, flip the request to `COMPLETED` or `COMPLETED_WITH_ERRORS`
//!    with one conditional write (exactly one caller wins).
//!
//! Failure semantics: a bad image (404, not an image, too large, blocked address, decode error)
//! is a recorded per-image failure. Transient trouble (timeouts, 5xx, 429, storage errors)
//! returns the message as a batch item failure so SQS retries it — unless this is the last
//! permitted receive (`MAX_RECEIVE_COUNT`), which records the failure so the request still
//! completes. The handler returns `Err` only if the whole batch must be retried.
//!
//! Env vars: `MAX_RECEIVE_COUNT`, `WORKER_CONCURRENCY`, `MAX_IMAGE_BYTES`, `MAX_IMAGE_PIXELS`,
//! `MAX_IMAGE_SIDE`, `FETCH_*`, `ALLOW_LOOPBACK` (see [`pixpress::config::vars`]).

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::Utc;
use lambda_runtime::LambdaEvent;
use pixpress::config::Config;
use pixpress::domain::keys::image_key;
use pixpress::domain::model::{
    ImageOutcome, ImageStatus, ROW_JOB_VERSION, RequestStatus, RowJob, RowState,
};
use pixpress::fetch::Fetcher;
use pixpress::image::Engine;
use pixpress::ports::{ObjectStore, PortError, RequestRepository, RowRecorded, Transition};
use tokio::sync::Semaphore;

/// Settings of the worker.
#[derive(Debug, Clone, Copy)]
pub struct WorkerConfig {
    /// SQS `maxReceiveCount`: the receive with this count is the last one.
    pub max_receive_count: u32,
    /// Downloads in flight at once per invocation.
    pub concurrency: usize,
}

/// The worker's dependencies.
#[derive(Debug, Clone)]
pub struct App<R, S> {
    /// Requests and rows.
    pub repo: R,
    /// Where compressed images go.
    pub store: S,
    /// Guarded downloader.
    pub fetcher: Fetcher,
    /// Compression engine.
    pub engine: Engine,
    /// Settings.
    pub config: WorkerConfig,
    downloads: Arc<Semaphore>,
}

impl<R: RequestRepository, S: ObjectStore> App<R, S> {
    /// A worker from the process configuration.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(repo: R, store: S, config: &Config) -> anyhow::Result<Self> {
        Ok(Self::with_fetcher(
            repo,
            store,
            Fetcher::new(config.fetch.clone())?,
            config,
        ))
    }

    /// A worker with a given fetcher (tests pass one with a fixed resolver).
    #[must_use]
    pub fn with_fetcher(repo: R, store: S, fetcher: Fetcher, config: &Config) -> Self {
        Self {
            repo,
            store,
            fetcher,
            engine: Engine::per_core(config.decode),
            config: WorkerConfig {
                max_receive_count: config.max_receive_count,
                concurrency: config.worker_concurrency,
            },
            downloads: Arc::new(Semaphore::new(config.worker_concurrency.max(1))),
        }
    }
}

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
            Self::Malformed(_) | Self::Transient { .. } => true,
            Self::Storage(e) => e.is_retryable(),
        }
    }
}

/// An image failure with its retry classification.
struct ImageFailure {
    code: String,
    message: String,
    retryable: bool,
}

async fn process_image<R: RequestRepository, S: ObjectStore>(
    app: &App<R, S>,
    job: &RowJob,
    position: usize,
    url: &str,
) -> Result<ImageOutcome, ImageFailure> {
    let fetched = {
        let _permit = app.downloads.acquire().await.map_err(|e| ImageFailure {
            code: "internal".into(),
            message: e.to_string(),
            retryable: true,
        })?;
        app.fetcher.get(url).await.map_err(|e| ImageFailure {
            code: e.code(),
            message: e.message.clone(),
            retryable: e.is_retryable(),
        })?
    };
    let bytes_in = fetched.bytes.len() as u64;
    let compressed = app
        .engine
        .compress(fetched.bytes, job.output_spec)
        .await
        .map_err(|e| ImageFailure {
            code: e.code().to_owned(),
            message: e.to_string(),
            retryable: false,
        })?;
    let key = image_key(
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
        .map_err(|e| ImageFailure {
            code: "storage_error".into(),
            message: e.to_string(),
            retryable: true,
        })?;
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
    })
}

/// Processes one row job at receive number `receive_count` (see the crate docs).
///
/// # Errors
/// [`ProcessError`]: the message should be delivered again.
pub async fn process_row<R: RequestRepository, S: ObjectStore>(
    app: &App<R, S>,
    job: &RowJob,
    receive_count: u32,
) -> Result<RowProcessed, ProcessError> {
    if job.version != ROW_JOB_VERSION {
        return Err(ProcessError::Malformed(format!(
            "unknown version {}",
            job.version
        )));
    }
    let existing = app
        .repo
        .list_rows(&job.request_id, job.row_index.checked_sub(1), 1)
        .await?;
    if existing
        .rows
        .first()
        .is_some_and(|r| r.index == job.row_index && r.state == RowState::Done)
    {
        // A redelivery after the outcome was recorded: make sure the flip happened too.
        app.repo.complete(&job.request_id, Utc::now()).await?;
        return Ok(RowProcessed::AlreadyDone);
    }
    let last_attempt = receive_count >= app.config.max_receive_count;
    let results: Vec<Result<ImageOutcome, ImageFailure>> = futures::future::join_all(
        job.input_urls
            .iter()
            .enumerate()
            .map(|(position, url)| process_image(app, job, position, url)),
    )
    .await;
    let mut images = Vec::with_capacity(results.len());
    for (position, result) in results.into_iter().enumerate() {
        match result {
            Ok(outcome) => images.push(outcome),
            Err(failure) if failure.retryable && !last_attempt => {
                return Err(ProcessError::Transient {
                    position,
                    url: job.input_urls[position].clone(),
                    code: failure.code,
                    message: failure.message,
                });
            }
            Err(failure) => {
                let message = if failure.retryable {
                    format!(
                        "{} (gave up after {receive_count} attempts)",
                        failure.message
                    )
                } else {
                    failure.message
                };
                images.push(ImageOutcome::failed(failure.code, message));
            }
        }
    }
    let now = Utc::now();
    match app
        .repo
        .record_row_outcome(&job.request_id, job.row_index, &images, now)
        .await?
    {
        RowRecorded::Recorded(counters) => {
            if counters.rows_done < counters.rows_total {
                return Ok(RowProcessed::Recorded(None));
            }
            match app.repo.complete(&job.request_id, now).await? {
                Transition::Applied(status) => Ok(RowProcessed::Recorded(Some(status))),
                Transition::NotApplied => Ok(RowProcessed::Recorded(None)),
            }
        }
        RowRecorded::AlreadyRecorded => {
            app.repo.complete(&job.request_id, now).await?;
            Ok(RowProcessed::AlreadyDone)
        }
    }
}

async fn process_message<R: RequestRepository, S: ObjectStore>(
    app: &App<R, S>,
    message: &SqsMessage,
) -> Result<RowProcessed, ProcessError> {
    let body = message.body.as_deref().unwrap_or_default();
    let job: RowJob =
        serde_json::from_str(body).map_err(|e| ProcessError::Malformed(e.to_string()))?;
    let receive_count = message
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|c| c.parse().ok())
        .unwrap_or(1);
    process_row(app, &job, receive_count).await
}

/// Handles one SQS batch; returns the messages to retry as batch item failures.
///
/// # Errors
/// Never: every failure is reported per message.
pub async fn handle<R: RequestRepository, S: ObjectStore>(
    app: &App<R, S>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, lambda_runtime::Error> {
    // Every record of the batch runs at once; downloads and compression are bounded inside.
    let results: Vec<(Option<String>, Result<RowProcessed, ProcessError>)> =
        futures::future::join_all(event.payload.records.into_iter().map(|message| async move {
            let result = process_message(app, &message).await;
            (message.message_id, result)
        }))
        .await;
    let mut response = SqsBatchResponse::default();
    for (message_id, result) in results {
        let message_id = message_id.unwrap_or_default();
        match result {
            Ok(processed) => tracing::debug!(%message_id, ?processed, "row processed"),
            Err(e) if e.is_retryable() => {
                tracing::warn!(%message_id, error = %e, "row will be retried");
                response.add_failure(message_id);
            }
            Err(e) => tracing::error!(%message_id, error = %e, "row dropped"),
        }
    }
    Ok(response)
}
