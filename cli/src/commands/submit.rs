//! `pixpress submit`.

use std::path::PathBuf;
use std::process::ExitCode;

use pixpress_cli::client::{ApiClient, SubmitOptions, SubmitOutcome, UploadPath};
use pixpress_cli::run::rejection_text;

use super::wait::{WaitArgs, wait_and_download};
use pixpress_domain::model::{OutputFormat, Quality};

use super::*;

#[derive(Debug, clap::Args)]
pub(crate) struct SubmitArgs {
    /// The input CSV (`S. No.,Product Name,Input Image Urls`). Over 4,603,904 bytes (the direct
    /// limit) it goes through a presigned upload.
    csv: PathBuf,
    #[command(flatten)]
    api: ApiArgs,
    /// POST a signed completion event to this URL.
    #[arg(long)]
    webhook: Option<String>,
    /// Output format: jpeg, webp or avif (default: the API's, jpeg).
    #[arg(long)]
    format: Option<OutputFormat>,
    /// Encoder quality 1–100 on the format's scale, or `auto:<score>` (10–95, SSIMULACRA2)
    /// (default: the format's).
    #[arg(long)]
    quality: Option<Quality>,
    /// Scale images down so the longest side is at most this many pixels.
    #[arg(long)]
    max_dimension: Option<u32>,
    /// Leave images unscored at a fixed quality.
    #[arg(long)]
    no_score: bool,
    #[command(flatten)]
    waiting: WaitArgs,
}

/// Runs `pixpress submit`.
pub(crate) async fn execute(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let SubmitArgs {
        csv,
        api,
        webhook,
        format,
        quality,
        max_dimension,
        no_score,
        waiting: WaitArgs { wait, out, json },
    } = args;
    let options = SubmitOptions {
        webhook_url: webhook,
        format,
        quality,
        max_dimension,
        score: no_score.then_some(false),
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
