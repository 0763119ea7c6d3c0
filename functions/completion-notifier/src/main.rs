//! Lambda entry point of the `completion-notifier` function: composition only.

// The notifier future (stream batch → output CSV in parts → signed webhook) nests deeply.
#![recursion_limit = "256"]

use lambda_runtime::{Error, run, service_fn};
use pixpress_app::config::Config;
use pixpress_aws::AnyKeyStore;
use pixpress_aws::{
    key_store_from_env, lambda_sdk_config, repository_from_env, store_from_env,
    webhooks_queue_from_env,
};
use pixpress_completion_notifier::{App, handle};

#[tokio::main]
async fn main() -> Result<(), Error> {
    pixpress_app::telemetry::init_lambda();
    let metrics = pixpress_app::telemetry::Metrics::init("completion-notifier");
    let config = Config::from_env()?;
    let sdk = lambda_sdk_config()?;
    // Deployed, the webhook-sender delivers from the webhooks queue (off this stream shard).
    let app = App::new(
        Some(AnyKeyStore::Dynamo(key_store_from_env(&sdk)?)),
        repository_from_env(&sdk)?,
        store_from_env(&sdk)?,
        &config,
    )?
    .with_webhooks(webhooks_queue_from_env(&sdk));
    // One EMF document of this invocation's metrics after each event.
    run(service_fn(|event| async {
        let result = handle(&app, event).await;
        metrics.flush();
        result
    }))
    .await
}
