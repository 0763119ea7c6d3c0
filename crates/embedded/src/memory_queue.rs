//! In-memory [`RowQueue`] with SQS semantics: a received message is invisible for the
//! visibility timeout, comes back if not deleted, carries its receive count, and moves to the
//! dead-letter queue when received more than `max_receive_count` times (SQS redrive policy).
//!
//! Row messages carry their tenant as message group (`MessageGroupId`) and are delivered as an
//! SQS fair queue delivers them: a tenant with more messages in flight than another is served
//! after it, so one tenant's backlog does not hold up the others ("Amazon SQS fair queues",
//! Amazon SQS Developer Guide).
//!
//! A faithful fake: bodies are checked against SQS's size limit and allowed characters, and
//! enqueues go out in batches sized by entries and bytes ([`pixpress_app::limits`]); a
//! [`FaultInjector`] can throttle calls and deliver messages twice (standard queues deliver at
//! least once). Throttled enqueues are retried in process like the SQS adapter's.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use tokio::sync::Notify;

use super::faults::{Call, FaultInjector, Faults, lock};
use pixpress_app::limits::sqs_batches;
use pixpress_app::ports::{
    ChunkQueue, PortError, RowQueue, SQS_MAX_DELAY_AFTER_RECEIVE, SQS_MAX_VISIBILITY, WebhookQueue,
    chunk_bodies, message_bodies,
};
use pixpress_app::retry::{RetryPolicy, retry};
use pixpress_domain::model::{ChunkJob, RowJob, WebhookJob};

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
    /// `MessageGroupId`: the tenant of a row message.
    group: Option<String>,
    receive_count: u32,
    visible_at: Instant,
    receipt: Option<String>,
    /// When the current receipt was handed out.
    received_at: Instant,
}

#[derive(Debug, Default)]
struct State {
    messages: VecDeque<Message>,
    next_id: u64,
}

/// The in-memory queue. Clones share state.
#[derive(Debug, Clone)]
pub struct InMemoryRowQueue {
    state: Arc<Mutex<State>>,
    arrived: Arc<Notify>,
    max_receive_count: u32,
    dead_letter: Option<Box<InMemoryRowQueue>>,
    faults: Faults,
}

impl InMemoryRowQueue {
    /// A queue whose messages move to its dead-letter queue after `max_receive_count` receives.
    #[must_use]
    pub fn new(max_receive_count: u32) -> Self {
        let mut queue = Self::without_redrive();
        queue.max_receive_count = max_receive_count.max(1);
        queue.dead_letter = Some(Box::new(Self::without_redrive()));
        queue
    }

    /// A queue without a redrive policy (a dead-letter queue).
    fn without_redrive() -> Self {
        Self {
            state: Arc::default(),
            arrived: Arc::new(Notify::new()),
            max_receive_count: u32::MAX,
            dead_letter: None,
            faults: Faults::default(),
        }
    }

    /// The same queue (and its dead-letter queue), failing calls as `faults` decides.
    #[must_use]
    pub fn with_faults(mut self, faults: Arc<dyn FaultInjector>) -> Self {
        if let Some(dlq) = self.dead_letter.take() {
            self.dead_letter = Some(Box::new(dlq.with_faults(faults.clone())));
        }
        self.faults = Faults::new(faults);
        self
    }

