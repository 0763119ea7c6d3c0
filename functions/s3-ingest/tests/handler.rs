//! s3-ingest handler tests fed from `events/s3-ingest/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aws_lambda_events::event::s3::S3Event;
use bytes::Bytes;
use lambda_runtime::{Context, LambdaEvent};
use pixpress::adapters::local::{DirObjectStore, InMemoryRequestRepository, InMemoryRowQueue};
use pixpress::config::Config;
use pixpress::domain::model::{RequestStatus, Source};
use pixpress::ports::{ObjectStore, RequestRepository};
use pixpress_s3_ingest::{App, IngestConfig, RecordOutcome, handle, ingest_record};

type TestApp = App<InMemoryRequestRepository, InMemoryRowQueue, DirObjectStore>;

fn app() -> TestApp {
    let dir = std::env::temp_dir().join(format!("pixpress-s3-{}", uuid::Uuid::new_v4()));
    App {
        repo: InMemoryRequestRepository::new(),
        queue: InMemoryRowQueue::new(5),
        store: DirObjectStore::new(dir, None).unwrap(),
        config: IngestConfig::from(&Config::default()),
    }
}

fn event() -> S3Event {
    let path = format!(
        "{}/../../events/s3-ingest/object-created.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

const KEY: &str = "uploads/spring sale(2026).csv";

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
    let key = pixpress::domain::keys::presigned_upload_key("acme", &request_id);
    let csv = "S. No.,Product Name,Input Image Urls\n1,Mug,https://img.example.com/a.jpg\n";
    // The options given with POST /upload-urls, stored when the URL was issued.
    let options = r#"{"webhook_url":"https://hooks.example/done","output_spec":{"format":"jpeg","quality":70}}"#;
    app.store
        .put(
            &pixpress::domain::keys::pending_upload_key("acme", &request_id),
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
