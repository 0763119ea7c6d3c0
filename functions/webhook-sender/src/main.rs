//! Lambda entry point of the `webhook-sender` function: composition only.

// The sender future (read the request → sign → POST → record) nests deeply.
#![recursion_limit = "256"]

use pixpress_app::config::vars;
use pixpress_aws::lambda::{run_events, start};
use pixpress_aws::{
    key_store_from_env, repository_from_env, store_from_env, webhooks_queue_from_env,
};
use pixpress_delivery::App;
use pixpress_webhook_sender::handle;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let started = start("webhook-sender").await?;
    let sdk = &started.sdk;
    let queue = webhooks_queue_from_env(sdk)
        .ok_or_else(|| format!("{} is not set", vars::WEBHOOKS_QUEUE_URL))?;
    let app = App::new(
        Some(key_store_from_env(sdk)?),
        repository_from_env(sdk)?,
        store_from_env(sdk)?,
        &started.config,
    )?
    .with_webhooks(Some(queue));
    run_events(started.metrics, |event| handle(&app, event)).await
}
