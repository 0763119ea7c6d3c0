//! # api — the HTTP API function
//!
//! One axum [`Router`] ([`router`]) serves every route: Lambda runs it through `lambda_http`
//! (API Gateway HTTP API, payload 2.0), `pixpress serve` runs it directly on a port.
//!
//! Routes:
//! - `POST /uploads` — a CSV as multipart/form-data (`file`, optional `webhook_url`,
//!   `format`, `quality`, `max_dimension`) or a raw `text/csv` body (options as query parameters);
//!   optional `Idempotency-Key` header. → `202 {request_id, status, status_url, rows, images}`;
//!   `400` listing every CSV error; `413` over the size limit; `415` for other media types.
//! - `POST /upload-urls` — a presigned S3 POST form for a large CSV (`201 {request_id,
//!   upload_url, method, fields, expires_at, max_bytes, status_url}`; S3 enforces `max_bytes`);
//!   the S3 trigger ingests the upload under that request id ([`upload_url`]).
//! - `GET /requests/{id}` — status, progress, timestamps, per-product inputs and outputs
//!   (`?cursor=&limit=` pagination), output CSV link, webhook delivery state.
//! - `GET /requests/{id}/output.csv` — once written, `303` to a presigned link of the output
//!   CSV (the CSV itself from a store that cannot presign); `409` before.
//! - `POST /requests/{id}/webhook/redeliver` — queue a finished request's webhook again.
//! - `POST /requests/{id}/cancel` — stop a running request (it ends `CANCELLED`).
//! - `POST /requests/{id}/retry` — re-run the failed images of a finished request.
//!
//! - `GET /openapi.json` — the OpenAPI 3.1 description ([`openapi`]); `GET /docs` — interactive
//!   docs rendering it ([`docs`]); `GET /` — the web page ([`ui`]). All without a key.
//!
//! Every other route needs `Authorization: Bearer <key>` when the app has a key store ([`Tenant`]);
//! an unknown path answers 404 and a known path with another method 405 with `Allow`, both as
//! problem+json.
//!
//! Flow of an upload: 1. read and size-check the body ([`upload`]); 2. [`pixpress_app::ingest`]
//! validates, records and enqueues; 3. answer 202. Errors are problem+json ([`problem`]).
//!
//! Env vars: see [`pixpress_app::config::vars`] (`MAX_CSV_BYTES`, `MAX_ROWS`, `MAX_URLS_PER_ROW`,
//! `MAX_URL_LENGTH`, `JPEG_QUALITY`, `MAX_OUTPUT_DIMENSION`, `PUBLIC_API_URL`).

pub mod docs;
pub mod openapi;
pub mod problem;
pub mod status;
pub mod ui;
pub mod upload;
pub mod upload_url;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Uri};
use axum::routing::{get, post};
use bytes::Bytes;
use pixpress_app::auth::KeyStore;
use pixpress_app::auth::authenticate;
use pixpress_app::config::Config;
use pixpress_app::ports::{
    ObjectStore, RequestControl, RequestIntake, RequestReader, RowQueue, WebhookQueue,
};
use pixpress_domain::input_csv::CsvLimits;
use pixpress_domain::model::DEFAULT_TENANT;
use pixpress_domain::model::OutputSpec;
use pixpress_domain::storage_keys::is_valid_request_id;
use tower::ServiceExt as _;

use problem::Problem;

/// A request as the route handlers read it: head and the whole body.
pub type ApiRequest = axum::http::Request<Bytes>;

/// A response of the API.
pub type ApiResponse = axum::response::Response;

/// Largest request body read, in bytes: API Gateway's 10 MB payload quota for HTTP APIs
/// (<https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-quotas.html>).
pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

/// Settings of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Limits of `POST /uploads`.
    pub csv: CsvLimits,
    /// Largest CSV of a presigned upload (the S3 path's `MAX_UPLOAD_BYTES`), in bytes.
    pub upload_max_bytes: usize,
    /// Output spec when an upload does not choose one.
    pub default_output: OutputSpec,
    /// Public base URL for links; derived from the request's `Host` when unset.
    pub public_api_url: Option<String>,
    /// What image and webhook URLs may reach; a URL it refuses outright is rejected at once.
    pub egress: pixpress_domain::egress::NetworkPolicy,
}

