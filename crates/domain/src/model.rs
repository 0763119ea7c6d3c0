//! The request and row model shared by every function, and the status rules.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::input_csv::CsvIssue;

/// Version of the [`RowJob`] message schema; bumped on incompatible changes.
pub const ROW_JOB_VERSION: u32 = 1;

/// The message that asks the webhook sender to deliver a request's completion event. Small and
/// stable: everything else is read from the request when the attempt is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookJob {
    /// The request whose completion is announced.
    pub request_id: String,
    /// Its tenant (whose secret signs).
    pub tenant: String,
    /// Attempts recorded on the request when this series was queued (0 for the first, the
    /// earlier ones for a redelivery). The attempt number is the attempts recorded since, plus
    /// one — not the message's receive count, which also grows when an invocation is cut
    /// short before it attempts anything.
    #[serde(default)]
    pub attempts_before: u32,
}

/// Tenant of requests made without an API key (single-tenant deployments and local runs).
pub const DEFAULT_TENANT: &str = "default";

/// Default JPEG quality (libjpeg scale, 1–100) when a request does not choose one.
pub const DEFAULT_JPEG_QUALITY: u8 = 50;

/// Lifecycle of a request: `PENDING` → `PROCESSING` → one of the terminal statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RequestStatus {
    /// Recorded; rows are being enqueued.
    Pending,
    /// Every row is enqueued; workers are processing.
    Processing,
    /// Every image compressed.
    Completed,
    /// Every row finished and at least one image failed.
    CompletedWithErrors,
    /// The request could not be processed at all (invalid upload, enqueue failure).
    Failed,
    /// Cancelled: every row finished, those not processed before the cancellation recorded
    /// as `cancelled`.
    Cancelled,
}

impl RequestStatus {
    /// `true` for the statuses a request never leaves.
    #[must_use]
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::CompletedWithErrors | Self::Failed | Self::Cancelled
        )
    }

    /// The wire name, as stored and returned by the API (`"COMPLETED_WITH_ERRORS"`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Processing => "PROCESSING",
            Self::Completed => "COMPLETED",
            Self::CompletedWithErrors => "COMPLETED_WITH_ERRORS",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
        }
    }
}

/// Where the CSV of a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `POST /uploads`.
    Api,
    /// An object created under `uploads/` in the bucket.
    S3,
}

/// Output image format. Only JPEG today.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// Baseline JPEG, `image/jpeg`, extension `.jpg`.
    #[default]
    Jpeg,
}

impl OutputFormat {
    /// File extension without the dot.
    #[must_use]
    pub fn extension(self) -> &'static str {
        "jpg"
    }

    /// MIME type of the stored objects.
    #[must_use]
    pub fn content_type(self) -> &'static str {
        "image/jpeg"
    }
}

/// How every image of a request is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutputSpec {
    /// Output format.
    #[serde(default)]
    pub format: OutputFormat,
    /// JPEG quality on the libjpeg scale, 1–100.
    pub quality: u8,
    /// Longest side of the output in pixels; larger images are scaled down, never up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_dimension: Option<u32>,
}

impl Default for OutputSpec {
    fn default() -> Self {
        Self {
            format: OutputFormat::Jpeg,
            quality: DEFAULT_JPEG_QUALITY,
            max_dimension: None,
        }
    }
}

/// The largest `max_dimension`, in pixels: a JPEG's width and height are 16-bit fields
/// (ITU-T T.81, the frame header), so no output side can be longer.
pub const MAX_DIMENSION_PIXELS: u32 = 65_535;

impl OutputSpec {
    /// A JPEG spec with the given quality.
    ///
    /// # Errors
    /// A message naming the accepted range when `quality` is outside 1–100, or when
    /// `max_dimension` is outside 1–[`MAX_DIMENSION_PIXELS`].
    pub fn new(quality: u8, max_dimension: Option<u32>) -> Result<Self, String> {
        if !(1..=100).contains(&quality) {
            return Err(format!("quality must be between 1 and 100, got {quality}"));
        }
        if let Some(pixels) = max_dimension
            && !(1..=MAX_DIMENSION_PIXELS).contains(&pixels)
        {
            return Err(format!(
                "max_dimension must be 1–{MAX_DIMENSION_PIXELS} pixels (a JPEG's longest side), got {pixels}"
            ));
        }
        Ok(Self {
            format: OutputFormat::Jpeg,
            quality,
            max_dimension,
        })
    }
}

