//! Embedded [`RowQueue`] with SQS semantics (messages in memory, or in a file:
//! [`TableStorage`]): a received message is invisible for the
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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::faults::{Call, FaultInjector, Faults, lock};
use super::table_store::{TableStorage, TableStore};
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
    /// Handle for [`EmbeddedQueue::delete`]; changes on every receive.
    pub receipt_handle: String,
    /// JSON body (a [`RowJob`]).
    pub body: String,
    /// How many times it has been received, this time included (SQS `ApproximateReceiveCount`).
    pub receive_count: u32,
}

/// A message as stored: its body and where it is in its life.
#[derive(Debug, Serialize, Deserialize)]
struct Message {
    body: String,
    /// `MessageGroupId`: the tenant of a row message.
    group: Option<String>,
    receive_count: u32,
    /// When it is (or became) visible, in nanoseconds since the queue's epoch.
    visible_at: u64,
    receipt: Option<String>,
    /// When the current receipt was handed out, in nanoseconds since the queue's epoch.
    received_at: u64,
}

/// Every message not deleted, by sequence number (the order they were sent).
const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
/// Visible messages by message group (`""`: no group), oldest first.
const READY: TableDefinition<(&str, u64), ()> = TableDefinition::new("ready");
/// Hidden messages (received, or delayed), by when they become visible.
const HIDDEN: TableDefinition<(u64, u64), ()> = TableDefinition::new("hidden");

/// The message id of sequence number `seq`.
fn message_id(seq: u64) -> String {
    format!("msg-{seq:08}")
}

/// The sequence number a receipt handle was issued for (`msg-<seq>#<n>`).
fn receipt_seq(receipt: &str) -> Option<u64> {
    receipt
        .strip_prefix("msg-")?
        .split_once('#')?
        .0
        .parse()
        .ok()
}

fn decode(bytes: &[u8]) -> Result<Message, redb::Error> {
    serde_json::from_slice(bytes)
        .map_err(|e| redb::Error::Corrupted(format!("a stored message does not decode: {e}")))
}

fn encode(message: &Message) -> Result<Vec<u8>, redb::Error> {
    serde_json::to_vec(message)
        .map_err(|e| redb::Error::Corrupted(format!("a message does not encode: {e}")))
}

/// The queue's tables open in one write transaction: every call costs the messages it
/// touches, not the queue's depth (a catalogue puts a million messages in it).
struct Tables<'t> {
    messages: redb::Table<'t, u64, &'static [u8]>,
    ready: redb::Table<'t, (&'static str, u64), ()>,
    hidden: redb::Table<'t, (u64, u64), ()>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t redb::WriteTransaction) -> Result<Self, redb::Error> {
        Ok(Self {
            messages: txn.open_table(MESSAGES)?,
            ready: txn.open_table(READY)?,
            hidden: txn.open_table(HIDDEN)?,
        })
    }

    fn get(&self, seq: u64) -> Result<Option<Message>, redb::Error> {
        self.messages
            .get(seq)?
            .map(|value| decode(value.value()))
            .transpose()
    }

    fn put(&mut self, seq: u64, message: &Message) -> Result<(), redb::Error> {
        self.messages.insert(seq, encode(message)?.as_slice())?;
        Ok(())
    }
}

/// The queue: its messages in a [`TableStore`] (memory, or a file: [`TableStorage`]), its
/// counts in memory (a handful of message groups).
#[derive(Debug, Default)]
struct State {
    store: TableStore,
    counts: Counts,
}

/// Counts of the queue's messages.
#[derive(Debug, Default)]
struct Counts {
    /// Messages not deleted.
    len: usize,
    /// Visible messages per group.
    ready: HashMap<String, usize>,
    /// Hidden messages per group: received and in flight.
    in_flight: HashMap<String, usize>,
    next_id: u64,
}

/// Nanoseconds from `epoch` to `at`.
fn nanos(epoch: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

fn decrement(counts: &mut HashMap<String, usize>, group: &str) {
    if let Some(count) = counts.get_mut(group) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            counts.remove(group);
        }
    }
}

impl Counts {
    fn push(
        &mut self,
        tables: &mut Tables<'_>,
        body: String,
        group: Option<String>,
        now: u64,
    ) -> Result<(), redb::Error> {
        self.next_id += 1;
        let seq = self.next_id;
        let key = group.clone().unwrap_or_default();
        tables.ready.insert((key.as_str(), seq), ())?;
        *self.ready.entry(key).or_default() += 1;
        tables.put(
            seq,
            &Message {
                body,
                group,
                receive_count: 0,
                visible_at: now,
                receipt: None,
                received_at: now,
            },
        )?;
        self.len += 1;
        Ok(())
    }

