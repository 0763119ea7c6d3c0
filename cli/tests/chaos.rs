//! Chaos, proved: twenty requests of fifty images each through the API, one catalogue through
//! the S3 path, one request cancelled and one retried, through the embedded pipeline with every
//! AWS failure mode injected at once — transactions cancelled for conflicts, throttled calls,
//! messages delivered twice (also concurrently), worker invocations crashing mid-row,
//! invocations of every function killed before they return, stream batches lost after their
//! retries — end with exactly the output CSVs, statuses and counters a fault-free run gives,
//! one terminal transition and a webhook per request (at least once, under one id), and every
//! image stored once or failed with its code.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pixpress_app::ports::RequestReader as _;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use aws_lambda_events::event::s3::S3EventRecord;
use axum::http::header;
use axum::routing::get;
use lambda_http::Body;
use lambda_http::http::Method;
use pixpress_app::config::Config;
use pixpress_app::ingest::load_all_rows;
use pixpress_app::ports::ObjectStore;
use pixpress_cli::demo::{WebhookReceiver, serve_on_loopback};
use pixpress_cli::faults::FaultSpec;
use pixpress_cli::pipeline::{LocalPipeline, PipelineOptions, Pump, Upload, UploadQuery};
use pixpress_domain::model::{
    Counters, DEFAULT_TENANT, DeliveryState, ImageStatus, OutputSpec, RequestStatus, UploadOptions,
};
use pixpress_domain::storage_keys::{pending_upload_key, presigned_upload_key};
use pixpress_domain::webhook::WebhookSecret;
use pixpress_s3_ingest::RecordOutcome;

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

/// The id of the catalogue uploaded through the S3 path (`uploads/<tenant>/<uuid>.csv`).
const CATALOGUE_ID: &str = "0b6f3c1e-5d2a-4c8e-9f1b-7a3d2e4c5b6a";

struct Finished {
    output_csvs: BTreeMap<String, Vec<u8>>,
    outcomes: BTreeMap<String, (RequestStatus, Counters)>,
    terminal_records: BTreeMap<String, u32>,
    /// The requests uploaded through the API, in order (their images are checked one by one).
    uploaded: Vec<String>,
}

/// `POST /uploads` of request `r`'s CSV with its idempotency key, retried on a server error as
/// a client does (storage throttled past the API's own retries, an invocation killed).
async fn upload(pipeline: &LocalPipeline, base: &str, webhook: &str, r: usize) -> String {
    let key = format!("chaos-{r}");
    for _ in 0..20 {
        match pipeline
            .upload_csv_with_key(
                csv(base, r).into_bytes(),
                &UploadQuery {
                    webhook_url: Some(webhook.to_owned()),
                    ..UploadQuery::default()
                },
                Some(&key),
            )
            .await
            .unwrap()
        {
            Upload::Accepted { request_id, .. } => return request_id,
            Upload::Rejected { status, .. } if status >= 500 => {}
            Upload::Rejected { status, problem } => panic!("{status}: {problem}"),
        }
    }
    panic!("upload {r} kept failing");
}

/// `POST path` through the API, retried on a server error; the answer's status and body.
async fn post(pipeline: &LocalPipeline, path: &str) -> (u16, serde_json::Value) {
    for _ in 0..20 {
        let request = lambda_http::http::Request::builder()
            .method(Method::POST)
            .uri(path)
            .body(Body::Empty)
            .unwrap();
        let response = pipeline.call_api(request).await.unwrap();
        let status = response.status().as_u16();
        if status < 500 {
            let body = match response.body() {
                Body::Text(text) => serde_json::from_str(text).unwrap_or_default(),
                Body::Binary(bytes) => serde_json::from_slice(bytes).unwrap_or_default(),
                _ => serde_json::Value::Null,
            };
            return (status, body);
        }
    }
    panic!("POST {path} kept failing");
}

