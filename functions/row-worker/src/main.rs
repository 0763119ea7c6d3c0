//! Lambda entry point of the `row-worker` function: composition only.

use lambda_runtime::{Error, run, service_fn};
use pixpress::adapters::local::{DirObjectStore, InMemoryRequestRepository};
use pixpress::config::Config;
use pixpress_row_worker::{App, handle};

#[tokio::main]
async fn main() -> Result<(), Error> {
    pixpress::telemetry::init_lambda();
    let config = Config::from_env()?;
    // Embedded backends until the AWS adapters land; the handler is generic over the ports.
    let data_dir = std::env::var("DATA_DIR").unwrap_or_else(|_| "/tmp/pixpress".to_owned());
    let store = DirObjectStore::new(data_dir, None)?;
    let app = App::new(InMemoryRequestRepository::new(), store, &config)?;
    run(service_fn(|event| handle(&app, event))).await
}