impl From<&Config> for ApiConfig {
    fn from(config: &Config) -> Self {
        Self {
            csv: config.csv,
            upload_max_bytes: config.upload.max_bytes,
            default_output: config.output,
            public_api_url: config.public_api_url.clone(),
            egress: config.fetch.policy,
        }
    }
}

/// The API's dependencies.
#[derive(Debug, Clone)]
pub struct App<R, Q, S, K> {
    /// API keys: `Some` requires `Authorization: Bearer <key>` on every route and scopes every
    /// request to the key's tenant (the deployed API always); `None` serves everyone as
    /// [`DEFAULT_TENANT`] (`pixpress serve --no-auth` on loopback, `pixpress run`, tests).
    pub keys: Option<K>,
    /// Requests and rows.
    pub repo: R,
    /// Row jobs.
    pub queue: Q,
    /// Output objects.
    pub store: S,
    /// Settings.
    pub config: ApiConfig,
    /// The webhooks queue of a deployment, for `POST /requests/{id}/webhook/redeliver`;
    /// `None` where the notifier delivers itself (local runs): redelivery answers 501 there.
    pub webhooks: Option<Q>,
}

/// The caller's tenant: from the API key when the app has a key store (401 problem+json with
/// `WWW-Authenticate: Bearer` when the key is missing or not valid, 503 when the store cannot
/// be read), else [`DEFAULT_TENANT`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant(pub String);

impl<R, Q, S, K> FromRequestParts<Arc<App<R, Q, S, K>>> for Tenant
where
    R: Send + Sync,
    Q: Send + Sync,
    S: Send + Sync,
    K: KeyStore,
{
    type Rejection = ApiResponse;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App<R, Q, S, K>>,
    ) -> Result<Self, Self::Rejection> {
        let Some(keys) = &app.keys else {
            tracing::Span::current().record("tenant", DEFAULT_TENANT);
            return Ok(Self(DEFAULT_TENANT.to_owned()));
        };
        let header = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        match authenticate(keys, header).await {
            Ok(Ok(tenant)) => {
                tracing::Span::current().record("tenant", tenant.as_str());
                Ok(Self(tenant))
            }
            Ok(Err(_)) => Err(Problem::unauthorized().into_response()),
            Err(e) => {
                Err(Problem::unavailable(&e, "the API key could not be checked").into_response())
            }
        }
    }
}

/// The API as one router: every route, 404 and 405 (with `Allow`) as problem+json.
pub fn router<R, Q, S, K>(app: App<R, Q, S, K>) -> Router
where
    R: ApiRepository + Send + Sync + 'static,
    Q: RowQueue + WebhookQueue + Send + Sync + 'static,
    S: ObjectStore + Send + Sync + 'static,
    K: KeyStore + 'static,
{
    Router::new()
        .route("/uploads", post(uploads::<R, Q, S, K>))
        .route("/upload-urls", post(upload_urls::<R, Q, S, K>))
        .route("/requests/{id}", get(request_status::<R, Q, S, K>))
        .route("/requests/{id}/output.csv", get(output_csv::<R, Q, S, K>))
        .route(
            "/requests/{id}/webhook/redeliver",
            post(redeliver::<R, Q, S, K>),
        )
        .route("/requests/{id}/cancel", post(cancel::<R, Q, S, K>))
        .route("/requests/{id}/retry", post(retry::<R, Q, S, K>))
        .with_state(Arc::new(app))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/", get(ui::index))
        .route("/ui/app.js", get(ui::script))
        .route("/ui/app.css", get(ui::stylesheet))
        .route("/docs", get(docs::page))
        .route("/docs/rapidoc-min.js", get(docs::script))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(http_span))
}

/// Runs each request in an error-level span `http{method, path, tenant, request_id}`, so every
/// log line of its work names them: `tenant` is recorded once the key is checked
/// ([`Tenant`]), `request_id` once known (from the path, or when an upload is given one).
async fn http_span(request: axum::extract::Request, next: axum::middleware::Next) -> ApiResponse {
    use tracing::Instrument as _;
    let span = tracing::error_span!(
        "http",
        method = %request.method(),
        path = %request.uri().path(),
        tenant = tracing::field::Empty,
        request_id = tracing::field::Empty,
    );
    next.run(request).instrument(span).await
}

