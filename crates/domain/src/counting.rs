//! How row completions are counted without a hot item and without transactions (DESIGN §3,
//! "Counting").
//!
//! The counts live in [`COUNTER_SHARDS`] counter items per request: row `i` counts in shard
//! `i mod 32`, which shares the row's partition key, so no item is written by every row.
//!
//! Recording a row is two single-item writes, one write unit each for items under 1 KB
//! ("Read and write capacity units", Amazon DynamoDB Developer Guide: a transaction would cost
//! twice that):
//!
//! 1. the row `PENDING` → `DONE`, conditional on `PENDING` — exactly one delivery of a row
//!    wins it;
//! 2. the winner `ADD`s the row to its shard (`rows_done` + 1, its images and bytes); a
//!    delivery that lost step 1 (a redelivery) `ADD`s 1 to the shard's `redelivered` instead.
//!
//! The winner's `ADD` is sent at most once (no SDK or in-process retry after an answer that
//! does not prove it was refused), so `rows_done` never exceeds the rows recorded: a winner
//! that died or lost its answer between the steps leaves its row uncounted, and the row's
//! redelivery adds to `redelivered` instead. Hence [`check_shard`]:
//!
//! - `rows_done = rows_total` — every row recorded and counted exactly once: the shard is full.
//! - `rows_done + redelivered ≥ rows_total` (or `rows_done` past the total, which the rule
//!   above forbids, so a recount corrects it) — perhaps full: the rows themselves are read and
//!   the tally recounted from them; when every row is `DONE` the exact tally is written with
//!   `verified` (conditional on not verified yet), after which no `ADD` applies. A recount that
//!   finds `m` rows still to come stores `recount_after` = the `ADD`s it saw + `m`: each of
//!   those rows brings at least one more `ADD`, so no recount runs before they can all be in,
//!   and duplicate deliveries cannot make every later `ADD` re-read the partition.
//! - otherwise some row is still to come; its own `ADD` checks again.
//!
//! Every row's `DONE` write is followed by an `ADD` (the winner's, or its redelivery's), so the
//! last `ADD` of a shard always finds it full or recounts it. The rows are read only on the
//! rare path (a death between the two writes, a duplicate delivery), not per row.
//!
//! Completion: the writer that finds its shard full adds the shard's number to the request
//! item's set of done shards (`ADD`, idempotent); shards without rows are in the set from the
//! start. The writer that sees the set full flips the request to its terminal status with one
//! conditional write (status non-terminal and all 32 shards done), storing the summed
//! counters: exactly one writer wins. Redelivered rows repeat the shard check, so a crash
//! between the steps is repaired by the redelivery.
//!
//! Write load per request: each counter item takes one write per row of its shard; the
//! request item takes at most 32 set additions plus the flip.

use super::item::ShardMarks;
use super::model::{Counters, RowRecord, RowState};

/// Counter shards per request.
pub const COUNTER_SHARDS: u32 = 32;

/// The shard row `row_index` counts in.
#[must_use]
pub fn shard_of(row_index: u32) -> u32 {
    row_index % COUNTER_SHARDS
}

/// How many rows of a `rows_total`-row request count in `shard`.
#[must_use]
pub fn shard_rows_total(rows_total: u64, shard: u32) -> u64 {
    let shards = u64::from(COUNTER_SHARDS);
    rows_total / shards + u64::from(u64::from(shard) < rows_total % shards)
}

/// The shards of a `rows_total`-row request that count at least one row (they get a counter
/// item); the others are done from the start.
pub fn shards_with_rows(rows_total: u64) -> impl Iterator<Item = u32> {
    (0..COUNTER_SHARDS).filter(move |&s| shard_rows_total(rows_total, s) > 0)
}

/// What a counter shard's tally says about its rows ([the module](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardCheck {
    /// Every row is recorded and counted: the shard can be marked done.
    Full,
    /// Perhaps every row is recorded, some counted only as redeliveries: recount the rows.
    Recount,
    /// Some row is still to be recorded.
    Open,
}

/// The rule of [the module](self): `counters` a shard's tally, `marks` what else it knows.
#[must_use]
pub fn check_shard(counters: &Counters, marks: &ShardMarks) -> ShardCheck {
    let adds = counters.rows_done.saturating_add(marks.redelivered);
    if marks.verified || counters.rows_done == counters.rows_total {
        ShardCheck::Full
    } else if adds >= counters.rows_total && adds >= marks.recount_after {
        ShardCheck::Recount
    } else {
        ShardCheck::Open
    }
}

/// A shard's tally recounted from its rows, read in any order: `Some(exact)` when every one
/// of the shard's `rows_total` rows is `DONE`, `None` while any is not (or missing).
#[derive(Debug, Clone, Copy)]
pub struct Recount {
    tally: Counters,
}

impl Recount {
    /// An empty recount of a shard of `rows_total` rows.
    #[must_use]
    pub fn new(rows_total: u64) -> Self {
        Self {
            tally: Counters {
                rows_total,
                ..Counters::default()
            },
        }
    }

    /// Counts `row` if it is recorded.
    pub fn add(&mut self, row: &RowRecord) {
        if row.state == RowState::Done {
            self.tally.add_row(&row.images);
        }
    }

    /// The exact tally when every row was recorded; otherwise how many rows are still to
    /// come.
    ///
    /// # Errors
    /// The number of the shard's rows not `DONE` (or not found).
    pub fn finish(self) -> Result<Counters, u64> {
        if self.tally.rows_done == self.tally.rows_total {
            Ok(self.tally)
        } else {
            Err(self.tally.rows_total.saturating_sub(self.tally.rows_done))
        }
    }
}

