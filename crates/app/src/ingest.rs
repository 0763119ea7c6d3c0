//! The ingest use cases. Every upload takes one path: [`accept_upload`] validates a CSV held
//! in memory (`POST /uploads`, at most what survives Lambda's 6-MB payload) and stores it under
//! `uploads/`; [`ingest_object`] streams an upload of any size from the bucket (`s3-ingest`, up
//! to 1 GiB and 1,000,000 rows) and fans it out in [`ChunkJob`]s that [`expand_chunk`] turns
//! into row items and [`RowJob`]s. [`retry_failed_images`] makes a new request of a finished
//! one's failed images.
//!
//! A replay with the same id (a duplicate S3 event, an API retry) finds the request: while it
//! is still `PENDING` the earlier attempt died part way, so the rest runs again (row completion
//! is idempotent, so duplicate jobs are harmless); otherwise nothing happens. A request under
//! the same id made from other bytes or options is [`IngestError::IdempotencyKeyReused`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::deadline::Deadline;
use crate::ports::{
    ChunkQueue, Created, ObjectStore, PortError, RequestIntake, RequestReader, RowQueue,
};
use pixpress_domain::egress::NetworkPolicy;
use pixpress_domain::input_csv::{
    CsvLimits, CsvRejection, CsvScanner, ParsedRow, RowSpan, too_large,
};
use pixpress_domain::model::{
    ChunkJob, Counters, Failure, ImageProgress, ImageStatus, OutputSpec, RequestMeta,
    RequestStatus, RowJob, RowRecord, RowState, Source, UploadOptions, Webhook,
};
use pixpress_domain::storage_keys::{pending_upload_key, presigned_upload_key};

/// Everything needed to ingest one CSV.
#[derive(Debug, Clone)]
pub struct IngestRequest<'a> {
    /// The new request's id.
    pub request_id: String,
    /// Owning tenant.
    pub tenant: String,
    /// Where the CSV came from.
    pub source: Source,
    /// Object key for S3 uploads.
    pub source_key: Option<String>,
    /// The CSV bytes.
    pub csv: &'a [u8],
    /// Completion webhook target (absolute http(s) URL).
    pub webhook_url: Option<String>,
    /// Encoding of every image.
    pub output_spec: OutputSpec,
    /// Now.
    pub now: DateTime<Utc>,
}

/// The outcome of a successful ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    /// The request record after ingest.
    pub meta: RequestMeta,
    /// `true` when the request existed already (a replay).
    pub replayed: bool,
}

/// Why an ingest failed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The CSV is invalid; nothing was written.
    #[error("{0}")]
    InvalidCsv(CsvRejection),
    /// The webhook URL is not an absolute http(s) URL; nothing was written.
    #[error("invalid webhook_url: {0}")]
    InvalidWebhookUrl(String),
    /// Rows could not be enqueued; the request is marked `FAILED`.
    #[error("rows could not be enqueued: {0}")]
    EnqueueFailed(PortError),
    /// The request id (from an idempotency key) names a request made from a different
    /// upload; nothing was written. Holds that request.
    #[error("the idempotency key was used for a different upload (request {})", .0.request_id)]
    IdempotencyKeyReused(Box<RequestMeta>),
    /// Storage failure before anything was enqueued.
    #[error(transparent)]
    Storage(#[from] PortError),
}

impl IngestError {
    /// `true` when retrying the same input may succeed.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::InvalidCsv(_)
            | Self::InvalidWebhookUrl(_)
            | Self::EnqueueFailed(_)
            | Self::IdempotencyKeyReused(_) => false,
            Self::Storage(e) => e.is_retryable(),
        }
    }
}

