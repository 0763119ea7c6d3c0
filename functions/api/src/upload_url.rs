//! `POST /upload-urls`: a presigned S3 POST form for a CSV too large for `POST /uploads`, with a
//! `content-length-range` condition so S3 itself refuses a CSV over the S3 path's size limit.
//!
//! Options (`webhook_url`, `format`, `quality`, `max_dimension`, as query parameters) are those of
//! `POST /uploads`; they are checked here and stored at `pending/<tenant>/<request_id>.json`
//! until the CSV arrives.
//!
//! The form writes `uploads/<tenant>/<request_id>.csv`; the bucket's `ObjectCreated` trigger runs the
//! s3-ingest function, which takes the request id from that key, so the id answered here is the
//! one to poll. Until the CSV is uploaded and ingested, `GET /requests/{id}` answers 404. One URL
//! makes one request: a second upload with the same form finds the request already ingested and
//! changes nothing.

use std::time::Duration;

use axum::http::StatusCode;
use chrono::Utc;

use crate::ApiRepository;
use crate::{ApiRequest as Request, ApiResponse};
use pixpress_app::ingest::check_webhook_url;
use pixpress_app::ports::{ObjectStore, RowQueue};
use pixpress_domain::model::UploadOptions;
use pixpress_domain::storage_keys::{pending_upload_key, presigned_upload_key};
use serde::Serialize;

use crate::problem::Problem;
use crate::upload::{UploadError, UploadForm, output_spec};
use crate::{App, base_url, json_response};

/// How long a presigned upload URL stays valid: 15 minutes, in seconds.
pub const UPLOAD_URL_TTL_SECONDS: u64 = 15 * 60;

/// The `Content-Type` the presigned form is signed for; the upload must send exactly this.
pub const UPLOAD_CONTENT_TYPE: &str = "text/csv";

/// The 201 body: where and how to upload, and the request the upload will become.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UploadUrl {
    /// The request id the uploaded CSV is ingested under.
    pub request_id: String,
    /// Where to `POST` the form (the bucket's URL).
    pub upload_url: String,
    /// Always `POST`: a `multipart/form-data` body with every one of `fields`, then the CSV in
    /// a last field named `file` (S3 POST Object).
    pub method: &'static str,
    /// Form fields to send as they are (`key`, `Content-Type`, the signature and its policy).
    pub fields: std::collections::BTreeMap<String, String>,
    /// When the form stops working (RFC 3339, UTC).
    pub expires_at: String,
    /// Largest CSV S3 accepts through the form, in bytes (the policy's `content-length-range`;
    /// a larger one is refused with `400 EntityTooLarge` and nothing is stored).
    pub max_bytes: usize,
    /// Where to poll the status once the CSV is uploaded.
    pub status_url: String,
}

/// Signs an upload URL for a new request. `501` when the store cannot presign (the embedded
/// directory store), `503` when signing fails.
pub async fn post_upload_url<R, Q, S, K>(
    app: &App<R, Q, S, K>,
    request: &Request,
    tenant: &str,
) -> ApiResponse
where
    R: ApiRepository,
    Q: RowQueue,
    S: ObjectStore,
{
    // The same options as `POST /uploads`, checked now and applied when the CSV arrives.
    let form = UploadForm::from_query(request.uri().query());
    let output_spec = match output_spec(&form, app.config.default_output) {
        Ok(spec) => spec,
        Err(e) => return Problem::from(UploadError::InvalidParameter(e)).into_response(),
    };
    let webhook_url = match form.webhook_url.as_deref().filter(|u| !u.is_empty()) {
        None => None,
        Some(url) => match check_webhook_url(url, app.config.egress) {
            Ok(url) => Some(url),
            Err(e) => return Problem::from(UploadError::InvalidWebhookUrl(e)).into_response(),
        },
    };
    let request_id = uuid::Uuid::new_v4().to_string();
    crate::record_request_id(&request_id);
    let key = presigned_upload_key(tenant, &request_id);
    let ttl = Duration::from_secs(UPLOAD_URL_TTL_SECONDS);
    let issued_at = Utc::now();
    match app
        .store
        .presigned_post(
            &key,
            UPLOAD_CONTENT_TYPE,
            app.config.upload_max_bytes as u64,
            ttl,
        )
        .await
    {
        Ok(Some(form)) => {
            let options = UploadOptions {
                webhook_url,
                output_spec,
            };
            let stored = serde_json::to_vec(&options).unwrap_or_default();
            if let Err(e) = app
                .store
                .put(
                    &pending_upload_key(tenant, &request_id),
                    stored.into(),
                    "application/json",
                )
                .await
            {
                return Problem::unavailable(&e, "the upload options could not be stored")
                    .into_response();
            }
            let status_url = format!("{}/requests/{request_id}", base_url(&app.config, request));
            let expires_at = issued_at + chrono::Duration::seconds(UPLOAD_URL_TTL_SECONDS as i64);
            let body = UploadUrl {
                request_id,
                upload_url: form.url,
                method: "POST",
                fields: form.fields.into_iter().collect(),
                expires_at: expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                max_bytes: app.config.upload_max_bytes,
                status_url,
            };
            json_response(StatusCode::CREATED, &body)
        }
        Ok(None) => Problem::new(
            StatusCode::NOT_IMPLEMENTED,
            "presigned-uploads-unavailable",
            "Presigned uploads unavailable",
            "this deployment stores objects on local disk and cannot presign uploads; send the CSV to POST /uploads",
        )
        .into_response(),
        Err(e) => Problem::unavailable(&e, "the upload URL could not be signed").into_response(),
    }
}
