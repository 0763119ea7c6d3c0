//! Lambda entry point of the `webhook-sender` function: composition only.

// The sender future (read the request → sign → POST → record) nests deeply.
#![recursion_limit = "256"]

use lambda_runtime::{Error, run, service_fn};
use pixpress_app::config::{Config, vars};
use pixpress_aws::AnyKeyStore;
use pixpress_aws::{
    key_store_from_env, lambda_sdk_config, repository_from_env, store_from_env,
    webhooks_queue_from_env,
};
use pixpress_delivery::App;
use pixpress_webhook_sender::handle;

#[tokio::main]
async fn main() -> Result<(), Error> {
    pixpress_app::telemetry::init_lambda();
    let metrics = pixpress_app::telemetry::Metrics::init("webhook-sender");
    let config = Config::from_env()?;
    let sdk = lambda_sdk_config()?;
    let queue = webhooks_queue_from_env(&sdk)
        .ok_or_else(|| format!("{} is not set", vars::WEBHOOKS_QUEUE_URL))?;
    let app = App::new(
        Some(AnyKeyStore::Dynamo(key_store_from_env(&sdk)?)),
        repository_from_env(&sdk)?,
        store_from_env(&sdk)?,
        &config,
    )?
    .with_webhooks(Some(queue));
    // One EMF document of this invocation's metrics after each batch.
    run(service_fn(|event| async {
        let result = handle(&app, event).await;
        metrics.flush();
        result
    }))
    .await
}
