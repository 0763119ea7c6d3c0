//! [`DynamoRequestRepository`]: the repository ports on one DynamoDB table (`pk`/`sk`,
//! DESIGN §3), items mapped with `serde_dynamo` through the shared item schema ([`MetaItem`],
//! [`RowItem`], [`CounterItem`]).
//!
//! Every write is conditional: a request is created only if its id is new, and only after all
//! its row and counter items exist; a row outcome is the row's `UpdateItem` conditional on it
//! being `PENDING`, then one `ADD` to its counter shard ([`pixpress_domain::counting`]); the
//! terminal flip is one conditional `UpdateItem`. Attribute names go through `#name`
//! placeholders (`status`, `state` and others are reserved words).
//!
//! Throttling and conflicts are retried in process with jittered exponential backoff
//! ([`pixpress_app::retry`]) and then returned as [`PortError::Conflict`] /
//! [`PortError::Throttled`]. A cancelled creation transaction is classified by its per-action
//! `CancellationReasons`: `TransactionConflict`, `ThrottlingError`,
//! `ProvisionedThroughputExceeded` and `RequestLimitExceeded` are retried; anything else
//! (`ValidationError`, `ItemCollectionSizeLimitExceeded`) is an error naming the reasons
//! (Amazon DynamoDB API Reference, `TransactWriteItems` → `TransactionCanceledException`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::anyhow;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValue, TransactWriteItem};
use chrono::{DateTime, Utc};

use super::handles::{condition_failed, item, key, s};
use super::{DynamoTable, classify_code, sdk_error};
use pixpress_app::limits::{DYNAMODB_MAX_ITEM_BYTES, dynamodb_item_size, transaction_chunks};
use pixpress_app::ports::{
    Created, OpenPage, OpenRequests, OutputLedger, PortError, RequestControl, RequestIntake,
    RequestReader, RowLedger, RowPage, RowRecorded, Transition,
};
use pixpress_app::retry::retry;
use pixpress_domain::counting::{
    COUNTER_SHARDS, Recount, ShardCheck, partition_of_row, shard_of, shard_rows_total,
    shards_with_rows,
};
use pixpress_domain::item::{
    CounterItem, MetaItem, OPEN_ATTRIBUTE, OPEN_INDEX, OPEN_VALUE, ProgressSeen, RowItem,
};
use pixpress_domain::model::{
    Counters, DeliveryState, Failure, ImageOutcome, ImageProgress, OutputProgress, RequestMeta,
    RequestStatus, RowRecord, WebhookAttempt,
};
use pixpress_domain::storage_keys::{
    COUNTER_SK_PREFIX, META_SK, ROW_SK_END, counter_pk, counter_sk, partition_pk,
    request_id_from_pk, request_pk, row_pk, row_sk,
};

/// The DynamoDB repository. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DynamoRequestRepository {
    table: DynamoTable,
    retention: Option<chrono::Duration>,
    layouts: Arc<Mutex<HashMap<String, Layout>>>,
}

/// Where a request's items are: fixed when the request is created, so kept once read.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// Partition keys its row and counter items spread over ([`MetaItem::partitions`]).
    partitions: u32,
    /// Its row count.
    rows_total: u64,
}

impl Layout {
    fn of(stored: &MetaItem) -> Self {
        Self {
            partitions: stored.partitions.max(1),
            rows_total: stored.meta.counters.rows_total,
        }
    }
}

/// Layouts kept per repository before the cache starts again (a worker sees a few requests).
const LAYOUTS_KEPT: usize = 10_000;

impl From<DynamoTable> for DynamoRequestRepository {
    /// A repository on `table` that keeps every item (no `expires_at`).
    fn from(table: DynamoTable) -> Self {
        Self {
            table,
            retention: None,
            layouts: Arc::default(),
        }
    }
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn status(v: RequestStatus) -> AttributeValue {
    s(v.as_str())
}

fn encode<T: serde::Serialize>(value: &T) -> Result<AttributeValue, PortError> {
    serde_dynamo::to_attribute_value(value)
        .map_err(|e| PortError::Unexpected(anyhow!("item encoding: {e}")))
}

/// The item of `value` once its size passes DynamoDB's 400 KB, with that size.
fn sized_item<T: serde::Serialize>(
    value: &T,
    what: &str,
) -> Result<(HashMap<String, AttributeValue>, usize), PortError> {
    let plain: serde_dynamo::Item = serde_dynamo::to_item(value)
        .map_err(|e| PortError::Unexpected(anyhow!("item encoding: {e}")))?;
    let size = dynamodb_item_size(&plain);
    if size > DYNAMODB_MAX_ITEM_BYTES {
        return Err(PortError::LimitExceeded(format!(
            "{what} would be {size} bytes; DynamoDB items hold at most {DYNAMODB_MAX_ITEM_BYTES} bytes"
        )));
    }
    Ok((item(value)?, size))
}

/// The per-action reasons of a cancelled transaction (`CancellationReasons`, in action order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cancelled {
    /// `(code, message)` per action; code `None` for actions that were fine.
    pub reasons: Vec<(String, String)>,
}

impl Cancelled {
    /// `true` when action `index`'s own condition failed.
    pub fn condition_failed(&self, index: usize) -> bool {
        self.reasons
            .get(index)
            .is_some_and(|(code, _)| code == "ConditionalCheckFailed")
    }

    /// The error for the whole cancellation: transient (conflict, throttling) when any reason
    /// is, otherwise an error naming every reason.
    pub fn error(&self, context: &str) -> PortError {
        let mut unexpected = Vec::new();
        let mut transient = None;
        for (code, message) in &self.reasons {
            if code == "None" || code == "ConditionalCheckFailed" {
                continue;
            }
            match classify_code(context, code, message) {
                Some(e) if e.is_transient() => transient = transient.or(Some(e)),
                Some(PortError::LimitExceeded(detail)) => {
                    return PortError::LimitExceeded(detail);
                }
                _ => unexpected.push(format!("{code}: {message}")),
            }
        }
        if let Some(e) = transient {
            return e;
        }
        PortError::Unexpected(anyhow!(
            "{context}: transaction cancelled ({})",
            if unexpected.is_empty() {
                "ConditionalCheckFailed".to_owned()
            } else {
                unexpected.join("; ")
            }
        ))
    }
}

