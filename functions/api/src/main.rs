//! Lambda entry point of the `api` function: composition only.

use lambda_http::{Error, run, service_fn};
use pixpress::adapters::local::{DirObjectStore, InMemoryRequestRepository, InMemoryRowQueue};
use pixpress::config::Config;
use pixpress_api::{ApiConfig, App, handle};

#[tokio::main]
async fn main() -> Result<(), Error> {
    pixpress::telemetry::init_lambda();
    let config = Config::from_env()?;
    // Embedded backends until the AWS adapters land; the handler is generic over the ports.
    let data_dir = std::env::var("DATA_DIR").unwrap_or_else(|_| "/tmp/pixpress".to_owned());
    let app = App {
        repo: InMemoryRequestRepository::new(),
        queue: InMemoryRowQueue::new(config.max_receive_count),
        store: DirObjectStore::new(data_dir, None)?,
        config: ApiConfig::from(&config),
    };
    run(service_fn(|request| handle(&app, request))).await
}
