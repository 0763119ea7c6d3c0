//! Typed configuration read from environment variables (names match `template.yaml`).
//! [`Config::from_lookup`] takes a lookup function so tests never touch the process environment.

use std::time::Duration;

use pixpress_domain::egress::{FetchConfig, NetworkPolicy};
use pixpress_domain::image_limits::DecodeLimits;
use pixpress_domain::input_csv::CsvLimits;
use pixpress_domain::model::OutputSpec;
use pixpress_domain::webhook::WebhookSecret;

/// Environment variable names.
pub mod vars {
    /// Default JPEG quality, 1–100 (default 50).
    pub const JPEG_QUALITY: &str = "JPEG_QUALITY";
    /// Default longest output side in pixels (unset: keep size).
    pub const MAX_OUTPUT_DIMENSION: &str = "MAX_OUTPUT_DIMENSION";
    /// Largest CSV of `POST /uploads` in bytes (default 4,603,904: what a 6-MB Lambda
    /// payload holds after base64).
    pub const MAX_CSV_BYTES: &str = "MAX_CSV_BYTES";
    /// Most data rows of a `POST /uploads` CSV (default 1,000,000, the S3 path's: the
    /// direct path is limited by bytes).
    pub const MAX_ROWS: &str = "MAX_ROWS";
    /// Most URLs per row (default 50).
    pub const MAX_URLS_PER_ROW: &str = "MAX_URLS_PER_ROW";
    /// Longest URL in bytes (default 2,048).
    pub const MAX_URL_LENGTH: &str = "MAX_URL_LENGTH";
    /// Largest image download in bytes (default 20 MiB).
    pub const MAX_IMAGE_BYTES: &str = "MAX_IMAGE_BYTES";
    /// Most pixels per input image (default 50,000,000).
    pub const MAX_IMAGE_PIXELS: &str = "MAX_IMAGE_PIXELS";
    /// Longest input side in pixels (default 16,384).
    pub const MAX_IMAGE_SIDE: &str = "MAX_IMAGE_SIDE";
    /// Connect timeout in seconds (default 5).
    pub const FETCH_CONNECT_TIMEOUT_SECS: &str = "FETCH_CONNECT_TIMEOUT_SECS";
    /// Whole-download timeout in seconds (default 20).
    pub const FETCH_TIMEOUT_SECS: &str = "FETCH_TIMEOUT_SECS";
    /// Most redirects per download (default 3).
    pub const FETCH_MAX_REDIRECTS: &str = "FETCH_MAX_REDIRECTS";
    /// URL of the webhooks queue: the notifier queues completion events there and the
    /// webhook-sender delivers them (deployments; unset, the notifier delivers itself).
    pub const WEBHOOKS_QUEUE_URL: &str = "WEBHOOKS_QUEUE_URL";
    /// `true` lets fetches and webhooks reach 127.0.0.0/8 and ::1 (local runs only).
    pub const ALLOW_LOOPBACK: &str = "ALLOW_LOOPBACK";
    /// `true` lets fetches and webhooks use any port; by default only 80 and 443 (local runs
    /// only: local servers listen elsewhere).
    pub const ALLOW_ANY_PORT: &str = "ALLOW_ANY_PORT";
    /// SQS `maxReceiveCount` of the rows queue; the last attempt records failures (default 5).
    pub const MAX_RECEIVE_COUNT: &str = "MAX_RECEIVE_COUNT";
    /// Most downloads in flight per origin host across every worker invocation (default 32);
    /// below it each worker's limit adapts to how the host answers.
    pub const ORIGIN_MAX_CONCURRENCY: &str = "ORIGIN_MAX_CONCURRENCY";
    /// Bytes a worker process may hold downloaded but not yet compressed (default 48 MiB; at
    /// least `MAX_IMAGE_BYTES`).
    pub const WORKER_DOWNLOAD_BUDGET_BYTES: &str = "WORKER_DOWNLOAD_BUDGET_BYTES";
    /// Webhook signing secret, `whsec_<base64>` (unset: webhooks are sent unsigned). Local
    /// runs; deployments use `WEBHOOK_SECRET_ARN`.
    pub const WEBHOOK_SECRET: &str = "WEBHOOK_SECRET";
    /// ARN of the Secrets Manager secret holding the deployment's webhook signing secret
    /// (`whsec_<base64>`, or any text whose bytes are the key), read once per execution
    /// environment; it replaces `WEBHOOK_SECRET` (deployments).
    pub const WEBHOOK_SECRET_ARN: &str = "WEBHOOK_SECRET_ARN";
    /// KMS key (id, ARN or alias) whose data keys seal tenants' webhook secrets in the table
    /// (deployments; unset: stored as given).
    pub const WEBHOOK_SECRETS_KEY_ID: &str = "WEBHOOK_SECRETS_KEY_ID";
    /// Webhook attempts per completion (default 3).
    pub const WEBHOOK_MAX_ATTEMPTS: &str = "WEBHOOK_MAX_ATTEMPTS";
    /// First webhook retry delay in milliseconds, doubled per attempt (default 1000).
    pub const WEBHOOK_BACKOFF_MS: &str = "WEBHOOK_BACKOFF_MS";
    /// Webhook request timeout in seconds (default 15, as Standard Webhooks senders use).
    pub const WEBHOOK_TIMEOUT_SECS: &str = "WEBHOOK_TIMEOUT_SECS";
    /// Public base URL of the API, for `status_url` links (unset: derived from the request).
    pub const PUBLIC_API_URL: &str = "PUBLIC_API_URL";
    /// Base URL under which `images/…` objects are public (the CloudFront domain).
    pub const PUBLIC_BASE_URL: &str = "PUBLIC_BASE_URL";
    /// DynamoDB table of requests and rows (deployments).
    pub const TABLE_NAME: &str = "TABLE_NAME";
    /// S3 bucket of uploads, images and results (deployments).
    pub const BUCKET_NAME: &str = "BUCKET_NAME";
    /// SQS queue URL of row jobs (deployments).
    pub const ROWS_QUEUE_URL: &str = "ROWS_QUEUE_URL";
    /// Largest CSV the S3 path (presigned uploads, `pixpress run`) accepts, in bytes
    /// (default 1 GiB).
    pub const MAX_UPLOAD_BYTES: &str = "MAX_UPLOAD_BYTES";
    /// Most data rows the S3 path accepts (default 1,000,000).
    pub const MAX_UPLOAD_ROWS: &str = "MAX_UPLOAD_ROWS";
    /// SQS queue URL of ingest chunk jobs (deployments; unset: `s3-ingest` expands every
    /// chunk itself).
    pub const INGEST_QUEUE_URL: &str = "INGEST_QUEUE_URL";
    /// ARN of the ingest queue's dead-letter queue, which `s3-ingest` also consumes: a chunk
    /// job arriving from it (its invocations timed out or crashed) fails its request.
    pub const INGEST_DEAD_LETTER_QUEUE_ARN: &str = "INGEST_DEAD_LETTER_QUEUE_ARN";
    /// Days a request's items (request, rows, counters) are kept before DynamoDB's TTL deletes
    /// them (deployments; unset or 0: kept).
    pub const RETENTION_DAYS: &str = "RETENTION_DAYS";
    /// Seconds without a recorded row after which the sweeper repairs a running request, or
    /// after its completion a terminal one not handed on (default 7,200).
    pub const SWEEP_IDLE_SECONDS: &str = "SWEEP_IDLE_SECONDS";
    /// Seconds without progress after which the sweeper fails a request whose rows never
    /// arrived (default 28,800).
    pub const SWEEP_INGEST_IDLE_SECONDS: &str = "SWEEP_INGEST_IDLE_SECONDS";