/// Validates a webhook URL: absolute http(s) with a host, and — as far as can be told without
/// DNS — allowed by the egress policy (no refused IP literal or port, no credentials).
///
/// # Errors
/// A message saying why `raw` is refused.
pub fn check_webhook_url(raw: &str, egress: NetworkPolicy) -> Result<String, String> {
    let url = url::Url::parse(raw.trim()).map_err(|e| format!("`{raw}`: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("`{raw}` must be an absolute http(s) URL"));
    }
    pixpress_domain::egress::check_url(&url, egress)
        .map_err(|e| format!("`{raw}`: {}", e.message))?;
    Ok(url.to_string())
}

/// SHA-256 (hex) of an upload: the CSV bytes, the webhook URL and the output spec, each
/// length-prefixed.
#[must_use]
pub fn upload_fingerprint(input: &IngestRequest<'_>) -> String {
    let mut fingerprint = Fingerprint::new(input.csv.len() as u64);
    fingerprint.update(input.csv);
    fingerprint.finish(input.webhook_url.as_deref(), input.output_spec)
}

/// [`upload_fingerprint`] computed as the CSV streams by.
#[derive(Debug, Clone)]
pub struct Fingerprint(Sha256);

impl Fingerprint {
    /// Starts the fingerprint of a `csv_len`-byte CSV.
    #[must_use]
    pub fn new(csv_len: u64) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(csv_len.to_be_bytes());
        Self(hasher)
    }

    /// Adds the next CSV bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The fingerprint, with the upload's options.
    #[must_use]
    pub fn finish(mut self, webhook_url: Option<&str>, output_spec: OutputSpec) -> String {
        let spec = serde_json::to_string(&output_spec).unwrap_or_default();
        let webhook = webhook_url.unwrap_or_default();
        for part in [webhook.as_bytes(), spec.as_bytes()] {
            self.0.update((part.len() as u64).to_be_bytes());
            self.0.update(part);
        }
        self.0
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Row `index` of a request, not yet processed, from its validated CSV row.
fn pending_row(row: ParsedRow, index: u32) -> RowRecord {
    RowRecord {
        index,
        serial: row.serial,
        product_name: row.product_name,
        input_urls: row.input_urls,
        state: RowState::Pending,
        images: Vec::new(),
        progress: Vec::new(),
    }
}

/// What an upload does after writing its request ([`create`]).
enum Creation {
    /// Go on with the request: written now, or (`replayed`) by an earlier attempt of the same
    /// upload that stopped while it was still `PENDING`.
    GoOn { meta: RequestMeta, replayed: bool },
    /// An earlier attempt of the same upload got past `PENDING`: answer with the request as it is.
    Done(RequestMeta),
}

/// Writes `meta` (and `rows`) as a new request, or finds the one an earlier attempt under the
/// same id wrote.
///
/// # Errors
/// [`IngestError::IdempotencyKeyReused`] when the id holds a request made from other bytes or
/// options (nothing written); [`IngestError::Storage`] on storage failure.
async fn create<R: RequestIntake>(
    repo: &R,
    meta: RequestMeta,
    rows: &[RowRecord],
) -> Result<Creation, IngestError> {
    Ok(match repo.create_request(&meta, rows).await? {
        Created::Inserted => Creation::GoOn {
            meta,
            replayed: false,
        },
        Created::AlreadyExists(existing)
            if existing.fingerprint.is_some() && existing.fingerprint != meta.fingerprint =>
        {
            return Err(IngestError::IdempotencyKeyReused(existing));
        }
        Created::AlreadyExists(existing) if existing.status == RequestStatus::Pending => {
            Creation::GoOn {
                meta: *existing,
                replayed: true,
            }
        }
        Created::AlreadyExists(existing) => Creation::Done(*existing),
    })
}

/// Accepts a CSV held in memory (`POST /uploads`) as the S3 path takes a presigned upload,
/// in a constant number of calls whatever its row count:
///
/// 1. one streaming pass validates the CSV ([`CsvScanner`], every issue with row and column)
///    and the webhook URL; an invalid upload is refused with nothing written;
/// 2. the request item is written `PENDING` with its totals (conditional on the id being new;
///    a request under the id made from other bytes or options is
///    [`IngestError::IdempotencyKeyReused`]; one past `PENDING` is a replay);
/// 3. the options go to [`pending_upload_key`] and the CSV to [`presigned_upload_key`], whose
///    `ObjectCreated` event runs `s3-ingest` — [`ingest_object`] finds the request, and its
///    chunk jobs write the rows and send their messages, as for any upload.
///
/// Calls: one `PutItem` transaction for the request (two writes with its `creating` mark) and
/// two `PutObject`s — no row item and no message, so the HTTP call ends long before API
/// Gateway's 30-s integration timeout at any size.
///
/// # Errors
/// [`IngestError::InvalidCsv`], [`IngestError::InvalidWebhookUrl`],
/// [`IngestError::IdempotencyKeyReused`] (nothing written); [`IngestError::Storage`]: retry with
/// the same id (every step is idempotent; a request left `PENDING` without its upload is
/// written again by the retry, or failed by the sweeper).
pub async fn accept_upload<R, S>(
    repo: &R,
    store: &S,
    settings: &ObjectIngestSettings,
    input: IngestRequest<'_>,
) -> Result<Ingested, IngestError>
where
    R: RequestIntake + RequestReader,
    S: ObjectStore,
{
    let mut input = input;
    if let Some(url) = &input.webhook_url {
        input.webhook_url =
            Some(check_webhook_url(url, settings.egress).map_err(IngestError::InvalidWebhookUrl)?);
    }
    let mut scanner = CsvScanner::new(&settings.limits, settings.egress);
    scanner.feed(input.csv, &mut |_, _| {});
    let summary = scanner
        .finish(&mut |_, _| {})
        .map_err(IngestError::InvalidCsv)?;
    let key = presigned_upload_key(&input.tenant, &input.request_id);
    let meta = RequestMeta {
        source: input.source,
        source_key: Some(key.clone()),
        output_spec: input.output_spec,
        counters: Counters::new(summary.rows, summary.images),
        webhook: input.webhook_url.clone().map(Webhook::pending),
        fingerprint: Some(upload_fingerprint(&input)),
        ..RequestMeta::new(input.request_id.clone(), input.tenant.clone(), input.now)
    };
    let (meta, replayed) = match create(repo, meta, &[]).await? {
        // An earlier attempt may have died before the upload was stored: store it again.
        Creation::GoOn { meta, replayed } => (meta, replayed),
        Creation::Done(meta) => {
            return Ok(Ingested {
                meta,
                replayed: true,
            });
        }
    };
    let options = UploadOptions {
        webhook_url: input.webhook_url.clone(),
        output_spec: input.output_spec,
    };
    let options = serde_json::to_vec(&options)
        .map_err(|e| PortError::Unexpected(anyhow::anyhow!("upload options: {e}")))?;
    store
        .put(
            &pending_upload_key(&input.tenant, &input.request_id),
            options.into(),
            "application/json",
        )
        .await?;
    store
        .put(&key, bytes::Bytes::copy_from_slice(input.csv), "text/csv")
        .await?;
    tracing::info!(
        request_id = %meta.request_id,
        rows = summary.rows,
        bytes = summary.bytes,
        "upload validated and stored"
    );
    Ok(Ingested { meta, replayed })
}

/// Enqueues the pending rows of a recorded request and flips it to `PROCESSING`; marks it
/// `FAILED` when the rows cannot be enqueued. Returns the request as stored afterwards.
async fn start<R: RequestIntake + RequestReader, Q: RowQueue>(
    repo: &R,
    queue: &Q,
    meta: RequestMeta,
    records: &[RowRecord],
    now: DateTime<Utc>,
) -> Result<RequestMeta, IngestError> {
    let jobs: Vec<RowJob> = records
        .iter()
        .filter(|r| r.state == RowState::Pending)
        .map(|r| RowJob::for_row(&meta, r))
        .collect();
    if let Err(e) = queue.enqueue(&jobs).await {
        // The queue's own error text goes to the logs, never to the client.
        tracing::error!(request_id = %meta.request_id, error = %e, "rows could not be enqueued");
        let failure = Failure {
            code: "enqueue_failed".to_owned(),
            message: "the rows could not be queued for processing; submit the CSV again".to_owned(),
            issues: Vec::new(),
        };
        repo.mark_failed(&meta.request_id, &failure, now).await?;
        return Err(IngestError::EnqueueFailed(e));
    }
    repo.mark_processing(&meta.request_id, now).await?;
    Ok(repo.get_request(&meta.request_id).await?.unwrap_or(meta))
}

/// The id of the request that retries `request_id` (`POST /requests/{id}/retry`): derived, so
/// asking twice finds the first retry instead of starting a second one. A retry is retried in
/// turn through its own id.
#[must_use]
pub fn retry_request_id(request_id: &str) -> String {
    pixpress_domain::storage_keys::derived_request_id(&["retry", request_id])
}

/// Why a request cannot be retried.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    /// The request has not finished; nothing was written.
    #[error("the request is {}; only a finished request can be retried", .0.as_str())]
    NotFinished(RequestStatus),
    /// Every image of the request is stored; nothing was written.
    #[error("every image of the request is stored; there is nothing to retry")]
    NothingToRetry,
    /// More rows than one call re-queues; nothing was written.
    #[error("the request has {rows} rows; at most {max} are retried at once")]
    TooLarge {
        /// Rows of the request.
        rows: u64,
        /// The most rows a retry takes.
        max: u64,
    },
    /// Some rows of the request were never written (a catalogue that failed while it was
    /// read): they cannot be retried, and a retry of the others would count rows that do not
    /// exist; nothing was written.
    #[error(
        "only {written} of the request's {total} rows were ever read from its upload; upload the CSV again"
    )]
    RowsMissing {
        /// Rows written.
        written: u64,
        /// Rows the request declared.
        total: u64,
    },
    /// Rows could not be enqueued; the retry is marked `FAILED`.
    #[error("rows could not be enqueued: {0}")]
    EnqueueFailed(PortError),
    /// Storage failure.
    #[error(transparent)]
    Storage(#[from] PortError),
}

