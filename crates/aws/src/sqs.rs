//! [`RowQueue`] on SQS: `SendMessageBatch` in batches of at most 10 entries and 1 MiB
//! ([`pixpress_app::limits`]), bodies checked against SQS's size and character rules before
//! anything is sent, and the entries a batch reports failed on the service's side re-sent with
//! jittered backoff ([`pixpress_app::retry`]).

use anyhow::anyhow;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use super::{SqsQueue, classify_code, sdk_error};
use pixpress_app::limits::sqs_batches;
use pixpress_app::ports::{
    ChunkQueue, PortError, RowQueue, SQS_MAX_DELAY_AFTER_RECEIVE, WebhookQueue, chunk_bodies,
    message_bodies,
};
use pixpress_domain::model::{ChunkJob, RowJob, WebhookJob};

/// The SQS queue of row jobs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqsRowQueue {
    queue: SqsQueue,
}

impl From<SqsQueue> for SqsRowQueue {
    fn from(queue: SqsQueue) -> Self {
        Self { queue }
    }
}

impl SqsRowQueue {
    /// The queue this sends to.
    #[must_use]
    pub fn queue(&self) -> &SqsQueue {
        &self.queue
    }

    /// Sends `bodies` (one batch within SQS's limits), each in the message group `groups`
    /// gives it at the same position, if any (`MessageGroupId`: on a standard queue, the
    /// tenant a fair queue balances by — "Amazon SQS fair queues", Amazon SQS Developer
    /// Guide). Entries the batch reports failed on the service's side are sent again with
    /// jittered backoff; an entry refused for what it holds (`SenderFault`) fails the call at
    /// once.
    async fn send_batch(
        &self,
        bodies: &[String],
        groups: Option<&[String]>,
    ) -> Result<(), PortError> {
        // Entry ids are positions in this batch, so failed ids map back to bodies.
        let mut pending: Vec<usize> = (0..bodies.len()).collect();
        let mut attempt = 0;
        loop {
            let entries = pending
                .iter()
                .map(|&i| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(&bodies[i])
                        .set_message_group_id(groups.and_then(|g| g.get(i)).cloned())
                        .build()
                        .map_err(|e| PortError::Unexpected(anyhow!("batch entry: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = self
                .queue
                .client
                .send_message_batch()
                .queue_url(&self.queue.target)
                .set_entries(Some(entries))
                .send()
                .await;
            let error = match out {
                Ok(out) if out.failed.is_empty() => return Ok(()),
                Ok(out) => {
                    if let Some(refused) = out.failed.iter().find(|f| f.sender_fault) {
                        let message = refused.message.clone().unwrap_or_default();
                        return Err(
                            classify_code("sending row messages", &refused.code, &message)
                                .filter(|e| !e.is_retryable())
                                .unwrap_or_else(|| {
                                    PortError::LimitExceeded(format!(
                                        "sending row messages: {}: {message}",
                                        refused.code
                                    ))
                                }),
                        );
                    }
                    pending = out
                        .failed
                        .iter()
                        .filter_map(|f| f.id.parse().ok())
                        .collect();
                    let reasons: Vec<String> = out
                        .failed
                        .iter()
                        .map(|f| format!("{}: {}", f.code, f.message.clone().unwrap_or_default()))
                        .collect();
                    PortError::Throttled(format!(
                        "{} row message(s) not accepted: {}",
                        pending.len(),
                        reasons.join("; ")
                    ))
                }
                Err(e) => {
                    let error = sdk_error("sending row messages", &e);
                    if !error.is_transient() {
                        return Err(error);
                    }
                    error
                }
            };
            attempt += 1;
            if attempt >= self.queue.retry.attempts {
                return Err(error);
            }
            tracing::debug!(attempt, %error, "re-sending row messages");
            tokio::time::sleep(self.queue.retry.delay(attempt - 1)).await;
        }
    }
}

impl WebhookQueue for SqsRowQueue {
    async fn send_webhook(&self, job: &WebhookJob) -> Result<(), PortError> {
        let body = serde_json::to_string(job)
            .map_err(|e| PortError::Unexpected(anyhow!("webhook job encoding: {e}")))?;
        self.send_batch(&[body], None).await
    }

    async fn retry_webhook_later(
        &self,
        receipt_handle: &str,
        delay: std::time::Duration,
    ) -> Result<(), PortError> {
        self.hide(receipt_handle, delay, "delaying a webhook").await
    }
}

impl SqsRowQueue {
    /// `ChangeMessageVisibility` of a received message, at most 12 hours.
    async fn hide(
        &self,
        receipt_handle: &str,
        delay: std::time::Duration,
        what: &str,
    ) -> Result<(), PortError> {
        let seconds = delay.min(SQS_MAX_DELAY_AFTER_RECEIVE).as_secs();
        self.queue
            .client
            .change_message_visibility()
            .queue_url(&self.queue.target)
            .receipt_handle(receipt_handle)
            .visibility_timeout(i32::try_from(seconds).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| sdk_error(what, &e))?;
        Ok(())
    }
}

impl RowQueue for SqsRowQueue {
    async fn retry_row_later(
        &self,
        receipt_handle: &str,
        delay: std::time::Duration,
    ) -> Result<(), PortError> {
        self.hide(receipt_handle, delay, "delaying a row").await
    }

    async fn enqueue(&self, jobs: &[RowJob]) -> Result<(), PortError> {
        let bodies = message_bodies(jobs)?;
        let groups: Vec<String> = jobs.iter().map(|job| job.tenant.clone()).collect();
        for batch in sqs_batches(&bodies) {
            self.send_batch(&bodies[batch.clone()], Some(&groups[batch]))
                .await?;
        }
        Ok(())
    }
}

impl ChunkQueue for SqsRowQueue {
    async fn enqueue_chunks(&self, jobs: &[ChunkJob]) -> Result<(), PortError> {
        let bodies = chunk_bodies(jobs)?;
        for batch in sqs_batches(&bodies) {
            self.send_batch(&bodies[batch], None).await?;
        }
        Ok(())
    }

    async fn retry_chunk_later(
        &self,
        receipt_handle: &str,
        delay: std::time::Duration,
    ) -> Result<(), PortError> {
        self.hide(receipt_handle, delay, "delaying a chunk").await
    }
}
