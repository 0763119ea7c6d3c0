//! Lambda entry point of the `s3-ingest` function: composition only.
#![recursion_limit = "256"]

use lambda_runtime::{Error, run, service_fn};
use pixpress_app::config::Config;
use pixpress_aws::{AwsBackends, ingest_queue_from_env, lambda_sdk_config};
use pixpress_s3_ingest::{App, IngestConfig, handle_any};

#[tokio::main]
async fn main() -> Result<(), Error> {
    pixpress_app::telemetry::init_lambda();
    let metrics = pixpress_app::telemetry::Metrics::init("s3-ingest");
    let config = Config::from_env()?;
    let sdk = lambda_sdk_config()?;
    let aws = AwsBackends::from_env(&sdk)?;
    let app = App {
        repo: aws.repo,
        queue: aws.queue,
        store: aws.store,
        chunks: ingest_queue_from_env(&sdk),
        config: IngestConfig::from(&config),
    };
    // One EMF document of this invocation's metrics after each event.
    run(service_fn(|event| async {
        let result = handle_any(&app, event).await;
        metrics.flush();
        result
    }))
    .await
}
