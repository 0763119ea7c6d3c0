//! The webhook sender on the embedded adapters, against a loopback receiver: the notifier
//! queues, the sender delivers once per message, failures follow Svix's schedule through the
//! message's visibility, the eighth failure dead-letters.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::Utc;
use lambda_runtime::{Context, LambdaEvent};
use pixpress_app::config::Config;
use pixpress_app::deadline::Deadline;
use pixpress_app::ports::{OutputLedger, RequestIntake, RequestReader};
use pixpress_completion_notifier::{App, notify};
use pixpress_domain::model::{DeliveryState, RequestMeta, RequestStatus, Webhook, WebhookAttempt};
use pixpress_domain::webhook::WebhookSecret;
use pixpress_embedded::{DirObjectStore, EmbeddedQueue, EmbeddedRequestRepository, FileKeyStore};
use pixpress_webhook_sender::{Sent, handle, send_one};

type Received = Arc<Mutex<Vec<HeaderMap>>>;
type TestApp = App<EmbeddedRequestRepository, DirObjectStore, EmbeddedQueue, FileKeyStore>;

/// A receiver answering `status` (with `Retry-After: retry_after` when given).
async fn receiver(status: StatusCode, retry_after: Option<&'static str>) -> (SocketAddr, Received) {
    let received: Received = Arc::default();
    let seen = received.clone();
    let router = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(headers);
                let mut out = HeaderMap::new();
                if let Some(value) = retry_after {
                    out.insert("retry-after", value.parse().unwrap());
                }
                (status, out)
            }
        }),
    );
    let addr = pixpress_test_support::serve(router).await;
    (addr, received)
}

const SECRET: &[u8] = b"sender-test-secret";

/// A completed request with a pending webhook to `url`, and the notifier/sender app with a
/// webhooks queue.
async fn app(url: String) -> TestApp {
    let config = Config {
        fetch: pixpress_fetch::FetchConfig {
            policy: pixpress_fetch::NetworkPolicy::local(),
            ..pixpress_fetch::FetchConfig::default()
        },
        webhook_secret: Some(WebhookSecret::from_bytes(SECRET)),
        ..Config::default()
    };
    let dir = std::env::temp_dir().join(format!("pixpress-sender-{}", uuid::Uuid::new_v4()));
    let app = App::new(
        None,
        EmbeddedRequestRepository::new(),
        DirObjectStore::new(dir, None).unwrap(),
        &config,
    )
    .unwrap()
    .with_webhooks(Some(EmbeddedQueue::new(8)));
    let now = Utc::now();
    let meta = RequestMeta {
        status: RequestStatus::Completed,
        webhook: Some(Webhook {
            url,
            state: DeliveryState::Pending,
            attempts: vec![],
        }),
        completed_at: Some(now),
        ..RequestMeta::new("r-1", "default", now)
    };
    app.repo.create_request(&meta, &[]).await.unwrap();
    app
}

/// The queued message as Lambda hands it over, with `ApproximateReceiveCount`.
fn message(app: &TestApp, visibility: Duration) -> Option<SqsMessage> {
    let queue = app.webhooks.as_ref().unwrap();
    let received = queue.receive(1, visibility).unwrap().pop()?;
    let mut message = SqsMessage::default();
    message.message_id = Some(received.message_id);
    message.receipt_handle = Some(received.receipt_handle);
    message.body = Some(received.body);
    message.attributes = HashMap::from([(
        "ApproximateReceiveCount".to_owned(),
        received.receive_count.to_string(),
    )]);
    Some(message)
}

async fn webhook_state(app: &TestApp) -> Webhook {
    app.repo
        .get_request("r-1")
        .await
        .unwrap()
        .unwrap()
        .webhook
        .unwrap()
}

