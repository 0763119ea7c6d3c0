//! `pixpress retry`.

use std::process::ExitCode;

use super::wait::{WaitArgs, wait_and_download};
use super::*;

#[derive(Debug, clap::Args)]
pub(crate) struct RetryArgs {
    /// The request id.
    request_id: String,
    #[command(flatten)]
    api: ApiArgs,
    #[command(flatten)]
    waiting: WaitArgs,
}

/// Runs `pixpress retry`.
pub(crate) async fn execute(args: RetryArgs) -> anyhow::Result<ExitCode> {
    let RetryArgs {
        request_id,
        api,
        waiting: WaitArgs { wait, out, json },
    } = args;
    let client = api.client()?;
    let answer = client.retry(&request_id).await?;
    let retry_id = answer["request_id"].as_str().unwrap_or_default().to_owned();
    if !wait {
        if json {
            println!("{}", serde_json::to_string_pretty(&answer)?);
        } else {
            println!("{retry_id}");
        }
    }
    eprintln!(
        "request {request_id} is retried as request {retry_id}{}",
        match answer["images_to_retry"].as_u64() {
            Some(n) => format!(
                ": {n} of {} images run again",
                answer["images"].as_u64().unwrap_or_default()
            ),
            None => " (asked before)".to_owned(),
        }
    );
    if wait {
        wait_and_download(&client, &retry_id, &out, json).await
    } else {
        Ok(ExitCode::SUCCESS)
    }
}
