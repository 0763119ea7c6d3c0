//! Lambda entry point of the `api` function: composition only.

use lambda_http::{Error, run};
use pixpress::adapters::AnyKeyStore;
use pixpress::adapters::aws::{AwsBackends, key_store_from_env, lambda_sdk_config};
use pixpress::config::Config;
use pixpress_api::{ApiConfig, App, router};

#[tokio::main]
async fn main() -> Result<(), Error> {
    pixpress::telemetry::init_lambda();
    let metrics = pixpress::telemetry::Metrics::init("api");
    let config = Config::from_env()?;
    let sdk = lambda_sdk_config()?;
    let aws = AwsBackends::from_env(&sdk)?;
    // The deployed API always requires a key.
    let app = App {
        keys: Some(AnyKeyStore::Dynamo(key_store_from_env(&sdk)?)),
        repo: aws.repo,
        queue: aws.queue,
        store: aws.store,
        config: ApiConfig::from(&config),
        // Redelivery queues on the webhooks queue the webhook-sender reads.
        webhooks: pixpress::adapters::aws::webhooks_queue_from_env(&sdk),
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
