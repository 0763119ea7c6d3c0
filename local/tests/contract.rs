//! One contract suite for every implementation of the ports: the embedded adapters always, and
//! the AWS adapters against moto server on loopback (started here, stopped by PID on drop).
//! `scripts/test.sh` installs moto in a venv and points `MOTO_SERVER` at it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
#[path = "support/emulator.rs"]
mod emulator;

use std::time::Duration;

use emulator::start_moto;

use bytes::Bytes;
use chrono::Utc;
use pixpress_app::ingest::load_all_rows;
use pixpress_app::ports::{
    Created, ObjectStore, OriginSlots, OutputLedger, PortError, RequestControl, RequestIntake,
    RequestReader, RequestRepository, RowLedger, RowQueue, RowRecorded, Transition,
};
use pixpress_domain::model::{
    Counters, DeliveryState, Failure, ImageOutcome, ImageStatus, OutputSpec, RequestMeta,
    RequestStatus, RowJob, RowRecord, RowState, Webhook, WebhookAttempt,
};
use pixpress_domain::origin_slots::LeaseRequest;
use pixpress_embedded::{
    DirObjectStore, EmbeddedQueue, EmbeddedRequestRepository, InMemoryOriginSlots, TableStorage,
};
use pixpress_local::emulator::{EmulatorNames, emulator_sdk_config, provision};

fn meta(id: &str, rows: u64, webhook: bool) -> RequestMeta {
    let now = Utc::now();
    RequestMeta {
        counters: Counters {
            rows_total: rows,
            images_total: rows,
            ..Counters::default()
        },
        webhook: webhook.then(|| Webhook {
            url: "https://hooks.example.com/x".into(),
            state: DeliveryState::Pending,
            attempts: vec![],
        }),
        ..RequestMeta::new(id.to_owned(), "default", now)
    }
}

fn rows(n: u32) -> Vec<RowRecord> {
    (0..n)
        .map(|i| RowRecord {
            index: i,
            serial: format!("{}.", i + 1),
            product_name: format!("SKU {i}"),
            input_urls: vec![format!("https://img.example.com/{i}.jpg")],
            state: RowState::Pending,
            images: vec![],
            progress: Vec::new(),
        })
        .collect()
}

fn ok_image(bytes_in: u64, bytes_out: u64) -> ImageOutcome {
    ImageOutcome {
        status: ImageStatus::Ok,
        output_key: Some("images/x.jpg".into()),
        output_url: Some("https://cdn.example.com/images/x.jpg".into()),
        error_code: None,
        error: None,
        bytes_in: Some(bytes_in),
        bytes_out: Some(bytes_out),
        width: Some(10),
        height: Some(10),
        kept_original: false,
        quality: Some(50),
        score: pixpress_domain::model::Score::new(71.5),
    }
}

/// `serialised_flips`: call `complete` one after another instead of at once (moto evaluates a
/// condition and writes without isolation between concurrent requests; DynamoDB does not).
async fn repository_contract<R: RequestRepository>(repo: &R, serialised_flips: bool) {
    intake_contract(repo).await;
    row_ledger_contract(repo, serialised_flips).await;
    reader_contract(repo).await;
    output_ledger_contract(repo).await;
    control_contract(repo).await;
}

fn enqueue_failed() -> Failure {
    Failure {
        code: "enqueue_failed".into(),
        message: "x".into(),
        issues: vec![],
    }
}

/// `RequestIntake`: creation is conditional, and so are the moves to `PROCESSING` and
/// `FAILED` (`contract-1`, then `contract-2`).
async fn intake_contract<R: RequestIntake + RequestReader>(repo: &R) {
    // Conditional create.
    let m = meta("contract-1", 2, true);
    assert_eq!(
        repo.create_request(&m, &rows(2)).await.unwrap(),
        Created::Inserted
    );
    match repo
        .create_request(&meta("contract-1", 9, false), &rows(9))
        .await
        .unwrap()
    {
        Created::AlreadyExists(existing) => {
            assert_eq!(existing.counters.rows_total, 2, "not overwritten")
        }
        Created::Inserted => panic!("a second create must not overwrite"),
    }
    assert!(repo.get_request("missing").await.unwrap().is_none());

    // Status transitions are conditional.
    let now = Utc::now();
    assert_eq!(
        repo.mark_processing("contract-1", now).await.unwrap(),
        Transition::Applied(RequestStatus::Processing)
    );
    assert_eq!(
        repo.mark_processing("contract-1", now).await.unwrap(),
        Transition::NotApplied
    );

    repo.create_request(&meta("contract-2", 7, false), &rows(7))
        .await
        .unwrap();
    let failure = enqueue_failed();
    // Failure marks a non-terminal request.
    assert_eq!(
        repo.mark_failed("contract-2", &failure, now).await.unwrap(),
        Transition::Applied(RequestStatus::Failed)
    );
    assert_eq!(
        repo.get_request("contract-2")
            .await
            .unwrap()
            .unwrap()
            .failure
            .unwrap()
            .code,
        "enqueue_failed"
    );
}

