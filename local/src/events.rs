//! Synthesised Lambda events, built from JSON exactly as Lambda delivers them (the 1.x event
//! types are `#[non_exhaustive]`, and JSON keeps one source of truth with `events/`).

use anyhow::Context as _;
use aws_lambda_events::event::dynamodb;
use aws_lambda_events::event::s3::S3Event;
use aws_lambda_events::event::sqs::SqsEvent;
use pixpress_embedded::{ChangeRecord, ReceivedMessage};
use serde_json::{Value, json};

/// Region reported in synthesised events.
pub const LOCAL_REGION: &str = "local";

/// An SQS event carrying `messages` (with `ApproximateReceiveCount`).
///
/// # Errors
/// Only if the event JSON does not match the event type.
pub fn sqs_event(messages: &[ReceivedMessage]) -> anyhow::Result<SqsEvent> {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            json!({
                "messageId": m.message_id,
                "receiptHandle": m.receipt_handle,
                "body": m.body,
                "attributes": {
                    "ApproximateReceiveCount": m.receive_count.to_string(),
                    "SentTimestamp": "0",
                },
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": format!("arn:aws:sqs:{LOCAL_REGION}:000000000000:pixpress-rows"),
                "awsRegion": LOCAL_REGION,
            })
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).context("building the SQS event")
}

/// A DynamoDB stream event (`NEW_AND_OLD_IMAGES`) carrying `changes`.
///
/// # Errors
/// Only if the event JSON does not match the event type.
pub fn dynamodb_event(changes: &[ChangeRecord]) -> anyhow::Result<dynamodb::Event> {
    let now = chrono::Utc::now().timestamp();
    let records = changes
        .iter()
        .map(|c| {
            let mut change = json!({
                "ApproximateCreationDateTime": now,
                "Keys": { "pk": { "S": c.pk }, "sk": { "S": c.sk } },
                "NewImage": serde_json::to_value(&c.new_image)?,
                "SequenceNumber": c.sequence,
                "SizeBytes": 0,
                "StreamViewType": "NEW_AND_OLD_IMAGES",
            });
            if let Some(old) = &c.old_image {
                change["OldImage"] = serde_json::to_value(old)?;
            }
            Ok(json!({
                "eventID": c.sequence,
                "eventName": c.kind.event_name(),
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "awsRegion": LOCAL_REGION,
                "dynamodb": change,
                "eventSourceARN": format!("arn:aws:dynamodb:{LOCAL_REGION}:000000000000:table/pixpress/stream/local"),
            }))
        })
        .collect::<Result<Vec<Value>, serde_json::Error>>()?;
    serde_json::from_value(json!({ "Records": records }))
        .context("building the DynamoDB stream event")
}

/// An S3 `ObjectCreated:Put` event for `key` (form-encoded as S3 does).
///
/// # Errors
/// Only if the event JSON does not match the event type.
pub fn s3_put_event(bucket: &str, key: &str, size: u64, etag: &str) -> anyhow::Result<S3Event> {
    let encoded: String = url_form_encode(key);
    serde_json::from_value(json!({
        "Records": [{
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": LOCAL_REGION,
            "eventTime": chrono::Utc::now().to_rfc3339(),
            "eventName": "ObjectCreated:Put",
            "userIdentity": { "principalId": "local" },
            "requestParameters": { "sourceIPAddress": "127.0.0.1" },
            "responseElements": {},
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "uploads",
                "bucket": { "name": bucket, "arn": format!("arn:aws:s3:::{bucket}") },
                "object": { "key": encoded, "size": size, "eTag": etag, "sequencer": "0" }
            }
        }]
    }))
    .context("building the S3 event")
}

/// Form-style encoding of an object key, as S3 event notifications carry it.
fn url_form_encode(key: &str) -> String {
    key.split('/')
        .map(|segment| url::form_urlencoded::byte_serialize(segment.as_bytes()).collect::<String>())
        .collect::<Vec<_>>()
        .join("/")
}

/// A Lambda context for local invocations (no deadline).
#[must_use]
pub fn context() -> lambda_runtime::Context {
    let mut context = lambda_runtime::Context::default();
    context.request_id = uuid::Uuid::new_v4().to_string();
    context
}

/// A Lambda context whose deadline is `timeout` from now (`deadline`: milliseconds since the
/// Unix epoch, as the Runtime API's `Lambda-Runtime-Deadline-Ms` header gives it).
#[must_use]
pub fn context_with_deadline(timeout: std::time::Duration) -> lambda_runtime::Context {
    let mut context = context();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    context.deadline = u64::try_from((now + timeout).as_millis()).unwrap_or(u64::MAX);
    context
}
