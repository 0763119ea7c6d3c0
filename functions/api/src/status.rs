//! `GET /requests/{id}`, `GET /requests/{id}/output.csv` and the request controls (webhook
//! redelivery, cancel, retry).

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode};
use chrono::{DateTime, Utc};

use crate::ApiRepository;
use crate::{ApiRequest as Request, ApiResponse};
use pixpress_app::ingest::{RETRY_MAX_ROWS, retry_failed_images, retry_request_id};
use pixpress_app::ports::{ObjectStore, PortError, RowQueue};
use pixpress_domain::model::{
    Counters, Failure, ImageStatus, OutputSpec, RequestMeta, RowRecord, RowState, Source, Webhook,
};
use pixpress_domain::storage_keys::output_csv_key;
use serde::Serialize;

use crate::problem::Problem;
use crate::{App, base_url, json_response};

/// Rows per page by default and at most.
const DEFAULT_PAGE_ROWS: u32 = 100;
const MAX_PAGE_ROWS: u32 = 1000;
/// `Retry-After` on the status of a running request, in seconds.
const POLL_RETRY_AFTER_SECONDS: &str = "2";

/// Largest output CSV served inline (by stores that cannot presign), in bytes.
const MAX_OUTPUT_CSV_BYTES: u64 = 64 * 1024 * 1024;

/// The status document of a request.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StatusDocument {
    /// Request id.
    pub request_id: String,
    /// `PENDING`, `PROCESSING`, `COMPLETED`, `COMPLETED_WITH_ERRORS` or `FAILED`.
    #[schema(value_type = pixpress_domain::model::RequestStatus)]
    pub status: &'static str,
    /// `api` or `s3`.
    pub source: Source,
    /// Progress counters.
    pub progress: Progress,
    /// Encoding of the images.
    pub output_spec: OutputSpec,
    /// When the request was recorded.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When it reached a terminal status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    /// Link to the output CSV, once written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_csv_url: Option<String>,
    /// Webhook target and delivery attempts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Webhook>,
    /// Why the request failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// When cancelling it was asked (`POST /requests/{id}/cancel`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// The request this one retries (`POST /requests/{id}/retry` on that one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<String>,
    /// The request that retries this one, once `POST /requests/{id}/retry` made it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retried_by: Option<String>,
    /// Products of this page, in input order.
    pub products: Vec<Product>,
    /// Cursor for the next page of products (`?cursor=`), absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Counters plus a percentage of finished rows.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Progress {
    /// The counters.
    #[serde(flatten)]
    pub counters: Counters,
    /// Finished rows in percent, 0–100.
    pub percent: u8,
}

/// One product (CSV row).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Product {
    /// 1-based data row number.
    pub row: u32,
    /// `S. No.`.
    pub serial: String,
    /// `Product Name`.
    pub product_name: String,
    /// `PENDING` or `DONE`.
    pub state: RowState,
    /// One entry per input URL, in order.
    pub images: Vec<ProductImage>,
}

/// One image of a product.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProductImage {
    /// The input URL.
    pub input_url: String,
    /// `OK`, `FAILED`, or `PENDING` while the row is in progress.
    #[schema(pattern = "^(OK|FAILED|PENDING)$")]
    pub status: &'static str,
    /// Public URL of the compressed image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_url: Option<String>,
    /// Stable error code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Error detail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Downloaded bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<u64>,
    /// Stored bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_out: Option<u64>,
    /// Output width in pixels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Output height in pixels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// The stored image is the input minus its metadata (re-encoding would not be smaller).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub kept_original: bool,
    /// Encoder quality the image was encoded at, 1–100 on the format's scale (under
    /// `auto:<score>`, the one the search found).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<u8>,
    /// SSIMULACRA2 score of the stored image against its decoded source (100 identical, 90
    /// visually lossless, 70 high, 50 medium, 30 low); absent for images over 4 MP or when the request turned scoring off.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    pub score: Option<pixpress_domain::model::Score>,
}

