//! # s3-ingest — ingests CSVs uploaded to the bucket
//!
//! Triggers: S3 `ObjectCreated` events for `uploads/*.csv` (large CSVs go straight to S3 with a
//! presigned PUT), and the ingest queue of chunk jobs (SQS, `ReportBatchItemFailures`);
//! locally, `pixpress run` stores the CSV and hands this function the event.
//!
//! Per S3 record:
//! 1. decode the object key (S3 event keys are form-encoded: `+` is a space, `%XX` a byte);
//! 2. ignore keys outside `uploads/` or not ending in `.csv` (outputs live under other
//!    prefixes, so a write of ours can never re-trigger this function);
//! 3. take the request id from the key of a presigned upload (`uploads/<request_id>.csv`, as
//!    `POST /upload-urls` issued it), else derive it from bucket, key and object version (or
//!    ETag); either way a duplicate event finds the same request and ingests once;
//! 4. run [`pixpress_app::ingest::ingest_object`]: one streaming pass validates the CSV (up to
//!    `MAX_UPLOAD_BYTES`, 1 GiB, and `MAX_UPLOAD_ROWS`, 1,000,000, by default) and cuts it
//!    into chunk jobs of 1,000 rows; the request item is written; the chunk jobs go to the
//!    ingest queue, from which invocations of this function expand them into row items and
//!    row messages ([`handle_chunks`]). Without an ingest queue (`INGEST_QUEUE_URL` unset) the
//!    chunks are expanded in the same invocation.
//!
//! Failure semantics: an invalid or oversized CSV is recorded as a `FAILED` request whose
//! failure lists the first issues with row and column, and nothing is enqueued; storage
//! failures return `Err` so Lambda's asynchronous retries run the event again (idempotent by
//! step 3). A chunk job that fails comes back as a batch item failure; its last receive
//! (`MAX_RECEIVE_COUNT`) marks the request `FAILED` rather than leaving it short of rows. A
//! chunk is written and queued 100 rows at a time; when the invocation's deadline is less than
//! a minute away it stops between two slices and sends the rest of the chunk to the ingest
//! queue as a chunk job of its own, so a slow chunk never times out and nothing is sent twice.
//!
//! Env vars: `MAX_UPLOAD_BYTES`, `MAX_UPLOAD_ROWS`, `MAX_URLS_PER_ROW`, `MAX_URL_LENGTH`,
//! `JPEG_QUALITY`, `MAX_OUTPUT_DIMENSION`, `INGEST_QUEUE_URL`, `MAX_RECEIVE_COUNT`.

use aws_lambda_events::event::s3::{S3Event, S3EventRecord};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};
use lambda_runtime::LambdaEvent;
use percent_encoding::percent_decode_str;
use pixpress_app::config::Config;
use pixpress_app::deadline::Deadline;
use pixpress_app::ingest::{
    CHUNK_ROWS, ChunkExpanded, IngestError, Ingested, ObjectIngest, ObjectIngestSettings,
    ObjectIngested, expand_chunk, ingest_object,
};
use pixpress_app::ports::{
    ChunkQueue, ObjectStore, PortError, RequestIntake, RequestReader, RowQueue,
};
use pixpress_app::retry::RedeliveryBackoff;
use pixpress_app::sqs_batch::{BatchMode, batch_item_failures};
use pixpress_domain::egress::NetworkPolicy;
use pixpress_domain::input_csv::{CsvIssue, CsvLimits};
use pixpress_domain::model::{
    ChunkJob, DEFAULT_TENANT, Failure, OutputSpec, RequestMeta, RequestStatus, Source,
    UploadOptions,
};
use pixpress_domain::storage_keys::{
    UPLOADS_PREFIX, derived_request_id, pending_upload_key, presigned_upload_of, tenant_of_upload,
};

