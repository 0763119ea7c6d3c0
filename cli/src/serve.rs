//! `pixpress serve`: the HTTP API on a local port, the pump running in the background, the
//! data directory served under `/files/…` so output image URLs resolve, and `/local-uploads`
//! taking the upload forms `POST /upload-urls` issues, as S3 POST Object takes presigned forms.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response as AxumResponse};
use axum::routing::{get, post};
use pixpress_app::ports::{ObjectStore, UploadedPart};

use crate::pipeline::{LocalPipeline, PipelineOptions};

/// Path of the upload form endpoint.
pub const UPLOAD_FORM_PATH: &str = "/local-uploads";

/// Bytes buffered per stored part of an uploaded CSV (S3 parts: at least 5 MiB but the last).
const FORM_PART_BYTES: usize = 8 * 1024 * 1024;

/// Largest form field other than the file, in bytes (S3 POST Object fields are short: the
/// policy is the longest, well under this).
const FORM_FIELD_MAX_BYTES: u64 = 16 * 1024;

/// The pipeline options of a server on `addr` over `data_dir`: outputs served under
/// `/files/…`, upload forms taken at [`UPLOAD_FORM_PATH`]. The one place `serve` (and its
/// tests) compose them.
#[must_use]
pub fn options(data_dir: &Path, addr: SocketAddr) -> PipelineOptions {
    let mut options = PipelineOptions::new(data_dir);
    options.public_base_url = Some(format!("http://{addr}/files"));
    options.upload_form_url = Some(format!("http://{addr}{UPLOAD_FORM_PATH}"));
    options
}

/// An answer as S3 gives one to a form it refuses: a status and a short text.
fn refused(status: StatusCode, code: &str, message: &str) -> AxumResponse {
    (
        status,
        [("content-type", "text/plain; charset=utf-8")],
        format!("{code}: {message}\n"),
    )
        .into_response()
}

/// `POST /local-uploads`: a `multipart/form-data` upload form issued by `POST /upload-urls`
/// (its fields, then the CSV as `file`). The CSV is stored in parts as it streams in (memory
/// stays at one part whatever its size) and the upload is ingested as the bucket's trigger
/// would; answers 204 like S3. 403 for a form this server did not sign or that expired, 400
/// `EntityTooLarge` past the form's size limit (nothing is stored).
async fn upload_form(
    State(pipeline): State<LocalPipeline>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> AxumResponse {
    let boundary = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok());
    let Some(boundary) = boundary else {
        return refused(
            StatusCode::BAD_REQUEST,
            "MalformedPOSTRequest",
            "the body must be multipart/form-data",
        );
    };
    // Only the form's own fields, each small, and the CSV within the S3 path's limit (checked
    // again against the signed policy as it streams): nothing unsigned is held in memory.
    let max_file = pipeline.api.config.upload_max_bytes as u64;
    let constraints = multer::Constraints::new()
        .allowed_fields(vec!["key", "Content-Type", "policy", "signature", "file"])
        .size_limit(
            multer::SizeLimit::new()
                .per_field(FORM_FIELD_MAX_BYTES)
                .for_field("file", max_file)
                .whole_stream(max_file + 16 * FORM_FIELD_MAX_BYTES),
        );
    let mut form =
        multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
    let mut fields = BTreeMap::new();
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => {
                return refused(
                    StatusCode::BAD_REQUEST,
                    "MalformedPOSTRequest",
                    "the form has no `file` field",
                );
            }
            Err(e) => {
                return refused(
                    StatusCode::BAD_REQUEST,
                    "MalformedPOSTRequest",
                    &e.to_string(),
                );
            }
        };
        let name = field.name().unwrap_or_default().to_owned();
        if name != "file" {
            match field.text().await {
                Ok(text) => {
                    fields.insert(name, text);
                }
                Err(e) => {
                    return refused(
                        StatusCode::BAD_REQUEST,
                        "MalformedPOSTRequest",
                        &e.to_string(),
                    );
                }
            }
            continue;
        }
        let policy = match pipeline.store().check_upload_form(&fields) {
            Ok(policy) => policy,
            Err(e) => return refused(StatusCode::FORBIDDEN, "AccessDenied", &e),
        };
        return match store_file(&pipeline, &policy, field).await {
            Ok(()) => {
                let record = upload_event(&policy.key);
                let ingesting = pipeline.clone();
                // The bucket's trigger runs asynchronously: the form's answer does not wait.
                // (On a thread of its own driving the runtime: the ingest future is not
                // `Send` for `tokio::spawn`.)
                let runtime = tokio::runtime::Handle::current();
                std::thread::spawn(move || {
                    runtime.block_on(async move {
                        if let Err(e) = ingesting.ingest_upload(&record).await {
                            tracing::error!(error = %format!("{e:#}"), "ingesting an uploaded form failed");
                        }
                    });
                });
                StatusCode::NO_CONTENT.into_response()
            }
            Err(response) => response,
        };
    }
}

