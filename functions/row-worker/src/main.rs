//! Lambda entry point of the `row-worker` function: composition only.

use lambda_runtime::{Error, run, service_fn};
use pixpress_app::config::Config;
use pixpress_aws::{
    lambda_sdk_config, origin_slots_from_env, queue_from_env, repository_from_env, store_from_env,
};
use pixpress_row_worker::{App, handle};

#[tokio::main]
async fn main() -> Result<(), Error> {
    pixpress_app::telemetry::init_lambda();
    let metrics = pixpress_app::telemetry::Metrics::init("row-worker");
    let config = Config::from_env()?;
    let sdk = lambda_sdk_config()?;
    let app = App::new(
        repository_from_env(&sdk)?,
        store_from_env(&sdk)?,
        origin_slots_from_env(&sdk)?,
        queue_from_env(&sdk)?,
        &config,
    )?;
    // One EMF document of this invocation's metrics after each event.
    run(service_fn(|event| async {
        let result = handle(&app, event).await;
        metrics.flush();
        result
    }))
    .await
}
