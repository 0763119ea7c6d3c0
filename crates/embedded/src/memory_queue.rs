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

use std::collections::{BTreeMap, BTreeSet, HashMap};
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

/// The queue's messages, indexed so every call costs the messages it touches, not the queue's
/// depth (a catalogue puts a million messages in it).
#[derive(Debug, Default)]
struct State {
    /// Every message not deleted, by sequence number (the order they were sent).
    messages: BTreeMap<u64, Message>,
    /// Visible messages of each message group (`""`: no group), oldest first.
    ready: HashMap<String, BTreeSet<u64>>,
    /// Hidden messages (received, or delayed), by when they become visible.
    hidden: BTreeSet<(Instant, u64)>,
    /// Hidden messages per group: received and in flight.
    in_flight: HashMap<String, usize>,
    /// The latest receipt handle of each received message.
    receipts: HashMap<String, u64>,
    next_id: u64,
}

fn group_of(message: &Message) -> String {
    message.group.clone().unwrap_or_default()
}

impl State {
    /// Hides message `seq` until `until`, out of the visible messages if it was there.
    fn hide(&mut self, seq: u64, until: Instant) {
        let Some(message) = self.messages.get_mut(&seq) else {
            return;
        };
        let group = message.group.clone().unwrap_or_default();
        if !self.hidden.remove(&(message.visible_at, seq)) {
            if let Some(ready) = self.ready.get_mut(&group) {
                ready.remove(&seq);
            }
            *self.in_flight.entry(group).or_default() += 1;
        }
        message.visible_at = until;
        self.hidden.insert((until, seq));
    }

    /// Moves the messages whose time has come from hidden to visible; returns those received
    /// `max_receives` times already (SQS's redrive: they leave for the dead-letter queue).
    fn wake(&mut self, now: Instant, max_receives: u32) -> Vec<(String, Option<String>)> {
        let mut dead = Vec::new();
        while let Some(&(at, seq)) = self.hidden.first() {
            if at > now {
                break;
            }
            self.hidden.pop_first();
            let Some(message) = self.messages.get(&seq) else {
                continue;
            };
            let group = group_of(message);
            if let Some(count) = self.in_flight.get_mut(&group) {
                *count = count.saturating_sub(1);
            }
            if message.receive_count >= max_receives {
                if let Some(message) = self.messages.remove(&seq) {
                    if let Some(receipt) = &message.receipt {
                        self.receipts.remove(receipt);
                    }
                    dead.push((message.body, message.group));
                }
            } else {
                self.ready.entry(group).or_default().insert(seq);
            }
        }
        dead
    }

    /// Removes message `seq` wherever it is.
    fn remove(&mut self, seq: u64) {
        let Some(message) = self.messages.remove(&seq) else {
            return;
        };
        let group = group_of(&message);
        if self.hidden.remove(&(message.visible_at, seq)) {
            if let Some(count) = self.in_flight.get_mut(&group) {
                *count = count.saturating_sub(1);
            }
        } else if let Some(ready) = self.ready.get_mut(&group) {
            ready.remove(&seq);
        }
        if let Some(receipt) = &message.receipt {
            self.receipts.remove(receipt);
        }
    }
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
        let seq = state.next_id;
        let id = format!("msg-{seq:08}");
        state
            .ready
            .entry(group.clone().unwrap_or_default())
            .or_default()
            .insert(seq);
        state.messages.insert(
            seq,
            Message {
                id,
                body,
                group,
                receive_count: 0,
                visible_at: now,
                receipt: None,
                received_at: now,
            },
        );
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
        let dead;
        let mut out = Vec::new();
        {
            let mut state = self.lock()?;
            let state = &mut *state;
            // Redrive: a message visible again after `max_receives` receives goes to the DLQ.
            dead = state.wake(now, max_receives);
            let mut copies = Vec::new();
            for seq in fair_order(state, max) {
                state.hide(seq, now + visibility_timeout);
                state.next_id += 1;
                let next_id = state.next_id;
                let Some(message) = state.messages.get_mut(&seq) else {
                    continue;
                };
                message.receive_count += 1;
                message.received_at = now;
                let receipt = format!("{}#{next_id}", message.id);
                if let Some(old) = message.receipt.replace(receipt.clone()) {
                    state.receipts.remove(&old);
                }
                state.receipts.insert(receipt.clone(), seq);
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
        let mut state = self.lock()?;
        if let Some(seq) = state.receipts.get(receipt_handle).copied() {
            state.remove(seq);
        }
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
        let mut state = self.lock()?;
        let Some(seq) = state.receipts.get(receipt_handle).copied() else {
            return Ok(());
        };
        if let Some(message) = state.messages.get(&seq) {
            let held = now.duration_since(message.received_at);
            if held + timeout > SQS_MAX_VISIBILITY {
                return Err(PortError::LimitExceeded(format!(
                    "a visibility timeout of {} s after {} s in flight passes the 12 hours after receipt",
                    timeout.as_secs(),
                    held.as_secs()
                )));
            }
        }
        // Visible again at once when `timeout` is zero: the next receive wakes it.
        state.hide(seq, now + timeout);
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
        let mut state = self.lock()?;
        let Some(seq) = state.receipts.get(receipt_handle).copied() else {
            return Ok(());
        };
        let visible_at = state.messages.get(&seq).map_or(until, |m| m.visible_at);
        state.hide(seq, visible_at.max(until));
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
                .values()
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

/// The sequence numbers of up to `max` visible messages in the order a fair queue delivers them:
/// each next message comes from the message group with the fewest messages in flight (those
/// received and still hidden, counting the ones picked so far), oldest first within a group and
/// between groups with as many in flight. Messages without a group form one group.
fn fair_order(state: &State, max: usize) -> Vec<u64> {
    let mut in_flight: HashMap<&str, usize> = state
        .in_flight
        .iter()
        .map(|(g, n)| (g.as_str(), *n))
        .collect();
    // No group can give more than `max` messages to one receive.
    let mut visible: HashMap<&str, std::collections::VecDeque<u64>> = state
        .ready
        .iter()
        .filter(|(_, seqs)| !seqs.is_empty())
        .map(|(g, seqs)| (g.as_str(), seqs.iter().copied().take(max).collect()))
        .collect();
    let mut order = Vec::with_capacity(max);
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
        let (_, seq, g) = next;
        if let Some(queue) = visible.get_mut(g) {
            queue.pop_front();
        }
        *in_flight.entry(g).or_default() += 1;
        order.push(seq);
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
