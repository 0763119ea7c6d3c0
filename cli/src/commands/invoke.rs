//! `pixpress invoke`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use pixpress_app::config::Config;
use pixpress_aws::{AwsBackends, load_sdk_config};
use pixpress_cli::invoke::{invoke, request_text, seed};
use pixpress_cli::pipeline::{LocalPipeline, PipelineOptions};

use super::*;

#[derive(Debug, clap::Args)]
pub(crate) struct InvokeArgs {
    /// api, s3-ingest, row-worker, row-dead-letter, completion-notifier or webhook-sender,
    /// or the
    /// template's logical name (ApiFunction, RowWorkerFunction, …).
    function: String,
    /// The event JSON, as Lambda delivers it.
    event: PathBuf,
    /// `local`: embedded backends in --data-dir; `aws`: the AWS adapters configured like the
    /// Lambda functions (TABLE_NAME, ROWS_QUEUE_URL, BUCKET_NAME, AWS_ENDPOINT_URL*).
    #[arg(long, value_enum, default_value_t = Backend::Local)]
    backend: Backend,
    /// Directory used as the bucket with the local backend.
    #[arg(long, default_value = "pixpress-data")]
    data_dir: PathBuf,
}

/// Runs `pixpress invoke`.
pub(crate) async fn execute(args: InvokeArgs) -> anyhow::Result<ExitCode> {
    let InvokeArgs {
        function,
        event,
        backend,
        data_dir,
    } = args;
    let config = Config::from_env()?;
    let json = tokio::fs::read_to_string(&event)
        .await
        .with_context(|| format!("reading {}", event.display()))?;
    let output = match backend {
        Backend::Local => {
            let mut config = config;
            let local = LocalPipeline::new(&config, PipelineOptions::new(&data_dir))?;
            // The embedded backends start empty: put in place what the event names.
            let seeded = seed(
                &function,
                &json,
                &event,
                &local.backend.repo,
                &local.backend.store,
                &mut config,
            )
            .await?;
            for note in &seeded.notes {
                eprintln!("seeded {note}");
            }
            let output = invoke(
                &function,
                &json,
                local.backend.repo.clone(),
                local.backend.queue,
                local.backend.store,
                &config,
            )
            .await?;
            for id in &seeded.requests {
                if let Some(text) = request_text(&local.backend.repo, id).await? {
                    eprint!("afterwards, {text}");
                }
            }
            if let Some(receiver) = &seeded.receiver {
                for delivery in receiver.received() {
                    eprintln!(
                        "the seeded receiver got delivery {} ({}): {}",
                        delivery.id,
                        match &delivery.verified {
                            Ok(()) => "signature verified".to_owned(),
                            Err(e) => format!("signature NOT verified: {e}"),
                        },
                        String::from_utf8_lossy(&delivery.body)
                    );
                }
            }
            output
        }
        Backend::Aws => {
            let aws = AwsBackends::from_env(&load_sdk_config().await)?;
            invoke(&function, &json, aws.repo, aws.queue, aws.store, &config).await?
        }
    };
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(ExitCode::SUCCESS)
}