    /// The dead-letter queue (shares state with this queue's redrive target).
    #[must_use]
    pub fn dead_letter_queue(&self) -> Option<InMemoryRowQueue> {
        self.dead_letter.as_deref().cloned()
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, PortError> {
        lock(&self.state, "queue")
    }

    /// Sends `bodies` in batches within SQS's limits, each retried as the SQS adapter retries
    /// (`context` names the call in errors).
    /// `groups`, when given, holds each body's message group.
    async fn send_bodies(
        &self,
        bodies: &[String],
        groups: Option<&[String]>,
        context: &str,
    ) -> Result<(), PortError> {
        for batch in sqs_batches(bodies) {
            let group_batch = groups.map(|g| &g[batch.clone()]);
            let batch = &bodies[batch];
            retry(&RetryPolicy::STORAGE, context, || async {
                self.send_batch(batch, group_batch)
            })
            .await?;
        }
        Ok(())
    }

    fn push(state: &mut State, body: String, group: Option<String>, now: Instant) {
        state.next_id += 1;
        let id = format!("msg-{:08}", state.next_id);
        state.messages.push_back(Message {
            id,
            body,
            group,
            receive_count: 0,
            visible_at: now,
            receipt: None,
            received_at: now,
        });
    }

    /// Waits until a message may have arrived or `max_wait` passed (what a long poll does).
    pub async fn wait_for_messages(&self, max_wait: Duration) {
        let _ = tokio::time::timeout(max_wait, self.arrived.notified()).await;
    }

    /// Receives up to `max` visible messages, hiding each for `visibility_timeout`.
    ///
    /// # Errors
    /// [`PortError::Throttled`] when a fault says so; otherwise only if the lock is poisoned.
    pub fn receive(
        &self,
        max: usize,
        visibility_timeout: Duration,
    ) -> Result<Vec<ReceivedMessage>, PortError> {
        self.faults.check(Call::Receive)?;
        let now = Instant::now();
        let max_receives = self.max_receive_count;
        let mut dead = Vec::new();
        let mut out = Vec::new();
        {
            let mut state = self.lock()?;
            let state = &mut *state;
            // Redrive: a visible message already received max times goes to the DLQ.
            let mut kept = VecDeque::with_capacity(state.messages.len());
            for message in state.messages.drain(..) {
                if message.visible_at <= now && message.receive_count >= max_receives {
                    dead.push((message.body, message.group));
                } else {
                    kept.push_back(message);
                }
            }
            state.messages = kept;
            let mut copies = Vec::new();
            for index in fair_order(&state.messages, max, now) {
                let message = &mut state.messages[index];
                state.next_id += 1;
                message.receive_count += 1;
                message.visible_at = now + visibility_timeout;
                message.received_at = now;
                let receipt = format!("{}#{}", message.id, state.next_id);
                message.receipt = Some(receipt.clone());
                out.push(ReceivedMessage {
                    message_id: message.id.clone(),
                    receipt_handle: receipt,
                    body: message.body.clone(),
                    receive_count: message.receive_count,
                });
                if self.faults.duplicate_delivery() {
                    copies.push((message.body.clone(), message.group.clone()));
                }
            }
            for (body, group) in copies {
                Self::push(state, body, group, now);
            }
        }
        if let Some(dlq) = &self.dead_letter
            && !dead.is_empty()
        {
            let mut state = dlq.lock()?;
            for (body, group) in dead {
                Self::push(&mut state, body, group, now);
            }
            drop(state);
            dlq.arrived.notify_waiters();
        }
        Ok(out)
    }

    /// Deletes a received message; a stale receipt handle is ignored, as in SQS.
    ///
    /// # Errors
    /// [`PortError::Throttled`] when a fault says so; otherwise only if the lock is poisoned.
    pub fn delete(&self, receipt_handle: &str) -> Result<(), PortError> {
        self.faults.check(Call::Delete)?;
        self.lock()?
            .messages
            .retain(|m| m.receipt.as_deref() != Some(receipt_handle));
        Ok(())
    }

    /// Hides a received message for `timeout` from now (SQS `ChangeMessageVisibility`); a stale
    /// receipt handle is ignored. As SQS, refuses to hide a message past 12 hours after its
    /// receipt ([`SQS_MAX_VISIBILITY`]).
    ///
    /// # Errors
    /// [`PortError::Throttled`] when a fault says so; [`PortError::LimitExceeded`] past the
    /// 12 hours; otherwise only if the lock is poisoned.
    pub fn change_visibility(
        &self,
        receipt_handle: &str,
        timeout: Duration,
    ) -> Result<(), PortError> {
        self.faults.check(Call::Receive)?;
        let now = Instant::now();
        for message in &mut self.lock()?.messages {
            if message.receipt.as_deref() == Some(receipt_handle) {
                let held = now.duration_since(message.received_at);
                if held + timeout > SQS_MAX_VISIBILITY {
                    return Err(PortError::LimitExceeded(format!(
                        "a visibility timeout of {} s after {} s in flight passes the 12 hours after receipt",
                        timeout.as_secs(),
                        held.as_secs()
                    )));
                }
                message.visible_at = now + timeout;
            }
        }
        Ok(())
    }

    /// Keeps the received message `receipt_handle` hidden for at least `timeout` from now,
    /// never shortening a longer delay (the local pump's heartbeat for a running invocation,
    /// which must not undo a row the worker delayed).
    ///
    /// # Errors
    /// As [`InMemoryRowQueue::change_visibility`].
    pub fn extend_visibility(
        &self,
        receipt_handle: &str,
        timeout: Duration,
    ) -> Result<(), PortError> {
        self.faults.check(Call::Receive)?;
        let until = Instant::now() + timeout;
        for message in &mut self.lock()?.messages {
            if message.receipt.as_deref() == Some(receipt_handle) {
                message.visible_at = message.visible_at.max(until);
            }
        }
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

    /// The bodies in the dead-letter queue (not yet consumed from it).
    ///
    /// # Errors
    /// Only if the lock is poisoned.
    pub fn dead_letters(&self) -> Result<Vec<String>, PortError> {
        match &self.dead_letter {
            Some(dlq) => Ok(dlq
                .lock()?
                .messages
                .iter()
                .map(|m| m.body.clone())
                .collect()),
            None => Ok(Vec::new()),
        }
    }

    /// Sends `bodies` as one `SendMessageBatch` would: all or nothing here (the SQS adapter
    /// re-sends the entries a batch reports failed).
    fn send_batch(&self, bodies: &[String], groups: Option<&[String]>) -> Result<(), PortError> {
        self.faults.check(Call::Enqueue)?;
        let now = Instant::now();
        let mut state = self.lock()?;
        for (i, body) in bodies.iter().enumerate() {
            let group = groups.and_then(|g| g.get(i)).cloned();
            Self::push(&mut state, body.clone(), group, now);
        }
        drop(state);
        self.arrived.notify_waiters();
        Ok(())
    }
}

/// The positions of up to `max` visible messages in the order a fair queue delivers them: each
/// next message comes from the message group with the fewest messages in flight (those
/// received and still hidden, counting the ones picked so far), oldest first within a group and
/// between groups with as many in flight. Messages without a group form one group.
fn fair_order(messages: &VecDeque<Message>, max: usize, now: Instant) -> Vec<usize> {
    fn group(m: &Message) -> &str {
        m.group.as_deref().unwrap_or_default()
    }
    let mut in_flight: HashMap<&str, usize> = HashMap::new();
    let mut visible: HashMap<&str, VecDeque<usize>> = HashMap::new();
    for (index, message) in messages.iter().enumerate() {
        if message.visible_at > now {
            if message.receipt.is_some() {
                *in_flight.entry(group(message)).or_default() += 1;
            }
        } else {
            // No group can give more than `max` messages to one receive.
            let candidates = visible.entry(group(message)).or_default();
            if candidates.len() < max {
                candidates.push_back(index);
            }
        }
    }
    let mut order = Vec::with_capacity(max.min(messages.len()));
    while order.len() < max {
        let Some(next) = visible
            .iter()
            .filter_map(|(g, queue)| {
                let first = *queue.front()?;
                Some((in_flight.get(g).copied().unwrap_or(0), first, *g))
            })
            .min()
        else {
            break;
        };
        let (_, index, g) = next;
        if let Some(queue) = visible.get_mut(g) {
            queue.pop_front();
        }
        *in_flight.entry(g).or_default() += 1;
        order.push(index);
    }
    order
}

impl WebhookQueue for InMemoryRowQueue {
    async fn send_webhook(&self, job: &WebhookJob) -> Result<(), PortError> {
        let body = serde_json::to_string(job)
            .map_err(|e| PortError::Unexpected(anyhow!("webhook job encoding: {e}")))?;
        self.send_batch(&[body], None)
    }

    async fn retry_webhook_later(
        &self,
        receipt_handle: &str,
        delay: Duration,
    ) -> Result<(), PortError> {
        self.change_visibility(receipt_handle, delay.min(SQS_MAX_DELAY_AFTER_RECEIVE))
    }
}

impl ChunkQueue for InMemoryRowQueue {
    async fn enqueue_chunks(&self, jobs: &[ChunkJob]) -> Result<(), PortError> {
        self.send_bodies(&chunk_bodies(jobs)?, None, "sending chunk messages")
            .await
    }

    async fn retry_chunk_later(
        &self,
        receipt_handle: &str,
        delay: Duration,
    ) -> Result<(), PortError> {
        self.change_visibility(receipt_handle, delay.min(SQS_MAX_DELAY_AFTER_RECEIVE))
    }
}

impl RowQueue for InMemoryRowQueue {
    async fn retry_row_later(
        &self,
        receipt_handle: &str,
        delay: Duration,
    ) -> Result<(), PortError> {
        self.change_visibility(receipt_handle, delay.min(SQS_MAX_DELAY_AFTER_RECEIVE))
    }

    async fn enqueue(&self, jobs: &[RowJob]) -> Result<(), PortError> {
        let groups: Vec<String> = jobs.iter().map(|job| job.tenant.clone()).collect();
        self.send_bodies(
            &message_bodies(jobs)?,
            Some(&groups),
            "sending row messages",
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pixpress_domain::model::OutputSpec;

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
            resume: false,
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
        let dlq = queue.dead_letter_queue().unwrap();
        let dead = dlq.receive(10, Duration::from_secs(30)).unwrap();
        assert_eq!(dead.len(), 1);
        dlq.delete(&dead[0].receipt_handle).unwrap();
        assert!(queue.dead_letters().unwrap().is_empty());
    }

    /// A fair queue: while one tenant has many rows in flight, another tenant's rows sent after
    /// its whole backlog are delivered next, and tenants with work in flight share receives.
    #[tokio::test]
    async fn a_quiet_tenants_rows_overtake_a_busy_tenants_backlog() {
        let queue = InMemoryRowQueue::new(5);
        let of = |tenant: &str, rows: u32| -> Vec<RowJob> {
            (0..rows)
                .map(|row_index| RowJob {
                    tenant: tenant.into(),
                    row_index,
                    ..job()
                })
                .collect()
        };
        queue.enqueue(&of("acme", 200)).await.unwrap();
        let busy = queue.receive(10, Duration::from_secs(60)).unwrap();
        assert_eq!(busy.len(), 10);
        queue.enqueue(&of("bolt", 5)).await.unwrap();
        let tenant = |m: &ReceivedMessage| serde_json::from_str::<RowJob>(&m.body).unwrap().tenant;
        let next = queue.receive(10, Duration::from_secs(60)).unwrap();
        let tenants: Vec<String> = next.iter().map(tenant).collect();
        // bolt's five first (acme has 10 in flight, bolt none), then acme's next in order.
        assert_eq!(&tenants[..5], ["bolt"; 5]);
        assert_eq!(&tenants[5..], ["acme"; 5]);
        let rows: Vec<u32> = next[5..]
            .iter()
            .map(|m| serde_json::from_str::<RowJob>(&m.body).unwrap().row_index)
            .collect();
        assert_eq!(rows, [10, 11, 12, 13, 14], "oldest first within a tenant");
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

    #[tokio::test]
    async fn messages_sqs_would_refuse_are_refused_before_anything_is_sent() {
        let queue = InMemoryRowQueue::new(5);
        let mut bad = job();
        bad.product_name = "Chair \u{FFFE}".into();
        let err = queue.enqueue(&[job(), bad]).await.unwrap_err();
        assert!(matches!(err, PortError::LimitExceeded(_)), "{err}");
        assert!(err.to_string().contains("row 0"), "{err}");
        let mut huge = job();
        huge.input_urls = vec!["https://x.test/".to_owned() + &"a".repeat(1_100_000)];
        assert!(matches!(
            queue.enqueue(&[huge]).await,
            Err(PortError::LimitExceeded(_))
        ));
        assert!(queue.is_empty().unwrap());
    }
}
