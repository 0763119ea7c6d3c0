//! A client of a deployed pixpress API (or `pixpress serve`): `pixpress submit`, `status` and
//! `download`.
//!
//! - [`ApiClient::submit`] sends a CSV of up to [`DIRECT_UPLOAD_MAX_BYTES`] to `POST /uploads`
//!   (raw `text/csv`, options as query parameters, one `Idempotency-Key` across its retries);
//!   a larger file, or one the API answers 413 for, goes through `POST /upload-urls` and a
//!   streamed `multipart/form-data` POST of the signed form (S3 POST Object).
//! - [`ApiClient::wait`] polls `GET /requests/{id}?limit=0` (honouring `Retry-After`) until the
//!   request is terminal, reporting each change of the counters.
//! - [`ApiClient::status_document`] reads the whole status document, following every
//!   `next_cursor`; [`ApiClient::download`] writes the output CSV to a file.
//!
//! Exit codes of the commands ([`exit_code`]): 0 completed (or accepted, without `--wait`),
//! 3 completed with errors, 4 failed or cancelled, 2 rejected (the CSV or an option), 1 usage
//! or network error.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use futures::TryStreamExt as _;
use pixpress_domain::model::RequestStatus;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::AsyncWriteExt as _;

/// Largest CSV sent to `POST /uploads`, in bytes: the API's default `MAX_CSV_BYTES`
/// (4,603,904: a 6-MB Lambda payload after base64). Larger files take the presigned upload.
pub const DIRECT_UPLOAD_MAX_BYTES: u64 =
    pixpress_app::config::DEFAULT_MAX_DIRECT_UPLOAD_BYTES as u64;

/// Attempts of one call on a network error or a 429/502/503/504 answer.
const ATTEMPTS: u32 = 4;

/// Longest wait between two polls, in seconds, whatever `Retry-After` says.
const MAX_POLL_SECONDS: u64 = 10;

/// How long a presigned upload may stay unknown to the status API (404) while the bucket
/// trigger ingests it, in seconds: the s3-ingest function's 900 s timeout plus a minute.
const INGEST_GRACE_SECONDS: u64 = 960;

/// The status named `status` on the wire (`"COMPLETED_WITH_ERRORS"`), if it is one.
fn parse_status(status: &str) -> Option<RequestStatus> {
    serde_json::from_value(serde_json::Value::from(status)).ok()
}

/// Exit code of a request in `status` (`COMPLETED`, `COMPLETED_WITH_ERRORS`, `FAILED`,
/// `CANCELLED`, …): 0, 3, 4, 4; a request still running (or an unknown status) is 0.
#[must_use]
pub fn exit_code(status: &str) -> u8 {
    match parse_status(status) {
        Some(RequestStatus::CompletedWithErrors) => 3,
        Some(RequestStatus::Failed | RequestStatus::Cancelled) => 4,
        _ => 0,
    }
}

/// Whether a request status is final ([`RequestStatus::is_terminal`]).
#[must_use]
pub fn is_terminal(status: &str) -> bool {
    parse_status(status).is_some_and(RequestStatus::is_terminal)
}

/// Options of `POST /uploads` (and `POST /upload-urls`): the same query the local pipeline
/// sends through the API handler.
pub type SubmitOptions = pixpress_local::pipeline::UploadQuery;

/// How a CSV reached the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadPath {
    /// `POST /uploads`.
    Direct,
    /// `POST /upload-urls`, then the signed form `POST`ed to the bucket.
    Presigned,
}

/// A CSV the API took.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// The request id to poll.
    pub request_id: String,
    /// How it was sent.
    pub path: UploadPath,
    /// The 202 (direct) or 201 (presigned) body.
    pub body: Value,
}

/// What `submit` ended with.
#[derive(Debug, Clone)]
pub enum SubmitOutcome {
    /// Accepted: a request exists (or will, once the bucket trigger ingests the upload).
    Accepted(Submitted),
    /// The API refused the CSV or an option (4xx with problem details).
    Rejected {
        /// HTTP status.
        status: u16,
        /// The problem document (RFC 9457).
        problem: Value,
    },
}

