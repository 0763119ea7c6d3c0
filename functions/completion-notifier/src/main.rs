//! Lambda entry point of the `completion-notifier` function: composition only.

// The notifier future (stream batch → output CSV in parts → signed webhook) nests deeply.
#![recursion_limit = "256"]

use pixpress_aws::lambda::{run_events, start};
use pixpress_aws::{
    key_store_from_env, repository_from_env, store_from_env, webhooks_queue_from_env,
};
use pixpress_completion_notifier::{App, handle};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let started = start("completion-notifier").await?;
    let sdk = &started.sdk;
    // Deployed, the webhook-sender delivers from the webhooks queue (off this stream shard).
    let app = App::new(
        Some(key_store_from_env(sdk)?),
        repository_from_env(sdk)?,
        store_from_env(sdk)?,
        &started.config,
    )?
    .with_webhooks(webhooks_queue_from_env(sdk));
    run_events(started.metrics, |event| handle(&app, event)).await
}
