//! Handler tests fed from `events/api/*.json` (the same samples `sam local invoke` uses).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};
use pixpress_api::{ApiConfig, App, handle};
use pixpress_app::config::Config;
use pixpress_app::ingest::{CHUNK_ROWS, ObjectIngest, ObjectIngestSettings, ingest_object};
use pixpress_app::ports::OutputLedger as _;
use pixpress_app::ports::RequestIntake as _;
use pixpress_app::ports::RequestReader as _;
use pixpress_app::ports::{NoQueue, ObjectStore as _};
use pixpress_domain::model::{DEFAULT_TENANT, RequestStatus, Source, UploadOptions};
use pixpress_domain::storage_keys::{pending_upload_key, presigned_upload_key};
use pixpress_embedded::{DirObjectStore, EmbeddedQueue, EmbeddedRequestRepository, FileKeyStore};
use pixpress_test_support::manifest_dir;
use serde_json::Value;

type TestApp = App<EmbeddedRequestRepository, EmbeddedQueue, DirObjectStore, FileKeyStore>;

fn app(config: &Config) -> TestApp {
    let dir = std::env::temp_dir().join(format!("pixpress-api-{}", uuid::Uuid::new_v4()));
    App {
        keys: None,
        webhooks: None,
        repo: EmbeddedRequestRepository::new(),
        queue: EmbeddedQueue::new(5),
        store: DirObjectStore::new(dir, None).unwrap(),
        config: ApiConfig::from(config),
    }
}

/// What the stored upload's `ObjectCreated` event makes `s3-ingest` do in a deployment: the
/// ingest use case over the CSV and options `POST /uploads` stored.
async fn ingest_stored(app: &TestApp, request_id: &str) {
    let options = app
        .store
        .get(&pending_upload_key(DEFAULT_TENANT, request_id), 64 * 1024)
        .await
        .unwrap()
        .expect("the upload's options are stored");
    let options: UploadOptions = serde_json::from_slice(&options.bytes).unwrap();
    let settings = ObjectIngestSettings {
        limits: app.config.csv,
        egress: app.config.egress,
        chunk_rows: CHUNK_ROWS,
    };
    let input = ObjectIngest {
        request_id: request_id.to_owned(),
        tenant: DEFAULT_TENANT.to_owned(),
        source: Source::S3,
        key: presigned_upload_key(DEFAULT_TENANT, request_id),
        webhook_url: options.webhook_url,
        output_spec: options.output_spec,
        now: chrono::Utc::now(),
    };
    ingest_object::<_, _, _, NoQueue>(&app.repo, &app.queue, &app.store, None, &settings, input)
        .await
        .unwrap();
}

