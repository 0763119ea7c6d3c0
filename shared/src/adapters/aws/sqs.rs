//! [`RowQueue`] on SQS: `SendMessageBatch` in chunks of at most 10 entries (SQS limit),
//! re-sending the entries a batch reports failed.

use std::time::Duration;

use anyhow::anyhow;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};

use super::sdk_error;
use crate::adapters::local::ReceivedMessage;
use crate::domain::model::RowJob;
use crate::ports::{PortError, RowQueue, message_bodies};

/// `SendMessageBatch` takes at most 10 entries (SQS limit).
const MAX_BATCH: usize = 10;
/// Attempts per batch before the enqueue fails.
const ATTEMPTS: u32 = 4;

/// The SQS queue of row jobs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqsRowQueue {
    client: Client,
    queue_url: String,
}

impl SqsRowQueue {
    /// A queue at `queue_url`.
    #[must_use]
    pub fn new(sdk: &aws_config::SdkConfig, queue_url: impl Into<String>) -> Self {
        Self {
            client: Client::new(sdk),
            queue_url: queue_url.into(),
        }
    }

    /// The underlying client (the local pump receives with it).
    #[must_use]
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The queue URL.
    #[must_use]
    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// Receives up to `max` (≤ 10, an SQS limit) messages, hidden from other consumers for
    /// `visibility` (whole seconds, rounded up), each with its `ApproximateReceiveCount`: what
    /// the Lambda event source mapping does before invoking the worker.
    ///
    /// # Errors
    /// [`PortError`] when SQS fails.
    pub async fn receive(
        &self,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, PortError> {
        let seconds = visibility.as_secs() + u64::from(visibility.subsec_nanos() > 0);
        let out = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
            .visibility_timeout(i32::try_from(seconds).unwrap_or(i32::MAX))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| sdk_error("receiving row messages", &e))?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| ReceivedMessage {
                receive_count: m
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1),
                message_id: m.message_id.unwrap_or_default(),
                receipt_handle: m.receipt_handle.unwrap_or_default(),
                body: m.body.unwrap_or_default(),
            })
            .collect())
    }

    /// Deletes a received message (the worker processed it).
    ///
    /// # Errors
    /// [`PortError`] when SQS fails.
    pub async fn delete(&self, receipt_handle: &str) -> Result<(), PortError> {
        self.client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .send()
            .await
            .map_err(|e| sdk_error("deleting a row message", &e))?;
        Ok(())
    }

    /// Messages in the queue, visible plus in flight (SQS's approximate counts).
    ///
    /// # Errors
    /// [`PortError`] when SQS fails.
    pub async fn approximate_depth(&self) -> Result<u64, PortError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| sdk_error("reading queue attributes", &e))?;
        let attributes = out.attributes.unwrap_or_default();
        Ok([
            QueueAttributeName::ApproximateNumberOfMessages,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        ]
        .iter()
        .filter_map(|name| attributes.get(name)?.parse::<u64>().ok())
        .sum())
    }

    /// Moves every message of this queue (a dead-letter queue) to `target` (its source queue),
    /// as the console's "DLQ redrive" (`StartMessageMoveTask`) does: each message is sent again
    /// — a new message, with its receive count starting over — and then deleted here. Returns
    /// how many moved.
    ///
    /// # Errors
    /// [`PortError`] when SQS fails; messages already moved stay moved, the rest stay here.
    pub async fn redrive_to(&self, target: &SqsRowQueue) -> Result<u64, PortError> {
        let mut moved = 0;
        loop {
            let messages = self.receive(MAX_BATCH, Duration::from_secs(30)).await?;
            if messages.is_empty() {
                return Ok(moved);
            }
            let bodies: Vec<String> = messages.iter().map(|m| m.body.clone()).collect();
            target.send_batch(&bodies).await?;
            for message in &messages {
                self.delete(&message.receipt_handle).await?;
                moved += 1;
            }
        }
    }

    async fn send_batch(&self, bodies: &[String]) -> Result<(), PortError> {
        // Entry ids are positions in this chunk, so failed ids map back to bodies.
        let mut pending: Vec<usize> = (0..bodies.len()).collect();
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=ATTEMPTS {
            let entries = pending
                .iter()
                .map(|&i| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(&bodies[i])
                        .build()
                        .map_err(|e| PortError::Unexpected(anyhow!("batch entry: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await;
            match out {
                Ok(out) => {
                    pending = out
                        .failed
                        .iter()
                        .filter_map(|f| f.id.parse().ok())
                        .collect();
                    if pending.is_empty() {
                        return Ok(());
                    }
                    if attempt == ATTEMPTS {
                        let reasons: Vec<String> = out
                            .failed
                            .iter()
                            .map(|f| {
                                format!("{}: {}", f.code, f.message.clone().unwrap_or_default())
                            })
                            .collect();
                        return Err(PortError::Unexpected(anyhow!(
                            "{} row message(s) not accepted after {ATTEMPTS} attempts: {}",
                            pending.len(),
                            reasons.join("; ")
                        )));
                    }
                }
                Err(e) if attempt == ATTEMPTS => return Err(sdk_error("sending row messages", &e)),
                Err(_) => {}
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
        Ok(())
    }
}

impl RowQueue for SqsRowQueue {
    async fn enqueue(&self, jobs: &[RowJob]) -> Result<(), PortError> {
        let bodies = message_bodies(jobs)?;
        for chunk in bodies.chunks(MAX_BATCH) {
            self.send_batch(chunk).await?;
        }
        Ok(())
    }
}
