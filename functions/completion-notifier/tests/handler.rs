//! completion-notifier handler tests fed from `events/completion-notifier/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pixpress_app::ports::OutputLedger as _;
use pixpress_app::ports::RequestIntake as _;
use pixpress_app::ports::RequestReader as _;
use pixpress_app::ports::RowLedger as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::event::dynamodb::Event;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::Utc;
use lambda_runtime::{Context, LambdaEvent};
use pixpress_app::config::Config;
use pixpress_app::deadline::Deadline;
use pixpress_app::ports::{NoQueue, ObjectStore};
use pixpress_completion_notifier::{App, handle};
use pixpress_domain::model::{
    Counters, DeliveryState, ImageOutcome, RequestMeta, RequestStatus, RowRecord, RowState, Webhook,
};
use pixpress_domain::webhook::WebhookSecret;
use pixpress_embedded::{DirObjectStore, EmbeddedRequestRepository, FileKeyStore};
use pixpress_test_support::manifest_dir;

const REQUEST_ID: &str = "3b241101-e2bb-4255-8caf-4136c566a962";

type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

async fn receiver(status: StatusCode) -> (SocketAddr, Received) {
    let received: Received = Arc::default();
    let router =
        Router::new()
            .route(
                "/hook",
                post(
                    |State((r, s)): State<(Received, StatusCode)>,
                     headers: HeaderMap,
                     body: Bytes| async move {
                        r.lock().unwrap().push((headers, body));
                        s
                    },
                ),
            )
            .with_state((received.clone(), status));
    let addr = pixpress_test_support::serve(router).await;
    (addr, received)
}

