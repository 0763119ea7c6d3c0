//! Lambda entry point of the `webhook-sender` function: composition only.

// The sender future (read the request → sign → POST → record) nests deeply.
#![recursion_limit = "256"]

use lambda_runtime::{Error, run, service_fn};
use pixpress::adapters::AnyKeyStore;
use pixpress::adapters::aws::{
    SqsRowQueue, key_store_from_env, lambda_sdk_config, repository_from_env, store_from_env,
};
use pixpress::config::{Config, vars};
use pixpress::fetch::Fetcher;
use pixpress_completion_notifier::{App, NotifierConfig};
use pixpress_webhook_sender::handle;

#[tokio::main]
async fn main() -> Result<(), Error> {
    pixpress::telemetry::init_lambda();
    let metrics = pixpress::telemetry::Metrics::init("webhook-sender");
    let config = Config::from_env()?;
    let sdk = lambda_sdk_config()?;
    let queue_url = std::env::var(vars::WEBHOOKS_QUEUE_URL)
        .map_err(|_| format!("{} is not set", vars::WEBHOOKS_QUEUE_URL))?;
    let app = App {
        keys: Some(AnyKeyStore::Dynamo(key_store_from_env(&sdk)?)),
        repo: repository_from_env(&sdk)?,
        store: store_from_env(&sdk)?,
        fetcher: Fetcher::new(config.webhook_fetch())?,
        config: NotifierConfig::from(&config),
        webhooks: Some(SqsRowQueue::new(&sdk, queue_url)),
    };
    // One EMF document of this invocation's metrics after each batch.
    run(service_fn(|event| async {
        let result = handle(&app, event).await;
        metrics.flush();
        result
    }))
    .await
}
