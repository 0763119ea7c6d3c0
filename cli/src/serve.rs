//! `pixpress serve`: the HTTP API on a local port, the pump running in the background, and the
//! data directory served under `/files/…` so output image URLs resolve.

use std::net::SocketAddr;

use anyhow::Context as _;
use axum::Router;
use axum::body::Body as AxumBody;
use axum::extract::{Path as UrlPath, Request as AxumRequest, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response as AxumResponse};
use axum::routing::get;
use lambda_http::Body as LambdaBody;
use pixpress::ports::ObjectStore;

use crate::pipeline::LocalPipeline;

/// Largest request body accepted by the local server, in bytes (API Gateway's payload limit).
const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

async fn api(State(pipeline): State<LocalPipeline>, request: AxumRequest) -> AxumResponse {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response();
    };
    let request = lambda_http::http::Request::from_parts(parts, LambdaBody::Binary(bytes.to_vec()));
    match pipeline.call_api(request).await {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            let bytes = match body {
                LambdaBody::Text(text) => text.into_bytes(),
                LambdaBody::Binary(bytes) => bytes,
                _ => Vec::new(),
            };
            AxumResponse::from_parts(parts, AxumBody::from(bytes))
        }
        Err(e) => {
            tracing::error!(error = %e, "api handler failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn file(
    State(pipeline): State<LocalPipeline>,
    UrlPath(key): UrlPath<String>,
) -> AxumResponse {
    match pipeline.store().get(&key, u64::MAX).await {
        Ok(Some(object)) => ([("content-type", object.content_type)], object.bytes).into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The router: `/files/{*key}` from the data directory, everything else to the `api` handler.
pub fn router(pipeline: LocalPipeline) -> Router {
    Router::new()
        .route("/files/{*key}", get(file))
        .fallback(api)
        .with_state(pipeline)
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
