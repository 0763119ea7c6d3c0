//! The pipeline through the AWS adapters against moto server: the pump polls SQS with
//! `ReceiveMessage` and reads the table's stream with `aws-sdk-dynamodbstreams`, converting both
//! to the Lambda event types, exactly as the event source mappings feed the deployed functions.
//! Also: a row message delivered twice, and rows that reach the dead-letter queue and are
//! redriven.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
#[path = "../../local/tests/support/emulator.rs"]
mod emulator;

use pixpress_app::ports::RequestReader as _;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use emulator::start_moto;
use pixpress_app::config::Config;
use pixpress_app::ports::ObjectStore;
use pixpress_cli::demo::{PHOTOS, WebhookReceiver, photo_router, serve_on_loopback};
use pixpress_cli::emulator::EmulatorNames;
use pixpress_cli::pipeline::{
    Emulated, Pipeline, PipelineOptions, PumpBackend, Upload, UploadQuery,
};
use pixpress_cli::run::{RunOptions, RunOutcome, run_csv};
use pixpress_domain::model::RequestStatus;
use pixpress_domain::webhook::WebhookSecret;

struct Fixture {
    pipeline: Pipeline<Emulated>,
    receiver: WebhookReceiver,
    base: String,
    _moto: emulator::Emulator,
    endpoint: String,
    dir: std::path::PathBuf,
}

/// `serial`: one message per worker invocation, one invocation at a time. moto's
/// `TransactWriteItems` is not isolated: a cancelled transaction restores a copy of the whole
/// table taken when it began, stream included, discarding what concurrent requests wrote in the
/// meantime (moto 5.2.5, `dynamodb/models/__init__.py`, `transact_write_items`). A redelivered
/// row cancels its transaction by design, so tests that redeliver write one at a time.
async fn fixture(max_receive_count: u32, serial: bool) -> Fixture {
    let (moto, endpoint) = start_moto();
    let router = photo_router().route(
        "/busy.jpg",
        get(|| async { StatusCode::SERVICE_UNAVAILABLE.into_response() }),
    );
    let server = serve_on_loopback(router).await.unwrap();
    let secret = WebhookSecret::from_bytes(b"moto-secret");
    let receiver = WebhookReceiver::start(secret.clone()).await.unwrap();
    let mut config = Config::default();
    config.fetch.policy = pixpress_fetch::NetworkPolicy::local();
    config.webhook_secret = Some(secret);
    config.max_receive_count = max_receive_count;
    let dir = std::env::temp_dir().join(format!("pixpress-moto-{}", uuid::Uuid::new_v4()));
    let mut options = PipelineOptions::new(&dir);
    options.visibility_timeout = Duration::from_secs(1);
    if serial {
        options.batch_size = 1;
        options.worker_invocations = 1;
    }
    let pipeline = Pipeline::<Emulated>::emulated(
        &config,
        options,
        &endpoint,
        &EmulatorNames::with_prefix("pixpress-test"),
    )
    .await
    .unwrap();
    Fixture {
        pipeline,
        receiver,
        base: format!("http://{server}"),
        _moto: moto,
        endpoint,
        dir,
    }
}

fn photo(base: &str, i: usize) -> String {
    format!("{base}/photos/{}", PHOTOS[i].name)
}