/// The catalogue (request `r`'s CSV) through the S3 path: its options and the CSV into the
/// bucket, then the upload event to `s3-ingest`.
async fn upload_catalogue(pipeline: &LocalPipeline, base: &str, webhook: &str, r: usize) -> String {
    let store = pipeline.store();
    let options = UploadOptions {
        webhook_url: Some(webhook.to_owned()),
        output_spec: OutputSpec::default(),
    };
    let pending = pending_upload_key(DEFAULT_TENANT, CATALOGUE_ID);
    let key = presigned_upload_key(DEFAULT_TENANT, CATALOGUE_ID);
    for _ in 0..20 {
        let put = async {
            store
                .put(
                    &pending,
                    serde_json::to_vec(&options).unwrap().into(),
                    "application/json",
                )
                .await?;
            store
                .put(&key, csv(base, r).into_bytes().into(), "text/csv")
                .await
        };
        if put.await.is_ok() {
            break;
        }
    }
    let mut record = S3EventRecord::default();
    record.event_name = Some("ObjectCreated:Put".to_owned());
    record.s3.bucket.name = Some("local".to_owned());
    record.s3.object.key = Some(key);
    for _ in 0..20 {
        match pipeline.ingest_upload(&record).await {
            Ok(RecordOutcome::Ingested(ingested)) => return ingested.meta.request_id.clone(),
            Ok(other) => panic!("the catalogue was not ingested: {other:?}"),
            // Every retry Lambda makes failed; the object is still there: upload again.
            Err(_) => {}
        }
    }
    panic!("the catalogue kept failing");
}

