//! The deployed stack end to end on ministack: `template.yaml` is transformed and created as a
//! CloudFormation stack (`scripts/emulator_stack.py`) whose four functions are the real
//! `bootstrap` binaries, run by the emulator as `provided.al2023` processes behind its HTTP API
//! v2, SQS and DynamoDB-stream event source mappings and S3 notifications. One request goes in
//! through `POST /uploads`, one through a presigned S3 upload; the test checks the status API,
//! the output CSV, the compressed objects in the bucket and the signed webhook.
//!
//! `scripts/test.sh` installs ministack (pinned) in a venv; the test starts it on a free
//! loopback port and stops its process group by id. Images and the webhook receiver are served
//! by the test on loopback; the functions reach them because the emulator passes
//! `ALLOW_LOOPBACK=true` on to them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
#[path = "../../local/tests/support/emulator.rs"]
mod emulator;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use emulator::{Emulator, bounded, free_port, venv_program};
use pixpress_app::ports::ObjectStore;
use pixpress_aws::S3ObjectStore;
use pixpress_cli::demo::{PHOTOS, WebhookReceiver, photo_router, serve_on_loopback};
use pixpress_cli::emulator::emulator_sdk_config;
use pixpress_domain::webhook::WebhookSecret;
use pixpress_test_support::manifest_dir;
use serde_json::Value;

/// Where cargo put this workspace's binaries: the test executable lives in `<dir>/deps/`.
fn binaries_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    for binary in ["api", "s3-ingest", "row-worker", "completion-notifier"] {
        assert!(
            dir.join(binary).exists(),
            "{} is missing: build the functions first (cargo build --workspace --bins; scripts/test.sh does)",
            dir.join(binary).display()
        );
    }
    dir
}

/// The tenant the test's API key acts for.
const TENANT: &str = "acme";

struct Stack {
    api_url: String,
    bucket: String,
    table: String,
}

fn deploy(endpoint: &str, secret: &WebhookSecret) -> Stack {
    let python = venv_program("MINISTACK", "ministack-venv", "ministack").with_file_name("python");
    let root = PathBuf::from(manifest_dir()).join("..");
    let output = Command::new(python)
        .current_dir(&root)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .args([
            "scripts/emulator_stack.py",
            "--endpoint",
            endpoint,
            "--binaries",
        ])
        .arg(binaries_dir())
        .args(["--parameter", "EnableCdn=false"])
        .args(["--parameter", "DeploymentName=e2e"])
        // The smallest the template allows, so a form upload over it can be tried.
        .args(["--parameter", "MaxUploadBytes=1048576"])
        .arg("--parameter")
        .arg(format!("WebhookSecret={}", secret.to_whsec()))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "deploying template.yaml failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stack: Value = serde_json::from_slice(&output.stdout).unwrap();
    Stack {
        api_url: stack["api_url"].as_str().unwrap().to_owned(),
        bucket: stack["outputs"]["BucketName"].as_str().unwrap().to_owned(),
        table: stack["outputs"]["TableName"].as_str().unwrap().to_owned(),
    }
}

