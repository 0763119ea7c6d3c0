//! The sweeper brings requests that lost an event to an end, and leaves busy ones alone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use chrono::Utc;
use pixpress_app::config::Config;
use pixpress_app::deadline::Deadline;
use pixpress_app::ports::{
    ObjectStore as _, OutputLedger as _, RequestIntake as _, RequestReader as _, RowLedger as _,
};
use pixpress_app::sweep::{INGEST_INCOMPLETE, ROWS_MISSING, Repair, SweepConfig, sweep};
use pixpress_domain::model::{
    Counters, DeliveryState, Failure, ImageOutcome, RequestMeta, RequestStatus, RowJob, RowRecord,
    RowState, Webhook, WebhookAttempt, WebhookJob,
};
use pixpress_embedded::{DirObjectStore, EmbeddedQueue, EmbeddedRequestRepository, FileKeyStore};
use pixpress_sweeper::{App, run};

type Sweeper =
    App<EmbeddedRequestRepository, EmbeddedQueue, DirObjectStore, EmbeddedQueue, FileKeyStore>;

/// A sweeper over fresh embedded backends; `idle` and `ingest_idle` in seconds.
fn sweeper(idle: i64, ingest_idle: i64) -> (Sweeper, EmbeddedQueue) {
    let config = Config {
        sweep: SweepConfig {
            idle: chrono::Duration::seconds(idle),
            ingest_idle: chrono::Duration::seconds(ingest_idle),
        },
        ..Config::default()
    };
    let dir = std::env::temp_dir().join(format!("pixpress-sweeper-{}", uuid::Uuid::new_v4()));
    let webhooks = EmbeddedQueue::new(16);
    let notifier = pixpress_delivery::App::new(
        None::<FileKeyStore>,
        EmbeddedRequestRepository::new(),
        DirObjectStore::new(dir, None).unwrap(),
        &config,
    )
    .unwrap()
    .with_webhooks(Some(webhooks.clone()));
    (App::new(notifier, EmbeddedQueue::new(5), &config), webhooks)
}

fn rows(n: u32) -> Vec<RowRecord> {
    (0..n)
        .map(|i| RowRecord {
            index: i,
            serial: format!("{}.", i + 1),
            product_name: format!("SKU {i}"),
            input_urls: vec![format!("https://img.example.com/{i}.jpg")],
            state: RowState::Pending,
            images: vec![],
            progress: Vec::new(),
        })
        .collect()
}

/// Request `id` with `total` rows of which `written` have row items, created `age` ago.
async fn create(app: &Sweeper, id: &str, total: u32, written: u32, age: chrono::Duration) {
    let created = Utc::now() - age;
    let meta = RequestMeta {
        counters: Counters::new(u64::from(total), u64::from(total)),
        webhook: Some(Webhook::pending("https://hooks.example.com/x".to_owned())),
        ..RequestMeta::new(id.to_owned(), "default", created)
    };
    app.notifier
        .repo
        .create_request(&meta, &rows(written))
        .await
        .unwrap();
}

fn queued_rows(queue: &EmbeddedQueue) -> Vec<u32> {
    let mut rows: Vec<u32> = queue
        .receive(100, Duration::from_secs(30))
        .unwrap()
        .iter()
        .map(|m| serde_json::from_str::<RowJob>(&m.body).unwrap().row_index)
        .collect();
    rows.sort_unstable();
    rows
}

async fn status(app: &Sweeper, id: &str) -> RequestMeta {
    app.notifier.repo.get_request(id).await.unwrap().unwrap()
}

#[tokio::test]
async fn a_request_whose_rows_were_never_enqueued_is_enqueued_and_runs() {
    let (app, _) = sweeper(0, 0);
    // The API recorded the request and died before enqueueing its rows; no retry came.
    create(&app, "stuck-pending", 3, 3, chrono::Duration::hours(3)).await;
    let swept = run(&app, Deadline::NONE).await.unwrap();
    assert_eq!(
        swept.repairs,
        [("stuck-pending".to_owned(), Repair::Enqueued { rows: 3 })]
    );
    assert_eq!(queued_rows(&app.rows), [0, 1, 2]);
    assert_eq!(
        status(&app, "stuck-pending").await.status,
        RequestStatus::Processing
    );
}

