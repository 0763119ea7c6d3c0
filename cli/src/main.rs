//! The `pixpress` command.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use pixpress_app::auth::KeyStore as _;
use pixpress_app::config::Config;
use pixpress_aws::AnyKeyStore;
use pixpress_aws::{AwsBackends, load_sdk_config};
use pixpress_cli::client::{
    ApiClient, SubmitOptions, SubmitOutcome, UploadPath, exit_code, progress_line, status_text,
};
use pixpress_cli::emulator::EmulatorNames;
use pixpress_cli::faults::FaultSpec;
use pixpress_cli::invoke::{invoke, request_text, seed};
use pixpress_cli::pipeline::{Emulated, LocalPipeline, Pipeline, PipelineOptions};
use pixpress_cli::run::{RunOptions, RunOutcome, rejection_text, run_file, summary};
use pixpress_domain::webhook::WebhookSecret;
use pixpress_embedded::FileKeyStore;
use pixpress_fetch::NetworkPolicy;

/// pixpress: bulk image compression from a product CSV.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one CSV through the whole pipeline in this process.
    Run {
        /// The input CSV (`S. No.,Product Name,Input Image Urls`).
        csv: PathBuf,
        /// Output directory: output.csv, images/, results/.
        #[arg(long, default_value = "pixpress-out")]
        out: PathBuf,
        /// JPEG quality, 1–100 (default: JPEG_QUALITY or 50).
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=100))]
        quality: Option<u8>,
        /// Scale images down so the longest side is at most this many pixels.
        #[arg(long)]
        max_dimension: Option<u32>,
        /// POST a signed completion event to this URL.
        #[arg(long)]
        webhook: Option<String>,
        /// Signing secret for the webhook (`whsec_…`; default: WEBHOOK_SECRET).
        #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
        webhook_secret: Option<String>,
        /// Let downloads and webhooks reach 127.0.0.0/8 and ::1, on any port (local servers only).
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
    },
    /// Compress bundled photos served on loopback, with a verified webhook.
    Demo {
        /// Output directory.
        #[arg(long, default_value = "pixpress-demo")]
        out: PathBuf,
        /// Inject AWS failure modes, as `run --faults`.
        #[arg(long, value_parser = parse_faults)]
        faults: Option<FaultSpec>,
    },
    /// Run one Lambda handler on a sample event (e.g. events/api/post-upload-csv.json).
    Invoke {
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
    },
    /// Serve the HTTP API locally with the pipeline running in the background.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:3000")]
        addr: String,
        /// Directory used as the bucket.
        #[arg(long, default_value = "pixpress-data")]
        data_dir: PathBuf,
        /// Let downloads and webhooks reach 127.0.0.0/8 and ::1, on any port.
        #[arg(long)]
        allow_loopback: bool,
        /// Serve without API keys, every request as the default tenant. Only on a loopback
        /// address; by default every route needs a key from `pixpress keys create`.
        #[arg(long)]
        no_auth: bool,
    },
    /// Make, list and revoke API keys (one tenant per key; a tenant's first key makes its
    /// webhook signing secret).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Send a CSV to a deployed API (or `pixpress serve`). Exit codes: 0 accepted or
    /// completed, 3 completed with errors, 4 failed or cancelled, 2 rejected, 1 usage or
    /// network error.
    Submit {
        /// The input CSV (`S. No.,Product Name,Input Image Urls`). Over 5 MiB it goes through a
        /// presigned upload.
        csv: PathBuf,
        #[command(flatten)]
        api: ApiArgs,
        /// POST a signed completion event to this URL.
        #[arg(long)]
        webhook: Option<String>,
        /// JPEG quality, 1–100 (default: the API's, 50).
        #[arg(long)]
        quality: Option<u8>,
        /// Scale images down so the longest side is at most this many pixels.
        #[arg(long)]
        max_dimension: Option<u32>,
        /// Wait until the request is done, showing progress, then download output.csv.
        #[arg(long)]
        wait: bool,
        /// Where `--wait` writes output.csv.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Print JSON (the acceptance, or with --wait the whole final status document).
        #[arg(long)]
        json: bool,
    },
    /// Show a request's status. Exit codes: 0 completed or still running, 3 completed with
    /// errors, 4 failed or cancelled, 1 unknown request or network error.
    Status {
        /// The request id.
        request_id: String,
        #[command(flatten)]
        api: ApiArgs,
        /// Print the whole status document as JSON (every page of products).
        #[arg(long)]
        json: bool,
    },
    /// Cancel a running request: rows not processed yet end as `cancelled`, the request ends
    /// `CANCELLED` with its output CSV and webhook. Exit 1 when it has finished or is unknown.
    Cancel {
        /// The request id.
        request_id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Retry the failed (and cancelled) images of a finished request: a new request keeps the
    /// images already stored and runs the others, with its own output CSV and webhook. Prints
    /// the new request's id; exit codes as for `submit` (1 when the request is running, has
    /// nothing to retry or is unknown).
    Retry {
        /// The request id.
        request_id: String,
        #[command(flatten)]
        api: ApiArgs,
        /// Wait until the retry is done, showing progress, then download its output.csv.
        #[arg(long)]
        wait: bool,
        /// Where `--wait` writes output.csv.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Print JSON (the acceptance, or with --wait the whole final status document).
        #[arg(long)]
        json: bool,
    },
    /// Download a request's output CSV. Exit 1 when it is not written yet.
    Download {
        /// The request id.
        request_id: String,
        #[command(flatten)]
        api: ApiArgs,
        /// Directory to write output.csv into.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Webhook tools for receivers.
    Webhook {
        #[command(subcommand)]
        command: WebhookCommand,
    },
}

/// Which API the client commands talk to.
#[derive(Debug, clap::Args)]
struct ApiArgs {
    /// Base URL of the API (the stack's `ApiUrl` output, or `pixpress serve`'s address).
    #[arg(long = "api", env = "PIXPRESS_API_URL")]
    url: String,
    /// API key (`pk_…`, from `pixpress keys create`).
    #[arg(long, env = "PIXPRESS_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

impl ApiArgs {
    fn client(&self) -> anyhow::Result<ApiClient> {
        ApiClient::new(&self.url, self.api_key.clone())
    }
}

/// Where `keys` keeps keys.
#[derive(Debug, Clone, clap::Args)]
struct KeyStoreArgs {
    /// `local`: `keys.json` in --data-dir (what `pixpress serve` reads); `aws`: the requests
    /// table named by TABLE_NAME, with the SDK's usual credentials and region.
    #[arg(long, value_enum, default_value_t = Backend::Local)]
    backend: Backend,
    /// The data directory of `pixpress serve`.
    #[arg(long, default_value = "pixpress-data")]
    data_dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Make a key for a tenant and print it (shown only this once).
    Create {
        /// Tenant name: lower-case letters, digits, `-`, `_` (at most 64).
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        store: KeyStoreArgs,
    },
    /// List keys (ids, tenants, dates; never the keys).
    List {
        #[command(flatten)]
        store: KeyStoreArgs,
    },
    /// Give a tenant a new webhook signing secret; the old one keeps signing beside it for
    /// 24 hours, so receivers can switch without missing a delivery.
    RotateWebhookSecret {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        store: KeyStoreArgs,
    },
    /// Revoke a key by its id; it stops working at once.
    Revoke {
        /// The key id (the 16 hex characters after `pk_`).
        key_id: String,
        #[command(flatten)]
        store: KeyStoreArgs,
    },
}

#[derive(Debug, Subcommand)]
enum WebhookCommand {
    /// Verify a delivery (Standard Webhooks v1) with the body on stdin: exit 0 when valid,
    /// 1 with the reason when not.
    Verify {
        /// The endpoint's signing secret (`whsec_…`).
        #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
        secret: String,
        /// The `webhook-id` header.
        #[arg(long)]
        id: String,
        /// The `webhook-timestamp` header (Unix seconds).
        #[arg(long)]
        timestamp: String,
        /// The `webhook-signature` header (space-separated `v1,<base64>` signatures).
        #[arg(long)]
        signature: String,
    },
}

fn parse_faults(text: &str) -> Result<FaultSpec, String> {
    text.parse()
}

/// Where `run` keeps state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RunBackend {
    /// In-memory repository and queue, --out as the bucket.
    Local,
    /// DynamoDB, SQS and S3 on an emulator, through the AWS adapters.
    Emulator,
}

/// Where `invoke` keeps state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Backend {
    /// In-memory repository and queue, a directory as the bucket.
    Local,
    /// DynamoDB, SQS and S3 (or an emulator through AWS_ENDPOINT_URL).
    Aws,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal, and never with NO_COLOR (no-color.org).
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .init();
    match execute(Cli::parse()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run {
            csv,
            out,
            quality,
            max_dimension,
            webhook,
            webhook_secret,
            allow_loopback,
            json,
            backend,
            endpoint,
            emulator_prefix,
            faults,
        } => {
            let mut config = Config::from_env()?;
            if allow_loopback {
                config.fetch.policy = NetworkPolicy::local();
            }
            if let Some(secret) = webhook_secret {
                config.webhook_secret =
                    Some(WebhookSecret::parse(&secret).map_err(anyhow::Error::msg)?);
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
                webhook_url: webhook,
                quality,
                max_dimension,
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
                        if let (Some(secret), Some(object)) =
                            (&generated_secret, doc.as_object_mut())
                        {
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
        Command::Demo { out, faults } => {
            print!("{}", pixpress_cli::demo::run_demo(&out, faults).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Invoke {
            function,
            event,
            backend,
            data_dir,
        } => {
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
        Command::Webhook {
            command:
                WebhookCommand::Verify {
                    secret,
                    id,
                    timestamp,
                    signature,
                },
        } => {
            let secret = WebhookSecret::parse(&secret).map_err(anyhow::Error::msg)?;
            let mut body = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut body)
                .context("reading the body from stdin")?;
            match secret.verify(&id, &timestamp, &signature, &body, chrono::Utc::now()) {
                Ok(()) => {
                    println!("valid");
                    Ok(ExitCode::SUCCESS)
                }
                Err(reason) => {
                    eprintln!("invalid: {reason}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Keys { command } => keys_command(command).await,
        Command::Submit {
            csv,
            api,
            webhook,
            quality,
            max_dimension,
            wait,
            out,
            json,
        } => {
            let options = SubmitOptions {
                webhook_url: webhook,
                quality,
                max_dimension,
            };
            submit_command(
                &api.client()?,
                &csv,
                &options,
                wait.then_some(out.as_path()),
                json,
            )
            .await
        }
        Command::Status {
            request_id,
            api,
            json,
        } => {
            let document = api.client()?.status_document(&request_id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&document)?);
            } else {
                print!("{}", status_text(&document));
            }
            Ok(ExitCode::from(exit_code(
                document["status"].as_str().unwrap_or_default(),
            )))
        }
        Command::Cancel { request_id, api } => {
            let answer = api.client()?.cancel(&request_id).await?;
            eprintln!(
                "cancellation of request {request_id} recorded at {}; it ends CANCELLED once the rows in flight are recorded",
                answer["cancel_requested_at"].as_str().unwrap_or("?")
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Retry {
            request_id,
            api,
            wait,
            out,
            json,
        } => {
            let client = api.client()?;
            let answer = client.retry(&request_id).await?;
            let retry_id = answer["request_id"].as_str().unwrap_or_default().to_owned();
            if !wait {
                if json {
                    println!("{}", serde_json::to_string_pretty(&answer)?);
                } else {
                    println!("{retry_id}");
                }
            }
            eprintln!(
                "request {request_id} is retried as request {retry_id}{}",
                match answer["images_to_retry"].as_u64() {
                    Some(n) => format!(
                        ": {n} of {} images run again",
                        answer["images"].as_u64().unwrap_or_default()
                    ),
                    None => " (asked before)".to_owned(),
                }
            );
            if wait {
                wait_and_download(&client, &retry_id, &out, json).await
            } else {
                Ok(ExitCode::SUCCESS)
            }
        }
        Command::Download {
            request_id,
            api,
            out,
        } => {
            let path = out.join("output.csv");
            let bytes = api.client()?.download(&request_id, &path).await?;
            eprintln!("wrote {} ({bytes} bytes)", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            addr,
            data_dir,
            allow_loopback,
            no_auth,
        } => {
            let mut config = Config::from_env()?;
            if allow_loopback {
                config.fetch.policy = NetworkPolicy::local();
            }
            let listener = tokio::net::TcpListener::bind(&addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            let local = listener.local_addr()?;
            let keys = if no_auth {
                if !local.ip().is_loopback() {
                    anyhow::bail!(
                        "--no-auth is allowed only on a loopback address (127.0.0.1 or ::1), not {local}"
                    );
                }
                eprintln!(
                    "authentication is off (--no-auth): anyone who can reach {local} can submit work"
                );
                None
            } else {
                let store = FileKeyStore::in_dir(&data_dir);
                if store.list_keys().await?.is_empty() {
                    eprintln!(
                        "no API keys in {}: make one with `pixpress keys create --tenant NAME --data-dir {}`",
                        store.path().display(),
                        data_dir.display()
                    );
                }
                Some(AnyKeyStore::File(store))
            };
            let mut options = PipelineOptions::new(&data_dir);
            options.keys = keys;
            options.public_base_url = Some(format!("http://{local}/files"));
            if config.public_api_url.is_none() {
                config.public_api_url = Some(format!("http://{local}"));
            }
            let pipeline = LocalPipeline::new(&config, options)?;
            pixpress_cli::serve::serve(pipeline, listener).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `pixpress submit`: send, then with `wait_into` poll with progress and download the CSV.
async fn submit_command(
    client: &ApiClient,
    csv: &std::path::Path,
    options: &SubmitOptions,
    wait_into: Option<&std::path::Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let submitted = match client.submit(csv, options).await? {
        SubmitOutcome::Rejected { status, problem } => {
            if json {
                println!("{}", serde_json::to_string_pretty(&problem)?);
            }
            eprint!("{}", rejection_text(status, &problem));
            return Ok(ExitCode::from(2));
        }
        SubmitOutcome::Accepted(submitted) => submitted,
    };
    let id = &submitted.request_id;
    let Some(out) = wait_into else {
        if json {
            println!("{}", serde_json::to_string_pretty(&submitted.body)?);
        } else {
            println!("{id}");
            eprintln!(
                "accepted as request {id}{}; follow it with `pixpress status {id}`",
                match submitted.path {
                    UploadPath::Direct => String::new(),
                    UploadPath::Presigned => " (uploaded to a presigned URL)".to_owned(),
                }
            );
        }
        return Ok(ExitCode::SUCCESS);
    };
    eprintln!("accepted as request {id}; waiting for it to finish");
    wait_and_download(client, id, out, json).await
}

/// Waits for request `id` with a progress view, downloads its output CSV into `out`, prints its
/// status (JSON with `json`) and returns the exit code of its final status.
async fn wait_and_download(
    client: &ApiClient,
    id: &str,
    out: &std::path::Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut progress = ProgressView::new();
    let summary = client.wait(id, |document| progress.show(document)).await?;
    progress.finish();
    let status = summary["status"].as_str().unwrap_or_default().to_owned();
    if summary.get("output_csv_url").is_some() {
        let path = out.join("output.csv");
        client.download(id, &path).await?;
        eprintln!("output CSV: {}", path.display());
    }
    let document = client.status_document(id).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&document)?);
    } else {
        print!("{}", status_text(&document));
    }
    Ok(ExitCode::from(exit_code(&status)))
}

/// Progress of `submit --wait`: a bar (rows, images, bytes saved, rate, ETA) on a terminal,
/// plain lines on stderr when not on one.
struct ProgressView {
    bar: Option<indicatif::ProgressBar>,
}

impl ProgressView {
    fn new() -> Self {
        use std::io::IsTerminal as _;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} images · {per_sec} · ETA {eta} · {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            bar
        });
        Self { bar }
    }

    fn show(&mut self, document: &serde_json::Value) {
        let p = pixpress_cli::client::Progress::of(document);
        match &self.bar {
            Some(bar) => {
                bar.set_length(p.images_total);
                bar.set_position(p.images_done());
                bar.set_message(format!(
                    "rows {}/{} · {} failed · {} saved",
                    p.rows_done,
                    p.rows_total,
                    p.images_failed,
                    pixpress_cli::client::human_bytes(p.bytes_saved())
                ));
            }
            None => eprintln!("{}", progress_line(document)),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

async fn key_store(args: &KeyStoreArgs) -> anyhow::Result<AnyKeyStore> {
    Ok(match args.backend {
        Backend::Local => AnyKeyStore::File(FileKeyStore::in_dir(&args.data_dir)),
        Backend::Aws => {
            let sdk = load_sdk_config().await;
            AnyKeyStore::Dynamo(pixpress_aws::key_store_from_env(&sdk)?)
        }
    })
}

/// `pixpress keys …`.
async fn keys_command(command: KeysCommand) -> anyhow::Result<ExitCode> {
    let now = chrono::Utc::now();
    match command {
        KeysCommand::Create {
            tenant,
            store: args,
        } => {
            if !pixpress_app::auth::is_valid_tenant(&tenant) {
                anyhow::bail!(
                    "tenant `{tenant}` must be 1–64 lower-case letters, digits, `-` or `_`, starting with a letter or digit"
                );
            }
            let store = key_store(&args).await?;
            let (issued, tenant) = pixpress_app::auth::create_key(&store, &tenant, now).await?;
            if args.json {
                let doc = serde_json::json!({
                    "tenant": tenant.tenant,
                    "key_id": issued.record.key_id,
                    "api_key": issued.api_key,
                    "webhook_secret": tenant.webhook_secret,
                    "created_at": issued.record.created_at,
                });
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                println!("tenant:         {}", tenant.tenant);
                println!("key id:         {}", issued.record.key_id);
                println!("API key:        {}", issued.api_key);
                println!("webhook secret: {}", tenant.webhook_secret);
                println!();
                println!("The API key is shown only now; pixpress keeps only its hash.");
                println!(
                    "Send it as `Authorization: Bearer <key>`; verify webhooks with the secret."
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::List { store: args } => {
            let keys = key_store(&args).await?.list_keys().await?;
            if args.json {
                let doc: Vec<_> = keys
                    .iter()
                    .map(|k| {
                        serde_json::json!({
                            "key_id": k.key_id,
                            "tenant": k.tenant,
                            "created_at": k.created_at,
                            "revoked_at": k.revoked_at,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                println!(
                    "{:<18} {:<24} {:<22} revoked",
                    "key id", "tenant", "created"
                );
                for k in &keys {
                    println!(
                        "{:<18} {:<24} {:<22} {}",
                        k.key_id,
                        k.tenant,
                        k.created_at.format("%Y-%m-%d %H:%M:%SZ"),
                        k.revoked_at.map_or_else(
                            || "-".to_owned(),
                            |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string()
                        )
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::RotateWebhookSecret {
            tenant,
            store: args,
        } => {
            let store = key_store(&args).await?;
            let rotated = pixpress_app::auth::rotate_webhook_secret(&store, &tenant, now).await?;
            let until = rotated.previous_valid_until.unwrap_or(now);
            if args.json {
                let doc = serde_json::json!({
                    "tenant": rotated.tenant,
                    "webhook_secret": rotated.webhook_secret,
                    "previous_valid_until": until,
                });
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                println!("tenant:         {}", rotated.tenant);
                println!("webhook secret: {}", rotated.webhook_secret);
                println!(
                    "The previous secret signs beside it until {}.",
                    until.format("%Y-%m-%d %H:%M:%SZ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Revoke {
            key_id,
            store: args,
        } => {
            if key_store(&args).await?.revoke_key(&key_id, now).await? {
                if args.json {
                    println!(
                        "{}",
                        serde_json::json!({ "key_id": key_id, "revoked": true })
                    );
                } else {
                    println!("revoked {key_id}");
                }
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("error: no key with id {key_id}");
                Ok(ExitCode::FAILURE)
            }
        }
    }
}
