//! `POST /uploads`: read the CSV (raw body or multipart form), then run the ingest use case.

use axum::http::StatusCode;
use bytes::Bytes;
use chrono::Utc;

use crate::ApiRepository;
use crate::{ApiRequest as Request, ApiResponse};
use pixpress_app::ingest::{
    CHUNK_ROWS, IngestError, IngestRequest, Ingested, ObjectIngestSettings, accept_upload,
    check_webhook_url,
};
use pixpress_app::ports::{ObjectStore, PortError, RowQueue};
use pixpress_domain::input_csv::parse_input_csv;
use pixpress_domain::model::{OutputFormat, OutputSpec, Quality, Source};
use pixpress_domain::storage_keys::derived_request_id;
use serde::Serialize;

use crate::problem::Problem;
use crate::{App, base_url, json_response};

use pixpress_app::config::FORM_OVERHEAD_BYTES;

/// The 202 body of an accepted upload.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// The request id.
    pub request_id: String,
    /// Status right after ingest (`PROCESSING`, or later for a replay).
    #[schema(value_type = pixpress_domain::model::RequestStatus)]
    pub status: &'static str,
    /// Where to poll the status.
    pub status_url: String,
    /// Data rows accepted.
    pub rows: u64,
    /// Image URLs accepted.
    pub images: u64,
}

/// The fields of an upload, from the form or from the query string.
#[derive(Debug, Default)]
pub(crate) struct UploadForm {
    pub(crate) csv: Option<Bytes>,
    pub(crate) webhook_url: Option<String>,
    pub(crate) format: Option<String>,
    pub(crate) quality: Option<String>,
    pub(crate) max_dimension: Option<String>,
    pub(crate) score: Option<String>,
}

impl UploadForm {
    /// The options in a query string (`webhook_url`, `format`, `quality`, `max_dimension`,
    /// `score`).
    pub(crate) fn from_query(query: Option<&str>) -> Self {
        let mut form = Self::default();
        for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            form.set(&name, value.into_owned());
        }
        form
    }

    /// Sets one option; `format` and `quality` are kept exactly as sent (their parsers accept
    /// only what the OpenAPI patterns do), the others trimmed.
    fn set(&mut self, name: &str, value: String) {
        match name {
            "webhook_url" => self.webhook_url = Some(value.trim().to_owned()),
            "format" => self.format = Some(value),
            "quality" => self.quality = Some(value),
            "max_dimension" => self.max_dimension = Some(value.trim().to_owned()),
            "score" => self.score = Some(value),
            _ => {}
        }
    }
}

/// Why an upload is refused. Every case becomes problem details in one place
/// ([`crate::problem`]'s `From<UploadError> for Problem`), which says where and why.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The body or the CSV is larger than direct uploads take (413, pointing to
    /// `POST /upload-urls`).
    #[error("the upload is {size} bytes; direct uploads are limited to {limit} bytes")]
    TooLarge {
        /// Bytes received (at least).
        size: usize,
        /// The limit, in bytes.
        limit: usize,
    },
    /// A multipart body the parser cannot read (400); the parser's words are logged.
    #[error("the multipart form cannot be read")]
    UnreadableForm,
    /// A `Content-Type` that is neither CSV nor a form (415); holds the media type sent.
    #[error("unsupported media type `{0}`")]
    UnsupportedMediaType(String),
    /// A form without a `file` field (400).
    #[error("the form has no `file` field")]
    MissingFile,
    /// An option out of range or malformed (400).
    #[error("{0}")]
    InvalidParameter(String),
    /// A webhook URL that is refused (400).
    #[error("invalid webhook_url: {0}")]
    InvalidWebhookUrl(String),
    /// The idempotency key's request could not be looked up (503).
    #[error("the idempotency key could not be checked")]
    KeyCheck(#[source] PortError),
    /// The ingest use case refused or failed.
    #[error(transparent)]
    Ingest(#[from] IngestError),
}

pub(crate) fn too_large(size: usize, limit: usize) -> ApiResponse {
    Problem::from(UploadError::TooLarge { size, limit }).into_response()
}

async fn read_multipart(
    body: Bytes,
    content_type: &str,
    limit: usize,
) -> Result<UploadForm, String> {
    let boundary = multer::parse_boundary(content_type).map_err(|e| e.to_string())?;
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream((limit + FORM_OVERHEAD_BYTES) as u64)
            .for_field("file", limit as u64 + 1),
    );
    let stream = futures::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(body) });
    let mut multipart = multer::Multipart::with_constraints(stream, boundary, constraints);
    let mut form = UploadForm::default();
    while let Some(field) = multipart.next_field().await.map_err(|e| e.to_string())? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            form.csv = Some(field.bytes().await.map_err(|e| e.to_string())?);
        } else {
            let value = field.text().await.map_err(|e| e.to_string())?;
            form.set(&name, value);
        }
    }
    Ok(form)
}