fn product(row: RowRecord) -> Product {
    let done = row.state == RowState::Done;
    let images = row
        .input_urls
        .iter()
        .enumerate()
        .map(|(i, url)| {
            let outcome = done.then(|| row.images.get(i)).flatten();
            ProductImage {
                input_url: url.clone(),
                status: match outcome.map(|o| o.status) {
                    Some(ImageStatus::Ok) => "OK",
                    Some(ImageStatus::Failed) => "FAILED",
                    None => "PENDING",
                },
                output_url: outcome.and_then(|o| o.output_url.clone()),
                error_code: outcome.and_then(|o| o.error_code.clone()),
                error: outcome.and_then(|o| o.error.clone()),
                bytes_in: outcome.and_then(|o| o.bytes_in),
                bytes_out: outcome.and_then(|o| o.bytes_out),
                width: outcome.and_then(|o| o.width),
                height: outcome.and_then(|o| o.height),
                kept_original: outcome.is_some_and(|o| o.kept_original),
                quality: outcome.and_then(|o| o.quality),
                score: outcome.and_then(|o| o.score),
            }
        })
        .collect();
    Product {
        row: row.index + 1,
        serial: row.serial,
        product_name: row.product_name,
        state: row.state,
        images,
    }
}

/// The request if it exists and belongs to the caller's tenant; otherwise the 404 problem, the
/// same for another tenant's request as for a missing one (500 when it cannot be read).
async fn visible_request<R: ApiRepository>(
    repo: &R,
    request_id: &str,
    tenant: &str,
) -> Result<RequestMeta, Problem> {
    match repo.get_request(request_id).await {
        Ok(Some(meta)) if meta.tenant == tenant => Ok(meta),
        Ok(_) => Err(Problem::request_not_found()),
        Err(e) => Err(Problem::internal(&e)),
    }
}

/// Builds the status document of `meta` with one page of products; `limit` 0 reads no rows
/// (the summary alone: one item read however large the request).
///
/// # Errors
/// [`PortError`] from the repository.
pub async fn status_document<R: ApiRepository>(
    repo: &R,
    meta: RequestMeta,
    base_url: &str,
    cursor: Option<u32>,
    limit: u32,
) -> Result<StatusDocument, PortError> {
    let page = if limit == 0 {
        pixpress_app::ports::RowPage {
            rows: Vec::new(),
            next: None,
        }
    } else {
        repo.list_rows(&meta.request_id, cursor, limit).await?
    };
    let retried_by = if meta.status.is_terminal() {
        let id = retry_request_id(&meta.request_id);
        repo.get_request(&id).await?.map(|retry| retry.request_id)
    } else {
        None
    };
    let counters = meta.counters;
    let percent = (counters.rows_done * 100)
        .checked_div(counters.rows_total)
        .map_or(100, |p| u8::try_from(p).unwrap_or(100));
    Ok(StatusDocument {
        output_csv_url: meta
            .output_csv_key
            .as_ref()
            .map(|_| format!("{base_url}/requests/{}/output.csv", meta.request_id)),
        request_id: meta.request_id,
        status: meta.status.as_str(),
        source: meta.source,
        progress: Progress { counters, percent },
        output_spec: meta.output_spec,
        created_at: meta.created_at,
        updated_at: meta.updated_at,
        completed_at: meta.completed_at,
        webhook: meta.webhook,
        failure: meta.failure,
        cancel_requested_at: meta.cancel_requested_at,
        retry_of: meta.retry_of,
        retried_by,
        products: page.rows.into_iter().map(product).collect(),
        next_cursor: page.next.map(|n| n.to_string()),
    })
}

