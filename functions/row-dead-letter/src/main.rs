//! Lambda entry point of the `row-dead-letter` function: composition only.

use lambda_runtime::{Error, run, service_fn};
use pixpress::adapters::aws::{lambda_sdk_config, repository_from_env};
use pixpress::config::Config;
use pixpress_row_dead_letter::{App, handle};

#[tokio::main]
async fn main() -> Result<(), Error> {
    pixpress::telemetry::init_lambda();
    let metrics = pixpress::telemetry::Metrics::init("row-dead-letter");
    let config = Config::from_env()?;
    let app = App::new(repository_from_env(&lambda_sdk_config()?)?, &config);
    // One EMF document of this invocation's metrics after each event.
    run(service_fn(|event| async {
        let result = handle(&app, event).await;
        metrics.flush();
        result
    }))
    .await
}