    /// Hides message `seq` until `until`, out of the visible messages if it was there.
    fn hide(&mut self, tables: &mut Tables<'_>, seq: u64, until: u64) -> Result<(), redb::Error> {
        let Some(mut message) = tables.get(seq)? else {
            return Ok(());
        };
        let group = message.group.clone().unwrap_or_default();
        if tables.hidden.remove((message.visible_at, seq))?.is_none() {
            if tables.ready.remove((group.as_str(), seq))?.is_some() {
                decrement(&mut self.ready, &group);
            }
            *self.in_flight.entry(group).or_default() += 1;
        }
        message.visible_at = until;
        tables.put(seq, &message)?;
        tables.hidden.insert((until, seq), ())?;
        Ok(())
    }

    /// Moves the messages whose time has come from hidden to visible; returns those received
    /// `max_receives` times already (SQS's redrive: they leave for the dead-letter queue).
    fn wake(
        &mut self,
        tables: &mut Tables<'_>,
        now: u64,
        max_receives: u32,
    ) -> Result<Vec<(String, Option<String>)>, redb::Error> {
        let mut dead = Vec::new();
        loop {
            let Some((at, seq)) = tables.hidden.first()?.map(|(key, _)| key.value()) else {
                break;
            };
            if at > now {
                break;
            }
            tables.hidden.remove((at, seq))?;
            let Some(message) = tables.get(seq)? else {
                continue;
            };
            let group = message.group.clone().unwrap_or_default();
            decrement(&mut self.in_flight, &group);
            if message.receive_count >= max_receives {
                tables.messages.remove(seq)?;
                self.len = self.len.saturating_sub(1);
                dead.push((message.body, message.group));
            } else {
                tables.ready.insert((group.as_str(), seq), ())?;
                *self.ready.entry(group).or_default() += 1;
            }
        }
        Ok(dead)
    }

    /// Removes message `seq` wherever it is.
    fn remove(&mut self, tables: &mut Tables<'_>, seq: u64) -> Result<(), redb::Error> {
        let Some(message) = tables.get(seq)? else {
            return Ok(());
        };
        tables.messages.remove(seq)?;
        self.len = self.len.saturating_sub(1);
        let group = message.group.unwrap_or_default();
        if tables.hidden.remove((message.visible_at, seq))?.is_some() {
            decrement(&mut self.in_flight, &group);
        } else if tables.ready.remove((group.as_str(), seq))?.is_some() {
            decrement(&mut self.ready, &group);
        }
        Ok(())
    }

    /// The message `receipt` was issued for, while that receipt is its latest.
    fn by_receipt(
        tables: &Tables<'_>,
        receipt: &str,
    ) -> Result<Option<(u64, Message)>, redb::Error> {
        let Some(seq) = receipt_seq(receipt) else {
            return Ok(None);
        };
        Ok(tables
            .get(seq)?
            .filter(|m| m.receipt.as_deref() == Some(receipt))
            .map(|m| (seq, m)))
    }
}

/// The embedded queue. Clones share state.
#[derive(Debug, Clone)]
pub struct EmbeddedQueue {
    state: Arc<Mutex<State>>,
    /// What the stored times count from.
    epoch: Instant,
    arrived: Arc<Notify>,
    max_receive_count: u32,
    dead_letter: Option<Box<EmbeddedQueue>>,
    faults: Faults,
}

impl EmbeddedQueue {
    /// A queue in memory whose messages move to its dead-letter queue after
    /// `max_receive_count` receives.
    #[must_use]
    pub fn new(max_receive_count: u32) -> Self {
        let mut queue = Self::without_redrive(State::default());
        queue.max_receive_count = max_receive_count.max(1);
        queue.dead_letter = Some(Box::new(Self::without_redrive(State::default())));
        queue
    }

    /// As [`EmbeddedQueue::new`], the messages (and the dead-letter queue's) kept as
    /// `storage` says: in a file, memory stays bounded however many messages wait.
    ///
    /// # Errors
    /// When the file cannot be created.
    pub fn stored(max_receive_count: u32, storage: &TableStorage) -> Result<Self, PortError> {
        let state = |name| {
            Ok::<_, PortError>(State {
                store: TableStore::open(storage, name)?,
                ..State::default()
            })
        };
        let mut queue = Self::without_redrive(state("queue")?);
        queue.max_receive_count = max_receive_count.max(1);
        queue.dead_letter = Some(Box::new(Self::without_redrive(state("dead-letters")?)));
        Ok(queue)
    }

