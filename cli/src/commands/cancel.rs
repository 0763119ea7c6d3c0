//! `pixpress cancel`.

use std::process::ExitCode;

use super::*;

#[derive(Debug, clap::Args)]
pub(crate) struct CancelArgs {
    /// The request id.
    request_id: String,
    #[command(flatten)]
    api: ApiArgs,
}

/// Runs `pixpress cancel`.
pub(crate) async fn execute(args: CancelArgs) -> anyhow::Result<ExitCode> {
    let CancelArgs { request_id, api } = args;
    let answer = api.client()?.cancel(&request_id).await?;
    eprintln!(
        "cancellation of request {request_id} recorded at {}; it ends CANCELLED once the rows in flight are recorded",
        answer["cancel_requested_at"].as_str().unwrap_or("?")
    );
    Ok(ExitCode::SUCCESS)
}
