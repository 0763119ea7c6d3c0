//! Chaos, proved: twenty requests of fifty images each through the embedded pipeline with every
//! AWS failure mode injected at once — transactions cancelled for conflicts, throttled calls,
//! messages delivered twice (also concurrently), worker invocations crashing mid-row — end with
//! exactly the output CSVs a fault-free run gives, one terminal transition and one webhook per
//! request, every image stored once or failed with its code, and exact counters.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pixpress_app::ports::RequestReader as _;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use axum::http::header;
use axum::routing::get;
use pixpress_app::config::Config;
use pixpress_app::ingest::load_all_rows;
use pixpress_app::ports::ObjectStore;
use pixpress_cli::demo::{WebhookReceiver, serve_on_loopback};
use pixpress_cli::faults::FaultSpec;
use pixpress_cli::pipeline::{LocalPipeline, PipelineOptions, Upload};
use pixpress_domain::model::{DeliveryState, ImageStatus, RequestStatus};
use pixpress_domain::webhook::WebhookSecret;

const REQUESTS: usize = 20;
const ROWS: usize = 25;
/// Two images per row: 20 × 25 × 2 = 1,000 images.
const IMAGES_PER_ROW: usize = 2;

const PHOTO: &[u8] = include_bytes!("../assets/demo/j23_rocket_0.27mp.jpg");

/// Request `r`'s CSV: every image URL distinct; one image per request is missing (404).
fn csv(base: &str, r: usize) -> String {
    let mut text = String::from("S. No.,Product Name,Input Image Urls\n");
    for row in 0..ROWS {
        let urls: Vec<String> = (0..IMAGES_PER_ROW)
            .map(|i| {
                if row == 7 && i == 1 {
                    format!("{base}/missing/{r}-{row}-{i}.jpg")
                } else {
                    format!("{base}/img/{r}-{row}-{i}.jpg")
                }
            })
            .collect();
        text.push_str(&format!(
            "{}.,Product {r}-{row},\"{}\"\n",
            row + 1,
            urls.join(", ")
        ));
    }
    text
}

struct Finished {
    output_csvs: BTreeMap<String, Vec<u8>>,
    terminal_records: BTreeMap<String, u32>,
}