/// Settings of the S3 ingest.
#[derive(Debug, Clone, Copy)]
pub struct IngestConfig {
    /// Limits of the S3 path (`MAX_UPLOAD_BYTES`, `MAX_UPLOAD_ROWS` and the per-row limits).
    pub csv: CsvLimits,
    /// Output spec of S3 uploads.
    pub output: OutputSpec,
    /// What image URLs may reach; a URL it refuses outright is rejected with its row.
    pub egress: NetworkPolicy,
    /// Rows per chunk job ([`CHUNK_ROWS`]).
    pub chunk_rows: u32,
    /// SQS `maxReceiveCount` of the ingest queue: the receive that gives up on a chunk.
    pub max_receive_count: u32,
    /// When a chunk that failed transiently is delivered again.
    pub redelivery: RedeliveryBackoff,
}

impl From<&Config> for IngestConfig {
    fn from(config: &Config) -> Self {
        Self {
            csv: config.upload,
            output: config.output,
            egress: config.fetch.policy,
            chunk_rows: CHUNK_ROWS,
            max_receive_count: config.max_receive_count,
            redelivery: config.chunk_redelivery,
        }
    }
}

/// The function's dependencies.
#[derive(Debug, Clone)]
pub struct App<R, Q, S, C> {
    /// Requests and rows.
    pub repo: R,
    /// Row jobs.
    pub queue: Q,
    /// The bucket the CSVs are read from.
    pub store: S,
    /// The ingest queue of chunk jobs; `None`: chunks are expanded by the invocation that
    /// validated the upload.
    pub chunks: Option<C>,
    /// ARN of the ingest queue's dead-letter queue (`INGEST_DEAD_LETTER_QUEUE_ARN`), which this
    /// function also consumes: a chunk job from it fails its request
    /// ([`fail_dead_lettered_chunk`]). `None` where nothing dead-letters (local runs).
    pub dead_letter_queue_arn: Option<String>,
    /// Settings.
    pub config: IngestConfig,
}

impl<R, Q, S, C> App<R, Q, S, C> {
    fn settings(&self) -> ObjectIngestSettings {
        ObjectIngestSettings {
            limits: self.config.csv,
            egress: self.config.egress,
            chunk_rows: self.config.chunk_rows,
        }
    }
}

/// Decodes an S3 event object key: keys arrive URL-encoded in form style, `+` for a space.
///
/// # Errors
/// When the decoded bytes are not UTF-8.
pub fn decode_event_key(raw: &str) -> Result<String, std::str::Utf8Error> {
    let spaced = raw.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .map(|k| k.into_owned())
}

/// What happened to one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOutcome {
    /// Not an upload we ingest (other event, prefix or extension).
    Ignored,
    /// Ingested (or found already ingested).
    Ingested(Box<Ingested>),
    /// Rejected and recorded as a `FAILED` request.
    Rejected {
        /// The request id the rejection is recorded under.
        request_id: String,
        /// The CSV issues.
        issues: Vec<CsvIssue>,
    },
}

