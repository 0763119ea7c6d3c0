//! End to end in one process: real photos and broken URLs on a loopback server, the CSV through
//! the `api` handler, the queue through `row-worker`, the change log through
//! `completion-notifier`, and a webhook receiver verifying the signature.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use pixpress::config::Config;
use pixpress::domain::model::RequestStatus;
use pixpress::webhook::WebhookSecret;
use pixpress_cli::demo::{PHOTOS, WebhookReceiver, photo_router, serve_on_loopback};
use pixpress_cli::pipeline::{LocalPipeline, PipelineOptions};
use pixpress_cli::run::{RunOptions, RunOutcome, run_csv};

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
    config.fetch.policy = pixpress::fetch::NetworkPolicy::local();
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
        webhook_url: Some(receiver.url()),
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
        assert_eq!(
            inputs.len(),
            outputs.len(),
            "outputs aligned with inputs: {row:?}"
        );
        assert_eq!(errors, codes, "error codes in place: {row:?}");
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
    let router = axum::Router::new().route(
        "/gone/{n}",
        get(|| async { StatusCode::NOT_FOUND.into_response() }),
    );
    let server = serve_on_loopback(router).await.unwrap();
    let mut config = Config::default();
    config.fetch.policy = pixpress::fetch::NetworkPolicy::local();
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
