//! The `pixpress` binary as a user runs it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pixpress_test_support::manifest_dir;
use std::process::Command;

fn pixpress() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pixpress"))
}

#[test]
fn run_with_an_invalid_csv_exits_2_and_lists_every_row_error() {
    let dir = std::env::temp_dir().join(format!("pixpress-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("bad.csv");
    std::fs::write(
        &csv,
        "S. No.,Product Name,Input Image Urls\n1.,Mug,https://a.example/1.jpg,https://a.example/2.jpg\n2.,,\n",
    )
    .unwrap();
    let output = pixpress()
        .arg("run")
        .arg(&csv)
        .arg("--out")
        .arg(dir.join("out"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("row 2, column Input Image Urls: [unquoted_url_list]"),
        "{stderr}"
    );
    assert!(
        stderr.contains("row 3, column Product Name: [missing_product_name]"),
        "{stderr}"
    );
    assert!(
        stderr.contains("row 3, column Input Image Urls: [missing_urls]"),
        "{stderr}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn demo_compresses_the_bundled_photos_and_verifies_its_webhook() {
    let dir = std::env::temp_dir().join(format!("pixpress-demo-{}", uuid::Uuid::new_v4()));
    let output = pixpress()
        .arg("demo")
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("COMPLETED_WITH_ERRORS"), "{stdout}");
    assert!(stdout.contains("6 ok, 1 failed of 7"), "{stdout}");
    assert!(stdout.contains("signature verified"), "{stdout}");
    let out_csv = std::fs::read_to_string(dir.join("output.csv")).unwrap();
    assert_eq!(out_csv.lines().count(), 4);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn invoke_runs_the_api_handler_on_a_sample_event() {
    let event = format!(
        "{}/../events/api/post-upload-invalid-csv.json",
        manifest_dir()
    );
    let dir = std::env::temp_dir().join(format!("pixpress-invoke-{}", uuid::Uuid::new_v4()));
    let output = pixpress()
        .args(["invoke", "api"])
        .arg(&event)
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let response: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(response["statusCode"], 400);
    assert_eq!(
        response["headers"]["content-type"],
        "application/problem+json"
    );
    let problem: serde_json::Value =
        serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(problem["errors"][0]["code"], "unquoted_url_list");
    // The template's logical name, as `sam local invoke` takes it, runs the same handler.
    let by_logical_name = pixpress()
        .args(["invoke", "ApiFunction"])
        .arg(&event)
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .unwrap();
    let again: serde_json::Value = serde_json::from_slice(&by_logical_name.stdout).unwrap();
    assert_eq!(again["statusCode"], 400);
    let _ = std::fs::remove_dir_all(dir);
}

/// `pixpress webhook verify` on the Standard Webhooks reference vector (a 2021 timestamp, so
/// stale today) and on a fresh signature made with the same secret.
#[test]
fn webhook_verify_exits_0_for_a_valid_delivery_and_1_with_the_reason_otherwise() {
    use std::io::Write as _;
    use std::process::Stdio;

    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let verify = |id: &str, timestamp: &str, signature: &str, body: &[u8]| {
        let mut child = pixpress()
            .args(["webhook", "verify", "--secret", secret, "--id", id])
            .args(["--timestamp", timestamp, "--signature", signature])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(body).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let body = br#"{"type":"request.completed"}"#;
    let now = chrono::Utc::now().timestamp();
    let signature = pixpress_domain::webhook::WebhookSecret::parse(secret)
        .unwrap()
        .sign("msg_1", now, body);
    assert_eq!(
        verify("msg_1", &now.to_string(), &signature, body).0,
        Some(0)
    );
    let (code, stderr) = verify("msg_1", &now.to_string(), &signature, b"{}");
    assert_eq!(code, Some(1));
    assert!(stderr.contains("bad signature"), "{stderr}");
    let (code, stderr) = verify("msg_1", &now.to_string(), "v1,", body);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("nothing after it"), "{stderr}");
    let (code, stderr) = verify(
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "1614265330",
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        br#"{"test": 2432232314}"#,
    );
    assert_eq!(code, Some(1));
    assert!(stderr.contains("s old"), "{stderr}");
}

#[test]
fn keys_are_created_listed_and_revoked_and_the_key_is_shown_only_once() {
    let dir = std::env::temp_dir().join(format!("pixpress-cli-keys-{}", uuid::Uuid::new_v4()));
    let keys = |args: &[&str]| {
        let out = pixpress()
            .arg("keys")
            .args(args)
            .arg("--data-dir")
            .arg(&dir)
            .arg("--json")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.code(), stdout)
    };
    let (code, stdout) = keys(&["create", "--tenant", "acme"]);
    assert_eq!(code, Some(0), "{stdout}");
    let created: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(created["tenant"], "acme");
    let api_key = created["api_key"].as_str().unwrap();
    let key_id = created["key_id"].as_str().unwrap();
    assert!(api_key.starts_with(&format!("pk_{key_id}_")));
    assert!(
        created["webhook_secret"]
            .as_str()
            .unwrap()
            .starts_with("whsec_")
    );
    let stored = std::fs::read_to_string(dir.join("keys.json")).unwrap();
    assert!(!stored.contains(api_key), "only the hash is stored");

    let (_, listed) = keys(&["list"]);
    assert!(
        listed.contains(key_id) && !listed.contains(api_key),
        "{listed}"
    );
    assert_eq!(keys(&["revoke", key_id]).0, Some(0));
    let (_, listed) = keys(&["list"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert!(listed[0]["revoked_at"].is_string(), "{listed}");
    assert_eq!(keys(&["revoke", "0000000000000000"]).0, Some(1));
    let (code, rotated) = keys(&["rotate-webhook-secret", "--tenant", "acme"]);
    assert_eq!(code, Some(0), "{rotated}");
    let rotated: serde_json::Value = serde_json::from_str(&rotated).unwrap();
    assert_ne!(rotated["webhook_secret"], created["webhook_secret"]);
    assert!(rotated["previous_valid_until"].is_string());
    assert_eq!(
        keys(&["rotate-webhook-secret", "--tenant", "nobody"]).0,
        Some(1)
    );
    assert_eq!(keys(&["create", "--tenant", "Not Valid"]).0, Some(1));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn serve_refuses_no_auth_off_loopback() {
    let out = pixpress()
        .args(["serve", "--addr", "0.0.0.0:0", "--no-auth"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--no-auth is allowed only on a loopback address"),
        "{stderr}"
    );
}

/// Every function has a sample event: the webhook sender on a job for a request this empty
/// state does not hold skips it and reports no failure.
/// The embedded backends start empty; `invoke` seeds what each sample event names, so every
/// file in `events/` does what it would in a deployment: the worker refuses the SSRF URLs of its
/// sample row, the dead-letter handler records its row, the notifier writes the output CSV,
/// s3-ingest reads the CSV beside its event, the sender delivers a verified webhook.
#[test]
fn every_sample_event_does_something_real_with_the_local_backends() {
    let events = format!("{}/../events", manifest_dir());
    let run = |function: &str, event: &str| {
        let dir = std::env::temp_dir().join(format!("pixpress-invoke-{}", uuid::Uuid::new_v4()));
        let output = pixpress()
            .args(["invoke", function])
            .arg(format!("{events}/{event}"))
            .arg("--data-dir")
            .arg(&dir)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{function} {event}: {stderr}");
        let response: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        (dir, response, stderr)
    };
    let request = "3b241101-e2bb-4255-8caf-4136c566a962";

    let (_, response, stderr) = run("row-worker", "row-worker/row-batch.json");
    assert!(
        stderr.contains(&format!("seeded request {request}")),
        "{stderr}"
    );
    assert_eq!(stderr.matches("[blocked_address]").count(), 2, "{stderr}");
    assert!(stderr.contains("images: 0 ok, 2 failed of 2"), "{stderr}");
    // Only the malformed message is handed back.
    assert_eq!(response["batchItemFailures"].as_array().unwrap().len(), 1);

    let (_, _, stderr) = run(
        "RowDeadLetterFunction",
        "row-dead-letter/dead-lettered-rows.json",
    );
    assert!(
        stderr.contains(&format!(
            "afterwards, request {request}: COMPLETED_WITH_ERRORS"
        )),
        "{stderr}"
    );

    let (dir, _, stderr) = run(
        "completion-notifier",
        "completion-notifier/terminal-transition.json",
    );
    assert!(stderr.contains("seeded request"), "{stderr}");
    let csv =
        std::fs::read_to_string(dir.join(format!("results/default/{request}/output.csv"))).unwrap();
    assert!(
        csv.starts_with("S. No.,Product Name,Input Image Urls,Output Image Urls"),
        "{csv}"
    );
    let _ = std::fs::remove_dir_all(dir);

    let (dir, _, stderr) = run("s3-ingest", "s3-ingest/object-created.json");
    assert!(
        stderr.contains("seeded uploads/spring sale(2026).csv"),
        "{stderr}"
    );
    assert!(dir.join("uploads/spring sale(2026).csv").exists());
    let _ = std::fs::remove_dir_all(dir);

    let (_, response, stderr) = run("WebhookSenderFunction", "webhook-sender/webhook-job.json");
    assert_eq!(response["batchItemFailures"], serde_json::json!([]));
    assert!(
        stderr.contains(&format!(
            "delivery msg_{request}_completed (signature verified)"
        )),
        "{stderr}"
    );
}

/// Deployed, only the webhook sender holds the signing secret: a sweep of a deployment that
/// would deliver webhooks itself refuses to run (nothing is read or sent; no AWS call is made).
#[test]
fn sweep_of_a_deployment_without_its_webhooks_queue_refuses_to_run() {
    let output = pixpress()
        .arg("sweep")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        // Nothing listens here: a call made would fail with another error.
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("TABLE_NAME", "requests")
        .env("ROWS_QUEUE_URL", "http://127.0.0.1:9/000000000000/rows")
        .env("BUCKET_NAME", "bucket")
        .env_remove("WEBHOOKS_QUEUE_URL")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("WEBHOOKS_QUEUE_URL is not set"), "{stderr}");
}