/// The `{id}` of a request route, checked once for every route: a malformed id answers 404
/// like an unknown one (it cannot name a request), a valid one is recorded on the span.
/// Extracted after [`Tenant`], so a missing key answers 401 first.
#[derive(Debug)]
struct RequestId(String);

impl<St: Send + Sync> FromRequestParts<St> for RequestId {
    type Rejection = ApiResponse;

    async fn from_request_parts(parts: &mut Parts, state: &St) -> Result<Self, Self::Rejection> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(axum::response::IntoResponse::into_response)?;
        if !is_valid_request_id(&id) {
            return Err(Problem::request_not_found().into_response());
        }
        record_request_id(&id);
        Ok(Self(id))
    }
}

/// Records the request id on the current request's span.
pub(crate) fn record_request_id(request_id: &str) {
    tracing::Span::current().record("request_id", request_id);
}

/// Sends one request through [`router`] and returns its response with the body read: what
/// `pixpress invoke`, the local pipeline and the tests use.
///
/// # Errors
/// When the response body cannot be read.
pub async fn handle<R, Q, S, K, B>(
    app: &App<R, Q, S, K>,
    request: axum::http::Request<B>,
) -> Result<axum::http::Response<lambda_http::Body>, lambda_http::Error>
where
    R: ApiRepository + Clone + Send + Sync + 'static,
    Q: RowQueue + WebhookQueue + Clone + Send + Sync + 'static,
    S: ObjectStore + Clone + Send + Sync + 'static,
    K: KeyStore + Clone + 'static,
    B: axum::body::HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let response = router(app.clone())
        .oneshot(request.map(axum::body::Body::new))
        .await?;
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await?;
    let body = if bytes.is_empty() {
        lambda_http::Body::Empty
    } else {
        lambda_http::Body::Binary(bytes.to_vec())
    };
    Ok(axum::http::Response::from_parts(parts, body))
}

/// Reads the whole body (at most [`MAX_BODY_BYTES`]; a larger one is answered 413).
async fn buffered(request: axum::extract::Request) -> Result<ApiRequest, ApiResponse> {
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => Ok(ApiRequest::from_parts(parts, bytes)),
        Err(e) => {
            tracing::info!(error = %e, "request body not read");
            Err(upload::too_large(MAX_BODY_BYTES + 1, MAX_BODY_BYTES))
        }
    }
}

