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

/// Output image format, chosen per request (`format=jpeg|webp|avif`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// Baseline JPEG (libjpeg-turbo, 4:2:0), `image/jpeg`, extension `.jpg`.
    #[default]
    Jpeg,
    /// Lossy WebP (libwebp, method 4), `image/webp`, extension `.webp`.
    Webp,
    /// AVIF: one AV1 intra frame (rav1e, 10-bit 4:4:4) in a HEIF container, `image/avif`,
    /// extension `.avif`.
    Avif,
}

impl OutputFormat {
    /// Every format, in the order the API documents them.
    pub const ALL: [Self; 3] = [Self::Jpeg, Self::Webp, Self::Avif];

    /// The name used in the API, the CLI and the output (`jpeg`, `webp`, `avif`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Jpeg => "jpeg",
            Self::Webp => "webp",
            Self::Avif => "avif",
        }
    }

    /// File extension without the dot.
    #[must_use]
    pub fn extension(self) -> &'static str {
        match self {
            Self::Jpeg => "jpg",
            Self::Webp => "webp",
            Self::Avif => "avif",
        }
    }

    /// MIME type of the stored objects (IANA media types `image/jpeg`, `image/webp`,
    /// `image/avif`).
    #[must_use]
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Webp => "image/webp",
            Self::Avif => "image/avif",
        }
    }

    /// The encoder quality (1–100, each encoder's own scale) used when a request names no
    /// quality. JPEG's is the mission's 50; WebP's and AVIF's are the lowest settings whose
    /// median SSIMULACRA2 over the product benchmark set is at least JPEG q50's (README,
    /// "Output formats").
    #[must_use]
    pub fn default_quality(self) -> u8 {
        match self {
            Self::Jpeg => DEFAULT_JPEG_QUALITY,
            Self::Webp => DEFAULT_WEBP_QUALITY,
            Self::Avif => DEFAULT_AVIF_QUALITY,
        }
    }
}

impl std::str::FromStr for OutputFormat {
    type Err = String;

    /// Exactly `jpeg`, `webp` or `avif` (the API's enumeration).
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "jpeg" => Ok(Self::Jpeg),
            "webp" => Ok(Self::Webp),
            "avif" => Ok(Self::Avif),
            _ => Err(format!(
                "format must be one of jpeg, webp, avif, got `{}`",
                crate::text::message(text)
            )),
        }
    }
}

/// WebP quality used when a request names none (libwebp's 0–100 scale).
pub const DEFAULT_WEBP_QUALITY: u8 = 65;
/// AVIF quality used when a request names none (ravif/cavif's 1–100 scale, mapped to the AV1
/// quantizer).
pub const DEFAULT_AVIF_QUALITY: u8 = 60;

/// The lowest and highest SSIMULACRA2 score `quality=auto:<score>` accepts. The metric's
/// scale (libjxl `tools/ssimulacra2.cc`): 30 low, 50 medium, 70 high, 90 visually lossless.
pub const AUTO_SCORE_RANGE: std::ops::RangeInclusive<u8> = 10..=95;

/// A request's quality choice: a fixed encoder setting, or the lowest setting that reaches a
/// perceptual score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    /// Encoder quality 1–100 on the format's own scale.
    Fixed(u8),
    /// `auto:<score>`: per image, the lowest encoder quality whose SSIMULACRA2 against the
    /// decoded source reaches `score` ([`AUTO_SCORE_RANGE`]).
    Auto(u8),
}

impl std::fmt::Display for Quality {
    /// As the API takes it: `50` or `auto:70`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fixed(q) => write!(f, "{q}"),
            Self::Auto(score) => write!(f, "auto:{score}"),
        }
    }
}

impl std::str::FromStr for Quality {
    type Err = String;

    /// Exactly `50` (1–100, no sign, spaces or leading zeros) or `auto:70` (a score in
    /// [`AUTO_SCORE_RANGE`]), as the API's pattern
    /// `^(100|[1-9][0-9]?|auto:([1-8][0-9]|9[0-5]))$` admits.
    fn from_str(text: &str) -> Result<Self, String> {
        let shown = crate::text::message(text);
        let whole = |digits: &str| {
            (!digits.is_empty() && !digits.starts_with('0') && digits.len() <= 3)
                .then(|| digits.bytes().all(|b| b.is_ascii_digit()))
                .filter(|all| *all)
                .and_then(|_| digits.parse::<u8>().ok())
        };
        if let Some(score) = text.strip_prefix("auto:") {
            let range = AUTO_SCORE_RANGE;
            return match whole(score) {
                Some(s) if range.contains(&s) => Ok(Self::Auto(s)),
                _ => Err(format!(
                    "quality auto:<score> needs a whole SSIMULACRA2 score {}–{}, got `{shown}`",
                    range.start(),
                    range.end()
                )),
            };
        }
        match whole(text) {
            Some(q) if (1..=100).contains(&q) => Ok(Self::Fixed(q)),
            _ => Err(format!(
                "quality must be a whole number 1–100 or auto:<score>, got `{shown}`"
            )),
        }
    }
}