/// `POST /uploads`, then what the stored CSV's `ObjectCreated` event does in a deployment:
/// `s3-ingest` writes and queues its rows.
async fn upload(pipeline: &Pipeline<Emulated>, csv: String, webhook: &str) -> String {
    let request_id = match pipeline
        .upload_csv(
            csv.into_bytes(),
            &UploadQuery {
                webhook_url: Some(webhook.to_owned()),
                ..UploadQuery::default()
            },
        )
        .await
        .unwrap()
    {
        Upload::Accepted { request_id, .. } => request_id,
        Upload::Rejected { problem, .. } => panic!("rejected: {problem}"),
    };
    assert!(pipeline.deliver_upload_events().await.unwrap());
    request_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_runs_through_sqs_and_the_dynamodb_stream_to_aligned_outputs_in_s3() {
    let f = fixture(2, false).await;
    let b = &f.base;
    let csv = format!(
        "S. No.,Product Name,Input Image Urls\n\
         1,Prints,\"{}, {b}/photos/discontinued.jpg, {}\"\n\
         2,Canvas,\"{}, {b}/busy.jpg\"\n",
        photo(b, 0),
        photo(b, 1),
        photo(b, 2),
    );
    let options = RunOptions {
        upload: UploadQuery {
            webhook_url: Some(f.receiver.url()),
            ..UploadQuery::default()
        },
        ..RunOptions::default()
    };
    let RunOutcome::Finished(report) = run_csv(&f.pipeline, csv.into_bytes(), &options)
        .await
        .unwrap()
    else {
        panic!("rejected");
    };
    assert_eq!(report.meta.status, RequestStatus::CompletedWithErrors);
    let c = report.meta.counters;
    assert_eq!((c.images_ok, c.images_failed, c.rows_done), (3, 2, 2));
    let text = std::fs::read_to_string(report.output_csv.as_ref().unwrap()).unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let expected = [vec!["", "http_404", ""], vec!["", "http_503"]];
    for (row, codes) in rows.iter().zip(expected) {
        let outputs: Vec<&str> = row[3].split(',').map(str::trim).collect();
        let errors: Vec<&str> = row[5].split(',').map(str::trim).collect();
        assert_eq!(errors, codes, "{row:?}");
        for (output, code) in outputs.iter().zip(&codes) {
            assert_eq!(output.is_empty(), !code.is_empty(), "{row:?}");
            if let Some(key) = output.strip_prefix("s3://pixpress-test-data/") {
                let object = f
                    .pipeline
                    .store()
                    .get(key, u64::MAX)
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(&object.bytes[..2], &[0xFF, 0xD8], "{key} is a JPEG");
            }
        }
    }
    // The 503 was retried through SQS (a batch item failure, then the last permitted receive).
    assert!(
        report.status_document["products"][1]["images"][1]["error"]
            .as_str()
            .unwrap()
            .contains("gave up after 2 attempts")
    );
    let deliveries = f.receiver.received();
    assert_eq!(deliveries.len(), 1, "one webhook");
    assert_eq!(deliveries[0].verified, Ok(()));
    std::fs::remove_dir_all(&f.dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_message_delivered_twice_is_counted_once() {
    let f = fixture(5, true).await;
    let b = &f.base;
    let csv = format!(
        "S. No.,Product Name,Input Image Urls\n1,Prints,\"{}, {}\"\n2,Cups,{}\n",
        photo(b, 0),
        photo(b, 1),
        photo(b, 2),
    );
    let request_id = upload(&f.pipeline, csv, &f.receiver.url()).await;
    // SQS delivers at least once: put a copy of every row message back on the queue.
    let queue = f.pipeline.backend.0.queue.queue();
    let messages = f
        .pipeline
        .backend
        .receive(10, Duration::from_secs(0))
        .await
        .unwrap();
    assert_eq!(messages.len(), 2);
    for message in &messages {
        queue
            .client()
            .send_message()
            .queue_url(queue.target())
            .message_body(&message.body)
            .send()
            .await
            .unwrap();
    }
    let meta = f
        .pipeline
        .run_until_done(&request_id, |_| {})
        .await
        .unwrap();
    assert_eq!(meta.status, RequestStatus::Completed);
    let c = meta.counters;
    assert_eq!((c.rows_done, c.images_ok, c.images_failed), (2, 3, 0));
    // Copies still queued after completion are consumed and change nothing.
    while f.pipeline.backend.queue_depth().await.unwrap() > 0 {
        f.pipeline.pump_once().await.unwrap();
    }
    let stored = f
        .pipeline
        .repo()
        .get_request(&request_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.counters, c);
    assert_eq!(f.receiver.received().len(), 1, "one webhook");
    std::fs::remove_dir_all(&f.dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_that_reach_the_dead_letter_queue_are_recorded_failed_and_the_request_completes() {
    let f = fixture(2, false).await;
    let b = &f.base;
    let csv = format!(
        "S. No.,Product Name,Input Image Urls\n1,Prints,{}\n2,Cups,{}\n",
        photo(b, 0),
        photo(b, 2),
    );
    let request_id = upload(&f.pipeline, csv, &f.receiver.url()).await;
    // The worker crashes on every delivery (received, never deleted, no batch response):
    // after maxReceiveCount receives SQS moves both messages to the dead-letter queue.
    let backend = &f.pipeline.backend;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while backend.dead_letter_count().await.unwrap() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "messages never reached the DLQ"
        );
        backend.receive(10, Duration::from_secs(0)).await.unwrap();
    }
    assert_eq!(backend.queue_depth().await.unwrap(), 0);
    // row-dead-letter records both rows as failed; the request completes with its output CSV
    // and one webhook instead of staying PROCESSING.
    let meta = f
        .pipeline
        .run_until_done(&request_id, |_| {})
        .await
        .unwrap();
    assert_eq!(meta.status, RequestStatus::CompletedWithErrors);
    assert_eq!(
        (meta.counters.rows_done, meta.counters.images_failed),
        (2, 2)
    );
    let rows = pixpress_app::ingest::load_all_rows(f.pipeline.repo(), &request_id)
        .await
        .unwrap();
    for row in &rows {
        assert_eq!(row.images[0].error_code.as_deref(), Some("dead_lettered"));
    }
    assert!(meta.output_csv_key.is_some());
    assert_eq!(backend.dead_letter_count().await.unwrap(), 0);
    assert_eq!(f.receiver.received().len(), 1, "one webhook");
    std::fs::remove_dir_all(&f.dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pixpress_run_with_the_emulator_backend_writes_the_output_csv_and_images_to_the_emulator() {
    let (_moto, endpoint) = start_moto();
    let server = serve_on_loopback(photo_router()).await.unwrap();
    let dir = std::env::temp_dir().join(format!("pixpress-run-moto-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("products.csv");
    std::fs::write(
        &csv,
        format!(
            "S. No.,Product Name,Input Image Urls\n1,Prints,\"{}, {}\"\n",
            photo(&format!("http://{server}"), 0),
            photo(&format!("http://{server}"), 1)
        ),
    )
    .unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pixpress"));
    command
        .arg("run")
        .arg(&csv)
        .args(["--backend", "emulator", "--endpoint", &endpoint])
        .args(["--emulator-prefix", "cli-run", "--allow-loopback", "--out"])
        .arg(dir.join("out"));
    // The photo server runs on this runtime: wait for the process off its worker threads.
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(": COMPLETED\n"), "{stdout}");
    assert!(
        stdout.contains("images: s3://cli-run-data/images/"),
        "{stdout}"
    );
    let text = std::fs::read_to_string(dir.join("out/output.csv")).unwrap();
    let row = text.lines().nth(1).unwrap();
    assert_eq!(row.matches("s3://cli-run-data/images/").count(), 2, "{row}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pixpress_sweep_enqueues_the_rows_of_a_request_whose_ingest_stopped_short() {
    use pixpress_app::ports::RequestIntake as _;
    let f = fixture(5, false).await;
    // A request recorded with its rows, whose rows were never enqueued (the API died and
    // its client never retried): nothing else would ever move it.
    let rows: Vec<pixpress_domain::model::RowRecord> = (0..3u32)
        .map(|i| pixpress_domain::model::RowRecord {
            index: i,
            serial: format!("{}", i + 1),
            product_name: format!("Product {i}"),
            input_urls: vec![photo(&f.base, 0)],
            state: pixpress_domain::model::RowState::Pending,
            images: Vec::new(),
            progress: Vec::new(),
        })
        .collect();
    let meta = pixpress_domain::model::RequestMeta {
        counters: pixpress_domain::model::Counters::new(3, 3),
        ..pixpress_domain::model::RequestMeta::new(
            "5f0c2a8e-1b7d-4c3e-9a6f-2d8b7e4c1a90".to_owned(),
            "default",
            chrono::Utc::now() - chrono::Duration::minutes(5),
        )
    };
    f.pipeline
        .repo()
        .create_request(&meta, &rows)
        .await
        .unwrap();
    let endpoint = f.endpoint.clone();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pixpress"));
    command
        .arg("sweep")
        .args([
            "--endpoint",
            &endpoint,
            "--emulator-prefix",
            "pixpress-test",
        ])
        .args(["--idle-seconds", "60"]);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["repairs"][0]["request_id"], meta.request_id.as_str());
    assert_eq!(report["repairs"][0]["repair"], "enqueued");
    // The pump now finishes it like any other request.
    let done = f
        .pipeline
        .run_until_done(&meta.request_id, |_| {})
        .await
        .unwrap();
    assert_eq!(done.status, RequestStatus::Completed);
    assert_eq!(done.counters.images_ok, 3);
    std::fs::remove_dir_all(&f.dir).ok();
}