/// Submit a CSV.
///
/// Validates the whole CSV (every problem listed with its row and column), records the
/// request and queues its rows; answers at once. The CSV goes as a raw `text/csv` body (options
/// as query parameters) or as the `file` field of a multipart form.
#[utoipa::path(
    post,
    path = "/uploads",
    tag = "requests",
    params(
        ("webhook_url" = Option<String>, Query, description = "Where the signed completion event is POSTed: an absolute http or https URL of a DNS host name, as the pattern gives it (the API also refuses private and special-purpose addresses and ports other than 80 and 443)", pattern = "^$|^[Hh][Tt][Tt][Pp][Ss]?://([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?([/?#][^\\s]*)?$"),
        ("format" = Option<String>, Query, description = "Output format: `jpeg` (default), `webp` or `avif`; output URLs end in `.jpg`, `.webp` or `.avif`", pattern = "^(jpeg|webp|avif)$"),
        ("quality" = Option<String>, Query, description = "Encoder quality 1–100 on the format's scale (defaults: jpeg 50, webp 65, avif 60), or `auto:<score>` (10–95): per image, the lowest quality whose SSIMULACRA2 reaches the score", pattern = "^(100|[1-9][0-9]?|auto:([1-8][0-9]|9[0-5]))$"),
        ("max_dimension" = Option<u32>, Query, description = "Longest side of the output images, in pixels (1–65535)", minimum = 1, maximum = 65535),
        ("score" = Option<bool>, Query, description = "`false` leaves images unscored at a fixed quality (each score costs about 150 ms of CPU per megapixel); default `true`; `auto:` qualities always score"),
        ("dry_run" = Option<bool>, Query, description = "Validate only: 200 with the counts or the issues, nothing created"),
        ("Idempotency-Key" = Option<String>, Header, description = "Up to 255 characters; a retry with the same key and body within 24 h answers the same request"),
    ),
    request_body(
        description = "The CSV (`S. No.,Product Name,Input Image Urls`, RFC 4180), at most MAX_CSV_BYTES bytes (4,603,904 by default: what Lambda's 6-MB invocation payload holds once API Gateway has base64-encoded the body, less the event and form framing) and any number of rows up to MAX_UPLOAD_ROWS (1,000,000); larger files take `POST /upload-urls`",
        content(
            (String = "text/csv"),
            (openapi::UploadForm = "multipart/form-data"),
        ),
    ),
    responses(
        (status = 202, description = "Accepted: the CSV is valid, the request recorded (`PENDING`) and the CSV stored; its rows are written and queued right after, asynchronously (`PROCESSING` once all are queued)", body = upload::Accepted,
            headers(("location" = String, description = "The status URL"), ("idempotent-replayed" = String, description = "`true` when an earlier upload with this Idempotency-Key answered"))),
        (status = 200, description = "Dry run: what the upload would become", body = upload::DryRun),
        (status = 400, description = "Invalid CSV (every issue, with row and column) or an invalid option", body = problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key (with `WWW-Authenticate: Bearer`)", body = problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Over the direct upload limit; use `POST /upload-urls`", body = problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Neither text/csv nor multipart/form-data", body = problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "The Idempotency-Key was used for a different upload", body = problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "A backend could not be reached; try again later", body = problem::Problem, content_type = "application/problem+json"),
    ),
)]
async fn uploads<R, Q, S, K>(
    State(app): State<Arc<App<R, Q, S, K>>>,
    tenant: Tenant,
    request: axum::extract::Request,
) -> ApiResponse
where
    R: ApiRepository,
    Q: RowQueue,
    S: ObjectStore,
{
    match buffered(request).await {
        Ok(request) => upload::post_upload(&app, &request, &tenant.0).await,
        Err(response) => response,
    }
}

/// Get a presigned upload form for a large CSV.
///
/// `POST` a `multipart/form-data` body to `upload_url` with every one of `fields`, then the CSV
/// in a last field named `file`; it becomes request `request_id`, with the options given here.
/// S3 enforces the size (`max_bytes`) through the form's signed policy.
#[utoipa::path(
    post,
    path = "/upload-urls",
    tag = "requests",
    params(
        ("webhook_url" = Option<String>, Query, description = "As for `POST /uploads`", pattern = "^$|^[Hh][Tt][Tt][Pp][Ss]?://([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?([/?#][^\\s]*)?$"),
        ("format" = Option<String>, Query, description = "As for `POST /uploads`", pattern = "^(jpeg|webp|avif)$"),
        ("quality" = Option<String>, Query, description = "As for `POST /uploads`", pattern = "^(100|[1-9][0-9]?|auto:([1-8][0-9]|9[0-5]))$"),
        ("max_dimension" = Option<u32>, Query, description = "As for `POST /uploads`", minimum = 1, maximum = 65535),
        ("score" = Option<bool>, Query, description = "As for `POST /uploads`"),
    ),
    responses(
        (status = 201, description = "Where and how to upload", body = upload_url::UploadUrl),
        (status = 400, description = "An invalid option", body = problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key (with `WWW-Authenticate: Bearer`)", body = problem::Problem, content_type = "application/problem+json"),
        (status = 501, description = "This deployment cannot presign uploads (local disk)", body = problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "A backend could not be reached; try again later", body = problem::Problem, content_type = "application/problem+json"),
    ),
)]
async fn upload_urls<R, Q, S, K>(
    State(app): State<Arc<App<R, Q, S, K>>>,
    tenant: Tenant,
    request: axum::extract::Request,
) -> ApiResponse
where
    R: ApiRepository,
    Q: RowQueue,
    S: ObjectStore,
{
    let (parts, _) = request.into_parts();
    upload_url::post_upload_url(
        &app,
        &ApiRequest::from_parts(parts, Bytes::new()),
        &tenant.0,
    )
    .await
}