/// Handles `GET /requests/{id}`.
pub async fn get_request<R, Q, S, K>(
    app: &App<R, Q, S, K>,
    request: &Request,
    request_id: &str,
    tenant: &str,
) -> ApiResponse
where
    R: ApiRepository,
    S: ObjectStore,
{
    let mut cursor = None;
    let mut limit = DEFAULT_PAGE_ROWS;
    if let Some(query) = request.uri().query() {
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match name.as_ref() {
                "cursor" => match value.parse::<u32>() {
                    Ok(c) => cursor = Some(c),
                    Err(_) => {
                        return invalid_parameter(format!(
                            "cursor `{value}` is not one this API returned"
                        ));
                    }
                },
                "limit" => match value.parse::<u32>() {
                    Ok(l) if l <= MAX_PAGE_ROWS => limit = l,
                    _ => {
                        return invalid_parameter(format!(
                            "limit must be 0–{MAX_PAGE_ROWS} (0: the summary without products), got `{value}`"
                        ));
                    }
                },
                _ => {}
            }
        }
    }
    let meta = match visible_request(&app.repo, request_id, tenant).await {
        Ok(meta) => meta,
        Err(problem) => return problem.into_response(),
    };
    let base = base_url(&app.config, request);
    let running = !meta.status.is_terminal();
    match status_document(&app.repo, meta, &base, cursor, limit).await {
        Ok(doc) => {
            let mut response = json_response(StatusCode::OK, &doc);
            if running {
                // RFC 9110 §10.2.3: when polling again is worth it.
                response.headers_mut().insert(
                    "retry-after",
                    HeaderValue::from_static(POLL_RETRY_AFTER_SECONDS),
                );
            }
            response
        }
        Err(e) => Problem::internal(&e).into_response(),
    }
}

fn invalid_parameter(detail: String) -> ApiResponse {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-parameter",
        "Invalid parameter",
        detail,
    )
    .into_response()
}

/// How long the presigned link `GET /requests/{id}/output.csv` redirects to stays valid, in
/// seconds.
pub const OUTPUT_CSV_LINK_TTL_SECONDS: u64 = 15 * 60;

/// Handles `GET /requests/{id}/output.csv`: once written, a `303 See Other` to a presigned
/// link of the stored CSV (valid [`OUTPUT_CSV_LINK_TTL_SECONDS`]; a Lambda response is capped
/// at 6 MB, an output CSV is not), or the CSV itself from a store that cannot presign; `409`
/// before it is written.
pub async fn get_output_csv<R, Q, S, K>(
    app: &App<R, Q, S, K>,
    request_id: &str,
    tenant: &str,
) -> ApiResponse
where
    R: ApiRepository,
    S: ObjectStore,
{
    let meta = match visible_request(&app.repo, request_id, tenant).await {
        Ok(meta) => meta,
        Err(problem) => return problem.into_response(),
    };
    let key = meta
        .output_csv_key
        .clone()
        .unwrap_or_else(|| output_csv_key(tenant, request_id));
    if meta.output_csv_key.is_none() {
        return Problem::new(
            StatusCode::CONFLICT,
            "output-not-ready",
            "Output not ready",
            format!(
                "the request is {}; the output CSV is written when it completes",
                meta.status.as_str()
            ),
        )
        .into_response();
    }
    let ttl = std::time::Duration::from_secs(OUTPUT_CSV_LINK_TTL_SECONDS);
    match app.store.presigned_get(&key, ttl).await {
        Ok(Some(url)) => {
            let mut response = ApiResponse::new(Body::empty());
            *response.status_mut() = StatusCode::SEE_OTHER;
            if let Ok(value) = url.parse() {
                response.headers_mut().insert("location", value);
            }
            return response;
        }
        Ok(None) => {}
        Err(e) => {
            return Problem::unavailable(&e, "the output CSV link could not be signed")
                .into_response();
        }
    }
    match app.store.get(&key, MAX_OUTPUT_CSV_BYTES).await {
        Ok(Some(object)) => {
            let mut response = ApiResponse::new(Body::from(object.bytes.to_vec()));
            let headers = response.headers_mut();
            headers.insert(
                "content-type",
                HeaderValue::from_static("text/csv; charset=utf-8"),
            );
            if let Ok(value) = format!("attachment; filename=\"{request_id}.csv\"").parse() {
                headers.insert("content-disposition", value);
            }
            response
        }
        Ok(None) => Problem::new(
            StatusCode::CONFLICT,
            "output-not-ready",
            "Output not ready",
            "the output CSV is not stored yet",
        )
        .into_response(),
        Err(e) => Problem::internal(&e).into_response(),
    }
}

/// The 202 body of a queued redelivery.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Redelivery {
    /// The request id.
    pub request_id: String,
    /// The webhook's delivery state: `PENDING` until the sender's next attempt.
    pub webhook: pixpress_domain::model::DeliveryState,
}