/// Why a record must be retried.
#[derive(Debug, thiserror::Error)]
pub enum S3IngestError {
    /// The key is not valid UTF-8 after decoding.
    #[error("object key is not UTF-8: {0}")]
    BadKey(#[from] std::str::Utf8Error),
    /// The object vanished between the event and the read.
    #[error("object {0} does not exist")]
    Missing(String),
    /// Repository, queue or store failure.
    #[error(transparent)]
    Storage(#[from] PortError),
}

async fn record_rejection<R: RequestIntake + RequestReader>(
    repo: &R,
    tenant: &str,
    request_id: &str,
    key: &str,
    output: OutputSpec,
    failure: Failure,
    now: DateTime<Utc>,
) -> Result<(), PortError> {
    let meta = RequestMeta {
        status: RequestStatus::Failed,
        source: Source::S3,
        source_key: Some(key.to_owned()),
        output_spec: output,
        failure: Some(failure),
        completed_at: Some(now),
        ..RequestMeta::new(request_id.to_owned(), tenant.to_owned(), now)
    };
    repo.create_request(&meta, &[]).await.map(|_| ())
}

/// The options stored for presigned upload `request_id` of `tenant`, if any (a few hundred
/// bytes; a malformed object counts as none).
async fn pending_options<S: ObjectStore>(
    store: &S,
    tenant: &str,
    request_id: &str,
) -> Result<Option<UploadOptions>, PortError> {
    let key = pending_upload_key(tenant, request_id);
    Ok(store
        .get(&key, 64 * 1024)
        .await?
        .and_then(|object| serde_json::from_slice(&object.bytes).ok()))
}

/// The upload an S3 event record announces: its object key, tenant and request id.
struct Upload {
    key: String,
    tenant: String,
    request_id: String,
}

/// The upload of `record`, or `None` for an object this function does not ingest (another
/// event, prefix or extension). The request id is the presigned upload's own, or derived from
/// the bucket, key and object version, so every delivery of the event names the same request.
///
/// # Errors
/// [`S3IngestError::BadKey`] when the key is not UTF-8 once decoded.
fn upload_of(record: &S3EventRecord) -> Result<Option<Upload>, S3IngestError> {
    let created = record
        .event_name
        .as_deref()
        .is_some_and(|name| name.starts_with("ObjectCreated"));
    let raw_key = record.s3.object.key.as_deref().unwrap_or_default();
    let key = decode_event_key(raw_key)?;
    if !created || !key.starts_with(UPLOADS_PREFIX) || !key.to_ascii_lowercase().ends_with(".csv") {
        return Ok(None);
    }
    let bucket = record.s3.bucket.name.as_deref().unwrap_or_default();
    let version = record
        .s3
        .object
        .version_id
        .as_deref()
        .or(record.s3.object.e_tag.as_deref())
        .or(record.s3.object.sequencer.as_deref())
        .unwrap_or_default();
    // `uploads/<tenant>/…` belongs to that tenant (a presigned upload names its request id
    // too); a key directly under `uploads/` is the deployment's own drop.
    let tenant = tenant_of_upload(&key).unwrap_or(DEFAULT_TENANT).to_owned();
    let request_id = presigned_upload_of(&key).map_or_else(
        || derived_request_id(&["s3", &tenant, bucket, &key, version]),
        |(_, id)| id.to_owned(),
    );
    Ok(Some(Upload {
        key,
        tenant,
        request_id,
    }))
}

/// Lambda's record of an S3 event whose invocations all failed (the function's on-failure
/// destination: "Capturing records of Lambda asynchronous invocations", AWS Lambda Developer
/// Guide): why, and the event itself.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedInvocation {
    /// `condition` (`RetriesExhausted`, `EventAgeExceeded`) and the attempts made.
    pub request_context: FailedInvocationContext,
    /// The S3 event that was not ingested.
    pub request_payload: S3Event,
}

/// The context of a [`FailedInvocation`].
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedInvocationContext {
    /// Why Lambda gave up.
    pub condition: String,
    /// Invocations made.
    #[serde(default)]
    pub approximate_invoke_count: u32,
}

/// Ends the requests of an S3 event Lambda gave up on: each upload's request is recorded
/// `FAILED` (`ingest_failed`, saying why), or marked so when it was left part-written, so a
/// client holding its request id sees why instead of a 404 forever. A request that
/// finished is left as it is. Returns how many requests it failed.
///
/// # Errors
/// [`S3IngestError`] on storage failure, so the message comes back.
pub async fn fail_uploads<R: RequestIntake + RequestReader>(
    repo: &R,
    output: OutputSpec,
    failed: &FailedInvocation,
) -> Result<usize, S3IngestError> {
    let mut ended = 0;
    for record in &failed.request_payload.records {
        let Some(upload) = upload_of(record)? else {
            continue;
        };
        let now = Utc::now();
        let failure = Failure {
            code: "ingest_failed".to_owned(),
            message: format!(
                "the upload could not be read after {} attempts ({}); upload it again",
                failed.request_context.approximate_invoke_count.max(1),
                failed.request_context.condition
            ),
            issues: Vec::new(),
        };
        match repo.get_request(&upload.request_id).await? {
            Some(meta) if meta.status.is_terminal() => continue,
            Some(_) => {
                repo.mark_failed(&upload.request_id, &failure, now).await?;
            }
            None => {
                record_rejection(
                    repo,
                    &upload.tenant,
                    &upload.request_id,
                    &upload.key,
                    output,
                    failure,
                    now,
                )
                .await?;
            }
        }
        tracing::warn!(request_id = %upload.request_id, key = %upload.key, "upload given up by Lambda; request failed");
        ended += 1;
    }
    Ok(ended)
}

/// Ends the request of a chunk job that reached the ingest dead-letter queue: every delivery
/// of it died (timeout, crash, out of memory) before it could record its failure, so the
/// request would otherwise wait in `PENDING` for rows that never come. Marked `FAILED`
/// (`ingest_failed`, naming the rows) unless it has ended; a body that is not a chunk job is
/// dropped.
///
/// # Errors
/// [`S3IngestError`] on storage failure, so the message comes back.
pub async fn fail_dead_lettered_chunk<R: RequestIntake>(
    repo: &R,
    body: &str,
) -> Result<(), S3IngestError> {
    let Ok(job) = serde_json::from_str::<ChunkJob>(body) else {
        tracing::error!("malformed dead-lettered chunk message dropped");
        return Ok(());
    };
    let failure = Failure {
        code: "ingest_failed".to_owned(),
        message: format!(
            "rows {} to {} could not be recorded for processing (every attempt was cut short); upload the CSV again",
            u64::from(job.first_row) + 1,
            u64::from(job.first_row) + u64::from(job.rows)
        ),
        issues: Vec::new(),
    };
    let applied = repo
        .mark_failed(&job.request_id, &failure, Utc::now())
        .await?;
    tracing::error!(request_id = %job.request_id, first_row = job.first_row, ?applied, "dead-lettered chunk; the request fails");
    Ok(())
}

/// Ingests one S3 event record.
///
/// # Errors
/// [`S3IngestError`] when the record should be retried.
pub async fn ingest_record<R, Q, S, C>(
    app: &App<R, Q, S, C>,
    record: &S3EventRecord,
) -> Result<RecordOutcome, S3IngestError>
where
    R: RequestIntake + RequestReader,
    Q: RowQueue,
    S: ObjectStore,
    C: ChunkQueue,
{
    let Some(Upload {
        key,
        tenant,
        request_id,
    }) = upload_of(record)?
    else {
        return Ok(RecordOutcome::Ignored);
    };
    let now = Utc::now();
    // A presigned upload's options, stored when its URL was issued.
    let options = match presigned_upload_of(&key) {
        Some((tenant, id)) => pending_options(&app.store, tenant, id).await?,
        None => None,
    };
    let input = ObjectIngest {
        request_id: request_id.clone(),
        tenant: tenant.clone(),
        source: Source::S3,
        key: key.clone(),
        webhook_url: options.as_ref().and_then(|o| o.webhook_url.clone()),
        output_spec: options
            .as_ref()
            .map_or(app.config.output, |o| o.output_spec),
        now,
    };
    let span = pixpress_app::telemetry::request_span(&request_id);
    let rejection = match tracing::Instrument::instrument(
        ingest_object(
            &app.repo,
            &app.queue,
            &app.store,
            app.chunks.as_ref(),
            &app.settings(),
            input,
        ),
        span,
    )
    .await
    {
        Ok(ObjectIngested::Ingested(ingested)) => return Ok(RecordOutcome::Ingested(ingested)),
        Ok(ObjectIngested::Missing) => return Err(S3IngestError::Missing(key)),
        Ok(ObjectIngested::Rejected(rejection)) | Err(IngestError::InvalidCsv(rejection)) => {
            rejection
        }
        // The webhook URL was checked when the upload URL was issued, and an enqueue failure
        // is already recorded as FAILED on the request.
        Err(IngestError::InvalidWebhookUrl(_) | IngestError::EnqueueFailed(_)) => {
            return Ok(RecordOutcome::Ignored);
        }
        // A second PUT to a presigned URL with other bytes: the request made from the first
        // stands, and nothing is added.
        Err(IngestError::IdempotencyKeyReused(existing)) => {
            return Ok(RecordOutcome::Ingested(Box::new(Ingested {
                meta: *existing,
                replayed: true,
            })));
        }
        Err(IngestError::Storage(e)) => return Err(e.into()),
    };
    let failure = Failure {
        code: "invalid_csv".to_owned(),
        message: rejection.to_string(),
        issues: rejection.issues.iter().take(100).cloned().collect(),
    };
    record_rejection(
        &app.repo,
        &tenant,
        &request_id,
        &key,
        app.config.output,
        failure,
        now,
    )
    .await?;
    Ok(RecordOutcome::Rejected {
        request_id,
        issues: rejection.issues,
    })
}

/// Handles one S3 event.
///
/// # Errors
/// The first retryable failure, so Lambda retries the event (every record is idempotent).
pub async fn handle<R, Q, S, C>(
    app: &App<R, Q, S, C>,
    event: LambdaEvent<S3Event>,
) -> Result<(), lambda_runtime::Error>
where
    R: RequestIntake + RequestReader,
    Q: RowQueue,
    S: ObjectStore,
    C: ChunkQueue,
{
    for record in &event.payload.records {
        match ingest_record(app, record).await? {
            RecordOutcome::Ignored => tracing::info!(key = ?record.s3.object.key, "object ignored"),
            RecordOutcome::Ingested(ingested) => tracing::info!(
                request_id = %ingested.meta.request_id,
                replayed = ingested.replayed,
                rows = ingested.meta.counters.rows_total,
                "upload ingested"
            ),
            RecordOutcome::Rejected { request_id, issues } => {
                tracing::warn!(%request_id, errors = issues.len(), "upload rejected");
            }
        }
    }
    Ok(())
}

/// Expands one chunk message; on its last receive a failure marks the request `FAILED`
/// (`ingest_failed`) instead of leaving it short of rows.
async fn process_chunk<R, Q, S, C>(
    app: &App<R, Q, S, C>,
    message: &SqsMessage,
    deadline: Deadline,
) -> Result<ChunkExpanded, PortError>
where
    R: RequestIntake + RequestReader,
    Q: RowQueue,
    S: ObjectStore,
    C: ChunkQueue,
{
    let body = message.body.as_deref().unwrap_or_default();
    let job: ChunkJob = match serde_json::from_str(body) {
        Ok(job) => job,
        Err(e) => {
            // Not ours to retry: a malformed message never parses.
            tracing::error!(error = %e, "malformed chunk message dropped");
            return Ok(ChunkExpanded::Skipped);
        }
    };
    match expand_chunk(
        &app.repo,
        &app.queue,
        &app.store,
        &app.settings(),
        &job,
        deadline,
    )
    .await
    {
        Ok(ChunkExpanded::Paused(rest)) => {
            // The rest of the chunk as a job of its own: nothing expanded twice.
            match &app.chunks {
                Some(chunks) => chunks.enqueue_chunks(std::slice::from_ref(&*rest)).await?,
                None => {
                    expand_chunk(
                        &app.repo,
                        &app.queue,
                        &app.store,
                        &app.settings(),
                        &rest,
                        Deadline::NONE,
                    )
                    .await?;
                }
            }
            tracing::info!(
                first_row = rest.first_row,
                rows = rest.rows,
                "chunk paused before the deadline; its rest is queued"
            );
            Ok(ChunkExpanded::Paused(rest))
        }
        Ok(outcome) => Ok(outcome),
        Err(e) => {
            let receive_count: u32 = message
                .attributes
                .get("ApproximateReceiveCount")
                .and_then(|c| c.parse().ok())
                .unwrap_or(1);
            if receive_count < app.config.max_receive_count && e.is_retryable() {
                return Err(e);
            }
            tracing::error!(request_id = %job.request_id, first_row = job.first_row, error = %e, "chunk could not be expanded; the request fails");
            let failure = Failure {
                code: "ingest_failed".to_owned(),
                message: "the rows could not be recorded for processing; submit the CSV again"
                    .to_owned(),
                issues: Vec::new(),
            };
            app.repo
                .mark_failed(&job.request_id, &failure, Utc::now())
                .await?;
            Ok(ChunkExpanded::RequestFailed)
        }
    }
}

/// Handles one batch from the ingest queue — chunk jobs, and Lambda's records of S3 events it
/// gave up on ([`fail_uploads`]) — or from its dead-letter queue ([`fail_dead_lettered_chunk`]).
///
/// # Errors
/// Never: every failure is reported per message as a batch item failure.
pub async fn handle_chunks<R, Q, S, C>(
    app: &App<R, Q, S, C>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, lambda_runtime::Error>
where
    R: RequestIntake + RequestReader,
    Q: RowQueue,
    S: ObjectStore,
    C: ChunkQueue,
{
    let deadline = Deadline::from_epoch_millis(event.context.deadline);
    let records = &event.payload.records;
    let mode = BatchMode::Sequential;
    Ok(
        batch_item_failures(records, mode, "handling an ingest message", |message| async move {
            // The queue is also the function's on-failure destination: Lambda's record of an S3
            // event it gave up on ends the uploads' requests.
            let body = message.body.as_deref().unwrap_or_default();
            let dead_lettered = app.dead_letter_queue_arn.is_some()
                && message.event_source_arn == app.dead_letter_queue_arn;
            let failed = serde_json::from_str::<FailedInvocation>(body).ok();
            if dead_lettered && failed.is_none() {
                fail_dead_lettered_chunk(&app.repo, body).await?;
                return Ok(false);
            }
            if let Some(failed) = failed {
                let ended = fail_uploads(&app.repo, app.config.output, &failed).await?;
                tracing::warn!(ended, condition = %failed.request_context.condition, "S3 event given up by Lambda");
                return Ok::<_, S3IngestError>(false);
            }
            let outcome = match process_chunk(app, message, deadline).await {
                Ok(outcome) => outcome,
                Err(error) => {
                    // Back after a jittered backoff, not the queue's 5,400-s visibility timeout.
                    if error.is_retryable()
                        && let Some(chunks) = &app.chunks
                        && let Some(receipt) = message.receipt_handle.as_deref()
                    {
                        let receives = message
                            .attributes
                            .get("ApproximateReceiveCount")
                            .and_then(|c| c.parse().ok())
                            .unwrap_or(1);
                        let wait = app.config.redelivery.delay(receives);
                        if let Err(e) = chunks.retry_chunk_later(receipt, wait).await {
                            tracing::warn!(error = %e, "a chunk to retry could not be hidden; it comes back after the visibility timeout");
                        }
                    }
                    return Err(error.into());
                }
            };
            tracing::info!(?outcome, "chunk expanded");
            Ok(false)
        })
        .await,
    )
}

/// `true` for an SQS event (`Records[0].eventSource` is `aws:sqs`): the function has two
/// triggers and one handler.
#[must_use]
pub fn is_sqs_event(event: &serde_json::Value) -> bool {
    event["Records"][0]["eventSource"].as_str() == Some("aws:sqs")
}

/// Handles either trigger: an S3 event (answers `null`) or a batch of chunk jobs (answers the
/// batch item failures).
///
/// # Errors
/// An S3 event's retryable failure; an event of neither shape.
pub async fn handle_any<R, Q, S, C>(
    app: &App<R, Q, S, C>,
    event: LambdaEvent<serde_json::Value>,
) -> Result<serde_json::Value, lambda_runtime::Error>
where
    R: RequestIntake + RequestReader,
    Q: RowQueue,
    S: ObjectStore,
    C: ChunkQueue,
{
    let (payload, context) = (event.payload, event.context);
    if is_sqs_event(&payload) {
        let sqs: SqsEvent = serde_json::from_value(payload)?;
        let response = handle_chunks(app, LambdaEvent::new(sqs, context)).await?;
        Ok(serde_json::to_value(response)?)
    } else {
        let s3: S3Event = serde_json::from_value(payload)?;
        handle(app, LambdaEvent::new(s3, context)).await?;
        Ok(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_keys_are_form_decoded() {
        assert_eq!(
            decode_event_key("uploads/spring+sale%282026%29.csv").unwrap(),
            "uploads/spring sale(2026).csv"
        );
        assert_eq!(
            decode_event_key("uploads/a%2Bb.csv").unwrap(),
            "uploads/a+b.csv"
        );
        assert!(decode_event_key("uploads/%FF.csv").is_err());
    }
}