fn event(name: &str) -> Event {
    let path = format!("{}/../../events/completion-notifier/{name}", manifest_dir());
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn app_with_completed_request(
    webhook_url: Option<String>,
    secret: &WebhookSecret,
) -> App<EmbeddedRequestRepository, DirObjectStore, NoQueue, FileKeyStore> {
    let mut config = Config::default();
    config.fetch.policy = pixpress_fetch::NetworkPolicy::local();
    config.webhook_secret = Some(secret.clone());
    config.webhook_backoff = Duration::from_millis(10);
    let dir = std::env::temp_dir().join(format!("pixpress-notifier-{}", uuid::Uuid::new_v4()));
    let app = App::new(
        None::<FileKeyStore>,
        EmbeddedRequestRepository::new(),
        DirObjectStore::new(dir, None).unwrap(),
        &config,
    )
    .unwrap();
    let now = Utc::now();
    let meta = RequestMeta {
        status: RequestStatus::Processing,
        counters: Counters {
            rows_total: 1,
            images_total: 2,
            ..Counters::default()
        },
        webhook: webhook_url.map(|url| Webhook {
            url,
            state: DeliveryState::Pending,
            attempts: vec![],
        }),
        ..RequestMeta::new(REQUEST_ID, "default", now)
    };
    let row = RowRecord {
        index: 0,
        serial: "1.".into(),
        product_name: "SKU1".into(),
        input_urls: vec![
            "http://169.254.169.254/latest/meta-data/".into(),
            "http://10.0.0.1/internal.jpg".into(),
        ],
        state: RowState::Pending,
        images: vec![],
        progress: Vec::new(),
    };
    app.repo.create_request(&meta, &[row]).await.unwrap();
    let failed = ImageOutcome::failed("blocked_address", "blocked");
    app.repo
        .record_row_outcome(REQUEST_ID, 0, &[failed.clone(), failed], now)
        .await
        .unwrap();
    app.repo.complete(REQUEST_ID, now).await.unwrap();
    app
}

#[tokio::test]
async fn terminal_transition_writes_the_output_csv_and_one_signed_webhook() {
    let (addr, received) = receiver(StatusCode::NO_CONTENT).await;
    let secret = WebhookSecret::from_bytes(b"notifier-test-secret");
    let app = app_with_completed_request(Some(format!("http://{addr}/hook")), &secret).await;
    handle(
        &app,
        LambdaEvent::new(event("terminal-transition.json"), Context::default()),
    )
    .await
    .unwrap();
    // A replayed stream record rewrites nothing new and does not deliver again.
    handle(
        &app,
        LambdaEvent::new(event("terminal-transition.json"), Context::default()),
    )
    .await
    .unwrap();
    let meta = app.repo.get_request(REQUEST_ID).await.unwrap().unwrap();
    let key = meta.output_csv_key.clone().unwrap();
    let csv = app.store.get(&key, 1 << 20).await.unwrap().unwrap();
    let text = String::from_utf8(csv.bytes.to_vec()).unwrap();
    assert!(text.starts_with("S. No.,Product Name,Input Image Urls,Output Image Urls"));
    assert!(text.contains("FAILED, FAILED"));
    assert!(text.contains("blocked_address, blocked_address"));
    let deliveries = received.lock().unwrap().clone();
    assert_eq!(deliveries.len(), 1);
    let (headers, body) = &deliveries[0];
    let h = |n: &str| headers.get(n).unwrap().to_str().unwrap().to_owned();
    secret
        .verify(
            &h("webhook-id"),
            &h("webhook-timestamp"),
            &h("webhook-signature"),
            body,
            Utc::now(),
        )
        .unwrap();
    let payload: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(payload["type"], "request.completed");
    assert_eq!(payload["data"]["status"], "COMPLETED_WITH_ERRORS");
    assert_eq!(meta.webhook.unwrap().state, DeliveryState::Delivered);
}

#[tokio::test]
async fn failing_receiver_is_retried_with_every_attempt_recorded() {
    let (addr, received) = receiver(StatusCode::INTERNAL_SERVER_ERROR).await;
    let secret = WebhookSecret::from_bytes(b"k");
    let app = app_with_completed_request(Some(format!("http://{addr}/hook")), &secret).await;
    handle(
        &app,
        LambdaEvent::new(event("terminal-transition.json"), Context::default()),
    )
    .await
    .unwrap();
    assert_eq!(received.lock().unwrap().len(), 3);
    let webhook = app
        .repo
        .get_request(REQUEST_ID)
        .await
        .unwrap()
        .unwrap()
        .webhook
        .unwrap();
    assert_eq!(webhook.state, DeliveryState::Failed);
    let codes: Vec<_> = webhook.attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, vec![Some(500); 3]);
}

#[tokio::test]
async fn non_terminal_transitions_are_ignored() {
    let secret = WebhookSecret::from_bytes(b"k");
    let app = app_with_completed_request(None, &secret).await;
    handle(
        &app,
        LambdaEvent::new(event("non-terminal-transition.json"), Context::default()),
    )
    .await
    .unwrap();
    let meta = app.repo.get_request(REQUEST_ID).await.unwrap().unwrap();
    assert_eq!(meta.output_csv_key, None);
}

