//! Helpers shared by the tests that run `pixpress serve`'s router.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use pixpress::adapters::AnyKeyStore;
use pixpress::adapters::local::FileKeyStore;
use pixpress::config::Config;
use pixpress_cli::pipeline::{LocalPipeline, PipelineOptions};

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pixpress-{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `pixpress serve`'s router over a fresh data directory with one API key; returns the API's
/// base URL, the key, and the pump (kept running while it lives).
pub async fn serve_with_a_key() -> (String, String, pixpress_cli::pipeline::Pump) {
    let data = temp_dir("client-serve");
    let keys = FileKeyStore::in_dir(&data);
    let (issued, _) = pixpress::auth::create_key(&keys, "shop", chrono::Utc::now())
        .await
        .unwrap();
    let mut config = Config::default();
    config.fetch.policy = pixpress::fetch::NetworkPolicy::local();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let mut options = PipelineOptions::new(&data);
    options.public_base_url = Some(format!("http://{addr}/files"));
    config.public_api_url = Some(format!("http://{addr}"));
    let mut pipeline = LocalPipeline::new(&config, options).unwrap();
    pipeline.api.keys = Some(AnyKeyStore::File(keys));
    let pump = pipeline.start_pump();
    tokio::spawn(async move {
        axum::serve(listener, pixpress_cli::serve::router(pipeline))
            .await
            .unwrap();
    });
    (format!("http://{addr}"), issued.api_key, pump)
}
