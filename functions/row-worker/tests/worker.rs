//! Row-worker tests: the handler fed from `events/row-worker/`, and the row use case over
//! embedded adapters with a loopback image server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pixpress_app::ports::RequestControl as _;
use pixpress_app::ports::RequestIntake as _;
use pixpress_app::ports::RequestReader as _;
use pixpress_app::ports::RowLedger as _;
use std::net::SocketAddr;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::Utc;
use lambda_runtime::{Context, LambdaEvent};
use pixpress_app::config::Config;
use pixpress_app::ports::{RowPage, RowQueue};
use pixpress_domain::model::{
    Counters, ImageStatus, OutputSpec, ROW_JOB_VERSION, RequestMeta, RequestStatus, RowJob,
    RowRecord, RowState,
};
use pixpress_embedded::{
    DirObjectStore, EmbeddedQueue, EmbeddedRequestRepository, InMemoryOriginSlots,
};
use pixpress_row_worker::{App, Deadline, ProcessError, RowProcessed, handle, process_row};
use pixpress_test_support::manifest_dir;

const PHOTO: &[u8] = include_bytes!("../../../cli/assets/demo/p02_ladybird_1000sq.jpg");

static PHOTO_HITS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static DRIP_HITS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

async fn image_server() -> SocketAddr {
    let router = Router::new()
        .route(
            "/counted.jpg",
            get(|| async {
                PHOTO_HITS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                ([(header::CONTENT_TYPE, "image/jpeg")], PHOTO)
            }),
        )
        .route(
            "/hang.jpg",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                ([(header::CONTENT_TYPE, "image/jpeg")], PHOTO)
            }),
        )
        .route(
            "/photo.jpg",
            get(|| async { ([(header::CONTENT_TYPE, "image/jpeg")], PHOTO) }),
        )
        .route(
            "/slow.jpg",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                ([(header::CONTENT_TYPE, "image/jpeg")], PHOTO)
            }),
        )
        .route(
            "/chunked.jpg",
            get(|| async {
                // No Content-Length: the worker must reserve the full byte cap for it.
                let chunks = PHOTO
                    .chunks(16 * 1024)
                    .map(|c| Ok::<_, std::convert::Infallible>(axum::body::Bytes::from_static(c)));
                (
                    [(header::CONTENT_TYPE, "image/jpeg")],
                    axum::body::Body::from_stream(futures::stream::iter(chunks)),
                )
            }),
        )
        .route(
            "/slow-body.jpg",
            get(|| async {
                // The head at once without Content-Length (the worker reserves the whole byte
                // cap), the body 3 s later.
                let body = futures::stream::once(async {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    Ok::<_, std::convert::Infallible>(axum::body::Bytes::from_static(PHOTO))
                });
                (
                    [(header::CONTENT_TYPE, "image/jpeg")],
                    axum::body::Body::from_stream(body),
                )
            }),
        )
        .route(
            "/drip.jpg",
            get(|| async {
                DRIP_HITS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // The head at once, then one byte every 100 ms: a stuck origin.
                let bytes = futures::stream::unfold(0usize, |i| async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    (i < 100).then(|| {
                        let byte = axum::body::Bytes::copy_from_slice(&PHOTO[i..=i]);
                        (Ok::<_, std::convert::Infallible>(byte), i + 1)
                    })
                });
                (
                    [(header::CONTENT_TYPE, "image/jpeg")],
                    axum::body::Body::from_stream(bytes),
                )
            }),
        )
        .route(
            "/busy.jpg",
            get(|| async { StatusCode::SERVICE_UNAVAILABLE.into_response() }),
        )
        .route(
            "/page.html",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "image/jpeg")],
                    "<!doctype html><p>sold out</p>",
                )
            }),
        );
    pixpress_test_support::serve(router).await
}

fn config() -> Config {
    let mut config = Config::default();
    config.fetch.policy = pixpress_fetch::NetworkPolicy::local();
    config.fetch.timeout = Duration::from_secs(5);
    config.max_receive_count = 3;
    config
}

type TestApp = App<EmbeddedRequestRepository, DirObjectStore, InMemoryOriginSlots, EmbeddedQueue>;

fn app(config: &Config) -> TestApp {
    let dir = std::env::temp_dir().join(format!("pixpress-worker-{}", uuid::Uuid::new_v4()));
    let store = DirObjectStore::new(dir, None).unwrap();
    App::new(
        EmbeddedRequestRepository::new(),
        store,
        InMemoryOriginSlots::default(),
        EmbeddedQueue::new(3),
        config,
    )
    .unwrap()
}