/// `RowLedger`: a row counts once, the flip waits for the last row and happens exactly once,
/// and a terminal request stays terminal (`contract-1`).
async fn row_ledger_contract<R: RequestIntake + RequestReader + RowLedger>(
    repo: &R,
    serialised_flips: bool,
) {
    let now = Utc::now();
    // Row completion is idempotent and counts once; the flip waits for the last row.
    let first = repo
        .record_row_outcome("contract-1", 0, &[ok_image(1000, 400)], now)
        .await
        .unwrap();
    assert_eq!(
        first,
        RowRecorded::Recorded {
            all_rows_done: false
        }
    );
    let c = repo
        .get_request("contract-1")
        .await
        .unwrap()
        .unwrap()
        .counters;
    assert_eq!((c.rows_done, c.images_ok, c.bytes_out), (1, 1, 400));
    assert_eq!(
        repo.record_row_outcome("contract-1", 0, &[ok_image(1000, 400)], now)
            .await
            .unwrap(),
        RowRecorded::AlreadyRecorded {
            all_rows_done: false
        }
    );
    assert_eq!(
        repo.complete("contract-1", now).await.unwrap(),
        Transition::NotApplied
    );
    let last = repo
        .record_row_outcome(
            "contract-1",
            1,
            &[ImageOutcome::failed("http_404", "not found")],
            now,
        )
        .await
        .unwrap();
    assert_eq!(
        last,
        RowRecorded::Recorded {
            all_rows_done: true
        }
    );
    let c = repo
        .get_request("contract-1")
        .await
        .unwrap()
        .unwrap()
        .counters;
    assert_eq!((c.rows_done, c.images_failed), (2, 1));
    let flips = if serialised_flips {
        let mut flips = Vec::new();
        for _ in 0..4 {
            flips.push(repo.complete("contract-1", now).await);
        }
        flips
    } else {
        futures::future::join_all((0..4).map(|_| repo.complete("contract-1", now))).await
    };
    let applied: Vec<_> = flips
        .into_iter()
        .map(Result::unwrap)
        .filter(|t| *t != Transition::NotApplied)
        .collect();
    assert_eq!(
        applied,
        vec![Transition::Applied(RequestStatus::CompletedWithErrors)]
    );
    let stored = repo.get_request("contract-1").await.unwrap().unwrap();
    assert_eq!(stored.status, RequestStatus::CompletedWithErrors);
    assert!(stored.completed_at.is_some());
    assert_eq!(stored.counters.bytes_in, 1000);

    // A terminal request never fails afterwards.
    let failure = enqueue_failed();
    assert_eq!(
        repo.mark_failed("contract-1", &failure, now).await.unwrap(),
        Transition::NotApplied
    );
    // A row that does not exist is an error in every adapter, never "already recorded".
    assert!(
        repo.record_row_outcome("contract-1", 99, &[ok_image(1, 1)], now)
            .await
            .is_err()
    );

    // A FAILED request stops its rows; a finished one that was not cancelled does not.
    assert!(repo.stop_requested("contract-2").await.unwrap());
    assert!(!repo.stop_requested("contract-1").await.unwrap());
}

/// `RequestReader`: rows in input order with their outcomes, every row once across pages.
async fn reader_contract<R: RequestReader>(repo: &R) {
    // Rows come back in order with their outcomes.
    let page = repo.list_rows("contract-1", None, 10).await.unwrap();
    assert_eq!(page.rows.len(), 2);
    assert_eq!(
        page.rows[1].images[0].error_code.as_deref(),
        Some("http_404")
    );
    assert_eq!(page.rows[0].state, RowState::Done);

    // Pagination walks every row exactly once.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = repo.list_rows("contract-2", after, 3).await.unwrap();
        seen.extend(page.rows.iter().map(|r| r.index));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, (0..7).collect::<Vec<_>>());
}

/// `OutputLedger`: the output CSV's key and every webhook attempt are recorded.
async fn output_ledger_contract<R: RequestReader + OutputLedger>(repo: &R) {
    let now = Utc::now();
    // Output and webhook delivery are recorded.
    repo.record_output_csv("contract-1", "results/contract-1/output.csv", now)
        .await
        .unwrap();
    let attempt = WebhookAttempt {
        at: now,
        status_code: Some(500),
        error: Some("http_500".into()),
    };
    assert!(
        repo.record_webhook_attempt("contract-1", &attempt, DeliveryState::Pending, 0)
            .await
            .unwrap()
    );
    // The same call again (its first response lost): nothing more is recorded.
    assert!(
        !repo
            .record_webhook_attempt("contract-1", &attempt, DeliveryState::Pending, 0)
            .await
            .unwrap()
    );
    let attempt = WebhookAttempt {
        at: now,
        status_code: Some(204),
        error: None,
    };
    assert!(
        repo.record_webhook_attempt("contract-1", &attempt, DeliveryState::Delivered, 1)
            .await
            .unwrap()
    );
    let stored = repo.get_request("contract-1").await.unwrap().unwrap();
    assert_eq!(
        stored.output_csv_key.as_deref(),
        Some("results/contract-1/output.csv")
    );
    let webhook = stored.webhook.unwrap();
    assert_eq!(
        (webhook.attempts.len(), webhook.state),
        (2, DeliveryState::Delivered)
    );
}

/// `RequestControl`: a finished request's webhook can be delivered again.
async fn control_contract<R: RequestReader + RequestControl>(repo: &R) {
    // A redelivery sets the finished request's webhook pending again, keeping its attempts.
    assert!(repo.redeliver_webhook("contract-1").await.unwrap());
    let webhook = repo
        .get_request("contract-1")
        .await
        .unwrap()
        .unwrap()
        .webhook
        .unwrap();
    assert_eq!(
        (webhook.attempts.len(), webhook.state),
        (2, DeliveryState::Pending)
    );
}