/// Waits until `id` is terminal with its output CSV written and its webhook handed on; returns
/// the output CSV.
async fn wait_done(pipeline: &LocalPipeline, pump: &Pump, id: &str, deadline: Instant) -> Vec<u8> {
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
            return object.bytes.to_vec();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs every request through one pipeline in `dir`, with `faults`.
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
    // Cancelled before any worker runs: every one of its images ends `cancelled`, whatever
    // the timing.
    let cancelled = upload(&pipeline, base, webhook, REQUESTS).await;
    let (status, _) = post(&pipeline, &format!("/requests/{cancelled}/cancel")).await;
    assert_eq!(status, 202);
    let pump = pipeline.start_pump();
    let mut ids = Vec::new();
    for r in 0..REQUESTS {
        ids.push(upload(&pipeline, base, webhook, r).await);
    }
    let catalogue = upload_catalogue(&pipeline, base, webhook, REQUESTS + 1).await;
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut output_csvs = BTreeMap::new();
    for id in ids.iter().chain([&catalogue, &cancelled]) {
        let csv = wait_done(&pipeline, &pump, id, deadline).await;
        output_csvs.insert(id.clone(), csv);
    }
    // A retry of a finished request: its missing image is fetched again (and fails again).
    let (status, body) = post(&pipeline, &format!("/requests/{}/retry", ids[0])).await;
    assert_eq!(status, 202, "{body}");
    let retry = body["request_id"].as_str().unwrap().to_owned();
    let csv = wait_done(&pipeline, &pump, &retry, deadline).await;
    output_csvs.insert(retry, csv);
    // Let copies still in flight drain, as a deployment would, before counting.
    let drained = Instant::now() + Duration::from_secs(30);
    while pipeline.backend.queue.len().unwrap() > 0 && Instant::now() < drained {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pump.stop().await;
    let mut outcomes = BTreeMap::new();
    for id in output_csvs.keys() {
        let meta = pipeline.repo().get_request(id).await.unwrap().unwrap();
        outcomes.insert(id.clone(), (meta.status, meta.counters));
    }
    let terminal_records = pipeline.terminal_records();
    (
        pipeline,
        Finished {
            output_csvs,
            outcomes,
            terminal_records,
            uploaded: ids.into_iter().chain([catalogue]).collect(),
        },
    )
}

/// The seeds the chaos run is repeated with: `PIXPRESS_CHAOS_SEEDS` (comma separated), or three.
fn seeds() -> Vec<u64> {
    std::env::var("PIXPRESS_CHAOS_SEEDS")
        .ok()
        .map(|text| {
            text.split(',')
                .filter_map(|s| s.trim().parse().ok())
                .collect()
        })
        .filter(|seeds: &Vec<u64>| !seeds.is_empty())
        .unwrap_or_else(|| vec![7, 11, 23])
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
    // 20 uploads, the catalogue, the cancelled request and the retry.
    let requests = REQUESTS + 3;
    assert_eq!(calm.output_csvs.len(), requests);
    assert_eq!(calm_receiver.received().len(), requests);

    let mut fired_in_all: BTreeMap<&str, u64> = BTreeMap::new();
    for seed in seeds() {
        let receiver = WebhookReceiver::start(secret.clone()).await.unwrap();
        let dir = std::env::temp_dir().join(format!("pixpress-chaos-{}", uuid::Uuid::new_v4()));
        let spec: FaultSpec = format!(
            "conflict=0.2,throttle=0.1,duplicate=0.2,crash=0.1,timeout=0.1,drop-event=0.25,seed={seed}"
        )
        .parse()
        .unwrap();
        let (pipeline, chaos) = run_all(&config, &dir, &base, &receiver.url(), Some(spec)).await;
        let fired = pipeline.faults().unwrap().counts();
        eprintln!("seed {seed}: faults fired: {fired}");

        // Exactly the same output CSVs, byte for byte (same cells, order, error codes), and
        // the same statuses and counters.
        assert_eq!(chaos.output_csvs, calm.output_csvs, "seed {seed}");
        assert_eq!(chaos.outcomes, calm.outcomes, "seed {seed}");
        for (id, (status, c)) in &chaos.outcomes {
            // Every request terminal exactly once: one terminal stream record each.
            assert_eq!(
                chaos.terminal_records.get(id),
                Some(&1),
                "seed {seed}: {id}"
            );
            assert_eq!(c.rows_done, c.rows_total, "seed {seed}: {id}");
            assert_eq!(c.images_ok + c.images_failed, c.images_total, "{id}");
            assert!(
                matches!(
                    status,
                    RequestStatus::CompletedWithErrors | RequestStatus::Cancelled
                ),
                "seed {seed}: {id} {status:?}"
            );
        }

        let mut lost = 0;
        let mut duplicated = 0;
        for id in &chaos.uploaded {
            let c = chaos.outcomes[id].1;
            assert_eq!((c.images_ok, c.images_failed), (49, 1), "seed {seed}: {id}");
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
            let stored = std::fs::read_dir(dir.join("images").join(DEFAULT_TENANT).join(id))
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| !e.file_name().to_string_lossy().starts_with('.'))
                })
                .count() as u64;
            duplicated += stored.saturating_sub(c.images_ok);
            assert!(stored >= c.images_ok);
        }
        assert_eq!(
            (lost, duplicated),
            (0, 0),
            "seed {seed}: lost and duplicated objects"
        );

        // A webhook for every request, each signed. Delivery is at least once: an invocation
        // killed after its POST and before recording it posts again on the retry, with the
        // same `webhook-id` (Standard Webhooks: receivers de-duplicate on it).
        let deliveries = receiver.received();
        let ids: std::collections::BTreeSet<_> = deliveries.iter().map(|d| d.id.clone()).collect();
        assert_eq!(
            ids.len(),
            requests,
            "seed {seed}: one webhook id per request"
        );
        let repeated = deliveries.len() - ids.len();
        eprintln!("seed {seed}: {repeated} webhook(s) delivered again under the same id");
        assert!(
            repeated as u64 <= fired.timeouts,
            "seed {seed}: {repeated} repeats, {} timed-out invocations",
            fired.timeouts
        );
        assert!(deliveries.iter().all(|d| d.verified.is_ok()));

        for (name, count) in pipeline.faults().unwrap().counts_by_name() {
            *fired_in_all.entry(name).or_insert(0) += count;
        }
        std::fs::remove_dir_all(&dir).ok();
    }
    // Every fault really fired (a run has only a few stream batches to lose, so this is
    // counted over all seeds).
    assert!(
        fired_in_all.values().all(|&count| count > 0),
        "{fired_in_all:?}"
    );
    std::fs::remove_dir_all(&calm_dir).ok();
}
