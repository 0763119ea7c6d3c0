//! Embedded [`RequestRepository`] with a change log shaped like a DynamoDB stream
//! (`NEW_AND_OLD_IMAGES`): every write appends one record per changed item, in order.
//! Request items and counter shards are in memory; row items, which a catalogue has a million
//! of, in a [`RowTable`] (memory, or a file: [`TableStorage`]).
//!
//! A faithful fake of the DynamoDB adapter: the same item layout (request, rows, counter
//! shards, [`pixpress_domain::counting`]), the same limits — 400 KB per item, 100 actions and
//! 4 MB per transaction ([`pixpress_app::limits`]) — and the same failure modes. A
//! transaction holds its items between its start and its commit (an await point), and a second
//! transaction touching one of them in that window is cancelled with `TransactionConflict`, as
//! DynamoDB does ("Transaction conflict handling in DynamoDB", Amazon DynamoDB Developer Guide);
//! a [`FaultInjector`] can add throttling, conflicts and crashes. Both are retried in process
//! exactly as the DynamoDB adapter retries them ([`pixpress_app::retry`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::capacity::{Access, CapacityModel, Consumed, Meter};
use super::faults::{Call, FaultInjector, Faults, lock};
use super::row_table::RowTable;
use super::table_store::TableStorage;
use pixpress_app::limits::{
    DYNAMODB_MAX_ITEM_BYTES, DYNAMODB_MAX_TRANSACTION_ACTIONS, dynamodb_item_size,
};
use pixpress_app::ports::{
    Created, OpenPage, OpenRequests, OutputLedger, PortError, RequestControl, RequestIntake,
    RequestReader, RowLedger, RowPage, RowRecorded, Transition,
};
use pixpress_app::retry::{RetryPolicy, retry};
use pixpress_domain::counting::{
    COUNTER_SHARDS, MAX_PARTITIONS, Recount, ShardCheck, check_shard, empty_shards,
    partition_of_row, partition_of_shard, partitions_for, shard_of, shard_rows_total,
    shards_with_rows,
};
use pixpress_domain::item::{CounterItem, MetaItem, ProgressSeen, RowItem, ShardMarks};
use pixpress_domain::model::{
    Counters, DeliveryState, Failure, ImageOutcome, ImageProgress, OutputProgress, RequestMeta,
    RequestStatus, RowRecord, RowState, WebhookAttempt,
};
use pixpress_domain::storage_keys::{
    META_SK, counter_pk, counter_sk, partition_pk, request_pk, row_pk, row_sk,
};

/// Kind of change, as in a DynamoDB stream record's `eventName`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// `INSERT`.
    Insert,
    /// `MODIFY`.
    Modify,
}

impl ChangeKind {
    /// The stream's `eventName`.
    #[must_use]
    pub fn event_name(self) -> &'static str {
        match self {
            Self::Insert => "INSERT",
            Self::Modify => "MODIFY",
        }
    }
}

/// One change of one item.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRecord {
    /// The stream's `SequenceNumber`: decimal digits, increasing within a shard.
    pub sequence: String,
    /// Insert or modify.
    pub kind: ChangeKind,
    /// Partition key.
    pub pk: String,
    /// Sort key.
    pub sk: String,
    /// Item before the change (modify only).
    pub old_image: Option<serde_dynamo::Item>,
    /// Item after the change.
    pub new_image: serde_dynamo::Item,
}

/// The request item as stored: the record plus the set of done counter shards.
#[derive(Debug, Clone)]
struct StoredMeta {
    meta: RequestMeta,
    done_shards: BTreeSet<u32>,
    output_progress: Option<OutputProgress>,
    /// In the open requests (the sparse index `OPEN_INDEX` on DynamoDB).
    open: bool,
    progress_seen: Option<ProgressSeen>,
    /// Rows still being written (`MetaItem::creating`): invisible to readers.
    creating: bool,
    /// Partition keys its rows and counter shards spread over (`MetaItem::partitions`).
    partitions: u32,
}

impl StoredMeta {
    fn item(&self) -> Result<serde_dynamo::Item, PortError> {
        let mut item = MetaItem::new(self.meta.clone(), None);
        item.done_shards = self.done_shards.iter().copied().collect();
        item.output_progress.clone_from(&self.output_progress);
        if !self.open {
            item.open = None;
        }
        item.progress_seen = self.progress_seen;
        item.creating = self.creating;
        item.partitions = self.partitions;
        to_item(&item)
    }
}

type ItemKey = (String, String);

#[derive(Debug, Default)]
struct State {
    requests: HashMap<String, StoredMeta>,
    /// Row items (in memory or in a file: [`TableStorage`]).
    rows: RowTable,
    shards: HashMap<String, BTreeMap<u32, Counters>>,
    /// Each counter shard's `redelivered` and `verified` ([`CounterItem`]), when set.
    shard_marks: HashMap<String, BTreeMap<u32, ShardMarks>>,
    log: Vec<ChangeRecord>,
    sequence: u64,
    /// Items held by transactions between their start and their commit.
    in_flight: HashSet<ItemKey>,
    /// Transactions cancelled because another held one of their items.
    conflicts: u64,
    /// Capacity consumed, and the partition limits, when metered
    /// ([`EmbeddedRequestRepository::with_capacity`]).
    meter: Option<Meter>,
}

fn to_item<T: Serialize>(value: &T) -> Result<serde_dynamo::Item, PortError> {
    serde_dynamo::to_item(value).map_err(|e| PortError::Unexpected(anyhow!("item encoding: {e}")))
}

/// Refuses an item over DynamoDB's 400 KB (`ValidationException: Item size has exceeded the
/// maximum allowed size`).
fn check_item_size(item: &serde_dynamo::Item, what: &str) -> Result<usize, PortError> {
    let size = dynamodb_item_size(item);
    if size > DYNAMODB_MAX_ITEM_BYTES {
        return Err(PortError::LimitExceeded(format!(
            "{what} would be {size} bytes; DynamoDB items hold at most {DYNAMODB_MAX_ITEM_BYTES} bytes"
        )));
    }
    Ok(size)
}

fn conflict(call: &str) -> PortError {
    PortError::Conflict(format!(
        "{call}: TransactionConflict (another transaction is in progress on an item)"
    ))
}

impl State {
    fn log(
        &mut self,
        pk: String,
        sk: String,
        old: Option<serde_dynamo::Item>,
        new: serde_dynamo::Item,
    ) {
        // The notifier's event source mapping lets only request items through
        // (`template.yaml`, `FilterCriteria`); row and counter changes would only pile up
        // here, a million of them for a catalogue-sized request.
        if sk != META_SK {
            return;
        }
        self.sequence += 1;
        self.log.push(ChangeRecord {
            sequence: format!("{:021}", self.sequence),
            kind: if old.is_some() {
                ChangeKind::Modify
            } else {
                ChangeKind::Insert
            },
            pk,
            sk,
            old_image: old,
            new_image: new,
        });
    }

