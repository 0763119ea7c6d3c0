//! The client commands (`pixpress submit`, `status`, `download`) against `pixpress serve`'s
//! router on loopback with an API key, and the presigned path against a stand-in API whose
//! "bucket" records what it is sent.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use pixpress_cli::client::{ApiClient, SubmitOptions, SubmitOutcome, UploadPath};
use pixpress_cli::demo::{PHOTOS, photo_router, serve_on_loopback};

#[allow(dead_code)]
mod support;
use support::{serve_with_a_key, serve_with_a_tenant, temp_dir};

/// Runs `pixpress` with `args` and `PIXPRESS_API_KEY=key`, off the async runtime.
async fn pixpress(args: Vec<String>, key: Option<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pixpress"));
        command.args(&args).env_remove("PIXPRESS_API_URL");
        match key {
            Some(key) => command.env("PIXPRESS_API_KEY", key),
            None => command.env_remove("PIXPRESS_API_KEY"),
        };
        command.output().unwrap()
    })
    .await
    .unwrap()
}

fn write_csv(dir: &Path, text: &str) -> String {
    let path = dir.join("input.csv");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_shows_progress_downloads_the_output_csv_and_exits_3_when_an_image_failed() {
    let (api, key, _pump) = serve_with_a_key().await;
    let origin = serve_on_loopback(photo_router()).await.unwrap();
    let work = temp_dir("client-submit");
    // 101 rows: one more than a status page, so `status --json` must follow a cursor.
    let mut csv = String::from("S. No.,Product Name,Input Image Urls\r\n");
    for i in 1..=101 {
        let url = if i == 57 {
            format!("http://{origin}/photos/discontinued.jpg")
        } else {
            format!("http://{origin}/photos/{}?v={i}", PHOTOS[i % 3].name)
        };
        csv.push_str(&format!("{i},Print {i},{url}\r\n"));
    }
    let input = write_csv(&work, &csv);
    let out = work.join("out");

    let output = pixpress(
        vec![
            "submit".into(),
            input,
            "--api".into(),
            api.clone(),
            "--quality".into(),
            "40".into(),
            "--wait".into(),
            "--out".into(),
            out.display().to_string(),
        ],
        Some(key.clone()),
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(3), "{stderr}\n{stdout}");
    // Not on a terminal: plain progress lines, the last one the final counters.
    assert!(
        stderr.contains("COMPLETED_WITH_ERRORS: rows 101/101, images 101/101 (1 failed)"),
        "{stderr}"
    );
    assert!(
        stdout.contains("images: 100 ok, 1 failed of 101"),
        "{stdout}"
    );
    assert!(
        stdout.contains("row 57: ") && stdout.contains("discontinued.jpg — [http_404]"),
        "{stdout}"
    );
    let request_id = stdout
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("request "))
        .and_then(|l| l.split(':').next())
        .unwrap()
        .to_owned();

    // The downloaded output CSV: every row, in input order, with its output URL.
    let written = std::fs::read_to_string(out.join("output.csv")).unwrap();
    let mut reader = csv::Reader::from_reader(written.as_bytes());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 101);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row[0], format!("{}", i + 1));
        assert_eq!(row[3].is_empty(), i + 1 == 57, "row {}: {:?}", i + 1, row);
    }
    assert!(!out.join("output.csv.partial").exists());

    // `status --json` follows every cursor: all 101 products in one document.
    let output = pixpress(
        vec![
            "status".into(),
            request_id.clone(),
            "--api".into(),
            api.clone(),
            "--json".into(),
        ],
        Some(key.clone()),
    )
    .await;
    assert_eq!(output.status.code(), Some(3));
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let products = document["products"].as_array().unwrap();
    assert_eq!(products.len(), 101);
    assert_eq!(products[100]["row"], 101);
    assert!(document.get("next_cursor").is_none());

    // `download` writes the same CSV again.
    let again = work.join("again");
    let output = pixpress(
        vec![
            "download".into(),
            request_id.clone(),
            "--api".into(),
            api.clone(),
            "--out".into(),
            again.display().to_string(),
        ],
        Some(key.clone()),
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(
        std::fs::read_to_string(again.join("output.csv")).unwrap(),
        written
    );

    // Without the key: exit 1 and what to do.
    let output = pixpress(vec!["status".into(), request_id, "--api".into(), api], None).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("401") && stderr.contains("PIXPRESS_API_KEY"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_of_an_invalid_csv_exits_2_with_every_issue_and_an_unknown_request_exits_1() {
    let (api, key, _pump) = serve_with_a_key().await;
    let work = temp_dir("client-reject");
    let input = write_csv(
        &work,
        "S. No.,Product Name,Input Image Urls\r\n1,Mug,ftp://example.com/a.jpg\r\n2,,http://127.0.0.1/b.jpg\r\n",
    );
    let output = pixpress(
        vec!["submit".into(), input, "--api".into(), api.clone()],
        Some(key.clone()),
    )
    .await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("row 2, column Input Image Urls"),
        "{stderr}"
    );
    assert!(stderr.contains("row 3, column Product Name"), "{stderr}");

    let output = pixpress(
        vec![
            "status".into(),
            "0b9c2f5e-0000-4000-8000-000000000000".into(),
            "--api".into(),
            api,
        ],
        Some(key),
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("HTTP 404"));
}

/// A form upload to the stand-in bucket: the fields in order, the file's content type and size.
type FormPost = (Vec<(String, String)>, Option<String>, usize);

/// What the stand-in API and bucket saw.
#[derive(Debug, Default)]
struct Seen {
    direct_posts: usize,
    upload_url_queries: Vec<String>,
    /// Form uploads to the bucket.
    posts: Vec<FormPost>,
}

/// An API that takes nothing directly (413) and signs uploads into its own "bucket" route.
async fn stand_in_api(max_bytes: u64) -> (String, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let upload_base = base.clone();
    let router = Router::new()
        .route(
            "/uploads",
            post(|State(seen): State<Arc<Mutex<Seen>>>| async move {
                seen.lock().unwrap().direct_posts += 1;
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    [("content-type", "application/problem+json")],
                    r#"{"title":"CSV too large","status":413}"#,
                )
            }),
        )
        .route(
            "/upload-urls",
            post(
                move |State(seen): State<Arc<Mutex<Seen>>>, uri: axum::http::Uri| async move {
                    seen.lock()
                        .unwrap()
                        .upload_url_queries
                        .push(uri.query().unwrap_or_default().to_owned());
                    (
                        StatusCode::CREATED,
                        [("content-type", "application/json")],
                        serde_json::json!({
                            "request_id": "req-1",
                            "upload_url": format!("{upload_base}/bucket/"),
                            "method": "POST",
                            "fields": {
                                "key": "uploads/shop/req-1.csv",
                                "Content-Type": "text/csv",
                                "policy": "eyJjb25kaXRpb25zIjpbXX0=",
                                "x-amz-signature": "abc",
                            },
                            "max_bytes": max_bytes,
                        })
                        .to_string(),
                    )
                },
            ),
        )
        .route(
            "/bucket/",
            post(
                |State(seen): State<Arc<Mutex<Seen>>>, headers: HeaderMap, body: Bytes| async move {
                    let content_type = headers["content-type"].to_str().unwrap().to_owned();
                    let boundary = multer::parse_boundary(&content_type).unwrap();
                    let stream = futures::stream::once(async move {
                        Ok::<Bytes, std::convert::Infallible>(body)
                    });
                    let mut form = multer::Multipart::new(stream, boundary);
                    let mut fields = Vec::new();
                    while let Some(field) = form.next_field().await.unwrap() {
                        let name = field.name().unwrap_or_default().to_owned();
                        if name == "file" {
                            let file_type = field.content_type().map(ToString::to_string);
                            let size = field.bytes().await.unwrap().len();
                            seen.lock().unwrap().posts.push((fields, file_type, size));
                            return StatusCode::NO_CONTENT.into_response();
                        }
                        fields.push((name, field.text().await.unwrap()));
                    }
                    (StatusCode::BAD_REQUEST, "POST requires a file field.").into_response()
                },
            ),
        )
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (base, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_csv_goes_to_the_presigned_form_with_its_signed_fields_and_options() {
    let (api, seen) = stand_in_api(64 * 1024 * 1024).await;
    let work = temp_dir("client-presigned");
    // 6 MiB: over what `POST /uploads` takes, so it is never sent there.
    let row = "1,Mug,https://img.example.com/a.jpg\r\n";
    let mut csv = String::from("S. No.,Product Name,Input Image Urls\r\n");
    while csv.len() < 6 * 1024 * 1024 {
        csv.push_str(row);
    }
    let path = work.join("big.csv");
    std::fs::write(&path, &csv).unwrap();
    let client = ApiClient::new(&api, Some("pk_test".into())).unwrap();
    let options = SubmitOptions {
        webhook_url: Some("https://hooks.example.com/done".into()),
        format: Some(pixpress_domain::model::OutputFormat::Webp),
        quality: Some(pixpress_domain::model::Quality::Fixed(70)),
        max_dimension: None,
        score: None,
    };
    let SubmitOutcome::Accepted(submitted) = client.submit(&path, &options).await.unwrap() else {
        panic!("rejected");
    };
    assert_eq!(submitted.request_id, "req-1");
    assert_eq!(submitted.path, UploadPath::Presigned);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.direct_posts, 0);
    assert_eq!(
        seen.upload_url_queries,
        ["webhook_url=https%3A%2F%2Fhooks.example.com%2Fdone&format=webp&quality=70"]
    );
    // Every signed field as given, then the CSV last, streamed whole.
    assert_eq!(seen.posts.len(), 1);
    let (fields, file_type, size) = &seen.posts[0];
    let mut names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["Content-Type", "key", "policy", "x-amz-signature"],
        "every field, before the file"
    );
    assert!(fields.contains(&("key".to_owned(), "uploads/shop/req-1.csv".to_owned())));
    assert_eq!((file_type.as_deref(), *size), (Some("text/csv"), csv.len()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_csv_refused_as_too_large_falls_back_and_one_over_max_bytes_is_rejected_unsent() {
    let (api, seen) = stand_in_api(50).await;
    let work = temp_dir("client-fallback");
    let small = work.join("small.csv");
    std::fs::write(
        &small,
        "S. No.,Product Name,Input Image Urls\r\n1,Mug,https://img.example.com/a.jpg\r\n",
    )
    .unwrap();
    let client = ApiClient::new(&api, None).unwrap();
    let outcome = client
        .submit(&small, &SubmitOptions::default())
        .await
        .unwrap();
    let SubmitOutcome::Rejected { status, problem } = outcome else {
        panic!("accepted a CSV over max_bytes");
    };
    assert_eq!(status, 413);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("at most 50 bytes")
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.direct_posts, 1, "the direct POST is tried first");
    assert_eq!(seen.upload_url_queries.len(), 1, "then the presigned path");
    assert!(seen.posts.is_empty(), "nothing is uploaded over max_bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_request_and_retry_runs_only_the_images_it_left() {
    let (api, key, _pump) = serve_with_a_key().await;
    // An origin that takes a second per image, so the request is still running when cancelled;
    // it counts the downloads of each image.
    let hits: Arc<Mutex<std::collections::HashMap<String, usize>>> = Arc::default();
    let slow = Router::new()
        .route(
            "/slow/{name}",
            axum::routing::get(
                |State(hits): State<Arc<Mutex<std::collections::HashMap<String, usize>>>>,
                 UrlPath(name): UrlPath<String>| async move {
                    *hits.lock().unwrap().entry(name).or_default() += 1;
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    ([("content-type", "image/jpeg")], PHOTOS[0].bytes).into_response()
                },
            ),
        )
        .with_state(hits.clone());
    let origin = serve_on_loopback(slow).await.unwrap();
    let work = temp_dir("client-cancel");
    let mut csv = String::from("S. No.,Product Name,Input Image Urls\r\n");
    for i in 1..=60 {
        csv.push_str(&format!("{i},Print {i},http://{origin}/slow/{i}.jpg\r\n"));
    }
    let input = write_csv(&work, &csv);
    let output = pixpress(
        vec!["submit".into(), input, "--api".into(), api.clone()],
        Some(key.clone()),
    )
    .await;
    assert_eq!(output.status.code(), Some(0));
    let request_id = String::from_utf8_lossy(&output.stdout).trim().to_owned();

    let output = pixpress(
        vec![
            "cancel".into(),
            request_id.clone(),
            "--api".into(),
            api.clone(),
        ],
        Some(key.clone()),
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("cancellation of request"), "{stderr}");

    let client = ApiClient::new(&api, Some(key.clone())).unwrap();
    let summary = client.wait(&request_id, |_| {}).await.unwrap();
    assert_eq!(summary["status"], "CANCELLED");
    let document = client.status_document(&request_id).await.unwrap();
    let images: Vec<&serde_json::Value> = document["products"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["images"].as_array().unwrap())
        .collect();
    assert_eq!(images.len(), 60);
    let cancelled = images
        .iter()
        .filter(|i| i["error_code"] == "cancelled")
        .count();
    eprintln!("{cancelled} of 60 images cancelled, the rest finished before");
    // Each image either finished before the cancellation or was never fetched.
    assert!(
        images
            .iter()
            .all(|i| i["status"] == "OK" || i["error_code"] == "cancelled"),
        "{document:#}"
    );

    let output = pixpress(
        vec![
            "status".into(),
            request_id.clone(),
            "--api".into(),
            api.clone(),
        ],
        Some(key.clone()),
    )
    .await;
    assert_eq!(output.status.code(), Some(4), "cancelled exits 4");
    let output = pixpress(
        vec![
            "cancel".into(),
            request_id.clone(),
            "--api".into(),
            api.clone(),
        ],
        Some(key.clone()),
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("HTTP 409"));

    // Retry: a new request downloads only the cancelled images and keeps the others.
    let before: std::collections::HashMap<String, usize> = hits.lock().unwrap().clone();
    let out = work.join("retry-out");
    std::fs::create_dir_all(&out).unwrap();
    let output = pixpress(
        vec![
            "retry".into(),
            request_id.clone(),
            "--api".into(),
            api.clone(),
            "--wait".into(),
            "--out".into(),
            out.display().to_string(),
        ],
        Some(key.clone()),
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("{cancelled} of 60 images run again")),
        "{stderr}"
    );
    let fetched_again: usize = hits
        .lock()
        .unwrap()
        .iter()
        .map(|(name, n)| n - before.get(name).copied().unwrap_or(0))
        .sum();
    assert_eq!(
        fetched_again, cancelled,
        "only the cancelled images are fetched"
    );
    let output_csv = std::fs::read_to_string(out.join("output.csv")).unwrap();
    assert_eq!(output_csv.lines().count(), 61, "{output_csv}");
    let retry = client.status_document(&request_id).await.unwrap();
    let retry_id = retry["retried_by"]
        .as_str()
        .expect("the original names its retry");
    let document = client.status_document(retry_id).await.unwrap();
    assert_eq!(document["status"], "COMPLETED");
    assert_eq!(document["retry_of"], request_id.as_str());
    // The original is kept as it was.
    assert_eq!(retry["status"], "CANCELLED");

    // Asking again names the same retry; a request without failures has nothing to retry.
    let again = client.retry(&request_id).await.unwrap();
    assert_eq!(again["request_id"], retry_id);
    match client.retry(retry_id).await {
        Err(pixpress_cli::client::ClientError::Api { status, .. }) => assert_eq!(status, 409),
        other => panic!("expected 409, got {other:?}"),
    }
}

/// `pixpress serve` composes the notifier with the same key store as the API: a tenant made
/// with `pixpress keys create` gets its webhook, signed with its own secret (not
/// `WEBHOOK_SECRET`), as in a deployment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_tenants_webhook_arrives_signed_with_that_tenants_secret() {
    let (api, key, tenant, _pump) = serve_with_a_tenant().await;
    let origin = serve_on_loopback(photo_router()).await.unwrap();
    type Deliveries = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;
    let deliveries: Deliveries = Arc::default();
    async fn receive(
        State(deliveries): State<Deliveries>,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        deliveries.lock().unwrap().push((headers, body));
        StatusCode::NO_CONTENT
    }
    let hooks = serve_on_loopback(
        Router::new()
            .route("/hook", post(receive))
            .with_state(deliveries.clone()),
    )
    .await
    .unwrap();
    let work = temp_dir("client-webhook");
    let input = write_csv(
        &work,
        &format!(
            "S. No.,Product Name,Input Image Urls\r\n1,Print,http://{origin}/photos/{}\r\n",
            PHOTOS[0].name
        ),
    );
    let client = ApiClient::new(&api, Some(key)).unwrap();
    let options = SubmitOptions {
        webhook_url: Some(format!("http://{hooks}/hook")),
        ..SubmitOptions::default()
    };
    let SubmitOutcome::Accepted(accepted) =
        client.submit(Path::new(&input), &options).await.unwrap()
    else {
        panic!("the upload was not accepted");
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let (headers, body) = loop {
        if let Some(delivery) = deliveries.lock().unwrap().first().cloned() {
            break delivery;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no webhook within 60 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
    let secret = pixpress_domain::webhook::WebhookSecret::parse(&tenant.webhook_secret).unwrap();
    secret
        .verify(
            &header("webhook-id"),
            &header("webhook-timestamp"),
            &header("webhook-signature"),
            &body,
            chrono::Utc::now(),
        )
        .unwrap();
    let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        event["data"]["request_id"],
        accepted.request_id.as_str(),
        "{event}"
    );
    assert_eq!(event["data"]["status"], "COMPLETED", "{event}");
}

/// `pixpress serve` takes presigned uploads too, with its own signed form: a CSV the API will
/// not take in one call goes to the form `POST /upload-urls` issues, is stored and ingested as
/// the bucket's trigger would, and runs to the end; a form whose fields were changed is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_over_the_row_limit_goes_through_the_servers_own_upload_form_and_completes() {
    let mut config = pixpress_app::config::Config::default();
    config.csv.max_rows = 5;
    let (api, key, _, _pump) = support::serve_with_config(config).await;
    let origin = serve_on_loopback(photo_router()).await.unwrap();
    let work = temp_dir("client-form");
    let rows = 12;
    let mut csv = String::from("S. No.,Product Name,Input Image Urls\r\n");
    for i in 1..=rows {
        let url = format!("http://{origin}/photos/{}?v={i}", PHOTOS[i % 3].name);
        csv.push_str(&format!("{i},Print {i},{url}\r\n"));
    }
    let path = work.join("many-rows.csv");
    std::fs::write(&path, &csv).unwrap();
    let client = ApiClient::new(&api, Some(key.clone())).unwrap();
    let outcome = client
        .submit(&path, &SubmitOptions::default())
        .await
        .unwrap();
    let SubmitOutcome::Accepted(submitted) = outcome else {
        panic!("rejected: {outcome:?}");
    };
    assert_eq!(submitted.path, UploadPath::Presigned);
    let done = client.wait(&submitted.request_id, |_| {}).await.unwrap();
    assert_eq!(done["status"], "COMPLETED", "{done:#}");
    assert_eq!(done["progress"]["rows_done"], rows);
    assert_eq!(done["progress"]["images_ok"], rows);

    // A form whose key was changed after signing is refused, and nothing is stored.
    let http = reqwest::Client::new();
    let issued = http
        .post(format!("{api}/upload-urls"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let issued: serde_json::Value = serde_json::from_slice(&issued).unwrap();
    let mut form = reqwest::multipart::Form::new();
    for (name, value) in issued["fields"].as_object().unwrap() {
        let value = value.as_str().unwrap().to_owned();
        let value = if name == "key" {
            "uploads/shop/someone-else.csv".to_owned()
        } else {
            value
        };
        form = form.text(name.clone(), value);
    }
    form = form.part(
        "file",
        reqwest::multipart::Part::bytes(csv.clone().into_bytes())
            .mime_str("text/csv")
            .unwrap(),
    );
    let answer = http
        .post(issued["upload_url"].as_str().unwrap())
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 403);
    let text = answer.text().await.unwrap();
    assert!(text.contains("AccessDenied"), "{text}");

    // Nothing unsigned is held in memory: a field over 16 KiB, or one the form does not have,
    // is refused before any signature is checked.
    for (name, value) in [("policy", "p".repeat(20 * 1024)), ("extra", "x".to_owned())] {
        let form = reqwest::multipart::Form::new()
            .text(name, value)
            .part("file", reqwest::multipart::Part::bytes(b"x".to_vec()));
        let answer = http
            .post(issued["upload_url"].as_str().unwrap())
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 400, "{name}");
    }

    // The data directory is not public: only output images are served under /files/.
    for key in ["keys.json", "uploads/shop/x.csv", "results/x.csv"] {
        let answer = http.get(format!("{api}/files/{key}")).send().await.unwrap();
        assert_eq!(answer.status(), 404, "{key}");
    }
    let full = client.status_document(&submitted.request_id).await.unwrap();
    let url = full["products"][0]["images"][0]["output_url"]
        .as_str()
        .unwrap();
    assert!(url.contains("/files/images/"), "{url}");
    let answer = http.get(url).send().await.unwrap();
    assert_eq!(answer.status(), 200, "{url}");
}