/// The counters of a status document (`progress`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Progress {
    /// Rows in the request.
    #[serde(default)]
    pub rows_total: u64,
    /// Rows finished.
    #[serde(default)]
    pub rows_done: u64,
    /// Images in the request.
    #[serde(default)]
    pub images_total: u64,
    /// Images stored.
    #[serde(default)]
    pub images_ok: u64,
    /// Images that failed.
    #[serde(default)]
    pub images_failed: u64,
    /// Bytes downloaded.
    #[serde(default)]
    pub bytes_in: u64,
    /// Bytes stored.
    #[serde(default)]
    pub bytes_out: u64,
}

impl Progress {
    /// Reads `progress` of a status document.
    #[must_use]
    pub fn of(document: &Value) -> Self {
        serde_json::from_value(document["progress"].clone()).unwrap_or_default()
    }

    /// Images finished, stored or failed.
    #[must_use]
    pub fn images_done(&self) -> u64 {
        self.images_ok + self.images_failed
    }

    /// Bytes saved so far (downloaded minus stored), in bytes.
    #[must_use]
    pub fn bytes_saved(&self) -> u64 {
        self.bytes_in.saturating_sub(self.bytes_out)
    }
}

/// A failed call: the API's problem document when there is one.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API answered with an error status.
    #[error("{}", problem_text(*status, problem))]
    Api {
        /// HTTP status.
        status: u16,
        /// The problem document, or `{"detail": <body>}` when the body is not JSON.
        problem: Value,
    },
    /// No answer (connection, timeout) or an unreadable one.
    #[error(transparent)]
    Transport(#[from] anyhow::Error),
}

fn problem_text(status: u16, problem: &Value) -> String {
    let title = problem["title"].as_str().unwrap_or("error");
    let detail = problem["detail"].as_str().unwrap_or_default();
    match status {
        401 => format!(
            "the API refused the key (401): set --api-key or PIXPRESS_API_KEY to a key from `pixpress keys create`{}",
            if detail.is_empty() {
                String::new()
            } else {
                format!(" ({detail})")
            }
        ),
        _ if detail.is_empty() => format!("HTTP {status}: {title}"),
        _ => format!("HTTP {status}: {title}: {detail}"),
    }
}