    /// A single-item write to an item a transaction holds fails with `TransactionConflict`.
    fn check_not_in_flight(&self, pk: &str, sk: &str, call: &str) -> Result<(), PortError> {
        if self.in_flight.contains(&(pk.to_owned(), sk.to_owned())) {
            return Err(conflict(call));
        }
        Ok(())
    }

    /// Charges `call` for `accesses` when metered ([`Meter::charge`]).
    fn charge(
        &mut self,
        call: &'static str,
        transactional: bool,
        accesses: &[Access<'_>],
    ) -> Result<(), PortError> {
        match &mut self.meter {
            Some(meter) => meter.charge(call, transactional, accesses),
            None => Ok(()),
        }
    }

    /// A `GetItem` of an item of `bytes` under partition key `pk`.
    fn charge_get(&mut self, pk: &str, bytes: usize, consistent: bool) -> Result<(), PortError> {
        let get = Access::Get {
            pk,
            bytes,
            consistent,
        };
        self.charge("GetItem", false, &[get])
    }

    /// A strongly consistent `Query` returning `bytes` of items under partition key `pk`.
    fn charge_query(&mut self, pk: &str, bytes: usize) -> Result<(), PortError> {
        let query = Access::Query {
            pk,
            bytes,
            consistent: true,
        };
        self.charge("Query", false, &[query])
    }

    /// Partition keys `request_id`'s rows and counter shards spread over (fixed at its
    /// creation); 1 when unknown.
    fn partitions(&self, request_id: &str) -> u32 {
        self.requests
            .get(request_id)
            .map_or(1, |stored| stored.partitions)
    }

    /// The item of row `row` of `request_id`.
    fn row_item(&self, request_id: &str, row: &RowRecord) -> Result<serde_dynamo::Item, PortError> {
        to_item(&RowItem::new(
            request_id,
            self.partitions(request_id),
            row.clone(),
            None,
        ))
    }

    /// The item of counter shard `shard` of `request_id` holding `counters` (and the shard's
    /// marks).
    fn counter_item(&self, request_id: &str, shard: u32, counters: Counters) -> CounterItem {
        CounterItem {
            counters,
            marks: self.marks(request_id, shard),
            ..CounterItem::new(request_id, self.partitions(request_id), shard, 0, None)
        }
    }

    /// Counter shard `shard`'s marks.
    fn marks(&self, request_id: &str, shard: u32) -> ShardMarks {
        self.shard_marks
            .get(request_id)
            .and_then(|m| m.get(&shard))
            .copied()
            .unwrap_or_default()
    }

    /// Counter shard `shard`'s tally; an error when it does not exist.
    fn shard(&self, request_id: &str, shard: u32) -> Result<Counters, PortError> {
        self.shards
            .get(request_id)
            .and_then(|s| s.get(&shard))
            .copied()
            .ok_or_else(|| {
                PortError::Unexpected(anyhow!(
                    "counter shard {shard} of request {request_id} does not exist"
                ))
            })
    }

    /// Writes counter shard `shard` (one `UpdateItem`, charged at the larger of its sizes
    /// before and after, and logged).
    fn write_shard(
        &mut self,
        request_id: &str,
        shard: u32,
        counters: Counters,
        marks: ShardMarks,
    ) -> Result<(), PortError> {
        let pk = counter_pk(request_id, self.partitions(request_id), shard);
        self.check_not_in_flight(&pk, &counter_sk(shard), "UpdateItem")?;
        let old_item =
            to_item(&self.counter_item(request_id, shard, self.shard(request_id, shard)?))?;
        let new_item = to_item(&CounterItem {
            counters,
            marks,
            ..CounterItem::new(request_id, self.partitions(request_id), shard, 0, None)
        })?;
        // Charged (and perhaps throttled) before anything changes: a refused write writes
        // nothing.
        if self.meter.is_some() {
            let bytes = dynamodb_item_size(&old_item).max(dynamodb_item_size(&new_item));
            self.charge("UpdateItem", false, &[Access::Write { pk: &pk, bytes }])?;
        }
        self.shards
            .entry(request_id.to_owned())
            .or_default()
            .insert(shard, counters);
        self.shard_marks
            .entry(request_id.to_owned())
            .or_default()
            .insert(shard, marks);
        self.log(pk, counter_sk(shard), Some(old_item), new_item);
        Ok(())
    }

    /// Bytes of the request item of `request_id` (0 when there is none or nothing meters).
    fn meta_bytes(&self, request_id: &str) -> usize {
        if self.meter.is_none() {
            return 0;
        }
        self.requests
            .get(request_id)
            .and_then(|stored| stored.item().ok())
            .map_or(0, |item| dynamodb_item_size(&item))
    }

    /// Bytes of the counter shard items of `request_id` under each of its partition keys
    /// (what the `Query` of each returns).
    fn shard_bytes(&self, request_id: &str) -> BTreeMap<String, usize> {
        let mut bytes: BTreeMap<String, usize> = (0..self.partitions(request_id))
            .map(|p| (partition_pk(request_id, self.partitions(request_id), p), 0))
            .collect();
        for (&shard, &counters) in self.shards.get(request_id).into_iter().flatten() {
            let item = self.counter_item(request_id, shard, counters);
            if let Ok(encoded) = to_item(&item) {
                *bytes.entry(item.pk).or_default() += dynamodb_item_size(&encoded);
            }
        }
        bytes
    }

    /// A strongly consistent read of the request (`GetItem`) and, while it runs, of its
    /// counter shards (`Query`), as the DynamoDB adapter reads it.
    fn charge_request_read(&mut self, request_id: &str) -> Result<(), PortError> {
        if self.meter.is_none() {
            return Ok(());
        }
        let bytes = self.meta_bytes(request_id);
        self.charge_get(&request_pk(request_id), bytes, true)?;
        let running = self
            .requests
            .get(request_id)
            .is_some_and(|s| !s.meta.status.is_terminal());
        if running {
            for (pk, bytes) in self.shard_bytes(request_id) {
                self.charge_query(&pk, bytes)?;
            }
        }
        Ok(())
    }

    /// Applies `change` to a request record and logs old/new images; a no-op if `change`
    /// returns `false` (a failed condition).
    fn update_meta(
        &mut self,
        request_id: &str,
        change: impl FnOnce(&mut StoredMeta) -> bool,
    ) -> Result<bool, PortError> {
        let pk = request_pk(request_id);
        self.check_not_in_flight(&pk, META_SK, "UpdateItem")?;
        let Some(stored) = self.requests.get(request_id) else {
            return Ok(false);
        };
        let mut updated = stored.clone();
        if !change(&mut updated) {
            return Ok(false);
        }
        let old_item = stored.item()?;
        let new_item = updated.item()?;
        let bytes = check_item_size(&new_item, "the request item")?;
        if self.meter.is_some() {
            let bytes = bytes.max(dynamodb_item_size(&old_item));
            self.charge("UpdateItem", false, &[Access::Write { pk: &pk, bytes }])?;
        }
        self.requests.insert(request_id.to_owned(), updated);
        self.log(pk, META_SK.to_owned(), Some(old_item), new_item);
        Ok(true)
    }

    /// The request with its counters summed over the shards while it runs.
    fn current(&self, request_id: &str) -> Option<RequestMeta> {
        let stored = self.requests.get(request_id).filter(|s| !s.creating)?;
        let mut meta = stored.meta.clone();
        if !meta.status.is_terminal() {
            for shard in self
                .shards
                .get(request_id)
                .into_iter()
                .flat_map(|s| s.values())
            {
                meta.counters.add_done(shard);
            }
        }
        Some(meta)
    }
}

/// Releases a transaction's items when it commits, fails or is dropped mid-way.
struct Hold<'a> {
    repo: &'a EmbeddedRequestRepository,
    keys: Vec<ItemKey>,
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        if let Ok(mut state) = self.repo.state.lock() {
            for key in &self.keys {
                state.in_flight.remove(key);
            }
        }
    }
}

