//! End to end in one process: real photos and broken URLs on a loopback server, the CSV through
//! the `api` handler, the queue through `row-worker`, the change log through
//! `completion-notifier`, and a webhook receiver verifying the signature.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use pixpress_app::config::Config;
use pixpress_cli::demo::{PHOTOS, WebhookReceiver, photo_router, serve_on_loopback};
use pixpress_cli::pipeline::{LocalPipeline, PipelineOptions, UploadQuery};
use pixpress_cli::run::{RunOptions, RunOutcome, run_csv};
use pixpress_domain::model::RequestStatus;
use pixpress_domain::webhook::WebhookSecret;

/// The first quantisation table of a JPEG (zig-zag order), from its first DQT segment.
fn first_quant_table(jpeg: &[u8]) -> Vec<u8> {
    let at = jpeg
        .windows(2)
        .position(|w| w == [0xFF, 0xDB])
        .expect("a DQT segment");
    jpeg[at + 5..at + 5 + 64].to_vec()
}

fn split(cell: &str) -> Vec<String> {
    cell.split(',').map(|s| s.trim().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_of_real_photos_and_broken_urls_completes_with_aligned_outputs_and_one_signed_webhook()
{
    let router = photo_router()
        .route(
            "/page.html",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "image/jpeg")],
                    "<!doctype html><h1>Out of stock</h1>",
                )
            }),
        )
        .route(
            "/cdn/{name}",
            get(|| async { Redirect::temporary("http://169.254.169.254/latest/meta-data/iam/") }),
        )
        .route(
            "/busy.jpg",
            get(|| async { StatusCode::SERVICE_UNAVAILABLE.into_response() }),
        );
    let server = serve_on_loopback(router).await.unwrap();
    let secret = WebhookSecret::from_bytes(b"e2e-secret");
    let receiver = WebhookReceiver::start(secret.clone()).await.unwrap();
    let mut config = Config::default();
    config.fetch.policy = pixpress_fetch::NetworkPolicy::local();
    config.webhook_secret = Some(secret);
    config.max_receive_count = 2;
    let dir = std::env::temp_dir().join(format!("pixpress-e2e-{}", uuid::Uuid::new_v4()));
    let mut options = PipelineOptions::new(&dir);
    options.visibility_timeout = Duration::from_millis(100);
    let pipeline = LocalPipeline::new(&config, options).unwrap();

    let base = format!("http://{server}");
    let photo = |i: usize| format!("{base}/photos/{}", PHOTOS[i].name);
    let csv = format!(
        "S. No.,Product Name,Input Image Urls\r\n\
         1.,Art prints,\"{}, {base}/photos/discontinued.jpg, {}\"\r\n\
         2.,Cups,\"{base}/page.html, {}, {base}/cdn/cups.jpg\"\r\n\
         3.,Canvas,\"{}, {base}/busy.jpg\"\r\n",
        photo(0),
        photo(1),
        photo(2),
        photo(5),
    );
    let options = RunOptions {
        upload: UploadQuery {
            webhook_url: Some(receiver.url()),
            ..UploadQuery::default()
        },
        ..RunOptions::default()
    };
    let RunOutcome::Finished(report) = run_csv(&pipeline, csv.into_bytes(), &options)
        .await
        .unwrap()
    else {
        panic!("the CSV was rejected");
    };
    assert_eq!(report.meta.status, RequestStatus::CompletedWithErrors);
    assert_eq!(
        (
            report.meta.counters.images_ok,
            report.meta.counters.images_failed
        ),
        (4, 4)
    );
    // The summary's link is the folder that holds the request's images.
    let images = std::path::PathBuf::from(report.images.strip_prefix("file://").unwrap());
    assert_eq!(
        std::fs::read_dir(&images).unwrap().count(),
        4,
        "{}",
        report.images
    );

    let text = std::fs::read_to_string(report.output_csv.as_ref().unwrap()).unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3);
    let expected_codes = [
        vec!["", "http_404", ""],
        vec!["not_an_image", "", "blocked_address"],
        vec!["", "http_503"],
    ];
    for (row, codes) in rows.iter().zip(expected_codes) {
        let inputs = split(&row[2]);
        let outputs = split(&row[3]);
        let errors = split(&row[5]);
        let scores = split(&row[6]);
        assert_eq!(
            inputs.len(),
            outputs.len(),
            "outputs aligned with inputs: {row:?}"
        );
        assert_eq!(errors, codes, "error codes in place: {row:?}");
        // Every stored image has its SSIMULACRA2 score in the same slot; failed ones none.
        assert_eq!(scores.len(), inputs.len(), "{row:?}");
        for (score, code) in scores.iter().zip(&codes) {
            if code.is_empty() {
                let score: f64 = score.parse().unwrap();
                assert!((30.0..=100.0).contains(&score), "{row:?}");
            } else {
                assert!(score.is_empty(), "{row:?}");
            }
        }
        for (output, code) in outputs.iter().zip(&codes) {
            assert_eq!(
                output.is_empty(),
                !code.is_empty(),
                "empty slot exactly where the image failed"
            );
            if let Some(path) = output.strip_prefix("file://") {
                let jpeg = std::fs::read(path).unwrap();
                assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
                // IJG quality 50 uses the Annex K luminance table unscaled: 16, 11, 12, 14, …
                assert_eq!(&first_quant_table(&jpeg)[..4], &[16, 11, 12, 14]);
            }
        }
    }
    let status = &report.status_document;
    let first = &status["products"][0]["images"][0];
    assert!(first["bytes_out"].as_u64().unwrap() < first["bytes_in"].as_u64().unwrap());
    assert!(
        status["products"][2]["images"][1]["error"]
            .as_str()
            .unwrap()
            .contains("gave up after 2 attempts")
    );

    let deliveries = receiver.received();
    assert_eq!(deliveries.len(), 1, "exactly one webhook");
    assert_eq!(deliveries[0].verified, Ok(()));
    let payload: serde_json::Value = serde_json::from_slice(&deliveries[0].body).unwrap();
    assert_eq!(
        payload["data"]["request_id"],
        report.meta.request_id.as_str()
    );
    assert_eq!(payload["data"]["status"], "COMPLETED_WITH_ERRORS");
    std::fs::remove_dir_all(dir).unwrap();
}

