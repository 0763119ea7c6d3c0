//! # api — the HTTP API function
//!
//! Trigger: API Gateway HTTP API (payload 2.0) via `lambda_http`; locally, `pixpress serve`.
//!
//! Routes:
//! - `POST /uploads` — a CSV as multipart/form-data (`file`, optional `webhook_url`,
//!   `quality`, `max_dimension`) or a raw `text/csv` body (options as query parameters);
//!   optional `Idempotency-Key` header. → `202 {request_id, status, status_url, rows, images}`;
//!   `400` listing every CSV error; `413` over the size limit; `415` for other media types.
//! - `POST /upload-urls` — a presigned S3 `PUT` for a large CSV (`201 {request_id, upload_url,
//!   method, headers, expires_at, max_bytes, status_url}`); the S3 trigger ingests the upload
//!   under that request id ([`upload_url`]).
//! - `GET /requests/{id}` — status, progress, timestamps, per-product inputs and outputs
//!   (`?cursor=&limit=` pagination), output CSV link, webhook delivery state.
//! - `GET /requests/{id}/output.csv` — once written, `303` to a presigned link of the output
//!   CSV (the CSV itself from a store that cannot presign); `409` before.
//!
//! Flow of an upload: 1. read and size-check the body ([`upload`]); 2. [`pixpress::ingest`]
//! validates, records and enqueues; 3. answer 202. Errors are problem+json ([`problem`]).
//!
//! Env vars: see [`pixpress::config::vars`] (`MAX_CSV_BYTES`, `MAX_ROWS`, `MAX_URLS_PER_ROW`,
//! `MAX_URL_LENGTH`, `JPEG_QUALITY`, `MAX_OUTPUT_DIMENSION`, `PUBLIC_API_URL`).

pub mod problem;
pub mod status;
pub mod upload;
pub mod upload_url;

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, RequestExt, Response};
use pixpress::adapters::AnyKeyStore;
use pixpress::auth::authenticate;
use pixpress::config::Config;
use pixpress::domain::input_csv::CsvLimits;
use pixpress::domain::keys::is_valid_request_id;
use pixpress::domain::model::DEFAULT_TENANT;
use pixpress::domain::model::OutputSpec;
use pixpress::ports::{ObjectStore, RequestRepository, RowQueue, WebhookQueue};

use problem::Problem;

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
    pub egress: pixpress::fetch::NetworkPolicy,
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
pub struct App<R, Q, S> {
    /// API keys: `Some` requires `Authorization: Bearer <key>` on every route and scopes every
    /// request to the key's tenant (the deployed API always); `None` serves everyone as
    /// [`DEFAULT_TENANT`] (`pixpress serve --no-auth` on loopback, `pixpress run`, tests).
    pub keys: Option<AnyKeyStore>,
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

/// Handles one HTTP request. Never returns `Err` for a client or backend problem: those are
/// problem+json responses.
///
/// # Errors
/// Only if a response cannot be built at all.
pub async fn handle<R, Q, S>(
    app: &App<R, Q, S>,
    request: Request,
) -> Result<Response<Body>, lambda_http::Error>
where
    R: RequestRepository,
    Q: RowQueue + WebhookQueue,
    S: ObjectStore,
{
    let raw = request.raw_http_path();
    let path = if raw.is_empty() {
        request.uri().path().to_owned()
    } else {
        raw.to_owned()
    };
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let method = request.method().clone();
    let tenant = match &app.keys {
        None => DEFAULT_TENANT.to_owned(),
        Some(keys) => {
            let header = request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            match authenticate(keys, header).await {
                Ok(Ok(tenant)) => tenant,
                Ok(Err(_)) => return Ok(Problem::unauthorized().into_response()),
                Err(e) => {
                    return Ok(Problem::unavailable(&e, "the API key could not be checked")
                        .into_response());
                }
            }
        }
    };
    let response = match (segments.as_slice(), &method) {
        (["uploads"], &Method::POST) => upload::post_upload(app, &request, &tenant).await,
        (["upload-urls"], &Method::POST) => {
            upload_url::post_upload_url(app, &request, &tenant).await
        }
        (["requests", id], &Method::GET) if is_valid_request_id(id) => {
            status::get_request(app, &request, id, &tenant).await
        }
        (["requests", id, "output.csv"], &Method::GET) if is_valid_request_id(id) => {
            status::get_output_csv(app, id, &tenant).await
        }
        (["requests", id, "webhook", "redeliver"], &Method::POST) if is_valid_request_id(id) => {
            status::post_redeliver(app, id, &tenant).await
        }
        (["requests", _, "webhook", "redeliver"], &Method::POST) => {
            Problem::request_not_found().into_response()
        }
        (["requests", _] | ["requests", _, "output.csv"], &Method::GET) => {
            Problem::request_not_found().into_response()
        }
        (["uploads"] | ["upload-urls"] | ["requests", ..], _) => {
            let allow =
                if segments.first() == Some(&"requests") && segments.get(2) != Some(&"webhook") {
                    "GET"
                } else {
                    "POST"
                };
            let mut response = Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                format!("{method} is not allowed on {path}; use {allow}"),
            )
            .into_response();
            response
                .headers_mut()
                .insert("allow", lambda_http::http::HeaderValue::from_static(allow));
            response
        }
        _ => Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            format!("no route for {method} {path}"),
        )
        .into_response(),
    };
    Ok(response)
}

/// The public base URL of the API for links in responses: `PUBLIC_API_URL`, else the scheme and
/// host the request came to (`X-Forwarded-Proto`, `Host`), else empty (links are relative).
pub(crate) fn base_url(config: &ApiConfig, request: &Request) -> String {
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
pub(crate) fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    match serde_json::to_string(value) {
        Ok(body) => {
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = status;
            response.headers_mut().insert(
                "content-type",
                lambda_http::http::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(e) => Problem::internal(&e).into_response(),
    }
}