/// Most partition keys a request's row and counter items spread over ([`partitions_for`]); a
/// divisor of [`COUNTER_SHARDS`], so counter shard `s` and every row it counts share partition
/// `s mod partitions` and a row's two outcome writes stay within one partition key.
pub const MAX_PARTITIONS: u32 = COUNTER_SHARDS;

/// Rows per partition key before a request gets another ([`partitions_for`]). One partition
/// key serves 1,000 write units a second ("Best practices for designing and using partition
/// keys effectively", Amazon DynamoDB Developer Guide) and a row costs 3 of them to write and
/// record, so 1,000 rows keep one key busy for about 3 s at full speed.
pub const ROWS_PER_PARTITION: u64 = 1_000;

/// How many partition keys the rows of a `rows_total`-row request spread over: the power of
/// two at or above `rows_total / ROWS_PER_PARTITION`, from 1 to [`MAX_PARTITIONS`] (32 keys,
/// 32,000 write units a second, from 16,001 rows on).
#[must_use]
pub fn partitions_for(rows_total: u64) -> u32 {
    let wanted = rows_total.div_ceil(ROWS_PER_PARTITION).max(1);
    u32::try_from(wanted.next_power_of_two())
        .unwrap_or(MAX_PARTITIONS)
        .min(MAX_PARTITIONS)
}

/// The partition (0-based, below `partitions`) holding row `row_index`: rows are dealt round
/// the partitions, so rows processed in input order spread their writes over all of them.
#[must_use]
pub fn partition_of_row(row_index: u32, partitions: u32) -> u32 {
    row_index % partitions.max(1)
}

/// The partition holding counter shard `shard`: the partition of every row it counts.
#[must_use]
pub fn partition_of_shard(shard: u32, partitions: u32) -> u32 {
    shard % partitions.max(1)
}

/// The shards of a `rows_total`-row request that count no row: done from the start.
#[must_use]
pub fn empty_shards(rows_total: u64) -> Vec<u32> {
    (0..COUNTER_SHARDS)
        .filter(|&s| shard_rows_total(rows_total, s) == 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_rows_exactly() {
        for rows_total in [1u64, 2, 31, 32, 33, 100, 1001] {
            let mut counted = vec![0u64; COUNTER_SHARDS as usize];
            for row in 0..rows_total {
                counted[shard_of(row as u32) as usize] += 1;
            }
            for shard in 0..COUNTER_SHARDS {
                assert_eq!(
                    counted[shard as usize],
                    shard_rows_total(rows_total, shard),
                    "{rows_total} rows, shard {shard}"
                );
            }
            let with_rows: Vec<u32> = shards_with_rows(rows_total).collect();
            assert_eq!(
                with_rows.len() + empty_shards(rows_total).len(),
                COUNTER_SHARDS as usize
            );
            assert_eq!(with_rows.len() as u64, rows_total.min(32));
        }
    }

    #[test]
    fn a_shard_is_full_only_when_counted_exactly_and_recounted_only_when_it_can_be() {
        let tally = |rows_done| Counters {
            rows_total: 10,
            rows_done,
            ..Counters::default()
        };
        let marks = |redelivered, recount_after| ShardMarks {
            redelivered,
            verified: false,
            recount_after,
        };
        assert_eq!(check_shard(&tally(10), &marks(0, 0)), ShardCheck::Full);
        assert_eq!(check_shard(&tally(9), &marks(0, 0)), ShardCheck::Open);
        // A row perhaps counted only as a redelivery.
        assert_eq!(check_shard(&tally(9), &marks(1, 0)), ShardCheck::Recount);
        // A recount at 10 `ADD`s found 2 rows to come: not again before 12.
        assert_eq!(check_shard(&tally(9), &marks(2, 12)), ShardCheck::Open);
        assert_eq!(check_shard(&tally(9), &marks(3, 12)), ShardCheck::Recount);
        // A count past the total is never taken for full.
        assert_eq!(check_shard(&tally(11), &marks(0, 0)), ShardCheck::Recount);
        let verified = ShardMarks {
            verified: true,
            ..ShardMarks::default()
        };
        assert_eq!(check_shard(&tally(0), &verified), ShardCheck::Full);
    }

    #[test]
    fn a_row_and_its_counter_shard_share_a_partition() {
        for partitions in [1, 2, 4, 8, 16, 32] {
            assert_eq!(COUNTER_SHARDS % partitions, 0);
            for row in [0u32, 1, 31, 32, 33, 999_999, 1_000_000, 12_345_677] {
                assert_eq!(
                    partition_of_row(row, partitions),
                    partition_of_shard(shard_of(row), partitions),
                    "row {row}, {partitions} partitions"
                );
            }
        }
    }

    #[test]
    fn partitions_grow_with_the_rows_up_to_the_cap() {
        assert_eq!(partitions_for(0), 1);
        assert_eq!(partitions_for(10), 1);
        assert_eq!(partitions_for(1_000), 1);
        assert_eq!(partitions_for(1_001), 2);
        assert_eq!(partitions_for(10_000), 16);
        assert_eq!(partitions_for(16_001), 32);
        assert_eq!(partitions_for(1_000_000), 32);
        assert_eq!(partitions_for(u64::MAX), 32);
    }
}
