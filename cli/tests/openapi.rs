//! The OpenAPI document against the API's real answers: every route is called through the
//! router (the one Lambda and `pixpress serve` run) in the situations a client meets —
//! accepted, rejected, too large, unknown, not ready, running, finished — and each answer's
//! status, content type and body must be the ones the document describes for that route. The
//! component schemas are made strict (no undocumented fields) before validating.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use axum::http::Method;
use lambda_http::{Body, Request, Response};
use pixpress_app::config::Config;
use pixpress_cli::demo::{PHOTOS, WebhookReceiver, photo_router, serve_on_loopback};
use pixpress_cli::pipeline::{LocalPipeline, PipelineOptions};
use pixpress_domain::webhook::WebhookSecret;
use pixpress_embedded::FileKeyStore;
use pixpress_local::AnyKeyStore;
use serde_json::{Value, json};

/// The document with every component schema closed: an object schema admits only its
/// documented properties (`unevaluatedProperties: false` also sees through `allOf`).
fn strict(mut doc: Value) -> Value {
    // A schema composed into another (`allOf`) is closed by the outer one: closing it too would
    // refuse the outer schema's own properties.
    let composed: BTreeSet<String> = doc["components"]["schemas"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|schema| schema["allOf"].as_array().cloned().unwrap_or_default())
        .filter_map(|part| part["$ref"].as_str().map(str::to_owned))
        .collect();
    for (name, schema) in doc["components"]["schemas"].as_object_mut().unwrap() {
        let open = composed.contains(&format!("#/components/schemas/{name}"));
        if !open && (schema.get("properties").is_some() || schema.get("allOf").is_some()) {
            schema["unevaluatedProperties"] = json!(false);
        }
    }
    doc
}

struct Conformance {
    doc: Value,
    /// (method, path template) pairs answered so far.
    covered: BTreeSet<(String, String)>,
}

impl Conformance {
    fn new() -> Self {
        Self {
            doc: strict(pixpress_api::openapi::document()),
            covered: BTreeSet::new(),
        }
    }

    /// The path template of the document that `path` matches.
    fn template(&self, path: &str) -> Option<String> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        self.doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .find(|template| {
                let parts: Vec<&str> = template.trim_start_matches('/').split('/').collect();
                parts.len() == segments.len()
                    && parts
                        .iter()
                        .zip(&segments)
                        .all(|(p, s)| p == s || (p.starts_with('{') && p.ends_with('}')))
            })
            .cloned()
    }

    /// Checks one answer against the document and returns its JSON body (or `Null`).
    fn check(&mut self, method: &Method, uri: &str, response: &Response<Body>) -> Value {
        let path = uri.split('?').next().unwrap();
        let template = self
            .template(path)
            .unwrap_or_else(|| panic!("{path} is not in the document"));
        let operation = &self.doc["paths"][&template][method.as_str().to_ascii_lowercase()];
        assert!(
            operation.is_object(),
            "{method} {template} is not in the document"
        );
        let status = response.status().as_u16().to_string();
        let documented = &operation["responses"][&status];
        assert!(
            documented.is_object(),
            "{method} {uri} answered {status}, which the document does not list"
        );
        let bytes: &[u8] = match response.body() {
            Body::Binary(b) => b,
            Body::Text(t) => t.as_bytes(),
            _ => b"",
        };
        let content_type = response.headers().get("content-type").map(|v| {
            v.to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .trim()
                .to_owned()
        });
        let body = match documented.get("content") {
            None => {
                assert!(
                    bytes.is_empty(),
                    "{method} {uri} {status}: a body the document does not describe"
                );
                Value::Null
            }
            Some(content) => {
                let content_type = content_type
                    .unwrap_or_else(|| panic!("{method} {uri} {status}: no content-type"));
                let media = &content[&content_type];
                assert!(
                    media.is_object(),
                    "{method} {uri} {status}: content-type {content_type} is not documented ({content})"
                );
                if content_type.ends_with("json") {
                    let body: Value = serde_json::from_slice(bytes).unwrap();
                    let mut schema = media["schema"].clone();
                    schema["components"] = self.doc["components"].clone();
                    schema["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
                    let validator = jsonschema::draft202012::new(&schema).unwrap();
                    let errors: Vec<String> = validator
                        .iter_errors(&body)
                        .map(|e| format!("{} at {}", e, e.instance_path()))
                        .collect();
                    assert!(
                        errors.is_empty(),
                        "{method} {uri} {status} does not match the document:\n{}\n{body:#}",
                        errors.join("\n")
                    );
                    body
                } else {
                    Value::Null
                }
            }
        };
        for (name, _) in documented["headers"].as_object().into_iter().flatten() {
            // Documented response headers are conditional (`retry-after` only while running);
            // `location` of a redirect or an acceptance always comes.
            if name == "location" {
                assert!(
                    response.headers().contains_key("location"),
                    "{method} {uri} {status} without location"
                );
            }
        }
        self.covered
            .insert((method.as_str().to_ascii_lowercase(), template));
        body
    }

    fn documented_operations(&self) -> BTreeSet<(String, String)> {
        let mut all = BTreeSet::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                all.insert((method.clone(), path.clone()));
            }
        }
        all
    }
}

