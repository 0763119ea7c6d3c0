//! `pixpress serve`: the HTTP API on a local port, the pump running in the background, and the
//! data directory served under `/files/…` so output image URLs resolve.

use std::net::SocketAddr;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response as AxumResponse};
use axum::routing::get;
use pixpress_app::ports::ObjectStore;

use crate::pipeline::LocalPipeline;

async fn file(
    State(pipeline): State<LocalPipeline>,
    UrlPath(key): UrlPath<String>,
) -> AxumResponse {
    match pipeline.store().get(&key, u64::MAX).await {
        Ok(Some(object)) => ([("content-type", object.content_type)], object.bytes).into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The router: `/files/{*key}` from the data directory, merged with the API's own router
/// (the one the `api` Lambda function runs).
pub fn router(pipeline: LocalPipeline) -> Router {
    let api = pixpress_api::router(pipeline.api.clone());
    Router::new()
        .route("/files/{*key}", get(file))
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
