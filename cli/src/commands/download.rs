//! `pixpress download`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::*;

#[derive(Debug, clap::Args)]
pub(crate) struct DownloadArgs {
    /// The request id.
    request_id: String,
    #[command(flatten)]
    api: ApiArgs,
    /// Directory to write output.csv into.
    #[arg(long, default_value = ".")]
    out: PathBuf,
}

/// Runs `pixpress download`.
pub(crate) async fn execute(args: DownloadArgs) -> anyhow::Result<ExitCode> {
    let path = args.out.join("output.csv");
    let bytes = args.api.client()?.download(&args.request_id, &path).await?;
    eprintln!("wrote {} ({bytes} bytes)", path.display());
    Ok(ExitCode::SUCCESS)
}
