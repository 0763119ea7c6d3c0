//! One module per command; [`execute`] dispatches.

mod cancel;
mod demo;
mod download;
mod invoke;
mod keys;
mod retry;
mod run;
mod serve;
mod status;
mod submit;
mod sweep;
mod wait;
mod webhook;

use std::process::ExitCode;

use pixpress_app::config::Config;
use pixpress_cli::client::ApiClient;
use pixpress_cli::faults::FaultSpec;

/// The commands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Run one CSV through the whole pipeline in this process.
    Run(run::RunArgs),
    /// Compress bundled photos served on loopback, with a verified webhook.
    Demo(demo::DemoArgs),
    /// Run one Lambda handler on a sample event (e.g. events/api/post-upload-csv.json).
    Invoke(invoke::InvokeArgs),
    /// Serve the HTTP API locally with the pipeline running in the background.
    Serve(serve::ServeArgs),
    /// Make, list and revoke API keys (one tenant per key; a tenant's first key makes its
    /// webhook signing secret).
    Keys(keys::KeysArgs),
    /// Send a CSV to a deployed API (or `pixpress serve`). Exit codes: 0 accepted or
    /// completed, 3 completed with errors, 4 failed or cancelled, 2 rejected, 1 usage or
    /// network error.
    Submit(submit::SubmitArgs),
    /// Show a request's status. Exit codes: 0 completed or still running, 3 completed with
    /// errors, 4 failed or cancelled, 1 unknown request or network error.
    Status(status::StatusArgs),
    /// Cancel a running request: rows not processed yet end as `cancelled`, the request ends
    /// `CANCELLED` with its output CSV and webhook. Exit 1 when it has finished or is unknown.
    Cancel(cancel::CancelArgs),
    /// Retry the failed (and cancelled) images of a finished request: a new request keeps the
    /// images already stored and runs the others, with its own output CSV and webhook. Prints
    /// the new request's id; exit codes as for `submit` (1 when the request is running, has
    /// nothing to retry or is unknown).
    Retry(retry::RetryArgs),
    /// Download a request's output CSV. Exit 1 when it is not written yet.
    Download(download::DownloadArgs),
    /// Webhook tools for receivers.
    Webhook(webhook::WebhookArgs),
    /// Run the sweeper once, now, over a deployment (or an emulator): requests idle past a
    /// bound are repaired (rows enqueued again, completion rechecked, the notifier's work
    /// done); prints what it did.
    Sweep(sweep::SweepArgs),
}

/// Runs `command`.
pub(crate) async fn execute(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(args) => run::execute(args).await,
        Command::Demo(args) => demo::execute(args).await,
        Command::Invoke(args) => invoke::execute(args).await,
        Command::Serve(args) => serve::execute(args).await,
        Command::Keys(args) => keys::execute(args).await,
        Command::Submit(args) => submit::execute(args).await,
        Command::Status(args) => status::execute(args).await,
        Command::Cancel(args) => cancel::execute(args).await,
        Command::Retry(args) => retry::execute(args).await,
        Command::Download(args) => download::execute(args).await,
        Command::Webhook(args) => webhook::execute(args).await,
        Command::Sweep(args) => sweep::execute(args).await,
    }
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

/// The configuration from the environment; with `allow_loopback`, downloads and webhooks may
/// reach loopback addresses on any port (`allow_loopback_any_port`).
///
/// # Errors
/// When a variable holds a value [`Config::from_env`] refuses.
fn config_from_env(allow_loopback: bool) -> anyhow::Result<Config> {
    let mut config = Config::from_env()?;
    if allow_loopback {
        // Loopback on any port; `ALLOW_ANY_PORT` from the environment still stands.
        config.fetch.policy.allow_loopback = true;
        config.fetch.policy.allow_loopback_any_port = true;
    }
    Ok(config)
}

fn parse_faults(text: &str) -> Result<FaultSpec, String> {
    text.parse()
}

/// Where `invoke` keeps state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Backend {
    /// Embedded repository and queue (rows and messages in a file), a directory as the bucket.
    Local,
    /// DynamoDB, SQS and S3 (or an emulator through AWS_ENDPOINT_URL).
    Aws,
}