/// The final status document of a run holds every product, past one status page (1,000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_report_lists_every_product_past_one_status_page() {
    let server = gone_origin().await;
    let mut config = Config::default();
    config.fetch.policy = pixpress_fetch::NetworkPolicy::local();
    let dir = std::env::temp_dir().join(format!("pixpress-pages-{}", uuid::Uuid::new_v4()));
    let pipeline = LocalPipeline::new(&config, PipelineOptions::new(&dir)).unwrap();
    let rows = 1_203;
    let mut csv = String::from("S. No.,Product Name,Input Image Urls\n");
    for i in 1..=rows {
        csv.push_str(&format!("{i},Item {i},http://{server}/gone/{i}\n"));
    }
    let RunOutcome::Finished(report) = run_csv(&pipeline, csv.into_bytes(), &RunOptions::default())
        .await
        .unwrap()
    else {
        panic!("the CSV was rejected");
    };
    let products = report.status_document["products"].as_array().unwrap();
    assert_eq!(products.len(), rows);
    assert_eq!(products[rows - 1]["serial"], rows.to_string());
    assert!(report.status_document.get("next_cursor").is_none());
    std::fs::remove_dir_all(&dir).ok();
}

/// A file over the API's limit takes the S3 path (stored in parts, validated in one streaming
/// pass, expanded in chunks) and its output CSV is byte-identical, row for row, to what the
/// same rows give through `POST /uploads`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalogue_over_the_api_limit_takes_the_s3_path_and_gives_the_same_output_csv() {
    let server = serve_on_loopback(photo_router()).await.unwrap();
    let mut config = Config::default();
    config.fetch.policy = pixpress_fetch::NetworkPolicy::local();
    // Two chunks of ingest (1,000 rows each).
    let rows = 1_234;
    let mut csv = String::from("S. No.,Product Name,Input Image Urls\r\n");
    for i in 1..=rows {
        // Two photos per row, under distinct URLs (a query string), and one missing image.
        let photo = PHOTOS[i % 3].name;
        let extra = if i % 500 == 0 {
            format!("http://{server}/photos/missing-{i}.jpg")
        } else {
            format!("http://{server}/photos/{photo}?v={i}b")
        };
        csv.push_str(&format!(
            "{i},\"Item, {i}\",\"http://{server}/photos/{photo}?v={i}a, {extra}\"\r\n"
        ));
    }
    let base = std::env::temp_dir().join(format!("pixpress-catalogue-{}", uuid::Uuid::new_v4()));
    let file = base.join("catalogue.csv");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::write(&file, &csv).unwrap();
    let run = |config: Config, dir: &str| {
        let dir = base.join(dir);
        let file = file.clone();
        async move {
            let mut options = PipelineOptions::new(&dir);
            options.public_base_url = Some("https://cdn.example".to_owned());
            let pipeline = LocalPipeline::new(&config, options).unwrap();
            // 2,468 images a run: their scores are not what this test is about.
            let options = RunOptions {
                summary_only: true,
                upload: UploadQuery {
                    score: Some(false),
                    ..UploadQuery::default()
                },
                ..RunOptions::default()
            };
            let RunOutcome::Finished(report) =
                pixpress_cli::run::run_file(&pipeline, &file, &options)
                    .await
                    .unwrap()
            else {
                panic!("the CSV was rejected");
            };
            report
        }
    };
    // The S3 path: the API takes at most 64 KiB here.
    let mut small_api = config.clone();
    small_api.csv.max_bytes = 64 * 1024;
    let catalogue = run(small_api, "s3-path").await;
    assert!(csv.len() > 64 * 1024);
    assert_eq!(catalogue.meta.source, pixpress_domain::model::Source::S3);
    assert_eq!(catalogue.meta.status, RequestStatus::CompletedWithErrors);
    assert_eq!(catalogue.meta.counters.rows_done, rows as u64);
    assert_eq!(catalogue.meta.counters.images_failed, 2);
    assert_eq!(catalogue.failures_by_code.get("http_404"), Some(&2));
    assert!(catalogue.status_document.is_null());
    // The API path on the same file.
    let direct = run(config, "api-path").await;
    assert_eq!(direct.meta.source, pixpress_domain::model::Source::Api);
    assert_eq!(direct.meta.request_id, catalogue.meta.request_id);
    let a = std::fs::read(catalogue.output_csv.unwrap()).unwrap();
    let b = std::fs::read(direct.output_csv.unwrap()).unwrap();
    assert_eq!(a.len(), b.len());
    assert!(a == b, "the output CSVs differ");
    std::fs::remove_dir_all(&base).ok();
}

