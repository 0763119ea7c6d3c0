//! AWS adapters: [`DynamoRequestRepository`], [`SqsRowQueue`], [`S3ObjectStore`].
//!
//! Load the SDK configuration once per process with [`load_sdk_config`]; endpoints come from
//! the SDK's standard `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` variables (emulators),
//! and S3 path-style addressing from `S3_FORCE_PATH_STYLE=true`.

mod dynamo;
mod s3;
mod sqs;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;

pub use dynamo::DynamoRequestRepository;
pub use s3::S3ObjectStore;
pub use sqs::SqsRowQueue;

use crate::ports::PortError;

/// `true` makes the S3 client use path-style URLs (`http://host/bucket/key`), as emulators need.
pub const S3_FORCE_PATH_STYLE: &str = "S3_FORCE_PATH_STYLE";

/// The shared SDK configuration: region, credentials and endpoints from the environment.
pub async fn load_sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await
}

/// Maps an SDK failure to a [`PortError`]: throttling is [`PortError::Throttled`], everything
/// else [`PortError::Unexpected`] with `context` and the service's code and message (never the
/// raw `SdkError`).
pub(crate) fn sdk_error<E, R>(
    context: &str,
    error: &aws_sdk_dynamodb::error::SdkError<E, R>,
) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let code = error.code().unwrap_or("unknown");
    let message = error.message().unwrap_or_default();
    if matches!(
        code,
        "ThrottlingException"
            | "ProvisionedThroughputExceededException"
            | "RequestLimitExceeded"
            | "SlowDown"
            | "RequestThrottled"
    ) {
        return PortError::Throttled(format!("{context}: {code}"));
    }
    PortError::Unexpected(anyhow::anyhow!(
        "{context}: {code}: {message} ({})",
        error_chain(error)
    ))
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