fn request(method: Method, uri: &str, content_type: Option<&str>, body: Vec<u8>) -> Request {
    let mut builder = axum::http::Request::builder().method(method).uri(uri);
    if let Some(ct) = content_type {
        builder = builder.header("content-type", ct);
    }
    builder.body(Body::Binary(body)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_as_the_openapi_document_says() {
    let origin = serve_on_loopback(photo_router()).await.unwrap();
    let secret = WebhookSecret::from_bytes(b"openapi-secret");
    let receiver = WebhookReceiver::start(secret.clone()).await.unwrap();
    let mut config = Config::default();
    config.fetch.policy = pixpress_fetch::NetworkPolicy::local();
    config.webhook_secret = Some(secret);
    let dir = std::env::temp_dir().join(format!("pixpress-openapi-{}", uuid::Uuid::new_v4()));
    let pipeline = LocalPipeline::new(&config, PipelineOptions::new(&dir)).unwrap();
    let mut c = Conformance::new();

    // The document served is the one checked here.
    let served = pipeline
        .call_api(request(Method::GET, "/openapi.json", None, Vec::new()))
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    let served: Value = match served.body() {
        Body::Binary(b) => serde_json::from_slice(b).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(served, pixpress_api::openapi::document());
    assert_eq!(served["openapi"], "3.1.0");

    let csv = format!(
        "S. No.,Product Name,Input Image Urls\r\n\
         1,Prints,\"http://{origin}/photos/{}, http://{origin}/photos/discontinued.jpg\"\r\n\
         2,Cups,http://{origin}/photos/{}\r\n",
        PHOTOS[0].name, PHOTOS[1].name
    );
    let call =
        async |c: &mut Conformance, method: Method, uri: &str, ct: Option<&str>, body: Vec<u8>| {
            let response = pipeline
                .call_api(request(method.clone(), uri, ct, body))
                .await
                .unwrap();
            (response.status().as_u16(), c.check(&method, uri, &response))
        };

    // Without a key, where keys are required: 401.
    let keys_dir = dir.join("keys");
    let mut keyed = pipeline.api.clone();
    keyed.keys = Some(AnyKeyStore::File(FileKeyStore::in_dir(&keys_dir)));
    let unauthorized = pixpress_api::handle(
        &keyed,
        request(Method::GET, "/requests/abc", None, Vec::new()),
    )
    .await
    .unwrap();
    assert_eq!(unauthorized.status(), 401);
    c.check(&Method::GET, "/requests/abc", &unauthorized);

    // Uploads: accepted, dry run, every kind of refusal.
    let upload = format!("/uploads?webhook_url={}", receiver.url());
    let (status, accepted) = call(
        &mut c,
        Method::POST,
        &upload,
        Some("text/csv"),
        csv.clone().into_bytes(),
    )
    .await;
    assert_eq!(status, 202);
    let id = accepted["request_id"].as_str().unwrap().to_owned();
    let (status, problem) = call(
        &mut c,
        Method::POST,
        "/uploads",
        Some("text/csv"),
        b"S. No.,Product Name,Input Image Urls\r\n1,,ftp://x/a.jpg\r\n".to_vec(),
    )
    .await;
    assert_eq!(
        (status, problem["errors"].as_array().unwrap().len()),
        (400, 2)
    );
    // (method, path, content type, body, expected status)
    let text = Some("text/csv");
    for (method, uri, ct, body, expected) in [
        (
            Method::POST,
            "/uploads?dry_run=true",
            text,
            csv.clone().into_bytes(),
            200,
        ),
        (
            Method::POST,
            "/uploads?quality=0",
            text,
            csv.clone().into_bytes(),
            400,
        ),
        (
            Method::POST,
            "/uploads",
            Some("application/json"),
            b"{}".to_vec(),
            415,
        ),
        (
            Method::POST,
            "/uploads",
            text,
            vec![b'a'; 6 * 1024 * 1024],
            413,
        ),
        // Presigned uploads: not on local disk; a bad option first.
        (
            Method::POST,
            "/upload-urls?quality=x",
            None,
            Vec::new(),
            400,
        ),
        (Method::POST, "/upload-urls", None, Vec::new(), 501),
    ] {
        let (status, _) = call(&mut c, method, uri, ct, body).await;
        assert_eq!(status, expected, "{uri}");
    }
    let keyed_upload = |body: String| {
        let mut r = request(
            Method::POST,
            "/uploads",
            Some("text/csv"),
            body.into_bytes(),
        );
        r.headers_mut()
            .insert("idempotency-key", "key-1".parse().unwrap());
        r
    };
    let first = pipeline.call_api(keyed_upload(csv.clone())).await.unwrap();
    // Recorded and stored; the rows follow from the stored upload's event.
    assert_eq!(
        c.check(&Method::POST, "/uploads", &first)["status"],
        "PENDING"
    );
    let other = csv.replace("Cups", "Mugs");
    let reused = pipeline.call_api(keyed_upload(other)).await.unwrap();
    assert_eq!(reused.status(), 422);
    c.check(&Method::POST, "/uploads", &reused);

    // While it runs (its upload ingested, as the bucket's event does).
    pipeline.deliver_upload_events().await.unwrap();
    let (status, running) = call(
        &mut c,
        Method::GET,
        &format!("/requests/{id}"),
        None,
        Vec::new(),
    )
    .await;
    assert_eq!(
        (status, running["status"].as_str()),
        (200, Some("PROCESSING"))
    );
    for (method, uri, expected) in [
        (Method::GET, format!("/requests/{id}?limit=5000"), 400),
        (Method::GET, format!("/requests/{id}/output.csv"), 409),
        (
            Method::POST,
            format!("/requests/{id}/webhook/redeliver"),
            409,
        ),
    ] {
        let (status, _) = call(&mut c, method, &uri, None, Vec::new()).await;
        assert_eq!(status, expected, "{uri}");
    }

    // A second request, cancelled before any of its rows ran: twice, the same answer.
    let other_csv = csv.replace("Prints", "Posters");
    let (status, other) = call(
        &mut c,
        Method::POST,
        "/uploads",
        Some("text/csv"),
        other_csv.into_bytes(),
    )
    .await;
    assert_eq!(status, 202);
    let cancelled = other["request_id"].as_str().unwrap().to_owned();
    pipeline.deliver_upload_events().await.unwrap();
    let (status, first) = call(
        &mut c,
        Method::POST,
        &format!("/requests/{cancelled}/cancel"),
        None,
        Vec::new(),
    )
    .await;
    assert_eq!(
        (status, first["status"].as_str()),
        (202, Some("PROCESSING"))
    );
    let (status, again) = call(
        &mut c,
        Method::POST,
        &format!("/requests/{cancelled}/cancel"),
        None,
        Vec::new(),
    )
    .await;
    assert_eq!(
        (status, &again["cancel_requested_at"]),
        (202, &first["cancel_requested_at"])
    );

    // Unknown requests.
    let unknown = "0b9c2f5e-0000-4000-8000-000000000000";
    for (method, uri) in [
        (Method::GET, format!("/requests/{unknown}")),
        (Method::GET, format!("/requests/{unknown}/output.csv")),
        (
            Method::POST,
            format!("/requests/{unknown}/webhook/redeliver"),
        ),
        (Method::POST, format!("/requests/{unknown}/cancel")),
        (Method::POST, format!("/requests/{unknown}/retry")),
    ] {
        let (status, _) = call(&mut c, method, &uri, None, Vec::new()).await;
        assert_eq!(status, 404);
    }

    // Finished: one image failed.
    pipeline.run_until_done(&id, |_| {}).await.unwrap();
    let (status, done) = call(
        &mut c,
        Method::GET,
        &format!("/requests/{id}?limit=1"),
        None,
        Vec::new(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(done["status"], "COMPLETED_WITH_ERRORS");
    assert!(done["next_cursor"].is_string());
    for (method, uri, expected) in [
        (Method::GET, format!("/requests/{id}"), 200),
        (Method::GET, format!("/requests/{id}/output.csv"), 200),
        // Local runs have no webhooks queue.
        (
            Method::POST,
            format!("/requests/{id}/webhook/redeliver"),
            501,
        ),
    ] {
        let (status, _) = call(&mut c, method, &uri, None, Vec::new()).await;
        assert_eq!(status, expected, "{uri}");
    }

    // The cancelled request ends CANCELLED, every image `cancelled`, with its output CSV.
    pipeline.run_until_done(&cancelled, |_| {}).await.unwrap();
    let (status, ended) = call(
        &mut c,
        Method::GET,
        &format!("/requests/{cancelled}"),
        None,
        Vec::new(),
    )
    .await;
    assert_eq!((status, ended["status"].as_str()), (200, Some("CANCELLED")));
    let codes: Vec<&str> = ended["products"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["images"].as_array().unwrap())
        .map(|i| i["error_code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["cancelled"; 3]);
    assert!(ended["output_csv_url"].is_string());
    let (status, _) = call(
        &mut c,
        Method::POST,
        &format!("/requests/{cancelled}/cancel"),
        None,
        Vec::new(),
    )
    .await;
    assert_eq!(status, 409, "a finished request cannot be cancelled");

    // Retrying it runs the three cancelled images again under a new request.
    let (status, retry) = call(
        &mut c,
        Method::POST,
        &format!("/requests/{cancelled}/retry"),
        None,
        Vec::new(),
    )
    .await;
    assert_eq!((status, retry["images_to_retry"].as_u64()), (202, Some(3)));
    let retry_id = retry["request_id"].as_str().unwrap().to_owned();
    pipeline.run_until_done(&retry_id, |_| {}).await.unwrap();
    let (status, done) = call(
        &mut c,
        Method::GET,
        &format!("/requests/{retry_id}"),
        None,
        Vec::new(),
    )
    .await;
    assert_eq!(
        (status, done["retry_of"].as_str()),
        (200, Some(cancelled.as_str()))
    );
    // The same retry again; the retry's own failure (a missing image) is retried by a retry of
    // the retry, which cannot be retried while it runs.
    let (status, again) = call(
        &mut c,
        Method::POST,
        &format!("/requests/{cancelled}/retry"),
        None,
        Vec::new(),
    )
    .await;
    assert_eq!(
        (status, again["request_id"].as_str()),
        (202, Some(retry_id.as_str()))
    );
    assert_eq!(done["progress"]["images_failed"], 1, "{done:#}");
    let (status, chained) = call(
        &mut c,
        Method::POST,
        &format!("/requests/{retry_id}/retry"),
        None,
        Vec::new(),
    )
    .await;
    assert_eq!(
        (status, chained["images_to_retry"].as_u64()),
        (202, Some(1))
    );
    let chained = chained["request_id"].as_str().unwrap().to_owned();
    let (status, _) = call(
        &mut c,
        Method::POST,
        &format!("/requests/{chained}/retry"),
        None,
        Vec::new(),
    )
    .await;
    assert_eq!(status, 409, "a running request cannot be retried");
    pipeline.run_until_done(&chained, |_| {}).await.unwrap();

    // Every documented operation was exercised.
    let missing: Vec<_> = c
        .documented_operations()
        .difference(&c.covered)
        .cloned()
        .collect();
    assert!(missing.is_empty(), "never called: {missing:?}");

    // Outside the document: 404 and 405 are problem details too.
    for (method, uri, expected) in [
        (Method::GET, "/nowhere", 404),
        (Method::DELETE, "/uploads", 405),
    ] {
        let response = pipeline
            .call_api(request(method, uri, None, Vec::new()))
            .await
            .unwrap();
        assert_eq!(response.status(), expected);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
}

/// The schema the document gives the parameter `name` of `method path` (query or header), or
/// the multipart form's property `name` when `form` is set; with the document's components.
fn input_schema(doc: &Value, method: &str, path: &str, name: &str, form: bool) -> Value {
    let operation = &doc["paths"][path][method];
    let mut schema = if form {
        let form = &operation["requestBody"]["content"]["multipart/form-data"]["schema"];
        let form = match form["$ref"].as_str() {
            Some(r) => &doc["components"]["schemas"][r.rsplit('/').next().unwrap()],
            None => form,
        };
        form["properties"][name].clone()
    } else {
        operation["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"))["schema"]
            .clone()
    };
    assert!(schema.is_object(), "{method} {path}: no schema for {name}");
    schema["components"] = doc["components"].clone();
    schema
}

/// Values the handlers refuse with 400 are outside the document's schemas, so a client (or a
/// property-based run of the document) that keeps to the document is never refused for them;
/// the values the handlers take are inside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_input_the_handlers_refuse_is_outside_the_documented_schema() {
    let doc = pixpress_api::openapi::document();
    let dir = std::env::temp_dir().join(format!("pixpress-inputs-{}", uuid::Uuid::new_v4()));
    let pipeline = LocalPipeline::new(&Config::default(), PipelineOptions::new(&dir)).unwrap();
    let csv = b"S. No.,Product Name,Input Image Urls\n1,Mug,https://img.example/1.jpg\n".to_vec();
    let accepts = |schema: &Value, value: &Value| {
        jsonschema::options()
            .should_validate_formats(true)
            .build(schema)
            .unwrap()
            .is_valid(value)
    };
    // (method, path, parameter, in the form?, refused value, a taken value)
    let cases = [
        (
            "get",
            "/requests/{id}",
            "cursor",
            false,
            json!(""),
            json!("100"),
        ),
        (
            "get",
            "/requests/{id}",
            "cursor",
            false,
            json!("99999999999"),
            json!("0"),
        ),
        (
            "post",
            "/uploads",
            "webhook_url",
            false,
            json!("not a url"),
            json!("https://hooks.example/done"),
        ),
        (
            "post",
            "/uploads",
            "webhook_url",
            true,
            json!("ftp://hooks.example/x"),
            json!("https://hooks.example/done"),
        ),
        (
            "post",
            "/uploads",
            "max_dimension",
            true,
            json!(0),
            json!(800),
        ),
        (
            "post",
            "/uploads",
            "max_dimension",
            false,
            json!(0),
            json!(800),
        ),
        (
            "post",
            "/uploads",
            "max_dimension",
            false,
            json!(70_000),
            json!(65_535),
        ),
        (
            "post",
            "/upload-urls",
            "max_dimension",
            false,
            json!(70_000),
            json!(1),
        ),
        (
            "post",
            "/uploads",
            "webhook_url",
            false,
            json!("HTTP://"),
            json!(""),
        ),
    ];
    for (method, path, name, form, refused, taken) in cases {
        let schema = input_schema(&doc, method, path, name, form);
        assert!(
            !accepts(&schema, &refused),
            "{method} {path}: the document admits {name} = {refused}"
        );
        assert!(
            accepts(&schema, &taken),
            "{method} {path}: {name} = {taken}"
        );
    }
    // …and the handlers do refuse them.
    let raw = |query: String| {
        request(
            Method::POST,
            &format!("/uploads?{query}"),
            Some("text/csv"),
            csv.clone(),
        )
    };
    for query in [
        "webhook_url=not%20a%20url",
        "webhook_url=HTTP%3A%2F%2F",
        "max_dimension=0",
        "max_dimension=70000",
    ] {
        let answer = pipeline.call_api(raw(query.to_owned())).await.unwrap();
        assert_eq!(answer.status(), 400, "{query}");
    }
    let boundary = "pixpress-boundary";
    let mut form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"max_dimension\"\r\n\r\n0\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.csv\"\r\nContent-Type: text/csv\r\n\r\n"
    )
    .into_bytes();
    form.extend_from_slice(&csv);
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let answer = pipeline
        .call_api(request(
            Method::POST,
            "/uploads",
            Some(&format!("multipart/form-data; boundary={boundary}")),
            form,
        ))
        .await
        .unwrap();
    assert_eq!(answer.status(), 400, "max_dimension=0 in the form");
    for cursor in ["", "99999999999"] {
        let answer = pipeline
            .call_api(request(
                Method::GET,
                &format!("/requests/unknown?cursor={cursor}"),
                None,
                Vec::new(),
            ))
            .await
            .unwrap();
        assert_eq!(answer.status(), 400, "cursor={cursor:?}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
