//! How row completions are counted without a hot item (DESIGN §3, "Counting").
//!
//! Recording a row outcome and counting it must be one atomic step (a redelivered row must not
//! count twice). Adding to counters on the request item in that transaction makes the request
//! item hot: rows of one request finishing together all write it, and DynamoDB cancels all but
//! one of the overlapping transactions (`TransactionConflict`). Instead the counts live in
//! [`COUNTER_SHARDS`] counter items per request: row `i` adds to shard `i mod 32` in the
//! transaction that marks it done, so only rows of the same shard can conflict — 32 times
//! fewer — and those retry with jittered backoff (`pixpress_app::retry`).
//!
//! Completion: each counter item knows how many rows it counts ([`shard_rows_total`]). The
//! writer whose row fills its shard adds the shard's number to the request item's set of done
//! shards (`ADD`, idempotent); shards without rows are in the set from the start. The writer
//! that sees the set full flips the request to its terminal status with one conditional write
//! (status non-terminal and all 32 shards done), storing the summed counters: exactly one
//! writer wins. Redelivered rows repeat the shard check, so a crash between the steps is
//! repaired by the redelivery.
//!
//! Write load per request: each counter item takes one transactional write per row of its
//! shard; the request item takes at most 32 set additions plus the flip.

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
}
