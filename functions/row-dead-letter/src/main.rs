//! Lambda entry point of the `row-dead-letter` function: composition only.

use pixpress_aws::lambda::{run_events, start};
use pixpress_aws::repository_from_env;
use pixpress_row_dead_letter::{App, handle};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let started = start("row-dead-letter").await?;
    let app = App::new(repository_from_env(&started.sdk)?, &started.config);
    run_events(started.metrics, |event| handle(&app, event)).await
}
