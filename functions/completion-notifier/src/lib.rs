//! # completion-notifier — writes the output CSV and fires the webhook
//!
//! Trigger: the table's DynamoDB stream (`NEW_AND_OLD_IMAGES`), filtered in the event source
//! mapping to request items entering a terminal status; locally, the CLI's pump feeds the
//! embedded repository's change log.
//!
//! Per record that is a request item moving from a non-terminal to a terminal status
//! (re-checked here, so an unfiltered stream is safe too):
//! 1. read the rows of the request in input order, 1,000 per page;
//! 2. stream the output CSV to `results/<request>/output.csv` as a multipart upload and record
//!    its key. When the invocation's deadline nears before the last row (a catalogue of
//!    millions of rows), the writer stops on a part boundary and saves its progress on the
//!    request item (the upload, its parts, the last row written); that change is itself a
//!    stream record the filter passes, and the next invocation continues from there;
//! 3. if the request has a webhook that is not yet delivered, POST the signed completion event
//!    (Standard Webhooks v1) with up to `WEBHOOK_MAX_ATTEMPTS` attempts and exponential
//!    backoff, recording every attempt on the request.
//!
//! Failure semantics: a replayed record rewrites the same CSV and skips a delivered webhook. A
//! failing receiver never fails the invocation (its attempts are recorded); a repository or
//! store failure stops the batch at that record and reports it as the batch item failure
//! (`ReportBatchItemFailures`: Lambda retries the stream from the lowest failed sequence
//! number, so the records before it are not handled again), bounded by the mapping's
//! `MaximumRetryAttempts`.
//!
//! Env vars: `WEBHOOK_SECRET`, `WEBHOOK_MAX_ATTEMPTS`, `WEBHOOK_BACKOFF_MS`,
//! `WEBHOOK_TIMEOUT_SECS`, `PUBLIC_API_URL`, `ALLOW_LOOPBACK`.

use aws_lambda_events::event::dynamodb::Event;
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use lambda_runtime::LambdaEvent;
use pixpress_app::auth::KeyStore;
use pixpress_app::deadline::Deadline;
use pixpress_app::ports::{ObjectStore, OutputLedger, RequestReader, WebhookQueue};
pub use pixpress_delivery::notify::{
    Notified, NotifyError, OUTPUT_DEADLINE_MARGIN, OUTPUT_PART_BYTES, OUTPUT_ROWS_PER_PAGE, notify,
};
pub use pixpress_delivery::{App, NotifierConfig};
use pixpress_domain::item::ItemHead;
use pixpress_domain::model::RequestStatus;
use pixpress_domain::storage_keys::{META_SK, request_id_from_pk};

/// `Some(request_id)` when the record is a request item whose output CSV was paused with
/// saved progress (a new or changed `output_progress`).
fn output_continuation(record: &aws_lambda_events::event::dynamodb::EventRecord) -> Option<String> {
    let new = &record.change.new_image;
    let progress = new.get("output_progress")?;
    let sk: ItemHead = serde_dynamo::from_item(new.clone()).ok()?;
    if sk.sk != META_SK || record.change.old_image.get("output_progress") == Some(progress) {
        return None;
    }
    request_id_from_pk(&sk.pk).map(str::to_owned)
}

/// `Some(request_id)` when the record is a request item entering a terminal status.
fn terminal_transition(record: &aws_lambda_events::event::dynamodb::EventRecord) -> Option<String> {
    let new: ItemHead = serde_dynamo::from_item(record.change.new_image.clone()).ok()?;
    if new.sk != META_SK || !new.status.is_some_and(RequestStatus::is_terminal) {
        return None;
    }
    let old_status = serde_dynamo::from_item::<_, ItemHead>(record.change.old_image.clone())
        .ok()
        .and_then(|old| old.status);
    if old_status.is_some_and(RequestStatus::is_terminal) {
        return None;
    }
    request_id_from_pk(&new.pk).map(str::to_owned)
}

/// Handles one batch of stream records, in order. The first record whose notification fails
/// on storage ends the batch and is its batch item failure: Lambda retries from that record's
/// sequence number ("Configuring partial batch response with DynamoDB and Lambda", AWS Lambda
/// Developer Guide), so the records before it are not handled again.
///
/// # Errors
/// Never: a failure is reported as the batch item failure.
pub async fn handle<
    R: RequestReader + OutputLedger,
    S: ObjectStore,
    W: WebhookQueue,
    K: KeyStore,
>(
    app: &App<R, S, W, K>,
    event: LambdaEvent<Event>,
) -> Result<DynamoDbEventResponse, lambda_runtime::Error> {
    let deadline = Deadline::from_epoch_millis(event.context.deadline);
    let mut response = DynamoDbEventResponse::default();
    for record in &event.payload.records {
        let Some(request_id) = terminal_transition(record).or_else(|| output_continuation(record))
        else {
            continue;
        };
        let span = pixpress_app::telemetry::request_span(&request_id);
        let handled = tracing::Instrument::instrument(
            async {
                let notified = notify(app, &request_id, deadline).await?;
                tracing::info!(?notified, "request completion handled");
                Ok::<_, NotifyError>(())
            },
            span.clone(),
        )
        .await;
        if let Err(e) = handled {
            let _entered = span.enter();
            tracing::warn!(error = %e, "request completion failed; the stream retries from this record");
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = record.change.sequence_number.clone();
            response.batch_item_failures.push(failure);
            break;
        }
    }
    Ok(response)
}
