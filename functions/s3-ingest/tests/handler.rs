//! s3-ingest handler tests fed from `events/s3-ingest/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aws_lambda_events::event::s3::S3Event;
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use bytes::Bytes;
use lambda_runtime::{Context, LambdaEvent};
use pixpress_app::config::Config;
use pixpress_app::ingest::load_all_rows;
use pixpress_app::ports::ObjectStore;
use pixpress_app::ports::RequestIntake as _;
use pixpress_app::ports::RequestReader as _;
use pixpress_domain::model::{RequestStatus, Source};
use pixpress_embedded::{DirObjectStore, EmbeddedQueue, EmbeddedRequestRepository};
use pixpress_s3_ingest::{App, IngestConfig, RecordOutcome, handle, handle_chunks, ingest_record};
use pixpress_test_support::manifest_dir;

type TestApp = App<EmbeddedRequestRepository, EmbeddedQueue, DirObjectStore, EmbeddedQueue>;

fn app() -> TestApp {
    let dir = std::env::temp_dir().join(format!("pixpress-s3-{}", uuid::Uuid::new_v4()));
    App {
        repo: EmbeddedRequestRepository::new(),
        queue: EmbeddedQueue::new(5),
        store: DirObjectStore::new(dir, None).unwrap(),
        chunks: None,
        dead_letter_queue_arn: None,
        config: IngestConfig::from(&Config::default()),
    }
}

/// An app with an ingest queue and chunks of 7 rows.
fn fanned_out_app() -> TestApp {
    let mut app = app();
    app.chunks = Some(EmbeddedQueue::new(3));
    app.config.chunk_rows = 7;
    app
}

/// A CSV of `rows` rows, row `bad` (1-based data row) with an ftp URL when given.
fn catalogue(rows: u32, bad: Option<u32>) -> String {
    let mut csv = String::from("S. No.,Product Name,Input Image Urls\r\n");
    for i in 1..=rows {
        let scheme = if Some(i) == bad { "ftp" } else { "https" };
        csv.push_str(&format!(
            "{i},\"Product, {i}\",\"{scheme}://img.example.com/{i}a.jpg, https://img.example.com/{i}b.jpg\"\r\n"
        ));
        if i % 10 == 0 {
            csv.push_str("\r\n");
        }
    }
    csv
}

/// Every message on `queue` as an SQS event, received (so a redelivery counts).
fn received(queue: &EmbeddedQueue) -> SqsEvent {
    event_of(queue.receive(100, std::time::Duration::ZERO).unwrap())
}

/// An SQS event of `messages` as received (real receipts and receive counts).
fn event_of(messages: Vec<pixpress_embedded::ReceivedMessage>) -> SqsEvent {
    let records = messages
        .into_iter()
        .map(|m| {
            let mut message = SqsMessage::default();
            message.message_id = Some(m.message_id.clone());
            message.receipt_handle = Some(m.receipt_handle.clone());
            message.body = Some(m.body.clone());
            message.attributes.insert(
                "ApproximateReceiveCount".into(),
                m.receive_count.to_string(),
            );
            message
        })
        .collect();
    let mut event = SqsEvent::default();
    event.records = records;
    event
}

