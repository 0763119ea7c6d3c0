//! `pixpress status`.

use std::process::ExitCode;

use pixpress_cli::client::{exit_code, status_text};

use super::*;

#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    /// The request id.
    request_id: String,
    #[command(flatten)]
    api: ApiArgs,
    /// Print the whole status document as JSON (every page of products).
    #[arg(long)]
    json: bool,
}

/// Runs `pixpress status`.
pub(crate) async fn execute(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let StatusArgs {
        request_id,
        api,
        json,
    } = args;
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
