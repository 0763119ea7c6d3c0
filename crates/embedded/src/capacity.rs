//! DynamoDB's capacity, modelled for the embedded repository: what each call consumes and
//! how much one partition key serves.
//!
//! Units (Amazon DynamoDB Developer Guide, "Read/write capacity mode" and "Item sizes and
//! formats"):
//! - a write consumes one write unit per 1 KB of the item, rounded up (an update: the larger
//!   of the item before and after); in a transaction, two;
//! - a strongly consistent read of an item consumes one read unit per 4 KB, rounded up; an
//!   eventually consistent read half; a `Query` sums the sizes of the items it returns before
//!   rounding up.
//!
//! Throughput: one partition serves at most 1,000 write units and 3,000 read units per second
//! whatever the table's capacity ("Best practices for designing and using partition keys
//! effectively"); items of one partition key share one partition, so a request whose items
//! all share `REQ#<id>` is limited to that. Beyond it DynamoDB throttles with
//! `ThrottlingException` (on-demand) or `ProvisionedThroughputExceededException`, throttling
//! reason `TableWriteKeyRangeThroughputExceeded` / `TableReadKeyRangeThroughputExceeded`.
//! Tests scale the limits down ([`CapacityModel::scaled`]).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde::Serialize;

use pixpress_app::ports::PortError;

/// Bytes per write unit.
const WRITE_UNIT_BYTES: usize = 1024;
/// Bytes per read unit.
const READ_UNIT_BYTES: usize = 4096;

/// Throughput one partition key serves, per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CapacityModel {
    /// Write units per second per partition key (DynamoDB: 1,000).
    pub write_units_per_second: f64,
    /// Read units per second per partition key (DynamoDB: 3,000).
    pub read_units_per_second: f64,
}

impl CapacityModel {
    /// DynamoDB's per-partition limits.
    pub const DYNAMODB: Self = Self {
        write_units_per_second: 1_000.0,
        read_units_per_second: 3_000.0,
    };

    /// These limits times `factor` (a test's 0.01: 10 write units per second per key).
    #[must_use]
    pub fn scaled(self, factor: f64) -> Self {
        Self {
            write_units_per_second: self.write_units_per_second * factor,
            read_units_per_second: self.read_units_per_second * factor,
        }
    }
}

/// Capacity consumed by one kind of call, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Consumed {
    /// Calls that succeeded.
    pub calls: u64,
    /// Read units.
    pub read_units: f64,
    /// Write units.
    pub write_units: f64,
    /// Calls refused for the partition's throughput.
    pub throttled: u64,
}

/// One item a call reads or writes.
#[derive(Debug, Clone)]
pub(crate) enum Access<'a> {
    /// A `GetItem` (or a transaction's read) of an item of `bytes`.
    Get {
        pk: &'a str,
        bytes: usize,
        consistent: bool,
    },
    /// A `Query` returning items of `bytes` in all.
    Query {
        pk: &'a str,
        bytes: usize,
        consistent: bool,
    },
    /// A write of an item of `bytes` (an update: the larger size, before or after).
    Write { pk: &'a str, bytes: usize },
}

impl Access<'_> {
    fn pk(&self) -> &str {
        match self {
            Self::Get { pk, .. } | Self::Query { pk, .. } | Self::Write { pk, .. } => pk,
        }
    }

    /// (read units, write units), ×2 in a transaction.
    fn units(&self, transactional: bool) -> (f64, f64) {
        let factor = if transactional { 2.0 } else { 1.0 };
        let read = |bytes: usize, consistent: bool| {
            let units = bytes.max(1).div_ceil(READ_UNIT_BYTES) as f64;
            if consistent { units } else { units / 2.0 }
        };
        match *self {
            Self::Get {
                bytes, consistent, ..
            }
            | Self::Query {
                bytes, consistent, ..
            } => (read(bytes, consistent) * factor, 0.0),
            Self::Write { bytes, .. } => {
                (0.0, bytes.max(1).div_ceil(WRITE_UNIT_BYTES) as f64 * factor)
            }
        }
    }
}

#[derive(Debug)]
struct Bucket {
    read: f64,
    write: f64,
    at: Instant,
}

/// Counts what each call consumes and, with a [`CapacityModel`], refuses what a partition
/// cannot serve (a token bucket of one second of throughput per partition key, which a call
/// may overdraw; the next calls are throttled until it refills).
#[derive(Debug, Default)]
pub(crate) struct Meter {
    model: Option<CapacityModel>,
    buckets: HashMap<String, Bucket>,
    consumed: BTreeMap<&'static str, Consumed>,
}

impl Meter {
    pub(crate) fn limit(&mut self, model: CapacityModel) {
        self.model = Some(model);
    }