/// Records a `PROCESSING` request whose rows hold `rows` (URLs per row) and returns its jobs.
async fn seed(
    repo: &EmbeddedRequestRepository,
    request_id: &str,
    rows: &[Vec<String>],
) -> Vec<RowJob> {
    let now = Utc::now();
    let meta = RequestMeta {
        status: RequestStatus::Processing,
        counters: Counters {
            rows_total: rows.len() as u64,
            images_total: rows.iter().map(|r| r.len() as u64).sum(),
            ..Counters::default()
        },
        ..RequestMeta::new(request_id.to_owned(), "default", now)
    };
    let records: Vec<RowRecord> = rows
        .iter()
        .enumerate()
        .map(|(i, urls)| RowRecord {
            index: i as u32,
            serial: format!("{}.", i + 1),
            product_name: format!("SKU{i}"),
            input_urls: urls.clone(),
            state: RowState::Pending,
            images: vec![],
            progress: Vec::new(),
        })
        .collect();
    repo.create_request(&meta, &records).await.unwrap();
    records
        .iter()
        .map(|r| RowJob {
            version: ROW_JOB_VERSION,
            request_id: request_id.to_owned(),
            tenant: "default".into(),
            row_index: r.index,
            serial: r.serial.clone(),
            product_name: r.product_name.clone(),
            input_urls: r.input_urls.clone(),
            output_spec: OutputSpec::default(),
            resume: false,
        })
        .collect()
}

async fn row(repo: &EmbeddedRequestRepository, request_id: &str, index: u32) -> RowRecord {
    let RowPage { rows, .. } = repo
        .list_rows(request_id, index.checked_sub(1), 1)
        .await
        .unwrap();
    rows.into_iter().next().unwrap()
}

#[tokio::test]
async fn sample_batch_records_blocked_addresses_and_returns_only_the_malformed_message() {
    let config = Config::default();
    let app = app(&config);
    let path = format!("{}/../../events/row-worker/row-batch.json", manifest_dir());
    let event: SqsEvent = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let job: RowJob = serde_json::from_str(event.records[0].body.as_deref().unwrap()).unwrap();
    seed(
        &app.repo,
        &job.request_id,
        std::slice::from_ref(&job.input_urls),
    )
    .await;
    let response = handle(&app, LambdaEvent::new(event, Context::default()))
        .await
        .unwrap();
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, vec!["2e1424d4-f796-459a-8184-9c92662be6da"]);
    let recorded = row(&app.repo, &job.request_id, 0).await;
    let codes: Vec<_> = recorded
        .images
        .iter()
        .map(|i| i.error_code.as_deref().unwrap())
        .collect();
    assert_eq!(codes, vec!["blocked_address", "blocked_address"]);
    let meta = app
        .repo
        .get_request(&job.request_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(meta.status, RequestStatus::CompletedWithErrors);
}