/// A client of one API.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: url::Url,
    api_key: Option<String>,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client of the API at `base` (e.g. `https://abc.execute-api.eu-west-1.amazonaws.com`
    /// or `http://127.0.0.1:3000`), sending `Authorization: Bearer <api_key>` when given.
    ///
    /// # Errors
    /// When `base` is not an http(s) URL.
    pub fn new(base: &str, api_key: Option<String>) -> anyhow::Result<Self> {
        let mut base = url::Url::parse(base).with_context(|| {
            format!("the API URL `{base}` is not a URL (e.g. http://127.0.0.1:3000)")
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            anyhow::bail!("the API URL must be http:// or https://, not `{base}`");
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        pixpress_fetch::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("pixpress/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            base,
            api_key: api_key.filter(|k| !k.is_empty()),
            http,
        })
    }

    fn url(&self, path: &str) -> anyhow::Result<url::Url> {
        self.base
            .join(path.trim_start_matches('/'))
            .with_context(|| format!("joining {path} to {}", self.base))
    }

    fn url_with(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<url::Url> {
        let mut url = self.url(path)?;
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        Ok(url)
    }

    fn authorized(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    /// Sends what `make` builds, again after a network error or a 429/502/503/504 answer
    /// (after `Retry-After`, else 1, 2, 4 s), at most [`ATTEMPTS`] times.
    async fn send(
        &self,
        make: impl Fn() -> anyhow::Result<reqwest::RequestBuilder>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.authorized(make()?).send().await;
            let retry_after = match &result {
                Ok(response)
                    if matches!(
                        response.status(),
                        StatusCode::TOO_MANY_REQUESTS
                            | StatusCode::BAD_GATEWAY
                            | StatusCode::SERVICE_UNAVAILABLE
                            | StatusCode::GATEWAY_TIMEOUT
                    ) =>
                {
                    Some(retry_after(response).unwrap_or(Duration::from_secs(1 << (attempt - 1))))
                }
                Err(e) if e.is_connect() || e.is_timeout() || e.is_request() => {
                    Some(Duration::from_secs(1 << (attempt - 1)))
                }
                _ => None,
            };
            match (retry_after, result) {
                (Some(wait), _) if attempt < ATTEMPTS => tokio::time::sleep(wait).await,
                (_, Ok(response)) => return Ok(response),
                (_, Err(e)) => {
                    return Err(ClientError::Transport(
                        anyhow::Error::new(e).context(format!("reaching the API at {}", self.base)),
                    ));
                }
            }
        }
    }

    /// Sends a CSV file: directly when it is at most [`DIRECT_UPLOAD_MAX_BYTES`] (and the API
    /// neither answers 413 nor finds more rows than it takes), else through a presigned upload.
    ///
    /// # Errors
    /// When the file cannot be read, the API cannot be reached, or it answers with an error
    /// other than a rejection of the CSV or an option.
    pub async fn submit(
        &self,
        csv: &Path,
        options: &SubmitOptions,
    ) -> Result<SubmitOutcome, ClientError> {
        let size = tokio::fs::metadata(csv)
            .await
            .with_context(|| format!("reading {}", csv.display()))?
            .len();
        if size <= DIRECT_UPLOAD_MAX_BYTES {
            let body = tokio::fs::read(csv)
                .await
                .with_context(|| format!("reading {}", csv.display()))?;
            match self.post_upload(body, options).await? {
                SubmitOutcome::Rejected { status: 413, .. } => {}
                // More rows than the API takes in one call: the presigned upload takes them.
                SubmitOutcome::Rejected { problem, .. }
                    if crate::run::has_too_many_rows(&problem) => {}
                outcome => return Ok(outcome),
            }
        }
        self.presigned_upload(csv, size, options).await
    }

    async fn post_upload(
        &self,
        body: Vec<u8>,
        options: &SubmitOptions,
    ) -> Result<SubmitOutcome, ClientError> {
        // One key across retries: a retry after a lost answer finds the same request.
        let idempotency_key = uuid::Uuid::new_v4().to_string();
        let url = self.url_with("uploads", &options.query_pairs())?;
        let response = self
            .send(|| {
                Ok(self
                    .http
                    .post(url.clone())
                    .header("content-type", "text/csv")
                    .header("idempotency-key", &idempotency_key)
                    .body(body.clone()))
            })
            .await?;
        let status = response.status();
        let document = json_body(response).await?;
        if status.is_success() {
            return Ok(SubmitOutcome::Accepted(Submitted {
                request_id: request_id(&document)?,
                path: UploadPath::Direct,
                body: document,
            }));
        }
        rejection(status, document)
    }

    async fn presigned_upload(
        &self,
        csv: &Path,
        size: u64,
        options: &SubmitOptions,
    ) -> Result<SubmitOutcome, ClientError> {
        let url = self.url_with("upload-urls", &options.query_pairs())?;
        let response = self.send(|| Ok(self.http.post(url.clone()))).await?;
        let status = response.status();
        let document = json_body(response).await?;
        if status == StatusCode::NOT_IMPLEMENTED {
            return Err(ClientError::Api {
                status: status.as_u16(),
                problem: serde_json::json!({
                    "title": "No presigned uploads",
                    "detail": format!(
                        "{} is {size} bytes, over what `POST /uploads` takes, and this API cannot sign upload URLs ({})",
                        csv.display(),
                        document["detail"].as_str().unwrap_or_default()
                    ),
                }),
            });
        }
        if !status.is_success() {
            return rejection(status, document);
        }
        let max_bytes = document["max_bytes"].as_u64().unwrap_or(u64::MAX);
        if size > max_bytes {
            return Ok(SubmitOutcome::Rejected {
                status: StatusCode::PAYLOAD_TOO_LARGE.as_u16(),
                problem: serde_json::json!({
                    "title": "CSV too large",
                    "detail": format!(
                        "{} is {size} bytes; the API takes at most {max_bytes} bytes",
                        csv.display()
                    ),
                }),
            });
        }
        let upload_url = document["upload_url"]
            .as_str()
            .context("the upload-urls answer has no upload_url")?
            .to_owned();
        if document["method"] != "POST" {
            return Err(ClientError::Transport(anyhow::anyhow!(
                "the upload-urls answer names method {}, not POST",
                document["method"]
            )));
        }
        // Every signed field exactly as given, then the CSV in the last field, `file`.
        let mut form = reqwest::multipart::Form::new();
        for (name, value) in document["fields"].as_object().into_iter().flatten() {
            if let Some(value) = value.as_str() {
                form = form.text(name.clone(), value.to_owned());
            }
        }
        let file = tokio::fs::File::open(csv)
            .await
            .with_context(|| format!("reading {}", csv.display()))?;
        // Streamed: memory stays at one read buffer whatever the file's size.
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
        let file_name = csv.file_name().map_or_else(
            || "upload.csv".to_owned(),
            |n| n.to_string_lossy().into_owned(),
        );
        let part =
            reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(stream), size)
                .file_name(file_name)
                .mime_str("text/csv")
                .context("the CSV's media type")?;
        let response = self
            .http
            .post(&upload_url)
            .multipart(form.part("file", part))
            .send()
            .await
            .context("uploading the CSV to the presigned URL")?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(ClientError::Api {
                status: status.as_u16(),
                problem: serde_json::json!({
                    "title": "Upload refused",
                    "detail": format!("the presigned upload answered: {}", text.trim()),
                }),
            });
        }
        Ok(SubmitOutcome::Accepted(Submitted {
            request_id: request_id(&document)?,
            path: UploadPath::Presigned,
            body: document,
        }))
    }

    /// One page of a request's status document (`limit` products from `cursor`; 0: none).
    ///
    /// # Errors
    /// [`ClientError::Api`] with 404 when the request does not exist (for this key).
    pub async fn status_page(
        &self,
        request_id: &str,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<(Value, Option<Duration>), ClientError> {
        check_request_id(request_id)?;
        let mut query = Vec::new();
        if let Some(cursor) = cursor {
            query.push(("cursor", cursor.to_owned()));
        }
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        let url = self.url_with(&format!("requests/{request_id}"), &query)?;
        let response = self.send(|| Ok(self.http.get(url.clone()))).await?;
        let status = response.status();
        let wait = retry_after(&response);
        let document = json_body(response).await?;
        if status.is_success() {
            Ok((document, wait))
        } else {
            Err(ClientError::Api {
                status: status.as_u16(),
                problem: document,
            })
        }
    }

    /// The whole status document: every page of products, in input order, in one
    /// `products` array (no `next_cursor`).
    ///
    /// # Errors
    /// As [`ApiClient::status_page`].
    pub async fn status_document(&self, request_id: &str) -> Result<Value, ClientError> {
        let (mut document, _) = self.status_page(request_id, None, None).await?;
        let mut cursor = document["next_cursor"].as_str().map(str::to_owned);
        while let Some(next) = cursor {
            let (page, _) = self.status_page(request_id, Some(&next), None).await?;
            if let (Some(all), Some(more)) = (
                document["products"].as_array_mut(),
                page["products"].as_array(),
            ) {
                all.extend(more.iter().cloned());
            }
            cursor = page["next_cursor"].as_str().map(str::to_owned);
        }
        if let Some(object) = document.as_object_mut() {
            object.remove("next_cursor");
        }
        Ok(document)
    }

    /// Polls the request until it is terminal, calling `on_change` with each new summary
    /// (status document without products). A request made by a presigned upload may answer
    /// 404 until the bucket trigger has ingested it: that is waited out for up to 16 minutes.
    ///
    /// # Errors
    /// As [`ApiClient::status_page`].
    pub async fn wait(
        &self,
        request_id: &str,
        mut on_change: impl FnMut(&Value),
    ) -> Result<Value, ClientError> {
        let started = tokio::time::Instant::now();
        let mut last: Option<Value> = None;
        loop {
            let wait = match self.status_page(request_id, None, Some(0)).await {
                Ok((document, wait)) => {
                    if last.as_ref() != Some(&document) {
                        on_change(&document);
                    }
                    if document["status"].as_str().is_some_and(is_terminal) {
                        return Ok(document);
                    }
                    last = Some(document);
                    wait
                }
                Err(ClientError::Api { status: 404, .. })
                    if last.is_none()
                        && started.elapsed() < Duration::from_secs(INGEST_GRACE_SECONDS) =>
                {
                    None
                }
                Err(e) => return Err(e),
            };
            let wait = wait.unwrap_or(Duration::from_secs(2)).clamp(
                Duration::from_millis(200),
                Duration::from_secs(MAX_POLL_SECONDS),
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// Asks to cancel a running request; returns the 202 body (`status`,
    /// `cancel_requested_at`).
    ///
    /// # Errors
    /// [`ClientError::Api`] with 409 once the request has finished, 404 for an unknown one.
    pub async fn cancel(&self, request_id: &str) -> Result<Value, ClientError> {
        self.control(request_id, "cancel").await
    }

    /// `POST /requests/{id}/<action>` (a request control); the 2xx body, or the problem.
    async fn control(&self, request_id: &str, action: &str) -> Result<Value, ClientError> {
        check_request_id(request_id)?;
        let url = self.url(&format!("requests/{request_id}/{action}"))?;
        let response = self.send(|| Ok(self.http.post(url.clone()))).await?;
        let status = response.status();
        let document = json_body(response).await?;
        if status.is_success() {
            Ok(document)
        } else {
            Err(ClientError::Api {
                status: status.as_u16(),
                problem: document,
            })
        }
    }

    /// Starts a retry of a finished request's failed images; returns the 202 body
    /// (`request_id` of the retry, `retry_of`, `images_to_retry`, …).
    ///
    /// # Errors
    /// [`ClientError::Api`] with 409 while the request runs or when nothing failed, 404 for an
    /// unknown one, 413 above the API's row limit.
    pub async fn retry(&self, request_id: &str) -> Result<Value, ClientError> {
        self.control(request_id, "retry").await
    }

    /// Writes the output CSV of a request to `path` (through a temporary file beside it, so a
    /// failed download leaves no partial CSV). Follows the API's 303 to the presigned link.
    ///
    /// # Errors
    /// [`ClientError::Api`] with 409 before the CSV is written, 404 for an unknown request.
    pub async fn download(&self, request_id: &str, path: &Path) -> Result<u64, ClientError> {
        check_request_id(request_id)?;
        let url = self.url(&format!("requests/{request_id}/output.csv"))?;
        let response = self.send(|| Ok(self.http.get(url.clone()))).await?;
        let status = response.status();
        if !status.is_success() {
            let document = json_body(response).await?;
            return Err(ClientError::Api {
                status: status.as_u16(),
                problem: document,
            });
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir)
                .await
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        let partial = partial_path(path);
        let mut file = tokio::fs::File::create(&partial)
            .await
            .with_context(|| format!("writing {}", partial.display()))?;
        let mut written = 0;
        let mut body = response.bytes_stream();
        while let Some(piece) = body
            .try_next()
            .await
            .context("downloading the output CSV")?
        {
            file.write_all(&piece)
                .await
                .with_context(|| format!("writing {}", partial.display()))?;
            written += piece.len() as u64;
        }
        file.flush()
            .await
            .with_context(|| format!("writing {}", partial.display()))?;
        drop(file);
        tokio::fs::rename(&partial, path)
            .await
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(written)
    }
}

fn check_request_id(request_id: &str) -> Result<(), ClientError> {
    if pixpress_domain::storage_keys::is_valid_request_id(request_id) {
        Ok(())
    } else {
        Err(ClientError::Transport(anyhow::anyhow!(
            "`{request_id}` is not a request id (the UUID `submit` printed)"
        )))
    }
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

async fn json_body(response: reqwest::Response) -> Result<Value, ClientError> {
    let bytes = response.bytes().await.context("reading the API's answer")?;
    Ok(serde_json::from_slice(&bytes).unwrap_or_else(
        |_| serde_json::json!({ "detail": String::from_utf8_lossy(&bytes).trim() }),
    ))
}

fn request_id(document: &Value) -> Result<String, ClientError> {
    Ok(document["request_id"]
        .as_str()
        .context("the API's answer has no request_id")?
        .to_owned())
}

/// A 4xx answer to an upload is a rejection (exit 2); anything else is an error.
fn rejection(status: StatusCode, problem: Value) -> Result<SubmitOutcome, ClientError> {
    if status.is_client_error()
        && !matches!(
            status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND
        )
    {
        Ok(SubmitOutcome::Rejected {
            status: status.as_u16(),
            problem,
        })
    } else {
        Err(ClientError::Api {
            status: status.as_u16(),
            problem,
        })
    }
}

/// One line of progress: `PROCESSING: rows 10/50, images 20/100 (1 failed), 1.2 MB saved`.
#[must_use]
pub fn progress_line(document: &Value) -> String {
    let p = Progress::of(document);
    format!(
        "{}: rows {}/{}, images {}/{} ({} failed), {} saved",
        document["status"].as_str().unwrap_or("?"),
        p.rows_done,
        p.rows_total,
        p.images_done(),
        p.images_total,
        p.images_failed,
        human_bytes(p.bytes_saved()),
    )
}

/// The `  bytes: … in → … out (…% of input)` line of a status or run summary, or nothing
/// before a byte was downloaded.
#[must_use]
pub fn bytes_line(bytes_in: u64, bytes_out: u64) -> String {
    if bytes_in == 0 {
        return String::new();
    }
    format!(
        "  bytes: {} in → {} out ({:.1}% of input)\n",
        human_bytes(bytes_in),
        human_bytes(bytes_out),
        bytes_out as f64 * 100.0 / bytes_in as f64
    )
}

/// `1.23 MB` (decimal units).
#[must_use]
pub fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.2} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}

/// The text summary of a status document: status, counters, failed images with their row.
#[must_use]
pub fn status_text(document: &Value) -> String {
    let p = Progress::of(document);
    let mut text = format!(
        "request {}: {}\n  rows: {} of {}\n  images: {} ok, {} failed of {}\n",
        document["request_id"].as_str().unwrap_or("?"),
        document["status"].as_str().unwrap_or("?"),
        p.rows_done,
        p.rows_total,
        p.images_ok,
        p.images_failed,
        p.images_total,
    );
    text.push_str(&bytes_line(p.bytes_in, p.bytes_out));
    if let Some(failure) = document["failure"].as_object() {
        text.push_str(&format!(
            "  failure: [{}] {}\n",
            failure
                .get("code")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            failure
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
        ));
    }
    for product in document["products"].as_array().into_iter().flatten() {
        for image in product["images"].as_array().into_iter().flatten() {
            if image["status"] == "FAILED" {
                text.push_str(&format!(
                    "  row {}: {} — [{}] {}\n",
                    product["row"],
                    image["input_url"].as_str().unwrap_or_default(),
                    image["error_code"].as_str().unwrap_or_default(),
                    image["error"].as_str().unwrap_or_default(),
                ));
            }
        }
    }
    if let Some(url) = document["output_csv_url"].as_str() {
        text.push_str(&format!("  output CSV: {url}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_documented_table() {
        assert_eq!(exit_code("COMPLETED"), 0);
        assert_eq!(exit_code("COMPLETED_WITH_ERRORS"), 3);
        assert_eq!(exit_code("FAILED"), 4);
        assert_eq!(exit_code("CANCELLED"), 4);
        assert!(is_terminal("CANCELLED") && !is_terminal("PROCESSING"));
        assert_eq!(exit_code("PROCESSING"), 0);
    }

    #[test]
    fn an_api_url_without_a_trailing_slash_keeps_its_stage_path() {
        let client = ApiClient::new("https://api.example.com/prod", None).unwrap();
        assert_eq!(
            client.url("requests/x").unwrap().as_str(),
            "https://api.example.com/prod/requests/x"
        );
        assert!(ApiClient::new("ftp://example.com", None).is_err());
    }
}
