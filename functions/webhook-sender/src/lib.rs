//! # webhook-sender — delivers completion webhooks off the stream shard
//!
//! Trigger: the webhooks SQS queue (batches, `ReportBatchItemFailures`). The completion notifier
//! queues one [`WebhookJob`] per request that has a webhook; this function makes the attempts
//! (Standard Webhooks v1, signed with the tenant's secrets), every message of a batch at once so
//! slow receivers do not wait for each other:
//!
//! - attempt number = the attempts recorded on the request since the job was queued, plus one
//!   (not the message's `ApproximateReceiveCount`: an invocation cut short costs no attempt);
//! - 2xx: delivered, the message is deleted; a request whose webhook is no longer pending
//!   (delivered, failed, or a replayed message) is skipped;
//! - 410 Gone: the tenant's endpoint is disabled, no more attempts;
//! - any other failure: recorded on the request, and the message is hidden until the next
//!   attempt of Svix's schedule is due (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h; a longer
//!   `Retry-After` from the receiver wins, up to SQS's 12 h) and reported as a batch item
//!   failure;
//! - the eighth failure is recorded as failed, counted in the `webhooks_failed` metric (its
//!   alarm fires) and the message deleted. The queue's redrive policy (`maxReceiveCount` 16:
//!   eight attempts and room for eight invocations cut short) moves a message that keeps
//!   failing without an attempt to the webhooks dead-letter queue, whose alarm fires too.
//!
//! Env vars: those of the completion notifier (`WEBHOOK_SECRET`, `WEBHOOK_TIMEOUT_SECS`,
//! `PUBLIC_API_URL`, `TABLE_NAME`, `BUCKET_NAME`) and `WEBHOOKS_QUEUE_URL`.

use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use lambda_runtime::LambdaEvent;
use pixpress_app::auth::KeyStore;
use pixpress_app::ports::{ObjectStore, OutputLedger, RequestReader, WebhookQueue};
use pixpress_app::sqs_batch::{BatchMode, batch_item_failures};
use pixpress_delivery::{App, Attempted, attempt_delivery};
use pixpress_domain::model::{DeliveryState, WebhookJob};
use pixpress_domain::webhook::{MAX_DELIVERY_ATTEMPTS, retry_delay};

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// Delivered on this attempt.
    Delivered,
    /// Nothing to do: the request is gone, has no webhook, or it is no longer pending.
    Skipped,
    /// Not sent and never will be (no secret, disabled endpoint, 410).
    Refused,
    /// Failed; the next attempt is due after this wait.
    RetryAfter(Duration),
    /// Failed for the last time (or permanently).
    Failed,
}

/// Why a message goes back to the queue without a scheduled retry.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The body is not a webhook job.
    #[error("malformed webhook job: {0}")]
    Malformed(String),
    /// Storage failure, or the queue refused the visibility change; the message comes back
    /// on its own.
    #[error(transparent)]
    Storage(#[from] pixpress_app::ports::PortError),
}

/// Handles one message: one attempt at most.
///
/// # Errors
/// [`SendError`] when the message should come back (as a batch item failure).
pub async fn send_one<R, S, W, K>(
    app: &App<R, S, W, K>,
    message: &SqsMessage,
) -> Result<Sent, SendError>
where
    R: RequestReader + OutputLedger,
    S: ObjectStore,
    W: WebhookQueue,
    K: KeyStore,
{
    let body = message.body.as_deref().unwrap_or_default();
    let job: WebhookJob =
        serde_json::from_str(body).map_err(|e| SendError::Malformed(e.to_string()))?;
    let Some(meta) = app.repo.get_request(&job.request_id).await? else {
        return Ok(Sent::Skipped);
    };
    let Some(hook) = meta
        .webhook
        .clone()
        .filter(|h| h.state == DeliveryState::Pending)
    else {
        return Ok(Sent::Skipped);
    };
    // Counted on the request: an invocation cut short before it attempted anything (a
    // timeout) costs no attempt, although SQS counts its receive.
    let recorded = u32::try_from(hook.attempts.len()).unwrap_or(u32::MAX);
    let attempt = recorded.saturating_sub(job.attempts_before) + 1;
    let last = attempt >= MAX_DELIVERY_ATTEMPTS;
    match attempt_delivery(app, &meta, &hook.url, attempt, last, recorded).await? {
        Attempted::Delivered => Ok(Sent::Delivered),
        Attempted::Refused | Attempted::Gone => Ok(Sent::Refused),
        Attempted::Failed { retryable, .. } if last || !retryable => Ok(Sent::Failed),
        Attempted::Failed { retry_after, .. } => {
            let scheduled = retry_delay(attempt).unwrap_or_default();
            let wait = scheduled.max(retry_after.unwrap_or_default());
            if let (Some(queue), Some(receipt)) = (&app.webhooks, &message.receipt_handle) {
                queue.retry_webhook_later(receipt, wait).await?;
            }
            Ok(Sent::RetryAfter(wait))
        }
    }
}

/// Handles one batch; a message whose next attempt is scheduled or that hit a storage failure
/// is returned as a batch item failure; one whose attempts are used up is done.
///
/// # Errors
/// Never: every failure is reported per message.
pub async fn handle<R, S, W, K>(
    app: &App<R, S, W, K>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, lambda_runtime::Error>
where
    R: RequestReader + OutputLedger,
    S: ObjectStore,
    W: WebhookQueue,
    K: KeyStore,
{
    let records = &event.payload.records;
    // At once: each delivery waits up to WEBHOOK_TIMEOUT_SECS on its receiver, and ten in a
    // row would outlive the function's timeout, costing every message of the batch an attempt.
    let mode = BatchMode::Concurrent;
    Ok(
        batch_item_failures(records, mode, "sending a webhook", |message| async move {
            Ok::<_, SendError>(match send_one(app, message).await? {
                Sent::Delivered | Sent::Skipped | Sent::Refused => false,
                Sent::RetryAfter(wait) => {
                    tracing::info!(?wait, "webhook delivery scheduled again");
                    true
                }
                // Recorded FAILED on the request with every attempt: the message is done, and
                // the `webhooks_failed` metric's alarm says so.
                Sent::Failed => {
                    metrics::counter!("webhooks_failed").increment(1);
                    tracing::warn!("webhook delivery failed for good");
                    false
                }
            })
        })
        .await,
    )
}