/// How every image of a request is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutputSpec {
    /// Output format.
    #[serde(default)]
    pub format: OutputFormat,
    /// Encoder quality, 1–100 on the format's own scale (libjpeg's for JPEG). With
    /// `target_score` it is only where the search starts.
    pub quality: u8,
    /// `quality=auto:<score>`: the SSIMULACRA2 score each image must reach with the lowest
    /// encoder quality that does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_score: Option<u8>,
    /// Longest side of the output in pixels; larger images are scaled down, never up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_dimension: Option<u32>,
    /// Whether every image gets its SSIMULACRA2 score (`score=false` turns it off for a fixed
    /// quality, saving about 150 ms of CPU per megapixel; `auto:` always scores).
    #[serde(default = "scored", skip_serializing_if = "is_scored")]
    pub score: bool,
}

fn scored() -> bool {
    true
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_scored(score: &bool) -> bool {
    *score
}

impl Default for OutputSpec {
    fn default() -> Self {
        Self {
            format: OutputFormat::Jpeg,
            quality: DEFAULT_JPEG_QUALITY,
            target_score: None,
            max_dimension: None,
            score: true,
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
        Self::with_format(
            OutputFormat::Jpeg,
            Some(Quality::Fixed(quality)),
            max_dimension,
        )
    }

    /// A spec for `format`; no `quality` means the format's [`OutputFormat::default_quality`].
    ///
    /// # Errors
    /// A message naming the accepted range when a fixed quality is outside 1–100, an auto
    /// score outside [`AUTO_SCORE_RANGE`], or `max_dimension` outside
    /// 1–[`MAX_DIMENSION_PIXELS`].
    pub fn with_format(
        format: OutputFormat,
        quality: Option<Quality>,
        max_dimension: Option<u32>,
    ) -> Result<Self, String> {
        let (quality, target_score) = match quality {
            None => (format.default_quality(), None),
            Some(Quality::Fixed(q)) if (1..=100).contains(&q) => (q, None),
            Some(Quality::Fixed(q)) => {
                return Err(format!("quality must be between 1 and 100, got {q}"));
            }
            Some(Quality::Auto(score)) if AUTO_SCORE_RANGE.contains(&score) => {
                (format.default_quality(), Some(score))
            }
            Some(Quality::Auto(score)) => {
                return Err(format!(
                    "quality auto:<score> needs a score {}–{}, got {score}",
                    AUTO_SCORE_RANGE.start(),
                    AUTO_SCORE_RANGE.end()
                ));
            }
        };
        if let Some(pixels) = max_dimension
            && !(1..=MAX_DIMENSION_PIXELS).contains(&pixels)
        {
            return Err(format!(
                "max_dimension must be 1–{MAX_DIMENSION_PIXELS} pixels (a JPEG's longest side), got {pixels}"
            ));
        }
        Ok(Self {
            format,
            quality,
            target_score,
            max_dimension,
            score: true,
        })
    }

    /// The spec a request's options make over the deployment's `default`: each option absent
    /// takes the default's, and a `format` other than the default's takes that format's own
    /// default quality. The API's `format`, `quality` and `max_dimension` and the CLI's flags
    /// all come through here.
    ///
    /// # Errors
    /// As [`OutputSpec::with_format`].
    pub fn from_options(
        default: OutputSpec,
        format: Option<OutputFormat>,
        quality: Option<Quality>,
        max_dimension: Option<u32>,
    ) -> Result<Self, String> {
        let format = format.unwrap_or(default.format);
        let quality = match quality {
            Some(q) => Some(q),
            None if format == default.format => Some(match default.target_score {
                Some(score) => Quality::Auto(score),
                None => Quality::Fixed(default.quality),
            }),
            None => None,
        };
        let spec = Self::with_format(format, quality, max_dimension.or(default.max_dimension))?;
        Ok(Self {
            score: default.score,
            ..spec
        })
    }

    /// The time one image may take to compress, once downloaded: 15 s for JPEG and WebP (a
    /// 50 MP JPEG takes about 2 s of one vCPU, the rest is headroom for a queue of images ahead
    /// of it), 60 s for AVIF (rav1e at speed 8: about 1.3 s a megapixel). The worker starts an
    /// image only while its download, this and the record fit before the invocation's
    /// deadline (the row-worker's Lambda timeout is 120 s), and a quality search is cut to
    /// what fits in it ([`OutputSpec::search_encodes`]).
    #[must_use]
    pub fn compression_budget(&self) -> std::time::Duration {
        std::time::Duration::from_secs(match self.format {
            OutputFormat::Jpeg | OutputFormat::Webp => 15,
            OutputFormat::Avif => 60,
        })
    }

    /// How many encodes an `auto:` search may spend on an image of `pixels` pixels: as many
    /// as fit in 80 % of [`OutputSpec::compression_budget`] at the measured cost of one
    /// encode-and-score per megapixel (JPEG 0.17 s, WebP 0.24 s, AVIF 1.3 s on one vCPU),
    /// between 1 and `max`. Derived from the pixel count, never from a clock, so the same
    /// image always gets the same bytes.
    #[must_use]
    pub fn search_encodes(&self, pixels: u64, max: usize) -> usize {
        let seconds_per_megapixel = match self.format {
            OutputFormat::Jpeg => 0.17,
            OutputFormat::Webp => 0.24,
            OutputFormat::Avif => 1.3,
        };
        let one = seconds_per_megapixel * (pixels as f64 / 1e6);
        let fit = 0.8 * self.compression_budget().as_secs_f64() / one.max(1e-9);
        (fit.floor() as usize).clamp(1, max.max(1))
    }

    /// The quality as a request states it: `50` or `auto:70`.
    #[must_use]
    pub fn quality_text(&self) -> String {
        match self.target_score {
            Some(score) => format!("auto:{score}"),
            None => self.quality.to_string(),
        }
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
    /// Encoder quality the image was encoded at (the searched one under `auto:<score>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<u8>,
    /// SSIMULACRA2 score of the stored image against the decoded source, 100 = identical
    /// (absent when the image is too small to score, under 8 pixels a side).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<Score>,
}

/// A SSIMULACRA2 score (libjxl `tools/ssimulacra2.cc`; −∞ to 100, 90 visually lossless),
/// kept to two decimals.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct Score(f64);

impl Score {
    /// `value` rounded to two decimals; `None` for a value that is not a finite number.
    #[must_use]
    pub fn new(value: f64) -> Option<Self> {
        value
            .is_finite()
            .then(|| Self((value * 100.0).round() / 100.0))
    }

    /// The score.
    #[must_use]
    pub fn value(self) -> f64 {
        self.0
    }
}

// Never NaN (Score::new refuses it), so equality is an equivalence.
impl Eq for Score {}

impl std::fmt::Display for Score {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2}", self.0)
    }
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
            quality: None,
            score: None,
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
    fn quality_parses_fixed_and_auto_and_nothing_else() {
        assert_eq!("50".parse::<Quality>(), Ok(Quality::Fixed(50)));
        assert_eq!("100".parse::<Quality>(), Ok(Quality::Fixed(100)));
        assert_eq!("auto:70".parse::<Quality>(), Ok(Quality::Auto(70)));
        for bad in [
            "0", "101", "050", "+50", " 50", "5.0", "auto:", "auto:9", "auto:96", "auto:070",
            "high", "",
        ] {
            let error = bad.parse::<Quality>().unwrap_err();
            assert!(error.contains("quality"), "{bad:?}: {error}");
        }
        assert_eq!("avif".parse::<OutputFormat>(), Ok(OutputFormat::Avif));
        assert!(
            "AVIF"
                .parse::<OutputFormat>()
                .unwrap_err()
                .contains("jpeg, webp, avif")
        );
    }

    #[test]
    fn a_format_without_quality_takes_its_own_default_and_auto_keeps_the_target() {
        let webp = OutputSpec::with_format(OutputFormat::Webp, None, None).unwrap();
        assert_eq!(
            (webp.quality, webp.target_score),
            (DEFAULT_WEBP_QUALITY, None)
        );
        let auto =
            OutputSpec::with_format(OutputFormat::Avif, Some(Quality::Auto(70)), None).unwrap();
        assert_eq!(
            (auto.quality, auto.target_score),
            (DEFAULT_AVIF_QUALITY, Some(70))
        );
        assert_eq!(auto.quality_text(), "auto:70");
        // A spec stored before formats existed still reads as the JPEG it was.
        let old: OutputSpec = serde_json::from_str(r#"{"quality":50}"#).unwrap();
        assert_eq!(old, OutputSpec::default());
    }

    #[test]
    fn a_search_on_a_large_image_is_cut_to_what_fits_its_compression_budget() {
        let avif =
            OutputSpec::with_format(OutputFormat::Avif, Some(Quality::Auto(70)), None).unwrap();
        assert_eq!(avif.search_encodes(1_600_000, 6), 6);
        assert_eq!(avif.search_encodes(12_000_000, 6), 3);
        assert_eq!(avif.search_encodes(24_000_000, 6), 1);
        let jpeg =
            OutputSpec::with_format(OutputFormat::Jpeg, Some(Quality::Auto(70)), None).unwrap();
        assert_eq!(jpeg.search_encodes(12_000_000, 6), 5);
        assert_eq!(jpeg.search_encodes(50_000_000, 6), 1);
        assert!(avif.compression_budget() > jpeg.compression_budget());
    }

    #[test]
    fn quality_outside_1_to_100_is_rejected() {
        assert!(OutputSpec::new(0, None).is_err());
        assert!(OutputSpec::new(101, None).is_err());
        assert_eq!(OutputSpec::new(80, Some(1200)).map(|s| s.quality), Ok(80));
    }
}