    /// Every variable above, for consistency checks against `template.yaml`.
    pub const ALL: &[&str] = &[
        JPEG_QUALITY,
        MAX_OUTPUT_DIMENSION,
        MAX_CSV_BYTES,
        MAX_ROWS,
        MAX_URLS_PER_ROW,
        MAX_URL_LENGTH,
        MAX_IMAGE_BYTES,
        MAX_IMAGE_PIXELS,
        MAX_IMAGE_SIDE,
        FETCH_CONNECT_TIMEOUT_SECS,
        FETCH_TIMEOUT_SECS,
        FETCH_MAX_REDIRECTS,
        ALLOW_LOOPBACK,
        ALLOW_ANY_PORT,
        WEBHOOKS_QUEUE_URL,
        MAX_RECEIVE_COUNT,
        ORIGIN_MAX_CONCURRENCY,
        WORKER_DOWNLOAD_BUDGET_BYTES,
        WEBHOOK_SECRET,
        WEBHOOK_SECRET_ARN,
        WEBHOOK_SECRETS_KEY_ID,
        WEBHOOK_MAX_ATTEMPTS,
        WEBHOOK_BACKOFF_MS,
        WEBHOOK_TIMEOUT_SECS,
        PUBLIC_API_URL,
        PUBLIC_BASE_URL,
        TABLE_NAME,
        BUCKET_NAME,
        ROWS_QUEUE_URL,
        MAX_UPLOAD_BYTES,
        MAX_UPLOAD_ROWS,
        INGEST_QUEUE_URL,
        INGEST_DEAD_LETTER_QUEUE_ARN,
        RETENTION_DAYS,
        SWEEP_IDLE_SECONDS,
        SWEEP_INGEST_IDLE_SECONDS,
    ];
}