/// Progress counters of a request. Images and bytes only count finished rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Counters {
    /// Data rows in the CSV.
    pub rows_total: u64,
    /// Rows whose outcome is recorded.
    pub rows_done: u64,
    /// Image URLs in the CSV.
    pub images_total: u64,
    /// Images compressed and stored.
    pub images_ok: u64,
    /// Images that failed permanently.
    pub images_failed: u64,
    /// Bytes downloaded for successful images.
    pub bytes_in: u64,
    /// Bytes stored for successful images.
    pub bytes_out: u64,
}

impl Counters {
    /// The counters of a new request: `rows_total` rows holding `images_total` image URLs,
    /// nothing recorded yet.
    #[must_use]
    pub fn new(rows_total: u64, images_total: u64) -> Self {
        Self {
            rows_total,
            images_total,
            ..Self::default()
        }
    }

    /// Status rule: once every row is recorded the request is terminal — `COMPLETED` when no
    /// image failed, `COMPLETED_WITH_ERRORS` otherwise. `None` while rows are outstanding.
    #[must_use]
    pub fn terminal_status(&self) -> Option<RequestStatus> {
        if self.rows_done < self.rows_total {
            None
        } else if self.images_failed == 0 {
            Some(RequestStatus::Completed)
        } else {
            Some(RequestStatus::CompletedWithErrors)
        }
    }

    /// Adds `other`'s done counts (rows done, images ok and failed, bytes) to these; totals
    /// stay. Sums counter shards.
    pub fn add_done(&mut self, other: &Counters) {
        self.rows_done += other.rows_done;
        self.images_ok += other.images_ok;
        self.images_failed += other.images_failed;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
    }

    /// Adds the outcome of one row.
    pub fn add_row(&mut self, images: &[ImageOutcome]) {
        self.rows_done += 1;
        for image in images {
            match image.status {
                ImageStatus::Ok => {
                    self.images_ok += 1;
                    self.bytes_in += image.bytes_in.unwrap_or(0);
                    self.bytes_out += image.bytes_out.unwrap_or(0);
                }
                ImageStatus::Failed => self.images_failed += 1,
            }
        }
    }
}

/// Delivery state of the completion webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeliveryState {
    /// Not attempted yet.
    Pending,
    /// A 2xx answer was received.
    Delivered,
    /// Every permitted attempt failed.
    Failed,
}

/// One webhook delivery attempt, as recorded on the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookAttempt {
    /// When the attempt started.
    pub at: DateTime<Utc>,
    /// HTTP status of the answer, if one came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// Stable error code when no 2xx answer came (`timeout`, `http_500`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The webhook target of a request and its delivery history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Webhook {
    /// Absolute http(s) URL the completion event is POSTed to.
    pub url: String,
    /// Current delivery state.
    pub state: DeliveryState,
    /// Every attempt so far, oldest first.
    #[serde(default)]
    pub attempts: Vec<WebhookAttempt>,
}

impl Webhook {
    /// A webhook to `url` not yet attempted.
    #[must_use]
    pub fn pending(url: String) -> Self {
        Self {
            url,
            state: DeliveryState::Pending,
            attempts: Vec::new(),
        }
    }
}

/// Why a request ended `FAILED`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Failure {
    /// Stable code (`invalid_csv`, `enqueue_failed`).
    pub code: String,
    /// What happened, for a person.
    pub message: String,
    /// CSV errors, when the upload was rejected (at most the first 100).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issues: Vec<CsvIssue>,
}

/// The options of a presigned upload, stored when its URL is issued and applied when the CSV
/// arrives (`POST /upload-urls` takes the same options as `POST /uploads`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadOptions {
    /// Completion webhook target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Encoding of every image.
    pub output_spec: OutputSpec,
}