/// Streams the form's `file` into the store under the policy's key, in parts.
async fn store_file(
    pipeline: &LocalPipeline,
    policy: &pixpress_embedded::UploadPolicy,
    mut field: multer::Field<'static>,
) -> Result<(), AxumResponse> {
    let store = pipeline.store();
    let unavailable = |e: &dyn std::fmt::Display| {
        refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            &e.to_string(),
        )
    };
    let upload = store
        .create_multipart(&policy.key, &policy.content_type)
        .await
        .map_err(|e| unavailable(&e))?;
    let abort = |response: AxumResponse| async {
        let _ = store.abort_multipart(&policy.key, &upload).await;
        response
    };
    let (mut parts, mut buffer, mut total) = (Vec::<UploadedPart>::new(), Vec::new(), 0u64);
    loop {
        let chunk = match field.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                let response = refused(
                    StatusCode::BAD_REQUEST,
                    "MalformedPOSTRequest",
                    &e.to_string(),
                );
                return Err(abort(response).await);
            }
        };
        total += chunk.len() as u64;
        if total > policy.max_bytes {
            let message = format!(
                "your proposed upload exceeds the maximum allowed size of {} bytes",
                policy.max_bytes
            );
            return Err(abort(refused(StatusCode::BAD_REQUEST, "EntityTooLarge", &message)).await);
        }
        buffer.extend_from_slice(&chunk);
        if buffer.len() >= FORM_PART_BYTES {
            let part = Bytes::from(std::mem::take(&mut buffer));
            let number = u32::try_from(parts.len() + 1).unwrap_or(u32::MAX);
            match store.upload_part(&policy.key, &upload, number, part).await {
                Ok(part) => parts.push(part),
                Err(e) => return Err(abort(unavailable(&e)).await),
            }
        }
    }
    if total == 0 {
        let response = refused(
            StatusCode::BAD_REQUEST,
            "EntityTooSmall",
            "your proposed upload is smaller than the minimum allowed size",
        );
        return Err(abort(response).await);
    }
    if !buffer.is_empty() {
        let number = u32::try_from(parts.len() + 1).unwrap_or(u32::MAX);
        match store
            .upload_part(&policy.key, &upload, number, Bytes::from(buffer))
            .await
        {
            Ok(part) => parts.push(part),
            Err(e) => return Err(abort(unavailable(&e)).await),
        }
    }
    if let Err(e) = store.complete_multipart(&policy.key, &upload, &parts).await {
        return Err(abort(unavailable(&e)).await);
    }
    Ok(())
}

/// The `ObjectCreated` record the bucket would send for `key`.
fn upload_event(key: &str) -> aws_lambda_events::event::s3::S3EventRecord {
    let mut record = aws_lambda_events::event::s3::S3EventRecord::default();
    record.event_name = Some("ObjectCreated:Post".to_owned());
    record.s3.bucket.name = Some("local".to_owned());
    // Event keys are URL-encoded (spaces as `+`); tenant and request id need none.
    record.s3.object.key = Some(key.to_owned());
    record
}

/// `GET /files/{*key}`: an output image, as the deployed CDN serves `images/` publicly. Nothing
/// else in the data directory is served (uploads, output CSVs — the API streams those to their
/// tenant — and the key store are not public).
async fn file(
    State(pipeline): State<LocalPipeline>,
    UrlPath(key): UrlPath<String>,
) -> AxumResponse {
    if !key.starts_with(pixpress_domain::storage_keys::IMAGES_PREFIX) {
        return StatusCode::NOT_FOUND.into_response();
    }
    match pipeline.store().get(&key, u64::MAX).await {
        Ok(Some(object)) => {
            let cache_control = if object.content_type.starts_with("image/") {
                pixpress_domain::storage_keys::IMAGE_CACHE_CONTROL
            } else {
                "no-cache"
            };
            (
                [
                    ("content-type", object.content_type),
                    ("cache-control", cache_control.to_owned()),
                ],
                object.bytes,
            )
                .into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The router: `/files/{*key}` from the data directory and [`UPLOAD_FORM_PATH`], merged with
/// the API's own router (the one the `api` Lambda function runs).
pub fn router(pipeline: LocalPipeline) -> Router {
    let api = pixpress_api::router(pipeline.api.clone());
    Router::new()
        .route("/files/{*key}", get(file))
        .route(
            UPLOAD_FORM_PATH,
            // The form carries the whole CSV: no body limit but the form's own.
            post(upload_form).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .with_state(pipeline)
        .merge(api)
}

/// Serves the API on `listener` with the pump in the background until Ctrl-C.
///
/// # Errors
/// When the server fails.
pub async fn serve(
    pipeline: LocalPipeline,
    listener: tokio::net::TcpListener,
) -> anyhow::Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    let pump = pipeline.start_pump();
    eprintln!(
        "pixpress API on http://{addr} (POST /uploads, GET /requests/{{id}}); data in {}",
        pipeline.store().root().display()
    );
    let served = axum::serve(listener, router(pipeline))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving the API");
    pump.stop().await;
    served
}