impl From<IngestError> for RetryError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::EnqueueFailed(e) => Self::EnqueueFailed(e),
            IngestError::Storage(e) => Self::Storage(e),
            other => Self::Storage(PortError::Unexpected(anyhow::anyhow!("{other}"))),
        }
    }
}

/// What [`retry_failed_images`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retried {
    /// The retry, a request of its own ([`RequestMeta::retry_of`] names the original).
    pub meta: RequestMeta,
    /// Images the retry downloads again (those that failed, were cancelled or never ran);
    /// `None` for a replay.
    pub images_to_retry: Option<u64>,
    /// `true` when the retry existed already (asked before).
    pub replayed: bool,
}

/// Most rows a retry takes (`POST /requests/{id}/retry` reads and re-queues them within the
/// HTTP call: 1,000 `SendMessageBatch` calls at most, inside API Gateway's 30-s timeout).
pub const RETRY_MAX_ROWS: u64 = 10_000;

/// Starts a new attempt at a finished request (`COMPLETED_WITH_ERRORS`, `CANCELLED` or
/// `FAILED` with rows): a new request [`retry_request_id`] with the same rows, output spec and
/// webhook URL, in which every image the original stored is kept (seeded as the row's progress,
/// so the worker does not fetch it again) and only the others are downloaded. It gets its own
/// output CSV — every row, old and new images — and its own webhook; the original stays as it
/// is, so the history is kept. At most `max_rows` rows (the API's upload limit: the rows are
/// read and re-queued within one call).
///
/// # Errors
/// See [`RetryError`]; nothing is written for any but `EnqueueFailed` and `Storage`.
///
/// # Idempotency
/// The retry's id is derived from the original's: asking again returns the retry made the
/// first time (re-enqueueing its rows if that call died before they were all enqueued).
pub async fn retry_failed_images<R: RequestIntake + RequestReader, Q: RowQueue>(
    repo: &R,
    queue: &Q,
    original: &RequestMeta,
    max_rows: u64,
    now: DateTime<Utc>,
) -> Result<Retried, RetryError> {
    if !original.status.is_terminal() {
        return Err(RetryError::NotFinished(original.status));
    }
    let retry_id = retry_request_id(&original.request_id);
    if let Some(existing) = repo.get_request(&retry_id).await? {
        return resume_retry(repo, queue, existing, now).await;
    }
    if original.counters.rows_total > max_rows {
        return Err(RetryError::TooLarge {
            rows: original.counters.rows_total,
            max: max_rows,
        });
    }
    let rows: Vec<RowRecord> = load_all_rows(repo, &original.request_id)
        .await?
        .into_iter()
        .map(kept_images)
        .collect();
    // Counter shards count rows 0..n−1 (`counting`): a request with gaps in its row numbers
    // could never complete.
    let contiguous = rows.iter().zip(0u32..).all(|(row, i)| row.index == i);
    if !contiguous || rows.len() as u64 != original.counters.rows_total {
        return Err(RetryError::RowsMissing {
            written: rows.len() as u64,
            total: original.counters.rows_total,
        });
    }
    let images_to_retry: u64 = rows
        .iter()
        .map(|r| (r.input_urls.len() - r.progress.len()) as u64)
        .sum();
    if images_to_retry == 0 {
        return Err(RetryError::NothingToRetry);
    }
    let meta = RequestMeta {
        source: original.source,
        source_key: original.source_key.clone(),
        output_spec: original.output_spec,
        counters: Counters::new(
            rows.len() as u64,
            rows.iter().map(|r| r.input_urls.len() as u64).sum(),
        ),
        webhook: original
            .webhook
            .as_ref()
            .map(|w| Webhook::pending(w.url.clone())),
        retry_of: Some(original.request_id.clone()),
        ..RequestMeta::new(retry_id, original.tenant.clone(), now)
    };
    match repo.create_request(&meta, &rows).await? {
        Created::Inserted => {
            let meta = start(repo, queue, meta, &rows, now).await?;
            Ok(Retried {
                meta,
                images_to_retry: Some(images_to_retry),
                replayed: false,
            })
        }
        // Made concurrently by another call.
        Created::AlreadyExists(existing) => resume_retry(repo, queue, *existing, now).await,
    }
}

