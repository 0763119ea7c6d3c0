//! AWS adapters: [`DynamoRequestRepository`], [`SqsRowQueue`], [`S3ObjectStore`] — what the
//! functions use. The emulator side (provisioning, the stream reader, receiving from queues)
//! lives in the local runner crate, which no Lambda links.
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

use crate::config::{ConfigError, vars};
use crate::ports::PortError;

/// The deployed backends of one function, named by `TABLE_NAME`, `ROWS_QUEUE_URL` and
/// `BUCKET_NAME` (set by `template.yaml`); `PUBLIC_BASE_URL` publishes images and
/// `S3_FORCE_PATH_STYLE=true` suits emulators.
#[derive(Debug, Clone)]
pub struct AwsBackends {
    /// The request table.
    pub repo: DynamoRequestRepository,
    /// The rows queue.
    pub queue: SqsRowQueue,
    /// The data bucket.
    pub store: S3ObjectStore,
}

fn required(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<String, ConfigError> {
    lookup(name)
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| ConfigError {
            name,
            message: "must be set (template.yaml sets it)".to_owned(),
        })
}

/// The request table named by `TABLE_NAME`. Each function composes only the clients it uses,
/// so its binary links no other service's SDK.
///
/// # Errors
/// When `TABLE_NAME` is unset or empty.
pub fn repository_from_lookup(
    sdk: &aws_config::SdkConfig,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<DynamoRequestRepository, ConfigError> {
    Ok(DynamoRequestRepository::new(
        sdk,
        required(&lookup, vars::TABLE_NAME)?,
    ))
}

/// The rows queue named by `ROWS_QUEUE_URL`.
///
/// # Errors
/// When `ROWS_QUEUE_URL` is unset or empty.
pub fn queue_from_lookup(
    sdk: &aws_config::SdkConfig,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<SqsRowQueue, ConfigError> {
    Ok(SqsRowQueue::new(
        sdk,
        required(&lookup, vars::ROWS_QUEUE_URL)?,
    ))
}

/// The data bucket named by `BUCKET_NAME`, published under `PUBLIC_BASE_URL`, path-style with
/// `S3_FORCE_PATH_STYLE=true`.
///
/// # Errors
/// When `BUCKET_NAME` is unset or empty.
pub fn store_from_lookup(
    sdk: &aws_config::SdkConfig,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<S3ObjectStore, ConfigError> {
    Ok(S3ObjectStore::new(
        sdk,
        required(&lookup, vars::BUCKET_NAME)?,
        lookup(vars::PUBLIC_BASE_URL).filter(|v| !v.trim().is_empty()),
        lookup(S3_FORCE_PATH_STYLE).is_some_and(|v| v.eq_ignore_ascii_case("true")),
    ))
}

/// [`repository_from_lookup`] on the process environment.
///
/// # Errors
/// As [`repository_from_lookup`].
pub fn repository_from_env(
    sdk: &aws_config::SdkConfig,
) -> Result<DynamoRequestRepository, ConfigError> {
    repository_from_lookup(sdk, |name| std::env::var(name).ok())
}

/// [`queue_from_lookup`] on the process environment.
///
/// # Errors
/// As [`queue_from_lookup`].
pub fn queue_from_env(sdk: &aws_config::SdkConfig) -> Result<SqsRowQueue, ConfigError> {
    queue_from_lookup(sdk, |name| std::env::var(name).ok())
}

/// [`store_from_lookup`] on the process environment.
///
/// # Errors
/// As [`store_from_lookup`].
pub fn store_from_env(sdk: &aws_config::SdkConfig) -> Result<S3ObjectStore, ConfigError> {
    store_from_lookup(sdk, |name| std::env::var(name).ok())
}

impl AwsBackends {
    /// Backends from variables read through `lookup`, on the shared SDK configuration.
    ///
    /// # Errors
    /// The first required variable that is unset or empty.
    pub fn from_lookup(
        sdk: &aws_config::SdkConfig,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            repo: repository_from_lookup(sdk, &lookup)?,
            queue: queue_from_lookup(sdk, &lookup)?,
            store: store_from_lookup(sdk, &lookup)?,
        })
    }

    /// Backends from the process environment.
    ///
    /// # Errors
    /// As [`AwsBackends::from_lookup`].
    pub fn from_env(sdk: &aws_config::SdkConfig) -> Result<Self, ConfigError> {
        Self::from_lookup(sdk, |name| std::env::var(name).ok())
    }
}

/// `true` makes the S3 client use path-style URLs (`http://host/bucket/key`), as emulators need.
pub const S3_FORCE_PATH_STYLE: &str = "S3_FORCE_PATH_STYLE";

/// The shared SDK configuration: region, credentials and endpoints from the environment.
pub async fn load_sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await
}

/// The [`PortError`] for an AWS error `code` (as the SDK reports it; query-compatible services
/// such as SQS may prefix it with `AWS.SimpleQueueService.`) and its message.
pub fn classify_code(context: &str, code: &str, message: &str) -> Option<PortError> {
    let code = code.rsplit('.').next().unwrap_or(code);
    let detail = || format!("{context}: {code}: {message}");
    match code {
        "ThrottlingException"
        | "ThrottlingError"
        | "Throttling"
        | "ProvisionedThroughputExceededException"
        | "ProvisionedThroughputExceeded"
        | "RequestLimitExceeded"
        | "SlowDown"
        | "RequestThrottled"
        | "RequestThrottledException"
        | "TooManyRequestsException"
        | "KMSThrottlingException" => Some(PortError::Throttled(detail())),
        "TransactionConflictException" | "TransactionConflict" => {
            Some(PortError::Conflict(detail()))
        }
        "AccessDenied" | "AccessDeniedException" | "AllAccessDisabled" => {
            Some(PortError::Denied(detail()))
        }
        "InvalidMessageContents"
        | "BatchRequestTooLong"
        | "MessageTooLong"
        | "KeyTooLongError"
        | "EntityTooLarge"
        | "ItemCollectionSizeLimitExceededException"
        | "ItemCollectionSizeLimitExceeded" => Some(PortError::LimitExceeded(detail())),
        "ValidationException" | "ValidationError"
            if message.to_ascii_lowercase().contains("size") =>
        {
            Some(PortError::LimitExceeded(detail()))
        }
        _ => None,
    }
}

/// Maps an SDK failure to a [`PortError`]: throttling is [`PortError::Throttled`], a
/// transaction conflict [`PortError::Conflict`], access denied [`PortError::Denied`], a
/// documented limit [`PortError::LimitExceeded`]; everything else [`PortError::Unexpected`]
/// with `context` and the service's code and message (never the raw `SdkError`).
pub fn sdk_error<E, R>(context: &str, error: &aws_sdk_dynamodb::error::SdkError<E, R>) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let code = error.code().unwrap_or("unknown");
    let message = error.message().unwrap_or_default();
    if let Some(classified) = classify_code(context, code, message) {
        return classified;
    }
    PortError::Unexpected(anyhow::anyhow!(
        "{context}: {code}: {message} ({})",
        crate::telemetry::error_chain(error)
    ))
}
