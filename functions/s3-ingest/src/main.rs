//! Lambda entry point of the `s3-ingest` function: composition only.

use lambda_runtime::{Error, run, service_fn};
use pixpress::adapters::aws::{AwsBackends, lambda_sdk_config};
use pixpress::config::Config;
use pixpress_s3_ingest::{App, IngestConfig, handle};

#[tokio::main]
async fn main() -> Result<(), Error> {
    pixpress::telemetry::init_lambda();
    let metrics = pixpress::telemetry::Metrics::init("s3-ingest");
    let config = Config::from_env()?;
    let aws = AwsBackends::from_env(&lambda_sdk_config()?)?;
    let app = App {
        repo: aws.repo,
        queue: aws.queue,
        store: aws.store,
        config: IngestConfig::from(&config),
    };
    // One EMF document of this invocation's metrics after each event.
    run(service_fn(|event| async {
        let result = handle(&app, event).await;
        metrics.flush();
        result
    }))
    .await
}
