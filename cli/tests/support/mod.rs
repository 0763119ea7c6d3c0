//! Helpers shared by the tests that run `pixpress serve`'s router.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use pixpress_app::config::Config;
use pixpress_cli::pipeline::LocalPipeline;
use pixpress_embedded::FileKeyStore;
use pixpress_local::AnyKeyStore;

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pixpress-{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `pixpress serve`'s router over a fresh data directory with one API key; returns the API's
/// base URL, the key, and the pump (kept running while it lives).
pub async fn serve_with_a_key() -> (String, String, pixpress_cli::pipeline::Pump) {
    let (api, key, _, pump) = serve_with_a_tenant().await;
    (api, key, pump)
}

/// As [`serve_with_a_key`], and the tenant `shop` the key acts for (its webhook secret).
pub async fn serve_with_a_tenant() -> (
    String,
    String,
    pixpress_app::auth::TenantRecord,
    pixpress_cli::pipeline::Pump,
) {
    serve_with_config(Config::default()).await
}

/// As [`serve_with_a_tenant`], with `config` (fetches allowed to loopback).
pub async fn serve_with_config(
    mut config: Config,
) -> (
    String,
    String,
    pixpress_app::auth::TenantRecord,
    pixpress_cli::pipeline::Pump,
) {
    let data = temp_dir("client-serve");
    let keys = FileKeyStore::in_dir(&data);
    let (issued, tenant) = pixpress_app::auth::create_key(&keys, "shop", chrono::Utc::now())
        .await
        .unwrap();
    config.fetch.policy = pixpress_fetch::NetworkPolicy::local();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let mut options = pixpress_cli::serve::options(&data, addr);
    options.keys = Some(AnyKeyStore::File(keys));
    config.public_api_url = Some(format!("http://{addr}"));
    let pipeline = LocalPipeline::new(&config, options).unwrap();
    let pump = pipeline.start_pump();
    tokio::spawn(async move {
        axum::serve(listener, pixpress_cli::serve::router(pipeline))
            .await
            .unwrap();
    });
    (format!("http://{addr}"), issued.api_key, tenant, pump)
}
