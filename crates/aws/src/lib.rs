//! AWS adapters: [`DynamoRequestRepository`], [`SqsRowQueue`], [`S3ObjectStore`] — what the
//! functions use. The emulator side (provisioning, the stream reader, receiving from queues)
//! lives in the local runner crate, which no Lambda links.
//!
//! Load the SDK configuration once per process with [`load_sdk_config`]; endpoints come from
//! the SDK's standard `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` variables (emulators),
//! and S3 path-style addressing from `S3_FORCE_PATH_STYLE=true`.

mod api_keys;
mod dynamo;
mod handles;
mod kms;
pub mod lambda;
mod origin_slots;
mod s3;
mod sqs;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;

pub use api_keys::DynamoKeyStore;
pub use dynamo::DynamoRequestRepository;
pub use handles::{DynamoTable, Handle, SdkClient, SqsQueue};
pub use kms::{Sealed, SecretSealer};
pub use origin_slots::DynamoOriginSlots;
pub use s3::S3ObjectStore;
pub use sqs::SqsRowQueue;

use pixpress_app::config::{ConfigError, vars};
use pixpress_app::ports::PortError;

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

/// The request table named by `TABLE_NAME`, with the retention of `RETENTION_DAYS` (unset or
/// 0: items are kept). Each function composes only the clients it uses, so its binary links no
/// other service's SDK.
///
/// # Errors
/// When `TABLE_NAME` is unset or empty, or `RETENTION_DAYS` is not a whole number of days up to
/// 36,500.
pub fn repository_from_lookup(
    sdk: &aws_config::SdkConfig,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<DynamoRequestRepository, ConfigError> {
    let retention = match lookup(vars::RETENTION_DAYS).filter(|v| !v.trim().is_empty()) {
        None => None,
        Some(days) => match days.trim().parse::<u32>() {
            Ok(0) => None,
            Ok(days) if days <= 36_500 => Some(chrono::Duration::days(i64::from(days))),
            _ => {
                return Err(ConfigError {
                    name: vars::RETENTION_DAYS,
                    message: format!("`{days}` is not a number of days from 0 to 36500"),
                });
            }
        },
    };
    Ok(
        DynamoRequestRepository::from(DynamoTable::new(sdk, required(&lookup, vars::TABLE_NAME)?))
            .with_retention(retention),
    )
}

/// API keys and tenants in the request table named by `TABLE_NAME`; tenants' webhook secrets
/// sealed with data keys of the KMS key `WEBHOOK_SECRETS_KEY_ID` when it is set.
///
/// # Errors
/// When `TABLE_NAME` is unset or empty.
pub fn key_store_from_env(sdk: &aws_config::SdkConfig) -> Result<DynamoKeyStore, ConfigError> {
    let lookup = |name: &str| std::env::var(name).ok();
    let sealer = lookup(vars::WEBHOOK_SECRETS_KEY_ID)
        .filter(|v| !v.trim().is_empty())
        .map(|key| SecretSealer::new(aws_sdk_kms::Client::new(sdk), key.trim()));
    Ok(
        DynamoKeyStore::from(DynamoTable::new(sdk, required(&lookup, vars::TABLE_NAME)?))
            .with_sealer(sealer),
    )
}

/// The webhooks queue named by `WEBHOOKS_QUEUE_URL`, or `None` when it is unset or empty
/// (then the notifier delivers itself).
#[must_use]
pub fn webhooks_queue_from_env(sdk: &aws_config::SdkConfig) -> Option<SqsRowQueue> {
    optional_queue_from_env(sdk, vars::WEBHOOKS_QUEUE_URL)
}

/// The queue whose URL the variable `name` holds, or `None` when it is unset or empty.
fn optional_queue_from_env(sdk: &aws_config::SdkConfig, name: &str) -> Option<SqsRowQueue> {
    std::env::var(name)
        .ok()
        .filter(|url| !url.trim().is_empty())
        .map(|url| SqsRowQueue::from(SqsQueue::new(sdk, url)))
}

/// The ingest queue named by `INGEST_QUEUE_URL`, if set (deployments; chunk jobs of large
/// uploads).
#[must_use]
pub fn ingest_queue_from_env(sdk: &aws_config::SdkConfig) -> Option<SqsRowQueue> {
    optional_queue_from_env(sdk, vars::INGEST_QUEUE_URL)
}

/// The rows queue named by `ROWS_QUEUE_URL`.
///
/// # Errors
/// When `ROWS_QUEUE_URL` is unset or empty.
pub fn queue_from_lookup(
    sdk: &aws_config::SdkConfig,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<SqsRowQueue, ConfigError> {
    Ok(SqsRowQueue::from(SqsQueue::new(
        sdk,
        required(&lookup, vars::ROWS_QUEUE_URL)?,
    )))
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

/// The download slots of origin hosts, in the table named by `TABLE_NAME`.
///
/// # Errors
/// When `TABLE_NAME` is unset or empty.
pub fn origin_slots_from_env(
    sdk: &aws_config::SdkConfig,
) -> Result<DynamoOriginSlots, ConfigError> {
    let lookup = |name: &str| std::env::var(name).ok();
    Ok(DynamoOriginSlots::from(DynamoTable::new(
        sdk,
        required(&lookup, vars::TABLE_NAME)?,
    )))
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

/// The HTTP client of every SDK client: hyper with rustls on the `ring` crypto provider and the
/// platform's trusted roots (the SDK's default client is the same on `aws-lc`, which adds about
/// 1 MiB of code to each bootstrap).
#[must_use]
pub fn https_client() -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// The SDK configuration of a workstation: region, credentials (profiles, SSO, web identity,
/// …) and endpoints resolved by the SDK's default provider chains (`pixpress invoke --backend
/// aws`).
pub async fn load_sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(https_client())
        .load()
        .await
}

/// The SDK configuration of a Lambda function, from the variables Lambda sets: `AWS_REGION`,
/// and the execution role's credentials in `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
/// `AWS_SESSION_TOKEN` ("Defined runtime environment variables", AWS Lambda Developer Guide);
/// `AWS_ENDPOINT_URL` points every client at an emulator. Built without the SDK's default
/// provider chains (profiles, SSO, STS web identity, instance metadata), which a function never
/// uses: that keeps them out of the bootstrap (smaller, faster to start) and makes probing the
/// instance metadata service impossible.
///
/// # Errors
/// When the region or the credentials are not in the environment.
pub fn lambda_sdk_config() -> Result<aws_config::SdkConfig, ConfigError> {
    lambda_sdk_config_from(|name| std::env::var(name).ok())
}

/// [`lambda_sdk_config`] with variables read through `lookup`.
///
/// # Errors
/// As [`lambda_sdk_config`].
pub fn lambda_sdk_config_from(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<aws_config::SdkConfig, ConfigError> {
    use aws_sdk_dynamodb::config::{
        BehaviorVersion, Credentials, Region, SharedCredentialsProvider,
    };
    let region = required(&lookup, "AWS_REGION")?;
    let credentials = Credentials::new(
        required(&lookup, "AWS_ACCESS_KEY_ID")?,
        required(&lookup, "AWS_SECRET_ACCESS_KEY")?,
        lookup("AWS_SESSION_TOKEN").filter(|t| !t.is_empty()),
        None,
        "lambda-environment",
    );
    let mut builder = aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(https_client())
        .region(Region::new(region))
        .credentials_provider(SharedCredentialsProvider::new(credentials));
    if let Some(endpoint) = lookup("AWS_ENDPOINT_URL").filter(|e| !e.trim().is_empty()) {
        builder = builder.endpoint_url(endpoint);
    }
    Ok(builder.build())
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
        | "EntityTooSmall"
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
        pixpress_app::telemetry::error_chain(error)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_functions_sdk_configuration_comes_from_lambdas_variables_only() {
        let vars = [
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_SESSION_TOKEN", "token"),
        ];
        let lookup = |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        };
        let sdk = lambda_sdk_config_from(lookup).unwrap();
        assert_eq!(sdk.region().map(|r| r.as_ref()), Some("eu-west-1"));
        assert!(sdk.credentials_provider().is_some());
        assert!(sdk.endpoint_url().is_none());
        let err = lambda_sdk_config_from(|name| (name != "AWS_REGION").then(|| "x".to_owned()))
            .unwrap_err();
        assert_eq!(err.name, "AWS_REGION");
    }
}