#[tokio::test]
async fn duplicate_row_delivery_is_counted_once() {
    let server = image_server().await;
    let app = app(&config());
    let jobs = seed(
        &app.repo,
        "dup",
        &[
            vec![format!("http://{server}/photo.jpg")],
            vec![format!("http://{server}/photo.jpg")],
        ],
    )
    .await;
    assert_eq!(
        process_row(&app, &jobs[0], 1, Deadline::NONE)
            .await
            .unwrap(),
        RowProcessed::Recorded(None)
    );
    assert_eq!(
        process_row(&app, &jobs[0], 2, Deadline::NONE)
            .await
            .unwrap(),
        RowProcessed::AlreadyDone
    );
    let meta = app.repo.get_request("dup").await.unwrap().unwrap();
    assert_eq!((meta.counters.rows_done, meta.counters.images_ok), (1, 1));
    assert_eq!(meta.status, RequestStatus::Processing);
    let done = row(&app.repo, "dup", 0).await;
    assert_eq!(done.images[0].status, ImageStatus::Ok);
    assert!(done.images[0].bytes_out.unwrap() < PHOTO.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_terminal_flip_under_concurrent_completion() {
    let server = image_server().await;
    let app = app(&config());
    let rows: Vec<Vec<String>> = (0..24)
        .map(|_| vec![format!("http://{server}/missing.jpg")])
        .collect();
    let jobs = seed(&app.repo, "race", &rows).await;
    app.repo.drain_changes().unwrap();
    let results = futures::future::join_all(
        jobs.iter()
            .map(|job| process_row(&app, job, 1, Deadline::NONE)),
    )
    .await;
    let flips = results
        .iter()
        .filter(|r| matches!(r, Ok(RowProcessed::Recorded(Some(_)))))
        .count();
    assert_eq!(flips, 1);
    let terminal_records = app
        .repo
        .drain_changes()
        .unwrap()
        .into_iter()
        .filter(|c| c.sk == "META")
        .filter(|c| {
            let new: pixpress_domain::item::ItemHead =
                serde_dynamo::from_item(c.new_image.clone()).unwrap();
            let old: pixpress_domain::item::ItemHead =
                serde_dynamo::from_item(c.old_image.clone().unwrap()).unwrap();
            new.status.unwrap().is_terminal() && !old.status.unwrap().is_terminal()
        })
        .count();
    assert_eq!(terminal_records, 1);
    let meta = app.repo.get_request("race").await.unwrap().unwrap();
    assert_eq!(meta.status, RequestStatus::CompletedWithErrors);
    assert_eq!(meta.counters.images_failed, 24);
}

#[tokio::test]
async fn transient_failure_is_retried_and_the_last_attempt_records_it() {
    let server = image_server().await;
    let app = app(&config());
    let jobs = seed(
        &app.repo,
        "busy",
        &[vec![
            format!("http://{server}/photo.jpg"),
            format!("http://{server}/busy.jpg"),
        ]],
    )
    .await;
    let err = process_row(&app, &jobs[0], 1, Deadline::NONE)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProcessError::Transient { position: 1, code, .. } if code == "http_503")
    );
    assert!(err.is_retryable());
    assert_eq!(row(&app.repo, "busy", 0).await.state, RowState::Pending);
    let last = process_row(&app, &jobs[0], 3, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(
        last,
        RowProcessed::Recorded(Some(RequestStatus::CompletedWithErrors))
    );
    let done = row(&app.repo, "busy", 0).await;
    assert_eq!(done.images[0].status, ImageStatus::Ok);
    assert_eq!(done.images[1].error_code.as_deref(), Some("http_503"));
    assert!(
        done.images[1]
            .error
            .as_deref()
            .unwrap()
            .contains("gave up after 2 attempts")
    );
}

#[tokio::test]
async fn permanent_failures_are_recorded_on_the_first_attempt() {
    let server = image_server().await;
    let app = app(&config());
    let jobs = seed(
        &app.repo,
        "perm",
        &[vec![
            format!("http://{server}/missing.jpg"),
            format!("http://{server}/page.html"),
        ]],
    )
    .await;
    let result = process_row(&app, &jobs[0], 1, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(
        result,
        RowProcessed::Recorded(Some(RequestStatus::CompletedWithErrors))
    );
    let done = row(&app.repo, "perm", 0).await;
    let codes: Vec<_> = done
        .images
        .iter()
        .map(|i| i.error_code.as_deref().unwrap())
        .collect();
    assert_eq!(codes, vec!["http_404", "not_an_image"]);
}

#[tokio::test]
async fn a_stuck_body_fails_as_too_slow_after_one_download_not_three() {
    let server = image_server().await;
    let mut config = config();
    config.fetch.stall_window = Duration::from_millis(300);
    let app = app(&config);
    let jobs = seed(
        &app.repo,
        "drip",
        &[vec![
            format!("http://{server}/drip.jpg"),
            format!("http://{server}/photo.jpg"),
        ]],
    )
    .await;
    let result = process_row(&app, &jobs[0], 1, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(
        result,
        RowProcessed::Recorded(Some(RequestStatus::CompletedWithErrors))
    );
    let done = row(&app.repo, "drip", 0).await;
    assert_eq!(done.images[0].error_code.as_deref(), Some("too_slow"));
    assert!(done.images[1].error_code.is_none(), "{:?}", done.images[1]);
    assert_eq!(DRIP_HITS.load(std::sync::atomic::Ordering::SeqCst), 1);
}

fn job_message(id: &str, job: &RowJob) -> serde_json::Value {
    serde_json::json!({
        "messageId": id,
        "receiptHandle": format!("rh-{id}"),
        "body": serde_json::to_string(job).unwrap(),
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "0"},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:pixpress-rows",
        "awsRegion": "us-east-1"
    })
}

/// An SQS event delivering `jobs` once each, message ids `m0`, `m1`, …
fn jobs_event(jobs: &[RowJob]) -> SqsEvent {
    let records: Vec<_> = jobs
        .iter()
        .enumerate()
        .map(|(i, job)| job_message(&format!("m{i}"), job))
        .collect();
    serde_json::from_value(serde_json::json!({ "Records": records })).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_invocation_cannot_finish_before_its_deadline_is_returned_unprocessed() {
    let server = image_server().await;
    let mut config = config();
    config.origin_max_concurrency = 1;
    let app = app(&config);
    let jobs = seed(
        &app.repo,
        "deadline",
        &[
            vec![format!("http://{server}/photo.jpg")],
            vec![format!("http://{server}/slow.jpg")],
            vec![format!("http://{server}/photo.jpg")],
        ],
    )
    .await;
    let event = jobs_event(&jobs);
    // Room for the first two images (one slow, 3 s) but not for a third started after them.
    let budget = app.config.image_budget;
    let mut context = Context::default();
    let deadline = std::time::SystemTime::now() + budget + Duration::from_secs(2);
    context.deadline = deadline
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let started = std::time::Instant::now();
    let response = handle(&app, LambdaEvent::new(event, context))
        .await
        .unwrap();
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(
        failed,
        vec!["m2"],
        "only the row that could not start comes back"
    );
    assert!(
        started.elapsed() < budget,
        "the invocation returned long before its deadline"
    );
    assert_eq!(row(&app.repo, "deadline", 0).await.state, RowState::Done);
    assert_eq!(row(&app.repo, "deadline", 1).await.state, RowState::Done);
    assert_eq!(row(&app.repo, "deadline", 2).await.state, RowState::Pending);
}

static IN_ENGINE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static MOST_IN_ENGINE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The real codec, slowed down, counting how many downloaded images it holds at once.
fn slow_counting_codec(
    input: &[u8],
    spec: &pixpress_domain::model::OutputSpec,
    limits: &pixpress_engine::DecodeLimits,
) -> Result<pixpress_engine::Compressed, pixpress_engine::CompressError> {
    use std::sync::atomic::Ordering;
    let now = IN_ENGINE.fetch_add(1, Ordering::SeqCst) + 1;
    MOST_IN_ENGINE.fetch_max(now, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(150));
    let result = pixpress_engine::compress(input, spec, limits);
    IN_ENGINE.fetch_sub(1, Ordering::SeqCst);
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloaded_but_uncompressed_bytes_stay_within_the_budget() {
    let server = image_server().await;
    let mut config = config();
    // A budget of one full-size download: bodies of unknown length reserve the whole cap, so
    // only one may be held between download and the end of its compression, even with four
    // engine threads and eight download slots.
    config.fetch.max_bytes = 4 * 1024 * 1024;
    config.worker_download_budget = 4 * 1024 * 1024;
    let dir = std::env::temp_dir().join(format!("pixpress-worker-{}", uuid::Uuid::new_v4()));
    let fetcher = pixpress_fetch::Fetcher::new(config.fetch.clone()).unwrap();
    let engine = pixpress_engine::Engine::with_codec(config.decode, 4, slow_counting_codec);
    let app = App::with_engine(
        EmbeddedRequestRepository::new(),
        DirObjectStore::new(dir, None).unwrap(),
        InMemoryOriginSlots::default(),
        EmbeddedQueue::new(3),
        fetcher,
        engine,
        &config,
    );
    let urls: Vec<String> = (0..4)
        .map(|_| format!("http://{server}/chunked.jpg"))
        .collect();
    let jobs = seed(&app.repo, "budget", &[urls]).await;
    let result = process_row(&app, &jobs[0], 1, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(
        result,
        RowProcessed::Recorded(Some(RequestStatus::Completed))
    );
    assert_eq!(
        MOST_IN_ENGINE.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "two downloaded images were held at once"
    );
}

#[tokio::test]
async fn an_image_waiting_for_memory_past_the_deadline_is_left_for_the_next_delivery() {
    // The byte budget holds one body of unknown length: the second image of the row waits for
    // the first (a 3 s body). With 1 s to spare before the deadline it cannot wait that long,
    // so it is left, not started: the first image is kept as progress and the row comes back.
    let server = image_server().await;
    let mut config = config();
    config.fetch.max_bytes = 4 * 1024 * 1024;
    config.worker_download_budget = 4 * 1024 * 1024;
    let app = app(&config);
    let urls = vec![
        format!("http://{server}/slow-body.jpg"),
        format!("http://{server}/slow-body.jpg?again"),
    ];
    let jobs = seed(&app.repo, "memory", &[urls]).await;
    let deadline = Deadline::after(app.config.image_budget + Duration::from_secs(1));
    let result = process_row(&app, &jobs[0], 1, deadline).await;
    assert!(
        matches!(result, Err(ProcessError::Deadline { .. })),
        "{result:?}"
    );
    let pending = row(&app.repo, "memory", 0).await;
    assert_eq!(pending.state, RowState::Pending);
    let stored: Vec<bool> = pending
        .progress
        .iter()
        .map(|p| {
            p.outcome
                .as_ref()
                .is_some_and(|o| o.status == ImageStatus::Ok)
        })
        .collect();
    assert_eq!(
        stored.iter().filter(|ok| **ok).count(),
        1,
        "one image stored, one left: {stored:?}"
    );
}

#[tokio::test]
async fn a_retry_fetches_only_the_images_that_failed() {
    let server = image_server().await;
    let app = app(&config());
    let jobs = seed(
        &app.repo,
        "kept",
        &[vec![
            format!("http://{server}/counted.jpg"),
            format!("http://{server}/busy.jpg"),
        ]],
    )
    .await;
    let first = process_row(&app, &jobs[0], 1, Deadline::NONE).await;
    assert!(matches!(
        first,
        Err(ProcessError::Transient { position: 1, .. })
    ));
    let pending = row(&app.repo, "kept", 0).await;
    assert_eq!(pending.state, RowState::Pending);
    assert_eq!(
        pending.progress[0].outcome.as_ref().map(|o| o.status),
        Some(ImageStatus::Ok)
    );
    assert_eq!(pending.progress[1].failures, 1);
    let hits = PHOTO_HITS.load(std::sync::atomic::Ordering::SeqCst);
    // Second delivery: the stored image is reused, only the failing one is fetched again.
    let _ = process_row(&app, &jobs[0], 2, Deadline::NONE).await;
    assert_eq!(PHOTO_HITS.load(std::sync::atomic::Ordering::SeqCst), hits);
    // The last delivery records the failure next to the image kept from the first.
    let last = process_row(&app, &jobs[0], 3, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(
        last,
        RowProcessed::Recorded(Some(RequestStatus::CompletedWithErrors))
    );
    let done = row(&app.repo, "kept", 0).await;
    assert_eq!(done.images[0].status, ImageStatus::Ok);
    assert_eq!(done.images[1].error_code.as_deref(), Some("http_503"));
    assert!(done.progress.is_empty());
    assert_eq!(PHOTO_HITS.load(std::sync::atomic::Ordering::SeqCst), hits);
}

#[tokio::test]
async fn an_image_that_keeps_timing_out_is_given_up_within_its_retry_budget() {
    let server = image_server().await;
    let mut config = config();
    config.fetch.timeout = Duration::from_millis(400);
    config.max_receive_count = 10;
    let mut app = app(&config);
    app.config.image_retry_budget = Duration::from_millis(600);
    let jobs = seed(
        &app.repo,
        "stuck",
        &[vec![format!("http://{server}/hang.jpg")]],
    )
    .await;
    let first = process_row(&app, &jobs[0], 1, Deadline::NONE).await;
    assert!(
        matches!(&first, Err(ProcessError::Transient { code, .. }) if code == "timeout"),
        "{first:?}"
    );
    // The second timeout brings the image's time past its budget: recorded, not retried, long
    // before the queue's last delivery (10).
    let second = process_row(&app, &jobs[0], 2, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(
        second,
        RowProcessed::Recorded(Some(RequestStatus::CompletedWithErrors))
    );
    let done = row(&app.repo, "stuck", 0).await;
    assert_eq!(done.images[0].error_code.as_deref(), Some("timeout"));
    assert!(
        done.images[0]
            .error
            .as_deref()
            .unwrap()
            .contains("gave up after 2 attempts"),
        "{:?}",
        done.images[0].error
    );
}

/// What a deployed worker writes after an invocation: images ok, failures by code, bytes and
/// stage latencies as CloudWatch Embedded Metric Format documents.
#[tokio::test]
async fn an_invocation_emits_image_outcomes_bytes_and_latencies_as_metrics() {
    let metrics = pixpress_app::telemetry::Metrics::init("row-worker");
    let server = image_server().await;
    let app = app(&config());
    let jobs = seed(
        &app.repo,
        "metrics",
        &[vec![
            format!("http://{server}/photo.jpg"),
            format!("http://{server}/page.html"),
        ]],
    )
    .await;
    process_row(&app, &jobs[0], 1, Deadline::NONE)
        .await
        .unwrap();
    let mut out = Vec::new();
    metrics.flush_to(&mut out);
    let documents: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let has = |name: &str| documents.iter().any(|d| d.get(name).is_some());
    for name in [
        "images_ok",
        "bytes_in",
        "bytes_out",
        "download_ms",
        "compress_ms",
        "store_ms",
    ] {
        assert!(has(name), "{name} missing from {documents:?}");
    }
    assert!(
        documents
            .iter()
            .any(|d| d["code"] == "not_an_image" && d["images_failed"].as_u64() >= Some(1)),
        "{documents:?}"
    );
    assert!(documents.iter().all(|d| d["function"] == "row-worker"));
}

/// Every log line a worker writes about a row names its request and row, whatever the line
/// (the worker's own reports, the fetcher's, the HTTP client's), so one request's story can be
/// read out of CloudWatch with one filter.
#[tokio::test]
async fn every_log_line_about_a_row_names_its_request_and_row() {
    let captured = pixpress_test_support::LogCapture::default();
    let _default = captured.install(tracing::Level::DEBUG);
    let server = image_server().await;
    let mut config = config();
    config.max_receive_count = 3;
    let app = app(&config);
    let jobs = seed(
        &app.repo,
        "logged",
        &[
            vec![format!("http://{server}/missing.jpg")],
            vec![format!("http://{server}/busy.jpg")],
        ],
    )
    .await;
    let event = jobs_event(&jobs);
    handle(&app, LambdaEvent::new(event, Context::default()))
        .await
        .unwrap();
    let text = captured.text();
    let lines = captured.lines();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "row will be retried"),
        "{text}"
    );
    for line in &lines {
        assert_eq!(line["span"]["request_id"], "logged", "{line}");
        assert!(line["span"]["row_index"].is_u64(), "{line}");
    }
}

/// A row taken after its request was cancelled is recorded without fetching anything: the image
/// an earlier delivery finished keeps its outcome, the other fails as `cancelled`, and the
/// last row makes the request `CANCELLED`.
#[tokio::test]
async fn a_row_of_a_cancelled_request_is_recorded_without_fetching() {
    let server = image_server().await;
    let app = app(&config());
    let jobs = seed(
        &app.repo,
        "cancelled",
        &[vec![
            format!("http://{server}/counted.jpg?first"),
            // Fetching this would take 30 s and end in a timeout, not `cancelled`.
            format!("http://{server}/hang.jpg"),
        ]],
    )
    .await;
    let finished = pixpress_domain::model::ImageOutcome {
        status: pixpress_domain::model::ImageStatus::Ok,
        output_key: Some("images/default/cancelled/0-0.jpg".into()),
        output_url: Some("https://cdn.example.com/images/default/cancelled/0-0.jpg".into()),
        error_code: None,
        error: None,
        bytes_in: Some(1000),
        bytes_out: Some(400),
        width: Some(10),
        height: Some(10),
        kept_original: false,
        quality: Some(50),
        score: None,
    };
    app.repo
        .record_row_progress(
            "cancelled",
            0,
            &[pixpress_domain::model::ImageProgress {
                position: 0,
                outcome: Some(finished.clone()),
                spent_ms: 120,
                failures: 0,
            }],
        )
        .await
        .unwrap();
    assert!(
        app.repo
            .request_cancel("cancelled", Utc::now())
            .await
            .unwrap()
    );

    let started = std::time::Instant::now();
    // The second delivery (the first saved that progress).
    let processed = process_row(&app, &jobs[0], 2, Deadline::NONE)
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "nothing was fetched"
    );
    assert_eq!(
        processed,
        RowProcessed::Recorded(Some(RequestStatus::Cancelled))
    );
    let page = app.repo.list_rows("cancelled", None, 10).await.unwrap();
    let images = &page.rows[0].images;
    assert_eq!(images[0], finished);
    assert_eq!(images[1].error_code.as_deref(), Some("cancelled"));
    let meta = app.repo.get_request("cancelled").await.unwrap().unwrap();
    assert_eq!(meta.status, RequestStatus::Cancelled);
}

/// A FAILED request never completes: its rows are recorded at once, nothing is downloaded.
#[tokio::test]
async fn a_row_of_a_failed_request_is_recorded_without_fetching() {
    let server = image_server().await;
    let app = app(&config());
    let jobs = seed(
        &app.repo,
        "failed",
        &[vec![
            // Fetching this would take 30 s and end in a timeout, not `cancelled`.
            format!("http://{server}/hang.jpg"),
        ]],
    )
    .await;
    let failure = pixpress_domain::model::Failure {
        code: "enqueue_failed".into(),
        message: "the rows could not all be enqueued".into(),
        issues: vec![],
    };
    app.repo
        .mark_failed("failed", &failure, Utc::now())
        .await
        .unwrap();

    let started = std::time::Instant::now();
    process_row(&app, &jobs[0], 1, Deadline::NONE)
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "nothing was fetched"
    );
    let page = app.repo.list_rows("failed", None, 10).await.unwrap();
    assert_eq!(
        page.rows[0].images[0].error_code.as_deref(),
        Some("cancelled")
    );
    let meta = app.repo.get_request("failed").await.unwrap().unwrap();
    assert_eq!(meta.status, RequestStatus::Failed);
}

/// An origin that counts the requests in flight at once, answering after `delay`; beyond
/// `limit` in flight (when set) it answers 429 with `Retry-After: retry_after` seconds.
#[derive(Clone, Default)]
struct CountingOrigin {
    in_flight: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    peak: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    requests: std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, u16)>>>,
}

impl CountingOrigin {
    async fn start(delay: Duration, limit: Option<usize>, retry_after: u64) -> (Self, SocketAddr) {
        use std::sync::atomic::Ordering::SeqCst;
        let origin = Self::default();
        let state = origin.clone();
        let router = Router::new().route(
            "/img/{n}",
            get(move || {
                let state = state.clone();
                async move {
                    let now = state.in_flight.fetch_add(1, SeqCst) + 1;
                    state.peak.fetch_max(now, SeqCst);
                    let refused = limit.is_some_and(|l| now > l);
                    state
                        .requests
                        .lock()
                        .unwrap()
                        .push((std::time::Instant::now(), if refused { 429 } else { 200 }));
                    let response = if refused {
                        (
                            StatusCode::TOO_MANY_REQUESTS,
                            [(header::RETRY_AFTER, retry_after.to_string())],
                        )
                            .into_response()
                    } else {
                        tokio::time::sleep(delay).await;
                        ([(header::CONTENT_TYPE, "image/jpeg")], PHOTO).into_response()
                    };
                    state.in_flight.fetch_sub(1, SeqCst);
                    response
                }
            }),
        );
        let addr = pixpress_test_support::serve(router).await;
        (origin, addr)
    }

    fn peak(&self) -> usize {
        self.peak.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// `invocations` worker processes (each its own app, as separate Lambda instances) sharing one
/// repository, bucket and origin-slots store.
fn processes(config: &Config, invocations: usize) -> (Vec<TestApp>, InMemoryOriginSlots) {
    let dir = std::env::temp_dir().join(format!("pixpress-worker-{}", uuid::Uuid::new_v4()));
    let store = DirObjectStore::new(dir, None).unwrap();
    let repo = EmbeddedRequestRepository::new();
    let slots = InMemoryOriginSlots::default();
    let apps = (0..invocations)
        .map(|_| {
            App::new(
                repo.clone(),
                store.clone(),
                slots.clone(),
                EmbeddedQueue::new(3),
                config,
            )
            .unwrap()
        })
        .collect();
    (apps, slots)
}

/// `rows` rows of `per_row` distinct URLs of `origin`.
fn origin_rows(origin: SocketAddr, rows: usize, per_row: usize) -> Vec<Vec<String>> {
    (0..rows)
        .map(|r| {
            (0..per_row)
                .map(|i| format!("http://{origin}/img/{}", r * per_row + i))
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_origin_sees_more_downloads_at_once_than_its_cap_across_invocations() {
    let (origin, addr) = CountingOrigin::start(Duration::from_millis(50), None, 0).await;
    let mut config = config();
    config.origin_max_concurrency = 6;
    let (apps, slots) = processes(&config, 3);
    let jobs = seed(&apps[0].repo, "capped", &origin_rows(addr, 30, 3)).await;
    // Three invocations at once, ten rows each; alone, each would take six slots.
    let results =
        futures::future::join_all(apps.iter().zip(jobs.chunks(10)).map(|(app, batch)| {
            handle(app, LambdaEvent::new(jobs_event(batch), Context::default()))
        }))
        .await;
    for result in results {
        assert!(result.unwrap().batch_item_failures.is_empty());
    }
    assert!(origin.peak() <= 6, "peak {} > cap 6", origin.peak());
    assert!(origin.peak() >= 4, "peak {}", origin.peak());
    for index in 0..30 {
        let row = row(&apps[0].repo, "capped", index).await;
        assert_eq!(row.state, RowState::Done);
        assert!(row.images.iter().all(|i| i.status == ImageStatus::Ok));
    }
    // Every invocation gave its slots back when it ended.
    let record = slots.record(&addr.ip().to_string()).unwrap();
    assert_eq!(record.held(Utc::now().timestamp_millis()), 0);
    let calls = slots.calls();
    println!(
        "origin slots: {} reads, {} writes for 90 images ({:.2} writes per image)",
        calls.reads,
        calls.writes,
        calls.writes as f64 / 90.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_backs_the_host_off_for_every_invocation_and_no_image_fails() {
    let (origin, addr) = CountingOrigin::start(Duration::from_millis(20), Some(3), 1).await;
    let (apps, _) = processes(&config(), 2);
    let jobs = seed(&apps[0].repo, "polite", &origin_rows(addr, 10, 2)).await;
    let results =
        futures::future::join_all(apps.iter().zip(jobs.chunks(5)).map(|(app, batch)| {
            handle(app, LambdaEvent::new(jobs_event(batch), Context::default()))
        }))
        .await;
    for result in results {
        assert!(result.unwrap().batch_item_failures.is_empty());
    }
    for index in 0..10 {
        let row = row(&apps[0].repo, "polite", index).await;
        assert!(
            row.images.iter().all(|i| i.status == ImageStatus::Ok),
            "{:?}",
            row.images
        );
    }
    // After the first 429, neither invocation sent anything for most of the second it asked
    // for (requests already on their way may land in the first milliseconds).
    let requests = origin.requests.lock().unwrap().clone();
    let (refused_at, _) = *requests.iter().find(|(_, status)| *status == 429).unwrap();
    let during = requests
        .iter()
        .filter(|(at, _)| {
            *at > refused_at + Duration::from_millis(100)
                && *at < refused_at + Duration::from_millis(900)
        })
        .count();
    assert_eq!(during, 0, "{requests:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_whose_host_is_backed_off_past_the_deadline_is_delayed_not_failed() {
    let (origin, addr) = CountingOrigin::start(Duration::ZERO, Some(0), 3600).await;
    let app = app(&config());
    let jobs = seed(&app.repo, "delayed", &origin_rows(addr, 2, 1)).await;
    // The rows come from the worker's own queue, so their receipts are real.
    app.queue.enqueue(&jobs).await.unwrap();
    let received = app.queue.receive(10, Duration::ZERO).unwrap();
    let records: Vec<_> = received
        .iter()
        .map(|m| {
            serde_json::json!({
                "messageId": m.message_id, "receiptHandle": m.receipt_handle, "body": m.body,
                "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
                "eventSource": "aws:sqs", "awsRegion": "us-east-1"
            })
        })
        .collect();
    let event: SqsEvent =
        serde_json::from_value(serde_json::json!({ "Records": records })).unwrap();
    let mut context = Context::default();
    let deadline = std::time::SystemTime::now() + app.config.image_budget + Duration::from_secs(10);
    context.deadline = deadline
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let started = std::time::Instant::now();
    let response = handle(&app, LambdaEvent::new(event, context))
        .await
        .unwrap();
    assert_eq!(response.batch_item_failures.len(), 2);
    assert!(started.elapsed() < Duration::from_secs(5));
    // The host asked for an hour: no image was asked for twice, neither row counts a failure
    // against its images, and both stay hidden in the queue (not back after its visibility
    // timeout).
    assert!(origin.requests.lock().unwrap().len() <= 2);
    for index in 0..2 {
        let row = row(&app.repo, "delayed", index).await;
        assert_eq!(row.state, RowState::Pending);
        assert!(
            row.progress.iter().all(|p| p.failures == 0),
            "{:?}",
            row.progress
        );
    }
    assert!(
        app.queue
            .receive(10, Duration::from_secs(30))
            .unwrap()
            .is_empty()
    );
    assert_eq!(app.queue.len().unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_waiting_for_a_slot_is_not_fetched_once_its_request_is_cancelled() {
    let server = image_server().await;
    let mut config = config();
    // One download at a time: the second and third images wait for the first (3 s).
    config.origin_max_concurrency = 1;
    let app = app(&config);
    let slow = format!("http://{server}/slow.jpg");
    let jobs = seed(
        &app.repo,
        "cancel-waiting",
        &[vec![slow.clone(), slow.clone(), slow]],
    )
    .await;
    let repo = app.repo.clone();
    let cancel = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        repo.request_cancel("cancel-waiting", Utc::now())
            .await
            .unwrap()
    });
    let started = std::time::Instant::now();
    let processed = process_row(&app, &jobs[0], 1, Deadline::NONE)
        .await
        .unwrap();
    assert!(cancel.await.unwrap());
    assert_eq!(
        processed,
        RowProcessed::Recorded(Some(RequestStatus::Cancelled))
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "only the first image was fetched: {:?}",
        started.elapsed()
    );
    let images = row(&app.repo, "cancel-waiting", 0).await.images;
    assert_eq!(images[0].status, ImageStatus::Ok);
    assert_eq!(images[1].error_code.as_deref(), Some("cancelled"));
    assert_eq!(images[2].error_code.as_deref(), Some("cancelled"));
}

/// Throttles every write of a row outcome while `on`, as a hot partition does.
#[derive(Debug, Default)]
struct ThrottledOutcomes {
    on: std::sync::atomic::AtomicBool,
}

impl pixpress_embedded::FaultInjector for ThrottledOutcomes {
    fn before(&self, call: pixpress_embedded::Call) -> Option<pixpress_embedded::InjectedFault> {
        (self.on.load(std::sync::atomic::Ordering::SeqCst)
            && call == pixpress_embedded::Call::Outcome)
            .then_some(pixpress_embedded::InjectedFault::Throttle)
    }

    fn duplicate_delivery(&self) -> bool {
        false
    }
}

/// An SQS event of `received` (real receipts and receive counts).
fn received_event(received: &[pixpress_embedded::ReceivedMessage]) -> SqsEvent {
    let records: Vec<_> = received
        .iter()
        .map(|m| {
            serde_json::json!({
                "messageId": m.message_id, "receiptHandle": m.receipt_handle, "body": m.body,
                "attributes": {"ApproximateReceiveCount": m.receive_count.to_string()},
                "messageAttributes": {}, "eventSource": "aws:sqs", "awsRegion": "us-east-1"
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({ "Records": records })).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_whose_outcome_is_throttled_comes_back_in_seconds_and_downloads_nothing_again() {
    let (origin, addr) = CountingOrigin::start(Duration::ZERO, None, 0).await;
    let mut config = config();
    config.redelivery = pixpress_app::retry::RedeliveryBackoff {
        first: Duration::from_secs(1),
        factor: 1,
        cap: Duration::from_secs(1),
    };
    let throttle = std::sync::Arc::new(ThrottledOutcomes::default());
    let mut app = app(&config);
    app.repo = EmbeddedRequestRepository::new()
        .with_faults(throttle.clone())
        .with_retry(pixpress_app::retry::RetryPolicy::NONE);
    let jobs = seed(&app.repo, "throttled", &origin_rows(addr, 1, 3)).await;
    app.queue.enqueue(&jobs).await.unwrap();
    // Hidden for the deployed rows queue's visibility timeout, as Lambda's poller receives.
    let visibility = Duration::from_secs(720);
    let received = app.queue.receive(10, visibility).unwrap();

    throttle.on.store(true, std::sync::atomic::Ordering::SeqCst);
    let response = handle(
        &app,
        LambdaEvent::new(received_event(&received), Context::default()),
    )
    .await
    .unwrap();
    assert_eq!(response.batch_item_failures.len(), 1);
    assert_eq!(origin.requests.lock().unwrap().len(), 3);
    let pending = row(&app.repo, "throttled", 0).await;
    assert_eq!(pending.state, RowState::Pending);
    assert_eq!(
        pending
            .progress
            .iter()
            .filter(|p| p.outcome.is_some())
            .count(),
        3,
        "the finished images are kept: {:?}",
        pending.progress
    );

    // Back after the backoff (1 s here), not after the 720-s visibility timeout.
    throttle
        .on
        .store(false, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let again = app.queue.receive(10, visibility).unwrap();
    assert_eq!(again.len(), 1, "the row is not back within the backoff");
    let response = handle(
        &app,
        LambdaEvent::new(received_event(&again), Context::default()),
    )
    .await
    .unwrap();
    assert!(response.batch_item_failures.is_empty());
    let done = row(&app.repo, "throttled", 0).await;
    assert_eq!(done.state, RowState::Done);
    assert!(
        done.images.iter().all(|i| i.error_code.is_none()),
        "{:?}",
        done.images
    );
    assert_eq!(
        origin.requests.lock().unwrap().len(),
        3,
        "no image downloaded twice"
    );
}