/// A catalogue's request item first, then its rows chunk by chunk: a replayed chunk keeps the
/// rows it finds (even one a worker recorded meanwhile) and adds none twice; the output CSV's
/// saved progress round-trips and is dropped when the CSV is recorded.
async fn chunked_rows_contract<R: RequestRepository>(repo: &R) {
    use pixpress_domain::model::{OutputPart, OutputProgress};
    let id = "contract-chunks";
    assert_eq!(
        repo.create_request(&meta(id, 250, false), &[])
            .await
            .unwrap(),
        Created::Inserted
    );
    let all = rows(250);
    repo.put_rows(id, &all[..120]).await.unwrap();
    let now = Utc::now();
    repo.record_row_outcome(id, 3, &[ok_image(10, 5)], now)
        .await
        .unwrap();
    // The first chunk again (a replay), then the rest.
    repo.put_rows(id, &all[..120]).await.unwrap();
    repo.put_rows(id, &all[120..]).await.unwrap();
    let listed = load_all_rows(repo, id).await.unwrap();
    assert_eq!(listed.len(), 250, "every row once");
    assert!(listed.iter().zip(0u32..).all(|(r, i)| r.index == i));
    assert_eq!(listed[3].state, RowState::Done, "a recorded row is kept");
    assert_eq!(
        repo.get_request(id)
            .await
            .unwrap()
            .unwrap()
            .counters
            .rows_done,
        1
    );

    assert!(repo.output_progress(id).await.unwrap().is_none());
    let progress = OutputProgress {
        key: "results/default/contract-chunks/output.csv".into(),
        upload_id: "upload-1".into(),
        parts: vec![OutputPart {
            number: 1,
            tag: "\"etag-1\"".into(),
        }],
        after_row: 119,
    };
    repo.record_output_progress(id, &progress).await.unwrap();
    assert_eq!(repo.output_progress(id).await.unwrap(), Some(progress));
    repo.record_output_csv(id, "results/default/contract-chunks/output.csv", now)
        .await
        .unwrap();
    assert!(repo.output_progress(id).await.unwrap().is_none());
}

/// A request of more than 1,000 rows spreads its rows over partition keys: rows written in
/// chunks are listed once each in input order, every outcome counts, and the last row
/// completes it; row indices past 1,000,000 and 10,000,000 keep their order across keys.
/// `recorded`: how many rows to record (moto takes seconds per hundred transactions on a table
/// of a thousand items, so it records part of them and checks the counts).
async fn spread_rows_contract<R: RequestRepository>(repo: &R, recorded: u32) {
    let id = "contract-spread";
    let n = 1_050u32; // two partition keys
    repo.create_request(&meta(id, u64::from(n), false), &[])
        .await
        .unwrap();
    let all = rows(n);
    repo.put_rows(id, &all[..600]).await.unwrap();
    repo.put_rows(id, &all[600..]).await.unwrap();
    let listed = load_all_rows(repo, id).await.unwrap();
    assert_eq!(listed.len(), n as usize, "every row once");
    assert!(listed.iter().zip(0u32..).all(|(r, i)| r.index == i));
    let page = repo.list_rows(id, Some(99), 3).await.unwrap();
    assert_eq!(
        page.rows.iter().map(|r| r.index).collect::<Vec<_>>(),
        [100, 101, 102]
    );
    assert_eq!(page.next, Some(102));
    let now = Utc::now();
    let mut completed_by = Vec::new();
    for i in 0..recorded.min(n) {
        let recorded = repo
            .record_row_outcome(id, i, &[ok_image(10, 5)], now)
            .await
            .unwrap();
        assert!(matches!(recorded, RowRecorded::Recorded { .. }), "row {i}");
        if recorded.all_rows_done() {
            completed_by.push(i);
        }
    }
    let again = repo
        .record_row_outcome(id, 1, &[ok_image(10, 5)], now)
        .await
        .unwrap();
    assert!(matches!(again, RowRecorded::AlreadyRecorded { .. }));
    let counted = u64::from(recorded.min(n));
    if recorded >= n {
        assert_eq!(completed_by, [n - 1], "only the last row completes it");
        assert_eq!(
            repo.complete(id, now).await.unwrap(),
            Transition::Applied(RequestStatus::Completed)
        );
    } else {
        assert_eq!(completed_by, Vec::<u32>::new());
    }
    let state = repo.get_request(id).await.unwrap().unwrap();
    assert_eq!(state.counters.rows_done, counted);
    assert_eq!(state.counters.images_ok, counted);
    assert_eq!(state.counters.bytes_out, 5 * counted);

    // A catalogue of 10,000,002 rows, of which a few around the key changes are written.
    let id = "contract-ten-million";
    let total = 10_000_002u32;
    repo.create_request(&meta(id, u64::from(total), false), &[])
        .await
        .unwrap();
    let at = |indices: std::ops::RangeInclusive<u32>| -> Vec<RowRecord> {
        indices
            .map(|i| RowRecord {
                index: i,
                ..rows(1).remove(0)
            })
            .collect()
    };
    repo.put_rows(id, &at(999_998..=1_000_001)).await.unwrap();
    repo.put_rows(id, &at(9_999_999..=10_000_001))
        .await
        .unwrap();
    let page = repo.list_rows(id, Some(999_997), 4).await.unwrap();
    assert_eq!(
        page.rows.iter().map(|r| r.index).collect::<Vec<_>>(),
        [999_998, 999_999, 1_000_000, 1_000_001]
    );
    assert_eq!(page.next, Some(1_000_001));
    let page = repo.list_rows(id, Some(9_999_998), 10).await.unwrap();
    assert_eq!(
        page.rows.iter().map(|r| r.index).collect::<Vec<_>>(),
        [9_999_999, 10_000_000, 10_000_001]
    );
    assert_eq!(page.next, None, "the last page");
    let recorded = repo
        .record_row_outcome(id, 10_000_001, &[ok_image(10, 5)], now)
        .await
        .unwrap();
    assert_eq!(
        recorded,
        RowRecorded::Recorded {
            all_rows_done: false
        }
    );
    let running = repo.get_request(id).await.unwrap().unwrap();
    assert_eq!(running.counters.rows_done, 1);
}

