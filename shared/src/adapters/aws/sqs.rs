//! [`RowQueue`] on SQS: `SendMessageBatch` in chunks of at most 10 entries (SQS limit),
//! re-sending the entries a batch reports failed.

use std::time::Duration;

use anyhow::anyhow;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use super::sdk_error;
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