/// A request's status, progress and products.
///
/// Products come in pages, in input order; follow `next_cursor`. While the request runs the
/// answer carries `Retry-After`.
#[utoipa::path(
    get,
    path = "/requests/{id}",
    tag = "requests",
    params(
        ("id" = String, Path, description = "The request id"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page", pattern = "^[0-9]{1,9}$"),
        ("limit" = Option<u32>, Query, description = "Products per page, 0–1000 (default 100; 0: the summary alone)", minimum = 0, maximum = 1000),
    ),
    responses(
        (status = 200, description = "The status document", body = status::StatusDocument,
            headers(("retry-after" = String, description = "Seconds until polling again is worth it, while the request runs"))),
        (status = 400, description = "An invalid cursor or limit", body = problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key (with `WWW-Authenticate: Bearer`)", body = problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such request (or another tenant's)", body = problem::Problem, content_type = "application/problem+json"),
        (status = 500, description = "The request could not be read", body = problem::Problem, content_type = "application/problem+json"),
    ),
)]
async fn request_status<R, Q, S, K>(
    State(app): State<Arc<App<R, Q, S, K>>>,
    tenant: Tenant,
    RequestId(id): RequestId,
    request: axum::extract::Request,
) -> ApiResponse
where
    R: ApiRepository,
    S: ObjectStore,
{
    let (parts, _) = request.into_parts();
    status::get_request(
        &app,
        &ApiRequest::from_parts(parts, Bytes::new()),
        &id,
        &tenant.0,
    )
    .await
}

/// The repository roles the API uses: intake (uploads, retries), reading (status pages, the
/// output CSV) and control (cancel, webhook redelivery).
pub trait ApiRepository: RequestIntake + RequestReader + RequestControl {}

impl<T: RequestIntake + RequestReader + RequestControl> ApiRepository for T {}

/// The problem-details answers of every route about one request: 401, 404, 500, 503
/// (RFC 9457 bodies).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Only its OpenAPI description is used.
enum RequestErrors {
    /// Missing or invalid API key (with `WWW-Authenticate: Bearer`)
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(problem::Problem),
    /// No such request (or another tenant's)
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(problem::Problem),
    /// The request could not be read
    #[response(status = 500, content_type = "application/problem+json")]
    Unreadable(problem::Problem),
    /// A backend could not be reached; try again later
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(problem::Problem),
}

/// The output CSV of a finished request.
///
/// The input columns plus `Output Image Urls`, in the input's order.
#[utoipa::path(
    get,
    path = "/requests/{id}/output.csv",
    tag = "requests",
    params(("id" = String, Path, description = "The request id")),
    responses(
        (status = 200, description = "The CSV itself (stores that cannot presign)", body = String, content_type = "text/csv"),
        (status = 303, description = "A presigned link to the CSV, valid 15 minutes",
            headers(("location" = String, description = "The presigned link"))),
        (status = 409, description = "The CSV is written when the request completes", body = problem::Problem, content_type = "application/problem+json"),
        RequestErrors,
    ),
)]
async fn output_csv<R, Q, S, K>(
    State(app): State<Arc<App<R, Q, S, K>>>,
    tenant: Tenant,
    RequestId(id): RequestId,
) -> ApiResponse
where
    R: ApiRepository,
    S: ObjectStore,
{
    status::get_output_csv(&app, &id, &tenant.0).await
}

/// Send a finished request's webhook again.
///
/// A new series of attempts on the sender's schedule; earlier attempts stay in the status.
#[utoipa::path(
    post,
    path = "/requests/{id}/webhook/redeliver",
    tag = "webhooks",
    params(("id" = String, Path, description = "The request id")),
    responses(
        (status = 202, description = "Queued", body = status::Redelivery),
        (status = 409, description = "Not finished yet, or submitted without a webhook", body = problem::Problem, content_type = "application/problem+json"),
        (status = 501, description = "This deployment delivers webhooks without a queue (local runs)", body = problem::Problem, content_type = "application/problem+json"),
        RequestErrors,
    ),
)]
async fn redeliver<R, Q, S, K>(
    State(app): State<Arc<App<R, Q, S, K>>>,
    tenant: Tenant,
    RequestId(id): RequestId,
) -> ApiResponse
where
    R: ApiRepository,
    Q: WebhookQueue,
{
    status::post_redeliver(&app, &id, &tenant.0).await
}