/// The request record (`REQ#<id>` / `META`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestMeta {
    /// Request id (a UUID for API uploads; derived from the object for S3 uploads).
    pub request_id: String,
    /// Owning tenant; other tenants never see the request.
    pub tenant: String,
    /// Lifecycle status.
    pub status: RequestStatus,
    /// Where the CSV came from.
    pub source: Source,
    /// Object key of the uploaded CSV for S3 uploads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_key: Option<String>,
    /// How images are encoded.
    pub output_spec: OutputSpec,
    /// Progress counters.
    pub counters: Counters,
    /// Webhook target and delivery history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Webhook>,
    /// Object key of the output CSV once written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_csv_key: Option<String>,
    /// Why the request failed, for `FAILED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// SHA-256 (hex) of what was submitted — the CSV, the webhook URL and the output spec — so
    /// a reused idempotency key with a different body is told apart from a retry
    /// (IETF `draft-ietf-httpapi-idempotency-key-header` §2.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// When the request was recorded.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When it entered a terminal status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    /// When `POST /requests/{id}/cancel` asked to stop it: rows not yet processed are recorded
    /// as `cancelled` and the request ends `CANCELLED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// The request this one retries (`POST /requests/{id}/retry`): it re-runs that request's
    /// failed images and keeps the images it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<String>,
}

impl RequestMeta {
    /// A new request `request_id` of `tenant` recorded at `now`: `PENDING`, from the API, the
    /// default output (JPEG quality 50), no rows counted, no webhook. Callers set the rest with
    /// struct update syntax (`RequestMeta { counters, ..RequestMeta::new(…) }`).
    #[must_use]
    pub fn new(
        request_id: impl Into<String>,
        tenant: impl Into<String>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            request_id: request_id.into(),
            tenant: tenant.into(),
            status: RequestStatus::Pending,
            source: Source::Api,
            source_key: None,
            output_spec: OutputSpec::default(),
            counters: Counters::default(),
            webhook: None,
            output_csv_key: None,
            failure: None,
            fingerprint: None,
            created_at: now,
            updated_at: now,
            completed_at: None,
            cancel_requested_at: None,
            retry_of: None,
        }
    }
}

/// Per-image result status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ImageStatus {
    /// Compressed and stored.
    Ok,
    /// Permanently failed; `error_code` says why.
    Failed,
}

/// What happened to one input image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageOutcome {
    /// `OK` or `FAILED`.
    pub status: ImageStatus,
    /// Object key of the compressed image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_key: Option<String>,
    /// Public URL of the compressed image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_url: Option<String>,
    /// Stable error code (`http_404`, `timeout`, `too_large`, `not_an_image`,
    /// `blocked_address`, `decode_error`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Error detail for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Downloaded size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<u64>,
    /// Stored size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_out: Option<u64>,
    /// Output width in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Output height in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// `true` when re-encoding would not have made the JPEG smaller, so the stored image is
    /// the input with its metadata removed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kept_original: bool,
}

impl ImageOutcome {
    /// A failed image with its stable code and detail; the detail is cut to
    /// [`super::text::MAX_MESSAGE_BYTES`].
    #[must_use]
    pub fn failed(code: impl Into<String>, error: impl Into<String>) -> Self {
        Self {
            status: ImageStatus::Failed,
            output_key: None,
            output_url: None,
            error_code: Some(code.into()),
            error: Some(super::text::message(&error.into())),
            bytes_in: None,
            bytes_out: None,
            width: None,
            height: None,
            kept_original: false,
        }
    }
}

/// State of a row record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RowState {
    /// Waiting for (or in) a worker.
    Pending,
    /// Outcome recorded; never changes again.
    Done,
}

/// What earlier deliveries of a row achieved for one of its images, kept on the row while it is
/// `PENDING`, so a retry fetches only what failed and an image cannot hold its row for ever.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageProgress {
    /// Zero-based position in the row.
    pub position: u32,
    /// The image's final outcome (stored, or failed for good); absent while it keeps failing
    /// transiently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<ImageOutcome>,
    /// Time spent on the image by deliveries that failed transiently, in milliseconds.
    #[serde(default)]
    pub spent_ms: u64,
    /// Deliveries that failed transiently on this image.
    #[serde(default)]
    pub failures: u32,
}

/// One CSV row (`REQ#<id>` / `ROW#<index>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowRecord {
    /// Zero-based data row index (input order).
    pub index: u32,
    /// The `S. No.` cell, as text.
    pub serial: String,
    /// The `Product Name` cell.
    pub product_name: String,
    /// Input image URLs in CSV order.
    pub input_urls: Vec<String>,
    /// Row state.
    pub state: RowState,
    /// Outcomes aligned with `input_urls` once `Done`.
    #[serde(default)]
    pub images: Vec<ImageOutcome>,
    /// Progress of earlier deliveries while `Pending` (images already stored, time spent on
    /// failing ones); empty once `Done`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub progress: Vec<ImageProgress>,
}

