//! `pixpress status`.

use std::process::ExitCode;

use pixpress_cli::client::exit_code;

use super::wait::print_status;
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
    let document = args.api.client()?.status_document(&args.request_id).await?;
    print_status(&document, args.json)?;
    Ok(ExitCode::from(exit_code(
        document["status"].as_str().unwrap_or_default(),
    )))
}