fn event(name: &str) -> Request {
    let path = format!("{}/../../events/api/{name}", manifest_dir());
    lambda_http::request::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn json(response: &Response<Body>) -> Value {
    match response.body() {
        Body::Text(t) => serde_json::from_str(t).unwrap(),
        Body::Binary(b) => serde_json::from_slice(b).unwrap(),
        _ => Value::Null,
    }
}

fn content_type(response: &Response<Body>) -> &str {
    response
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
}

fn request(method: Method, uri: &str, content_type: Option<&str>, body: Vec<u8>) -> Request {
    let mut builder = lambda_http::http::Request::builder()
        .method(method)
        .uri(uri);
    if let Some(ct) = content_type {
        builder = builder.header("content-type", ct);
    }
    builder.body(Body::Binary(body)).unwrap()
}

const CSV: &str = "S. No.,Product Name,Input Image Urls\n1.,Mug,\"https://img.example.com/a.jpg, https://img.example.com/b.jpg\"\n";

/// `POST /uploads` validates, records the request and stores the CSV under `uploads/`; the
/// rows are written and queued by the ingest the stored object triggers, not in the HTTP call.
#[tokio::test]
async fn csv_upload_is_accepted_stored_under_uploads_and_its_rows_fanned_out_by_the_ingest() {
    let app = app(&Config::default());
    let upload = event("post-upload-csv.json");
    let response = handle(&app, upload.clone()).await.unwrap();
    assert_eq!(response.status(), 202);
    let body = json(&response);
    let id = body["request_id"].as_str().unwrap();
    assert_eq!(
        (body["rows"].as_u64(), body["images"].as_u64()),
        (Some(2), Some(5))
    );
    assert_eq!(body["status"], "PENDING");
    assert_eq!(
        body["status_url"],
        format!("https://abc123.execute-api.us-east-1.amazonaws.com/requests/{id}")
    );
    assert_eq!(app.queue.len().unwrap(), 0, "no row is queued in the call");
    let stored = app
        .store
        .get(&presigned_upload_key(DEFAULT_TENANT, id), u64::MAX)
        .await
        .unwrap()
        .expect("the CSV is stored under uploads/");
    assert!(
        stored
            .bytes
            .starts_with(b"S. No.,Product Name,Input Image Urls")
    );
    ingest_stored(&app, id).await;
    assert_eq!(app.queue.len().unwrap(), 2);
    let meta = app.repo.get_request(id).await.unwrap().unwrap();
    assert_eq!(meta.status, RequestStatus::Processing);
    assert_eq!(meta.output_spec.quality, 50);
    assert_eq!(meta.source, Source::Api);
}

/// The API's work is the same few calls whatever the row count: one request item, two
/// objects, no row item and no message (API Gateway ends an HTTP API integration at 30 s).
#[tokio::test]
async fn an_upload_costs_the_same_calls_at_ten_rows_and_at_fifty_thousand() {
    let mut calls = Vec::new();
    for rows in [10, 50_000] {
        let mut app = app(&Config::default());
        app.repo = EmbeddedRequestRepository::new().with_capacity(None);
        let mut csv = String::from("S. No.,Product Name,Input Image Urls\n");
        for i in 1..=rows {
            csv.push_str(&format!("{i},P{i},https://img.example.com/{i}.jpg\n"));
        }
        let response = handle(
            &app,
            request(Method::POST, "/uploads", Some("text/csv"), csv.into_bytes()),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), 202);
        assert_eq!(json(&response)["rows"], rows);
        assert_eq!(
            app.queue.len().unwrap(),
            0,
            "no message is sent in the call"
        );
        let objects = walk(app.store.root());
        assert_eq!(objects.len(), 2, "the CSV and its options: {objects:?}");
        let consumed: Vec<(&str, u64)> = app
            .repo
            .consumed_capacity()
            .unwrap()
            .into_iter()
            .map(|(kind, c)| (kind, c.calls))
            .collect();
        calls.push(consumed);
    }
    assert_eq!(calls[0], calls[1], "DynamoDB calls at 10 and 50,000 rows");
    let total: u64 = calls[0].iter().map(|(_, n)| n).sum();
    assert!(total <= 4, "a handful of DynamoDB calls: {:?}", calls[0]);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test]
async fn invalid_csv_is_rejected_with_every_error_and_nothing_enqueued() {
    let app = app(&Config::default());
    let response = handle(&app, event("post-upload-invalid-csv.json"))
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(content_type(&response), "application/problem+json");
    let problem = json(&response);
    let errors: Vec<(u64, &str)> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["row"].as_u64().unwrap(), e["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        errors,
        vec![
            (2, "unquoted_url_list"),
            (3, "duplicate_serial"),
            (3, "unsupported_scheme")
        ]
    );
    assert!(app.queue.is_empty().unwrap());
}

#[tokio::test]
async fn unknown_request_is_a_problem_404() {
    let app = app(&Config::default());
    let response = handle(&app, event("get-request-unknown.json"))
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(content_type(&response), "application/problem+json");
    assert_eq!(
        json(&response)["type"],
        "urn:pixpress:problem:request-not-found"
    );
}

#[tokio::test]
async fn multipart_upload_records_the_webhook_and_quality() {
    let app = app(&Config::default());
    let boundary = "XyZ123";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"webhook_url\"\r\n\r\nhttps://hooks.example.com/pixpress\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"quality\"\r\n\r\n70\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"products.csv\"\r\nContent-Type: text/csv\r\n\r\n{CSV}\r\n\
         --{boundary}--\r\n"
    );
    let ct = format!("multipart/form-data; boundary={boundary}");
    let response = handle(
        &app,
        request(Method::POST, "/uploads", Some(&ct), body.into_bytes()),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 202);
    let id = json(&response)["request_id"].as_str().unwrap().to_owned();
    let meta = app.repo.get_request(&id).await.unwrap().unwrap();
    assert_eq!(
        meta.webhook.unwrap().url,
        "https://hooks.example.com/pixpress"
    );
    assert_eq!(meta.output_spec.quality, 70);
}