/// A tenant's own secret signs its deliveries (not the deployment's); with no secret at all
/// nothing is sent unsigned.
#[tokio::test]
async fn deliveries_are_signed_with_the_tenants_secret_and_never_unsigned() {
    use pixpress_embedded::FileKeyStore;

    let (addr, received) = receiver(StatusCode::NO_CONTENT).await;
    let deployment = WebhookSecret::from_bytes(b"deployment-secret");
    let mut app =
        app_with_completed_request(Some(format!("http://{addr}/hook")), &deployment).await;
    let dir = std::env::temp_dir().join(format!("pixpress-keys-{}", uuid::Uuid::new_v4()));
    let keys = FileKeyStore::in_dir(&dir);
    let (_, tenant) = pixpress_app::auth::create_key(&keys, "default", Utc::now())
        .await
        .unwrap();
    app.keys = Some(keys);
    handle(
        &app,
        LambdaEvent::new(event("terminal-transition.json"), Context::default()),
    )
    .await
    .unwrap();
    let deliveries = received.lock().unwrap().clone();
    assert_eq!(deliveries.len(), 1);
    let (headers, body) = &deliveries[0];
    let h = |n: &str| headers.get(n).unwrap().to_str().unwrap().to_owned();
    let verify = |secret: &WebhookSecret| {
        secret.verify(
            &h("webhook-id"),
            &h("webhook-timestamp"),
            &h("webhook-signature"),
            body,
            Utc::now(),
        )
    };
    assert_eq!(
        verify(&WebhookSecret::parse(&tenant.webhook_secret).unwrap()),
        Ok(())
    );
    assert!(verify(&deployment).is_err());
    std::fs::remove_dir_all(&dir).unwrap();

    let (addr, received) = receiver(StatusCode::NO_CONTENT).await;
    let mut unsigned =
        app_with_completed_request(Some(format!("http://{addr}/hook")), &deployment).await;
    unsigned.config.webhook_secret = None;
    handle(
        &unsigned,
        LambdaEvent::new(event("terminal-transition.json"), Context::default()),
    )
    .await
    .unwrap();
    assert!(received.lock().unwrap().is_empty(), "nothing sent unsigned");
    let webhook = unsigned
        .repo
        .get_request(REQUEST_ID)
        .await
        .unwrap()
        .unwrap()
        .webhook
        .unwrap();
    assert_eq!(webhook.state, DeliveryState::Failed);
    assert_eq!(
        webhook.attempts[0].error.as_deref(),
        Some("no_signing_secret")
    );
}

/// A request of more rows than one page is written page by page, in parts, and reads exactly
/// as the whole CSV written at once.
/// `n` pending rows of two image URLs each, product names from `name`.
/// The notifier delivering webhooks itself (no queue), signing with a test secret, allowed to
/// reach loopback receivers, on an empty repository and a fresh directory store.
fn inline_app() -> App<EmbeddedRequestRepository, DirObjectStore, NoQueue, FileKeyStore> {
    let config = Config {
        webhook_secret: Some(WebhookSecret::from_bytes(b"k")),
        fetch: pixpress_fetch::FetchConfig {
            policy: pixpress_fetch::NetworkPolicy::local(),
            ..pixpress_fetch::FetchConfig::default()
        },
        ..Config::default()
    };
    let dir = std::env::temp_dir().join(format!("pixpress-notifier-{}", uuid::Uuid::new_v4()));
    App::new(
        None::<FileKeyStore>,
        EmbeddedRequestRepository::new(),
        DirObjectStore::new(&dir, None).unwrap(),
        &config,
    )
    .unwrap()
}

fn pending_rows(n: u32, name: impl Fn(u32) -> String) -> Vec<RowRecord> {
    (0..n)
        .map(|i| RowRecord {
            index: i,
            serial: (i + 1).to_string(),
            product_name: name(i),
            input_urls: vec![
                format!("https://img.example.com/{i}/a.jpg"),
                format!("https://img.example.com/{i}/b.jpg"),
            ],
            state: RowState::Pending,
            images: Vec::new(),
            progress: Vec::new(),
        })
        .collect()
}

/// The request `request_id` of `rows` in `status`.
fn large_request(
    request_id: &str,
    rows: &[RowRecord],
    status: RequestStatus,
    webhook: Option<Webhook>,
) -> RequestMeta {
    let now = Utc::now();
    RequestMeta {
        status,
        counters: Counters {
            rows_total: rows.len() as u64,
            images_total: 2 * rows.len() as u64,
            ..Counters::default()
        },
        webhook,
        completed_at: status.is_terminal().then_some(now),
        ..RequestMeta::new(request_id, "default", now)
    }
}

