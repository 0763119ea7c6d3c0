//! `pixpress webhook`.

use std::process::ExitCode;

use anyhow::Context as _;
use pixpress_domain::webhook::WebhookSecret;

use clap::Subcommand;

#[derive(Debug, clap::Args)]
pub(crate) struct WebhookArgs {
    #[command(subcommand)]
    command: WebhookCommand,
}

/// Runs `pixpress webhook`.
pub(crate) async fn execute(args: WebhookArgs) -> anyhow::Result<ExitCode> {
    let WebhookCommand::Verify {
        secret,
        id,
        timestamp,
        signature,
    } = args.command;
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
