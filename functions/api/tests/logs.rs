//! The API's log lines, in a test binary of their own: `tracing`'s callsite cache is global,
//! so a test that installs a thread-local subscriber must not share its process with tests
//! that log without one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};
use pixpress_api::{ApiConfig, App, handle};
use pixpress_app::config::Config;
use pixpress_embedded::{DirObjectStore, EmbeddedQueue, EmbeddedRequestRepository};
use serde_json::Value;

fn app(
    config: &Config,
) -> App<EmbeddedRequestRepository, EmbeddedQueue, DirObjectStore, pixpress_embedded::FileKeyStore>
{
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

fn json(response: &Response<Body>) -> Value {
    match response.body() {
        Body::Text(t) => serde_json::from_str(t).unwrap(),
        Body::Binary(b) => serde_json::from_slice(b).unwrap(),
        _ => Value::Null,
    }
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

fn with_key(mut request: Request, key: &str) -> Request {
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

const CSV: &str = "S. No.,Product Name,Input Image Urls\n1.,Mug,\"https://img.example.com/a.jpg, https://img.example.com/b.jpg\"\n";

/// Every line the API logs about an upload names the request and the key's tenant, so one
/// request's story is one CloudWatch filter away.
#[tokio::test]
async fn log_lines_of_an_upload_name_its_request_and_tenant() {
    let captured = pixpress_test_support::LogCapture::default();
    let _default = captured.install(tracing::Level::INFO);
    let mut app = app(&Config::default());
    let dir = std::env::temp_dir().join(format!("pixpress-api-logs-{}", uuid::Uuid::new_v4()));
    let keys = pixpress_embedded::FileKeyStore::in_dir(&dir);
    let (issued, _) = pixpress_app::auth::create_key(&keys, "shop", chrono::Utc::now())
        .await
        .unwrap();
    app.keys = Some(keys);

    let accepted = handle(
        &app,
        with_key(
            request(Method::POST, "/uploads", Some("text/csv"), CSV.into()),
            &issued.api_key,
        ),
    )
    .await
    .unwrap();
    assert_eq!(accepted.status(), 202);
    let id = json(&accepted)["request_id"].as_str().unwrap().to_owned();
    let rejected = handle(
        &app,
        with_key(
            request(
                Method::POST,
                "/uploads",
                Some("text/csv"),
                b"S. No.,Product Name,Input Image Urls\n1,,x\n".to_vec(),
            ),
            &issued.api_key,
        ),
    )
    .await
    .unwrap();
    assert_eq!(rejected.status(), 400);

    let text = captured.text();
    let lines = captured.lines();
    let line = |message: &str| {
        lines
            .iter()
            .find(|l| l["fields"]["message"] == message)
            .unwrap_or_else(|| panic!("no `{message}` line in {text}"))
    };
    let accepted = line("upload accepted");
    assert_eq!(accepted["span"]["request_id"], id.as_str(), "{accepted}");
    assert_eq!(accepted["span"]["tenant"], "shop", "{accepted}");
    assert_eq!(accepted["span"]["path"], "/uploads", "{accepted}");
    let rejected = line("upload rejected: invalid CSV");
    assert!(rejected["span"]["request_id"].is_string(), "{rejected}");
    for line in &lines {
        assert_eq!(line["span"]["tenant"], "shop", "{line}");
    }
}