#[tokio::test]
async fn a_large_output_csv_is_streamed_in_pages_and_equals_the_csv_written_at_once() {
    use pixpress_domain::output_csv::write_output_csv;

    let config = Config {
        webhook_secret: Some(WebhookSecret::from_bytes(b"k")),
        ..Config::default()
    };
    let dir = std::env::temp_dir().join(format!("pixpress-notifier-{}", uuid::Uuid::new_v4()));
    let app = App::new(
        None::<FileKeyStore>,
        EmbeddedRequestRepository::new(),
        DirObjectStore::new(&dir, None).unwrap(),
        &config,
    )
    .unwrap();
    let rows = pending_rows(2_345, |i| format!("=Product \"{i}\", with a comma"));
    let meta = large_request("large-1", &rows, RequestStatus::Processing, None);
    app.repo.create_request(&meta, &rows).await.unwrap();
    let notified = pixpress_completion_notifier::notify(&app, "large-1", Deadline::NONE)
        .await
        .unwrap();
    let key = notified.output_csv_key.unwrap();
    let stored = app.store.get(&key, u64::MAX).await.unwrap().unwrap();
    assert!(stored.bytes[..] == write_output_csv(&rows).unwrap()[..]);
    std::fs::remove_dir_all(&dir).ok();
}

/// An output CSV that one invocation cannot finish in time is paused on a part boundary with
/// its progress on the request item, continued by the next invocations, and ends byte-identical
/// to the CSV written at once; the webhook waits for it.
#[tokio::test]
async fn an_output_csv_out_of_time_pauses_and_the_next_invocations_finish_it() {
    use pixpress_completion_notifier::notify;
    use pixpress_domain::output_csv::write_output_csv;

    let (addr, received) = receiver(StatusCode::OK).await;
    let app = inline_app();
    // About 14 MB of CSV: two parts of at least 5 MiB, then the rest.
    let rows = pending_rows(40_000, |i| format!("Product {i} {}", "x".repeat(200)));
    let webhook = Webhook {
        url: format!("http://{addr}/hook"),
        state: DeliveryState::Pending,
        attempts: Vec::new(),
    };
    let meta = large_request(
        "catalogue-1",
        &rows,
        RequestStatus::Completed,
        Some(webhook),
    );
    app.repo.create_request(&meta, &rows).await.unwrap();
    app.repo.drain_changes().unwrap();
    // Every invocation is already past its deadline: each writes one part and pauses.
    let out_of_time = || Deadline::after(Duration::ZERO);
    let first = notify(&app, "catalogue-1", out_of_time()).await.unwrap();
    let paused = first.paused_after_row.expect("paused after the first part");
    assert!(first.output_csv_key.is_none() && first.webhook.is_none());
    assert!(
        received.lock().unwrap().is_empty(),
        "no webhook before the CSV"
    );
    // The saved progress is a change of the request item the stream filter passes.
    let changes = app.repo.drain_changes().unwrap();
    assert_eq!(changes.len(), 1);
    assert!(changes[0].new_image.contains_key("output_progress"));
    let progress = app
        .repo
        .output_progress("catalogue-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((progress.parts.len(), progress.after_row), (1, paused));
    let second = notify(&app, "catalogue-1", out_of_time()).await.unwrap();
    assert!(second.paused_after_row.unwrap() > paused);
    let mut invocations = 2;
    let done = loop {
        let notified = notify(&app, "catalogue-1", out_of_time()).await.unwrap();
        invocations += 1;
        if notified.paused_after_row.is_none() {
            break notified;
        }
        assert!(invocations < 10, "never finished");
    };
    assert!(invocations >= 3);
    let stored = app
        .store
        .get(&done.output_csv_key.unwrap(), u64::MAX)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.bytes[..] == write_output_csv(&rows).unwrap()[..]);
    assert_eq!(done.webhook, Some(DeliveryState::Delivered));
    assert_eq!(received.lock().unwrap().len(), 1);
    assert!(
        app.repo
            .output_progress("catalogue-1")
            .await
            .unwrap()
            .is_none()
    );
    std::fs::remove_dir_all(app.store.root()).ok();
}