/// Cancelling: only while running, the first time kept; the completion after the last row makes
/// the request `CANCELLED`; a finished request cannot be cancelled.
async fn cancel_contract<R: RequestRepository>(repo: &R) {
    let id = "contract-cancel";
    repo.create_request(&meta(id, 2, false), &rows(2))
        .await
        .unwrap();
    let now = Utc::now();
    repo.mark_processing(id, now).await.unwrap();
    assert!(!repo.stop_requested(id).await.unwrap());
    assert!(!repo.stop_requested("missing").await.unwrap());
    assert!(repo.request_cancel(id, now).await.unwrap());
    let later = now + chrono::Duration::seconds(5);
    assert!(
        repo.request_cancel(id, later).await.unwrap(),
        "asking again is fine"
    );
    assert!(repo.stop_requested(id).await.unwrap());
    let stored = repo.get_request(id).await.unwrap().unwrap();
    assert_eq!(
        stored.cancel_requested_at.map(|t| t.timestamp()),
        Some(now.timestamp()),
        "the first time is kept"
    );
    assert_eq!(stored.status, RequestStatus::Processing);
    for row in 0..2 {
        repo.record_row_outcome(id, row, &[ImageOutcome::failed("cancelled", "c")], now)
            .await
            .unwrap();
    }
    assert_eq!(
        repo.complete(id, now).await.unwrap(),
        Transition::Applied(RequestStatus::Cancelled)
    );
    assert!(!repo.request_cancel(id, now).await.unwrap(), "finished");
    assert!(!repo.request_cancel("missing", now).await.unwrap());
    // Redelivering a cancelled request's webhook is allowed like any finished one's.
    let hooked = "contract-cancel-hook";
    repo.create_request(&meta(hooked, 1, true), &rows(1))
        .await
        .unwrap();
    repo.request_cancel(hooked, now).await.unwrap();
    repo.record_row_outcome(hooked, 0, &[ImageOutcome::failed("cancelled", "c")], now)
        .await
        .unwrap();
    repo.complete(hooked, now).await.unwrap();
    // Not while its first series is still pending (the two would share one attempt count)...
    assert!(!repo.redeliver_webhook(hooked).await.unwrap());
    let failed = WebhookAttempt {
        at: now,
        status_code: Some(503),
        error: Some("http_503".into()),
    };
    repo.record_webhook_attempt(hooked, &failed, DeliveryState::Failed, 0)
        .await
        .unwrap();
    // ...but once it has ended.
    assert!(repo.redeliver_webhook(hooked).await.unwrap());
}

/// Retrying a finished request: a new request whose rows keep the stored images as progress,
/// every row enqueued, the original untouched; asking again finds the same retry.
async fn retry_contract<R: RequestRepository>(repo: &R) {
    use pixpress_app::ingest::{RetryError, retry_failed_images, retry_request_id};
    let id = "contract-retry";
    let mut m = meta(id, 3, true);
    m.counters.images_total = 6;
    let two = |mut r: RowRecord| {
        r.input_urls.push(format!("{}?second", r.input_urls[0]));
        r
    };
    repo.create_request(&m, &rows(3).into_iter().map(two).collect::<Vec<_>>())
        .await
        .unwrap();
    let now = Utc::now();
    repo.mark_processing(id, now).await.unwrap();
    let queue = EmbeddedQueue::new(5);
    let original = repo.get_request(id).await.unwrap().unwrap();
    assert!(matches!(
        retry_failed_images(repo, &queue, &original, 100, now).await,
        Err(RetryError::NotFinished(RequestStatus::Processing))
    ));
    let failed = || ImageOutcome::failed("http_404", "the origin answered HTTP 404");
    for (row, images) in [
        (0, vec![ok_image(100, 40), ok_image(200, 80)]),
        (1, vec![ok_image(300, 90), failed()]),
        (2, vec![failed(), failed()]),
    ] {
        repo.record_row_outcome(id, row, &images, now)
            .await
            .unwrap();
    }
    repo.complete(id, now).await.unwrap();
    let original = repo.get_request(id).await.unwrap().unwrap();
    assert_eq!(original.status, RequestStatus::CompletedWithErrors);
    assert!(matches!(
        retry_failed_images(repo, &queue, &original, 2, now).await,
        Err(RetryError::TooLarge { rows: 3, max: 2 })
    ));
    let retried = retry_failed_images(repo, &queue, &original, 100, now)
        .await
        .unwrap();
    assert_eq!(retried.images_to_retry, Some(3));
    assert!(!retried.replayed);
    let retry = retried.meta;
    assert_eq!(retry.request_id, retry_request_id(id));
    assert_eq!(retry.retry_of.as_deref(), Some(id));
    assert_eq!(retry.status, RequestStatus::Processing);
    assert_eq!(retry.counters.rows_total, 3);
    assert_eq!(retry.counters.images_total, 6);
    let webhook = retry.webhook.as_ref().unwrap();
    assert!(webhook.attempts.is_empty() && webhook.state == DeliveryState::Pending);
    let kept: Vec<Vec<u32>> = load_all_rows(repo, &retry.request_id)
        .await
        .unwrap()
        .iter()
        .map(|r| r.progress.iter().map(|p| p.position).collect())
        .collect();
    assert_eq!(kept, [vec![0, 1], vec![0], vec![]]);
    let jobs = queue.receive(10, Duration::from_secs(30)).unwrap();
    assert_eq!(jobs.len(), 3, "every row is enqueued");
    // The original is as it was; asking again enqueues nothing and names the same retry.
    assert_eq!(repo.get_request(id).await.unwrap().unwrap(), original);
    let again = retry_failed_images(repo, &queue, &original, 100, now)
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.meta.request_id, retry.request_id);
    assert!(
        queue
            .receive(10, Duration::from_secs(30))
            .unwrap()
            .is_empty()
    );

    // A catalogue that failed while it was read has rows that were never written: its retry
    // is refused (the counter shards count rows 0..n−1, so it could never complete).
    let gappy = "contract-retry-gaps";
    let written: Vec<RowRecord> = rows(3).into_iter().filter(|r| r.index != 1).collect();
    repo.create_request(&meta(gappy, 3, false), &written)
        .await
        .unwrap();
    let failure = Failure {
        code: "ingest_failed".into(),
        message: "the catalogue could not be read".into(),
        issues: Vec::new(),
    };
    repo.mark_failed(gappy, &failure, now).await.unwrap();
    let original = repo.get_request(gappy).await.unwrap().unwrap();
    assert!(matches!(
        retry_failed_images(repo, &queue, &original, 100, now).await,
        Err(RetryError::RowsMissing {
            written: 2,
            total: 3
        })
    ));
    assert!(
        repo.get_request(&retry_request_id(gappy))
            .await
            .unwrap()
            .is_none(),
        "nothing is written"
    );
}