/// The embedded repository. Clones share state.
#[derive(Debug, Clone, Default)]
pub struct EmbeddedRequestRepository {
    state: Arc<Mutex<State>>,
    faults: Faults,
    retry: Option<RetryPolicy>,
    /// At most this many partition keys per request (`None`: [`MAX_PARTITIONS`]).
    max_partitions: Option<u32>,
}

impl EmbeddedRequestRepository {
    /// An empty repository.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty repository keeping its row items as `storage` says: in a file, memory stays
    /// bounded however many rows a request has.
    ///
    /// # Errors
    /// When the file cannot be created.
    pub fn stored(storage: &TableStorage) -> Result<Self, PortError> {
        let repo = Self::new();
        repo.lock()?.rows = RowTable::open(storage)?;
        Ok(repo)
    }

    /// The same repository, failing calls as `faults` decides.
    #[must_use]
    pub fn with_faults(mut self, faults: Arc<dyn FaultInjector>) -> Self {
        self.faults = Faults::new(faults);
        self
    }

    /// The same repository with another in-process retry policy (default
    /// [`RetryPolicy::STORAGE`]).
    #[must_use]
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// The same repository spreading a request over at most `partitions` partition keys
    /// (rounded down to a power of two; default [`MAX_PARTITIONS`], as the DynamoDB adapter);
    /// 1 models the layout of requests
    /// stored before rows were spread, every item under `REQ#<id>`.
    #[must_use]
    pub fn with_max_partitions(mut self, partitions: u32) -> Self {
        // A power of two, so every counter shard keeps its rows' partition.
        let cap = partitions.clamp(1, MAX_PARTITIONS);
        self.max_partitions = Some(1 << cap.ilog2());
        self
    }

    /// The same repository, counting the read and write units of every call
    /// ([`crate::capacity`]); with `limits`, a partition key asked for more than it serves
    /// per second is throttled as DynamoDB throttles it.
    #[must_use]
    pub fn with_capacity(self, limits: Option<CapacityModel>) -> Self {
        if let Ok(mut state) = self.state.lock() {
            let mut meter = Meter::default();
            if let Some(limits) = limits {
                meter.limit(limits);
            }
            state.meter = Some(meter);
        }
        self
    }

