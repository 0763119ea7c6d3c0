//! Lambda entry point of the `row-dead-letter` function: composition only.

use lambda_runtime::{Error, run, service_fn};
use pixpress_app::config::Config;
use pixpress_aws::{lambda_sdk_config, repository_from_env};
use pixpress_row_dead_letter::{App, handle};

#[tokio::main]
async fn main() -> Result<(), Error> {
    pixpress_app::telemetry::init_lambda();
    let metrics = pixpress_app::telemetry::Metrics::init("row-dead-letter");
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