/// Rows of one request recorded all at once (as a batch of concurrent workers does) are each
/// counted once, every row's redelivery is recognised, and exactly one caller flips the request.
async fn concurrent_rows_contract<R: RequestRepository>(repo: &R) {
    let id = "contract-concurrent";
    let n = 70;
    repo.create_request(&meta(id, u64::from(n), false), &rows(n))
        .await
        .unwrap();
    let now = Utc::now();
    repo.mark_processing(id, now).await.unwrap();
    let record = |i: u32| async move {
        let recorded = repo
            .record_row_outcome(id, i, &[ok_image(100, 40)], now)
            .await
            .unwrap();
        if recorded.all_rows_done() {
            repo.complete(id, now).await.unwrap()
        } else {
            Transition::NotApplied
        }
    };
    // Every row twice (a duplicate delivery racing the first), all at once.
    let outcomes = futures::future::join_all((0..n).chain(0..n).map(record)).await;
    let flips = outcomes
        .iter()
        .filter(|t| **t != Transition::NotApplied)
        .count();
    assert_eq!(flips, 1, "exactly one caller completes the request");
    let stored = repo.get_request(id).await.unwrap().unwrap();
    assert_eq!(stored.status, RequestStatus::Completed);
    assert_eq!(
        (
            stored.counters.rows_done,
            stored.counters.images_ok,
            stored.counters.bytes_in
        ),
        (u64::from(n), u64::from(n), 100 * u64::from(n))
    );
}