    /// Capacity consumed so far per kind of call (`GetItem`, `Query`, `PutItem`,
    /// `UpdateItem`, `TransactWriteItems`); empty unless metered.
    ///
    /// # Errors
    /// Only if the lock is poisoned.
    pub fn consumed_capacity(&self) -> Result<BTreeMap<&'static str, Consumed>, PortError> {
        Ok(self
            .lock()?
            .meter
            .as_ref()
            .map(Meter::consumed)
            .unwrap_or_default())
    }

    /// Transactions cancelled so far because another transaction held one of their items
    /// (injected conflicts not included).
    ///
    /// # Errors
    /// Only if the lock is poisoned.
    pub fn conflicts(&self) -> Result<u64, PortError> {
        Ok(self.lock()?.conflicts)
    }

    fn policy(&self) -> RetryPolicy {
        self.retry.unwrap_or_default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, PortError> {
        lock(&self.state, "repository")
    }

    /// Removes and returns every change recorded since the last call, oldest first.
    ///
    /// # Errors
    /// Only if the lock is poisoned.
    pub fn drain_changes(&self) -> Result<Vec<ChangeRecord>, PortError> {
        Ok(std::mem::take(&mut self.lock()?.log))
    }

    /// Starts a transaction on `keys`: cancelled with `TransactionConflict` if another
    /// transaction holds one of them; otherwise holds them until the returned guard drops.
    async fn begin(&self, keys: Vec<ItemKey>) -> Result<Hold<'_>, PortError> {
        self.faults.check(Call::Transaction)?;
        {
            let mut state = self.lock()?;
            if keys.iter().any(|k| state.in_flight.contains(k)) {
                state.conflicts += 1;
                return Err(conflict("TransactWriteItems"));
            }
            state.in_flight.extend(keys.iter().cloned());
        }
        let hold = Hold { repo: self, keys };
        // The window in which DynamoDB's transaction coordinator holds the items: concurrent
        // writers to them run here and meet the conflict.
        tokio::task::yield_now().await;
        Ok(hold)
    }

    /// Writes `rows` of a catalogue's chunk as the DynamoDB adapter does: one conditional
    /// `PutItem` per row (no transaction: a replay completes a partial chunk), each checked
    /// against DynamoDB's item size and charged to its row's partition key.
    async fn put_row_items(&self, request_id: &str, rows: &[RowRecord]) -> Result<(), PortError> {
        let policy = self.policy();
        for row in rows {
            retry(&policy, "writing a row", || async {
                self.faults.check(Call::Write)?;
                let mut state = self.lock()?;
                let item = state.row_item(request_id, row)?;
                let bytes = check_item_size(&item, &format!("row {}", row.index))?;
                let pk = row_pk(request_id, state.partitions(request_id), row.index);
                state.check_not_in_flight(&pk, &row_sk(row.index), "PutItem")?;
                state.charge("PutItem", false, &[Access::Write { pk: &pk, bytes }])?;
                // A row written before (a replayed chunk), perhaps recorded since, is kept.
                state.rows.put_new(request_id, std::slice::from_ref(row))
            })
            .await?;
        }
        Ok(())
    }

    async fn put_new_items(
        &self,
        request_id: &str,
        rows: &[RowRecord],
        shards: &[(u32, u64)],
    ) -> Result<(), PortError> {
        let partitions = self.lock()?.partitions(request_id);
        let row_keys: Vec<ItemKey> = rows
            .iter()
            .map(|r| (row_pk(request_id, partitions, r.index), row_sk(r.index)))
            .collect();
        let shard_keys: Vec<ItemKey> = shards
            .iter()
            .map(|(s, _)| (counter_pk(request_id, partitions, *s), counter_sk(*s)))
            .collect();
        let hold = self
            .begin(row_keys.iter().chain(&shard_keys).cloned().collect())
            .await?;
        let mut state = self.lock()?;
        if state.meter.is_some() {
            let mut sizes = Vec::with_capacity(rows.len() + shards.len());
            for row in rows {
                sizes.push(dynamodb_item_size(&state.row_item(request_id, row)?));
            }
            for &(shard, rows_total) in shards {
                let item = CounterItem::new(request_id, partitions, shard, rows_total, None);
                sizes.push(dynamodb_item_size(&to_item(&item)?));
            }
            let accesses: Vec<Access<'_>> = row_keys
                .iter()
                .chain(&shard_keys)
                .zip(sizes)
                .map(|((pk, _), bytes)| Access::Write { pk, bytes })
                .collect();
            state.charge("TransactWriteItems", true, &accesses)?;
        }
        // New rows and shards pass no stream filter: not logged ([`State::log`]).
        state.rows.put_new(request_id, rows)?;
        for &(shard, rows_total) in shards {
            let exists = state
                .shards
                .get(request_id)
                .is_some_and(|s| s.contains_key(&shard));
            if exists {
                continue;
            }
            let item = CounterItem::new(request_id, partitions, shard, rows_total, None);
            state
                .shards
                .entry(request_id.to_owned())
                .or_default()
                .insert(shard, item.counters);
        }
        drop(state);
        drop(hold);
        Ok(())
    }

    /// Step 1 of a row outcome ([`pixpress_domain::counting`]): the row `PENDING` → `DONE`,
    /// one conditional `UpdateItem`. `Ok(false)` when the row's condition failed (recorded
    /// already; charged all the same, as DynamoDB charges a failed conditional write).
    async fn update_row(
        &self,
        request_id: &str,
        row_index: u32,
        images: &[ImageOutcome],
    ) -> Result<bool, PortError> {
        self.faults.check(Call::Outcome)?;
        let mut state = self.lock()?;
        let pk = row_pk(request_id, state.partitions(request_id), row_index);
        state.check_not_in_flight(&pk, &row_sk(row_index), "UpdateItem")?;
        let Some(row) = state.rows.get(request_id, row_index)? else {
            return Err(PortError::Unexpected(anyhow!(
                "row {row_index} of request {request_id} does not exist"
            )));
        };
        let old_row = state.row_item(request_id, &row)?;
        if row.state == RowState::Done {
            if state.meter.is_some() {
                // The refused write, then the read the DynamoDB adapter makes to tell a
                // recorded row from a missing one.
                let bytes = dynamodb_item_size(&old_row);
                state.charge("UpdateItem", false, &[Access::Write { pk: &pk, bytes }])?;
                state.charge_get(&pk, bytes, true)?;
            }
            return Ok(false);
        }
        let mut done = row.clone();
        done.state = RowState::Done;
        done.images = images.to_vec();
        done.progress = Vec::new();
        let new_row = state.row_item(request_id, &done)?;
        let row_size = check_item_size(&new_row, &format!("row {row_index}"))?;
        if state.meter.is_some() {
            let bytes = row_size.max(dynamodb_item_size(&old_row));
            state.charge("UpdateItem", false, &[Access::Write { pk: &pk, bytes }])?;
        }
        state.rows.put(request_id, &done)?;
        state.log(pk, row_sk(row_index), Some(old_row), new_row);
        Ok(true)
    }

    /// Step 2: adds `delta` (the winner's row) to shard `shard`'s tally or, with `None`,
    /// 1 to its `redelivered`; one `UpdateItem` conditional on the shard not being verified
    /// (when it is, the shard as read). Returns the shard's tally and marks after the write.
    async fn count_row(
        &self,
        request_id: &str,
        shard: u32,
        delta: Option<&Counters>,
    ) -> Result<(Counters, ShardMarks), PortError> {
        self.faults.check(Call::Outcome)?;
        let mut state = self.lock()?;
        let mut counters = state.shard(request_id, shard)?;
        let mut marks = state.marks(request_id, shard);
        if marks.verified {
            if state.meter.is_some() {
                let item = to_item(&state.counter_item(request_id, shard, counters))?;
                let bytes = dynamodb_item_size(&item);
                let pk = counter_pk(request_id, state.partitions(request_id), shard);
                state.charge("UpdateItem", false, &[Access::Write { pk: &pk, bytes }])?;
                state.charge_get(&pk, bytes, true)?;
            }
            return Ok((counters, marks));
        }
        match delta {
            Some(delta) => counters.add_done(delta),
            None => marks.redelivered += 1,
        }
        state.write_shard(request_id, shard, counters, marks)?;
        Ok((counters, marks))
    }

    /// Acts on shard `shard`'s tally and marks ([`check_shard`]): marks it done when full,
    /// recounts it from its rows when perhaps full. `true` when every shard is done.
    async fn settle_shard(
        &self,
        request_id: &str,
        shard: u32,
        counters: &Counters,
        marks: ShardMarks,
    ) -> Result<bool, PortError> {
        let full = match check_shard(counters, &marks) {
            ShardCheck::Full => true,
            ShardCheck::Recount => {
                let adds = counters.rows_done + marks.redelivered;
                self.recount_shard(request_id, shard, Some(adds)).await?
            }
            ShardCheck::Open => false,
        };
        if !full {
            return Ok(false);
        }
        self.mark_shard_done(request_id, shard).await
    }

    /// Recounts shard `shard` from its rows (a `Query` of its partition's rows) and, when all
    /// are `DONE`, writes the exact tally with `verified`. `true` when it did (or a recount
    /// did before). Otherwise, after the `adds` it was triggered by, stores when recounting
    /// can next succeed (`recount_after`).
    async fn recount_shard(
        &self,
        request_id: &str,
        shard: u32,
        adds: Option<u64>,
    ) -> Result<bool, PortError> {
        let policy = self.policy();
        let exact = retry(&policy, "recounting a counter shard", || async {
            self.faults.check(Call::Read)?;
            let mut state = self.lock()?;
            let rows_total = state.shard(request_id, shard)?.rows_total;
            let partitions = state.partitions(request_id);
            let partition = partition_of_shard(shard, partitions);
            let mut recount = Recount::new(rows_total);
            let mut bytes = 0;
            state.rows.for_each(request_id, |row| {
                if partition_of_row(row.index, partitions) != partition {
                    return Ok(());
                }
                if state.meter.is_some() {
                    bytes += dynamodb_item_size(&state.row_item(request_id, row)?);
                }
                if shard_of(row.index) == shard {
                    recount.add(row);
                }
                Ok(())
            })?;
            state.charge_query(&counter_pk(request_id, partitions, shard), bytes)?;
            Ok(recount.finish())
        })
        .await?;
        let (tally, marks) = match exact {
            Ok(exact) => (Some(exact), None),
            Err(missing) => match adds {
                Some(adds) => (None, Some(adds + missing)),
                None => return Ok(false),
            },
        };
        retry(&policy, "writing a recounted shard", || async {
            self.faults.check(Call::Write)?;
            let mut state = self.lock()?;
            let current = state.marks(request_id, shard);
            let counters = state.shard(request_id, shard)?;
            if current.verified {
                // The condition fails, charged all the same.
                if state.meter.is_some() {
                    let item = to_item(&state.counter_item(request_id, shard, counters))?;
                    let pk = counter_pk(request_id, state.partitions(request_id), shard);
                    let bytes = dynamodb_item_size(&item);
                    state.charge("UpdateItem", false, &[Access::Write { pk: &pk, bytes }])?;
                }
                return Ok(());
            }
            match (tally, marks) {
                (Some(exact), _) => {
                    let verified = ShardMarks {
                        verified: true,
                        ..current
                    };
                    state.write_shard(request_id, shard, exact, verified)
                }
                (None, Some(after)) => {
                    let postponed = ShardMarks {
                        recount_after: after,
                        ..current
                    };
                    state.write_shard(request_id, shard, counters, postponed)
                }
                (None, None) => Ok(()),
            }
        })
        .await?;
        Ok(tally.is_some())
    }

    /// Reads shard `shard` (one consistent `GetItem`): its tally and marks.
    async fn read_shard(
        &self,
        request_id: &str,
        shard: u32,
    ) -> Result<(Counters, ShardMarks), PortError> {
        retry(&self.policy(), "reading a counter shard", || async {
            self.faults.check(Call::Read)?;
            let mut state = self.lock()?;
            let counters = state.shard(request_id, shard)?;
            if state.meter.is_some() {
                let item = to_item(&state.counter_item(request_id, shard, counters))?;
                let pk = counter_pk(request_id, state.partitions(request_id), shard);
                state.charge_get(&pk, dynamodb_item_size(&item), true)?;
            }
            Ok((counters, state.marks(request_id, shard)))
        })
        .await
    }

    /// Adds shard `shard` to the request's done shards; `true` when every shard is done.
    async fn mark_shard_done(&self, request_id: &str, shard: u32) -> Result<bool, PortError> {
        let policy = self.policy();
        retry(&policy, "adding a done shard", || async {
            self.faults.check(Call::Write)?;
            let mut state = self.lock()?;
            let mut all_done = false;
            state.update_meta(request_id, |stored| {
                stored.done_shards.insert(shard);
                all_done = stored.done_shards.len() >= COUNTER_SHARDS as usize;
                true
            })?;
            Ok(all_done)
        })
        .await
    }

    /// A conditional single-item update of the request item, with faults and retries.
    async fn write_meta(
        &self,
        request_id: &str,
        what: &str,
        change: impl Fn(&mut StoredMeta) -> bool + Send + Sync,
    ) -> Result<bool, PortError> {
        retry(&self.policy(), what, || async {
            self.faults.check(Call::Write)?;
            self.lock()?.update_meta(request_id, &change)
        })
        .await
    }
}

