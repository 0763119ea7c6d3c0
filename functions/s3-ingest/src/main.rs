//! Lambda entry point of the `s3-ingest` function: composition only.

use lambda_runtime::{Error, run, service_fn};
use pixpress::adapters::local::{DirObjectStore, InMemoryRequestRepository, InMemoryRowQueue};
use pixpress::config::Config;
use pixpress_s3_ingest::{App, IngestConfig, handle};

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
        config: IngestConfig::from(&config),
    };
    run(service_fn(|event| handle(&app, event))).await
}