    /// Charges `call` for `accesses`; with a model, first checks every partition it touches
    /// has the units, and refuses the whole call (consuming nothing) when one has not.
    pub(crate) fn charge(
        &mut self,
        call: &'static str,
        transactional: bool,
        accesses: &[Access<'_>],
    ) -> Result<(), PortError> {
        let mut per_key: HashMap<&str, (f64, f64)> = HashMap::new();
        for access in accesses {
            let (read, write) = access.units(transactional);
            let entry = per_key.entry(access.pk()).or_default();
            entry.0 += read;
            entry.1 += write;
        }
        if let Some(model) = self.model {
            let now = Instant::now();
            for (pk, (read, write)) in &per_key {
                let bucket = self.buckets.entry((*pk).to_owned()).or_insert(Bucket {
                    read: model.read_units_per_second,
                    write: model.write_units_per_second,
                    at: now,
                });
                let elapsed = now.duration_since(bucket.at).as_secs_f64();
                bucket.read = (bucket.read + elapsed * model.read_units_per_second)
                    .min(model.read_units_per_second);
                bucket.write = (bucket.write + elapsed * model.write_units_per_second)
                    .min(model.write_units_per_second);
                bucket.at = now;
                // A call is served while the partition has units left and may overdraw them
                // (one transaction of 100 rows fits any partition); the calls after it wait
                // until the second's units have come back.
                let reason = if *write > 0.0 && bucket.write <= 0.0 {
                    Some("TableWriteKeyRangeThroughputExceeded")
                } else if *read > 0.0 && bucket.read <= 0.0 {
                    Some("TableReadKeyRangeThroughputExceeded")
                } else {
                    None
                };
                if let Some(reason) = reason {
                    self.consumed.entry(call).or_default().throttled += 1;
                    return Err(PortError::Throttled(format!(
                        "{call}: ThrottlingException: throughput exceeds the current capacity of partition key {pk} ({reason})"
                    )));
                }
            }
            for (pk, (read, write)) in &per_key {
                if let Some(bucket) = self.buckets.get_mut(*pk) {
                    bucket.read -= read;
                    bucket.write -= write;
                }
            }
        }
        let consumed = self.consumed.entry(call).or_default();
        consumed.calls += 1;
        for (read, write) in per_key.values() {
            consumed.read_units += read;
            consumed.write_units += write;
        }
        Ok(())
    }

    pub(crate) fn consumed(&self) -> BTreeMap<&'static str, Consumed> {
        self.consumed.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_round_up_per_item_and_double_in_transactions() {
        let mut meter = Meter::default();
        let pk = "REQ#r";
        meter
            .charge(
                "TransactWriteItems",
                true,
                &[
                    Access::Write { pk, bytes: 1025 },
                    Access::Write { pk, bytes: 100 },
                ],
            )
            .unwrap();
        meter
            .charge(
                "GetItem",
                false,
                &[Access::Get {
                    pk,
                    bytes: 4097,
                    consistent: false,
                }],
            )
            .unwrap();
        meter
            .charge(
                "Query",
                false,
                &[Access::Query {
                    pk,
                    bytes: 32 * 150,
                    consistent: true,
                }],
            )
            .unwrap();
        let consumed = meter.consumed();
        // (2 + 1) write units, doubled.
        assert_eq!(consumed["TransactWriteItems"].write_units, 6.0);
        // 4,097 bytes are two read units; eventually consistent, one.
        assert_eq!(consumed["GetItem"].read_units, 1.0);
        // 4,800 bytes returned by one query: two read units.
        assert_eq!(consumed["Query"].read_units, 2.0);
    }

    #[test]
    fn a_partition_past_its_write_units_is_throttled_and_another_is_not() {
        let mut meter = Meter::default();
        meter.limit(CapacityModel::DYNAMODB.scaled(0.01));
        let write = |pk, bytes| [Access::Write { pk, bytes }];
        // 11 write units on a partition that serves 10 a second: served, overdrawn.
        meter
            .charge("PutItem", false, &write("REQ#hot", 11 * 1024))
            .unwrap();
        let err = meter
            .charge("PutItem", false, &write("REQ#hot", 100))
            .unwrap_err();
        assert!(matches!(err, PortError::Throttled(_)), "{err}");
        assert!(
            err.to_string()
                .contains("TableWriteKeyRangeThroughputExceeded"),
            "{err}"
        );
        meter
            .charge("PutItem", false, &write("REQ#cold", 100))
            .unwrap();
        assert_eq!(meter.consumed()["PutItem"].throttled, 1);
        assert_eq!(meter.consumed()["PutItem"].calls, 2);
    }
}
