//! Fair to tenants: the rows queue delivers as an SQS fair queue (row messages carry their
//! tenant as message group), so a large request of one tenant does not hold up a small one of
//! another, through the whole local pipeline.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pixpress_app::ports::RequestReader as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aws_lambda_events::event::s3::S3EventRecord;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use pixpress_app::config::Config;
use pixpress_app::ports::ObjectStore;
use pixpress_cli::demo::serve_on_loopback;
use pixpress_cli::pipeline::{LocalPipeline, PipelineOptions};
use pixpress_domain::model::{OutputSpec, UploadOptions};
use pixpress_domain::storage_keys::{pending_upload_key, presigned_upload_key};
use pixpress_s3_ingest::RecordOutcome;

/// An image server of one tenant: every image answers 404 after `delay` (no compression, so
/// the time measured is the queue's and the origin's).
async fn origin(delay: Duration) -> SocketAddr {
    let router = axum::Router::new().route(
        "/img/{n}",
        get(move || async move {
            tokio::time::sleep(delay).await;
            StatusCode::NOT_FOUND.into_response()
        }),
    );
    serve_on_loopback(router).await.unwrap()
}

/// A CSV of `rows` rows, one image of `origin` each.
fn csv(origin: SocketAddr, rows: usize) -> Vec<u8> {
    let mut csv = String::from("S. No.,Product Name,Input Image Urls\n");
    for i in 1..=rows {
        csv.push_str(&format!("{i},Item {i},http://{origin}/img/{i}\n"));
    }
    csv.into_bytes()
}

/// Uploads `csv` as `tenant` through the S3 path (as a presigned upload lands) and ingests it;
/// returns the request id.
async fn upload(pipeline: &LocalPipeline, tenant: &str, csv: Vec<u8>) -> String {
    let upload_id = uuid::Uuid::new_v4().to_string();
    let options = UploadOptions {
        webhook_url: None,
        output_spec: OutputSpec::default(),
    };
    let store = pipeline.store();
    store
        .put(
            &pending_upload_key(tenant, &upload_id),
            serde_json::to_vec(&options).unwrap().into(),
            "application/json",
        )
        .await
        .unwrap();
    let key = presigned_upload_key(tenant, &upload_id);
    store.put(&key, csv.into(), "text/csv").await.unwrap();
    let mut record = S3EventRecord::default();
    record.event_name = Some("ObjectCreated:Put".to_owned());
    record.s3.bucket.name = Some("local".to_owned());
    record.s3.object.key = Some(key);
    match pipeline.ingest_upload(&record).await.unwrap() {
        RecordOutcome::Ingested(ingested) => ingested.meta.request_id.clone(),
        other => panic!("not ingested: {other:?}"),
    }
}

/// Waits until request `id` is terminal with its output CSV written, at most until `deadline`.
async fn finished(pipeline: &LocalPipeline, id: &str, deadline: Instant) {
    loop {
        let meta = pipeline.repo().get_request(id).await.unwrap().unwrap();
        if meta.status.is_terminal() && meta.output_csv_key.is_some() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "request {id} did not finish: {:?} {:?}",
            meta.status,
            meta.counters
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// While a 20,000-row request of tenant `acme` runs, a 10-row request of tenant `bolt`
/// submitted after it finishes within twice the time it takes alone plus 3 s. Without fair
/// delivery it would wait behind acme's backlog: at most 32 downloads at once on acme's
/// origin, 50 ms each, make that backlog at least 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_request_finishes_as_if_alone_while_another_tenants_large_one_runs() {
    let delay = Duration::from_millis(50);
    let (acme_origin, bolt_origin) = (origin(delay).await, origin(delay).await);
    let mut config = Config::default();
    config.fetch.policy = pixpress_fetch::NetworkPolicy::local();
    config.origin_max_concurrency = 32;
    let base = std::env::temp_dir().join(format!("pixpress-fair-{}", uuid::Uuid::new_v4()));

    let alone = {
        let pipeline =
            LocalPipeline::new(&config, PipelineOptions::new(base.join("alone"))).unwrap();
        let pump = pipeline.start_pump();
        let started = Instant::now();
        let bolt = upload(&pipeline, "bolt", csv(bolt_origin, 10)).await;
        finished(&pipeline, &bolt, started + Duration::from_secs(30)).await;
        let alone = started.elapsed();
        pump.stop().await;
        alone
    };

    let pipeline = LocalPipeline::new(&config, PipelineOptions::new(base.join("shared"))).unwrap();
    let pump = pipeline.start_pump();
    let acme = upload(&pipeline, "acme", csv(acme_origin, 20_000)).await;
    let started = Instant::now();
    let bolt = upload(&pipeline, "bolt", csv(bolt_origin, 10)).await;
    let bound = alone * 2 + Duration::from_secs(3);
    finished(&pipeline, &bolt, started + bound).await;
    let shared = started.elapsed();
    let acme = pipeline.repo().get_request(&acme).await.unwrap().unwrap();
    // acme's request was running all along (else nothing was shared).
    assert!(!acme.status.is_terminal(), "{:?}", acme.counters);
    assert!(acme.counters.rows_done < 20_000);
    pump.stop().await;
    println!(
        "bolt alone {:.2} s, beside acme's 20,000 rows {:.2} s (bound {:.2} s); acme had {} rows done",
        alone.as_secs_f64(),
        shared.as_secs_f64(),
        bound.as_secs_f64(),
        acme.counters.rows_done
    );
    std::fs::remove_dir_all(&base).ok();
}