impl RequestIntake for EmbeddedRequestRepository {
    async fn create_request(
        &self,
        meta: &RequestMeta,
        rows: &[RowRecord],
    ) -> Result<Created, PortError> {
        if let Some(existing) = self.get_request(&meta.request_id).await? {
            return Ok(Created::AlreadyExists(Box::new(existing)));
        }
        let id = meta.request_id.as_str();
        let policy = self.policy();
        // A running request's item first, marked `creating` (invisible to readers) with the
        // upload's fingerprint; then rows and counter shards, in transactions of ≤ 100 actions
        // and ≤ 4 MB; then the mark is removed. An attempt that finds a `creating` item of
        // another upload writes nothing. A request created terminal (a rejected catalogue)
        // has nothing to hide: its item comes last, as the stream must see it enter.
        let creating = !meta.status.is_terminal();
        let stored = StoredMeta {
            meta: meta.clone(),
            done_shards: empty_shards(meta.counters.rows_total).into_iter().collect(),
            output_progress: None,
            open: true,
            progress_seen: None,
            creating,
            partitions: partitions_for(meta.counters.rows_total)
                .min(self.max_partitions.unwrap_or(MAX_PARTITIONS)),
        };
        let item = stored.item()?;
        check_item_size(&item, "the request item")?;
        let write_item = || async {
            self.faults.check(Call::Write)?;
            let mut state = self.lock()?;
            match state.requests.get(id) {
                Some(existing) if !existing.creating => Ok(Some(Created::AlreadyExists(Box::new(
                    state.current(id).unwrap_or_else(|| existing.meta.clone()),
                )))),
                Some(existing) if existing.meta.fingerprint != meta.fingerprint => Ok(Some(
                    Created::AlreadyExists(Box::new(existing.meta.clone())),
                )),
                // The same upload, interrupted: finish writing it.
                Some(_) => Ok(None),
                None => {
                    let pk = request_pk(id);
                    let bytes = dynamodb_item_size(&item);
                    state.charge("PutItem", false, &[Access::Write { pk: &pk, bytes }])?;
                    state.requests.insert(id.to_owned(), stored.clone());
                    state.log(pk, META_SK.to_owned(), None, item.clone());
                    Ok(None)
                }
            }
        };
        if creating && let Some(found) = retry(&policy, "writing the request", write_item).await? {
            return Ok(found);
        }
        self.put_row_items(id, rows).await?;
        let shard_totals: Vec<(u32, u64)> = shards_with_rows(meta.counters.rows_total)
            .map(|s| (s, shard_rows_total(meta.counters.rows_total, s)))
            .collect();
        for chunk in shard_totals.chunks(DYNAMODB_MAX_TRANSACTION_ACTIONS) {
            retry(&policy, "writing counter shards", || {
                self.put_new_items(id, &[], chunk)
            })
            .await?;
        }
        if !creating {
            let stored_creating = {
                let state = self.lock()?;
                state.requests.get(id).is_some_and(|s| s.creating)
            };
            if stored_creating {
                // Still `creating` (an attempt that stopped before its rows were written) and
                // now rejected: it ends with this failure instead of staying invisible.
                let failure = meta.failure.clone().unwrap_or_else(|| Failure {
                    code: "ingest_failed".to_owned(),
                    message: "the upload could not be ingested".to_owned(),
                    issues: Vec::new(),
                });
                self.mark_failed(id, &failure, meta.updated_at).await?;
                let existing = self
                    .get_request(id)
                    .await?
                    .ok_or_else(|| PortError::Conflict(format!("request {id} vanished")))?;
                return Ok(Created::AlreadyExists(Box::new(existing)));
            }
            return Ok(retry(&policy, "writing the request", write_item)
                .await?
                .unwrap_or(Created::Inserted));
        }
        let revealed = retry(&policy, "revealing the request", || async {
            self.faults.check(Call::Write)?;
            self.lock()?.update_meta(id, |stored| {
                let was = stored.creating;
                stored.creating = false;
                was
            })
        })
        .await?;
        if revealed {
            return Ok(Created::Inserted);
        }
        // A concurrent attempt of the same upload revealed it first.
        let existing = self
            .get_request(id)
            .await?
            .ok_or_else(|| PortError::Unexpected(anyhow!("request {id} vanished")))?;
        Ok(Created::AlreadyExists(Box::new(existing)))
    }