/// A configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: {message}")]
pub struct ConfigError {
    /// Variable name.
    pub name: &'static str,
    /// What is wrong.
    pub message: String,
}

/// Default largest CSV of the S3 path: 1 GiB.
pub const DEFAULT_MAX_UPLOAD_BYTES: usize = 1 << 30;
/// Default most rows of the S3 path.
pub const DEFAULT_MAX_UPLOAD_ROWS: usize = 1_000_000;

/// Lambda's limit on a synchronous invocation's payload, in bytes: 6 MB ("Lambda quotas",
/// AWS Lambda Developer Guide; the `Invoke` API: "For synchronous invocations, the maximum
/// payload size is 6 MB"), taken as 6 × 2^20 as the service enforces it.
pub const LAMBDA_SYNC_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

/// Bytes of the API Gateway event around the body (request context, headers, query string),
/// kept free of [`LAMBDA_SYNC_PAYLOAD_BYTES`].
pub const API_EVENT_ENVELOPE_BYTES: usize = 64 * 1024;

/// Multipart framing allowed on top of the CSV in a form upload, in bytes.
pub const FORM_OVERHEAD_BYTES: usize = 64 * 1024;

/// Default largest CSV of `POST /uploads`, in bytes: what survives the 6-MB invocation payload
/// once API Gateway has base64-encoded the body (4 bytes for every 3; HTTP APIs encode
/// `multipart/form-data`, and any body they do not take for text) with room for the event
/// envelope and a form's framing — 4,603,904 bytes (4.39 MiB). Larger CSVs take a presigned
/// upload (`POST /upload-urls`). Rows are not limited here beyond the S3 path's
/// [`DEFAULT_MAX_UPLOAD_ROWS`]: the API writes no row itself.
pub const DEFAULT_MAX_DIRECT_UPLOAD_BYTES: usize =
    (LAMBDA_SYNC_PAYLOAD_BYTES - API_EVENT_ENVELOPE_BYTES) / 4 * 3 - FORM_OVERHEAD_BYTES;

/// Every setting of every function; each function reads what it needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Limits of `POST /uploads` (a CSV in the request body, up to
    /// [`DEFAULT_MAX_DIRECT_UPLOAD_BYTES`] and the S3 path's row limit).
    pub csv: CsvLimits,
    /// Limits of the S3 path (presigned uploads and `pixpress run`): the same per-row limits,
    /// up to [`DEFAULT_MAX_UPLOAD_BYTES`] and [`DEFAULT_MAX_UPLOAD_ROWS`].
    pub upload: CsvLimits,
    /// Decode limits.
    pub decode: DecodeLimits,
    /// Download limits and network policy.
    pub fetch: FetchConfig,
    /// Default output spec for requests that do not choose one.
    pub output: OutputSpec,
    /// SQS `maxReceiveCount`; the attempt with this receive count records transient failures.
    pub max_receive_count: u32,
    /// Most downloads in flight per origin host across every worker invocation.
    pub origin_max_concurrency: u32,
    /// Bytes a worker invocation may hold downloaded but not yet compressed.
    pub worker_download_budget: u64,
    /// Webhook signing secret.
    pub webhook_secret: Option<WebhookSecret>,
    /// Webhook attempts per completion.
    pub webhook_max_attempts: u32,
    /// First webhook retry delay, doubled per attempt.
    pub webhook_backoff: Duration,
    /// Webhook request timeout.
    pub webhook_timeout: Duration,
    /// Public base URL of the API.
    pub public_api_url: Option<String>,
    /// When the sweeper repairs a request.
    pub sweep: crate::sweep::SweepConfig,
    /// When a row handed back as a batch item failure is delivered again
    /// ([`crate::retry::RedeliveryBackoff::DEPLOYED`]; local runs scale it down as they do
    /// the visibility timeout).
    pub redelivery: crate::retry::RedeliveryBackoff,
    /// The same for chunk jobs ([`crate::retry::RedeliveryBackoff::CHUNKS`]).
    pub chunk_redelivery: crate::retry::RedeliveryBackoff,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            csv: CsvLimits {
                max_bytes: DEFAULT_MAX_DIRECT_UPLOAD_BYTES,
                max_rows: DEFAULT_MAX_UPLOAD_ROWS,
                ..CsvLimits::default()
            },
            upload: CsvLimits {
                max_bytes: DEFAULT_MAX_UPLOAD_BYTES,
                max_rows: DEFAULT_MAX_UPLOAD_ROWS,
                ..CsvLimits::default()
            },
            decode: DecodeLimits::default(),
            fetch: FetchConfig::default(),
            output: OutputSpec::default(),
            max_receive_count: 5,
            origin_max_concurrency: 32,
            worker_download_budget: 48 * 1024 * 1024,
            webhook_secret: None,
            webhook_max_attempts: 3,
            webhook_backoff: Duration::from_millis(1000),
            webhook_timeout: Duration::from_secs(15),
            public_api_url: None,
            sweep: crate::sweep::SweepConfig::default(),
            redelivery: crate::retry::RedeliveryBackoff::DEPLOYED,
            chunk_redelivery: crate::retry::RedeliveryBackoff::CHUNKS,
        }
    }
}

