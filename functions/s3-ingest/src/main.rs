//! Lambda entry point of the `s3-ingest` function: composition only.
#![recursion_limit = "256"]

use pixpress_app::config::vars;
use pixpress_aws::lambda::{run_events, start};
use pixpress_aws::{AwsBackends, ingest_queue_from_env};
use pixpress_s3_ingest::{App, IngestConfig, handle_any};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let started = start("s3-ingest").await?;
    let aws = AwsBackends::from_env(&started.sdk)?;
    let app = App {
        repo: aws.repo,
        queue: aws.queue,
        store: aws.store,
        chunks: ingest_queue_from_env(&started.sdk),
        dead_letter_queue_arn: std::env::var(vars::INGEST_DEAD_LETTER_QUEUE_ARN)
            .ok()
            .filter(|arn| !arn.is_empty()),
        config: IngestConfig::from(&started.config),
    };
    run_events(started.metrics, |event| handle_any(&app, event)).await
}
