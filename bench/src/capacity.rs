//! `pixpress-capacity-bench`: the DynamoDB read and write units a request consumes, per row.
//!
//! ```sh
//! pixpress-capacity-bench [--rows 1000] [--images 2]
//! ```
//!
//! Runs one request of `--rows` rows of `--images` photos each (served on loopback) through
//! the local pipeline — `POST /uploads`, `s3-ingest` on the stored upload, the row worker, the
//! completion notifier — over the embedded repository, which counts what every call would
//! consume on DynamoDB (1 KB per write unit, 4 KB per read unit, transactions double; see
//! `pixpress_embedded::capacity`). Prints the units per kind of call and per row, for the API's
//! call, the ingest (rows and counter shards) and the rest (workers and notifier). These are the measured inputs of the scale arithmetic: one
//! partition key serves 1,000 write units and 3,000 read units a second.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use pixpress_app::config::Config;
use pixpress_app::ports::RequestReader as _;
use pixpress_embedded::Consumed;
use pixpress_fetch::NetworkPolicy;
use pixpress_local::pipeline::{LocalPipeline, PipelineOptions, Upload, UploadQuery};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A product photo of the demo set (1000 × 1000 px).
const PHOTO: &[u8] = include_bytes!("../../cli/assets/demo/p02_ladybird_1000sq.jpg");

/// Measure DynamoDB capacity per row.
#[derive(Debug, Parser)]
struct Args {
    /// Rows in the request.
    #[arg(long, default_value_t = 1_000)]
    rows: u32,
    /// Images per row.
    #[arg(long, default_value_t = 2)]
    images: u32,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

/// A minimal HTTP/1.1 origin answering every request with [`PHOTO`].
async fn origin() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 2048];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: image/jpeg\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    PHOTO.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(PHOTO).await;
            });
        }
    });
    Ok(addr)
}

fn difference(
    after: &BTreeMap<&'static str, Consumed>,
    before: &BTreeMap<&'static str, Consumed>,
) -> BTreeMap<&'static str, Consumed> {
    after
        .iter()
        .map(|(call, a)| {
            let b = before.get(call).copied().unwrap_or_default();
            (
                *call,
                Consumed {
                    calls: a.calls - b.calls,
                    read_units: a.read_units - b.read_units,
                    write_units: a.write_units - b.write_units,
                    throttled: a.throttled - b.throttled,
                },
            )
        })
        .filter(|(_, c)| c.calls > 0)
        .collect()
}

fn print_phase(name: &str, consumed: &BTreeMap<&'static str, Consumed>, rows: u32) {
    let rows = f64::from(rows);
    println!("{name}:");
    let (mut read, mut write) = (0.0, 0.0);
    for (call, c) in consumed {
        println!(
            "  {call:<20} {:>8} calls  {:>10.1} RCU  {:>10.1} WCU   per row: {:.2} calls, {:.2} RCU, {:.2} WCU",
            c.calls,
            c.read_units,
            c.write_units,
            c.calls as f64 / rows,
            c.read_units / rows,
            c.write_units / rows
        );
        read += c.read_units;
        write += c.write_units;
    }
    println!(
        "  total per row: {:.2} RCU, {:.2} WCU",
        read / rows,
        write / rows
    );
}

async fn run(args: Args) -> anyhow::Result<()> {
    let origin = origin().await?;
    let mut config = Config::default();
    config.fetch.policy = NetworkPolicy::local();
    config.csv.max_rows = config.csv.max_rows.max(args.rows as usize);
    let dir = std::env::temp_dir().join(format!("pixpress-capacity-{}", std::process::id()));
    let mut options = PipelineOptions::new(&dir);
    options.meter_capacity = true;
    // The deployed schedule (every 15 minutes), not the local runs' every second: a sweep of
    // a running request reads its rows, which no deployment does once a second.
    options.sweep_every = std::time::Duration::from_secs(900);
    let pipeline = LocalPipeline::new(&config, options)?;

    let mut csv = String::from("S. No.,Product Name,Input Image Urls\n");
    for row in 1..=args.rows {
        let urls: Vec<String> = (0..args.images)
            .map(|i| format!("http://{origin}/photos/p{row}-{i}.jpg"))
            .collect();
        csv.push_str(&format!("{row},Product {row},\"{}\"\n", urls.join(", ")));
    }
    let started = Instant::now();
    let Upload::Accepted { request_id, .. } = pipeline
        .upload_csv(csv.into_bytes(), &UploadQuery::default())
        .await?
    else {
        anyhow::bail!("the CSV was rejected");
    };
    let accepted = pipeline.backend.repo.consumed_capacity()?;
    // What the stored upload's event does: s3-ingest writes the rows and queues them.
    pipeline.deliver_upload_events().await?;
    let ingested = pipeline.backend.repo.consumed_capacity()?;
    // Polled once a second, so the status reads (a GetItem and a Query per partition key each)
    // stay a rounding error in the processing figures below.
    let pump = pipeline.start_pump();
    let mut polls = 0u32;
    let meta = loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        polls += 1;
        if let Some(failure) = pump.failure() {
            anyhow::bail!("the pipeline stopped: {failure}");
        }
        let meta = pipeline
            .backend
            .repo
            .get_request(&request_id)
            .await?
            .context("the request vanished")?;
        let handled = meta.status.is_terminal()
            && meta.output_csv_key.is_some()
            && meta
                .webhook
                .as_ref()
                .is_none_or(|w| w.state != pixpress_domain::model::DeliveryState::Pending);
        if handled {
            break meta;
        }
    };
    pump.stop().await;
    let done = pipeline.backend.repo.consumed_capacity()?;
    let elapsed = started.elapsed();
    println!(
        "{} rows × {} images: {:?} in {:.1} s ({} ok, {} failed)",
        args.rows,
        args.images,
        meta.status,
        elapsed.as_secs_f64(),
        meta.counters.images_ok,
        meta.counters.images_failed
    );
    print_phase("POST /uploads (the request item)", &accepted, args.rows);
    print_phase(
        "ingest (s3-ingest: rows and counter shards)",
        &difference(&ingested, &accepted),
        args.rows,
    );
    println!(
        "(processing includes the bench's {polls} status polls, each a GetItem and a Query per partition key)"
    );
    print_phase(
        "processing (row workers, completion, notifier)",
        &difference(&done, &ingested),
        args.rows,
    );
    print_phase("whole request", &done, args.rows);
    std::fs::remove_dir_all(&dir)
        .with_context(|| format!("removing {}", dir.display()))
        .ok();
    Ok(())
}