/// The cancellation reasons of a failed `TransactWriteItems`, or `None` when it failed another
/// way.
fn cancellation(error: &TransactWriteItemsError) -> Option<Cancelled> {
    match error {
        TransactWriteItemsError::TransactionCanceledException(e) => Some(Cancelled {
            reasons: e
                .cancellation_reasons()
                .iter()
                .map(|r| {
                    (
                        r.code().unwrap_or("None").to_owned(),
                        r.message().unwrap_or_default().to_owned(),
                    )
                })
                .collect(),
        }),
        _ => None,
    }
}

impl DynamoRequestRepository {
    /// The same repository writing each new item of a request with `expires_at` = its creation
    /// time + `retention` (Unix seconds), the table's TTL attribute: DynamoDB deletes expired
    /// items, typically within a few days of the time ("Using time to live (TTL) in DynamoDB",
    /// Amazon DynamoDB Developer Guide). `None` keeps them.
    #[must_use]
    pub fn with_retention(mut self, retention: Option<chrono::Duration>) -> Self {
        self.retention = retention;
        self
    }

    /// `expires_at` of an item of a request made at `created_at`.
    fn expires_at(&self, created_at: chrono::DateTime<chrono::Utc>) -> Option<i64> {
        self.retention.map(|r| (created_at + r).timestamp())
    }

    /// The table this repository is on.
    #[must_use]
    pub fn table(&self) -> &DynamoTable {
        &self.table
    }

    fn meta_key(request_id: &str) -> HashMap<String, AttributeValue> {
        key(request_pk(request_id), META_SK.to_owned())
    }

    fn remember(&self, request_id: &str, layout: Layout) {
        if let Ok(mut layouts) = self.layouts.lock() {
            if layouts.len() >= LAYOUTS_KEPT {
                layouts.clear();
            }
            layouts.insert(request_id.to_owned(), layout);
        }
    }

    /// The layout of `request_id`: remembered, or read from its request item once (one
    /// strongly consistent `GetItem`).
    ///
    /// # Errors
    /// [`PortError::Unexpected`] when the request does not exist.
    async fn layout(&self, request_id: &str) -> Result<Layout, PortError> {
        let known = self
            .layouts
            .lock()
            .ok()
            .and_then(|l| l.get(request_id).copied());
        if let Some(layout) = known {
            return Ok(layout);
        }
        let stored: MetaItem = self
            .table
            .read_as(Self::meta_key(request_id), "the request")
            .await?
            .ok_or_else(|| PortError::Unexpected(anyhow!("request {request_id} does not exist")))?;
        let layout = Layout::of(&stored);
        self.remember(request_id, layout);
        Ok(layout)
    }