/// DynamoDB refuses an item over 400 KB: a row outcome that large fails with a permanent
/// `LimitExceeded`, and the row stays pending.
/// `OpenRequests`: the sweeper's index lists requests until they are settled, oldest first, a
/// page at a time; the progress mark keeps its first time while the count stands; settling is
/// conditional on a terminal status; a rechecked request completes (`open-*`).
async fn open_requests_contract<R: RequestRepository>(repo: &R) {
    // Created long ago, so no other contract's request is listed with them.
    let at = |year: i32| {
        chrono::DateTime::parse_from_rfc3339(&format!("{year}-01-01T00:00:00.5Z"))
            .unwrap()
            .with_timezone(&Utc)
    };
    for (id, year) in [("open-b", 2002), ("open-a", 2001), ("open-c", 2003)] {
        let m = RequestMeta {
            created_at: at(year),
            updated_at: at(year),
            ..meta(id, 2, false)
        };
        assert_eq!(
            repo.create_request(&m, &rows(2)).await.unwrap(),
            Created::Inserted
        );
    }
    let first = repo.list_open(at(2003), None, 1).await.unwrap();
    assert_eq!(first.request_ids, ["open-a"]);
    let second = repo
        .list_open(at(2003), first.next.as_deref(), 5)
        .await
        .unwrap();
    assert_eq!(
        second.request_ids,
        ["open-b"],
        "created before the bound only"
    );

    let (t1, t2, t3) = (at(2010), at(2011), at(2012));
    assert_eq!(
        repo.progress_unchanged_since("open-a", 0, t1)
            .await
            .unwrap(),
        t1
    );
    assert_eq!(
        repo.progress_unchanged_since("open-a", 0, t2)
            .await
            .unwrap(),
        t1,
        "the count stood still since the first look"
    );
    assert_eq!(
        repo.progress_unchanged_since("open-a", 1, t3)
            .await
            .unwrap(),
        t3,
        "a new count starts a new wait"
    );
    repo.restart_wait("open-a", 1, t3 + chrono::Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(
        repo.progress_unchanged_since("open-a", 1, t3)
            .await
            .unwrap(),
        t3 + chrono::Duration::hours(1),
        "a repair starts the wait again"
    );

    assert!(
        !repo.settle("open-a").await.unwrap(),
        "a running request is not settled"
    );
    repo.mark_failed("open-a", &enqueue_failed(), Utc::now())
        .await
        .unwrap();
    assert!(repo.settle("open-a").await.unwrap());
    assert!(
        !repo.settle("open-a").await.unwrap(),
        "settling twice changes nothing"
    );
    let listed = repo.list_open(at(2004), None, 10).await.unwrap();
    assert_eq!(listed.request_ids, ["open-b", "open-c"]);
    // The first page's cursor named the request settled since: the next page goes on after it.
    let resumed = repo
        .list_open(at(2004), first.next.as_deref(), 10)
        .await
        .unwrap();
    assert_eq!(
        resumed.request_ids,
        ["open-b", "open-c"],
        "a page after a settled request"
    );

    // A shard with a row still pending is not marked done.
    assert!(!repo.mark_shard_if_full("open-b", 0).await.unwrap());
    for index in 0..2 {
        repo.record_row_outcome("open-b", index, &[ok_image(10, 5)], Utc::now())
            .await
            .unwrap();
    }
    // Marking again (a writer that died before it did) changes nothing and finds all done.
    assert!(repo.mark_shard_if_full("open-b", 1).await.unwrap());
    assert_eq!(
        repo.complete("open-b", Utc::now()).await.unwrap(),
        Transition::Applied(RequestStatus::Completed)
    );
}

async fn item_size_contract<R: RequestRepository>(repo: &R) {
    let id = "contract-size";
    repo.create_request(&meta(id, 1, false), &rows(1))
        .await
        .unwrap();
    let mut huge = ImageOutcome::failed("http_500", "x");
    huge.error = Some("e".repeat(450 * 1024));
    let err = repo
        .record_row_outcome(id, 0, &[huge], Utc::now())
        .await
        .unwrap_err();
    assert!(matches!(err, PortError::LimitExceeded(_)), "{err}");
    assert!(!err.is_retryable());
    let page = repo.list_rows(id, None, 1).await.unwrap();
    assert_eq!(page.rows[0].state, RowState::Pending);
}

/// An upload whose first attempt stopped part-way (here: a row DynamoDB refuses, after the
/// request item was written) leaves no visible request; another upload under the same id (a
/// reused idempotency key) writes nothing, and the same upload finishes it (`contract-half`).
async fn half_written_contract<R: RequestRepository>(repo: &R) {
    let id = "contract-half";
    let upload = |fingerprint: &str, rows: Vec<RowRecord>| RequestMeta {
        fingerprint: Some(fingerprint.to_owned()),
        ..meta(id, rows.len() as u64, false)
    };
    let mut first = rows(2);
    first[1].product_name = "p".repeat(450 * 1024);
    let err = repo
        .create_request(&upload("upload-a", first.clone()), &first)
        .await
        .unwrap_err();
    assert!(matches!(err, PortError::LimitExceeded(_)), "{err}");
    assert_eq!(
        repo.get_request(id).await.unwrap(),
        None,
        "not a request yet"
    );

    let mut other = rows(3);
    other[0].product_name = "Another upload".into();
    match repo
        .create_request(&upload("upload-b", other.clone()), &other)
        .await
        .unwrap()
    {
        Created::AlreadyExists(existing) => {
            assert_eq!(existing.fingerprint.as_deref(), Some("upload-a"));
        }
        Created::Inserted => panic!("another upload was written under a half-written id"),
    }
    assert!(repo.list_rows(id, None, 10).await.unwrap().rows.len() <= 1);

    let retried = rows(2);
    assert_eq!(
        repo.create_request(&upload("upload-a", retried.clone()), &retried)
            .await
            .unwrap(),
        Created::Inserted
    );
    let stored = repo.list_rows(id, None, 10).await.unwrap().rows;
    assert_eq!(stored, retried, "only the first upload's rows");
    assert_eq!(
        repo.get_request(id)
            .await
            .unwrap()
            .unwrap()
            .fingerprint
            .as_deref(),
        Some("upload-a")
    );

    // Half-written, then rejected (s3-ingest's record of an upload Lambda gave up on): it
    // ends FAILED and shows, instead of staying invisible.
    let id = "contract-half-rejected";
    let mut first = rows(2);
    first[1].product_name = "p".repeat(450 * 1024);
    let half = RequestMeta {
        fingerprint: Some("upload-c".to_owned()),
        ..meta(id, 2, false)
    };
    assert!(repo.create_request(&half, &first).await.is_err());
    let rejected = RequestMeta {
        status: RequestStatus::Failed,
        failure: Some(enqueue_failed()),
        ..meta(id, 0, false)
    };
    match repo.create_request(&rejected, &[]).await.unwrap() {
        Created::AlreadyExists(existing) => {
            assert_eq!(existing.status, RequestStatus::Failed);
            assert_eq!(existing.failure, Some(enqueue_failed()));
        }
        Created::Inserted => panic!("a half-written request was overwritten"),
    }
    assert_eq!(
        repo.get_request(id).await.unwrap().unwrap().status,
        RequestStatus::Failed
    );
}

/// SQS refuses bodies with characters outside its allowed set: nothing is sent and the error
/// is permanent and names the row.
async fn queue_contract<Q: RowQueue>(queue: &Q) {
    let mut bad = job(7);
    bad.product_name = "Lamp \u{FFFF}".into();
    let err = queue.enqueue(&[bad]).await.unwrap_err();
    assert!(matches!(err, PortError::LimitExceeded(_)), "{err}");
    assert!(err.to_string().contains("row 7"), "{err}");
}

fn job(i: u32) -> RowJob {
    RowJob {
        version: 1,
        request_id: "contract-q".into(),
        tenant: "default".into(),
        row_index: i,
        serial: i.to_string(),
        product_name: "p".into(),
        input_urls: vec!["https://img.example.com/a.jpg".into()],
        output_spec: OutputSpec::default(),
        resume: false,
    }
}

async fn store_contract<S: ObjectStore>(store: &S) {
    store
        .put(
            "results/c/output.csv",
            Bytes::from_static(b"a,b\r\n"),
            "text/csv",
        )
        .await
        .unwrap();
    let got = store
        .get("results/c/output.csv", 1024)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got.bytes[..], b"a,b\r\n");
    assert!(got.content_type.starts_with("text/csv"));
    assert!(
        store
            .get("results/c/none.csv", 1024)
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        store.get("results/c/output.csv", 2).await,
        Err(PortError::TooLarge { size: 5, .. })
    ));
    multipart_contract(store).await;
    open_contract(store).await;
}