/// Cancel a running request.
///
/// Rows not processed yet are recorded as `cancelled` (nothing more is downloaded for them),
/// rows being processed finish, and the request ends `CANCELLED` with its output CSV and
/// webhook. Asking again answers the first time.
#[utoipa::path(
    post,
    path = "/requests/{id}/cancel",
    tag = "requests",
    params(("id" = String, Path, description = "The request id")),
    responses(
        (status = 202, description = "Cancellation recorded", body = status::Cancellation),
        (status = 409, description = "The request has finished", body = problem::Problem, content_type = "application/problem+json"),
        RequestErrors,
    ),
)]
async fn cancel<R, Q, S, K>(
    State(app): State<Arc<App<R, Q, S, K>>>,
    tenant: Tenant,
    RequestId(id): RequestId,
) -> ApiResponse
where
    R: ApiRepository,
{
    status::post_cancel(&app, &id, &tenant.0).await
}

/// Retry the failed images of a finished request.
///
/// Makes a new request (`retry_of` names the original; the original's status shows
/// `retried_by`) with every row of the original: images the original stored are kept as they
/// are, the others — failed, cancelled, never processed — are downloaded and compressed again.
/// The retry has its own output CSV (every row, old and new images) and webhook. Asking again
/// answers the same retry; retry the retry for another attempt.
#[utoipa::path(
    post,
    path = "/requests/{id}/retry",
    tag = "requests",
    params(("id" = String, Path, description = "The request id")),
    responses(
        (status = 202, description = "Retry started (`Location`: its status; `Idempotent-Replayed: true` when asked before)", body = status::RetryAccepted),
        (status = 409, description = "The request is running, every image is stored, or its rows were never all read from its upload", body = problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "More rows than an upload may have", body = problem::Problem, content_type = "application/problem+json"),
        RequestErrors,
    ),
)]
async fn retry<R, Q, S, K>(
    State(app): State<Arc<App<R, Q, S, K>>>,
    tenant: Tenant,
    RequestId(id): RequestId,
    request: axum::extract::Request,
) -> ApiResponse
where
    R: ApiRepository,
    Q: RowQueue,
{
    let (parts, _) = request.into_parts();
    let request = ApiRequest::from_parts(parts, Bytes::new());
    status::post_retry(&app, &request, &id, &tenant.0).await
}

async fn not_found(method: Method, uri: Uri) -> ApiResponse {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "Not found",
        format!("no route for {method} {}", uri.path()),
    )
    .into_response()
}

/// 405; the router adds `Allow` with the path's methods.
async fn method_not_allowed(method: Method, uri: Uri) -> ApiResponse {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        format!(
            "{method} is not allowed on {}; see the Allow header",
            uri.path()
        ),
    )
    .into_response()
}

/// The public base URL of the API for links in responses: `PUBLIC_API_URL`, else the scheme and
/// host the request came to (`X-Forwarded-Proto`, `Host`), else empty (links are relative).
pub(crate) fn base_url(config: &ApiConfig, request: &ApiRequest) -> String {
    if let Some(url) = &config.public_api_url {
        return url.clone();
    }
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    match header("host") {
        Some(host) => {
            let scheme = header("x-forwarded-proto").unwrap_or_else(|| "https".to_owned());
            format!("{scheme}://{host}")
        }
        None => String::new(),
    }
}

/// JSON response with `status`.
pub(crate) fn json_response(status: StatusCode, value: &impl serde::Serialize) -> ApiResponse {
    match serde_json::to_string(value) {
        Ok(body) => {
            let mut response = ApiResponse::new(axum::body::Body::from(body));
            *response.status_mut() = status;
            response.headers_mut().insert(
                "content-type",
                axum::http::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(e) => Problem::internal(&e).into_response(),
    }
}