#[tokio::test]
async fn the_notifier_queues_and_the_sender_delivers_once_signed() {
    let (addr, received) = receiver(StatusCode::NO_CONTENT, None).await;
    let app = app(format!("http://{addr}/hook")).await;
    let notified = notify(&app, "r-1", Deadline::NONE).await.unwrap();
    assert_eq!(notified.webhook, Some(DeliveryState::Pending));
    assert!(
        received.lock().unwrap().is_empty(),
        "the notifier does not deliver"
    );
    let first = message(&app, Duration::from_secs(30)).unwrap();
    let mut event = SqsEvent::default();
    event.records = vec![first.clone()];
    let response = handle(&app, LambdaEvent::new(event, Context::default()))
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(webhook_state(&app).await.state, DeliveryState::Delivered);
    let headers = received.lock().unwrap()[0].clone();
    let h = |n: &str| headers.get(n).unwrap().to_str().unwrap().to_owned();
    assert!(h("webhook-signature").starts_with("v1,"));
    // A replayed message finds the webhook delivered and sends nothing.
    assert_eq!(send_one(&app, &first).await.unwrap(), Sent::Skipped);
    assert_eq!(received.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn failures_wait_for_the_next_attempt_of_the_schedule_and_the_eighth_ends_the_series() {
    let (addr, received) = receiver(StatusCode::SERVICE_UNAVAILABLE, None).await;
    let app = app(format!("http://{addr}/hook")).await;
    notify(&app, "r-1", Deadline::NONE).await.unwrap();
    let first = message(&app, Duration::from_secs(30)).unwrap();
    // Attempt 1 fails: the message is hidden for 5 s, the attempt recorded as pending.
    assert_eq!(
        send_one(&app, &first).await.unwrap(),
        Sent::RetryAfter(Duration::from_secs(5))
    );
    assert!(
        message(&app, Duration::from_secs(30)).is_none(),
        "hidden until due"
    );
    assert_eq!(webhook_state(&app).await.state, DeliveryState::Pending);
    // Svix's schedule by attempt number (the attempts recorded on the request).
    let expected = [
        (2, 5 * 60),
        (3, 30 * 60),
        (4, 2 * 3600),
        (5, 5 * 3600),
        (6, 10 * 3600),
        (7, 10 * 3600),
    ];
    for (attempt, seconds) in expected {
        assert_eq!(
            send_one(&app, &first).await.unwrap(),
            Sent::RetryAfter(Duration::from_secs(seconds)),
            "attempt {attempt}"
        );
    }
    assert_eq!(send_one(&app, &first).await.unwrap(), Sent::Failed);
    let webhook = webhook_state(&app).await;
    assert_eq!(webhook.state, DeliveryState::Failed);
    assert_eq!(webhook.attempts.len(), 8);
    assert_eq!(received.lock().unwrap().len(), 8);
    // Through the handler, the eighth failure ends the series: the message is done (the
    // request says failed, with every attempt), not returned to the queue.
    let (addr, _) = receiver(StatusCode::SERVICE_UNAVAILABLE, None).await;
    let again = app_with_pending(format!("http://{addr}/hook")).await;
    for recorded in 0..7 {
        let attempt = WebhookAttempt {
            at: Utc::now(),
            status_code: Some(503),
            error: None,
        };
        again
            .repo
            .record_webhook_attempt("r-1", &attempt, DeliveryState::Pending, recorded)
            .await
            .unwrap();
    }
    let mut event = SqsEvent::default();
    event.records = vec![message(&again, Duration::from_secs(30)).unwrap()];
    let response = handle(&again, LambdaEvent::new(event, Context::default()))
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    let webhook = webhook_state(&again).await;
    assert_eq!(webhook.state, DeliveryState::Failed);
    assert_eq!(webhook.attempts.len(), 8);
}

/// A queued request with a pending webhook.
async fn app_with_pending(url: String) -> TestApp {
    let app = app(url).await;
    notify(&app, "r-1", Deadline::NONE).await.unwrap();
    app
}

#[tokio::test]
async fn a_longer_retry_after_wins_over_the_schedule_and_gone_stops_at_once() {
    let (addr, _) = receiver(StatusCode::TOO_MANY_REQUESTS, Some("3600")).await;
    let app = app_with_pending(format!("http://{addr}/hook")).await;
    let first = message(&app, Duration::from_secs(30)).unwrap();
    assert_eq!(
        send_one(&app, &first).await.unwrap(),
        Sent::RetryAfter(Duration::from_secs(3600))
    );
    let (addr, received) = receiver(StatusCode::GONE, None).await;
    let app = app_with_pending(format!("http://{addr}/hook")).await;
    let first = message(&app, Duration::from_secs(30)).unwrap();
    assert_eq!(send_one(&app, &first).await.unwrap(), Sent::Refused);
    assert_eq!(received.lock().unwrap().len(), 1);
    assert_eq!(webhook_state(&app).await.state, DeliveryState::Failed);
}

/// A receiver asking for a 12-hour wait: SQS refuses a visibility that passes 12 hours after
/// the message's receipt, so the sender hides it as long as SQS still allows, and the attempt
/// is scheduled instead of failing back to the queue.
#[tokio::test]
async fn a_twelve_hour_retry_after_is_scheduled_within_what_sqs_allows() {
    let (addr, _) = receiver(StatusCode::SERVICE_UNAVAILABLE, Some("43200")).await;
    let app = app_with_pending(format!("http://{addr}/hook")).await;
    let first = message(&app, Duration::from_secs(30)).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(matches!(
        send_one(&app, &first).await.unwrap(),
        Sent::RetryAfter(_)
    ));
    assert!(
        message(&app, Duration::from_secs(30)).is_none(),
        "hidden for hours, not back after the visibility timeout"
    );
    assert_eq!(webhook_state(&app).await.state, DeliveryState::Pending);
}

#[tokio::test]
async fn a_batch_is_delivered_concurrently_so_slow_receivers_do_not_queue_behind_each_other() {
    // Each receiver holds its answer a moment; delivered one after another, a batch of ten
    // slow receivers would outlive the function's timeout and every message would lose an
    // attempt. The receiver records how many deliveries it holds at once.
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (now_in, max) = (in_flight.clone(), peak.clone());
    let router = Router::new().route(
        "/hook",
        post(move || {
            let (now_in, max) = (now_in.clone(), max.clone());
            async move {
                use std::sync::atomic::Ordering::SeqCst;
                let held = now_in.fetch_add(1, SeqCst) + 1;
                max.fetch_max(held, SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                now_in.fetch_sub(1, SeqCst);
                StatusCode::NO_CONTENT
            }
        }),
    );
    let addr = pixpress_test_support::serve(router).await;
    let app = app(format!("http://{addr}/hook")).await;
    let first = app.repo.get_request("r-1").await.unwrap().unwrap();
    for id in ["r-2", "r-3"] {
        let meta = RequestMeta {
            request_id: id.to_owned(),
            ..first.clone()
        };
        app.repo.create_request(&meta, &[]).await.unwrap();
    }
    for id in ["r-1", "r-2", "r-3"] {
        notify(&app, id, Deadline::NONE).await.unwrap();
    }
    let mut event = SqsEvent::default();
    event.records = (0..3)
        .map(|_| message(&app, Duration::from_secs(30)).unwrap())
        .collect();
    let response = handle(&app, LambdaEvent::new(event, Context::default()))
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    for id in ["r-1", "r-2", "r-3"] {
        let meta = app.repo.get_request(id).await.unwrap().unwrap();
        assert_eq!(
            meta.webhook.unwrap().state,
            DeliveryState::Delivered,
            "{id}"
        );
    }
    assert_eq!(
        peak.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "the three deliveries of the batch were not in flight together"
    );
}

#[tokio::test]
async fn an_invocation_cut_short_costs_no_attempt() {
    // Four invocations timed out before attempting anything: SQS counts five receives, but
    // nothing was recorded on the request, so this is attempt 1 and waits 5 s (attempt 5
    // would wait 5 h, and the series would end three attempts early).
    let (addr, received) = receiver(StatusCode::SERVICE_UNAVAILABLE, None).await;
    let app = app_with_pending(format!("http://{addr}/hook")).await;
    let mut fifth = message(&app, Duration::from_secs(30)).unwrap();
    fifth
        .attributes
        .insert("ApproximateReceiveCount".into(), "5".into());
    assert_eq!(
        send_one(&app, &fifth).await.unwrap(),
        Sent::RetryAfter(Duration::from_secs(5))
    );
    assert_eq!(received.lock().unwrap().len(), 1);
    assert_eq!(webhook_state(&app).await.attempts.len(), 1);
}