/// A retry asked for again: re-enqueue if the call that made it died before every row was
/// enqueued; otherwise return it as it is.
async fn resume_retry<R: RequestIntake + RequestReader, Q: RowQueue>(
    repo: &R,
    queue: &Q,
    existing: RequestMeta,
    now: DateTime<Utc>,
) -> Result<Retried, RetryError> {
    let meta = if existing.status == RequestStatus::Pending {
        let rows = load_all_rows(repo, &existing.request_id).await?;
        start(repo, queue, existing, &rows, now).await?
    } else {
        existing
    };
    Ok(Retried {
        meta,
        images_to_retry: None,
        replayed: true,
    })
}

/// Row `row` of an original request as a pending row of its retry: the images it stored are
/// kept as progress (not fetched again); the others — failed, cancelled, never processed — run.
fn kept_images(row: RowRecord) -> RowRecord {
    let progress = match row.state {
        RowState::Done => row
            .images
            .iter()
            .zip(0u32..)
            .filter(|(image, _)| image.status == ImageStatus::Ok)
            .map(|(image, position)| ImageProgress {
                position,
                outcome: Some(image.clone()),
                spent_ms: 0,
                failures: 0,
            })
            .collect(),
        RowState::Pending => row
            .progress
            .into_iter()
            .filter(|p| {
                p.outcome
                    .as_ref()
                    .is_some_and(|o| o.status == ImageStatus::Ok)
            })
            .map(|p| ImageProgress {
                spent_ms: 0,
                failures: 0,
                ..p
            })
            .collect(),
    };
    RowRecord {
        state: RowState::Pending,
        images: Vec::new(),
        progress,
        ..row
    }
}