    /// A queue without a redrive policy (a dead-letter queue).
    fn without_redrive(state: State) -> Self {
        Self {
            state: Arc::new(Mutex::new(state)),
            epoch: Instant::now(),
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
    pub fn dead_letter_queue(&self) -> Option<EmbeddedQueue> {
        self.dead_letter.as_deref().cloned()
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, PortError> {
        lock(&self.state, "queue")
    }

    /// Runs `f` on the state and the open tables in one write transaction.
    fn update<T>(
        &self,
        f: impl FnOnce(&mut Counts, &mut Tables<'_>) -> Result<T, redb::Error>,
    ) -> Result<T, PortError> {
        let mut guard = self.lock()?;
        let State { store, counts } = &mut *guard;
        store.write(|txn| {
            let mut tables = Tables::open(txn)?;
            f(counts, &mut tables)
        })
    }

    /// Nanoseconds since the queue's epoch.
    fn now(&self) -> u64 {
        nanos(self.epoch, Instant::now())
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

    /// Waits until a message may have arrived or `max_wait` passed (what a long poll does).
    pub async fn wait_for_messages(&self, max_wait: Duration) {
        let _ = tokio::time::timeout(max_wait, self.arrived.notified()).await;
    }

    /// Receives up to `max` visible messages, hiding each for `visibility_timeout`.
    ///
    /// # Errors
    /// [`PortError::Throttled`] when a fault says so; otherwise only if the lock is poisoned
    /// or the store fails.
    pub fn receive(
        &self,
        max: usize,
        visibility_timeout: Duration,
    ) -> Result<Vec<ReceivedMessage>, PortError> {
        self.faults.check(Call::Receive)?;
        let now = self.now();
        let hidden_until = nanos(self.epoch, Instant::now() + visibility_timeout);
        let max_receives = self.max_receive_count;
        let (out, dead) = self.update(|state, tables| {
            // Redrive: a message visible again after `max_receives` receives goes to the DLQ.
            let dead = state.wake(tables, now, max_receives)?;
            let mut out = Vec::new();
            let mut copies = Vec::new();
            for seq in fair_order(state, tables, max)? {
                state.hide(tables, seq, hidden_until)?;
                state.next_id += 1;
                let Some(mut message) = tables.get(seq)? else {
                    continue;
                };
                message.receive_count += 1;
                message.received_at = now;
                let receipt = format!("{}#{}", message_id(seq), state.next_id);
                message.receipt = Some(receipt.clone());
                tables.put(seq, &message)?;
                if self.faults.duplicate_delivery() {
                    copies.push((message.body.clone(), message.group.clone()));
                }
                out.push(ReceivedMessage {
                    message_id: message_id(seq),
                    receipt_handle: receipt,
                    body: message.body,
                    receive_count: message.receive_count,
                });
            }
            for (body, group) in copies {
                state.push(tables, body, group, now)?;
            }
            Ok((out, dead))
        })?;
        if let Some(dlq) = &self.dead_letter
            && !dead.is_empty()
        {
            let at = dlq.now();
            dlq.update(|state, tables| {
                for (body, group) in dead {
                    state.push(tables, body, group, at)?;
                }
                Ok(())
            })?;
            dlq.arrived.notify_waiters();
        }
        Ok(out)
    }

    /// Deletes a received message; a stale receipt handle is ignored, as in SQS.
    ///
    /// # Errors
    /// [`PortError::Throttled`] when a fault says so; otherwise only if the lock is poisoned
    /// or the store fails.
    pub fn delete(&self, receipt_handle: &str) -> Result<(), PortError> {
        self.faults.check(Call::Delete)?;
        self.update(|state, tables| {
            if let Some((seq, _)) = Counts::by_receipt(tables, receipt_handle)? {
                state.remove(tables, seq)?;
            }
            Ok(())
        })
    }

    /// Hides a received message for `timeout` from now (SQS `ChangeMessageVisibility`); a stale
    /// receipt handle is ignored. As SQS, refuses to hide a message past 12 hours after its
    /// receipt ([`SQS_MAX_VISIBILITY`]).
    ///
    /// # Errors
    /// [`PortError::Throttled`] when a fault says so; [`PortError::LimitExceeded`] past the
    /// 12 hours; otherwise only if the lock is poisoned or the store fails.
    pub fn change_visibility(
        &self,
        receipt_handle: &str,
        timeout: Duration,
    ) -> Result<(), PortError> {
        self.faults.check(Call::Receive)?;
        let now = self.now();
        let until = nanos(self.epoch, Instant::now() + timeout);
        let refused = self.update(|state, tables| {
            let Some((seq, message)) = Counts::by_receipt(tables, receipt_handle)? else {
                return Ok(None);
            };
            let held = Duration::from_nanos(now.saturating_sub(message.received_at));
            if held + timeout > SQS_MAX_VISIBILITY {
                return Ok(Some(held));
            }
            // Visible again at once when `timeout` is zero: the next receive wakes it.
            state.hide(tables, seq, until)?;
            Ok(None)
        })?;
        match refused {
            Some(held) => Err(PortError::LimitExceeded(format!(
                "a visibility timeout of {} s after {} s in flight passes the 12 hours after receipt",
                timeout.as_secs(),
                held.as_secs()
            ))),
            None => Ok(()),
        }
    }

    /// Keeps the received message `receipt_handle` hidden for at least `timeout` from now,
    /// never shortening a longer delay (the local pump's heartbeat for a running invocation,
    /// which must not undo a row the worker delayed).
    ///
    /// # Errors
    /// As [`EmbeddedQueue::change_visibility`].
    pub fn extend_visibility(
        &self,
        receipt_handle: &str,
        timeout: Duration,
    ) -> Result<(), PortError> {
        self.faults.check(Call::Receive)?;
        let until = nanos(self.epoch, Instant::now() + timeout);
        self.update(|state, tables| {
            if let Some((seq, message)) = Counts::by_receipt(tables, receipt_handle)? {
                state.hide(tables, seq, message.visible_at.max(until))?;
            }
            Ok(())
        })
    }

    /// Messages not yet deleted (visible or in flight).
    ///
    /// # Errors
    /// Only if the lock is poisoned.
    pub fn len(&self) -> Result<usize, PortError> {
        Ok(self.lock()?.counts.len)
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
    /// Only if the lock is poisoned or the store fails.
    pub fn dead_letters(&self) -> Result<Vec<String>, PortError> {
        let Some(dlq) = &self.dead_letter else {
            return Ok(Vec::new());
        };
        dlq.update(|_, tables| {
            tables
                .messages
                .iter()?
                .map(|entry| Ok(decode(entry?.1.value())?.body))
                .collect()
        })
    }

    /// Sends `bodies` as one `SendMessageBatch` would: all or nothing here (the SQS adapter
    /// re-sends the entries a batch reports failed).
    fn send_batch(&self, bodies: &[String], groups: Option<&[String]>) -> Result<(), PortError> {
        self.faults.check(Call::Enqueue)?;
        let now = self.now();
        self.update(|state, tables| {
            for (i, body) in bodies.iter().enumerate() {
                let group = groups.and_then(|g| g.get(i)).cloned();
                state.push(tables, body.clone(), group, now)?;
            }
            Ok(())
        })?;
        self.arrived.notify_waiters();
        Ok(())
    }
}

/// The sequence numbers of up to `max` visible messages in the order a fair queue delivers them:
/// the oldest visible message of the group with the fewest messages in flight first, counting
/// the ones this receive hands out.
fn fair_order(state: &Counts, tables: &Tables<'_>, max: usize) -> Result<Vec<u64>, redb::Error> {
    let mut in_flight: HashMap<&str, usize> = state
        .in_flight
        .iter()
        .map(|(g, n)| (g.as_str(), *n))
        .collect();
    // No group can give more than `max` messages to one receive.
    let mut visible: HashMap<&str, std::collections::VecDeque<u64>> = HashMap::new();
    for group in state.ready.keys() {
        let mut seqs = std::collections::VecDeque::new();
        for entry in tables
            .ready
            .range((group.as_str(), 0)..=(group.as_str(), u64::MAX))?
            .take(max)
        {
            seqs.push_back(entry?.0.value().1);
        }
        visible.insert(group.as_str(), seqs);
    }
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
    Ok(order)
}

impl WebhookQueue for EmbeddedQueue {
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

impl ChunkQueue for EmbeddedQueue {
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

impl RowQueue for EmbeddedQueue {
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
        let queue = EmbeddedQueue::new(2);
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
        let queue = EmbeddedQueue::new(5);
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
        let queue = EmbeddedQueue::new(5);
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
        let queue = EmbeddedQueue::new(5);
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
