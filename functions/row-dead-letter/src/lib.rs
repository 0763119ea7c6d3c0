//! # row-dead-letter — records dead-lettered rows as failed, so their request completes
//!
//! Trigger: the rows dead-letter queue (batch, `ReportBatchItemFailures`); locally, the CLI's
//! pump. A row message lands there after `MAX_RECEIVE_COUNT` deliveries that all failed (the
//! worker crashed, timed out, or met an error it cannot classify); without this function its
//! request would stay `PROCESSING` for ever, with no output CSV and no webhook.
//!
//! Per message:
//! 1. parse the [`RowJob`]; a body that is not one is logged and dropped (no request to
//!    complete);
//! 2. record the row with every image failed, code `dead_lettered` — the same idempotent,
//!    conditional row outcome the worker writes, so a row the worker did record (a late
//!    success) is left as it is;
//! 3. when that was the last row, flip the request to its terminal status (one conditional
//!    write), which the completion notifier turns into the output CSV and the webhook.
//!
//! Failure semantics: storage failures return the message as a batch item failure; it stays
//! in the dead-letter queue (14 days) and is retried. An alarm watches the age of the queue's
//! oldest message (this function failing) and this function's errors.
//!
//! Env vars: `TABLE_NAME` (through [`pixpress_aws::AwsBackends`]), `MAX_RECEIVE_COUNT`.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::Utc;
use lambda_runtime::LambdaEvent;
use pixpress_app::config::Config;
use pixpress_app::ports::{PortError, RowLedger, RowRecorded, Transition};
use pixpress_app::sqs_batch::{BatchMode, batch_item_failures};
use pixpress_domain::model::{ImageOutcome, RequestStatus, RowJob};
use pixpress_domain::text;

/// The error code of every image of a dead-lettered row.
pub const DEAD_LETTERED: &str = "dead_lettered";

/// The recorder's dependencies.
#[derive(Debug, Clone)]
pub struct App<R> {
    /// Requests and rows.
    pub repo: R,
    /// Deliveries a row message had before it dead-lettered (`MAX_RECEIVE_COUNT`), for the
    /// message.
    pub max_receive_count: u32,
}

impl<R: RowLedger> App<R> {
    /// A recorder from the process configuration.
    #[must_use]
    pub fn new(repo: R, config: &Config) -> Self {
        Self {
            repo,
            max_receive_count: config.max_receive_count,
        }
    }
}

/// What recording one dead-lettered row came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Recorded as failed; `Some(status)` when this row completed the request.
    Failed(Option<RequestStatus>),
    /// The row was recorded before (the worker finished it after all); nothing changed.
    AlreadyRecorded,
    /// The body is not a row job; dropped.
    Malformed,
}

/// Records the row of `job` as dead-lettered and completes its request if that was the last
/// row.
///
/// # Errors
/// [`PortError`] on storage failure (the message is retried).
pub async fn record_dead_letter<R: RowLedger>(
    app: &App<R>,
    job: &RowJob,
) -> Result<Recorded, PortError> {
    let message = text::message(&format!(
        "the row failed on all {} delivery attempts and went to the dead-letter queue",
        app.max_receive_count
    ));
    let images: Vec<ImageOutcome> = job
        .input_urls
        .iter()
        .map(|_| ImageOutcome::failed(DEAD_LETTERED, message.clone()))
        .collect();
    let now = Utc::now();
    let recorded = app
        .repo
        .record_row_outcome(&job.request_id, job.row_index, &images, now)
        .await?;
    let completed = if recorded.all_rows_done() {
        match app.repo.complete(&job.request_id, now).await? {
            Transition::Applied(status) => Some(status),
            Transition::NotApplied => None,
        }
    } else {
        None
    };
    Ok(match recorded {
        RowRecorded::Recorded { .. } => {
            metrics::counter!("rows_dead_lettered").increment(1);
            Recorded::Failed(completed)
        }
        RowRecorded::AlreadyRecorded { .. } => Recorded::AlreadyRecorded,
    })
}

async fn process_message<R: RowLedger>(
    app: &App<R>,
    message: &SqsMessage,
) -> Result<Recorded, PortError> {
    let body = message.body.as_deref().unwrap_or_default();
    match serde_json::from_str::<RowJob>(body) {
        Ok(job) => record_dead_letter(app, &job).await,
        Err(e) => {
            tracing::error!(
                message_id = message.message_id.as_deref().unwrap_or_default(),
                error = %text::message(&e.to_string()),
                "dead-lettered message is not a row job; dropped"
            );
            Ok(Recorded::Malformed)
        }
    }
}

/// Handles one batch from the rows dead-letter queue; storage failures come back as batch item
/// failures.
///
/// # Errors
/// Never: every failure is reported per message.
pub async fn handle<R: RowLedger>(
    app: &App<R>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, lambda_runtime::Error> {
    let records = &event.payload.records;
    let mode = BatchMode::Concurrent;
    Ok(batch_item_failures(
        records,
        mode,
        "recording a dead-lettered row",
        |message| async move {
            let recorded = process_message(app, message).await?;
            tracing::warn!(?recorded, "dead-lettered row recorded");
            Ok::<_, PortError>(false)
        },
    )
    .await)
}
