//! `pixpress demo`.

use std::path::PathBuf;
use std::process::ExitCode;

use pixpress_cli::faults::FaultSpec;
use pixpress_domain::model::{OutputFormat, Quality};

use super::*;

#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Output directory.
    #[arg(long, default_value = "pixpress-demo")]
    out: PathBuf,
    /// Output format of the demo's images: jpeg, webp or avif.
    #[arg(long, default_value = "jpeg")]
    format: OutputFormat,
    /// Encoder quality or `auto:<score>`, as `run --quality` (default: the format's).
    #[arg(long)]
    quality: Option<Quality>,
    /// Inject AWS failure modes, as `run --faults`.
    #[arg(long, value_parser = parse_faults)]
    faults: Option<FaultSpec>,
}

/// Runs `pixpress demo`.
pub(crate) async fn execute(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let DemoArgs {
        out,
        format,
        quality,
        faults,
    } = args;
    print!(
        "{}",
        pixpress_cli::demo::run_demo(&out, format, quality, faults).await?
    );
    Ok(ExitCode::SUCCESS)
}