fn event() -> S3Event {
    let path = format!(
        "{}/../../events/s3-ingest/object-created.json",
        manifest_dir()
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

const KEY: &str = "uploads/spring sale(2026).csv";

/// Puts a catalogue of `rows` rows under [`KEY`] and ingests its upload event.
async fn ingest_catalogue(app: &TestApp, rows: u32) -> pixpress_app::ingest::Ingested {
    app.store
        .put(KEY, Bytes::from(catalogue(rows, None)), "text/csv")
        .await
        .unwrap();
    let RecordOutcome::Ingested(ingested) = ingest_record(app, &event().records[0]).await.unwrap()
    else {
        panic!("expected the catalogue to be ingested");
    };
    *ingested
}

#[tokio::test]
async fn uploaded_csv_is_ingested_once_even_when_the_event_is_delivered_twice() {
    let app = app();
    let csv = "S. No.,Product Name,Input Image Urls\n1.,Mug,\"https://img.example.com/a.jpg, https://img.example.com/b.jpg\"\n2.,Cup,https://img.example.com/c.jpg\n";
    app.store
        .put(KEY, Bytes::from(csv), "text/csv")
        .await
        .unwrap();
    handle(&app, LambdaEvent::new(event(), Context::default()))
        .await
        .unwrap();
    handle(&app, LambdaEvent::new(event(), Context::default()))
        .await
        .unwrap();
    assert_eq!(app.queue.len().unwrap(), 2);
    let RecordOutcome::Ingested(ingested) = ingest_record(&app, &event().records[0]).await.unwrap()
    else {
        panic!("expected the request to be found");
    };
    assert!(ingested.replayed);
    assert_eq!(ingested.meta.source, Source::S3);
    assert_eq!(ingested.meta.source_key.as_deref(), Some(KEY));
    assert_eq!(ingested.meta.counters.images_total, 3);
}

#[tokio::test]
async fn invalid_csv_becomes_a_failed_request_listing_its_errors() {
    let app = app();
    let csv = "S. No.,Product Name,Input Image Urls\n1.,Mug,https://img.example.com/a.jpg,https://img.example.com/b.jpg\n";
    app.store
        .put(KEY, Bytes::from(csv), "text/csv")
        .await
        .unwrap();
    let RecordOutcome::Rejected { request_id, issues } =
        ingest_record(&app, &event().records[0]).await.unwrap()
    else {
        panic!("expected a rejection");
    };
    assert_eq!(issues[0].code, "unquoted_url_list");
    let meta = app.repo.get_request(&request_id).await.unwrap().unwrap();
    assert_eq!(meta.status, RequestStatus::Failed);
    assert_eq!(meta.failure.unwrap().issues[0].row, Some(2));
    assert!(app.queue.is_empty().unwrap());
}

#[tokio::test]
async fn objects_outside_uploads_are_ignored() {
    let app = app();
    let mut event = event();
    event.records[0].s3.object.key = Some("results/x/output.csv".into());
    assert_eq!(
        ingest_record(&app, &event.records[0]).await.unwrap(),
        RecordOutcome::Ignored
    );
}

#[tokio::test]
async fn a_presigned_upload_is_ingested_under_the_tenant_and_request_id_its_url_was_issued_for() {
    let app = app();
    let request_id = uuid::Uuid::new_v4().to_string();
    let key = pixpress_domain::storage_keys::presigned_upload_key("acme", &request_id);
    let csv = "S. No.,Product Name,Input Image Urls\n1,Mug,https://img.example.com/a.jpg\n";
    // The options given with POST /upload-urls, stored when the URL was issued.
    let options = r#"{"webhook_url":"https://hooks.example/done","output_spec":{"format":"jpeg","quality":70}}"#;
    app.store
        .put(
            &pixpress_domain::storage_keys::pending_upload_key("acme", &request_id),
            Bytes::from(options),
            "application/json",
        )
        .await
        .unwrap();
    app.store
        .put(&key, Bytes::from(csv), "text/csv")
        .await
        .unwrap();
    let mut event = event();
    event.records[0].s3.object.key = Some(key.clone());
    let RecordOutcome::Ingested(ingested) = ingest_record(&app, &event.records[0]).await.unwrap()
    else {
        panic!("expected the presigned upload to be ingested");
    };
    assert_eq!(ingested.meta.request_id, request_id);
    assert_eq!(ingested.meta.tenant, "acme");
    assert_eq!(ingested.meta.output_spec.quality, 70);
    assert_eq!(
        ingested.meta.webhook.as_ref().map(|w| w.url.as_str()),
        Some("https://hooks.example/done")
    );
    // A second PUT to the same URL (a new object version) finds the request and adds nothing.
    event.records[0].s3.object.e_tag = Some("another-version".into());
    let RecordOutcome::Ingested(again) = ingest_record(&app, &event.records[0]).await.unwrap()
    else {
        panic!("expected the request to be found");
    };
    assert!(again.replayed);
    assert_eq!(app.queue.len().unwrap(), 1);
    let meta = app.repo.get_request(&request_id).await.unwrap().unwrap();
    assert_eq!(meta.source_key.as_deref(), Some(key.as_str()));
}

#[tokio::test]
async fn a_catalogue_is_validated_whole_then_fanned_out_in_chunks_that_create_every_row_once() {
    let app = fanned_out_app();
    let chunks = app.chunks.clone().unwrap();
    let csv = catalogue(50, None);
    app.store
        .put(KEY, Bytes::from(csv.clone()), "text/csv")
        .await
        .unwrap();
    let RecordOutcome::Ingested(ingested) = ingest_record(&app, &event().records[0]).await.unwrap()
    else {
        panic!("expected the catalogue to be ingested");
    };
    let request_id = ingested.meta.request_id.clone();
    assert_eq!(ingested.meta.status, RequestStatus::Processing);
    assert_eq!(
        (
            ingested.meta.counters.rows_total,
            ingested.meta.counters.images_total
        ),
        (50, 100)
    );
    // The validating invocation wrote no rows and sent no row jobs: 8 chunks of ≤ 7 rows.
    assert_eq!(app.queue.len().unwrap(), 0);
    assert_eq!(chunks.len().unwrap(), 8);
    // Every chunk expanded, then every chunk delivered again (a replay), and the S3 event too.
    let batch = received(&chunks);
    let response = handle_chunks(&app, LambdaEvent::new(batch.clone(), Context::default()))
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    handle_chunks(&app, LambdaEvent::new(batch, Context::default()))
        .await
        .unwrap();
    handle(&app, LambdaEvent::new(event(), Context::default()))
        .await
        .unwrap();
    let rows = load_all_rows(&app.repo, &request_id).await.unwrap();
    assert_eq!(rows.len(), 50, "each row exactly once");
    for (row, i) in rows.iter().zip(1u32..) {
        assert_eq!(row.index, i - 1);
        assert_eq!(row.serial, i.to_string());
        assert_eq!(row.product_name, format!("Product, {i}"));
        assert_eq!(
            row.input_urls,
            vec![
                format!("https://img.example.com/{i}a.jpg"),
                format!("https://img.example.com/{i}b.jpg")
            ]
        );
    }
    // The rows match what the same CSV gives through POST /uploads, row for row.
    let direct = pixpress_domain::input_csv::parse_input_csv(
        csv.as_bytes(),
        &app.config.csv,
        app.config.egress,
    )
    .unwrap();
    assert_eq!(direct.len(), rows.len());
    assert!(
        direct
            .iter()
            .zip(&rows)
            .all(|(d, r)| d.serial == r.serial && d.input_urls == r.input_urls)
    );
    // A replayed chunk re-sends its row jobs (a worker finds a recorded row and skips it);
    // the replayed S3 event sent no chunk job again (the 8 are the ones received above, never
    // deleted here).
    assert_eq!(app.queue.len().unwrap(), 100);
    assert_eq!(chunks.len().unwrap(), 8);
}

#[tokio::test]
async fn one_bad_row_near_the_end_of_a_catalogue_fails_it_whole_with_nothing_enqueued() {
    let app = fanned_out_app();
    let chunks = app.chunks.clone().unwrap();
    app.store
        .put(KEY, Bytes::from(catalogue(50, Some(45))), "text/csv")
        .await
        .unwrap();
    let RecordOutcome::Rejected { request_id, issues } =
        ingest_record(&app, &event().records[0]).await.unwrap()
    else {
        panic!("expected a rejection");
    };
    // Row 45 of the data sits on line 50: the header, then a blank line after every tenth row.
    assert_eq!(issues.len(), 1);
    assert_eq!(
        (issues[0].row, issues[0].code.as_str()),
        (Some(50), "unsupported_scheme")
    );
    assert_eq!(issues[0].column.as_deref(), Some("Input Image Urls"));
    let meta = app.repo.get_request(&request_id).await.unwrap().unwrap();
    assert_eq!(meta.status, RequestStatus::Failed);
    assert_eq!(meta.counters.rows_total, 0);
    assert!(app.queue.is_empty().unwrap());
    assert!(chunks.is_empty().unwrap());
    assert!(
        load_all_rows(&app.repo, &request_id)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn an_upload_replaced_while_its_chunks_wait_fails_the_request_instead_of_mixing_files() {
    let app = fanned_out_app();
    let chunks = app.chunks.clone().unwrap();
    let ingested = ingest_catalogue(&app, 20).await;
    // Another file of another length lands under the same key before the chunks run.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    app.store
        .put(KEY, Bytes::from(catalogue(30, None)), "text/csv")
        .await
        .unwrap();
    handle_chunks(
        &app,
        LambdaEvent::new(received(&chunks), Context::default()),
    )
    .await
    .unwrap();
    let meta = app
        .repo
        .get_request(&ingested.meta.request_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(meta.status, RequestStatus::Failed);
    assert_eq!(meta.failure.unwrap().code, "upload_changed");
    assert!(app.queue.is_empty().unwrap());
}

#[tokio::test]
async fn the_embedded_runner_expands_every_chunk_in_the_validating_invocation() {
    let mut app = app();
    app.config.chunk_rows = 7;
    let ingested = ingest_catalogue(&app, 50).await;
    assert_eq!(ingested.meta.status, RequestStatus::Processing);
    assert_eq!(app.queue.len().unwrap(), 50);
    let rows = load_all_rows(&app.repo, &ingested.meta.request_id)
        .await
        .unwrap();
    assert_eq!(rows.len(), 50);
}

/// Lambda's record of `event` given up after three invocations, as its on-failure destination
/// receives it, delivered from the ingest queue.
fn given_up(event: &S3Event) -> SqsEvent {
    let record = serde_json::json!({
        "version": "1.0",
        "timestamp": "2026-12-05T10:00:00.000Z",
        "requestContext": {
            "requestId": "e5e3b6a1-0000-4000-8000-000000000000",
            "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:s3-ingest:$LATEST",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": 3
        },
        "requestPayload": event,
        "responseContext": { "statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled" },
        "responsePayload": { "errorMessage": "Task timed out after 900.00 seconds" }
    });
    let mut message = SqsMessage::default();
    message.message_id = Some("given-up-1".into());
    message.body = Some(record.to_string());
    message
        .attributes
        .insert("ApproximateReceiveCount".into(), "1".into());
    let mut sqs = SqsEvent::default();
    sqs.records = vec![message];
    sqs
}

#[tokio::test]
async fn an_upload_event_lambda_gave_up_on_ends_its_request_failed_not_unknown() {
    // The upload's invocations all failed (timeouts, say): Lambda sends its record to the
    // ingest queue. The request the upload was to become ends FAILED saying why, so its id
    // answers with a reason instead of 404 forever.
    let ingest = fanned_out_app();
    let response = handle_chunks(
        &ingest,
        LambdaEvent::new(given_up(&event()), Context::default()),
    )
    .await
    .unwrap();
    assert!(response.batch_item_failures.is_empty());
    // The request id the upload names (derived from its bucket, key and version): what the
    // same event ingests into on a store that has the object.
    let other = app();
    other
        .store
        .put(KEY, Bytes::from("not a csv"), "text/csv")
        .await
        .unwrap();
    let RecordOutcome::Rejected { request_id, .. } =
        ingest_record(&other, &event().records[0]).await.unwrap()
    else {
        panic!("expected the upload's request id");
    };
    let meta = ingest.repo.get_request(&request_id).await.unwrap().unwrap();
    assert_eq!(meta.status, RequestStatus::Failed);
    let failure = meta.failure.unwrap();
    assert_eq!(failure.code, "ingest_failed");
    assert!(
        failure.message.contains("RetriesExhausted"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn a_dead_lettered_chunk_fails_its_request_instead_of_leaving_it_pending() {
    // Every delivery of a chunk job died before it could record anything (a timeout, a
    // crash): SQS moved it to the ingest dead-letter queue, which s3-ingest consumes too. The
    // request, still PENDING for rows that never come, ends FAILED naming the rows.
    const DLQ: &str = "arn:aws:sqs:us-east-1:123456789012:pixpress-IngestDeadLetterQueue";
    let mut ingest = fanned_out_app();
    ingest.dead_letter_queue_arn = Some(DLQ.to_owned());
    let now = chrono::Utc::now();
    let meta = pixpress_domain::model::RequestMeta::new("catalogue-9", "default", now);
    ingest.repo.create_request(&meta, &[]).await.unwrap();
    let job = pixpress_domain::model::ChunkJob {
        request_id: "catalogue-9".into(),
        tenant: "default".into(),
        key: "uploads/default/catalogue-9.csv".into(),
        etag: None,
        first_row: 7000,
        rows: 1000,
        start: 0,
        end: 1,
        start_line: 7002,
    };
    let mut message = SqsMessage::default();
    message.message_id = Some("dead-1".into());
    message.event_source_arn = Some(DLQ.to_owned());
    message.body = Some(serde_json::to_string(&job).unwrap());
    let mut event = SqsEvent::default();
    event.records = vec![message];
    let response = handle_chunks(&ingest, LambdaEvent::new(event, Context::default()))
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    let meta = ingest
        .repo
        .get_request("catalogue-9")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(meta.status, RequestStatus::Failed);
    let failure = meta.failure.unwrap();
    assert_eq!(failure.code, "ingest_failed");
    assert!(
        failure.message.contains("7001 to 8000"),
        "{}",
        failure.message
    );
}

/// A batch of one chunk message carrying `job`.
fn chunk_event(job: &pixpress_domain::model::ChunkJob) -> SqsEvent {
    let mut message = SqsMessage::default();
    message.message_id = Some(format!("chunk-{}", job.first_row));
    message.body = Some(serde_json::to_string(job).unwrap());
    message
        .attributes
        .insert("ApproximateReceiveCount".into(), "1".into());
    let mut event = SqsEvent::default();
    event.records = vec![message];
    event
}

/// A Lambda context with `seconds` left before its deadline.
fn context_with(seconds: u64) -> Context {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut context = Context::default();
    context.deadline = now_ms + seconds * 1000;
    context
}

#[tokio::test]
async fn a_chunk_its_deadline_would_cut_short_sends_the_rest_as_a_chunk_of_its_own() {
    let mut app = fanned_out_app();
    app.config.chunk_rows = 250;
    let chunks = app.chunks.clone().unwrap();
    let ingested = ingest_catalogue(&app, 250).await;
    let request_id = ingested.meta.request_id.clone();
    let take = |queue: &EmbeddedQueue| -> Vec<pixpress_domain::model::ChunkJob> {
        let messages = queue
            .receive(100, std::time::Duration::from_secs(600))
            .unwrap();
        for m in &messages {
            queue.delete(&m.receipt_handle).unwrap();
        }
        messages
            .iter()
            .map(|m| serde_json::from_str(&m.body).unwrap())
            .collect()
    };
    let mut pending = take(&chunks);
    assert_eq!(pending.len(), 1);
    // 5 s left, less than the margin a slice keeps: a slice of 100 rows, then the rest goes
    // back to the ingest queue as its own chunk, twice; with time enough the last one ends.
    let mut firsts = Vec::new();
    for seconds in [5, 5, 0] {
        let job = pending.pop().unwrap();
        firsts.push((job.first_row, job.rows));
        let context = if seconds == 0 {
            Context::default()
        } else {
            context_with(seconds)
        };
        let response = handle_chunks(&app, LambdaEvent::new(chunk_event(&job), context))
            .await
            .unwrap();
        assert!(response.batch_item_failures.is_empty());
        pending = take(&chunks);
    }
    assert_eq!(firsts, [(0, 250), (100, 150), (200, 50)]);
    assert!(pending.is_empty());
    let rows = load_all_rows(&app.repo, &request_id).await.unwrap();
    assert_eq!(rows.len(), 250);
    assert!(
        rows.iter()
            .zip(1u32..)
            .all(|(row, i)| row.serial == i.to_string() && row.index == i - 1),
        "every row once, in order, from the right bytes"
    );
    assert_eq!(app.queue.len().unwrap(), 250, "every row job sent once");
}

/// Throttles every DynamoDB transaction and write while `on`, as a hot partition does.
#[derive(Debug, Default)]
struct Throttled {
    on: std::sync::atomic::AtomicBool,
}

impl pixpress_embedded::FaultInjector for Throttled {
    fn before(&self, call: pixpress_embedded::Call) -> Option<pixpress_embedded::InjectedFault> {
        let write = matches!(
            call,
            pixpress_embedded::Call::Transaction | pixpress_embedded::Call::Write
        );
        (write && self.on.load(std::sync::atomic::Ordering::SeqCst))
            .then_some(pixpress_embedded::InjectedFault::Throttle)
    }

    fn duplicate_delivery(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn a_throttled_chunk_comes_back_after_a_backoff_not_the_visibility_timeout() {
    let throttle = std::sync::Arc::new(Throttled::default());
    let mut app = fanned_out_app();
    app.config.chunk_rows = 100;
    app.config.redelivery = pixpress_app::retry::RedeliveryBackoff {
        first: std::time::Duration::from_secs(1),
        factor: 1,
        cap: std::time::Duration::from_secs(1),
    };
    app.repo = EmbeddedRequestRepository::new()
        .with_faults(throttle.clone())
        .with_retry(pixpress_app::retry::RetryPolicy::NONE);
    let chunks = app.chunks.clone().unwrap();
    let ingested = ingest_catalogue(&app, 20).await;
    // Received as Lambda's poller receives from the ingest queue (visibility 5,400 s).
    let visibility = std::time::Duration::from_secs(5400);
    throttle.on.store(true, std::sync::atomic::Ordering::SeqCst);
    let first = chunks.receive(10, visibility).unwrap();
    assert_eq!(first.len(), 1);
    let response = handle_chunks(&app, LambdaEvent::new(event_of(first), Context::default()))
        .await
        .unwrap();
    assert_eq!(response.batch_item_failures.len(), 1);

    throttle
        .on
        .store(false, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let again = chunks.receive(10, visibility).unwrap();
    assert_eq!(again.len(), 1, "the chunk is not back within the backoff");
    let response = handle_chunks(&app, LambdaEvent::new(event_of(again), Context::default()))
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    let rows = load_all_rows(&app.repo, &ingested.meta.request_id)
        .await
        .unwrap();
    assert_eq!(rows.len(), 20);
}
