//! row-dead-letter tests: the handler fed from `events/row-dead-letter/`, over the embedded
//! repository.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aws_lambda_events::event::sqs::SqsEvent;
use chrono::Utc;
use lambda_runtime::{Context, LambdaEvent};
use pixpress_app::config::Config;
use pixpress_app::ports::RequestIntake as _;
use pixpress_app::ports::RequestReader as _;
use pixpress_app::ports::RowLedger as _;
use pixpress_app::ports::RowRecorded;
use pixpress_domain::model::{
    Counters, ImageOutcome, ImageStatus, RequestMeta, RequestStatus, RowJob, RowRecord, RowState,
};
use pixpress_embedded::EmbeddedRequestRepository;
use pixpress_row_dead_letter::{App, DEAD_LETTERED, Recorded, handle, record_dead_letter};
use pixpress_test_support::manifest_dir;

fn sample() -> SqsEvent {
    let path = format!(
        "{}/../../events/row-dead-letter/dead-lettered-rows.json",
        manifest_dir()
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Records a `PROCESSING` request with one row per job.
async fn seed(repo: &EmbeddedRequestRepository, jobs: &[RowJob]) {
    let now = Utc::now();
    let meta = RequestMeta {
        status: RequestStatus::Processing,
        counters: Counters {
            rows_total: jobs.len() as u64,
            images_total: jobs.iter().map(|j| j.input_urls.len() as u64).sum(),
            ..Counters::default()
        },
        ..RequestMeta::new(jobs[0].request_id.clone(), "default", now)
    };
    let rows: Vec<RowRecord> = jobs
        .iter()
        .map(|j| RowRecord {
            index: j.row_index,
            serial: j.serial.clone(),
            product_name: j.product_name.clone(),
            input_urls: j.input_urls.clone(),
            state: RowState::Pending,
            images: vec![],
            progress: Vec::new(),
        })
        .collect();
    repo.create_request(&meta, &rows).await.unwrap();
}

#[tokio::test]
async fn a_dead_lettered_row_is_recorded_failed_and_its_request_completes() {
    let event = sample();
    let job: RowJob = serde_json::from_str(event.records[0].body.as_deref().unwrap()).unwrap();
    let app = App::new(EmbeddedRequestRepository::new(), &Config::default());
    seed(&app.repo, std::slice::from_ref(&job)).await;
    let response = handle(&app, LambdaEvent::new(event, Context::default()))
        .await
        .unwrap();
    // The malformed message cannot be recorded anywhere: dropped, not retried for ever.
    assert!(response.batch_item_failures.is_empty());
    let meta = app
        .repo
        .get_request(&job.request_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(meta.status, RequestStatus::CompletedWithErrors);
    assert_eq!(
        (meta.counters.rows_done, meta.counters.images_failed),
        (1, 2)
    );
    let rows = app.repo.list_rows(&job.request_id, None, 10).await.unwrap();
    let codes: Vec<_> = rows.rows[0]
        .images
        .iter()
        .map(|i| i.error_code.as_deref().unwrap())
        .collect();
    assert_eq!(codes, vec![DEAD_LETTERED, DEAD_LETTERED]);
    assert!(
        rows.rows[0].images[0]
            .error
            .as_deref()
            .unwrap()
            .contains("all 5 delivery attempts")
    );
}

#[tokio::test]
async fn a_row_the_worker_recorded_after_all_is_left_as_it_is() {
    let event = sample();
    let job: RowJob = serde_json::from_str(event.records[0].body.as_deref().unwrap()).unwrap();
    let mut second = job.clone();
    second.row_index = 1;
    let app = App::new(EmbeddedRequestRepository::new(), &Config::default());
    seed(&app.repo, &[job.clone(), second.clone()]).await;
    let mut ok = ImageOutcome::failed("", "");
    ok.status = ImageStatus::Ok;
    ok.error_code = None;
    ok.error = None;
    let recorded = app
        .repo
        .record_row_outcome(&job.request_id, 0, &[ok.clone(), ok], Utc::now())
        .await
        .unwrap();
    assert!(matches!(recorded, RowRecorded::Recorded { .. }));
    assert_eq!(
        record_dead_letter(&app, &job).await.unwrap(),
        Recorded::AlreadyRecorded
    );
    assert_eq!(
        record_dead_letter(&app, &second).await.unwrap(),
        Recorded::Failed(Some(RequestStatus::CompletedWithErrors))
    );
    let meta = app
        .repo
        .get_request(&job.request_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (meta.counters.images_ok, meta.counters.images_failed),
        (2, 2)
    );
}