/// A receiver that answers `status` with `Retry-After: retry_after` and records when each
/// attempt arrived.
async fn answering(
    status: StatusCode,
    retry_after: &'static str,
) -> (SocketAddr, Arc<Mutex<Vec<std::time::Instant>>>) {
    let arrivals: Arc<Mutex<Vec<std::time::Instant>>> = Arc::default();
    let seen = arrivals.clone();
    let router = Router::new().route(
        "/hook",
        post(move || {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(std::time::Instant::now());
                (status, [("retry-after", retry_after)])
            }
        }),
    );
    let addr = pixpress_test_support::serve(router).await;
    (addr, arrivals)
}

/// 410 Gone: no retry, and the tenant's endpoint is disabled for later requests; 429 with
/// Retry-After: the next attempt waits as asked.
#[tokio::test]
async fn gone_disables_the_endpoint_and_retry_after_is_honoured() {
    use pixpress_app::auth::KeyStore as _;
    use pixpress_embedded::FileKeyStore;

    let (gone, arrivals) = answering(StatusCode::GONE, "0").await;
    let secret = WebhookSecret::from_bytes(b"k");
    let url = format!("http://{gone}/hook");
    let mut app = app_with_completed_request(Some(url.clone()), &secret).await;
    let dir = std::env::temp_dir().join(format!("pixpress-keys-{}", uuid::Uuid::new_v4()));
    let keys = FileKeyStore::in_dir(&dir);
    pixpress_app::auth::create_key(&keys, "default", Utc::now())
        .await
        .unwrap();
    app.keys = Some(keys.clone());
    handle(
        &app,
        LambdaEvent::new(event("terminal-transition.json"), Context::default()),
    )
    .await
    .unwrap();
    assert_eq!(arrivals.lock().unwrap().len(), 1, "410 is not retried");
    let tenant = keys.get_tenant("default").await.unwrap().unwrap();
    assert_eq!(tenant.disabled_webhook_urls, vec![url.clone()]);
    // Another request to the same endpoint sends nothing.
    let mut again = app_with_completed_request(Some(url), &secret).await;
    again.keys = Some(keys);
    handle(
        &again,
        LambdaEvent::new(event("terminal-transition.json"), Context::default()),
    )
    .await
    .unwrap();
    assert_eq!(arrivals.lock().unwrap().len(), 1);
    let webhook = again
        .repo
        .get_request(REQUEST_ID)
        .await
        .unwrap()
        .unwrap()
        .webhook
        .unwrap();
    assert_eq!(
        webhook.attempts[0].error.as_deref(),
        Some("endpoint_disabled")
    );
    std::fs::remove_dir_all(&dir).ok();

    let (busy, arrivals) = answering(StatusCode::TOO_MANY_REQUESTS, "1").await;
    let app = app_with_completed_request(Some(format!("http://{busy}/hook")), &secret).await;
    handle(
        &app,
        LambdaEvent::new(event("terminal-transition.json"), Context::default()),
    )
    .await
    .unwrap();
    let times = arrivals.lock().unwrap().clone();
    assert_eq!(times.len(), 3);
    assert!(
        times[1] - times[0] >= Duration::from_millis(950),
        "the second attempt came {:?} after the first",
        times[1] - times[0]
    );
}