/// An object read as a stream, whole or by byte range, and a missing one.
async fn open_contract<S: ObjectStore>(store: &S) {
    use futures::StreamExt as _;
    let key = "uploads/c/streamed.csv";
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    store
        .put(key, Bytes::from(bytes.clone()), "text/csv")
        .await
        .unwrap();
    let read = |range: Option<std::ops::Range<u64>>| async move {
        let mut reader = store.open(key, range).await.unwrap().unwrap();
        let size = reader.size;
        let etag = reader.etag.clone();
        let mut got = Vec::new();
        while let Some(piece) = reader.body.next().await {
            got.extend_from_slice(&piece.unwrap());
        }
        (size, etag, got)
    };
    let (size, etag, whole) = read(None).await;
    assert_eq!(size, bytes.len() as u64);
    assert!(whole == bytes);
    let (size, range_etag, part) = read(Some(1_000..250_001)).await;
    assert_eq!(size, 249_001);
    assert!(part[..] == bytes[1_000..250_001]);
    assert_eq!(
        etag, range_etag,
        "a range read names the same object version"
    );
    assert!(
        store
            .open("uploads/c/none.csv", None)
            .await
            .unwrap()
            .is_none()
    );
}

/// A multipart object: invisible until completed, parts joined in order, S3's 5 MiB minimum
/// for every part but the last, and an aborted upload leaves nothing.
async fn multipart_contract<S: ObjectStore>(store: &S) {
    use pixpress_app::ports::MultipartWriter;
    const MIB: usize = 1024 * 1024;
    let key = "results/c/big.csv";
    let mut writer = MultipartWriter::start(store, key, "text/csv", 5 * MIB)
        .await
        .unwrap();
    let mut expected = Vec::new();
    for i in 0..12u8 {
        let chunk = vec![b'a' + i; MIB];
        writer.write(&chunk).await.unwrap();
        expected.extend(chunk);
        assert!(
            store.get(key, u64::MAX).await.unwrap().is_none(),
            "visible too early"
        );
    }
    writer.write(b"tail\r\n").await.unwrap();
    expected.extend(b"tail\r\n");
    assert_eq!(writer.finish().await.unwrap(), 3);
    let got = store.get(key, u64::MAX).await.unwrap().unwrap();
    assert_eq!(got.bytes.len(), expected.len());
    assert!(got.bytes[..] == expected[..], "parts joined out of order");

    let small = "results/c/small-parts.csv";
    let upload = store.create_multipart(small, "text/csv").await.unwrap();
    let first = store
        .upload_part(small, &upload, 1, Bytes::from_static(b"too small"))
        .await
        .unwrap();
    let second = store
        .upload_part(small, &upload, 2, Bytes::from_static(b"last"))
        .await
        .unwrap();
    let refused = store
        .complete_multipart(small, &upload, &[first, second])
        .await;
    assert!(
        matches!(refused, Err(PortError::LimitExceeded(_))),
        "{refused:?}"
    );
    store.abort_multipart(small, &upload).await.unwrap();
    assert!(store.get(small, u64::MAX).await.unwrap().is_none());
}

/// Download slots of origin hosts: holders share the cap, a lapsed lease frees its slots, a
/// back-off is seen by every holder, and concurrent holders never take more than the cap
/// (`concurrent`: moto serialises nothing, so its conditional writes can race — see the
/// README's emulator gaps).
async fn origin_slots_contract<O: OriginSlots>(slots: &O, concurrent: bool) {
    let ask = |holder, want| LeaseRequest {
        holder,
        want,
        cap: 10,
        ttl: Duration::from_secs(30),
    };
    let now = Utc::now();
    let host = format!("img-{}.example.com", uuid::Uuid::new_v4().simple());
    assert_eq!(
        slots.lease(&host, ask("a", 6), now).await.unwrap().granted,
        6
    );
    assert_eq!(
        slots.lease(&host, ask("b", 6), now).await.unwrap().granted,
        4
    );
    // a gives everything back; b can have the six it wanted.
    assert_eq!(
        slots.lease(&host, ask("a", 0), now).await.unwrap().granted,
        0
    );
    assert_eq!(
        slots.lease(&host, ask("b", 6), now).await.unwrap().granted,
        6
    );
    // b's lease lapses: its slots are free again half a minute later.
    let later = now + chrono::Duration::seconds(31);
    assert_eq!(
        slots
            .lease(&host, ask("c", 10), later)
            .await
            .unwrap()
            .granted,
        10
    );
    // A back-off reaches every holder until it ends.
    let until = later + chrono::Duration::seconds(5);
    slots.back_off(&host, until).await.unwrap();
    let lease = slots.lease(&host, ask("d", 1), later).await.unwrap();
    assert_eq!(lease.backoff_until, Some(until.timestamp_millis()));
    assert_eq!(lease.granted, 0, "c holds the whole cap");
    if !concurrent {
        return;
    }
    // Eight holders asking for three slots each at once: never more than the cap.
    let other = format!("img-{}.example.com", uuid::Uuid::new_v4().simple());
    let holders: Vec<String> = (0..8).map(|i| format!("h{i}")).collect();
    let granted: u32 =
        futures::future::join_all(holders.iter().map(|h| slots.lease(&other, ask(h, 3), now)))
            .await
            .into_iter()
            .map(|lease| lease.unwrap().granted)
            .sum();
    assert_eq!(granted, 10);
}

