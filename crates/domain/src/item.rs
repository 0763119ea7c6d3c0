//! The DynamoDB item schema (DESIGN §3): how [`RequestMeta`] and [`RowRecord`] are laid out as
//! items with `pk`/`sk` keys. Used by the repository adapters and by the stream consumer, so
//! the stream images and the table always agree.

use serde::{Deserialize, Serialize};

use super::counting::{ShardCheck, empty_shards, partitions_for};
use super::model::{Counters, OutputProgress, RequestMeta, RequestStatus, RowRecord};
use super::storage_keys::{META_SK, counter_pk, counter_sk, request_pk, row_pk, row_sk};

/// Attribute holding the item's expiry for DynamoDB TTL (epoch seconds).
pub const TTL_ATTRIBUTE: &str = "expires_at";

/// The sparse global secondary index of open requests: partition key [`OPEN_ATTRIBUTE`], sort
/// key `created_at` (RFC 3339 text), keys only. A request item is in it from its creation until
/// the sweeper finds it settled (terminal, its output CSV and webhook handed on), so the sweeper
/// reads only requests that may need repair, never a scan of the table.
pub const OPEN_INDEX: &str = "open-requests";
/// Attribute holding [`OPEN_VALUE`] while the request is open (the index's partition key).
pub const OPEN_ATTRIBUTE: &str = "open";
/// The one value of [`OPEN_ATTRIBUTE`]. One index partition serves 1,000 request-item writes a
/// second ("Best practices for designing and using partition keys effectively", Amazon
/// DynamoDB Developer Guide): request items change a handful of times per request, far below.
pub const OPEN_VALUE: &str = "OPEN";

/// The sweeper's last look at a running request: its rows done then, and since when that count
/// has not changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressSeen {
    /// Rows recorded when the count last changed.
    pub rows_done: u64,
    /// When the sweeper first saw that count.
    pub since: chrono::DateTime<chrono::Utc>,
}

/// The request item: `REQ#<id>` / `META` plus the flattened [`RequestMeta`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetaItem {
    /// `REQ#<request_id>`.
    pub pk: String,
    /// Always `META`.
    pub sk: String,
    /// The record.
    #[serde(flatten)]
    pub meta: RequestMeta,
    /// Counter shards whose rows are all recorded (a DynamoDB number set, grown with `ADD`;
    /// [`super::counting`]).
    #[serde(
        default,
        with = "serde_dynamo::number_set",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub done_shards: Vec<u32>,
    /// The output CSV's progress while it is written across invocations
    /// ([`OutputProgress`]); removed when the CSV is recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_progress: Option<OutputProgress>,
    /// [`OPEN_VALUE`] while the request is open ([`OPEN_INDEX`]); removed once it is settled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open: Option<String>,
    /// The sweeper's last look at its progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_seen: Option<ProgressSeen>,
    /// `true` while its rows are being written: readers see no request yet, and a second
    /// attempt under the same id finishes the writing only if it carries the same upload
    /// ([`RequestMeta::fingerprint`]), so two uploads' rows never mix.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub creating: bool,
    /// How many partition keys the request's row and counter items spread over
    /// ([`partitions_for`] of its row count, fixed at creation; 1, the default, for requests
    /// stored before rows were spread).
    #[serde(default = "one_partition", skip_serializing_if = "is_one_partition")]
    pub partitions: u32,
    /// TTL, epoch seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

fn one_partition() -> u32 {
    1
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `skip_serializing_if` passes a reference
fn is_one_partition(partitions: &u32) -> bool {
    *partitions == 1
}

impl MetaItem {
    /// The item for a new request `meta`: the counter shards without rows are done from the
    /// start.
    #[must_use]
    pub fn new(meta: RequestMeta, expires_at: Option<i64>) -> Self {
        Self {
            pk: request_pk(&meta.request_id),
            sk: META_SK.to_owned(),
            done_shards: empty_shards(meta.counters.rows_total),
            partitions: partitions_for(meta.counters.rows_total),
            meta,
            output_progress: None,
            open: Some(OPEN_VALUE.to_owned()),
            progress_seen: None,
            creating: false,
            expires_at,
        }
    }
}

/// A counter shard item: `REQ#<id>[#<partition>]` / `COUNT#<shard>` holding the tally of the rows of that
/// shard ([`super::counting`]). `rows_total` is the shard's row count, written at creation;
/// the other counters grow with `ADD` as rows are recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CounterItem {
    /// The partition key of its rows ([`counter_pk`]).
    pub pk: String,
    /// `COUNT#<shard>`.
    pub sk: String,
    /// The shard's tally. `rows_done` counts only rows whose own recording added to it, so it
    /// never exceeds the rows recorded ([`super::counting`]).
    #[serde(flatten)]
    pub counters: Counters,
    /// How far the tally can be trusted ([`super::counting`]).
    #[serde(flatten)]
    pub marks: ShardMarks,
    /// TTL, epoch seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// What a counter shard knows beyond its tally ([`super::counting`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMarks {
    /// Deliveries that found their row recorded already (a redelivery): each such row may or
    /// may not be in `rows_done` yet.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub redelivered: u64,
    /// Set once the tally was recounted from the shard's rows themselves: then it is exact
    /// and final, and no writer adds to it any more.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verified: bool,
    /// After a recount that found rows still to come: the number of `ADD`s
    /// (`rows_done + redelivered`) below which recounting again cannot succeed yet.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub recount_after: u64,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `skip_serializing_if` passes a reference
fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl CounterItem {
    /// What the shard's tally says about its rows ([`ShardCheck`]).
    #[must_use]
    pub fn check(&self) -> ShardCheck {
        super::counting::check_shard(&self.counters, &self.marks)
    }

    /// The empty shard `shard` of request `request_id` (spread over `partitions` keys),
    /// counting `rows_total` rows.
    #[must_use]
    pub fn new(
        request_id: &str,
        partitions: u32,
        shard: u32,
        rows_total: u64,
        expires_at: Option<i64>,
    ) -> Self {
        Self {
            pk: counter_pk(request_id, partitions, shard),
            sk: counter_sk(shard),
            counters: Counters {
                rows_total,
                ..Counters::default()
            },
            marks: ShardMarks::default(),
            expires_at,
        }
    }
}

/// A row item: `REQ#<id>[#<partition>]` / `ROW#<index>` plus the flattened [`RowRecord`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowItem {
    /// The row's partition key ([`row_pk`]).
    pub pk: String,
    /// [`row_sk`] of its index.
    pub sk: String,
    /// The record.
    #[serde(flatten)]
    pub row: RowRecord,
    /// TTL, epoch seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

impl RowItem {
    /// The item for `row` of request `request_id` (spread over `partitions` keys).
    #[must_use]
    pub fn new(request_id: &str, partitions: u32, row: RowRecord, expires_at: Option<i64>) -> Self {
        Self {
            pk: row_pk(request_id, partitions, row.index),
            sk: row_sk(row.index),
            row,
            expires_at,
        }
    }
}

/// The attributes a stream consumer reads from any item image: keys and, for request items,
/// the status. Row items have no `status`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ItemHead {
    /// Partition key.
    pub pk: String,
    /// Sort key.
    pub sk: String,
    /// Request status (request items only).
    #[serde(default)]
    pub status: Option<RequestStatus>,
}
