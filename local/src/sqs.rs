//! The consuming side of an SQS queue — `ReceiveMessage`, `DeleteMessage`, queue depth — for
//! the local pump against an emulator: what the Lambda event source mapping does in a
//! deployment. The functions only send ([`pixpress_aws::SqsRowQueue`]).

use std::time::Duration;

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use pixpress_app::limits::SQS_MAX_BATCH_ENTRIES as MAX_BATCH;
use pixpress_app::ports::PortError;
use pixpress_aws::{SqsQueue, sdk_error};
use pixpress_embedded::ReceivedMessage;

/// Receives from and deletes on one queue. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqsConsumer {
    queue: SqsQueue,
}

impl From<SqsQueue> for SqsConsumer {
    fn from(queue: SqsQueue) -> Self {
        Self { queue }
    }
}

impl SqsConsumer {
    /// The queue this consumes.
    #[must_use]
    pub fn queue(&self) -> &SqsQueue {
        &self.queue
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
            .queue
            .client()
            .receive_message()
            .queue_url(self.queue.target())
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
        self.queue
            .client()
            .delete_message()
            .queue_url(self.queue.target())
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
            .queue
            .client()
            .get_queue_attributes()
            .queue_url(self.queue.target())
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

    /// Hides a received message for `timeout` from now (`ChangeMessageVisibility`, whole
    /// seconds, rounded up).
    ///
    /// # Errors
    /// [`PortError`] when SQS fails.
    pub async fn change_visibility(
        &self,
        receipt_handle: &str,
        timeout: Duration,
    ) -> Result<(), PortError> {
        let seconds = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
        self.queue
            .client()
            .change_message_visibility()
            .queue_url(self.queue.target())
            .receipt_handle(receipt_handle)
            .visibility_timeout(i32::try_from(seconds).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| sdk_error("changing a message's visibility", &e))?;
        Ok(())
    }
}
