//! `pixpress serve`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use pixpress_app::auth::KeyStore as _;
use pixpress_cli::pipeline::LocalPipeline;
use pixpress_embedded::FileKeyStore;
use pixpress_local::AnyKeyStore;

use super::config_from_env;

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    addr: String,
    /// Directory used as the bucket.
    #[arg(long, default_value = "pixpress-data")]
    data_dir: PathBuf,
    /// Let downloads and webhooks reach 127.0.0.0/8, ::1 and localhost on any port (public hosts
    /// stay on ports 80 and 443).
    #[arg(long)]
    allow_loopback: bool,
    /// Serve without API keys, every request as the default tenant. Only on a loopback
    /// address; by default every route needs a key from `pixpress keys create`.
    #[arg(long)]
    no_auth: bool,
}

/// Runs `pixpress serve`.
pub(crate) async fn execute(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let ServeArgs {
        addr,
        data_dir,
        allow_loopback,
        no_auth,
    } = args;
    let mut config = config_from_env(allow_loopback)?;
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
    let mut options = pixpress_cli::serve::options(&data_dir, local);
    options.keys = keys;
    if config.public_api_url.is_none() {
        config.public_api_url = Some(format!("http://{local}"));
    }
    let pipeline = LocalPipeline::new(&config, options)?;
    pixpress_cli::serve::serve(pipeline, listener).await?;
    Ok(ExitCode::SUCCESS)
}