#[tokio::test]
async fn a_lost_completion_is_completed_then_notified_then_settled() {
    let (app, webhooks) = sweeper(0, 0);
    create(&app, "lost-flip", 2, 2, chrono::Duration::hours(3)).await;
    let repo = &app.notifier.repo;
    repo.mark_processing("lost-flip", Utc::now()).await.unwrap();
    for index in 0..2 {
        let image = ImageOutcome::failed("http_404", "not found");
        repo.record_row_outcome("lost-flip", index, &[image], Utc::now())
            .await
            .unwrap();
    }
    // The worker that recorded the last row died before `complete`.
    assert_eq!(
        status(&app, "lost-flip").await.status,
        RequestStatus::Processing
    );

    let first = run(&app, Deadline::NONE).await.unwrap();
    assert_eq!(
        first.repairs,
        [(
            "lost-flip".to_owned(),
            Repair::Completed(RequestStatus::CompletedWithErrors)
        )]
    );
    // The stream record of that flip is lost too: the next sweep does the notifier's work.
    let second = run(&app, Deadline::NONE).await.unwrap();
    assert_eq!(second.repairs, [("lost-flip".to_owned(), Repair::Notified)]);
    let meta = status(&app, "lost-flip").await;
    let key = meta.output_csv_key.expect("the output CSV is recorded");
    let csv = app
        .notifier
        .store
        .get(&key, 1 << 20)
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(csv.bytes.to_vec()).unwrap();
    assert!(text.contains("http_404"), "{text}");
    let jobs = webhooks.receive(10, Duration::from_secs(30)).unwrap();
    assert_eq!(jobs.len(), 1);
    let job: WebhookJob = serde_json::from_str(&jobs[0].body).unwrap();
    assert_eq!(job.request_id, "lost-flip");

    // Once the sender has made its attempt, the request is settled and never examined again.
    let attempt = WebhookAttempt {
        at: Utc::now(),
        status_code: Some(204),
        error: None,
    };
    repo.record_webhook_attempt("lost-flip", &attempt, DeliveryState::Delivered, 0)
        .await
        .unwrap();
    let third = run(&app, Deadline::NONE).await.unwrap();
    assert_eq!((third.examined, third.settled), (1, 1));
    assert!(third.repairs.is_empty());
    let fourth = run(&app, Deadline::NONE).await.unwrap();
    assert_eq!(
        fourth.examined, 0,
        "a settled request leaves the open requests"
    );
}