/// Handles `POST /requests/{id}/webhook/redeliver`: sends a finished request's completion event
/// again (a new series of attempts on the sender's schedule, every earlier attempt kept).
/// `202` when queued; `404` as for status; `409` when the request has not finished or has no
/// webhook; `501` where there is no webhooks queue (local runs).
pub async fn post_redeliver<R, Q, S, K>(
    app: &App<R, Q, S, K>,
    request_id: &str,
    tenant: &str,
) -> ApiResponse
where
    R: ApiRepository,
    Q: pixpress_app::ports::WebhookQueue,
{
    let meta = match visible_request(&app.repo, request_id, tenant).await {
        Ok(meta) => meta,
        Err(problem) => return problem.into_response(),
    };
    let conflict = |detail: String| {
        Problem::new(
            StatusCode::CONFLICT,
            "cannot-redeliver",
            "Cannot redeliver",
            detail,
        )
        .into_response()
    };
    if meta.webhook.is_none() {
        return conflict("the request was submitted without a webhook_url".to_owned());
    }
    if !meta.status.is_terminal() {
        return conflict(format!(
            "the request is {}; its webhook fires when it completes",
            meta.status.as_str()
        ));
    }
    // One series at a time: a second would share the first's attempt count and end it early.
    if meta
        .webhook
        .as_ref()
        .is_some_and(|w| w.state == pixpress_domain::model::DeliveryState::Pending)
    {
        return conflict(
            "the webhook is still being delivered; ask again once it is delivered or has failed"
                .to_owned(),
        );
    }
    let Some(queue) = &app.webhooks else {
        return Problem::new(
            StatusCode::NOT_IMPLEMENTED,
            "redelivery-unavailable",
            "Redelivery unavailable",
            "this deployment has no webhooks queue; completion events are delivered once by the notifier",
        )
        .into_response();
    };
    let job = pixpress_domain::model::WebhookJob {
        request_id: meta.request_id.clone(),
        tenant: meta.tenant.clone(),
        // The new series counts its own attempts from here.
        attempts_before: meta
            .webhook
            .as_ref()
            .map_or(0, |w| u32::try_from(w.attempts.len()).unwrap_or(u32::MAX)),
    };
    match app.repo.redeliver_webhook(request_id).await {
        Ok(true) => {}
        // Another redelivery took it meanwhile.
        Ok(false) => {
            return conflict(
                "the webhook is still being delivered; ask again once it is delivered or has failed"
                    .to_owned(),
            );
        }
        Err(e) => {
            return Problem::unavailable(&e, "the redelivery could not be recorded")
                .into_response();
        }
    }
    match queue.send_webhook(&job).await {
        Ok(()) => json_response(
            StatusCode::ACCEPTED,
            &Redelivery {
                request_id: meta.request_id,
                webhook: pixpress_domain::model::DeliveryState::Pending,
            },
        ),
        Err(e) => Problem::unavailable(&e, "the redelivery could not be queued").into_response(),
    }
}

/// The 202 body of a cancellation.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Cancellation {
    /// The request id.
    pub request_id: String,
    /// Its status now (`PENDING` or `PROCESSING`): it becomes `CANCELLED` once the rows in
    /// flight are recorded.
    #[schema(value_type = pixpress_domain::model::RequestStatus)]
    pub status: &'static str,
    /// When cancelling was first asked.
    pub cancel_requested_at: DateTime<Utc>,
}