    async fn put_rows(&self, request_id: &str, rows: &[RowRecord]) -> Result<(), PortError> {
        self.put_row_items(request_id, rows).await
    }

    async fn mark_processing(
        &self,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Transition, PortError> {
        let applied = self
            .write_meta(request_id, "marking the request processing", |stored| {
                if stored.meta.status != RequestStatus::Pending {
                    return false;
                }
                stored.meta.status = RequestStatus::Processing;
                stored.meta.updated_at = now;
                true
            })
            .await?;
        Ok(if applied {
            Transition::Applied(RequestStatus::Processing)
        } else {
            Transition::NotApplied
        })
    }

    async fn mark_failed(
        &self,
        request_id: &str,
        failure: &Failure,
        now: DateTime<Utc>,
    ) -> Result<Transition, PortError> {
        let applied = self
            .write_meta(request_id, "marking the request failed", |stored| {
                if stored.meta.status.is_terminal() {
                    return false;
                }
                stored.meta.status = RequestStatus::Failed;
                stored.meta.failure = Some(failure.clone());
                stored.meta.updated_at = now;
                stored.meta.completed_at = Some(now);
                // A request still being created fails too, and shows.
                stored.creating = false;
                true
            })
            .await?;
        Ok(if applied {
            Transition::Applied(RequestStatus::Failed)
        } else {
            Transition::NotApplied
        })
    }
}

impl RequestReader for EmbeddedRequestRepository {
    async fn get_request(&self, request_id: &str) -> Result<Option<RequestMeta>, PortError> {
        retry(&self.policy(), "reading the request", || async {
            self.faults.check(Call::Read)?;
            let mut state = self.lock()?;
            state.charge_request_read(request_id)?;
            Ok(state.current(request_id))
        })
        .await
    }

    async fn list_rows(
        &self,
        request_id: &str,
        after: Option<u32>,
        limit: u32,
    ) -> Result<RowPage, PortError> {
        retry(&self.policy(), "reading rows", || async {
            self.faults.check(Call::Read)?;
            let mut state = self.lock()?;
            if state.rows.range(request_id, 0, None, 1)?.is_empty() {
                return Ok(RowPage::default());
            }
            let start = after.map_or(0, |a| a.saturating_add(1));
            let limit = limit.max(1);
            let partitions = state.partitions(request_id);
            if partitions > 1 {
                // As the DynamoDB adapter reads a request spread over partition keys: the
                // window of `limit` indices from `start`, one `Query` per partition, merged.
                let end = start.saturating_add(limit);
                let page = state.rows.range(request_id, start, Some(end), usize::MAX)?;
                if state.meter.is_some() {
                    let mut bytes: BTreeMap<String, usize> = (start..end)
                        .take(partitions as usize)
                        .map(|i| (row_pk(request_id, partitions, i), 0))
                        .collect();
                    for row in &page {
                        let size = dynamodb_item_size(&state.row_item(request_id, row)?);
                        *bytes
                            .entry(row_pk(request_id, partitions, row.index))
                            .or_default() += size;
                    }
                    for (pk, bytes) in bytes {
                        state.charge_query(&pk, bytes)?;
                    }
                }
                let rows_total = state
                    .requests
                    .get(request_id)
                    .map_or(0, |stored| stored.meta.counters.rows_total);
                let next = (u64::from(end) < rows_total).then(|| end - 1);
                return Ok(RowPage { rows: page, next });
            }
            let mut page = state
                .rows
                .range(request_id, start, None, limit as usize + 1)?;
            if state.meter.is_some() {
                let bytes = page
                    .iter()
                    .map(|row| {
                        state
                            .row_item(request_id, row)
                            .map(|item| dynamodb_item_size(&item))
                    })
                    .sum::<Result<usize, _>>()?;
                state.charge_query(&request_pk(request_id), bytes)?;
            }
            let next = if page.len() > limit as usize {
                page.pop();
                page.last().map(|r| r.index)
            } else {
                None
            };
            Ok(RowPage { rows: page, next })
        })
        .await
    }
}

impl RowLedger for EmbeddedRequestRepository {
    async fn record_row_outcome(
        &self,
        request_id: &str,
        row_index: u32,
        images: &[ImageOutcome],
        _now: DateTime<Utc>,
    ) -> Result<RowRecorded, PortError> {
        let shard = shard_of(row_index);
        let policy = self.policy();
        let recorded = retry(&policy, "recording the row outcome", || {
            self.update_row(request_id, row_index, images)
        })
        .await?;
        let mut delta = Counters::default();
        delta.add_row(images);
        let (counters, marks) = retry(&policy, "counting the row", || {
            self.count_row(request_id, shard, recorded.then_some(&delta))
        })
        .await?;
        let all_rows_done = self
            .settle_shard(request_id, shard, &counters, marks)
            .await?;
        Ok(if recorded {
            RowRecorded::Recorded { all_rows_done }
        } else {
            RowRecorded::AlreadyRecorded { all_rows_done }
        })
    }

    async fn record_row_progress(
        &self,
        request_id: &str,
        row_index: u32,
        progress: &[ImageProgress],
    ) -> Result<(), PortError> {
        retry(&self.policy(), "saving row progress", || async {
            self.faults.check(Call::Write)?;
            let mut state = self.lock()?;
            let pk = row_pk(request_id, state.partitions(request_id), row_index);
            state.check_not_in_flight(&pk, &row_sk(row_index), "UpdateItem")?;
            let Some(row) = state.rows.get(request_id, row_index)? else {
                return Ok(());
            };
            if row.state != RowState::Pending {
                return Ok(());
            }
            let old = state.row_item(request_id, &row)?;
            let mut updated = row.clone();
            updated.progress = progress.to_vec();
            let new = state.row_item(request_id, &updated)?;
            let bytes = check_item_size(&new, &format!("row {row_index}"))?;
            if state.meter.is_some() {
                let bytes = bytes.max(dynamodb_item_size(&old));
                state.charge("UpdateItem", false, &[Access::Write { pk: &pk, bytes }])?;
            }
            state.rows.put(request_id, &updated)?;
            state.log(pk, row_sk(row_index), Some(old), new);
            Ok(())
        })
        .await
    }