#[tokio::test]
async fn embedded_adapters_meet_the_contract() {
    origin_slots_contract(&InMemoryOriginSlots::default(), true).await;
    repository_contract(&EmbeddedRequestRepository::new(), false).await;
    chunked_rows_contract(&EmbeddedRequestRepository::new()).await;
    spread_rows_contract(&EmbeddedRequestRepository::new(), u32::MAX).await;
    cancel_contract(&EmbeddedRequestRepository::new()).await;
    retry_contract(&EmbeddedRequestRepository::new()).await;
    concurrent_rows_contract(&EmbeddedRequestRepository::new()).await;
    item_size_contract(&EmbeddedRequestRepository::new()).await;
    open_requests_contract(&EmbeddedRequestRepository::new()).await;
    half_written_contract(&EmbeddedRequestRepository::new()).await;
    let queue = EmbeddedQueue::new(5);
    queue_contract(&queue).await;
    queue
        .enqueue(&(0..23).map(job).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(
        queue.receive(100, Duration::from_secs(30)).unwrap().len(),
        23
    );
    let dir = std::env::temp_dir().join(format!("pixpress-contract-{}", uuid::Uuid::new_v4()));
    store_contract(&DirObjectStore::new(&dir, None).unwrap()).await;
    std::fs::remove_dir_all(dir).unwrap();
}

/// The embedded repository and queue with their rows and messages in a file (what
/// `pixpress run` and `serve` use) behave as in memory, and leave no file behind.
#[tokio::test]
async fn embedded_adapters_over_files_meet_the_contract() {
    let dir = std::env::temp_dir().join(format!("pixpress-tables-{}", uuid::Uuid::new_v4()));
    let storage = TableStorage::Dir(dir.clone());
    let repo = || EmbeddedRequestRepository::stored(&storage).unwrap();
    repository_contract(&repo(), false).await;
    chunked_rows_contract(&repo()).await;
    spread_rows_contract(&repo(), u32::MAX).await;
    cancel_contract(&repo()).await;
    retry_contract(&repo()).await;
    concurrent_rows_contract(&repo()).await;
    item_size_contract(&repo()).await;
    open_requests_contract(&repo()).await;
    half_written_contract(&repo()).await;
    let queue = EmbeddedQueue::stored(5, &storage).unwrap();
    queue_contract(&queue).await;
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(
        left.is_empty(),
        "files left in the data directory: {left:?}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_adapters_meet_the_contract_against_moto() {
    let (_moto, endpoint) = start_moto();
    let sdk = emulator_sdk_config(&endpoint).await;

    // The table, queues and bucket as template.yaml declares them.
    let backends = provision(
        &sdk,
        &EmulatorNames::with_prefix("pixpress-contract"),
        5,
        Some("https://cdn.example.com".into()),
    )
    .await
    .unwrap();
    repository_contract(&backends.repo, true).await;
    origin_slots_contract(&backends.slots, false).await;
    chunked_rows_contract(&backends.repo).await;
    let started = std::time::Instant::now();
    spread_rows_contract(&backends.repo, 40).await;
    eprintln!("spread rows contract: {:?}", started.elapsed());
    cancel_contract(&backends.repo).await;
    retry_contract(&backends.repo).await;
    // moto enforces DynamoDB's 400 KB item size too. (Concurrent transactions are not run
    // here: moto's TransactWriteItems is not isolated — see the README's emulator gaps.)
    item_size_contract(&backends.repo).await;
    open_requests_contract(&backends.repo).await;
    half_written_contract(&backends.repo).await;

    let queue = &backends.queue;
    queue_contract(queue).await;
    queue
        .enqueue(&(0..23).map(job).collect::<Vec<_>>())
        .await
        .unwrap();
    let mut received = Vec::new();
    for _ in 0..10 {
        for message in backends
            .rows
            .receive(10, Duration::from_secs(30))
            .await
            .unwrap()
        {
            assert_eq!(message.receive_count, 1);
            let job: RowJob = serde_json::from_str(&message.body).unwrap();
            received.push(job.row_index);
        }
        if received.len() >= 23 {
            break;
        }
    }
    received.sort_unstable();
    assert_eq!(
        received,
        (0..23).collect::<Vec<_>>(),
        "every row enqueued exactly once"
    );

    let store = &backends.store;
    store_contract(store).await;
    assert_eq!(
        store.public_url("images/a.jpg"),
        "https://cdn.example.com/images/a.jpg"
    );
    let presigned = store
        .presign_get("results/c/output.csv", Duration::from_secs(300))
        .await
        .unwrap();
    assert!(
        presigned.starts_with(&endpoint) && presigned.contains("X-Amz-Signature="),
        "{presigned}"
    );
}

#[tokio::test]
async fn deployed_backends_name_the_missing_variable() {
    let sdk = emulator_sdk_config("http://127.0.0.1:9").await;
    let err = pixpress_aws::AwsBackends::from_lookup(&sdk, |name| {
        (name == "TABLE_NAME").then(|| "t".to_owned())
    })
    .unwrap_err();
    assert_eq!(err.name, "ROWS_QUEUE_URL");
    let ok = pixpress_aws::AwsBackends::from_lookup(&sdk, |name| match name {
        "TABLE_NAME" | "ROWS_QUEUE_URL" | "BUCKET_NAME" => Some("x".to_owned()),
        "PUBLIC_BASE_URL" => Some("https://d111.cloudfront.net".to_owned()),
        _ => None,
    })
    .unwrap();
    assert_eq!(
        ok.store.public_url("images/r/1.jpg"),
        "https://d111.cloudfront.net/images/r/1.jpg"
    );
}
