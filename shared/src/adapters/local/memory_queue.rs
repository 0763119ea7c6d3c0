//! In-memory [`RowQueue`] with SQS semantics: a received message is invisible for the
//! visibility timeout, comes back if not deleted, carries its receive count, and moves to the
//! dead-letter queue when received more than `max_receive_count` times (SQS redrive policy).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::anyhow;

use crate::domain::model::RowJob;
use crate::ports::{PortError, RowQueue, message_bodies};

/// A message handed to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// Stable message id.
    pub message_id: String,
    /// Handle for [`InMemoryRowQueue::delete`]; changes on every receive.
    pub receipt_handle: String,
    /// JSON body (a [`RowJob`]).
    pub body: String,
    /// How many times it has been received, this time included (SQS `ApproximateReceiveCount`).
    pub receive_count: u32,
}

#[derive(Debug)]
struct Message {
    id: String,
    body: String,
    receive_count: u32,
    visible_at: Instant,
    receipt: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    messages: VecDeque<Message>,
    dead_letters: Vec<ReceivedMessage>,
    next_id: u64,
}

/// The in-memory queue. Clones share state.
#[derive(Debug, Clone)]
pub struct InMemoryRowQueue {
    state: Arc<Mutex<State>>,
    max_receive_count: u32,
}

impl InMemoryRowQueue {
    /// A queue whose messages move to the dead-letter queue after `max_receive_count` receives.
    #[must_use]
    pub fn new(max_receive_count: u32) -> Self {
        Self {
            state: Arc::default(),
            max_receive_count: max_receive_count.max(1),
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, PortError> {
        self.state
            .lock()
            .map_err(|_| PortError::Unexpected(anyhow!("queue lock poisoned")))
    }

    /// Receives up to `max` visible messages, hiding each for `visibility_timeout`.
    ///
    /// # Errors
    /// Only if the lock is poisoned.
    pub fn receive(
        &self,
        max: usize,
        visibility_timeout: Duration,
    ) -> Result<Vec<ReceivedMessage>, PortError> {
        let now = Instant::now();
        let max_receives = self.max_receive_count;
        let mut state = self.lock()?;
        let state = &mut *state;
        // Redrive: a visible message already received max times goes to the DLQ.
        let mut kept = VecDeque::with_capacity(state.messages.len());
        for message in state.messages.drain(..) {
            if message.visible_at <= now && message.receive_count >= max_receives {
                state.dead_letters.push(ReceivedMessage {
                    message_id: message.id,
                    receipt_handle: String::new(),
                    body: message.body,
                    receive_count: message.receive_count,
                });
            } else {
                kept.push_back(message);
            }
        }
        state.messages = kept;
        let mut out = Vec::new();
        for message in state.messages.iter_mut() {
            if out.len() >= max {
                break;
            }
            if message.visible_at > now {
                continue;
            }
            state.next_id += 1;
            message.receive_count += 1;
            message.visible_at = now + visibility_timeout;
            let receipt = format!("{}#{}", message.id, state.next_id);
            message.receipt = Some(receipt.clone());
            out.push(ReceivedMessage {
                message_id: message.id.clone(),
                receipt_handle: receipt,
                body: message.body.clone(),
                receive_count: message.receive_count,
            });
        }
        Ok(out)
    }

    /// Deletes a received message; a stale receipt handle is ignored, as in SQS.
    ///
    /// # Errors
    /// Only if the lock is poisoned.
    pub fn delete(&self, receipt_handle: &str) -> Result<(), PortError> {
        self.lock()?
            .messages
            .retain(|m| m.receipt.as_deref() != Some(receipt_handle));
        Ok(())
    }

    /// Messages not yet deleted (visible or in flight).
    ///
    /// # Errors
    /// Only if the lock is poisoned.
    pub fn len(&self) -> Result<usize, PortError> {
        Ok(self.lock()?.messages.len())
    }

    /// `true` when no message is waiting or in flight.
    ///
    /// # Errors
    /// Only if the lock is poisoned.
    pub fn is_empty(&self) -> Result<bool, PortError> {
        Ok(self.len()? == 0)
    }

    /// Messages moved to the dead-letter queue.
    ///
    /// # Errors
    /// Only if the lock is poisoned.
    pub fn dead_letters(&self) -> Result<Vec<ReceivedMessage>, PortError> {
        Ok(self.lock()?.dead_letters.clone())
    }
}

impl RowQueue for InMemoryRowQueue {
    async fn enqueue(&self, jobs: &[RowJob]) -> Result<(), PortError> {
        let bodies = message_bodies(jobs)?;
        let now = Instant::now();
        let mut state = self.lock()?;
        for body in bodies {
            state.next_id += 1;
            let id = format!("msg-{:08}", state.next_id);
            state.messages.push_back(Message {
                id,
                body,
                receive_count: 0,
                visible_at: now,
                receipt: None,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::OutputSpec;

    fn job() -> RowJob {
        RowJob {
            version: 1,
            request_id: "r".into(),
            tenant: "t".into(),
            row_index: 0,
            serial: "1".into(),
            product_name: "p".into(),
            input_urls: vec!["http://x.test/a.jpg".into()],
            output_spec: OutputSpec::default(),
        }
    }

    #[tokio::test]
    async fn undeleted_message_returns_and_then_goes_to_the_dead_letter_queue() {
        let queue = InMemoryRowQueue::new(2);
        queue.enqueue(&[job()]).await.unwrap();
        let first = queue.receive(10, Duration::ZERO).unwrap();
        assert_eq!(first[0].receive_count, 1);
        let second = queue.receive(10, Duration::ZERO).unwrap();
        assert_eq!(second[0].receive_count, 2);
        assert!(queue.receive(10, Duration::ZERO).unwrap().is_empty());
        assert_eq!(queue.dead_letters().unwrap().len(), 1);
        assert!(queue.is_empty().unwrap());
    }

    #[tokio::test]
    async fn in_flight_message_is_invisible_until_its_timeout() {
        let queue = InMemoryRowQueue::new(5);
        queue.enqueue(&[job()]).await.unwrap();
        let got = queue.receive(10, Duration::from_secs(60)).unwrap();
        assert!(
            queue
                .receive(10, Duration::from_secs(60))
                .unwrap()
                .is_empty()
        );
        queue.delete(&got[0].receipt_handle).unwrap();
        assert!(queue.is_empty().unwrap());
    }
}
