//! `pixpress-scale-model`: how long one request of 10,000, 100,000 and 1,000,000 rows takes
//! on AWS, which limit binds each stage, and what it costs — from measured inputs.
//!
//! ```sh
//! pixpress-scale-model [--workers 200] [--partitions N] [--write-units-per-row 3.01] …
//! ```
//!
//! Inputs, with their sources (defaults are this repository's measurements):
//! - write and read units per row: `pixpress-capacity-bench --rows 20000` (whole request:
//!   3.01 write, 0.70 read units per row of two images, 0.46 read units of them the bench's
//!   status polls; 1.00 write unit of them at ingest);
//! - engine CPU per image: `scripts/bench.sh` on the product set (≈ 25 ms per image through
//!   the whole worker, one vCPU per 1,769 MB worker);
//! - origin latency: downloads overlap compression (32 per origin at once), so latency adds
//!   to each row's time, not to throughput, as long as `workers × 10 rows` cover it;
//! - limits: one partition key serves 1,000 write units and 3,000 read units a second
//!   (Amazon DynamoDB Developer Guide, "Best practices for designing and using partition keys
//!   effectively"); a request's rows spread over `partitions` keys (by default as the
//!   repository spreads them: `pixpress_domain::counting::partitions_for`, 32 from 16,001
//!   rows); Lambda concurrency `workers` (the SQS event source's maximum concurrency).
//!
//! Each figure is printed next to the same model before rows were spread: one partition key per
//! request and the units measured then (6.10 write, 3.76 read, 2.07 at ingest).
//!
//! Each stage's time is its work over the slowest of the limits it meets; stages overlap
//! (rows are processed while others are still ingested), so a request takes about its slowest
//! stage — where ingest and recording share the request's partition keys, their writes add up.
//! Prices: us-east-1 list prices (see `docs/benchmarks.md`, "Cost per million product
//! photos").

use clap::Parser;

/// Model one request's time and cost at scale.
#[derive(Debug, Clone, Copy, Parser)]
struct Args {
    /// Worker concurrency (Lambda executions of the row-worker at once).
    #[arg(long, default_value_t = 200)]
    workers: u32,
    /// Partition keys one request's items are spread over (default: as the repository
    /// spreads a request of that many rows).
    #[arg(long)]
    partitions: Option<u32>,
    /// Write units per row, whole request (measured: `pixpress-capacity-bench`).
    #[arg(long, default_value_t = 3.01)]
    write_units_per_row: f64,
    /// Of those, written at ingest (measured).
    #[arg(long, default_value_t = 1.00)]
    ingest_write_units_per_row: f64,
    /// Read units per row (measured).
    #[arg(long, default_value_t = 0.70)]
    read_units_per_row: f64,
    /// Images per row.
    #[arg(long, default_value_t = 2)]
    images_per_row: u32,
    /// CPU milliseconds per image through the worker (download, decode, encode, store).
    #[arg(long, default_value_t = 25.0)]
    cpu_ms_per_image: f64,
    /// Median origin latency per image, milliseconds.
    #[arg(long, default_value_t = 100.0)]
    origin_latency_ms: f64,
    /// Write units one partition key serves per second.
    #[arg(long, default_value_t = 1_000.0)]
    partition_write_units: f64,
    /// Read units one partition key serves per second.
    #[arg(long, default_value_t = 3_000.0)]
    partition_read_units: f64,
}

/// One stage: its time and the limit that binds it.
struct Stage {
    name: &'static str,
    seconds: f64,
    bound_by: String,
}

fn slowest(name: &'static str, limits: Vec<(f64, String)>) -> Stage {
    let (seconds, bound_by) = limits.into_iter().fold((0.0, String::new()), |best, next| {
        if next.0 > best.0 { next } else { best }
    });
    Stage {
        name,
        seconds,
        bound_by,
    }
}

fn human(seconds: f64) -> String {
    if seconds < 120.0 {
        format!("{seconds:.0} s")
    } else if seconds < 7_200.0 {
        format!("{:.1} min", seconds / 60.0)
    } else {
        format!("{:.1} h", seconds / 3_600.0)
    }
}

/// The partition keys of a request of `rows` rows.
fn partitions(args: &Args, rows: f64) -> u32 {
    args.partitions.map_or_else(
        || pixpress_domain::counting::partitions_for(rows as u64),
        |p| p.max(1),
    )
}

