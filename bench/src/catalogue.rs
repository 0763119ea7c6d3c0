//! `pixpress-catalogue-bench`: catalogue-scale ingest, timed, with peak memory.
//!
//! ```sh
//! pixpress-catalogue-bench --rows 1000000 [--dir DIR]
//! ```
//!
//! Writes a CSV of `--rows` rows (two image URLs each, distinct, on a loopback origin that is
//! never contacted), then in one process:
//! 1. validates it in one streaming pass ([`CsvScanner`], 256 KiB pieces, as `s3-ingest`
//!    reads S3): time, throughput, and the peak RSS of the process so far;
//! 2. ingests it as `pixpress run` does for a file over the API's limit: copied into the
//!    embedded bucket in 8 MiB parts, then `s3-ingest` (validation again, the request item,
//!    every chunk expanded into row items and row messages): time and peak RSS, which include
//!    the embedded table's and queue's page caches (their rows and messages are in files under
//!    the data directory, [`pixpress_embedded::TableStorage`]).
//!
//! With `--endpoint` (a moto or ministack server), step 2 runs through the AWS adapters
//! instead: S3 multipart, DynamoDB `PutItem`s, SQS `SendMessageBatch`.
//!
//! Peak RSS is the kernel's high-water mark (`VmHWM` in `/proc/self/status`).

use pixpress_app::ports::RequestReader as _;
use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use aws_lambda_events::event::s3::S3EventRecord;
use clap::Parser;
use pixpress_app::config::Config;
use pixpress_app::ports::MultipartWriter;
use pixpress_domain::input_csv::CsvScanner;
use pixpress_domain::model::DEFAULT_TENANT;
use pixpress_domain::storage_keys::presigned_upload_key;
use pixpress_fetch::NetworkPolicy;
use pixpress_local::emulator::EmulatorNames;
use pixpress_local::pipeline::{Emulated, LocalPipeline, Pipeline, PipelineOptions, PumpBackend};
use pixpress_s3_ingest::RecordOutcome;

/// Time catalogue-scale validation and ingest.
#[derive(Debug, Parser)]
struct Args {
    /// Data rows in the generated CSV.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Working directory (CSV and embedded data); a temporary one by default.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Ingest through the AWS adapters against the emulator at this URL.
    #[arg(long)]
    endpoint: Option<String>,
}

/// Peak resident set size of this process so far, in bytes.
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("pixpress-catalogue-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir)?;
    let csv_path = dir.join("catalogue.csv");
    {
        let mut out = BufWriter::new(std::fs::File::create(&csv_path)?);
        writeln!(out, "S. No.,Product Name,Input Image Urls")?;
        for i in 1..=args.rows {
            writeln!(
                out,
                "{i},\"Product {i}, size M\",\"http://127.0.0.1:9/img/{i}/a.jpg, http://127.0.0.1:9/img/{i}/b.jpg\""
            )?;
        }
        out.flush()?;
    }
    let bytes = std::fs::metadata(&csv_path)?.len();
    println!(
        "catalogue: {} rows, {:.1} MB ({})",
        args.rows,
        mb(bytes),
        csv_path.display()
    );
    let mut config = Config::default();
    config.fetch.policy = NetworkPolicy::local();
    let rss_start = peak_rss();

    // 1. Validation alone: one streaming pass.
    let started = Instant::now();
    let mut scanner = CsvScanner::new(&config.upload, config.fetch.policy);
    let mut file = std::fs::File::open(&csv_path)?;
    let mut piece = vec![0u8; 256 * 1024];
    let mut rows = 0u64;
    loop {
        let n = file.read(&mut piece)?;
        if n == 0 {
            break;
        }
        scanner.feed(&piece[..n], &mut |_, _| rows += 1);
    }
    let summary = scanner
        .finish(&mut |_, _| rows += 1)
        .map_err(|r| anyhow::anyhow!("rejected: {r}"))?;
    let validate = started.elapsed();
    let rss_validate = peak_rss();
    anyhow::ensure!(summary.rows == args.rows && rows == args.rows);

    println!("| step | time (s) | rows/s | MB/s | peak RSS (MB) |\n|---|---|---|---|---|");
    println!(
        "| validate (one streaming pass) | {:.2} | {:.0} | {:.1} | {:.0} (at start {:.0}) |",
        validate.as_secs_f64(),
        args.rows as f64 / validate.as_secs_f64(),
        mb(bytes) / validate.as_secs_f64(),
        mb(rss_validate),
        mb(rss_start)
    );
    // 2. Ingest through s3-ingest, as `pixpress run` does for a file over the API's limit.
    let options = PipelineOptions::new(dir.join("data"));
    match &args.endpoint {
        Some(endpoint) => {
            let names = EmulatorNames::with_prefix("pixpress-catalogue");
            let pipeline =
                Pipeline::<Emulated>::emulated(&config, options, endpoint, &names).await?;
            ingest(&pipeline, &csv_path, args.rows, bytes).await?;
        }
        None => {
            let pipeline = LocalPipeline::new(&config, options)?;
            ingest(&pipeline, &csv_path, args.rows, bytes).await?;
        }
    }
    if args.dir.is_none() {
        std::fs::remove_dir_all(&dir).ok();
    }
    Ok(())
}

/// Step 2 over `pipeline`'s backends.
async fn ingest<B: PumpBackend>(
    pipeline: &Pipeline<B>,
    csv_path: &std::path::Path,
    rows: u64,
    bytes: u64,
) -> anyhow::Result<()> {
    let request_id = "00000000-0000-4000-8000-000000000001";
    let key = presigned_upload_key(DEFAULT_TENANT, request_id);
    let started = Instant::now();
    let mut writer =
        MultipartWriter::start(pipeline.store(), &key, "text/csv", 8 * 1024 * 1024).await?;
    let mut file = std::fs::File::open(csv_path)?;
    let mut part = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut part)?;
        if n == 0 {
            break;
        }
        writer.write(&part[..n]).await?;
    }
    writer.finish().await?;
    let stored = started.elapsed();
    let mut record = S3EventRecord::default();
    record.event_name = Some("ObjectCreated:CompleteMultipartUpload".to_owned());
    record.s3.object.key = Some(key.clone());
    let started = Instant::now();
    let outcome = pixpress_s3_ingest::ingest_record(&pipeline.s3_ingest, &record)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let ingest = started.elapsed();
    let RecordOutcome::Ingested(ingested) = outcome else {
        anyhow::bail!("not ingested: {outcome:?}");
    };
    let meta = pipeline
        .repo()
        .get_request(&ingested.meta.request_id)
        .await?
        .context("request missing")?;
    let queued = pipeline.backend.queue_depth().await?;
    println!(
        "| store in 8 MiB parts | {:.2} | – | {:.1} | – |",
        stored.as_secs_f64(),
        mb(bytes) / stored.as_secs_f64()
    );
    println!(
        "| s3-ingest: validate + {} row items + {} row messages | {:.2} | {:.0} | {:.1} | {:.0} |",
        meta.counters.rows_total,
        queued,
        ingest.as_secs_f64(),
        rows as f64 / ingest.as_secs_f64(),
        mb(bytes) / ingest.as_secs_f64(),
        mb(peak_rss())
    );
    println!("request {}: {}", meta.request_id, meta.status.as_str());
    Ok(())
}