/// A catalogue with one bad row is rejected whole, with the row and column, and nothing runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalogue_with_one_bad_row_is_rejected_with_its_row_and_column() {
    let mut config = Config::default();
    config.csv.max_bytes = 1024;
    let mut csv = String::from("S. No.,Product Name,Input Image Urls\n");
    for i in 1..=300 {
        let scheme = if i == 271 { "ftp" } else { "https" };
        csv.push_str(&format!("{i},Item {i},{scheme}://img.example/{i}.jpg\n"));
    }
    let base = std::env::temp_dir().join(format!("pixpress-rejected-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&base).unwrap();
    let file = base.join("catalogue.csv");
    std::fs::write(&file, &csv).unwrap();
    let pipeline = LocalPipeline::new(&config, PipelineOptions::new(base.join("data"))).unwrap();
    let RunOutcome::Rejected { status, problem } =
        pixpress_cli::run::run_file(&pipeline, &file, &RunOptions::default())
            .await
            .unwrap()
    else {
        panic!("the CSV was accepted");
    };
    assert_eq!(status, 400);
    assert_eq!(problem["errors"][0]["row"], 272);
    assert_eq!(problem["errors"][0]["column"], "Input Image Urls");
    assert_eq!(problem["errors"][0]["code"], "unsupported_scheme");
    let text = pixpress_cli::run::rejection_text(status, &problem);
    assert!(text.contains("row 272, column Input Image Urls"), "{text}");
    std::fs::remove_dir_all(&base).ok();
}

/// A file small in bytes but over the API's row limit takes the S3 path instead of being
/// refused with `too_many_rows` ("split it into smaller files").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_within_the_byte_limit_but_over_the_row_limit_takes_the_s3_path() {
    let server = gone_origin().await;
    let mut config = Config::default();
    config.fetch.policy = pixpress_fetch::NetworkPolicy::local();
    config.csv.max_rows = 20;
    let rows = 30;
    let mut csv = String::from("S. No.,Product Name,Input Image Urls\n");
    for i in 1..=rows {
        csv.push_str(&format!("{i},Item {i},http://{server}/gone/{i}\n"));
    }
    let base = std::env::temp_dir().join(format!("pixpress-rows-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&base).unwrap();
    let file = base.join("many-rows.csv");
    std::fs::write(&file, &csv).unwrap();
    assert!(csv.len() < config.csv.max_bytes);
    let pipeline = LocalPipeline::new(&config, PipelineOptions::new(base.join("data"))).unwrap();
    let options = RunOptions {
        summary_only: true,
        ..RunOptions::default()
    };
    let outcome = pixpress_cli::run::run_file(&pipeline, &file, &options)
        .await
        .unwrap();
    let RunOutcome::Finished(report) = outcome else {
        panic!("the CSV was rejected: {outcome:?}");
    };
    assert_eq!(report.meta.source, pixpress_domain::model::Source::S3);
    assert_eq!(report.meta.counters.rows_done, rows);
    assert_eq!(report.failures_by_code.get("http_404"), Some(&rows));
    std::fs::remove_dir_all(&base).ok();
}

/// One request's items share one partition key, which serves at most 1,000 write units a
/// second (scaled down here to 200): its rows are throttled as DynamoDB throttles a hot
/// partition (`TableWriteKeyRangeThroughputExceeded`), retried, and every row is still
/// recorded exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_on_one_hot_partition_is_throttled_and_loses_nothing() {
    let server = gone_origin().await;
    let mut config = Config::default();
    config.fetch.policy = pixpress_fetch::NetworkPolicy::local();
    let dir = std::env::temp_dir().join(format!("pixpress-hot-{}", uuid::Uuid::new_v4()));
    let mut options = PipelineOptions::new(&dir);
    options.capacity_limits = Some(pixpress_embedded::CapacityModel::DYNAMODB.scaled(0.2));
    let pipeline = LocalPipeline::new(&config, options).unwrap();
    let rows = 60;
    let mut csv = String::from("S. No.,Product Name,Input Image Urls\n");
    for i in 1..=rows {
        csv.push_str(&format!("{i},Item {i},http://{server}/gone/{i}\n"));
    }
    let outcome = run_csv(&pipeline, csv.into_bytes(), &RunOptions::default())
        .await
        .unwrap();
    let RunOutcome::Finished(report) = outcome else {
        panic!("the CSV was rejected: {outcome:?}");
    };
    assert_eq!(report.meta.status, RequestStatus::CompletedWithErrors);
    assert_eq!(report.meta.counters.rows_done, rows);
    assert_eq!(report.meta.counters.images_failed, rows);
    let consumed = pipeline.backend.repo.consumed_capacity().unwrap();
    let throttled: u64 = consumed.values().map(|c| c.throttled).sum();
    assert!(throttled > 0, "nothing was throttled: {consumed:?}");
    // The writes recording the rows among them.
    assert!(consumed["UpdateItem"].throttled > 0, "{consumed:?}");
    std::fs::remove_dir_all(&dir).ok();
}

/// An origin on loopback where every image under `/gone/{n}` answers 404 at once.
async fn gone_origin() -> std::net::SocketAddr {
    let router = axum::Router::new().route(
        "/gone/{n}",
        get(|| async { StatusCode::NOT_FOUND.into_response() }),
    );
    serve_on_loopback(router).await.unwrap()
}