/// The model as it was before rows were spread: one key, the units measured then.
fn before(args: &Args) -> Args {
    Args {
        partitions: Some(1),
        write_units_per_row: 6.10,
        ingest_write_units_per_row: 2.07,
        read_units_per_row: 3.76,
        ..*args
    }
}

fn model(args: &Args, rows: f64) -> (Vec<Stage>, f64) {
    let keys = partitions(args, rows);
    let partitions = f64::from(keys);
    let images = rows * f64::from(args.images_per_row);
    let write_rate = args.partition_write_units * partitions;
    let read_rate = args.partition_read_units * partitions;
    let workers = f64::from(args.workers.max(1));
    // One vCPU per worker: images per second per worker from the CPU per image.
    let per_worker = 1_000.0 / args.cpu_ms_per_image;
    // Rows in flight must cover the origin latency: 10 rows per invocation, images at once.
    let latency_bound =
        workers * 10.0 * f64::from(args.images_per_row) / (args.origin_latency_ms / 1_000.0);
    let ingest = slowest(
        "ingest (rows and counters written)",
        vec![(
            rows * args.ingest_write_units_per_row / write_rate,
            format!("{keys} partition key(s): {write_rate:.0} write units/s"),
        )],
    );
    let process = slowest(
        "process (download, compress, store)",
        vec![
            (
                images / (workers * per_worker),
                format!("{} workers × {per_worker:.0} images/s (CPU)", args.workers),
            ),
            (
                images / latency_bound,
                format!("origin latency {} ms", args.origin_latency_ms),
            ),
        ],
    );
    // Ingest and recording write to the same partition keys at once: their writes add up.
    let writes = slowest(
        "table writes (ingest and outcomes)",
        vec![(
            rows * args.write_units_per_row / write_rate,
            format!("{keys} partition key(s): {write_rate:.0} write units/s"),
        )],
    );
    let reads = slowest(
        "table reads",
        vec![(
            rows * args.read_units_per_row / read_rate,
            format!("{keys} partition key(s): {read_rate:.0} read units/s"),
        )],
    );
    let total = process.seconds.max(writes.seconds).max(reads.seconds);
    (vec![ingest, process, writes, reads], total)
}

/// Cost of one request of `rows` rows, in US dollars (us-east-1 list prices).
fn cost(args: &Args, rows: f64) -> f64 {
    let images = rows * f64::from(args.images_per_row);
    let lambda_gb_seconds = images * args.cpu_ms_per_image / 1_000.0 * 1.769;
    let lambda = lambda_gb_seconds * 0.000_013_333_4 + rows / 10.0 * 0.20 / 1e6;
    let dynamodb = rows * args.write_units_per_row * 0.625 / 1e6
        + rows * args.read_units_per_row * 0.125 / 1e6;
    let sqs = rows / 10.0 * 3.0 * 0.40 / 1e6;
    let s3 = images * 0.005 / 1_000.0;
    lambda + dynamodb + sqs + s3
}

fn main() {
    let args = Args::parse();
    println!(
        "inputs: {:.2} write / {:.2} read units per row ({:.2} at ingest), {} images per row, {} ms CPU per image, {} ms origin latency, {} workers, {} per request",
        args.write_units_per_row,
        args.read_units_per_row,
        args.ingest_write_units_per_row,
        args.images_per_row,
        args.cpu_ms_per_image,
        args.origin_latency_ms,
        args.workers,
        args.partitions.map_or_else(
            || "partition keys as the repository spreads them".to_owned(),
            |p| format!("{p} partition key(s)")
        )
    );
    let was = before(&args);
    for rows in [10_000.0, 100_000.0, 1_000_000.0] {
        let (stages, total) = model(&args, rows);
        let (old_stages, old_total) = model(&was, rows);
        let old_bound = old_stages
            .iter()
            .max_by(|a, b| a.seconds.total_cmp(&b.seconds))
            .map_or(String::new(), |s| s.bound_by.clone());
        println!(
            "\n{rows:.0} rows: about {} (${:.2}); before rows were spread: {} (${:.2}), bound by {old_bound}",
            human(total),
            cost(&args, rows),
            human(old_total),
            cost(&was, rows)
        );
        for stage in stages {
            println!(
                "  {:<40} {:>10}   bound by {}",
                stage.name,
                human(stage.seconds),
                stage.bound_by
            );
        }
    }
}