#[tokio::test]
async fn wrong_media_type_is_415_and_oversized_csv_is_413() {
    let app = app(&Config::default());
    let response = handle(
        &app,
        request(
            Method::POST,
            "/uploads",
            Some("application/json"),
            b"{}".to_vec(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 415);
    let mut small = Config::default();
    small.csv.max_bytes = 32;
    let app = self::app(&small);
    let response = handle(
        &app,
        request(
            Method::POST,
            "/uploads",
            Some("text/csv"),
            CSV.as_bytes().to_vec(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 413);
    assert!(
        json(&response)["detail"]
            .as_str()
            .unwrap()
            .contains("POST /upload-urls")
    );
}

#[tokio::test]
async fn same_idempotency_key_returns_the_same_request_once() {
    let app = app(&Config::default());
    let upload = || {
        let mut r = request(
            Method::POST,
            "/uploads",
            Some("text/csv"),
            CSV.as_bytes().to_vec(),
        );
        r.headers_mut()
            .insert("idempotency-key", "order-2026-11-21".parse().unwrap());
        r
    };
    let first = handle(&app, upload()).await.unwrap();
    let id = json(&first)["request_id"].as_str().unwrap().to_owned();
    ingest_stored(&app, &id).await;
    let second = handle(&app, upload()).await.unwrap();
    assert_eq!(json(&second)["request_id"], id.as_str());
    assert_eq!(json(&second)["status"], "PROCESSING");
    assert_eq!(second.headers().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(app.queue.len().unwrap(), 1);
}

#[tokio::test]
async fn status_lists_products_with_pending_images_and_paginates() {
    let app = app(&Config::default());
    let response = handle(&app, event("post-upload-csv.json")).await.unwrap();
    let id = json(&response)["request_id"].as_str().unwrap().to_owned();
    ingest_stored(&app, &id).await;
    let page = handle(
        &app,
        request(
            Method::GET,
            &format!("/requests/{id}?limit=1"),
            None,
            vec![],
        ),
    )
    .await
    .unwrap();
    assert_eq!(page.status(), 200);
    let doc = json(&page);
    assert_eq!(doc["status"], "PROCESSING");
    assert_eq!(doc["products"].as_array().unwrap().len(), 1);
    assert_eq!(doc["products"][0]["serial"], "1.");
    assert_eq!(doc["products"][0]["images"][2]["status"], "PENDING");
    assert_eq!(doc["progress"]["percent"], 0);
    let cursor = doc["next_cursor"].as_str().unwrap();
    let next = handle(
        &app,
        request(
            Method::GET,
            &format!("/requests/{id}?cursor={cursor}"),
            None,
            vec![],
        ),
    )
    .await
    .unwrap();
    let doc = json(&next);
    assert_eq!(doc["products"][0]["serial"], "2.");
    assert!(doc.get("next_cursor").is_none());
    let csv = handle(
        &app,
        request(
            Method::GET,
            &format!("/requests/{id}/output.csv"),
            None,
            vec![],
        ),
    )
    .await
    .unwrap();
    assert_eq!(csv.status(), 409);
}

/// Objects PUT to the loopback stand-in for S3: `(path, body)`.
type Puts = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// The API over an S3 store whose endpoint is a loopback stand-in that accepts every `PUT`
/// (presigning is local; nothing leaves the machine).
async fn s3_app() -> (
    App<EmbeddedRequestRepository, EmbeddedQueue, pixpress_aws::S3ObjectStore, FileKeyStore>,
    Puts,
) {
    let puts: Puts = Puts::default();
    let recorded = puts.clone();
    let router = axum::Router::new().fallback(axum::routing::put(
        move |uri: axum::http::Uri, body: axum::body::Bytes| {
            let recorded = recorded.clone();
            async move {
                recorded
                    .lock()
                    .unwrap()
                    .push((uri.path().to_owned(), body.to_vec()));
                axum::http::StatusCode::OK
            }
        },
    ));
    let endpoint = format!("http://{}", pixpress_test_support::serve(router).await);
    // An explicit region and dummy credentials.
    let vars = move |name: &str| match name {
        "AWS_REGION" => Some("us-east-1".to_owned()),
        "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY" => Some("test".to_owned()),
        "AWS_ENDPOINT_URL" => Some(endpoint.clone()),
        _ => None,
    };
    let sdk = pixpress_aws::lambda_sdk_config_from(vars).unwrap();
    let app = App {
        keys: None,
        webhooks: None,
        repo: EmbeddedRequestRepository::new(),
        queue: EmbeddedQueue::new(5),
        store: pixpress_aws::S3ObjectStore::new(&sdk, "pixpress-data", None, true),
        config: ApiConfig::from(&Config::default()),
    };
    (app, puts)
}

#[tokio::test]
async fn upload_url_is_a_presigned_post_form_whose_policy_caps_the_size() {
    use base64::Engine as _;
    use hmac::Mac as _;
    let (app, puts) = s3_app().await;
    let response = handle(&app, event("post-upload-url.json")).await.unwrap();
    assert_eq!(response.status(), 201);
    let body = json(&response);
    let id = body["request_id"].as_str().unwrap();
    let url = url::Url::parse(body["upload_url"].as_str().unwrap()).unwrap();
    assert_eq!(
        url.path(),
        "/pixpress-data/",
        "the bucket's (path-style) URL"
    );
    assert_eq!(body["method"], "POST");
    let fields = &body["fields"];
    assert_eq!(fields["key"], format!("uploads/default/{id}.csv"));
    assert_eq!(fields["Content-Type"], "text/csv");
    assert_eq!(fields["x-amz-algorithm"], "AWS4-HMAC-SHA256");
    let credential = fields["x-amz-credential"].as_str().unwrap();
    let date = &fields["x-amz-date"].as_str().unwrap()[..8];
    assert_eq!(credential, format!("test/{date}/us-east-1/s3/aws4_request"));
    // The policy: S3 refuses anything but this key and type, and a CSV over max_bytes.
    let encoded = fields["policy"].as_str().unwrap();
    let policy: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap(),
    )
    .unwrap();
    let conditions = policy["conditions"].as_array().unwrap();
    let max = pixpress_app::config::DEFAULT_MAX_UPLOAD_BYTES as u64;
    assert!(conditions.contains(&serde_json::json!(["content-length-range", 1, max])));
    assert!(conditions.contains(&serde_json::json!({"bucket": "pixpress-data"})));
    assert!(conditions.contains(&serde_json::json!({"key": fields["key"]})));
    assert!(conditions.contains(&serde_json::json!({"Content-Type": "text/csv"})));
    let expiration = chrono::DateTime::parse_from_rfc3339(policy["expiration"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let left = expiration - chrono::Utc::now();
    assert!(left <= chrono::Duration::minutes(15) && left > chrono::Duration::minutes(14));
    // SigV4 of the base64 policy with the s3 signing key of that day and region.
    let hmac = |key: &[u8], data: &str| {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        mac.update(data.as_bytes());
        mac.finalize().into_bytes().to_vec()
    };
    let key = ["us-east-1", "s3", "aws4_request"]
        .iter()
        .fold(hmac(b"AWS4test", date), |key, part| hmac(&key, part));
    let signature: String = hmac(&key, encoded)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(fields["x-amz-signature"], signature);
    // A presigned upload takes a catalogue: the S3 path's limit, not the direct upload's.
    assert_eq!(body["max_bytes"].as_u64(), Some(max));
    assert_eq!(
        body["status_url"],
        format!("https://abc123.execute-api.us-east-1.amazonaws.com/requests/{id}")
    );
    // Nothing exists until the CSV is uploaded and ingested; the default options wait for it.
    assert!(app.repo.get_request(id).await.unwrap().is_none());
    let puts = puts.lock().unwrap().clone();
    assert_eq!(puts.len(), 1);
    assert_eq!(
        puts[0].0,
        format!("/pixpress-data/pending/default/{id}.json")
    );
    let options: Value = serde_json::from_slice(&puts[0].1).unwrap();
    assert_eq!(options["output_spec"]["quality"], 50);
    assert!(options.get("webhook_url").is_none());
}

/// `POST /upload-urls` takes the options of `POST /uploads`, checks them at once and stores
/// them for the S3 trigger.
#[tokio::test]
async fn upload_url_options_are_checked_and_stored_for_the_upload() {
    let (app, puts) = s3_app().await;
    let response = handle(
        &app,
        request(
            Method::POST,
            "/upload-urls?webhook_url=https%3A%2F%2Fhooks.example%2Fdone&quality=70&max_dimension=1200",
            None,
            Vec::new(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 201);
    let id = json(&response)["request_id"].as_str().unwrap().to_owned();
    let stored = puts.lock().unwrap().clone();
    assert_eq!(
        stored[0].0,
        format!("/pixpress-data/pending/default/{id}.json")
    );
    let options: Value = serde_json::from_slice(&stored[0].1).unwrap();
    assert_eq!(options["webhook_url"], "https://hooks.example/done");
    assert_eq!(options["output_spec"]["quality"], 70);
    assert_eq!(options["output_spec"]["max_dimension"], 1200);
    for bad in [
        "/upload-urls?quality=0",
        "/upload-urls?webhook_url=http%3A%2F%2F169.254.169.254%2F",
    ] {
        let response = handle(&app, request(Method::POST, bad, None, Vec::new()))
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad}");
    }
    assert_eq!(
        puts.lock().unwrap().len(),
        1,
        "nothing stored for a refused request"
    );
}

#[tokio::test]
async fn upload_url_without_a_presigning_store_is_501_problem() {
    let app = app(&Config::default());
    let response = handle(&app, event("post-upload-url.json")).await.unwrap();
    assert_eq!(response.status(), 501);
    assert_eq!(content_type(&response), "application/problem+json");
    assert!(
        json(&response)["detail"]
            .as_str()
            .unwrap()
            .contains("POST /uploads")
    );
}

#[tokio::test]
async fn output_csv_is_a_redirect_to_a_presigned_link_when_the_store_can_sign() {
    let (app, _) = s3_app().await;
    let accepted = handle(
        &app,
        request(Method::POST, "/uploads", Some("text/csv"), CSV.into()),
    )
    .await
    .unwrap();
    let id = json(&accepted)["request_id"].as_str().unwrap().to_owned();
    let uri = format!("/requests/{id}/output.csv");
    let early = handle(&app, request(Method::GET, &uri, None, Vec::new()))
        .await
        .unwrap();
    assert_eq!(early.status(), 409, "no link before the CSV is written");
    let key =
        pixpress_domain::storage_keys::output_csv_key(pixpress_domain::model::DEFAULT_TENANT, &id);
    app.repo
        .record_output_csv(&id, &key, chrono::Utc::now())
        .await
        .unwrap();
    let response = handle(&app, request(Method::GET, &uri, None, Vec::new()))
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let location = response.headers()["location"].to_str().unwrap();
    let link = url::Url::parse(location).unwrap();
    assert!(
        link.path().ends_with(&format!("/pixpress-data/{key}")),
        "{link}"
    );
    assert!(link.query().unwrap().contains("X-Amz-Signature="), "{link}");
}

fn body_text(response: &Response<Body>) -> String {
    match response.body() {
        Body::Text(t) => t.clone(),
        Body::Binary(b) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    }
}

fn with_key(mut request: Request, key: &str) -> Request {
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

/// Every route needs a key; a key acts for its tenant only; another tenant's request answers
/// exactly what a missing one does; a revoked key stops at once.
#[tokio::test]
async fn api_keys_scope_every_route_to_their_tenant() {
    use pixpress_app::auth::{KeyStore as _, create_key};
    use pixpress_embedded::FileKeyStore;

    let dir = std::env::temp_dir().join(format!("pixpress-keys-{}", uuid::Uuid::new_v4()));
    let keys = FileKeyStore::in_dir(&dir);
    let now = chrono::Utc::now();
    let (acme, _) = create_key(&keys, "acme", now).await.unwrap();
    let (globex, _) = create_key(&keys, "globex", now).await.unwrap();
    let mut app = app(&Config::default());
    app.keys = Some(keys.clone());
    let upload = || {
        request(
            Method::POST,
            "/uploads",
            Some("text/csv"),
            CSV.as_bytes().to_vec(),
        )
    };

    // No key, a malformed key, a forged secret for a real key id: one and the same 401.
    let forged = format!("pk_{}_{}", acme.record.key_id, "A".repeat(43));
    let mut refusals = Vec::new();
    for r in [
        upload(),
        with_key(upload(), "not-a-key"),
        with_key(upload(), &forged),
        request(Method::GET, "/requests/abc", None, Vec::new()),
    ] {
        let response = handle(&app, r).await.unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.headers().get("www-authenticate").unwrap(),
            r#"Bearer realm="pixpress""#
        );
        assert_eq!(content_type(&response), "application/problem+json");
        refusals.push(body_text(&response));
    }
    assert!(refusals.windows(2).all(|w| w[0] == w[1]), "{refusals:?}");
    assert_eq!(app.queue.len().unwrap(), 0, "nothing was enqueued");

    let accepted = handle(&app, with_key(upload(), &acme.api_key))
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    let id = json(&accepted)["request_id"].as_str().unwrap().to_owned();
    let meta = app.repo.get_request(&id).await.unwrap().unwrap();
    assert_eq!(meta.tenant, "acme");

    let get =
        |path: String, key: &str| with_key(request(Method::GET, &path, None, Vec::new()), key);
    let own = handle(&app, get(format!("/requests/{id}"), &acme.api_key))
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    let other = handle(&app, get(format!("/requests/{id}"), &globex.api_key))
        .await
        .unwrap();
    let missing = handle(
        &app,
        get(
            "/requests/00000000-0000-0000-0000-000000000000".into(),
            &globex.api_key,
        ),
    )
    .await
    .unwrap();
    assert_eq!(other.status(), 404);
    assert_eq!(
        (other.status(), body_text(&other)),
        (missing.status(), body_text(&missing))
    );
    let other_csv = handle(
        &app,
        get(format!("/requests/{id}/output.csv"), &globex.api_key),
    )
    .await
    .unwrap();
    assert_eq!(other_csv.status(), 404);

    // The same Idempotency-Key from two tenants makes two requests.
    let keyed = |key: &str| {
        let mut r = with_key(upload(), key);
        r.headers_mut()
            .insert("idempotency-key", "order-7".parse().unwrap());
        r
    };
    let a = json(&handle(&app, keyed(&acme.api_key)).await.unwrap())["request_id"].clone();
    let b = json(&handle(&app, keyed(&globex.api_key)).await.unwrap())["request_id"].clone();
    assert_ne!(a, b);

    keys.revoke_key(&acme.record.key_id, now).await.unwrap();
    let after = handle(&app, get(format!("/requests/{id}"), &acme.api_key))
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_wrong_method_is_405_with_allow() {
    let app = app(&Config::default());
    let response = handle(&app, request(Method::GET, "/uploads", None, Vec::new()))
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers().get("allow").unwrap(), "POST");
    assert_eq!(content_type(&response), "application/problem+json");
    assert_eq!(
        json(&response)["type"],
        "urn:pixpress:problem:method-not-allowed"
    );
    let response = handle(
        &app,
        request(Method::DELETE, "/requests/abc", None, Vec::new()),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 405);
    // A GET route answers HEAD too.
    assert_eq!(response.headers().get("allow").unwrap(), "GET,HEAD");
    let response = handle(&app, request(Method::GET, "/nowhere", None, Vec::new()))
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(json(&response)["type"], "urn:pixpress:problem:not-found");
}

/// IETF Idempotency-Key draft: the same key with a different body is 422 and creates nothing;
/// the same key and body sent at once from two clients make one request with one set of rows.
#[tokio::test]
async fn a_reused_idempotency_key_with_another_body_is_422_and_concurrent_retries_make_one_request()
{
    let app = app(&Config::default());
    let keyed = |csv: &str| {
        let mut r = request(
            Method::POST,
            "/uploads",
            Some("text/csv"),
            csv.as_bytes().to_vec(),
        );
        r.headers_mut()
            .insert("idempotency-key", "order-9".parse().unwrap());
        r
    };
    let (a, b) = tokio::join!(handle(&app, keyed(CSV)), handle(&app, keyed(CSV)));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        (a.status(), b.status()),
        (202.try_into().unwrap(), 202.try_into().unwrap())
    );
    assert_eq!(json(&a)["request_id"], json(&b)["request_id"]);
    ingest_stored(&app, json(&a)["request_id"].as_str().unwrap()).await;
    assert_eq!(app.queue.len().unwrap(), 1, "one request, one set of rows");
    let other = CSV.replace("Mug", "Cup");
    let reused = handle(&app, keyed(&other)).await.unwrap();
    assert_eq!(reused.status(), 422);
    assert_eq!(
        json(&reused)["type"],
        "urn:pixpress:problem:idempotency-key-reused"
    );
    assert_eq!(app.queue.len().unwrap(), 1, "nothing more was enqueued");
}

/// `?limit=0` is the summary alone (no row is read); a running request says when to poll again.
#[tokio::test]
async fn the_summary_reads_no_rows_and_a_running_request_sets_retry_after() {
    let app = app(&Config::default());
    let response = handle(&app, event("post-upload-csv.json")).await.unwrap();
    let id = json(&response)["request_id"].as_str().unwrap().to_owned();
    ingest_stored(&app, &id).await;
    let summary = handle(
        &app,
        request(
            Method::GET,
            &format!("/requests/{id}?limit=0"),
            None,
            vec![],
        ),
    )
    .await
    .unwrap();
    assert_eq!(summary.status(), 200);
    assert_eq!(summary.headers().get("retry-after").unwrap(), "2");
    let doc = json(&summary);
    assert_eq!(doc["status"], "PROCESSING");
    assert_eq!(doc["progress"]["rows_total"], 2);
    assert!(doc["products"].as_array().unwrap().is_empty());
    assert!(doc.get("next_cursor").is_none());
    let too_many = handle(
        &app,
        request(
            Method::GET,
            &format!("/requests/{id}?limit=1001"),
            None,
            vec![],
        ),
    )
    .await
    .unwrap();
    assert_eq!(too_many.status(), 400);
}

/// `?dry_run=true` validates like an upload and creates nothing.
#[tokio::test]
async fn a_dry_run_answers_the_counts_or_every_issue_and_creates_nothing() {
    let app = app(&Config::default());
    let ok = handle(
        &app,
        request(
            Method::POST,
            "/uploads?dry_run=true&quality=70",
            Some("text/csv"),
            CSV.as_bytes().to_vec(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
    let doc = json(&ok);
    assert_eq!(
        (
            doc["valid"].as_bool(),
            doc["rows"].as_u64(),
            doc["images"].as_u64()
        ),
        (Some(true), Some(1), Some(2))
    );
    assert_eq!(doc["output_spec"]["quality"], 70);
    let bad = handle(
        &app,
        request(
            Method::POST,
            "/uploads?dry_run=true",
            Some("text/csv"),
            b"S. No.,Product Name,Input Image Urls\n1,,ftp://x/a.jpg\n".to_vec(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(bad.status(), 200);
    let doc = json(&bad);
    assert_eq!(doc["valid"], false);
    assert_eq!(doc["errors"].as_array().unwrap().len(), 2);
    assert_eq!(app.queue.len().unwrap(), 0, "nothing enqueued");
    assert!(
        app.repo.drain_changes().unwrap().is_empty(),
        "nothing written"
    );
}

/// An idempotency key names its request for 24 hours; after that the same key makes a new one.
#[tokio::test]
async fn an_idempotency_key_older_than_a_day_makes_a_new_request() {
    use pixpress_domain::model::RequestMeta;
    let app = app(&Config::default());
    let old_id =
        pixpress_domain::storage_keys::derived_request_id(&["idempotency-key", "default", "k-1"]);
    let then = chrono::Utc::now() - chrono::Duration::hours(25);
    let old = RequestMeta {
        status: RequestStatus::Completed,
        fingerprint: Some("an older upload".into()),
        completed_at: Some(then),
        ..RequestMeta::new(old_id.clone(), "default", then)
    };
    app.repo.create_request(&old, &[]).await.unwrap();
    let keyed = || {
        let mut r = request(
            Method::POST,
            "/uploads",
            Some("text/csv"),
            CSV.as_bytes().to_vec(),
        );
        r.headers_mut()
            .insert("idempotency-key", "k-1".parse().unwrap());
        r
    };
    let fresh = handle(&app, keyed()).await.unwrap();
    assert_eq!(
        fresh.status(),
        202,
        "not 422: the old use of the key has expired"
    );
    let new_id = json(&fresh)["request_id"].as_str().unwrap().to_owned();
    assert_ne!(new_id, old_id);
    // Within the window the key finds the new request again.
    let replay = handle(&app, keyed()).await.unwrap();
    assert_eq!(json(&replay)["request_id"], new_id.as_str());
    assert_eq!(replay.headers().get("idempotent-replayed").unwrap(), "true");
}

/// `POST /requests/{id}/webhook/redeliver`: a finished request's webhook goes back on the
/// webhooks queue with its attempts kept; not before it finishes; 501 without a queue.
#[tokio::test]
async fn a_finished_requests_webhook_can_be_redelivered() {
    use pixpress_domain::model::{DeliveryState, RequestMeta, Webhook, WebhookAttempt};
    let mut app = app(&Config::default());
    let now = chrono::Utc::now();
    let meta = |id: &str, status: RequestStatus| RequestMeta {
        status,
        webhook: Some(Webhook {
            url: "https://hooks.example/done".into(),
            state: DeliveryState::Failed,
            attempts: vec![WebhookAttempt {
                at: now,
                status_code: Some(503),
                error: Some("http_503".into()),
            }],
        }),
        completed_at: Some(now),
        ..RequestMeta::new(id, "default", now)
    };
    app.repo
        .create_request(&meta("done-1", RequestStatus::Completed), &[])
        .await
        .unwrap();
    app.repo
        .create_request(&meta("busy-1", RequestStatus::Processing), &[])
        .await
        .unwrap();
    let redeliver = |id: &str| {
        request(
            Method::POST,
            &format!("/requests/{id}/webhook/redeliver"),
            None,
            vec![],
        )
    };
    let unavailable = handle(&app, redeliver("done-1")).await.unwrap();
    assert_eq!(unavailable.status(), 501);
    app.webhooks = Some(EmbeddedQueue::new(8));
    let accepted = handle(&app, redeliver("done-1")).await.unwrap();
    assert_eq!(accepted.status(), 202);
    let webhook = app
        .repo
        .get_request("done-1")
        .await
        .unwrap()
        .unwrap()
        .webhook
        .unwrap();
    assert_eq!(webhook.state, DeliveryState::Pending);
    assert_eq!(webhook.attempts.len(), 1, "earlier attempts are kept");
    let queued = app
        .webhooks
        .as_ref()
        .unwrap()
        .receive(10, std::time::Duration::from_secs(30))
        .unwrap();
    assert_eq!(queued.len(), 1);
    assert!(queued[0].body.contains("done-1"));
    // While that series runs, another is refused: it would share the attempt count.
    assert_eq!(
        handle(&app, redeliver("done-1")).await.unwrap().status(),
        409
    );
    assert_eq!(
        handle(&app, redeliver("busy-1")).await.unwrap().status(),
        409
    );
    assert_eq!(
        handle(&app, redeliver("no-such-id"))
            .await
            .unwrap()
            .status(),
        404
    );
}

/// A broken form gets a short message saying what to send, not the parser's words.
#[tokio::test]
async fn a_broken_multipart_form_gets_a_short_actionable_problem() {
    let app = app(&Config::default());
    let response = handle(
        &app,
        request(
            Method::POST,
            "/uploads",
            Some("multipart/form-data; boundary=XYZ"),
            b"--XYZ\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nS. No.".to_vec(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 400);
    let doc = json(&response);
    assert_eq!(doc["type"], "urn:pixpress:problem:invalid-form");
    let detail = doc["detail"].as_str().unwrap();
    assert!(detail.contains("`file` field"), "{detail}");
    assert!(
        !detail.to_ascii_lowercase().contains("incomplete"),
        "{detail}"
    );
}

#[tokio::test]
async fn the_docs_and_the_openapi_document_need_no_key_and_load_nothing_from_elsewhere() {
    let mut app = app(&Config::default());
    let keys = std::env::temp_dir().join(format!("pixpress-api-keys-{}", uuid::Uuid::new_v4()));
    app.keys = Some(pixpress_embedded::FileKeyStore::in_dir(&keys));
    let get = |uri: &str| request(Method::GET, uri, None, Vec::new());

    let response = handle(&app, get("/requests/abc")).await.unwrap();
    assert_eq!(response.status(), 401, "the API itself still needs a key");

    let response = handle(&app, get("/openapi.json")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(json(&response), pixpress_api::openapi::document());

    let response = handle(&app, get("/docs")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(content_type(&response), "text/html; charset=utf-8");
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(!csp.contains("http"), "{csp}");
    let page = body_text(&response);
    assert!(
        !page.contains("http"),
        "the page names another origin: {page}"
    );
    assert!(page.contains(r#"spec-url="openapi.json""#) && page.contains(r#"load-fonts="false""#));

    let mut script = get("/docs/rapidoc-min.js");
    script
        .headers_mut()
        .insert("accept-encoding", "gzip, br".parse().unwrap());
    let response = handle(&app, script).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    match response.body() {
        Body::Binary(bytes) => assert_eq!(&bytes[..2], [0x1f, 0x8b]),
        other => panic!("{other:?}"),
    }
    let mut identity = get("/docs/rapidoc-min.js");
    identity
        .headers_mut()
        .insert("accept-encoding", "identity".parse().unwrap());
    assert_eq!(handle(&app, identity).await.unwrap().status(), 406);
}