/// Every row of a request in input order, following pagination.
///
/// # Errors
/// [`PortError`] on storage failure.
pub async fn load_all_rows<R: RequestIntake + RequestReader>(
    repo: &R,
    request_id: &str,
) -> Result<Vec<RowRecord>, PortError> {
    let mut rows = Vec::new();
    let mut after = None;
    loop {
        let page = repo.list_rows(request_id, after, 1000).await?;
        rows.extend(page.rows);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(rows),
        }
    }
}

/// Rows per [`ChunkJob`]: each becomes at most 10 DynamoDB transactions of 100 row items and
/// 100 SQS batches of 10 messages — a few seconds of one invocation.
pub const CHUNK_ROWS: u32 = 1_000;

/// Chunks expanded at once when there is no ingest queue (the embedded runner).
const INLINE_CHUNKS_AT_ONCE: usize = 4;

/// Settings of [`ingest_object`].
#[derive(Debug, Clone, Copy)]
pub struct ObjectIngestSettings {
    /// Limits of the upload (the S3 path's own: up to 1 GB and 1,000,000 rows by default).
    pub limits: CsvLimits,
    /// What image URLs may reach.
    pub egress: NetworkPolicy,
    /// Rows per chunk job ([`CHUNK_ROWS`]).
    pub chunk_rows: u32,
}