    async fn complete(
        &self,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Transition, PortError> {
        let status = std::sync::Mutex::new(None);
        retry(&self.policy(), "completing the request", || async {
            self.faults.check(Call::Write)?;
            let mut state = self.lock()?;
            state.charge_request_read(request_id)?;
            let Some(current) = state.current(request_id) else {
                return Ok(false);
            };
            state.update_meta(request_id, |stored| {
                if stored.meta.status.is_terminal()
                    || stored.done_shards.len() < COUNTER_SHARDS as usize
                {
                    return false;
                }
                let Some(mut terminal) = current.counters.terminal_status() else {
                    return false;
                };
                if stored.meta.cancel_requested_at.is_some() {
                    terminal = RequestStatus::Cancelled;
                }
                stored.meta.status = terminal;
                stored.meta.counters = current.counters;
                stored.meta.updated_at = now;
                stored.meta.completed_at = Some(now);
                if let Ok(mut slot) = status.lock() {
                    *slot = Some(terminal);
                }
                true
            })
        })
        .await?;
        let status = status.lock().ok().and_then(|s| *s);
        Ok(status.map_or(Transition::NotApplied, Transition::Applied))
    }

    async fn stop_requested(&self, request_id: &str) -> Result<bool, PortError> {
        // Retried in process, as the DynamoDB adapter retries its read.
        retry(&self.policy(), "reading the cancellation", || async {
            self.faults.check(Call::Read)?;
            let mut state = self.lock()?;
            let bytes = state.meta_bytes(request_id);
            state.charge_get(&request_pk(request_id), bytes, false)?;
            Ok(state.current(request_id).is_some_and(|current| {
                current.cancel_requested_at.is_some() || current.status == RequestStatus::Failed
            }))
        })
        .await
    }
}

impl OutputLedger for EmbeddedRequestRepository {
    async fn record_output_csv(
        &self,
        request_id: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<(), PortError> {
        self.write_meta(request_id, "recording the output CSV", |stored| {
            stored.meta.output_csv_key = Some(key.to_owned());
            stored.meta.updated_at = now;
            stored.output_progress = None;
            true
        })
        .await
        .map(|_| ())
    }

    async fn output_progress(&self, request_id: &str) -> Result<Option<OutputProgress>, PortError> {
        retry(&self.policy(), "reading the request", || async {
            self.faults.check(Call::Read)?;
            Ok(self
                .lock()?
                .requests
                .get(request_id)
                .and_then(|stored| stored.output_progress.clone()))
        })
        .await
    }

    async fn record_output_progress(
        &self,
        request_id: &str,
        progress: &OutputProgress,
    ) -> Result<(), PortError> {
        self.write_meta(
            request_id,
            "recording the output CSV's progress",
            |stored| {
                stored.output_progress = Some(progress.clone());
                true
            },
        )
        .await
        .map(|_| ())
    }

    async fn record_webhook_attempt(
        &self,
        request_id: &str,
        attempt: &WebhookAttempt,
        state: DeliveryState,
        recorded_before: u32,
    ) -> Result<bool, PortError> {
        self.write_meta(request_id, "recording the webhook attempt", |stored| {
            let Some(webhook) = stored.meta.webhook.as_mut() else {
                return false;
            };
            if webhook.attempts.len() != recorded_before as usize {
                return false;
            }
            webhook.attempts.push(attempt.clone());
            webhook.state = state;
            true
        })
        .await
    }
}

impl OpenRequests for EmbeddedRequestRepository {
    async fn list_open(
        &self,
        created_before: DateTime<Utc>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<OpenPage, PortError> {
        retry(&self.policy(), "listing open requests", || async {
            self.faults.check(Call::Read)?;
            let state = self.lock()?;
            // The index's order: creation time, then (as DynamoDB breaks ties) the table key.
            let mut open: Vec<(DateTime<Utc>, &str)> = state
                .requests
                .iter()
                .filter(|(_, stored)| stored.open && stored.meta.created_at < created_before)
                .map(|(id, stored)| (stored.meta.created_at, id.as_str()))
                .collect();
            open.sort_unstable();
            // The cursor names the last position read (as DynamoDB's LastEvaluatedKey does),
            // not an entry: a request settled since the previous page still places the next.
            let after = match cursor {
                None => None,
                Some(c) => Some(decode_open_cursor(c)?),
            };
            let start = after.map_or(0, |(at, id)| {
                open.partition_point(|(created, other)| (*created, *other) <= (at, id.as_str()))
            });
            let page: Vec<(DateTime<Utc>, &str)> = open
                .iter()
                .skip(start)
                .take(limit as usize)
                .copied()
                .collect();
            let next = (start + page.len() < open.len())
                .then(|| {
                    page.last()
                        .map(|(at, id)| format!("{}|{id}", at.to_rfc3339()))
                })
                .flatten();
            Ok(OpenPage {
                request_ids: page.into_iter().map(|(_, id)| id.to_owned()).collect(),
                next,
            })
        })
        .await
    }

    async fn progress_unchanged_since(
        &self,
        request_id: &str,
        rows_done: u64,
        first_seen: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, PortError> {
        let since = Mutex::new(first_seen);
        self.write_meta(request_id, "noting the request's progress", |stored| {
            if let Some(seen) = stored.progress_seen
                && seen.rows_done == rows_done
            {
                if let Ok(mut since) = since.lock() {
                    *since = seen.since;
                }
                return false;
            }
            stored.progress_seen = Some(ProgressSeen {
                rows_done,
                since: first_seen,
            });
            true
        })
        .await?;
        Ok(since.into_inner().unwrap_or(first_seen))
    }

    async fn restart_wait(
        &self,
        request_id: &str,
        rows_done: u64,
        now: DateTime<Utc>,
    ) -> Result<(), PortError> {
        self.write_meta(request_id, "restarting the idle wait", |stored| {
            stored.progress_seen = Some(ProgressSeen {
                rows_done,
                since: now,
            });
            true
        })
        .await
        .map(|_| ())
    }

    async fn mark_shard_if_full(&self, request_id: &str, shard: u32) -> Result<bool, PortError> {
        let (counters, marks) = self.read_shard(request_id, shard).await?;
        // A repair: a row recorded by a delivery that died before counting it, and never
        // redelivered, leaves its shard short; its rows tell.
        let full = check_shard(&counters, &marks) == ShardCheck::Full
            || self.recount_shard(request_id, shard, None).await?;
        if !full {
            return Ok(false);
        }
        self.mark_shard_done(request_id, shard).await
    }

    async fn settle(&self, request_id: &str) -> Result<bool, PortError> {
        self.write_meta(request_id, "settling the request", |stored| {
            if !stored.meta.status.is_terminal() || !stored.open {
                return false;
            }
            stored.open = false;
            true
        })
        .await
    }
}

impl RequestControl for EmbeddedRequestRepository {
    async fn redeliver_webhook(&self, request_id: &str) -> Result<bool, PortError> {
        self.write_meta(request_id, "redelivering the webhook", |stored| {
            if !stored.meta.status.is_terminal() {
                return false;
            }
            let Some(webhook) = stored.meta.webhook.as_mut() else {
                return false;
            };
            // One series at a time.
            if webhook.state == DeliveryState::Pending {
                return false;
            }
            webhook.state = DeliveryState::Pending;
            true
        })
        .await
    }

    async fn request_cancel(
        &self,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        self.write_meta(request_id, "cancelling the request", |stored| {
            if stored.meta.status.is_terminal() {
                return false;
            }
            if stored.meta.cancel_requested_at.is_none() {
                stored.meta.cancel_requested_at = Some(now);
                stored.meta.updated_at = now;
            }
            true
        })
        .await
    }
}

/// The position a [`OpenPage::next`] cursor of the embedded index names: `created_at|id`.
fn decode_open_cursor(cursor: &str) -> Result<(DateTime<Utc>, String), PortError> {
    cursor
        .split_once('|')
        .and_then(|(at, id)| {
            let at = DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc);
            Some((at, id.to_owned()))
        })
        .ok_or_else(|| {
            PortError::Unexpected(anyhow::anyhow!(
                "not a cursor of the open requests: {cursor}"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pixpress_domain::model::{Counters, ImageStatus};

    fn meta(id: &str, rows: u64) -> RequestMeta {
        let now = Utc::now();
        RequestMeta {
            status: RequestStatus::Processing,
            counters: Counters {
                rows_total: rows,
                images_total: rows,
                ..Counters::default()
            },
            ..RequestMeta::new(id.to_owned(), "t", now)
        }
    }

    #[tokio::test]
    async fn a_row_whose_writer_died_before_counting_it_is_counted_once_by_its_redelivery() {
        let repo = EmbeddedRequestRepository::new();
        let n = 64u32;
        let rows: Vec<RowRecord> = (0..n)
            .map(|i| RowRecord {
                index: i,
                serial: i.to_string(),
                product_name: "p".into(),
                input_urls: vec!["https://x.test/a.jpg".into()],
                state: RowState::Pending,
                images: vec![],
                progress: Vec::new(),
            })
            .collect();
        repo.create_request(&meta("r", u64::from(n)), &rows)
            .await
            .unwrap();
        let mut ok = ImageOutcome::failed("", "");
        ok.status = ImageStatus::Ok;
        ok.bytes_in = Some(10);
        ok.bytes_out = Some(4);
        let one = std::slice::from_ref(&ok);
        // Row 5's first delivery records the row and dies before counting it.
        assert!(repo.update_row("r", 5, one).await.unwrap());
        // Row 7's is recorded and counted, and its message comes back all the same.
        assert!(matches!(
            repo.record_row_outcome("r", 7, one, Utc::now())
                .await
                .unwrap(),
            RowRecorded::Recorded { .. }
        ));
        // Every other row at once.
        let outcomes = futures::future::join_all(
            (0..n)
                .filter(|i| ![5, 7].contains(i))
                .map(|i| repo.record_row_outcome("r", i, one, Utc::now())),
        )
        .await;
        assert!(outcomes.iter().all(Result::is_ok), "every row recorded");
        assert!(
            outcomes
                .iter()
                .all(|o| !o.as_ref().unwrap().all_rows_done()),
            "row 5 is not counted yet"
        );
        // The redeliveries.
        let seven = repo
            .record_row_outcome("r", 7, one, Utc::now())
            .await
            .unwrap();
        assert_eq!(
            seven,
            RowRecorded::AlreadyRecorded {
                all_rows_done: false
            }
        );
        let five = repo
            .record_row_outcome("r", 5, one, Utc::now())
            .await
            .unwrap();
        assert_eq!(
            five,
            RowRecorded::AlreadyRecorded {
                all_rows_done: true
            }
        );
        assert_eq!(
            repo.complete("r", Utc::now()).await.unwrap(),
            Transition::Applied(RequestStatus::Completed)
        );
        let counters = repo.get_request("r").await.unwrap().unwrap().counters;
        let rows = u64::from(n);
        assert_eq!(
            (
                counters.rows_done,
                counters.images_ok,
                counters.bytes_in,
                counters.bytes_out
            ),
            (rows, rows, 10 * rows, 4 * rows),
            "every row counted exactly once"
        );
    }

    /// Writes and records every row of a `rows`-row request as fast as the loop runs, against
    /// 5× DynamoDB's per-partition throughput (5,000 write units a second per key) and with no
    /// in-process retry: the calls refused for throughput, and the rows recorded.
    async fn record_every_row(repo: EmbeddedRequestRepository, rows: u32) -> (Vec<String>, u32) {
        let repo = repo
            .with_retry(RetryPolicy::NONE)
            .with_capacity(Some(CapacityModel::DYNAMODB.scaled(5.0)));
        repo.create_request(&meta("big", u64::from(rows)), &[])
            .await
            .unwrap();
        let row = |i: u32| RowRecord {
            index: i,
            serial: i.to_string(),
            product_name: "p".into(),
            input_urls: vec![format!("https://img.example/p/{i}.jpg")],
            state: RowState::Pending,
            images: vec![],
            progress: Vec::new(),
        };
        let mut refused = Vec::new();
        for start in (0..rows).step_by(1_000) {
            let chunk: Vec<RowRecord> = (start..rows.min(start + 1_000)).map(row).collect();
            if let Err(e) = repo.put_rows("big", &chunk).await {
                refused.push(e.to_string());
            }
        }
        let mut ok = ImageOutcome::failed("", "");
        ok.status = ImageStatus::Ok;
        let mut recorded = 0;
        for i in 0..rows {
            match repo
                .record_row_outcome("big", i, std::slice::from_ref(&ok), Utc::now())
                .await
            {
                Ok(_) => recorded += 1,
                Err(e) => refused.push(e.to_string()),
            }
        }
        (refused, recorded)
    }

    #[tokio::test]
    async fn a_request_spread_over_partition_keys_is_not_throttled_where_one_key_is() {
        // 20,000 rows cost about 100,000 write units to write and record. On one partition key
        // (every request before rows were spread) that is 20 s of the key's throughput, far
        // more than the loop takes, so DynamoDB throttles; spread over 32 keys each gets about
        // 3,100 units, within the one second of throughput a key starts with.
        let (refused, recorded) = record_every_row(
            EmbeddedRequestRepository::new().with_max_partitions(1),
            20_000,
        )
        .await;
        assert!(!refused.is_empty(), "one key was never throttled");
        assert!(
            refused.iter().any(|e| e.contains("ThrottlingException")
                && e.contains("partition key REQ#big (TableWriteKeyRangeThroughputExceeded)")),
            "{:?}",
            refused.first()
        );
        assert!(recorded < 20_000);

        let (refused, recorded) = record_every_row(EmbeddedRequestRepository::new(), 20_000).await;
        assert_eq!(refused, Vec::<String>::new());
        assert_eq!(recorded, 20_000);
    }
}