    /// One `TransactWriteItems`: `Ok(Ok(()))` when committed, `Ok(Err(reasons))` when
    /// cancelled, `Err` when the call failed another way.
    async fn transact_once(
        &self,
        items: Vec<TransactWriteItem>,
        context: &str,
    ) -> Result<Result<(), Cancelled>, PortError> {
        match self
            .table
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(Ok(())),
            Err(e) => match e.as_service_error().and_then(cancellation) {
                Some(cancelled) => Ok(Err(cancelled)),
                None => Err(sdk_error(context, &e)),
            },
        }
    }

    /// A conditional update of the request item, retried on throttling and conflicts;
    /// `Ok(false)` when the condition fails.
    #[allow(clippy::too_many_arguments)]
    async fn conditional_update(
        &self,
        request_id: &str,
        update: &str,
        condition: &str,
        names: &[(&str, &str)],
        values: Vec<(&str, AttributeValue)>,
        context: &str,
    ) -> Result<bool, PortError> {
        retry(&self.table.retry, context, || async {
            let mut request = self
                .table
                .update_item()
                .set_key(Some(Self::meta_key(request_id)))
                .update_expression(update)
                .condition_expression(condition);
            for (placeholder, name) in names {
                request = request.expression_attribute_names(*placeholder, *name);
            }
            for (placeholder, value) in &values {
                request = request.expression_attribute_values(*placeholder, value.clone());
            }
            match request.send().await {
                Ok(_) => Ok(true),
                Err(e) if condition_failed(&e) => Ok(false),
                Err(e) => Err(sdk_error(context, &e)),
            }
        })
        .await
    }

    /// Puts `items` (each conditional on not existing) in transactions of ≤ 100 actions and
    /// ≤ 4 MB. Items that exist already (a replay) are dropped from the transaction and the
    /// rest sent again; conflicts and throttling are retried with backoff.
    async fn put_new(
        &self,
        items: Vec<(HashMap<String, AttributeValue>, usize)>,
        context: &str,
    ) -> Result<(), PortError> {
        let sizes: Vec<usize> = items.iter().map(|(_, size)| *size).collect();
        for chunk in transaction_chunks(&sizes, 0) {
            let mut pending: Vec<usize> = chunk.collect();
            let mut attempt = 0;
            while !pending.is_empty() {
                let actions = pending
                    .iter()
                    .map(|&i| {
                        Put::builder()
                            .table_name(&self.table.target)
                            .set_item(Some(items[i].0.clone()))
                            .condition_expression("attribute_not_exists(sk)")
                            .build()
                            .map(|put| TransactWriteItem::builder().put(put).build())
                            .map_err(|e| PortError::Unexpected(anyhow!("{context}: {e}")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let cancelled = match self.transact_once(actions, context).await {
                    Ok(Ok(())) => break,
                    Ok(Err(cancelled)) => cancelled,
                    Err(e) if e.is_transient() => Cancelled {
                        reasons: vec![("ThrottlingError".to_owned(), e.to_string())],
                    },
                    Err(e) => return Err(e),
                };
                let before = pending.len();
                pending = pending
                    .into_iter()
                    .enumerate()
                    .filter(|(position, _)| !cancelled.condition_failed(*position))
                    .map(|(_, i)| i)
                    .collect();
                let error = cancelled.error(context);
                if pending.len() < before && !error.is_transient() {
                    // Only existing items failed their condition: send the others at once.
                    continue;
                }
                if !error.is_transient() {
                    return Err(error);
                }
                attempt += 1;
                if attempt >= self.table.retry.attempts {
                    return Err(error);
                }
                tracing::debug!(context, attempt, %error, "transaction cancelled; retrying");
                tokio::time::sleep(self.table.retry.delay(attempt - 1)).await;
            }
        }
        Ok(())
    }

    /// The request item as stored, and the request's counters (summed over the counter shards
    /// while it runs).
    async fn read(&self, request_id: &str) -> Result<Option<(MetaItem, Counters)>, PortError> {
        let Some(stored): Option<MetaItem> = self
            .table
            .read_as(Self::meta_key(request_id), "the request")
            .await?
        else {
            return Ok(None);
        };
        let layout = Layout::of(&stored);
        self.remember(request_id, layout);
        if stored.creating {
            // Its rows are still being written: not a request yet.
            return Ok(None);
        }
        let mut counters = stored.meta.counters;
        if !stored.meta.status.is_terminal() {
            for shard in self.read_shards(request_id, layout.partitions).await? {
                counters.add_done(&shard.counters);
            }
        }
        Ok(Some((stored, counters)))
    }

    /// Every counter shard item of a request: one consistent `Query` per partition key, at
    /// once (32 small items in all).
    async fn read_shards(
        &self,
        request_id: &str,
        partitions: u32,
    ) -> Result<Vec<CounterItem>, PortError> {
        let pages = futures::future::try_join_all((0..partitions.max(1)).map(|partition| {
            let pk = partition_pk(request_id, partitions, partition);
            async move {
                retry(&self.table.retry, "reading counter shards", || async {
                    self.table
                        .query()
                        .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                        .expression_attribute_values(":pk", s(pk.clone()))
                        .expression_attribute_values(":prefix", s(COUNTER_SK_PREFIX))
                        .consistent_read(true)
                        .send()
                        .await
                        .map_err(|e| sdk_error("reading counter shards", &e))
                })
                .await
            }
        }))
        .await?;
        pages
            .into_iter()
            .flat_map(|out| out.items.unwrap_or_default())
            .map(|found| {
                serde_dynamo::from_item(found)
                    .map_err(|e| PortError::Unexpected(anyhow!("malformed counter item: {e}")))
            })
            .collect()
    }

    /// One consistent `Query` page of the row items under `pk` with sort keys from `from` to
    /// `to`, at most `limit` of them (and 1 MB), from `exclusive_start`: the rows and where the
    /// next page starts (`None` at the end).
    async fn query_rows(
        &self,
        pk: &str,
        from: &str,
        to: &str,
        limit: Option<i32>,
        exclusive_start: Option<HashMap<String, AttributeValue>>,
    ) -> Result<(Vec<RowRecord>, Option<HashMap<String, AttributeValue>>), PortError> {
        let out = retry(&self.table.retry, "reading rows", || async {
            self.table
                .query()
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .expression_attribute_values(":pk", s(pk))
                .expression_attribute_values(":from", s(from))
                .expression_attribute_values(":to", s(to))
                .consistent_read(true)
                .set_limit(limit)
                .set_exclusive_start_key(exclusive_start.clone())
                .send()
                .await
                .map_err(|e| sdk_error("reading rows", &e))
        })
        .await?;
        let rows = out
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|found| {
                serde_dynamo::from_item::<_, RowItem>(found)
                    .map(|item| item.row)
                    .map_err(|e| PortError::Unexpected(anyhow!("malformed row item: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((rows, out.last_evaluated_key))
    }

    /// Rows `start..start + count` of a request spread over `layout.partitions` keys, in input
    /// order: one consistent `Query` per partition (continued past 1 MB pages), merged by
    /// index. Rows not written yet are absent.
    async fn read_row_window(
        &self,
        request_id: &str,
        layout: Layout,
        start: u32,
        count: u32,
    ) -> Result<Vec<RowRecord>, PortError> {
        let partitions = layout.partitions.max(1);
        let last = start.saturating_add(count.saturating_sub(1));
        let pages = futures::future::try_join_all((0..partitions).map(|partition| {
            // The first row of the window in this partition.
            let offset =
                (partition + partitions - partition_of_row(start, partitions)) % partitions;
            let first = start.checked_add(offset).filter(|&f| f <= last);
            let pk = partition_pk(request_id, partitions, partition);
            async move {
                let Some(first) = first else {
                    return Ok(Vec::new());
                };
                let (from, to) = (row_sk(first), row_sk(last));
                let mut rows = Vec::new();
                let mut exclusive_start = None;
                loop {
                    let (page, last_key) = self
                        .query_rows(&pk, &from, &to, None, exclusive_start.take())
                        .await?;
                    rows.extend(page);
                    match last_key {
                        Some(key) => exclusive_start = Some(key),
                        None => break,
                    }
                }
                Ok::<_, PortError>(rows)
            }
        }))
        .await?;
        let mut rows: Vec<RowRecord> = pages.into_iter().flatten().collect();
        rows.sort_unstable_by_key(|r| r.index);
        Ok(rows)
    }

    /// `true` when row `row_index` of `request_id` exists (one strongly consistent read of its
    /// key).
    async fn row_exists(
        &self,
        request_id: &str,
        layout: Layout,
        row_index: u32,
    ) -> Result<bool, PortError> {
        let row = key(
            row_pk(request_id, layout.partitions, row_index),
            row_sk(row_index),
        );
        let found = self.table.read_item(row, Some("sk"), "a row").await?;
        Ok(found.is_some())
    }

    /// Step 2 of [`pixpress_domain::counting`]: adds `delta` (the winner's row) to the
    /// shard's tally, or, with `None` (a redelivery), 1 to its `redelivered`; one `UpdateItem`
    /// conditional on the shard not being verified. Returns the shard as written, or as read
    /// when it was verified already.
    ///
    /// The write is never repeated after an answer that does not prove DynamoDB refused it
    /// (no SDK retry; in process only throttling and conflicts, which refuse the write): an
    /// `ADD` applied twice would count a row twice.
    async fn count_row(
        &self,
        request_id: &str,
        layout: Layout,
        shard: u32,
        delta: Option<&Counters>,
    ) -> Result<CounterItem, PortError> {
        let shard_key = key(
            counter_pk(request_id, layout.partitions, shard),
            counter_sk(shard),
        );
        let written = retry(&self.table.retry, "counting the row", || async {
            let update = self
                .table
                .update_item()
                .set_key(Some(shard_key.clone()))
                .condition_expression("attribute_exists(sk) AND attribute_not_exists(verified)")
                .return_values(ReturnValue::AllNew);
            let update = match delta {
                Some(delta) => update
                    .update_expression(
                        "ADD rows_done :one, images_ok :ok, images_failed :failed, bytes_in :bin, bytes_out :bout",
                    )
                    .expression_attribute_values(":one", n(delta.rows_done))
                    .expression_attribute_values(":ok", n(delta.images_ok))
                    .expression_attribute_values(":failed", n(delta.images_failed))
                    .expression_attribute_values(":bin", n(delta.bytes_in))
                    .expression_attribute_values(":bout", n(delta.bytes_out)),
                None => update
                    .update_expression("ADD redelivered :one")
                    .expression_attribute_values(":one", n(1)),
            };
            match update
                .customize()
                .config_override(
                    aws_sdk_dynamodb::config::Builder::default()
                        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled()),
                )
                .send()
                .await
            {
                Ok(out) => Ok(out.attributes),
                Err(e) if condition_failed(&e) => Ok(None),
                Err(e) => Err(sdk_error("counting the row", &e)),
            }
        })
        .await?;
        let item = match written {
            Some(item) => Some(item),
            // Verified (its tally is final) or missing.
            None => {
                self.table
                    .read_item(shard_key, None, "a counter shard")
                    .await?
            }
        };
        let Some(item) = item else {
            return Err(PortError::Unexpected(anyhow!(
                "counter shard {shard} of request {request_id} does not exist"
            )));
        };
        serde_dynamo::from_item(item)
            .map_err(|e| PortError::Unexpected(anyhow!("malformed counter item: {e}")))
    }

    /// Acts on what `counter` (shard `shard` as last written) says
    /// ([`pixpress_domain::counting::check_shard`]): marks it done when full, recounts it when
    /// perhaps full. `true` when every shard of the request is done.
    async fn settle_shard(
        &self,
        request_id: &str,
        layout: Layout,
        shard: u32,
        counter: &CounterItem,
    ) -> Result<bool, PortError> {
        let full = match counter.check() {
            ShardCheck::Full => true,
            ShardCheck::Recount => {
                let adds = counter.counters.rows_done + counter.marks.redelivered;
                self.recount_shard(
                    request_id,
                    layout,
                    shard,
                    counter.counters.rows_total,
                    Some(adds),
                )
                .await?
            }
            ShardCheck::Open => false,
        };
        if !full {
            return Ok(false);
        }
        self.mark_shard_done(request_id, shard).await
    }

    /// Recounts shard `shard` from its rows (one consistent `Query` of its partition, a page
    /// at a time, keeping the shard's rows); when every one of its `rows_total` rows is `DONE`,
    /// writes the exact tally with `verified` (conditional on not verified yet: concurrent
    /// recounts write the same tally) and returns `true`. Otherwise, after the `adds` it was
    /// triggered by, stores when recounting can next succeed (`recount_after`).
    async fn recount_shard(
        &self,
        request_id: &str,
        layout: Layout,
        shard: u32,
        rows_total: u64,
        adds: Option<u64>,
    ) -> Result<bool, PortError> {
        let pk = counter_pk(request_id, layout.partitions, shard);
        let mut recount = Recount::new(rows_total);
        let mut exclusive_start = None;
        loop {
            let (page, last_key) = self
                .query_rows(&pk, &row_sk(0), ROW_SK_END, None, exclusive_start.take())
                .await?;
            for row in page.iter().filter(|r| shard_of(r.index) == shard) {
                recount.add(row);
            }
            match last_key {
                Some(last) => exclusive_start = Some(last),
                None => break,
            }
        }
        let exact = match recount.finish() {
            Ok(exact) => exact,
            Err(missing) => {
                if let Some(adds) = adds {
                    self.postpone_recount(&pk, shard, adds + missing).await?;
                }
                return Ok(false);
            }
        };
        retry(&self.table.retry, "writing a recounted shard", || async {
            match self
                .table
                .update_item()
                .set_key(Some(key(pk.clone(), counter_sk(shard))))
                .update_expression(
                    "SET rows_done = :done, images_ok = :ok, images_failed = :failed, \
                     bytes_in = :bin, bytes_out = :bout, verified = :verified",
                )
                .condition_expression("attribute_exists(sk) AND attribute_not_exists(verified)")
                .expression_attribute_values(":done", n(exact.rows_done))
                .expression_attribute_values(":ok", n(exact.images_ok))
                .expression_attribute_values(":failed", n(exact.images_failed))
                .expression_attribute_values(":bin", n(exact.bytes_in))
                .expression_attribute_values(":bout", n(exact.bytes_out))
                .expression_attribute_values(":verified", AttributeValue::Bool(true))
                .send()
                .await
            {
                // Verified meanwhile by another recount: the same tally.
                Ok(_) => Ok(()),
                Err(e) if condition_failed(&e) => Ok(()),
                Err(e) => Err(sdk_error("writing a recounted shard", &e)),
            }
        })
        .await?;
        Ok(true)
    }

    /// Stores on shard `shard` (under `pk`) that no recount can succeed before `after` `ADD`s.
    async fn postpone_recount(&self, pk: &str, shard: u32, after: u64) -> Result<(), PortError> {
        retry(&self.table.retry, "postponing a recount", || async {
            match self
                .table
                .update_item()
                .set_key(Some(key(pk.to_owned(), counter_sk(shard))))
                .update_expression("SET recount_after = :after")
                .condition_expression("attribute_exists(sk) AND attribute_not_exists(verified)")
                .expression_attribute_values(":after", n(after))
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if condition_failed(&e) => Ok(()),
                Err(e) => Err(sdk_error("postponing a recount", &e)),
            }
        })
        .await
    }

    /// Adds shard `shard` to the request's done shards; `true` when all shards are done.
    async fn mark_shard_done(&self, request_id: &str, shard: u32) -> Result<bool, PortError> {
        // Added only if missing: a redelivered row of a done shard writes nothing (and so
        // never races another writer of the request item), it reads the set instead.
        let added = retry(&self.table.retry, "adding a done shard", || async {
            match self
                .table
                .update_item()
                .set_key(Some(Self::meta_key(request_id)))
                .update_expression("ADD done_shards :shard")
                .condition_expression("attribute_exists(pk) AND NOT contains(done_shards, :number)")
                .expression_attribute_values(":shard", AttributeValue::Ns(vec![shard.to_string()]))
                .expression_attribute_values(":number", AttributeValue::N(shard.to_string()))
                .return_values(ReturnValue::UpdatedNew)
                .send()
                .await
            {
                Ok(out) => Ok(out.attributes),
                Err(e) if condition_failed(&e) => Ok(None),
                Err(e) => Err(sdk_error("adding a done shard", &e)),
            }
        })
        .await?;
        let attributes = match added {
            Some(attributes) => Some(attributes),
            None => {
                self.table
                    .read_item(
                        Self::meta_key(request_id),
                        Some("done_shards"),
                        "the done shards",
                    )
                    .await?
            }
        };
        let done = attributes
            .and_then(|a| a.get("done_shards").cloned())
            .and_then(|v| v.as_ns().ok().map(Vec::len))
            .unwrap_or(0);
        Ok(done >= COUNTER_SHARDS as usize)
    }
}

/// Row writes in flight at once while a chunk of a catalogue is expanded.
const PUT_ROWS_AT_ONCE: usize = 16;

impl RequestIntake for DynamoRequestRepository {
    async fn create_request(
        &self,
        meta: &RequestMeta,
        rows: &[RowRecord],
    ) -> Result<Created, PortError> {
        if let Some(existing) = self.get_request(&meta.request_id).await? {
            return Ok(Created::AlreadyExists(Box::new(existing)));
        }
        let id = meta.request_id.as_str();
        let expires_at = self.expires_at(meta.created_at);
        // A running request's item first, marked `creating` (readers see no request) with the
        // upload's fingerprint; then rows and counter shards, each conditional on being new;
        // then the mark is removed. A replay of the same upload finds the mark and finishes
        // the writing; another upload under the same id (a reused idempotency key) finds a
        // different fingerprint and writes nothing, so two uploads' rows never mix. A request
        // created terminal (a rejected catalogue) has nothing to hide: its item comes last.
        let creating = !meta.status.is_terminal();
        let mut meta_item = MetaItem::new(meta.clone(), expires_at);
        meta_item.creating = creating;
        let partitions = meta_item.partitions;
        let layout = Layout::of(&meta_item);
        let (meta_item, _) = sized_item(&meta_item, "the request item")?;
        if creating
            && !self
                .table
                .put_if_absent(meta_item.clone(), "the request")
                .await?
        {
            let existing: MetaItem = self
                .table
                .read_as(Self::meta_key(id), "the request")
                .await?
                .ok_or_else(|| PortError::Conflict(format!("request {id} vanished")))?;
            if !existing.creating {
                let existing = self
                    .get_request(id)
                    .await?
                    .ok_or_else(|| PortError::Conflict(format!("request {id} vanished")))?;
                return Ok(Created::AlreadyExists(Box::new(existing)));
            }
            if existing.meta.fingerprint != meta.fingerprint {
                return Ok(Created::AlreadyExists(Box::new(existing.meta)));
            }
            // The same upload, interrupted: finish writing it.
        }
        let mut items = rows
            .iter()
            .map(|row| {
                sized_item(
                    &RowItem::new(id, partitions, row.clone(), expires_at),
                    &format!("row {}", row.index),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        for shard in shards_with_rows(meta.counters.rows_total) {
            let counter = CounterItem::new(
                id,
                partitions,
                shard,
                shard_rows_total(meta.counters.rows_total, shard),
                expires_at,
            );
            items.push(sized_item(&counter, "a counter shard")?);
        }
        // This upload's item is the stored one (written now, or by its interrupted attempt).
        self.remember(id, layout);
        self.put_new(items, "writing rows").await?;
        if creating {
            let revealed = self
                .conditional_update(
                    id,
                    "REMOVE creating",
                    "attribute_exists(creating)",
                    &[],
                    vec![],
                    "revealing the request",
                )
                .await?;
            if revealed {
                return Ok(Created::Inserted);
            }
            // A concurrent attempt of the same upload revealed it first.
        }
        if !creating && self.table.put_if_absent(meta_item, "the request").await? {
            return Ok(Created::Inserted);
        }
        let existing = match self.get_request(id).await? {
            Some(existing) => existing,
            // Still `creating` (an attempt that stopped before its rows were written) and
            // now rejected: it ends with this failure instead of staying invisible.
            None if !creating => {
                let failure = meta.failure.clone().unwrap_or_else(|| Failure {
                    code: "ingest_failed".to_owned(),
                    message: "the upload could not be ingested".to_owned(),
                    issues: Vec::new(),
                });
                self.mark_failed(id, &failure, meta.updated_at).await?;
                self.get_request(id)
                    .await?
                    .ok_or_else(|| PortError::Conflict(format!("request {id} vanished")))?
            }
            None => return Err(PortError::Conflict(format!("request {id} vanished"))),
        };
        Ok(Created::AlreadyExists(Box::new(existing)))
    }

    async fn put_rows(&self, request_id: &str, rows: &[RowRecord]) -> Result<(), PortError> {
        use futures::StreamExt as _;
        use futures::TryStreamExt as _;
        // One conditional PutItem per row, a few at a time: the rows of a chunk need no
        // atomicity (a replay completes a partial chunk), and a plain write costs one write
        // unit per KB where a transactional one costs two (DynamoDB pricing, "Write request
        // units"). Rows of a catalogue expire counted from their writing, at most an ingest
        // later than the request item.
        let expires_at = self.expires_at(chrono::Utc::now());
        let partitions = self.layout(request_id).await?.partitions;
        let items = rows
            .iter()
            .map(|row| {
                sized_item(
                    &RowItem::new(request_id, partitions, row.clone(), expires_at),
                    &format!("row {}", row.index),
                )
                .map(|(item, _)| item)
            })
            .collect::<Result<Vec<_>, _>>()?;
        futures::stream::iter(items)
            .map(|item| async move {
                // A row written before (a replayed chunk), perhaps recorded since, is kept.
                self.table.put_if_absent(item, "a row").await.map(|_| ())
            })
            .buffer_unordered(PUT_ROWS_AT_ONCE)
            .try_collect::<()>()
            .await
    }

    async fn mark_processing(
        &self,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Transition, PortError> {
        let applied = self
            .conditional_update(
                request_id,
                "SET #status = :to, updated_at = :now",
                "#status = :from",
                &[("#status", "status")],
                vec![
                    (":to", status(RequestStatus::Processing)),
                    (":from", status(RequestStatus::Pending)),
                    (":now", s(now.to_rfc3339())),
                ],
                "marking the request processing",
            )
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
            .conditional_update(
                request_id,
                // A request still being created (rows not all written) fails too, and shows.
                "SET #status = :to, failure = :failure, updated_at = :now, completed_at = :now \
                 REMOVE creating",
                "#status IN (:pending, :processing)",
                &[("#status", "status")],
                vec![
                    (":to", status(RequestStatus::Failed)),
                    (":pending", status(RequestStatus::Pending)),
                    (":processing", status(RequestStatus::Processing)),
                    (":failure", encode(failure)?),
                    (":now", s(now.to_rfc3339())),
                ],
                "marking the request failed",
            )
            .await?;
        Ok(if applied {
            Transition::Applied(RequestStatus::Failed)
        } else {
            Transition::NotApplied
        })
    }
}

impl RequestReader for DynamoRequestRepository {
    async fn get_request(&self, request_id: &str) -> Result<Option<RequestMeta>, PortError> {
        Ok(self.read(request_id).await?.map(|(stored, counters)| {
            let mut meta = stored.meta;
            meta.counters = counters;
            meta
        }))
    }

    async fn list_rows(
        &self,
        request_id: &str,
        after: Option<u32>,
        limit: u32,
    ) -> Result<RowPage, PortError> {
        let start = after.map_or(0, |a| a.saturating_add(1));
        let limit = limit.max(1);
        let layout = self.layout(request_id).await?;
        if layout.partitions > 1 {
            // A page is the window of `limit` indices from `start`, merged from every partition.
            let rows = self
                .read_row_window(request_id, layout, start, limit)
                .await?;
            let end = u64::from(start) + u64::from(limit);
            let next = (end < layout.rows_total).then(|| start + (limit - 1));
            return Ok(RowPage { rows, next });
        }
        let mut rows = Vec::new();
        let mut exclusive_start = None;
        // A Query page holds at most 1 MB; keep reading until `limit` rows or the end.
        loop {
            let page_limit = i32::try_from(limit + 1 - rows.len() as u32).unwrap_or(i32::MAX);
            let (page, last_key) = self
                .query_rows(
                    &request_pk(request_id),
                    &row_sk(start),
                    ROW_SK_END,
                    Some(page_limit),
                    exclusive_start.take(),
                )
                .await?;
            rows.extend(page);
            match last_key {
                Some(last) if rows.len() <= limit as usize => exclusive_start = Some(last),
                _ => break,
            }
        }
        let next = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(|r| r.index)
        } else {
            None
        };
        Ok(RowPage { rows, next })
    }
}

impl RowLedger for DynamoRequestRepository {
    async fn record_row_outcome(
        &self,
        request_id: &str,
        row_index: u32,
        images: &[ImageOutcome],
        _now: DateTime<Utc>,
    ) -> Result<RowRecorded, PortError> {
        let shard = shard_of(row_index);
        let layout = self.layout(request_id).await?;
        let pk = row_pk(request_id, layout.partitions, row_index);
        let mut delta = Counters::default();
        delta.add_row(images);
        let encoded_images = encode(&images)?;
        // The outcomes alone past 400 KB can never be stored; DynamoDB would refuse the whole
        // item on every retry (the full item is checked by DynamoDB itself).
        let value: serde_dynamo::AttributeValue = serde_dynamo::to_attribute_value(images)
            .map_err(|e| PortError::Unexpected(anyhow!("item encoding: {e}")))?;
        let outcomes = serde_dynamo::Item::from(HashMap::from([("images".to_owned(), value)]));
        let outcomes_size = dynamodb_item_size(&outcomes);
        if outcomes_size > DYNAMODB_MAX_ITEM_BYTES {
            return Err(PortError::LimitExceeded(format!(
                "row {row_index}: the image outcomes are {outcomes_size} bytes; DynamoDB items hold at most {DYNAMODB_MAX_ITEM_BYTES} bytes"
            )));
        }
        // Step 1 of [`pixpress_domain::counting`]: the row `PENDING` → `DONE`; exactly one
        // delivery wins it.
        let recorded = retry(&self.table.retry, "recording the row outcome", || async {
            match self
                .table
                .update_item()
                .set_key(Some(key(pk.clone(), row_sk(row_index))))
                .update_expression("SET #state = :done, images = :images REMOVE progress")
                .condition_expression("#state = :pending")
                .expression_attribute_names("#state", "state")
                .expression_attribute_values(":done", s("DONE"))
                .expression_attribute_values(":pending", s("PENDING"))
                .expression_attribute_values(":images", encoded_images.clone())
                .send()
                .await
            {
                Ok(_) => Ok(true),
                Err(e) if condition_failed(&e) => Ok(false),
                Err(e) => Err(sdk_error("recording the row outcome", &e)),
            }
        })
        .await?;
        // The row's condition also fails when the row does not exist: that is no redelivery.
        if !recorded && !self.row_exists(request_id, layout, row_index).await? {
            return Err(PortError::Unexpected(anyhow!(
                "row {row_index} of request {request_id} does not exist"
            )));
        }
        // Step 2: the winner counts the row, a redelivery counts itself.
        let counter = self
            .count_row(request_id, layout, shard, recorded.then_some(&delta))
            .await?;
        let all_rows_done = self
            .settle_shard(request_id, layout, shard, &counter)
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
        let encoded = encode(&progress)?;
        let pk = row_pk(
            request_id,
            self.layout(request_id).await?.partitions,
            row_index,
        );
        retry(&self.table.retry, "saving row progress", || async {
            let out = self
                .table
                .update_item()
                .set_key(Some(key(pk.clone(), row_sk(row_index))))
                .update_expression("SET progress = :progress")
                .condition_expression("#state = :pending")
                .expression_attribute_names("#state", "state")
                .expression_attribute_values(":progress", encoded.clone())
                .expression_attribute_values(":pending", s("PENDING"))
                .send()
                .await;
            match out {
                Ok(_) => Ok(()),
                // Recorded meanwhile: its progress no longer matters.
                Err(e) if condition_failed(&e) => Ok(()),
                Err(e) => Err(sdk_error("saving row progress", &e)),
            }
        })
        .await
    }

    async fn complete(
        &self,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Transition, PortError> {
        // A cancellation accepted between the read and the flip fails the flip's condition;
        // the request is read again and ends CANCELLED. Two passes suffice: a cancellation is
        // accepted only while the request is not terminal, so it can interrupt at most once.
        for _ in 0..2 {
            let Some((stored, counters)) = self.read(request_id).await? else {
                return Ok(Transition::NotApplied);
            };
            if stored.meta.status.is_terminal()
                || stored.done_shards.len() < COUNTER_SHARDS as usize
            {
                return Ok(Transition::NotApplied);
            }
            // Every shard is full, so the sums read above are final.
            let Some(mut terminal) = counters.terminal_status() else {
                return Ok(Transition::NotApplied);
            };
            let cancelled = stored.meta.cancel_requested_at.is_some();
            if cancelled {
                terminal = RequestStatus::Cancelled;
            }
            // Applies only while non-terminal, with every shard done and (unless it ends
            // CANCELLED) no cancellation recorded since the read: exactly one caller wins.
            let condition = if cancelled {
                "#status IN (:pending, :processing) AND size(done_shards) = :shards"
            } else {
                "#status IN (:pending, :processing) AND size(done_shards) = :shards \
                 AND attribute_not_exists(cancel_requested_at)"
            };
            let applied = self
                .conditional_update(
                    request_id,
                    "SET #status = :terminal, #c = :counters, updated_at = :now, completed_at = :now",
                    condition,
                    &[("#status", "status"), ("#c", "counters")],
                    vec![
                        (":terminal", status(terminal)),
                        (":counters", encode(&counters)?),
                        (":pending", status(RequestStatus::Pending)),
                        (":processing", status(RequestStatus::Processing)),
                        (":shards", n(u64::from(COUNTER_SHARDS))),
                        (":now", s(now.to_rfc3339())),
                    ],
                    "completing the request",
                )
                .await?;
            if applied {
                return Ok(Transition::Applied(terminal));
            }
        }
        Ok(Transition::NotApplied)
    }

    async fn stop_requested(&self, request_id: &str) -> Result<bool, PortError> {
        let item = retry(&self.table.retry, "reading the cancellation", || async {
            self.table
                .get_item()
                .set_key(Some(Self::meta_key(request_id)))
                .projection_expression("cancel_requested_at, #status")
                .expression_attribute_names("#status", "status")
                .send()
                .await
                .map_err(|e| sdk_error("reading the cancellation", &e))
        })
        .await?;
        Ok(item.item.is_some_and(|item| {
            item.contains_key("cancel_requested_at")
                || item.get("status") == Some(&s(RequestStatus::Failed.as_str()))
        }))
    }
}

impl OutputLedger for DynamoRequestRepository {
    async fn record_output_csv(
        &self,
        request_id: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<(), PortError> {
        self.conditional_update(
            request_id,
            "SET output_csv_key = :key, updated_at = :now REMOVE output_progress",
            "attribute_exists(pk)",
            &[],
            vec![(":key", s(key)), (":now", s(now.to_rfc3339()))],
            "recording the output CSV",
        )
        .await
        .map(|_| ())
    }

    async fn output_progress(&self, request_id: &str) -> Result<Option<OutputProgress>, PortError> {
        let found = self
            .table
            .read_item(
                Self::meta_key(request_id),
                Some("output_progress"),
                "the output CSV progress",
            )
            .await?;
        let Some(value) = found.and_then(|mut item| item.remove("output_progress")) else {
            return Ok(None);
        };
        serde_dynamo::from_attribute_value(value)
            .map(Some)
            .map_err(|e| PortError::Unexpected(anyhow!("malformed output progress: {e}")))
    }

    async fn record_output_progress(
        &self,
        request_id: &str,
        progress: &OutputProgress,
    ) -> Result<(), PortError> {
        self.conditional_update(
            request_id,
            "SET output_progress = :progress",
            "attribute_exists(pk)",
            &[],
            vec![(":progress", encode(progress)?)],
            "recording the output CSV's progress",
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
        // Conditional on the count: a retry after a lost response appends nothing twice.
        self.conditional_update(
            request_id,
            "SET webhook.attempts = list_append(webhook.attempts, :attempt), webhook.#state = :state",
            "attribute_exists(webhook) AND size(webhook.attempts) = :before",
            &[("#state", "state")],
            vec![
                (":attempt", encode(&[attempt])?),
                (":state", encode(&state)?),
                (":before", n(u64::from(recorded_before))),
            ],
            "recording the webhook attempt",
        )
        .await
    }
}

/// A time as the request item stores it (`created_at` and the others: serde's RFC 3339 text),
/// so a key condition on the open-requests index compares like with like.
fn stored_time(time: DateTime<Utc>) -> Result<AttributeValue, PortError> {
    match serde_json::to_value(time) {
        Ok(serde_json::Value::String(text)) => Ok(s(text)),
        _ => Err(PortError::Unexpected(anyhow!("encoding the time {time}"))),
    }
}

impl OpenRequests for DynamoRequestRepository {
    async fn list_open(
        &self,
        created_before: DateTime<Utc>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<OpenPage, PortError> {
        let before = stored_time(created_before)?;
        // The cursor is the index's LastEvaluatedKey (table and index keys), as JSON.
        let start = match cursor {
            Some(text) => {
                let keys: HashMap<String, String> = serde_json::from_str(text)
                    .map_err(|e| PortError::Unexpected(anyhow!("malformed cursor: {e}")))?;
                Some(keys.into_iter().map(|(k, v)| (k, s(v))).collect())
            }
            None => None,
        };
        let out = retry(&self.table.retry, "listing open requests", || async {
            self.table
                .query()
                .index_name(OPEN_INDEX)
                .key_condition_expression("#open = :open AND created_at < :before")
                .expression_attribute_names("#open", OPEN_ATTRIBUTE)
                .expression_attribute_values(":open", s(OPEN_VALUE.to_owned()))
                .expression_attribute_values(":before", before.clone())
                .limit(i32::try_from(limit.max(1)).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.clone())
                .send()
                .await
                .map_err(|e| sdk_error("listing open requests", &e))
        })
        .await?;
        let request_ids = out
            .items
            .unwrap_or_default()
            .iter()
            .filter_map(|found| found.get("pk").and_then(|v| v.as_s().ok()))
            .filter_map(|pk| request_id_from_pk(pk).map(str::to_owned))
            .collect();
        let next = match out.last_evaluated_key {
            Some(last) => {
                let keys: HashMap<&String, &String> = last
                    .iter()
                    .filter_map(|(k, v)| v.as_s().ok().map(|v| (k, v)))
                    .collect();
                Some(serde_json::to_string(&keys).map_err(|e| PortError::Unexpected(e.into()))?)
            }
            None => None,
        };
        Ok(OpenPage { request_ids, next })
    }

    async fn progress_unchanged_since(
        &self,
        request_id: &str,
        rows_done: u64,
        first_seen: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, PortError> {
        let seen = ProgressSeen {
            rows_done,
            since: first_seen,
        };
        let noted = self
            .conditional_update(
                request_id,
                "SET progress_seen = :seen",
                "attribute_exists(pk) AND (attribute_not_exists(progress_seen) \
                 OR progress_seen.rows_done <> :done)",
                &[],
                vec![(":seen", encode(&seen)?), (":done", n(rows_done))],
                "noting the request's progress",
            )
            .await?;
        if noted {
            return Ok(first_seen);
        }
        #[derive(serde::Deserialize)]
        struct Seen {
            progress_seen: Option<ProgressSeen>,
        }
        let stored: Option<Seen> = self
            .table
            .read_as(Self::meta_key(request_id), "the request's progress")
            .await?;
        Ok(stored
            .and_then(|s| s.progress_seen)
            .filter(|seen| seen.rows_done == rows_done)
            .map_or(first_seen, |seen| seen.since))
    }

    async fn restart_wait(
        &self,
        request_id: &str,
        rows_done: u64,
        now: DateTime<Utc>,
    ) -> Result<(), PortError> {
        let seen = ProgressSeen {
            rows_done,
            since: now,
        };
        self.conditional_update(
            request_id,
            "SET progress_seen = :seen",
            "attribute_exists(pk)",
            &[],
            vec![(":seen", encode(&seen)?)],
            "restarting the idle wait",
        )
        .await
        .map(|_| ())
    }

    async fn mark_shard_if_full(&self, request_id: &str, shard: u32) -> Result<bool, PortError> {
        let layout = self.layout(request_id).await?;
        let shard_key = key(
            counter_pk(request_id, layout.partitions, shard),
            counter_sk(shard),
        );
        let Some(counter): Option<CounterItem> =
            self.table.read_as(shard_key, "a counter shard").await?
        else {
            return Err(PortError::Unexpected(anyhow!(
                "counter shard {shard} of request {request_id} does not exist"
            )));
        };
        // A repair: a row recorded by a delivery that died before counting it, and never
        // redelivered, leaves its shard short; its rows tell.
        let full = counter.check() == ShardCheck::Full
            || self
                .recount_shard(request_id, layout, shard, counter.counters.rows_total, None)
                .await?;
        if !full {
            return Ok(false);
        }
        self.mark_shard_done(request_id, shard).await
    }

    async fn settle(&self, request_id: &str) -> Result<bool, PortError> {
        self.conditional_update(
            request_id,
            "REMOVE #open",
            "attribute_exists(#open) AND NOT (#status IN (:pending, :processing))",
            &[("#open", OPEN_ATTRIBUTE), ("#status", "status")],
            vec![
                (":pending", status(RequestStatus::Pending)),
                (":processing", status(RequestStatus::Processing)),
            ],
            "settling the request",
        )
        .await
    }
}

impl RequestControl for DynamoRequestRepository {
    async fn redeliver_webhook(&self, request_id: &str) -> Result<bool, PortError> {
        self.conditional_update(
            request_id,
            "SET webhook.#state = :pending",
            "attribute_exists(webhook) AND webhook.#state <> :pending \
             AND #status IN (:completed, :with_errors, :failed, :cancelled)",
            &[("#state", "state"), ("#status", "status")],
            vec![
                (":pending", encode(&DeliveryState::Pending)?),
                (":completed", status(RequestStatus::Completed)),
                (":with_errors", status(RequestStatus::CompletedWithErrors)),
                (":failed", status(RequestStatus::Failed)),
                (":cancelled", status(RequestStatus::Cancelled)),
            ],
            "redelivering the webhook",
        )
        .await
    }

    async fn request_cancel(
        &self,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        // Only while running; the first time is kept (`if_not_exists`).
        self.conditional_update(
            request_id,
            "SET cancel_requested_at = if_not_exists(cancel_requested_at, :now), updated_at = :now",
            "#status IN (:pending, :processing)",
            &[("#status", "status")],
            vec![
                (":now", s(now.to_rfc3339())),
                (":pending", status(RequestStatus::Pending)),
                (":processing", status(RequestStatus::Processing)),
            ],
            "cancelling the request",
        )
        .await
    }
}