/// Polls the status API until the output CSV link appears (the notifier has run).
async fn wait_for_output(http: &reqwest::Client, api_url: &str, request_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let response = http
            .get(format!("{api_url}/requests/{request_id}"))
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            let status: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
            if status.get("output_csv_url").is_some_and(|u| !u.is_null()) {
                return status;
            }
        }
        assert!(
            Instant::now() < deadline,
            "request {request_id} did not finish within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn output_csv(
    api: &reqwest::Client,
    http: &reqwest::Client,
    api_url: &str,
    request_id: &str,
) -> Vec<Vec<String>> {
    let redirect = api
        .get(format!("{api_url}/requests/{request_id}/output.csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), 303);
    // The API answered 303 to a presigned link of the stored CSV, under the tenant's prefix;
    // the emulator checks the signature (the API key is not sent to S3).
    let location = redirect.headers()["location"].to_str().unwrap().to_owned();
    let link = url::Url::parse(&location).unwrap();
    assert!(
        link.path()
            .ends_with(&format!("/results/{TENANT}/{request_id}/output.csv"))
            && link.query().is_some_and(|q| q.contains("X-Amz-Signature=")),
        "{link}"
    );
    let response = http.get(link).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    csv::Reader::from_reader(text.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect()
}

fn split(cell: &str) -> Vec<String> {
    cell.split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployed_stack_compresses_an_http_upload_and_a_presigned_upload_end_to_end() {
    let work = std::env::temp_dir().join(format!("pixpress-ministack-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&work).unwrap();
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut command = bounded(venv_program("MINISTACK", "ministack-venv", "ministack"));
    command
        .env("GATEWAY_PORT", port.to_string())
        .env("BIND_HOST", "127.0.0.1")
        .env("IOT_MTLS_ENABLED", "false")
        // What the functions inherit: the emulator as their AWS endpoint, path-style S3, and
        // permission to fetch the test's loopback image server and webhook receiver.
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("S3_FORCE_PATH_STYLE", "true")
        .env("ALLOW_LOOPBACK", "true")
        .env("ALLOW_ANY_PORT", "true")
        .env("TMPDIR", &work);
    let log = work.join("ministack.log");
    let ministack = Emulator::start(command, port, Some(log.clone()));

    let secret = WebhookSecret::from_bytes(b"ministack-e2e-secret");
    let stack = deploy(&endpoint, &secret);
    // The deployed API requires a key: make one in the stack's table, as `pixpress keys create
    // --backend aws` does.
    let sdk = emulator_sdk_config(&endpoint).await;
    let keys = pixpress_aws::DynamoKeyStore::from(pixpress_aws::DynamoTable::new(
        &sdk,
        stack.table.clone(),
    ));
    let (issued, tenant) = pixpress_app::auth::create_key(&keys, TENANT, chrono::Utc::now())
        .await
        .unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "authorization",
        format!("Bearer {}", issued.api_key).parse().unwrap(),
    );
    pixpress_fetch::tls::install_crypto_provider();
    let api = reqwest::Client::builder()
        .default_headers(headers)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let anonymous = reqwest::Client::new()
        .get(format!("{}/requests/anything", stack.api_url))
        .send()
        .await
        .unwrap();
    let status = anonymous.status();
    assert_eq!(
        status,
        401,
        "{}",
        anonymous.text().await.unwrap_or_default()
    );
    // The page, the docs and the description answer without a key, through the real function:
    // text as text, the gzip-coded script byte for byte (lambda_http sends it base64-encoded).
    let page = reqwest::get(format!("{}/", stack.api_url)).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("ui/app.js"));
    let description = reqwest::get(format!("{}/openapi.json", stack.api_url))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let description: Value = serde_json::from_slice(&description).unwrap();
    assert_eq!(description, pixpress_api::openapi::document());
    let script = reqwest::Client::new()
        .get(format!("{}/docs/rapidoc-min.js", stack.api_url))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(script.headers()["content-encoding"], "gzip");
    let bytes = script.bytes().await.unwrap();
    assert_eq!(
        bytes.as_ref(),
        include_bytes!("../../functions/api/assets/rapidoc-min.js.gz")
    );
    let photos = serve_on_loopback(photo_router()).await.unwrap();
    // Deliveries are signed with the tenant's own secret, not the deployment's.
    let tenant_secret = WebhookSecret::parse(&tenant.webhook_secret).unwrap();
    let receiver = WebhookReceiver::start(tenant_secret).await.unwrap();
    let http = reqwest::Client::new();
    let photo = |i: usize| format!("http://{photos}/photos/{}", PHOTOS[i].name);
    let csv = format!(
        "S. No.,Product Name,Input Image Urls\n\
         1,Prints,\"{}, {}\"\n\
         2,Cups,\"http://{photos}/photos/discontinued.jpg, {}\"\n",
        photo(0),
        photo(1),
        photo(2)
    );

    // 1. POST /uploads through the HTTP API.
    let response = api
        .post(
            url::Url::parse_with_params(
                &format!("{}/uploads", stack.api_url),
                [("webhook_url", receiver.url())],
            )
            .unwrap(),
        )
        .header("content-type", "text/csv")
        .body(csv.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "log: {}", log.display());
    let accepted: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    let request_id = accepted["request_id"].as_str().unwrap().to_owned();
    assert_eq!(
        (accepted["rows"].as_u64(), accepted["images"].as_u64()),
        (Some(2), Some(4))
    );

    let status = wait_for_output(&api, &stack.api_url, &request_id).await;
    assert_eq!(status["status"], "COMPLETED_WITH_ERRORS");
    assert_eq!(status["progress"]["images_ok"], 3);
    assert_eq!(status["progress"]["images_failed"], 1);
    assert_eq!(status["products"][1]["images"][0]["error_code"], "http_404");

    let rows = output_csv(&api, &http, &stack.api_url, &request_id).await;
    assert_eq!(rows.len(), 2);
    let bucket = S3ObjectStore::new(&sdk, stack.bucket.clone(), None, true);
    let prefix = format!("s3://{}/", stack.bucket);
    let mut compressed = 0;
    for row in &rows {
        let inputs = split(&row[2]);
        let outputs: Vec<&str> = row[3].split(',').map(str::trim).collect();
        assert_eq!(
            inputs.len(),
            outputs.len(),
            "outputs aligned with inputs: {row:?}"
        );
        for (input, output) in inputs.iter().zip(outputs) {
            if input.contains("discontinued") {
                assert_eq!(output, "", "a failed image leaves its slot empty");
                continue;
            }
            let key = output.strip_prefix(&prefix).unwrap();
            let object = bucket.get(key, u64::MAX).await.unwrap().unwrap();
            assert_eq!(object.content_type, "image/jpeg");
            assert_eq!(&object.bytes[..2], &[0xFF, 0xD8]);
            let original = PHOTOS.iter().find(|p| input.ends_with(p.name)).unwrap();
            assert!(
                object.bytes.len() < original.bytes.len(),
                "{input} was not made smaller"
            );
            compressed += 1;
        }
    }
    assert_eq!(compressed, 3);

    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.received().is_empty() {
        assert!(Instant::now() < deadline, "no webhook arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deliveries = receiver.received();
    assert_eq!(deliveries.len(), 1, "exactly one webhook");
    assert_eq!(deliveries[0].verified, Ok(()));
    let payload: Value = serde_json::from_slice(&deliveries[0].body).unwrap();
    assert_eq!(payload["data"]["request_id"], request_id.as_str());
    assert_eq!(payload["data"]["status"], "COMPLETED_WITH_ERRORS");

    // 2. A presigned upload: POST /upload-urls, the signed form POSTed to S3, the S3 trigger
    // ingests it.
    let response = api
        .post(format!("{}/upload-urls", stack.api_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let upload: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    let upload_url = upload["upload_url"].as_str().unwrap();
    let presigned_id = upload["request_id"].as_str().unwrap();
    assert_eq!(upload["max_bytes"], 1_048_576);
    let form = |fields: &Value, file: Vec<u8>| {
        let mut form = reqwest::multipart::Form::new();
        for (name, value) in fields.as_object().unwrap() {
            form = form.text(name.clone(), value.as_str().unwrap().to_owned());
        }
        form.part(
            "file",
            reqwest::multipart::Part::bytes(file)
                .file_name("products.csv")
                .mime_str("text/csv")
                .unwrap(),
        )
    };
    // The emulator checks the policy and its signature: another content type, another key or
    // a CSV over max_bytes is refused by S3 itself, and nothing is stored.
    let mut wrong_type = upload["fields"].clone();
    wrong_type["Content-Type"] = "text/plain".into();
    let mut wrong_key = upload["fields"].clone();
    wrong_key["key"] = "uploads/default/another.csv".into();
    let mut too_large = csv.clone().into_bytes();
    let filler = format!("9,Filler,{}\r\n", "x".repeat(100));
    while too_large.len() <= 1_048_576 {
        too_large.extend_from_slice(filler.as_bytes());
    }
    for (fields, file, expected) in [
        (&wrong_type, csv.clone().into_bytes(), 403),
        (&wrong_key, csv.clone().into_bytes(), 403),
        (&upload["fields"], too_large, 400),
    ] {
        let refused = http
            .post(upload_url)
            .multipart(form(fields, file))
            .send()
            .await
            .unwrap();
        let status = refused.status().as_u16();
        let body = refused.text().await.unwrap();
        assert_eq!(status, expected, "{body}");
        if expected == 400 {
            assert!(body.contains("EntityTooLarge"), "{body}");
        }
    }
    let posted = http
        .post(upload_url)
        .multipart(form(&upload["fields"], csv.into_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 204);
    let status = wait_for_output(&api, &stack.api_url, presigned_id).await;
    assert_eq!(status["source"], "s3");
    assert_eq!(status["status"], "COMPLETED_WITH_ERRORS");
    assert_eq!(status["progress"]["images_ok"], 3);
    let rows = output_csv(&api, &http, &stack.api_url, presigned_id).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(split(&rows[0][3]).len(), 2);

    drop(ministack);
    std::fs::remove_dir_all(&work).unwrap();
}