/// Runs all requests through one pipeline in `dir`, with `faults`.
async fn run_all(
    config: &Config,
    dir: &Path,
    base: &str,
    webhook: &str,
    faults: Option<FaultSpec>,
) -> (LocalPipeline, Finished) {
    let mut options = PipelineOptions::new(dir);
    options.public_base_url = Some("https://images.example".into());
    options.visibility_timeout = Duration::from_millis(800);
    options.worker_invocations = 4;
    options.faults = faults;
    let pipeline = LocalPipeline::new(config, options).unwrap();
    let pump = pipeline.start_pump();
    let mut ids = Vec::new();
    for r in 0..REQUESTS {
        let key = format!("chaos-{r}");
        let id = loop {
            match pipeline
                .upload_csv_with_key(
                    csv(base, r).into_bytes(),
                    Some(webhook),
                    None,
                    None,
                    Some(&key),
                )
                .await
                .unwrap()
            {
                Upload::Accepted { request_id, .. } => break request_id,
                // Storage throttled past the API's own retries: a client retries with its key.
                Upload::Rejected { status: 503, .. } => continue,
                Upload::Rejected { status, problem } => panic!("{status}: {problem}"),
            }
        };
        ids.push(id);
    }
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut output_csvs = BTreeMap::new();
    for id in &ids {
        loop {
            assert!(Instant::now() < deadline, "request {id} did not finish");
            assert_eq!(pump.failure(), None);
            if let Ok(Some(meta)) = pipeline.repo().get_request(id).await
                && meta.status.is_terminal()
                && meta.output_csv_key.is_some()
                && meta
                    .webhook
                    .as_ref()
                    .is_some_and(|w| w.state != DeliveryState::Pending)
            {
                let object = pipeline
                    .store()
                    .get(meta.output_csv_key.as_deref().unwrap(), u64::MAX)
                    .await
                    .unwrap()
                    .unwrap();
                output_csvs.insert(id.clone(), object.bytes.to_vec());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Let copies still in flight drain, as a deployment would, before counting.
    let drained = Instant::now() + Duration::from_secs(30);
    while pipeline.backend.queue.len().unwrap() > 0 && Instant::now() < drained {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pump.stop().await;
    let terminal_records = pipeline.terminal_records();
    (
        pipeline,
        Finished {
            output_csvs,
            terminal_records,
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_mode_at_once_changes_nothing_a_user_sees() {
    let router = axum::Router::new().route(
        "/img/{name}",
        get(|| async { ([(header::CONTENT_TYPE, "image/jpeg")], PHOTO) }),
    );
    let server = serve_on_loopback(router).await.unwrap();
    let base = format!("http://{server}");
    let secret = WebhookSecret::from_bytes(b"chaos-secret");
    let mut config = Config::default();
    config.fetch.policy = pixpress_fetch::NetworkPolicy::local();
    config.webhook_secret = Some(secret.clone());

    let calm_receiver = WebhookReceiver::start(secret.clone()).await.unwrap();
    let calm_dir = std::env::temp_dir().join(format!("pixpress-calm-{}", uuid::Uuid::new_v4()));
    let (_, calm) = run_all(&config, &calm_dir, &base, &calm_receiver.url(), None).await;

    let receiver = WebhookReceiver::start(secret).await.unwrap();
    let dir = std::env::temp_dir().join(format!("pixpress-chaos-{}", uuid::Uuid::new_v4()));
    let spec: FaultSpec = "conflict=0.2,throttle=0.1,duplicate=0.2,crash=0.1,seed=7"
        .parse()
        .unwrap();
    let (pipeline, chaos) = run_all(&config, &dir, &base, &receiver.url(), Some(spec)).await;
    let fired = pipeline.faults().unwrap().counts();
    eprintln!("faults fired: {fired}");

    // Exactly the same output CSVs, byte for byte (same cells, order, error codes).
    assert_eq!(chaos.output_csvs.len(), REQUESTS);
    assert_eq!(chaos.output_csvs, calm.output_csvs);

    let mut lost = 0;
    let mut duplicated = 0;
    for id in chaos.output_csvs.keys() {
        // Every request terminal exactly once: one terminal stream record each.
        assert_eq!(chaos.terminal_records.get(id), Some(&1), "{id}");
        let meta = pipeline.repo().get_request(id).await.unwrap().unwrap();
        assert_eq!(meta.status, RequestStatus::CompletedWithErrors);
        let c = meta.counters;
        assert_eq!(c.rows_done, c.rows_total, "{id}");
        assert_eq!(c.images_ok + c.images_failed, c.images_total, "{id}");
        assert_eq!((c.images_ok, c.images_failed), (49, 1), "{id}");
        // Every image stored once or failed with a code.
        for row in load_all_rows(pipeline.repo(), id).await.unwrap() {
            for image in &row.images {
                match image.status {
                    ImageStatus::Ok => {
                        let key = image.output_key.as_deref().unwrap();
                        if pipeline.store().get(key, u64::MAX).await.unwrap().is_none() {
                            lost += 1;
                        }
                    }
                    ImageStatus::Failed => {
                        assert_eq!(image.error_code.as_deref(), Some("http_404"));
                    }
                }
            }
        }
        let stored = std::fs::read_dir(
            dir.join("images")
                .join(pixpress_domain::model::DEFAULT_TENANT)
                .join(id),
        )
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| !e.file_name().to_string_lossy().starts_with('.'))
        })
        .count() as u64;
        duplicated += stored.saturating_sub(c.images_ok);
        assert!(stored >= c.images_ok);
    }
    assert_eq!((lost, duplicated), (0, 0), "lost and duplicated objects");

    // One webhook delivery per request, each signed.
    let deliveries = receiver.received();
    assert_eq!(deliveries.len(), REQUESTS, "one webhook per request");
    let ids: std::collections::BTreeSet<_> = deliveries.iter().map(|d| d.id.clone()).collect();
    assert_eq!(ids.len(), REQUESTS);
    assert!(deliveries.iter().all(|d| d.verified.is_ok()));

    // The faults really fired.
    assert!(fired.conflicts > 0 && fired.throttles > 0, "{fired}");
    assert!(fired.duplicates > 0 && fired.crashes > 0, "{fired}");
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&calm_dir).ok();
}
