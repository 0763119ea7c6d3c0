//! `pixpress-worker-bench`: one `row-worker` invocation, timed — ten rows of two images from an
//! origin on loopback, one compression thread — against what it cannot avoid: the CPU time of
//! compressing those twenty images and the time of one download.
//!
//! ```sh
//! python3 bench/origin.py --dir DIR --delay-ms 100 &   # prints "port N"
//! taskset -c 0 pixpress-worker-bench --base http://127.0.0.1:N --dir DIR
//! ```
//!
//! Prints the invocation's wall time, the compression CPU time (the same twenty images through
//! the engine afterwards, on this thread), one download's time, and the ratio
//! `wall ÷ (1.2 × compression CPU + one download)`: at most 1.0 when the invocation spends no
//! more than 20 % over its compression work plus the one download no overlap can hide.

use pixpress_app::ports::RequestIntake as _;
use pixpress_app::ports::RequestReader as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use pixpress_app::config::Config;
use pixpress_domain::model::{
    Counters, OutputSpec, RequestMeta, RequestStatus, RowJob, RowRecord, RowState,
};
use pixpress_embedded::{DirObjectStore, EmbeddedRequestRepository};
use pixpress_engine::{DecodeLimits, Engine, compress};
use pixpress_fetch::Fetcher;

/// Time one row-worker invocation.
#[derive(Debug, Parser)]
struct Args {
    /// The origin's base URL (bench/origin.py); images are `<base>/img/<n>/<file name>`.
    #[arg(long)]
    base: String,
    /// The directory the origin serves (the first 20 files are used).
    #[arg(long)]
    dir: PathBuf,
    /// Rows in the batch (two images each).
    #[arg(long, default_value_t = 10)]
    rows: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn cpu_time() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some(utime + stime)
        });
    Duration::from_millis(ticks.unwrap_or(0) * 10)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut names: Vec<String> = std::fs::read_dir(&args.dir)?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    let images = args.rows * 2;
    anyhow::ensure!(
        names.len() >= images,
        "need {images} files in the directory"
    );
    names.truncate(images);
    let mut config = Config::default();
    config.fetch.policy = pixpress_fetch::NetworkPolicy::local();
    let repo = EmbeddedRequestRepository::new();
    let out = std::env::temp_dir().join(format!("pixpress-worker-bench-{}", std::process::id()));
    let store = DirObjectStore::new(&out, None)?;
    let app = pixpress_row_worker::App::with_engine(
        repo.clone(),
        store,
        pixpress_embedded::InMemoryOriginSlots::default(),
        pixpress_embedded::EmbeddedQueue::new(5),
        Fetcher::new(config.fetch.clone())?,
        Engine::new(config.decode, 1),
        &config,
    );
    let url = |i: usize| format!("{}/img/{i}/{}", args.base, names[i]);
    let rows: Vec<RowRecord> = (0..args.rows)
        .map(|r| RowRecord {
            index: u32::try_from(r).unwrap_or(u32::MAX),
            serial: format!("{}.", r + 1),
            product_name: format!("Product {r}"),
            input_urls: vec![url(2 * r), url(2 * r + 1)],
            state: RowState::Pending,
            images: Vec::new(),
            progress: Vec::new(),
        })
        .collect();
    let now = chrono::Utc::now();
    let meta = RequestMeta {
        status: RequestStatus::Processing,
        counters: Counters::new(args.rows as u64, images as u64),
        ..RequestMeta::new("bench", "default", now)
    };
    repo.create_request(&meta, &rows).await?;
    let records: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            let job = RowJob::for_row(&meta, row);
            serde_json::json!({
                "messageId": format!("m{}", row.index),
                "receiptHandle": "r",
                "body": serde_json::to_string(&job).unwrap_or_default(),
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "0"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:local:000000000000:pixpress-rows",
                "awsRegion": "local"
            })
        })
        .collect();
    let event: aws_lambda_events::event::sqs::SqsEvent =
        serde_json::from_value(serde_json::json!({ "Records": records }))?;
    // One download alone: the latency no overlap can hide.
    let fetcher = Fetcher::new(config.fetch.clone())?;
    let started = Instant::now();
    fetcher
        .get(&format!("{}/img/warm/{}", args.base, names[0]))
        .await
        .context("downloading one image")?;
    let one_download = started.elapsed();

    let started = Instant::now();
    let invocation_cpu_start = cpu_time();
    let response = pixpress_row_worker::handle(
        &app,
        lambda_runtime::LambdaEvent::new(event, lambda_runtime::Context::default()),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let wall = started.elapsed();
    let invocation_cpu = cpu_time() - invocation_cpu_start;
    anyhow::ensure!(
        response.batch_item_failures.is_empty(),
        "the invocation returned failures"
    );
    let stored = repo.get_request("bench").await?.context("request")?;
    anyhow::ensure!(
        stored.counters.images_ok == images as u64,
        "not every image stored"
    );

    // The same images through the engine on this thread: the compression CPU time.
    let inputs: Vec<Vec<u8>> = names
        .iter()
        .map(|n| std::fs::read(args.dir.join(n)))
        .collect::<Result<_, _>>()?;
    let cpu_start = cpu_time();
    for input in &inputs {
        compress(input, &OutputSpec::default(), &DecodeLimits::default())?;
    }
    let compression = cpu_time() - cpu_start;
    let target = compression.mul_f64(1.2) + one_download;
    let ratio = wall.as_secs_f64() / target.as_secs_f64();
    std::fs::remove_dir_all(&out).ok();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "images": images,
                "wall_s": wall.as_secs_f64(),
                "compression_cpu_s": compression.as_secs_f64(),
                "one_download_s": one_download.as_secs_f64(),
                "invocation_cpu_s": invocation_cpu.as_secs_f64(),
                "ratio": ratio,
            })
        );
    } else {
        println!(
            "{images} images in one invocation: wall {:.3} s (process CPU {:.3} s); compression CPU {:.3} s, one download {:.3} s; wall ÷ (1.2 × CPU + download = {:.3} s) = {ratio:.2}",
            wall.as_secs_f64(),
            invocation_cpu.as_secs_f64(),
            compression.as_secs_f64(),
            one_download.as_secs_f64(),
            target.as_secs_f64()
        );
    }
    Ok(())
}
