//! `pixpress run`.

use std::path::PathBuf;
use std::process::ExitCode;

use pixpress_cli::emulator::EmulatorNames;
use pixpress_cli::faults::FaultSpec;
use pixpress_cli::pipeline::{Emulated, LocalPipeline, Pipeline, PipelineOptions, UploadQuery};
use pixpress_cli::run::{RunOptions, RunOutcome, rejection_text, run_file, summary};
use pixpress_domain::model::{OutputFormat, Quality};
use pixpress_domain::webhook::WebhookSecret;

use super::*;

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The input CSV (`S. No.,Product Name,Input Image Urls`).
    csv: PathBuf,
    /// Output directory: output.csv, images/, results/.
    #[arg(long, default_value = "pixpress-out")]
    out: PathBuf,
    /// Output format: jpeg, webp or avif (default: jpeg).
    #[arg(long)]
    format: Option<OutputFormat>,
    /// Encoder quality 1–100 on the format's scale (default: JPEG_QUALITY or 50 for jpeg, 65
    /// for webp, 60 for avif), or `auto:<score>` (10–95): per image, the lowest quality whose
    /// SSIMULACRA2 reaches the score.
    #[arg(long)]
    quality: Option<Quality>,
    /// Scale images down so the longest side is at most this many pixels.
    #[arg(long)]
    max_dimension: Option<u32>,
    /// Leave images unscored at a fixed quality (saves the SSIMULACRA2 pass, about 150 ms of
    /// CPU per megapixel).
    #[arg(long)]
    no_score: bool,
    /// POST a signed completion event to this URL.
    #[arg(long)]
    webhook: Option<String>,
    /// Signing secret for the webhook (`whsec_…`; default: WEBHOOK_SECRET).
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    /// Let downloads and webhooks reach 127.0.0.0/8, ::1 and localhost on any port (local servers
    /// only; public hosts stay on ports 80 and 443).
    #[arg(long)]
    allow_loopback: bool,
    /// Print the final status document as JSON instead of a summary.
    #[arg(long)]
    json: bool,
    /// `local`: embedded backends, images under --out; `emulator`: the AWS adapters
    /// against the emulator at --endpoint (table, queues and bucket are created there).
    #[arg(long, value_enum, default_value_t = RunBackend::Local)]
    backend: RunBackend,
    /// The emulator's URL (moto server, ministack), e.g. http://127.0.0.1:5000.
    #[arg(long, required_if_eq("backend", "emulator"))]
    endpoint: Option<String>,
    /// Prefix of the emulator resources: PREFIX-requests, PREFIX-rows, PREFIX-rows-dlq, PREFIX-data.
    #[arg(long, default_value = "pixpress")]
    emulator_prefix: String,
    /// Inject AWS failure modes into the local backends, e.g.
    /// `conflict=0.3,throttle=0.2,duplicate=0.2,crash=0.1,seed=7` (off unless given).
    #[arg(long, value_parser = parse_faults)]
    faults: Option<FaultSpec>,
}

/// Runs `pixpress run`.
pub(crate) async fn execute(args: RunArgs) -> anyhow::Result<ExitCode> {
    let RunArgs {
        csv,
        out,
        format,
        quality,
        max_dimension,
        no_score,
        webhook,
        webhook_secret,
        allow_loopback,
        json,
        backend,
        endpoint,
        emulator_prefix,
        faults,
    } = args;
    let mut config = config_from_env(allow_loopback)?;
    if let Some(secret) = webhook_secret {
        config.webhook_secret = Some(WebhookSecret::parse(&secret).map_err(anyhow::Error::msg)?);
    }
    // Deliveries are always signed: without a secret, this run makes one and prints it.
    let generated_secret = if webhook.is_some() && config.webhook_secret.is_none() {
        let secret = WebhookSecret::random().map_err(anyhow::Error::msg)?;
        config.webhook_secret = Some(secret.clone());
        Some(secret.to_whsec())
    } else {
        None
    };
    let options = RunOptions {
        upload: UploadQuery {
            webhook_url: webhook,
            format,
            quality,
            max_dimension,
            score: no_score.then_some(false),
        },
        progress: !json,
        summary_only: !json,
    };
    let outcome = match (backend, endpoint) {
        (RunBackend::Emulator, Some(_)) if faults.is_some() => {
            anyhow::bail!(
                "--faults applies to the local backends; an emulator has its own behaviour"
            )
        }
        (RunBackend::Emulator, Some(endpoint)) => {
            let names = EmulatorNames::with_prefix(&emulator_prefix);
            let pipeline = Pipeline::<Emulated>::emulated(
                &config,
                PipelineOptions::new(&out),
                &endpoint,
                &names,
            )
            .await?;
            run_file(&pipeline, &csv, &options).await?
        }
        (RunBackend::Emulator, None) => {
            anyhow::bail!("--backend emulator needs --endpoint")
        }
        (RunBackend::Local, _) => {
            let mut pipeline_options = PipelineOptions::new(&out);
            pipeline_options.faults = faults;
            let pipeline = LocalPipeline::new(&config, pipeline_options)?;
            let outcome = run_file(&pipeline, &csv, &options).await?;
            if let Some(injected) = pipeline.faults() {
                eprintln!("faults injected: {}", injected.counts());
            }
            outcome
        }
    };
    match outcome {
        RunOutcome::Finished(report) => {
            if json {
                let mut doc = report.status_document.clone();
                if let (Some(secret), Some(object)) = (&generated_secret, doc.as_object_mut()) {
                    object.insert("webhook_secret".into(), secret.clone().into());
                }
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                print!("{}", summary(&report));
                if let Some(secret) = &generated_secret {
                    println!(
                        "  webhook secret: {secret} (made for this run; verify deliveries with it)"
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        RunOutcome::Rejected { status, problem } => {
            if json {
                println!("{}", serde_json::to_string_pretty(&problem)?);
            }
            eprint!("{}", rejection_text(status, &problem));
            Ok(ExitCode::from(2))
        }
    }
}

/// Where `run` keeps state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RunBackend {
    /// Embedded repository and queue (rows and messages in a file under --out), --out as the bucket.
    Local,
    /// DynamoDB, SQS and S3 on an emulator, through the AWS adapters.
    Emulator,
}