/// The request's output spec from its `format`, `quality` and `max_dimension` options over
/// the deployment's `default` ([`OutputSpec::from_options`]).
pub(crate) fn output_spec(form: &UploadForm, default: OutputSpec) -> Result<OutputSpec, String> {
    let format = match form.format.as_deref().filter(|f| !f.is_empty()) {
        None => None,
        Some(f) => Some(f.parse::<OutputFormat>()?),
    };
    let quality = match form.quality.as_deref().filter(|q| !q.is_empty()) {
        None => None,
        Some(q) => Some(q.parse::<Quality>()?),
    };
    let max_dimension =
        match form.max_dimension.as_deref().filter(|m| !m.is_empty()) {
            None => None,
            Some(m) => Some(m.parse::<u32>().map_err(|_| {
                format!("max_dimension must be a whole number of pixels, got `{m}`")
            })?),
        };
    let spec = OutputSpec::from_options(default, format, quality, max_dimension)?;
    match form.score.as_deref() {
        None | Some("") => Ok(spec),
        Some("true") => Ok(OutputSpec {
            score: true,
            ..spec
        }),
        Some("false") => Ok(OutputSpec {
            score: false,
            ..spec
        }),
        Some(other) => Err(format!(
            "score must be true or false, got `{}`",
            pixpress_domain::text::message(other)
        )),
    }
}

/// How long an idempotency key names its request; after that the same key makes a new one
/// (IETF `draft-ietf-httpapi-idempotency-key-header`: keys expire; 24 h as Stripe does).
pub const IDEMPOTENCY_KEY_TTL: chrono::Duration = chrono::Duration::hours(24);

/// The request id an idempotency key stands for now: derived from the tenant and the key, and
/// when the request under that id is older than [`IDEMPOTENCY_KEY_TTL`], the next id in the
/// key's chain (derived from the expired one), so every 24 h the key starts afresh while a
/// retry within the window finds its request.
async fn current_request_for_key<R, Q, S, K>(
    app: &App<R, Q, S, K>,
    tenant: &str,
    key: &str,
) -> Result<String, pixpress_app::ports::PortError>
where
    R: ApiRepository,
{
    let mut id = derived_request_id(&["idempotency-key", tenant, key]);
    let now = Utc::now();
    // Each link is at least 24 h younger than the one before: a few hundred cover years.
    for _ in 0..1000 {
        match app.repo.get_request(&id).await? {
            Some(meta) if now - meta.created_at > IDEMPOTENCY_KEY_TTL => {
                id = derived_request_id(&["idempotency-key-renewed", tenant, &id]);
            }
            _ => break,
        }
    }
    Ok(id)
}

/// `true` for `?dry_run=true` (or `1`).
fn is_dry_run(request: &Request) -> bool {
    url::form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes())
        .any(|(name, value)| name == "dry_run" && matches!(value.as_ref(), "true" | "1"))
}

/// The 200 body of a dry run: what the upload would become, or every issue; nothing is created.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DryRun {
    /// Always `true`.
    pub dry_run: bool,
    /// `true` when the upload would be accepted.
    pub valid: bool,
    /// Data rows that would become work.
    pub rows: u64,
    /// Image URLs that would be compressed.
    pub images: u64,
    /// The output spec that would apply.
    pub output_spec: OutputSpec,
    /// Every problem, as a rejected upload lists them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<pixpress_domain::input_csv::CsvIssue>,
    /// Problems found beyond those listed.
    #[serde(skip_serializing_if = "is_zero")]
    pub errors_omitted: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// `POST /uploads?dry_run=true`: validates like an upload (CSV, webhook URL, options) and