/// `secs` seconds as a `chrono` duration (saturating at `i64::MAX`).
fn seconds(secs: u64) -> chrono::Duration {
    i64::try_from(secs)
        .ok()
        .and_then(chrono::Duration::try_seconds)
        .unwrap_or(chrono::Duration::MAX)
}

fn parse<T: std::str::FromStr>(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match lookup(name) {
        None => Ok(default),
        Some(v) if v.trim().is_empty() => Ok(default),
        Some(v) => v.trim().parse().map_err(|e| ConfigError {
            name,
            message: format!("`{v}`: {e}"),
        }),
    }
}

impl Config {
    /// Reads the process environment.
    ///
    /// # Errors
    /// The first variable that does not parse.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (name → value); unset or empty means default.
    ///
    /// # Errors
    /// The first variable that does not parse or is out of range.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        use vars::*;
        let d = Self::default();
        let quality: u8 = parse(&lookup, JPEG_QUALITY, d.output.quality)?;
        let max_dimension = match lookup(MAX_OUTPUT_DIMENSION).filter(|v| !v.trim().is_empty()) {
            None => None,
            Some(_) => Some(parse(&lookup, MAX_OUTPUT_DIMENSION, 0u32)?),
        };
        let output = OutputSpec::new(quality, max_dimension).map_err(|message| ConfigError {
            name: JPEG_QUALITY,
            message,
        })?;
        let webhook_secret = match lookup(WEBHOOK_SECRET).filter(|v| !v.is_empty()) {
            None => None,
            Some(text) => Some(WebhookSecret::parse(&text).map_err(|message| ConfigError {
                name: WEBHOOK_SECRET,
                message,
            })?),
        };
        let max_receive_count = parse(&lookup, MAX_RECEIVE_COUNT, d.max_receive_count)?;
        if max_receive_count == 0 {
            return Err(ConfigError {
                name: MAX_RECEIVE_COUNT,
                message: "must be at least 1".to_owned(),
            });
        }
        let fetch = FetchConfig {
            connect_timeout: Duration::from_secs(parse(
                &lookup,
                FETCH_CONNECT_TIMEOUT_SECS,
                d.fetch.connect_timeout.as_secs(),
            )?),
            timeout: Duration::from_secs(parse(
                &lookup,
                FETCH_TIMEOUT_SECS,
                d.fetch.timeout.as_secs(),
            )?),
            max_redirects: parse(&lookup, FETCH_MAX_REDIRECTS, d.fetch.max_redirects)?,
            stall_window: d.fetch.stall_window,
            stall_bytes: d.fetch.stall_bytes,
            max_bytes: parse(&lookup, MAX_IMAGE_BYTES, d.fetch.max_bytes)?,
            max_idle_per_host: d.fetch.max_idle_per_host,
            policy: {
                let allow_loopback = parse(&lookup, ALLOW_LOOPBACK, false)?;
                NetworkPolicy {
                    allow_loopback,
                    allow_any_port: parse(&lookup, ALLOW_ANY_PORT, false)?,
                    // Local servers listen on their own ports.
                    allow_loopback_any_port: allow_loopback,
                }
            },
            user_agent: d.fetch.user_agent,
        };
        let worker_download_budget = parse(
            &lookup,
            WORKER_DOWNLOAD_BUDGET_BYTES,
            d.worker_download_budget,
        )?
        .max(fetch.max_bytes);
        let csv = CsvLimits {
            max_bytes: parse(&lookup, MAX_CSV_BYTES, d.csv.max_bytes)?,
            max_rows: parse(&lookup, MAX_ROWS, d.csv.max_rows)?,
            max_urls_per_row: parse(&lookup, MAX_URLS_PER_ROW, d.csv.max_urls_per_row)?,
            max_url_length: parse(&lookup, MAX_URL_LENGTH, d.csv.max_url_length)?,
            max_issues: d.csv.max_issues,
        };
        let origin_max_concurrency: u32 =
            parse(&lookup, ORIGIN_MAX_CONCURRENCY, d.origin_max_concurrency)?.max(1);
        let fetch = FetchConfig {
            max_idle_per_host: origin_max_concurrency as usize,
            ..fetch
        };
        Ok(Self {
            csv,
            upload: CsvLimits {
                max_bytes: parse(&lookup, MAX_UPLOAD_BYTES, d.upload.max_bytes)?,
                max_rows: parse(&lookup, MAX_UPLOAD_ROWS, d.upload.max_rows)?,
                ..csv
            },
            decode: DecodeLimits {
                max_pixels: parse(&lookup, MAX_IMAGE_PIXELS, d.decode.max_pixels)?,
                max_side: parse(&lookup, MAX_IMAGE_SIDE, d.decode.max_side)?,
                max_scans: d.decode.max_scans,
            },
            fetch,
            output,
            max_receive_count,
            origin_max_concurrency,
            worker_download_budget,
            webhook_secret,
            webhook_max_attempts: parse(&lookup, WEBHOOK_MAX_ATTEMPTS, d.webhook_max_attempts)?
                .max(1),
            webhook_backoff: Duration::from_millis(parse(&lookup, WEBHOOK_BACKOFF_MS, 1000u64)?),
            webhook_timeout: Duration::from_secs(parse(
                &lookup,
                WEBHOOK_TIMEOUT_SECS,
                d.webhook_timeout.as_secs(),
            )?),
            public_api_url: lookup(PUBLIC_API_URL)
                .filter(|v| !v.trim().is_empty())
                .map(|v| v.trim().trim_end_matches('/').to_owned()),
            sweep: crate::sweep::SweepConfig {
                idle: seconds(parse(
                    &lookup,
                    SWEEP_IDLE_SECONDS,
                    d.sweep.idle.num_seconds().unsigned_abs(),
                )?),
                ingest_idle: seconds(parse(
                    &lookup,
                    SWEEP_INGEST_IDLE_SECONDS,
                    d.sweep.ingest_idle.num_seconds().unsigned_abs(),
                )?),
            },
            redelivery: d.redelivery,
            chunk_redelivery: d.chunk_redelivery,
        })
    }

    /// The fetch settings for webhook delivery: same policy, webhook timeout, no redirects.
    #[must_use]
    pub fn webhook_fetch(&self) -> FetchConfig {
        FetchConfig {
            timeout: self.webhook_timeout,
            max_redirects: 0,
            ..self.fetch.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn unset_variables_give_the_documented_defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(c.output.quality, 50);
        assert_eq!(c.fetch.max_bytes, 20 * 1024 * 1024);
        assert_eq!(c.decode.max_pixels, 50_000_000);
        assert!(!c.fetch.policy.allow_loopback);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = config(&[(vars::JPEG_QUALITY, "0")]).unwrap_err();
        assert_eq!(err.name, vars::JPEG_QUALITY);
        let err = config(&[(vars::MAX_ROWS, "many")]).unwrap_err();
        assert_eq!(err.name, vars::MAX_ROWS);
        let c = config(&[(vars::JPEG_QUALITY, "80"), (vars::ALLOW_LOOPBACK, "true")]).unwrap();
        assert_eq!(c.output.quality, 80);
        assert!(c.fetch.policy.allow_loopback);
    }
}