/// Handles `POST /requests/{id}/cancel`: rows not processed yet are recorded as `cancelled`
/// (nothing more is downloaded for them), rows being processed finish, and the request ends
/// `CANCELLED` with its output CSV and webhook. `202`; `404` as for status; `409` once it has
/// finished. Asking again answers `202` with the first time.
pub async fn post_cancel<R, Q, S, K>(
    app: &App<R, Q, S, K>,
    request_id: &str,
    tenant: &str,
) -> ApiResponse
where
    R: ApiRepository,
{
    let finished = |status: &str| {
        Problem::new(
            StatusCode::CONFLICT,
            "cannot-cancel",
            "Cannot cancel",
            format!("the request is {status}; only a running request can be cancelled"),
        )
        .into_response()
    };
    let meta = match visible_request(&app.repo, request_id, tenant).await {
        Ok(meta) => meta,
        Err(problem) => return problem.into_response(),
    };
    if meta.status.is_terminal() {
        return finished(meta.status.as_str());
    }
    match app.repo.request_cancel(request_id, Utc::now()).await {
        Ok(true) => {}
        Ok(false) => {
            // It finished meanwhile.
            let status = match app.repo.get_request(request_id).await {
                Ok(Some(now)) => now.status.as_str(),
                _ => meta.status.as_str(),
            };
            return finished(status);
        }
        Err(e) => {
            return Problem::unavailable(&e, "the cancellation could not be recorded")
                .into_response();
        }
    }
    match app.repo.get_request(request_id).await {
        Ok(Some(meta)) => {
            metrics::counter!("requests_cancelled").increment(1);
            tracing::info!("cancellation requested");
            json_response(
                StatusCode::ACCEPTED,
                &Cancellation {
                    request_id: meta.request_id.clone(),
                    status: meta.status.as_str(),
                    cancel_requested_at: meta.cancel_requested_at.unwrap_or_else(Utc::now),
                },
            )
        }
        Ok(None) => Problem::request_not_found().into_response(),
        Err(e) => Problem::internal(&e).into_response(),
    }
}

/// The 202 body of a retry.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RetryAccepted {
    /// The retry's request id (a request of its own).
    pub request_id: String,
    /// The request it retries.
    pub retry_of: String,
    /// Its status now.
    #[schema(value_type = pixpress_domain::model::RequestStatus)]
    pub status: &'static str,
    /// Where to poll its status.
    pub status_url: String,
    /// Rows of the retry (all rows of the original).
    pub rows: u64,
    /// Image URLs of the retry (all of the original's).
    pub images: u64,
    /// Images downloaded again: those that failed, were cancelled or never ran (the others are
    /// kept as stored). Absent when the retry existed already.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images_to_retry: Option<u64>,
}

/// Handles `POST /requests/{id}/retry`: a new request re-runs the failed (and cancelled)
/// images of a finished request, keeping the ones it stored, with its own output CSV and
/// webhook; the original stays as it was. `202` with `Location`; asking again answers the same
/// retry (`Idempotent-Replayed: true`); `404` as for status; `409` while running or when
/// nothing failed; `413` above the upload row limit.
pub async fn post_retry<R, Q, S, K>(
    app: &App<R, Q, S, K>,
    request: &Request,
    request_id: &str,
    tenant: &str,
) -> ApiResponse
where
    R: ApiRepository,
    Q: RowQueue,
{
    let meta = match visible_request(&app.repo, request_id, tenant).await {
        Ok(meta) => meta,
        Err(problem) => return problem.into_response(),
    };
    let max_rows = RETRY_MAX_ROWS.min(app.config.csv.max_rows as u64);
    match retry_failed_images(&app.repo, &app.queue, &meta, max_rows, Utc::now()).await {
        Ok(retried) => {
            let retry = retried.meta;
            metrics::counter!("requests_retried").increment(u64::from(!retried.replayed));
            tracing::info!(
                retry_id = %retry.request_id,
                images_to_retry = retried.images_to_retry,
                replayed = retried.replayed,
                "retry accepted"
            );
            let status_url = format!(
                "{}/requests/{}",
                base_url(&app.config, request),
                retry.request_id
            );
            let mut response = json_response(
                StatusCode::ACCEPTED,
                &RetryAccepted {
                    request_id: retry.request_id.clone(),
                    retry_of: meta.request_id,
                    status: retry.status.as_str(),
                    status_url: status_url.clone(),
                    rows: retry.counters.rows_total,
                    images: retry.counters.images_total,
                    images_to_retry: retried.images_to_retry,
                },
            );
            if let Ok(value) = status_url.parse() {
                response.headers_mut().insert("location", value);
            }
            if retried.replayed {
                response
                    .headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
            }
            response
        }
        Err(e) => Problem::from(e).into_response(),
    }
}