/// answers 200 with the counts or the issues, creating and enqueueing nothing.
fn dry_run<R, Q, S, K>(
    app: &App<R, Q, S, K>,
    csv: &[u8],
    webhook_url: Option<&str>,
    output_spec: OutputSpec,
) -> ApiResponse {
    if let Some(url) = webhook_url.filter(|u| !u.is_empty())
        && let Err(e) = check_webhook_url(url, app.config.egress)
    {
        return Problem::from(UploadError::InvalidWebhookUrl(e)).into_response();
    }
    let body = match parse_input_csv(csv, &app.config.csv, app.config.egress) {
        Ok(rows) => DryRun {
            dry_run: true,
            valid: true,
            rows: rows.len() as u64,
            images: rows.iter().map(|r| r.input_urls.len() as u64).sum(),
            output_spec,
            errors: Vec::new(),
            errors_omitted: 0,
        },
        Err(rejection) => DryRun {
            dry_run: true,
            valid: false,
            rows: 0,
            images: 0,
            output_spec,
            errors: rejection.issues,
            errors_omitted: rejection.omitted,
        },
    };
    json_response(StatusCode::OK, &body)
}

/// A validated upload: the CSV and its options.
struct Upload {
    csv: Bytes,
    webhook_url: Option<String>,
    output_spec: OutputSpec,
}

/// Reads the upload from `request`: the CSV as the raw body (`text/csv`) or in the `file`
/// field of a multipart form, the options from the form or the query string (the form wins),
/// within `limit` bytes of CSV.
///
/// # Errors
/// [`UploadError::TooLarge`], `UnreadableForm`, `UnsupportedMediaType`, `MissingFile`,
/// `InvalidParameter`.
async fn read_upload(
    request: &Request,
    limit: usize,
    default_output: OutputSpec,
) -> Result<Upload, UploadError> {
    let body = request.body().clone();
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let mut form = match media_type.as_str() {
        "multipart/form-data" => {
            if body.len() > limit + FORM_OVERHEAD_BYTES {
                return Err(UploadError::TooLarge {
                    size: body.len(),
                    limit,
                });
            }
            match read_multipart(body, &content_type, limit).await {
                Ok(form) => form,
                Err(e) if e.contains("size limit") => {
                    return Err(UploadError::TooLarge {
                        size: limit + 1,
                        limit,
                    });
                }
                Err(e) => {
                    // The parser's own words go to the logs; the client gets what to do.
                    tracing::info!(error = %e, "unreadable multipart form");
                    return Err(UploadError::UnreadableForm);
                }
            }
        }
        "text/csv" | "application/csv" | "text/plain" => UploadForm {
            csv: Some(body),
            ..UploadForm::default()
        },
        _ => return Err(UploadError::UnsupportedMediaType(media_type)),
    };
    if let Some(query) = request.uri().query() {
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let unset = match name.as_ref() {
                "webhook_url" => form.webhook_url.is_none(),
                "format" => form.format.is_none(),
                "quality" => form.quality.is_none(),
                "max_dimension" => form.max_dimension.is_none(),
                "score" => form.score.is_none(),
                _ => false,
            };
            if unset {
                form.set(&name, value.into_owned());
            }
        }
    }
    let Some(csv) = form.csv.clone() else {
        return Err(UploadError::MissingFile);
    };
    if csv.len() > limit {
        return Err(UploadError::TooLarge {
            size: csv.len(),
            limit,
        });
    }
    let output_spec = output_spec(&form, default_output).map_err(UploadError::InvalidParameter)?;
    Ok(Upload {
        csv,
        webhook_url: form.webhook_url.filter(|u| !u.is_empty()),
        output_spec,
    })
}

/// The `Idempotency-Key` header, trimmed; `None` when absent or blank.
///
/// # Errors
/// [`UploadError::InvalidParameter`] above 255 characters.
fn idempotency_key(request: &Request) -> Result<Option<&str>, UploadError> {
    let key = request
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty());
    if key.is_some_and(|k| k.len() > 255) {
        return Err(UploadError::InvalidParameter(
            "Idempotency-Key is longer than 255 characters".to_owned(),
        ));
    }
    Ok(key)
}

