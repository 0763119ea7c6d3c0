//! `pixpress demo`.

use std::path::PathBuf;
use std::process::ExitCode;

use pixpress_cli::faults::FaultSpec;

use super::*;

#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Output directory.
    #[arg(long, default_value = "pixpress-demo")]
    out: PathBuf,
    /// Inject AWS failure modes, as `run --faults`.
    #[arg(long, value_parser = parse_faults)]
    faults: Option<FaultSpec>,
}

/// Runs `pixpress demo`.
pub(crate) async fn execute(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let DemoArgs { out, faults } = args;
    print!("{}", pixpress_cli::demo::run_demo(&out, faults).await?);
    Ok(ExitCode::SUCCESS)
}
