//! Lambda entry point of the `sweeper` function: composition only.

// The sweep future runs the notifier's (output CSV in parts → webhook job) inside.
#![recursion_limit = "256"]

use pixpress_aws::lambda::{run_events, start};
use pixpress_aws::{
    key_store_from_env, queue_from_env, repository_from_env, store_from_env,
    webhooks_queue_from_env,
};
use pixpress_sweeper::{App, handle};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let started = start("sweeper").await?;
    let sdk = &started.sdk;
    // As deployed for the completion-notifier: webhooks go to the webhooks queue.
    let notifier = pixpress_delivery::App::new(
        Some(key_store_from_env(sdk)?),
        repository_from_env(sdk)?,
        store_from_env(sdk)?,
        &started.config,
    )?
    .with_webhooks(webhooks_queue_from_env(sdk));
    let app = App::new(notifier, queue_from_env(sdk)?, &started.config);
    run_events(started.metrics, |event| handle(&app, event)).await
}
