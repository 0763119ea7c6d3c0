//! Lambda entry point of the `row-worker` function: composition only.

use pixpress_aws::lambda::{run_events, start};
use pixpress_aws::{origin_slots_from_env, queue_from_env, repository_from_env, store_from_env};
use pixpress_row_worker::{App, handle};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let started = start("row-worker").await?;
    let sdk = &started.sdk;
    let app = App::new(
        repository_from_env(sdk)?,
        store_from_env(sdk)?,
        origin_slots_from_env(sdk)?,
        queue_from_env(sdk)?,
        &started.config,
    )?;
    run_events(started.metrics, |event| handle(&app, event)).await
}
