//! `pixpress invoke <function> <event.json>`: one handler, in process, on one sample event —
//! the Docker-free equivalent of `sam local invoke` — over the embedded backends or the AWS
//! adapters (configured like the Lambda functions: `TABLE_NAME`, `ROWS_QUEUE_URL`,
//! `BUCKET_NAME`, endpoints from `AWS_ENDPOINT_URL*`).

use anyhow::{Context as _, bail};
use aws_lambda_events::event::{dynamodb, sqs::SqsEvent};
use lambda_http::Body;
use lambda_runtime::LambdaEvent;
use pixpress::config::Config;
use pixpress::ports::{ObjectStore, RequestRepository, RowQueue};
use serde_json::{Value, json};

use crate::events::context;

/// The function names `invoke` accepts (crate, binary and `events/` folder names).
pub const FUNCTIONS: [&str; 6] = [
    "api",
    "s3-ingest",
    "row-worker",
    "row-dead-letter",
    "completion-notifier",
    "webhook-sender",
];

/// The template's logical function names and the names they stand for.
pub const LOGICAL_NAMES: [(&str, &str); 6] = [
    ("ApiFunction", "api"),
    ("S3IngestFunction", "s3-ingest"),
    ("RowWorkerFunction", "row-worker"),
    ("RowDeadLetterFunction", "row-dead-letter"),
    ("CompletionNotifierFunction", "completion-notifier"),
    ("WebhookSenderFunction", "webhook-sender"),
];

/// `function` as one of [`FUNCTIONS`]: a template logical name (`RowWorkerFunction`, as `sam
/// local invoke` takes) maps to its function; anything else is returned as given.
#[must_use]
pub fn function_name(function: &str) -> &str {
    LOGICAL_NAMES
        .iter()
        .find(|(logical, _)| *logical == function)
        .map_or(function, |(_, name)| name)
}

/// Runs `function` on `event` (the JSON Lambda would deliver) and returns what it answered:
/// the HTTP response for `api`, the batch response for `row-worker`, `null` otherwise.
///
/// # Errors
/// An unknown function, an event that does not parse, or the handler's `Err`.
pub async fn invoke<R, Q, S>(
    function: &str,
    event: &str,
    repo: R,
    queue: Q,
    store: S,
    config: &Config,
) -> anyhow::Result<Value>
where
    R: RequestRepository,
    Q: RowQueue + pixpress::ports::WebhookQueue,
    S: ObjectStore,
{
    let handler_error =
        |e: lambda_runtime::Error| anyhow::anyhow!("{function} handler failed: {e}");
    match function_name(function) {
        "api" => {
            let request =
                lambda_http::request::from_str(event).context("parsing the API Gateway event")?;
            // Sample events carry no API key: the handler runs as the default tenant.
            let app = pixpress_api::App {
                keys: None,
                webhooks: None,
                repo,
                queue,
                store,
                config: pixpress_api::ApiConfig::from(config),
            };
            let response = pixpress_api::handle(&app, request)
                .await
                .map_err(handler_error)?;
            let body = match response.body() {
                Body::Text(text) => text.clone(),
                Body::Binary(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                _ => String::new(),
            };
            let headers: serde_json::Map<String, Value> = response
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or_default())))
                .collect();
            Ok(
                json!({ "statusCode": response.status().as_u16(), "headers": headers, "body": body }),
            )
        }
        "s3-ingest" => {
            // An S3 event or a batch of chunk jobs, as the function's two triggers send.
            let event: Value = serde_json::from_str(event).context("parsing the event")?;
            let app: pixpress_s3_ingest::App<_, _, _> = pixpress_s3_ingest::App {
                repo,
                queue,
                store,
                chunks: None,
                config: pixpress_s3_ingest::IngestConfig::from(config),
            };
            pixpress_s3_ingest::handle_any(&app, LambdaEvent::new(event, context()))
                .await
                .map_err(handler_error)
        }
        "row-worker" => {
            let event: SqsEvent = serde_json::from_str(event).context("parsing the SQS event")?;
            let app = pixpress_row_worker::App::new(repo, store, config)?;
            let response = pixpress_row_worker::handle(&app, LambdaEvent::new(event, context()))
                .await
                .map_err(handler_error)?;
            Ok(serde_json::to_value(response)?)
        }
        "row-dead-letter" => {
            let event: SqsEvent = serde_json::from_str(event).context("parsing the SQS event")?;
            let app = pixpress_row_dead_letter::App::new(repo, config);
            let response =
                pixpress_row_dead_letter::handle(&app, LambdaEvent::new(event, context()))
                    .await
                    .map_err(handler_error)?;
            Ok(serde_json::to_value(response)?)
        }
        "webhook-sender" => {
            let event: SqsEvent = serde_json::from_str(event).context("parsing the SQS event")?;
            let app = pixpress_completion_notifier::App::new(None, repo, store, config)?
                .with_webhooks(Some(queue));
            let response =
                pixpress_webhook_sender::handle(&app, LambdaEvent::new(event, context()))
                    .await
                    .map_err(handler_error)?;
            Ok(serde_json::to_value(response)?)
        }
        "completion-notifier" => {
            let event: dynamodb::Event =
                serde_json::from_str(event).context("parsing the DynamoDB stream event")?;
            let app = pixpress_completion_notifier::App::new(None, repo, store, config)?;
            pixpress_completion_notifier::handle(&app, LambdaEvent::new(event, context()))
                .await
                .map_err(handler_error)?;
            Ok(Value::Null)
        }
        other => bail!(
            "unknown function `{other}`; expected one of {} (or its template name: {})",
            FUNCTIONS.join(", "),
            LOGICAL_NAMES.map(|(logical, _)| logical).join(", ")
        ),
    }
}