#[tokio::test]
async fn an_output_csv_completed_by_an_invocation_that_died_before_recording_it_is_recorded_not_resumed()
 {
    // An invocation completed the multipart upload, then died before recording the CSV: the
    // request still holds progress naming an upload S3 no longer has. The next invocation
    // recognises the finished object and records it, instead of failing `NoSuchUpload` on
    // every retry until the record goes to the failure queue.
    use pixpress_completion_notifier::notify;
    use pixpress_domain::model::{OutputPart, OutputProgress};
    use pixpress_domain::output_csv::write_output_csv;
    use pixpress_domain::storage_keys::output_csv_key;

    let (addr, received) = receiver(StatusCode::OK).await;
    let app = inline_app();
    let rows = pending_rows(3, |i| format!("Product {i}"));
    let webhook = Webhook {
        url: format!("http://{addr}/hook"),
        state: DeliveryState::Pending,
        attempts: Vec::new(),
    };
    let meta = large_request("finished-1", &rows, RequestStatus::Completed, Some(webhook));
    app.repo.create_request(&meta, &rows).await.unwrap();
    let key = output_csv_key(&meta.tenant, "finished-1");
    let csv = write_output_csv(&rows).unwrap();
    app.store
        .put(&key, csv.clone().into(), "text/csv")
        .await
        .unwrap();
    let progress = OutputProgress {
        key: key.clone(),
        upload_id: "completed-and-gone".into(),
        parts: vec![OutputPart {
            number: 1,
            tag: "etag-1".into(),
        }],
        after_row: 1,
    };
    app.repo
        .record_output_progress("finished-1", &progress)
        .await
        .unwrap();
    let notified = notify(&app, "finished-1", Deadline::NONE).await.unwrap();
    assert_eq!(notified.output_csv_key.as_deref(), Some(key.as_str()));
    assert_eq!(notified.webhook, Some(DeliveryState::Delivered));
    assert_eq!(received.lock().unwrap().len(), 1);
    let stored = app.store.get(&key, u64::MAX).await.unwrap().unwrap();
    assert!(
        stored.bytes[..] == csv[..],
        "the finished CSV is kept as it is"
    );
    assert!(
        app.repo
            .output_progress("finished-1")
            .await
            .unwrap()
            .is_none()
    );
}

/// A stream record of request `id` entering COMPLETED, with `sequence`.
fn completed_record(id: &str, sequence: &str) -> serde_json::Value {
    let image = |status: &str| {
        serde_json::json!({
            "pk": { "S": format!("REQ#{id}") }, "sk": { "S": "META" }, "status": { "S": status }
        })
    };
    serde_json::json!({
        "eventID": sequence, "eventName": "MODIFY", "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "Keys": { "pk": { "S": format!("REQ#{id}") }, "sk": { "S": "META" } },
            "NewImage": image("COMPLETED"), "OldImage": image("PROCESSING"),
            "SequenceNumber": sequence, "SizeBytes": 100, "StreamViewType": "NEW_AND_OLD_IMAGES"
        }
    })
}

#[tokio::test]
async fn a_record_that_fails_is_the_batch_item_failure_and_the_records_before_it_stay_done() {
    // Three requests complete in one stream batch; the second's output CSV cannot be stored
    // (its key is longer than S3 allows). The response names that record, so Lambda retries
    // from it: the first is done and not handled again, the third waits for the retry.
    let app = inline_app();
    let now = Utc::now();
    for (id, tenant) in [
        ("a", "default".to_owned()),
        ("b", "t".repeat(1100)),
        ("c", "default".to_owned()),
    ] {
        let meta = RequestMeta {
            status: RequestStatus::Completed,
            completed_at: Some(now),
            ..RequestMeta::new(id, tenant, now)
        };
        app.repo.create_request(&meta, &[]).await.unwrap();
    }
    let event: Event = serde_json::from_value(serde_json::json!({
        "Records": [completed_record("a", "1"), completed_record("b", "2"), completed_record("c", "3")]
    }))
    .unwrap();
    let response = handle(&app, LambdaEvent::new(event, Context::default()))
        .await
        .unwrap();
    let failed: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_deref())
        .collect();
    assert_eq!(failed, [Some("2")]);
    let csv_of = |id: &'static str| {
        let repo = &app.repo;
        async move { repo.get_request(id).await.unwrap().unwrap().output_csv_key }
    };
    assert!(
        csv_of("a").await.is_some(),
        "the record before the failure is done"
    );
    assert!(csv_of("b").await.is_none());
    assert!(
        csv_of("c").await.is_none(),
        "the record after it waits for the retry"
    );
}