/// Accepts `upload` as a request of `tenant` ([`accept_upload`]: validated, recorded `PENDING`
/// and stored under `uploads/`, from where `s3-ingest` fans it out), under the id its
/// idempotency key stands for, or a new one.
///
/// # Errors
/// [`UploadError::KeyCheck`], [`UploadError::Ingest`].
async fn ingest_upload<R, Q, S, K>(
    app: &App<R, Q, S, K>,
    tenant: &str,
    key: Option<&str>,
    upload: Upload,
) -> Result<Ingested, UploadError>
where
    R: ApiRepository,
    S: ObjectStore,
{
    let request_id = match key {
        None => uuid::Uuid::new_v4().to_string(),
        Some(key) => current_request_for_key(app, tenant, key)
            .await
            .map_err(UploadError::KeyCheck)?,
    };
    crate::record_request_id(&request_id);
    let input = IngestRequest {
        request_id,
        tenant: tenant.to_owned(),
        source: Source::Api,
        source_key: None,
        csv: &upload.csv,
        webhook_url: upload.webhook_url,
        output_spec: upload.output_spec,
        now: Utc::now(),
    };
    let settings = ObjectIngestSettings {
        limits: app.config.csv,
        egress: app.config.egress,
        chunk_rows: CHUNK_ROWS,
    };
    let ingested = accept_upload(&app.repo, &app.store, &settings, input)
        .await
        .inspect_err(|e| {
            if let IngestError::InvalidCsv(rejection) = e {
                tracing::info!(
                    issues = rejection.issues.len() + rejection.omitted,
                    "upload rejected: invalid CSV"
                );
                metrics::counter!("uploads_rejected").increment(1);
            }
        })?;
    tracing::info!(
        rows = ingested.meta.counters.rows_total,
        images = ingested.meta.counters.images_total,
        replayed = ingested.replayed,
        "upload accepted"
    );
    metrics::counter!("uploads_accepted").increment(1);
    metrics::counter!("rows_accepted").increment(ingested.meta.counters.rows_total);
    Ok(ingested)
}

/// Handles `POST /uploads`: `read_upload`, then a dry run or `ingest_upload`; every error
/// through `From<UploadError> for Problem`.
pub async fn post_upload<R, Q, S, K>(
    app: &App<R, Q, S, K>,
    request: &Request,
    tenant: &str,
) -> ApiResponse
where
    R: ApiRepository,
    Q: RowQueue,
    S: ObjectStore,
{
    let upload =
        match read_upload(request, app.config.csv.max_bytes, app.config.default_output).await {
            Ok(upload) => upload,
            Err(e) => return Problem::from(e).into_response(),
        };
    if is_dry_run(request) {
        return dry_run(
            app,
            &upload.csv,
            upload.webhook_url.as_deref(),
            upload.output_spec,
        );
    }
    let ingested = match idempotency_key(request) {
        Ok(key) => ingest_upload(app, tenant, key, upload).await,
        Err(e) => Err(e),
    };
    let ingested = match ingested {
        Ok(ingested) => ingested,
        Err(e) => return Problem::from(e).into_response(),
    };
    let meta = ingested.meta;
    let status_url = format!(
        "{}/requests/{}",
        base_url(&app.config, request),
        meta.request_id
    );
    let accepted = Accepted {
        request_id: meta.request_id.clone(),
        status: meta.status.as_str(),
        status_url: status_url.clone(),
        rows: meta.counters.rows_total,
        images: meta.counters.images_total,
    };
    let mut response = json_response(StatusCode::ACCEPTED, &accepted);
    if let Ok(value) = status_url.parse() {
        response.headers_mut().insert("location", value);
    }
    if ingested.replayed {
        response.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    response
}

/// Every way `POST /uploads` (and the options of `POST /upload-urls`) refuses an upload.
impl From<UploadError> for Problem {
    fn from(e: UploadError) -> Self {
        match e {
            UploadError::TooLarge { size, limit } => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "csv-too-large",
                "CSV too large",
                format!(
                    "the upload is {size} bytes; direct uploads are limited to {limit} bytes — for a larger CSV, POST /upload-urls for a presigned upload and send the file there"
                ),
            ),
            UploadError::UnreadableForm => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid-form",
                "Invalid form",
                "the multipart form cannot be read; send the CSV in a `file` field of a well-formed multipart/form-data body, or as text/csv",
            ),
            UploadError::UnsupportedMediaType(media_type) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                format!(
                    "send the CSV as text/csv or as multipart/form-data with a `file` field, not `{}`",
                    if media_type.is_empty() {
                        "no Content-Type"
                    } else {
                        &media_type
                    }
                ),
            ),
            UploadError::MissingFile => Self::new(
                StatusCode::BAD_REQUEST,
                "missing-file",
                "Missing file",
                "the form has no `file` field holding the CSV",
            ),
            UploadError::InvalidParameter(detail) => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid-parameter",
                "Invalid parameter",
                detail,
            ),
            UploadError::InvalidWebhookUrl(detail) => {
                Self::from(IngestError::InvalidWebhookUrl(detail))
            }
            UploadError::KeyCheck(e) => {
                Self::unavailable(&e, "the idempotency key could not be checked")
            }
            UploadError::Ingest(e) => Self::from(e),
        }
    }
}