/// A stored upload to ingest.
#[derive(Debug, Clone)]
pub struct ObjectIngest {
    /// The request id (derived from the object, so a replayed event finds the same request).
    pub request_id: String,
    /// Owning tenant.
    pub tenant: String,
    /// Where the CSV came from.
    pub source: Source,
    /// Object key of the CSV.
    pub key: String,
    /// Completion webhook target.
    pub webhook_url: Option<String>,
    /// Encoding of every image.
    pub output_spec: OutputSpec,
    /// Now.
    pub now: DateTime<Utc>,
}

/// What [`ingest_object`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectIngested {
    /// Valid: the request exists and its rows are (being) expanded.
    Ingested(Box<Ingested>),
    /// Invalid: nothing was written; the caller records the rejection.
    Rejected(CsvRejection),
    /// The object does not exist.
    Missing,
}

/// Cuts a scanned upload into [`ChunkJob`]s of `chunk_rows` rows, as the rows go by.
struct ChunkPlan {
    template: ChunkJob,
    chunk_rows: u32,
    chunks: Vec<ChunkJob>,
    rows: u32,
}

impl ChunkPlan {
    fn add(&mut self, span: RowSpan) {
        match self.chunks.last_mut() {
            Some(last) if last.rows < self.chunk_rows => {
                last.rows += 1;
                last.end = span.end;
            }
            _ => self.chunks.push(ChunkJob {
                first_row: self.rows,
                rows: 1,
                start: span.start,
                end: span.end,
                start_line: span.start_line,
                ..self.template.clone()
            }),
        }
        self.rows += 1;
    }
}

