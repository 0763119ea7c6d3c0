//! Lambda entry point of the `api` function: composition only.

use lambda_http::{Error, run};
use pixpress_api::{ApiConfig, App, router};
use pixpress_aws::{AwsBackends, key_store_from_env};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let started = pixpress_aws::lambda::start("api").await?;
    let (metrics, config, sdk) = (started.metrics, started.config, started.sdk);
    let aws = AwsBackends::from_env(&sdk)?;
    // The deployed API always requires a key.
    let app = App {
        keys: Some(key_store_from_env(&sdk)?),
        repo: aws.repo,
        queue: aws.queue,
        store: aws.store,
        config: ApiConfig::from(&config),
        // Redelivery queues on the webhooks queue the webhook-sender reads.
        webhooks: pixpress_aws::webhooks_queue_from_env(&sdk),
    };
    // One EMF document of this invocation's metrics after each response.
    let router = router(app).layer(axum::middleware::map_response(
        move |response: pixpress_api::ApiResponse| async move {
            metrics.flush();
            response
        },
    ));
    run(router).await
}