#[tokio::test]
async fn a_request_whose_rows_never_arrived_fails_after_the_ingest_bound() {
    // 5 rows validated, 2 written: the chunk with the others was lost.
    let (patient, _) = sweeper(0, 8 * 3600);
    create(&patient, "gap", 5, 2, chrono::Duration::hours(3)).await;
    let swept = run(&patient, Deadline::NONE).await.unwrap();
    assert!(swept.repairs.is_empty(), "{swept:?}");
    assert_eq!(status(&patient, "gap").await.status, RequestStatus::Pending);
    assert!(
        queued_rows(&patient.rows).is_empty(),
        "rows of an incomplete request stay put"
    );

    let (app, _) = sweeper(0, 2 * 3600);
    create(&app, "gap", 5, 2, chrono::Duration::hours(3)).await;
    let swept = run(&app, Deadline::NONE).await.unwrap();
    assert_eq!(
        swept.repairs,
        [("gap".to_owned(), Repair::FailedRowsMissing { missing: 3 })]
    );
    let meta = status(&app, "gap").await;
    assert_eq!(meta.status, RequestStatus::Failed);
    let failure: Failure = meta.failure.unwrap();
    assert_eq!(failure.code, ROWS_MISSING);
    assert!(
        failure.message.starts_with("3 of the 5 rows"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn busy_and_recent_requests_are_left_alone() {
    let (app, _) = sweeper(2 * 3600, 8 * 3600);
    // Created a minute ago: not idle yet, whatever its state.
    create(&app, "recent", 2, 2, chrono::Duration::minutes(1)).await;
    let swept = run(&app, Deadline::NONE).await.unwrap();
    assert_eq!(swept.examined, 0);
    assert!(queued_rows(&app.rows).is_empty());
    assert_eq!(status(&app, "recent").await.status, RequestStatus::Pending);
}

#[tokio::test]
async fn a_request_that_stops_moving_is_repaired_one_idle_bound_after_its_last_row() {
    let (app, _) = sweeper(2 * 3600, 8 * 3600);
    let repo = &app.notifier.repo;
    create(&app, "stalled", 3, 3, chrono::Duration::hours(5)).await;
    repo.mark_processing("stalled", Utc::now()).await.unwrap();
    repo.record_row_outcome(
        "stalled",
        1,
        &[ImageOutcome::failed("http_404", "x")],
        Utc::now(),
    )
    .await
    .unwrap();
    let now = Utc::now();
    let at = |minutes: i64| now + chrono::Duration::minutes(minutes);
    let sweep_at = |when| {
        sweep(
            repo,
            &app.rows,
            &app.config,
            when,
            Deadline::NONE,
            |_| async { Ok(()) },
        )
    };
    // The first look notes one row done; an hour later nothing has moved, but not for 2 h.
    assert!(sweep_at(at(0)).await.unwrap().repairs.is_empty());
    assert!(sweep_at(at(60)).await.unwrap().repairs.is_empty());
    assert!(queued_rows(&app.rows).is_empty());
    let swept = sweep_at(at(121)).await.unwrap();
    assert_eq!(
        swept.repairs,
        [("stalled".to_owned(), Repair::Enqueued { rows: 2 })]
    );
    assert_eq!(queued_rows(&app.rows), [0, 2], "only the unrecorded rows");
    assert!(
        sweep_at(at(122)).await.unwrap().repairs.is_empty(),
        "the rows sent get a whole idle bound"
    );
    // A row recorded since starts a new wait.
    repo.record_row_outcome(
        "stalled",
        0,
        &[ImageOutcome::failed("http_404", "x")],
        at(130),
    )
    .await
    .unwrap();
    assert!(sweep_at(at(131)).await.unwrap().repairs.is_empty());
    assert!(sweep_at(at(240)).await.unwrap().repairs.is_empty());
    assert_eq!(
        sweep_at(at(252)).await.unwrap().repairs,
        [("stalled".to_owned(), Repair::Enqueued { rows: 1 })]
    );
}

#[tokio::test]
async fn a_request_whose_creation_never_finished_fails_and_shows() {
    let (app, _) = sweeper(0, 8 * 3600);
    let repo = &app.notifier.repo;
    // Every attempt at this upload stopped after its request item (a row DynamoDB refuses
    // stands in for a crash): invisible, and nothing else would ever end it.
    let mut rows = rows(2);
    rows[1].product_name = "p".repeat(450 * 1024);
    let meta = RequestMeta {
        counters: Counters::new(2, 2),
        ..RequestMeta::new(
            "never-shown".to_owned(),
            "default",
            Utc::now() - chrono::Duration::hours(3),
        )
    };
    assert!(repo.create_request(&meta, &rows).await.is_err());
    assert_eq!(repo.get_request("never-shown").await.unwrap(), None);
    let swept = run(&app, Deadline::NONE).await.unwrap();
    assert_eq!(
        swept.repairs,
        [("never-shown".to_owned(), Repair::FailedIncomplete)]
    );
    let meta = status(&app, "never-shown").await;
    assert_eq!(meta.status, RequestStatus::Failed);
    assert_eq!(meta.failure.unwrap().code, INGEST_INCOMPLETE);
}