/// One stored part of a multipart upload: its number (1–10,000) and the store's tag (S3's
/// `ETag`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputPart {
    /// Part number.
    pub number: u32,
    /// The store's tag of the part.
    pub tag: String,
}

/// How far the output CSV of a large request got when an invocation ran out of time: the open
/// multipart upload, its parts, and the last row written. Stored on the request item, which
/// sends the notifier a stream record to continue from there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputProgress {
    /// Object key of the output CSV.
    pub key: String,
    /// The multipart upload.
    pub upload_id: String,
    /// Parts stored so far, in order.
    pub parts: Vec<OutputPart>,
    /// Index of the last row written; the next invocation starts after it.
    pub after_row: u32,
}

/// The ingest-queue message for one slice of a validated upload: the rows an `s3-ingest`
/// invocation turns into row items and row messages (DESIGN §3, "Catalogue-scale ingest").
/// The byte range was found valid by the scan of the whole object; `etag` pins the object, so
/// a replaced upload is never read half old, half new.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkJob {
    /// Owning request.
    pub request_id: String,
    /// Owning tenant.
    pub tenant: String,
    /// Object key of the upload.
    pub key: String,
    /// The upload's entity tag when it was scanned, if the store has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Zero-based index of the chunk's first row.
    pub first_row: u32,
    /// Rows in the chunk.
    pub rows: u32,
    /// Offset of the chunk's first byte in the object, in bytes.
    pub start: u64,
    /// Offset just past the chunk, in bytes.
    pub end: u64,
    /// 1-based line `start` is on.
    pub start_line: u64,
}

/// The SQS message for one row: everything a worker needs, so it never re-reads the CSV.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowJob {
    /// Schema version ([`ROW_JOB_VERSION`]).
    pub version: u32,
    /// Owning request.
    pub request_id: String,
    /// Owning tenant.
    pub tenant: String,
    /// Zero-based row index.
    pub row_index: u32,
    /// `S. No.` cell.
    pub serial: String,
    /// `Product Name` cell.
    pub product_name: String,
    /// Input image URLs in CSV order.
    pub input_urls: Vec<String>,
    /// Encoding of every image.
    pub output_spec: OutputSpec,
    /// `true` when the row already holds progress of earlier deliveries (a job sent again by
    /// the sweeper): the worker reads the row before it starts, as on any redelivery, so
    /// finished images are not fetched again. A first job of a fresh row reads nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resume: bool,
}

impl RowJob {
    /// The job for `row` of request `meta`.
    #[must_use]
    pub fn for_row(meta: &RequestMeta, row: &RowRecord) -> Self {
        Self {
            version: ROW_JOB_VERSION,
            request_id: meta.request_id.clone(),
            tenant: meta.tenant.clone(),
            row_index: row.index,
            serial: row.serial.clone(),
            product_name: row.product_name.clone(),
            input_urls: row.input_urls.clone(),
            output_spec: meta.output_spec,
            resume: !row.progress.is_empty(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(bytes_in: u64, bytes_out: u64) -> ImageOutcome {
        ImageOutcome {
            status: ImageStatus::Ok,
            bytes_in: Some(bytes_in),
            bytes_out: Some(bytes_out),
            ..ImageOutcome::failed("", "")
        }
    }

    #[test]
    fn request_is_terminal_only_after_the_last_row() {
        let mut counters = Counters {
            rows_total: 2,
            images_total: 3,
            ..Counters::default()
        };
        counters.add_row(&[ok(100, 40), ok(10, 4)]);
        assert_eq!(counters.terminal_status(), None);
        counters.add_row(&[ImageOutcome::failed("http_404", "not found")]);
        assert_eq!(
            counters.terminal_status(),
            Some(RequestStatus::CompletedWithErrors)
        );
        assert_eq!((counters.bytes_in, counters.bytes_out), (110, 44));
    }

    #[test]
    fn quality_outside_1_to_100_is_rejected() {
        assert!(OutputSpec::new(0, None).is_err());
        assert!(OutputSpec::new(101, None).is_err());
        assert_eq!(OutputSpec::new(80, Some(1200)).map(|s| s.quality), Ok(80));
    }
}