/// Ingests an upload stored under `input.key`, of any size up to `settings.limits`, in
/// bounded memory (DESIGN §3, "Catalogue-scale ingest"):
///
/// 1. a request that exists and is past `PENDING` is a replay: nothing happens;
/// 2. one streaming pass validates every row and plans [`ChunkJob`]s of
///    `settings.chunk_rows` rows (byte ranges of the object); an invalid upload is returned as
///    [`ObjectIngested::Rejected`] with nothing written;
/// 3. the request item is written (`PENDING`, its totals known), conditional on being new;
/// 4. the chunks go to the ingest queue (`chunks`), where other invocations expand them
///    ([`expand_chunk`]); without a queue they are expanded here, a few at a time;
/// 5. the request moves to `PROCESSING`: every row is durably on its way.
///
/// Memory: the current record, one piece of the object, the serial index (24 bytes per row)
/// and the chunk plan (one job per `chunk_rows` rows).
///
/// # Errors
/// [`IngestError::Storage`] (retry the event: every step is idempotent),
/// [`IngestError::EnqueueFailed`] (the request is `FAILED`), [`IngestError::InvalidWebhookUrl`],
/// [`IngestError::IdempotencyKeyReused`].
pub async fn ingest_object<R, Q, S, C>(
    repo: &R,
    queue: &Q,
    store: &S,
    chunks: Option<&C>,
    settings: &ObjectIngestSettings,
    input: ObjectIngest,
) -> Result<ObjectIngested, IngestError>
where
    R: RequestIntake + RequestReader,
    Q: RowQueue,
    S: ObjectStore,
    C: ChunkQueue,
{
    if let Some(existing) = repo.get_request(&input.request_id).await?
        && existing.status != RequestStatus::Pending
    {
        return Ok(ObjectIngested::Ingested(Box::new(Ingested {
            meta: existing,
            replayed: true,
        })));
    }
    let webhook_url = match &input.webhook_url {
        Some(url) => {
            Some(check_webhook_url(url, settings.egress).map_err(IngestError::InvalidWebhookUrl)?)
        }
        None => None,
    };
    let Some(mut reader) = store.open(&input.key, None).await? else {
        return Ok(ObjectIngested::Missing);
    };
    if reader.size > settings.limits.max_bytes as u64 {
        return Ok(ObjectIngested::Rejected(too_large(
            Some(reader.size),
            settings.limits.max_bytes,
        )));
    }
    let mut plan = ChunkPlan {
        template: ChunkJob {
            request_id: input.request_id.clone(),
            tenant: input.tenant.clone(),
            key: input.key.clone(),
            etag: reader.etag.clone(),
            first_row: 0,
            rows: 0,
            start: 0,
            end: 0,
            start_line: 1,
        },
        chunk_rows: settings.chunk_rows.max(1),
        chunks: Vec::new(),
        rows: 0,
    };
    let mut fingerprint = Fingerprint::new(reader.size);
    let mut scanner = CsvScanner::new(&settings.limits, settings.egress);
    let mut on_row = |_: ParsedRow, span: RowSpan| plan.add(span);
    while let Some(piece) = reader.body.next().await {
        let piece = piece?;
        fingerprint.update(&piece);
        scanner.feed(&piece, &mut on_row);
    }
    let summary = match scanner.finish(&mut on_row) {
        Ok(summary) => summary,
        Err(rejection) => return Ok(ObjectIngested::Rejected(rejection)),
    };
    let fingerprint = fingerprint.finish(webhook_url.as_deref(), input.output_spec);
    let meta = RequestMeta {
        source: input.source,
        source_key: Some(input.key.clone()),
        output_spec: input.output_spec,
        counters: Counters::new(summary.rows, summary.images),
        webhook: webhook_url.map(Webhook::pending),
        fingerprint: Some(fingerprint),
        ..RequestMeta::new(input.request_id.clone(), input.tenant.clone(), input.now)
    };
    let (meta, replayed) = match create(repo, meta, &[]).await? {
        Creation::GoOn { meta, replayed } => (meta, replayed),
        Creation::Done(meta) => {
            return Ok(ObjectIngested::Ingested(Box::new(Ingested {
                meta,
                replayed: true,
            })));
        }
    };
    tracing::info!(
        request_id = %meta.request_id,
        rows = summary.rows,
        bytes = summary.bytes,
        chunks = plan.chunks.len(),
        "upload validated"
    );
    if let Some(chunks) = chunks {
        if let Err(e) = chunks.enqueue_chunks(&plan.chunks).await {
            tracing::error!(request_id = %meta.request_id, error = %e, "chunks could not be enqueued");
            let failure = Failure {
                code: "enqueue_failed".to_owned(),
                message: "the rows could not be queued for processing; submit the CSV again"
                    .to_owned(),
                issues: Vec::new(),
            };
            repo.mark_failed(&meta.request_id, &failure, input.now)
                .await?;
            return Err(IngestError::EnqueueFailed(e));
        }
    } else {
        // Owned jobs: a future borrowing the plan's items is not `Send` for every lifetime,
        // which a spawned caller needs.
        let mut expansions = futures::stream::iter(std::mem::take(&mut plan.chunks))
            .map(|job| async move {
                expand_chunk(repo, queue, store, settings, &job, Deadline::NONE).await
            })
            .buffer_unordered(INLINE_CHUNKS_AT_ONCE);
        while let Some(outcome) = expansions.next().await {
            if outcome? == ChunkExpanded::RequestFailed {
                break;
            }
        }
    }
    repo.mark_processing(&meta.request_id, input.now).await?;
    let meta = repo.get_request(&meta.request_id).await?.unwrap_or(meta);
    Ok(ObjectIngested::Ingested(Box::new(Ingested {
        meta,
        replayed,
    })))
}

/// Rows of a chunk written and queued between two looks at the invocation's deadline.
pub const CHUNK_SLICE_ROWS: usize = 100;

/// Time a chunk keeps back from the invocation's deadline: enough to write and queue one more
/// slice under throttling and to send the rest of the chunk as a job of its own.
pub const CHUNK_DEADLINE_MARGIN: Duration = Duration::from_secs(60);

