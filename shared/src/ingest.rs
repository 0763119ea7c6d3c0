//! The ingest use case, shared by the `api` function (`POST /uploads`) and the `s3-ingest`
//! function (objects under `uploads/`):
//!
//! 1. validate the CSV completely ([`parse_input_csv`]); reject with every issue;
//! 2. record the request (`PENDING`) and one row item per CSV row, conditionally on the id
//!    being new;
//! 3. enqueue one [`RowJob`] per row;
//! 4. flip the request to `PROCESSING`.
//!
//! A replay with the same id (a duplicate S3 event, an API retry) finds the request: if it is
//! still `PENDING` the earlier attempt died before step 4, so steps 3–4 run again (row
//! completion is idempotent, so duplicate jobs are harmless); otherwise nothing happens. If
//! enqueueing fails the request is marked `FAILED` rather than left half-enqueued.

use chrono::{DateTime, Utc};

use crate::domain::input_csv::{CsvLimits, CsvRejection, parse_input_csv};
use crate::domain::model::{
    Counters, DeliveryState, Failure, OutputSpec, RequestMeta, RequestStatus, RowJob, RowRecord,
    RowState, Source, Webhook,
};
use crate::fetch::NetworkPolicy;
use crate::ports::{Created, PortError, RequestRepository, RowQueue};

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
    crate::fetch::check_url(&url, egress).map_err(|e| format!("`{raw}`: {}", e.message))?;
    Ok(url.to_string())
}

/// SHA-256 (hex) of an upload: the CSV bytes, the webhook URL and the output spec, each
/// length-prefixed.
#[must_use]
pub fn upload_fingerprint(input: &IngestRequest<'_>) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let spec = serde_json::to_string(&input.output_spec).unwrap_or_default();
    let webhook = input.webhook_url.as_deref().unwrap_or_default();
    for part in [input.csv, webhook.as_bytes(), spec.as_bytes()] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Builds the request record and rows for a validated CSV.
fn build(
    input: &IngestRequest<'_>,
    rows: Vec<crate::domain::input_csv::ParsedRow>,
) -> (RequestMeta, Vec<RowRecord>) {
    let images_total = rows.iter().map(|r| r.input_urls.len() as u64).sum();
    let records: Vec<RowRecord> = rows
        .into_iter()
        .zip(0u32..)
        .map(|(row, index)| RowRecord {
            index,
            serial: row.serial,
            product_name: row.product_name,
            input_urls: row.input_urls,
            state: RowState::Pending,
            images: Vec::new(),
            progress: Vec::new(),
        })
        .collect();
    let meta = RequestMeta {
        request_id: input.request_id.clone(),
        tenant: input.tenant.clone(),
        status: RequestStatus::Pending,
        source: input.source,
        source_key: input.source_key.clone(),
        output_spec: input.output_spec,
        counters: Counters {
            rows_total: records.len() as u64,
            images_total,
            ..Counters::default()
        },
        webhook: input.webhook_url.clone().map(|url| Webhook {
            url,
            state: DeliveryState::Pending,
            attempts: Vec::new(),
        }),
        output_csv_key: None,
        failure: None,
        fingerprint: Some(upload_fingerprint(input)),
        created_at: input.now,
        updated_at: input.now,
        completed_at: None,
    };
    (meta, records)
}

/// Runs the ingest use case (see the module docs).
///
/// # Errors
/// See [`IngestError`].
pub async fn ingest<R: RequestRepository, Q: RowQueue>(
    repo: &R,
    queue: &Q,
    limits: &CsvLimits,
    egress: NetworkPolicy,
    input: IngestRequest<'_>,
) -> Result<Ingested, IngestError> {
    let rows = parse_input_csv(input.csv, limits, egress).map_err(IngestError::InvalidCsv)?;
    let mut input = input;
    if let Some(url) = &input.webhook_url {
        input.webhook_url =
            Some(check_webhook_url(url, egress).map_err(IngestError::InvalidWebhookUrl)?);
    }
    let (meta, records) = build(&input, rows);
    let (meta, records, replayed) = match repo.create_request(&meta, &records).await? {
        Created::Inserted => (meta, records, false),
        Created::AlreadyExists(existing)
            if existing.fingerprint.is_some() && existing.fingerprint != meta.fingerprint =>
        {
            return Err(IngestError::IdempotencyKeyReused(existing));
        }
        Created::AlreadyExists(existing) if existing.status == RequestStatus::Pending => {
            // An earlier attempt died before every row was enqueued: enqueue again from the
            // stored rows (the ones in this CSV may differ if the id was reused).
            let rows = load_all_rows(repo, &existing.request_id).await?;
            (*existing, rows, true)
        }
        Created::AlreadyExists(existing) => {
            return Ok(Ingested {
                meta: *existing,
                replayed: true,
            });
        }
    };
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
        repo.mark_failed(&meta.request_id, &failure, input.now)
            .await?;
        return Err(IngestError::EnqueueFailed(e));
    }
    repo.mark_processing(&meta.request_id, input.now).await?;
    let meta = repo.get_request(&meta.request_id).await?.unwrap_or(meta);
    Ok(Ingested { meta, replayed })
}

/// Every row of a request in input order, following pagination.
///
/// # Errors
/// [`PortError`] on storage failure.
pub async fn load_all_rows<R: RequestRepository>(
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