/// What [`expand_chunk`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkExpanded {
    /// Every row of the chunk exists and is queued.
    Expanded,
    /// The deadline came first: the rows before the returned job exist and are queued; the job
    /// covers the rest (its byte range, first row and count), to be sent as a chunk of its own.
    Paused(Box<ChunkJob>),
    /// The request is finished or unknown: nothing to do.
    Skipped,
    /// The upload changed since it was validated: the request is now `FAILED`.
    RequestFailed,
}

/// Expands one [`ChunkJob`]: reads its byte range of the upload, writes its rows (each
/// conditional on being new) and sends their row jobs, [`CHUNK_SLICE_ROWS`] at a time; when
/// `deadline` no longer allows [`CHUNK_DEADLINE_MARGIN`] before a slice (never before the
/// first), returns the rest as [`ChunkExpanded::Paused`] instead of running out of time, so no
/// row job is sent twice by a retry of the whole chunk.
///
/// # Errors
/// [`PortError`] on storage failure: the job should be retried; a replay creates nothing
/// twice (existing rows are kept, duplicate row jobs find their row recorded).
pub async fn expand_chunk<R, Q, S>(
    repo: &R,
    queue: &Q,
    store: &S,
    settings: &ObjectIngestSettings,
    job: &ChunkJob,
    deadline: Deadline,
) -> Result<ChunkExpanded, PortError>
where
    R: RequestIntake + RequestReader,
    Q: RowQueue,
    S: ObjectStore,
{
    let Some(meta) = repo.get_request(&job.request_id).await? else {
        return Ok(ChunkExpanded::Skipped);
    };
    if meta.status.is_terminal() {
        return Ok(ChunkExpanded::Skipped);
    }
    let mut rows = Vec::with_capacity(job.rows as usize);
    let readable = match store.open(&job.key, Some(job.start..job.end)).await? {
        Some(mut reader) if job.etag.is_none() || reader.etag == job.etag => {
            let mut scanner =
                CsvScanner::for_span(&settings.limits, settings.egress, job.start, job.start_line);
            let mut on_row = |row: ParsedRow, span: RowSpan| rows.push((row, span));
            while let Some(piece) = reader.body.next().await {
                scanner.feed(&piece?, &mut on_row);
            }
            scanner.finish(&mut on_row).is_ok() && rows.len() == job.rows as usize
        }
        _ => false,
    };
    if !readable {
        tracing::error!(request_id = %job.request_id, key = %job.key, first_row = job.first_row, "the upload changed during ingest");
        let failure = Failure {
            code: "upload_changed".to_owned(),
            message: "the CSV was replaced or removed while it was being ingested; upload it again"
                .to_owned(),
            issues: Vec::new(),
        };
        repo.mark_failed(&job.request_id, &failure, Utc::now())
            .await?;
        return Ok(ChunkExpanded::RequestFailed);
    }
    let spans: Vec<RowSpan> = rows.iter().map(|(_, span)| *span).collect();
    let records: Vec<RowRecord> = rows
        .into_iter()
        .zip(job.first_row..)
        .map(|((row, _), index)| pending_row(row, index))
        .collect();
    for (n, slice) in records.chunks(CHUNK_SLICE_ROWS).enumerate() {
        let done = n * CHUNK_SLICE_ROWS;
        if done > 0 && !deadline.allows(CHUNK_DEADLINE_MARGIN) {
            let span = spans[done];
            let rest = ChunkJob {
                first_row: job.first_row + u32::try_from(done).unwrap_or(u32::MAX),
                rows: job.rows - u32::try_from(done).unwrap_or(u32::MAX),
                start: span.start,
                start_line: span.start_line,
                ..job.clone()
            };
            return Ok(ChunkExpanded::Paused(Box::new(rest)));
        }
        repo.put_rows(&job.request_id, slice).await?;
        let jobs: Vec<RowJob> = slice.iter().map(|r| RowJob::for_row(&meta, r)).collect();
        queue.enqueue(&jobs).await?;
    }
    Ok(ChunkExpanded::Expanded)
}
