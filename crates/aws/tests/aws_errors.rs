//! The AWS adapters under the failures AWS produces and emulators never do, with the SDK
//! clients mocked by `aws-smithy-mocks`: throttled and lost row writes, transactions cancelled
//! for each documented reason,
//! throttling that passes, S3 `SlowDown` and `AccessDenied`, and `SendMessageBatch` partial
//! failures. DynamoDB errors are the JSON bodies DynamoDB sends, so the SDK's own parser reads
//! them (Amazon DynamoDB API Reference, "Error handling", `TransactWriteItems`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pixpress_app::ports::RequestIntake as _;
use pixpress_app::ports::RowLedger as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::operation::put_item::PutItemOutput;
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::operation::scan::ScanOutput;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput;
use aws_sdk_dynamodb::operation::update_item::UpdateItemOutput;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput;
use aws_sdk_sqs::types::{BatchResultErrorEntry, SendMessageBatchResultEntry};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use bytes::Bytes;
use chrono::Utc;
use pixpress_app::auth::KeyStore as _;
use pixpress_app::ports::{
    Created, ObjectStore, OriginSlots, PortError, RowQueue, RowRecorded, Transition,
};
use pixpress_app::retry::RetryPolicy;
use pixpress_aws::{
    DynamoKeyStore, DynamoOriginSlots, DynamoRequestRepository, DynamoTable, S3ObjectStore,
    SqsQueue, SqsRowQueue,
};
use pixpress_domain::item::{CounterItem, MetaItem};
use pixpress_domain::model::{
    Counters, ImageOutcome, OutputSpec, RequestMeta, RequestStatus, RowJob, RowRecord, RowState,
};
use pixpress_domain::origin_slots::LeaseRequest;

/// Quick in-process retries, so the tests do not wait.
const FAST: RetryPolicy = RetryPolicy {
    attempts: 8,
    base: Duration::from_millis(1),
    cap: Duration::from_millis(5),
};

/// A `TransactionCanceledException` body with one reason per action.
fn cancelled(reasons: &[&str]) -> String {
    let reasons: Vec<serde_json::Value> = reasons
        .iter()
        .map(|code| match *code {
            "None" => serde_json::json!({ "Code": "None" }),
            code => serde_json::json!({ "Code": code, "Message": format!("{code} (test)") }),
        })
        .collect();
    serde_json::json!({
        "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
        "message": "Transaction cancelled, please refer cancellation reasons for specific reasons",
        "CancellationReasons": reasons,
    })
    .to_string()
}

/// The body DynamoDB answers a write whose condition does not hold.
fn conditional_check_failed() -> Option<String> {
    Some(dynamo_error(
        "ConditionalCheckFailedException",
        "The conditional request failed",
    ))
}

fn dynamo_error(kind: &str, message: &str) -> String {
    serde_json::json!({
        "__type": format!("com.amazonaws.dynamodb.v20120810#{kind}"),
        "message": message,
    })
    .to_string()
}

/// `TransactWriteItems` answered with `body` (HTTP 400) `times` times, then committed.
fn transact_failing(body: &str, times: usize) -> Rule {
    let body = body.to_owned();
    mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .sequence()
        .http_status(400, Some(body))
        .times(times)
        .output(|| TransactWriteItemsOutput::builder().build())
        .repeatedly()
        .build()
}

/// `TransactWriteItems` answered with `body` (HTTP 400) every time.
fn transact_always(body: &str) -> Rule {
    mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .sequence()
        .http_status(400, Some(body.to_owned()))
        .repeatedly()
        .build()
}

/// `GetItem` of request `r`'s item (a request of `rows` rows), as the repository reads it once
/// to learn where its rows are; other `GetItem`s pass to the next rule.
fn request_item(rows: u64) -> Rule {
    mock!(aws_sdk_dynamodb::Client::get_item)
        .match_requests(|req| {
            req.key()
                .and_then(|k| k.get("sk"))
                .is_some_and(|sk| sk == &AttributeValue::S("META".into()))
        })
        .then_output(move || {
            GetItemOutput::builder()
                .set_item(Some(
                    serde_dynamo::to_item(MetaItem::new(meta(rows), None)).unwrap(),
                ))
                .build()
        })
}

/// `true` when an `UpdateItem`'s key has a sort key starting with `prefix`.
fn updates(req: &aws_sdk_dynamodb::operation::update_item::UpdateItemInput, prefix: &str) -> bool {
    req.key()
        .and_then(|k| k.get("sk"))
        .and_then(|sk| sk.as_s().ok())
        .is_some_and(|sk| sk.starts_with(prefix))
}

/// The row's own `UpdateItem` (`PENDING` → `DONE`): answered with `body` (HTTP 400) `times`
/// times, then applied.
fn row_update_failing(body: Option<String>, times: usize) -> Rule {
    let rule = mock!(aws_sdk_dynamodb::Client::update_item)
        .match_requests(|req| updates(req, "ROW#"))
        .sequence();
    let rule = match body {
        Some(body) => rule.http_status(400, Some(body)).times(times),
        None => rule,
    };
    rule.output(|| UpdateItemOutput::builder().build())
        .repeatedly()
        .build()
}

/// The row's own `UpdateItem` answered with `body` (HTTP 400) every time.
fn row_update_always(body: String) -> Rule {
    mock!(aws_sdk_dynamodb::Client::update_item)
        .match_requests(|req| updates(req, "ROW#"))
        .sequence()
        .http_status(400, Some(body))
        .repeatedly()
        .build()
}

/// The counter shard item of a one-row request as an `ALL_NEW` answer.
fn shard_attributes(
    rows_done: u64,
    redelivered: u64,
) -> std::collections::HashMap<String, AttributeValue> {
    serde_dynamo::to_item(serde_json::json!({
        "pk": "REQ#r", "sk": "COUNT#00",
        "rows_total": 1, "rows_done": rows_done, "images_total": 0, "images_ok": 0,
        "images_failed": rows_done, "bytes_in": 0, "bytes_out": 0, "redelivered": redelivered,
    }))
    .unwrap()
}

/// The counter shard's `ADD` (`ALL_NEW`): answered with `body` (HTTP 400) `times` times, then
/// with the shard holding `rows_done` counted rows and `redelivered` redeliveries.
fn count_failing(body: Option<String>, times: usize, rows_done: u64, redelivered: u64) -> Rule {
    let rule = mock!(aws_sdk_dynamodb::Client::update_item)
        .match_requests(|req| {
            updates(req, "COUNT#")
                && req
                    .update_expression()
                    .is_some_and(|e| e.starts_with("ADD"))
        })
        .sequence();
    let rule = match body {
        Some(body) => rule.http_status(400, Some(body)).times(times),
        None => rule,
    };
    rule.output(move || {
        UpdateItemOutput::builder()
            .set_attributes(Some(shard_attributes(rows_done, redelivered)))
            .build()
    })
    .repeatedly()
    .build()
}

/// The request item's done-shards `ADD`: the last shard, so all 32 are done.
fn add_done_shard() -> Rule {
    mock!(aws_sdk_dynamodb::Client::update_item)
        .match_requests(|req| updates(req, "META"))
        .then_output(|| {
            UpdateItemOutput::builder()
                .attributes(
                    "done_shards",
                    AttributeValue::Ns((0..32).map(|s: u32| s.to_string()).collect()),
                )
                .build()
        })
}

/// `GetItem` of row 0: it exists.
fn row_exists() -> Rule {
    mock!(aws_sdk_dynamodb::Client::get_item).then_output(|| {
        GetItemOutput::builder()
            .item("sk", AttributeValue::S("ROW#000000".into()))
            .build()
    })
}

/// A repository over `rules` (plus the request item of a one-row request); the SDK itself does
/// not retry, so the adapter's own retries are what is counted.
fn repository_with(rules: &[&Rule]) -> DynamoRequestRepository {
    let meta = request_item(1);
    let mut all: Vec<&Rule> = vec![&meta];
    all.extend_from_slice(rules);
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, &all, |c| c
        .retry_config(RetryConfig::disabled()));
    DynamoRequestRepository::from(DynamoTable::from_client(client, "requests").with_retry(FAST))
}

async fn record(repo: &DynamoRequestRepository) -> Result<RowRecorded, PortError> {
    repo.record_row_outcome(
        "r",
        0,
        &[ImageOutcome::failed("http_404", "not found")],
        Utc::now(),
    )
    .await
}

#[tokio::test]
async fn throttling_of_the_row_write_or_of_its_count_is_retried_until_they_pass() {
    for kind in [
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
    ] {
        let body = Some(dynamo_error(
            kind,
            "Rate of requests exceeds the allowed throughput",
        ));
        // Twice refused for `kind`, then applied: both writes.
        let row = row_update_failing(body.clone(), 2);
        let count = count_failing(body, 2, 1, 0);
        let repo = repository_with(&[&row, &count, &add_done_shard()]);
        assert_eq!(
            record(&repo).await.unwrap(),
            RowRecorded::Recorded {
                all_rows_done: true
            },
            "{kind}"
        );
        assert_eq!(row.num_calls(), 3, "{kind}");
        assert_eq!(count.num_calls(), 3, "{kind}");
    }
}

#[tokio::test]
async fn only_the_rows_own_failed_condition_means_already_recorded() {
    let row = row_update_always(conditional_check_failed().unwrap());
    // The redelivery adds to `redelivered`; the shard was counted by its winner.
    let redelivered = mock!(aws_sdk_dynamodb::Client::update_item)
        .match_requests(|req| {
            updates(req, "COUNT#") && req.update_expression() == Some("ADD redelivered :one")
        })
        .then_output(|| {
            UpdateItemOutput::builder()
                .set_attributes(Some(shard_attributes(1, 1)))
                .build()
        });
    let repo = repository_with(&[&row, &redelivered, &row_exists(), &add_done_shard()]);
    assert_eq!(
        record(&repo).await.unwrap(),
        RowRecorded::AlreadyRecorded {
            all_rows_done: true
        }
    );
    assert_eq!(row.num_calls(), 1, "a recorded row is not retried");
    assert_eq!(
        redelivered.num_calls(),
        1,
        "the redelivery counts itself, not the row"
    );
    // The counter shard's condition failing and the shard not being there is an error.
    let count = mock!(aws_sdk_dynamodb::Client::update_item)
        .match_requests(|req| updates(req, "COUNT#"))
        .sequence()
        .http_status(400, conditional_check_failed())
        .repeatedly()
        .build();
    let no_item =
        mock!(aws_sdk_dynamodb::Client::get_item).then_output(|| GetItemOutput::builder().build());
    let repo = repository_with(&[&row_update_failing(None, 0), &count, &no_item]);
    let err = record(&repo).await.unwrap_err();
    assert!(
        matches!(&err, PortError::Unexpected(e) if e.to_string().contains("counter shard 0 of request r does not exist")),
        "{err}"
    );
}

/// The row's condition also fails when the row is not there at all: DynamoDB and the embedded
/// repository agree that this is an error, not a redelivery.
#[tokio::test]
async fn a_row_that_does_not_exist_is_an_error_not_already_recorded() {
    let row = row_update_always(conditional_check_failed().unwrap());
    let no_row =
        mock!(aws_sdk_dynamodb::Client::get_item).then_output(|| GetItemOutput::builder().build());
    let repo = repository_with(&[&row, &no_row]);
    let err = record(&repo).await.unwrap_err();
    assert!(
        matches!(&err, PortError::Unexpected(e) if e.to_string().contains("row 0 of request r does not exist")),
        "{err}"
    );
}

/// An `ADD` whose answer was lost may have been applied: sent again it could count the row
/// twice, so neither the SDK nor the adapter sends it again; the row's redelivery counts it.
#[tokio::test]
async fn a_count_whose_answer_was_lost_is_never_sent_again() {
    let lost = mock!(aws_sdk_dynamodb::Client::update_item)
        .match_requests(|req| updates(req, "COUNT#"))
        .sequence()
        .http_status(
            500,
            Some(dynamo_error("InternalServerError", "Internal server error")),
        )
        .repeatedly()
        .build();
    let row = row_update_failing(None, 0);
    let meta = request_item(1);
    // The SDK's standard retries are on here (3 attempts): the adapter turns them off.
    let client = mock_client!(
        aws_sdk_dynamodb,
        RuleMode::MatchAny,
        [&meta, &row, &lost],
        |c| c.retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(1))
        )
    );
    let repo = DynamoRequestRepository::from(
        DynamoTable::from_client(client, "requests").with_retry(FAST),
    );
    let err = record(&repo).await.unwrap_err();
    assert!(err.is_retryable(), "the row goes back to the queue: {err}");
    assert_eq!(lost.num_calls(), 1, "the ADD is sent once");
}

/// A writer that recorded a row and died before counting it leaves its shard short; the
/// row's redelivery finds `rows_done + redelivered` reaching the total, recounts the shard
/// from its rows and writes the exact tally.
#[tokio::test]
async fn a_shard_whose_writer_died_before_counting_is_recounted_from_its_rows() {
    let row = row_update_always(conditional_check_failed().unwrap());
    let count = count_failing(None, 0, 0, 1);
    let done_row = RowRecord {
        index: 0,
        serial: "1".into(),
        product_name: "p".into(),
        input_urls: vec!["https://x.test/a.jpg".into()],
        state: RowState::Done,
        images: vec![ImageOutcome::failed("http_404", "not found")],
        progress: Vec::new(),
    };
    let rows = mock!(aws_sdk_dynamodb::Client::query).then_output(move || {
        QueryOutput::builder()
            .items(
                serde_dynamo::to_item(pixpress_domain::item::RowItem::new(
                    "r",
                    1,
                    done_row.clone(),
                    None,
                ))
                .unwrap(),
            )
            .build()
    });
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    let exact = mock!(aws_sdk_dynamodb::Client::update_item)
        .match_requests(move |req| {
            let recount = updates(req, "COUNT#")
                && req
                    .update_expression()
                    .is_some_and(|e| e.starts_with("SET"));
            if recount {
                recorded.lock().unwrap().push(
                    req.expression_attribute_values()
                        .cloned()
                        .unwrap_or_default(),
                );
            }
            recount
        })
        .then_output(|| UpdateItemOutput::builder().build());
    let repo = repository_with(&[
        &row,
        &count,
        &exact,
        &rows,
        &row_exists(),
        &add_done_shard(),
    ]);
    assert_eq!(
        record(&repo).await.unwrap(),
        RowRecorded::AlreadyRecorded {
            all_rows_done: true
        }
    );
    let written = seen.lock().unwrap();
    assert_eq!(written.len(), 1, "one recount written");
    assert_eq!(written[0][":done"], AttributeValue::N("1".into()));
    assert_eq!(written[0][":failed"], AttributeValue::N("1".into()));
    assert_eq!(written[0][":verified"], AttributeValue::Bool(true));
}

fn meta(rows: u64) -> RequestMeta {
    let now = Utc::now();
    RequestMeta {
        counters: Counters {
            rows_total: rows,
            images_total: rows,
            ..Counters::default()
        },
        ..RequestMeta::new("r", "default", now)
    }
}

fn rows(n: u32) -> Vec<RowRecord> {
    (0..n)
        .map(|i| RowRecord {
            index: i,
            serial: i.to_string(),
            product_name: "p".into(),
            input_urls: vec!["https://img.example.com/a.jpg".into()],
            state: RowState::Pending,
            images: vec![],
            progress: Vec::new(),
        })
        .collect()
}

/// A repository for `create_request`: no request exists yet; `transact` answers
/// `TransactWriteItems`, and the number of actions of each call is recorded. Also returns the
/// rules of the request item's `PutItem` (written first, marked `creating`) and of the
/// `UpdateItem` that reveals it once every row is written.
fn creating(
    transact: Rule,
) -> (
    DynamoRequestRepository,
    Arc<Mutex<Vec<usize>>>,
    Rule,
    Rule,
    Rule,
) {
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let seen = sizes.clone();
    let counting = mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .match_requests(move |req| {
            seen.lock().unwrap().push(req.transact_items().len());
            false
        })
        .then_output(|| TransactWriteItemsOutput::builder().build());
    let missing =
        mock!(aws_sdk_dynamodb::Client::get_item).then_output(|| GetItemOutput::builder().build());
    let no_shards =
        mock!(aws_sdk_dynamodb::Client::query).then_output(|| QueryOutput::builder().build());
    let put_meta = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(|req| {
            req.item()
                .is_some_and(|item| item.get("creating") == Some(&AttributeValue::Bool(true)))
        })
        .then_output(|| PutItemOutput::builder().build());
    let reveal = mock!(aws_sdk_dynamodb::Client::update_item)
        .match_requests(|req| req.update_expression() == Some("REMOVE creating"))
        .then_output(|| UpdateItemOutput::builder().build());
    let client = mock_client!(
        aws_sdk_dynamodb,
        RuleMode::MatchAny,
        [
            &counting, &transact, &missing, &no_shards, &put_meta, &reveal
        ],
        |c| c.retry_config(RetryConfig::disabled())
    );
    (
        DynamoRequestRepository::from(
            DynamoTable::from_client(client, "requests").with_retry(FAST),
        ),
        sizes,
        transact,
        put_meta,
        reveal,
    )
}

#[tokio::test]
async fn creating_a_request_resends_only_the_items_that_do_not_exist_and_reveals_the_request_last()
{
    // Two rows and their two counter shards; the second row exists already (a replay).
    let (repo, sizes, _, put_meta, reveal) = creating(transact_failing(
        &cancelled(&["None", "ConditionalCheckFailed", "None", "None"]),
        1,
    ));
    assert_eq!(
        repo.create_request(&meta(2), &rows(2)).await.unwrap(),
        Created::Inserted
    );
    assert_eq!(*sizes.lock().unwrap(), vec![4, 3]);
    assert_eq!((put_meta.num_calls(), reveal.num_calls()), (1, 1));
}

#[tokio::test]
async fn a_throttled_chunk_is_retried_and_a_failed_chunk_never_writes_the_request() {
    let (repo, sizes, _, put_meta, reveal) = creating(transact_failing(
        &cancelled(&["ThrottlingError", "None", "None", "None"]),
        2,
    ));
    repo.create_request(&meta(2), &rows(2)).await.unwrap();
    assert_eq!(*sizes.lock().unwrap(), vec![4, 4, 4]);
    assert_eq!((put_meta.num_calls(), reveal.num_calls()), (1, 1));

    let (repo, _, transact, _, reveal) = creating(transact_always(&cancelled(&[
        "ValidationError",
        "None",
        "None",
        "None",
    ])));
    assert!(repo.create_request(&meta(2), &rows(2)).await.is_err());
    assert_eq!(transact.num_calls(), 1, "a validation error is not retried");
    assert_eq!(
        reveal.num_calls(),
        0,
        "a request whose rows are not all written must stay invisible"
    );
}

/// A chunk of a catalogue: one conditional `PutItem` per row, no transaction. A row that
/// exists (`ConditionalCheckFailedException`, a replayed chunk) is kept and not an error;
/// throttling is retried; an access error fails the chunk so its message is retried.
#[tokio::test]
async fn chunk_rows_are_plain_conditional_puts_that_keep_existing_rows_and_retry_throttling() {
    let put = mock!(aws_sdk_dynamodb::Client::put_item)
        .sequence()
        .http_status(400, conditional_check_failed())
        .http_status(
            400,
            Some(dynamo_error(
                "ProvisionedThroughputExceededException",
                "The level of configured provisioned throughput for the table was exceeded",
            )),
        )
        .times(2)
        .output(|| PutItemOutput::builder().build())
        .repeatedly()
        .build();
    let transact = mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .then_output(|| TransactWriteItemsOutput::builder().build());
    let client = mock_client!(
        aws_sdk_dynamodb,
        RuleMode::MatchAny,
        [&put, &transact, &request_item(5)],
        |c| c.retry_config(RetryConfig::disabled())
    );
    let repo = DynamoRequestRepository::from(
        DynamoTable::from_client(client, "requests").with_retry(FAST),
    );
    repo.put_rows("r", &rows(5)).await.unwrap();
    // One answer says the row exists (kept, not an error), two are throttling (retried),
    // four are writes: five rows, seven calls.
    assert_eq!(put.num_calls(), 1 + 2 + 4);
    assert_eq!(transact.num_calls(), 0, "no transaction for chunk rows");

    let denied = mock!(aws_sdk_dynamodb::Client::put_item)
        .sequence()
        .http_status(
            400,
            Some(dynamo_error("AccessDeniedException", "not authorized")),
        )
        .repeatedly()
        .build();
    let client = mock_client!(
        aws_sdk_dynamodb,
        RuleMode::MatchAny,
        [&denied, &request_item(3)],
        |c| c.retry_config(RetryConfig::disabled())
    );
    let repo = DynamoRequestRepository::from(
        DynamoTable::from_client(client, "requests").with_retry(FAST),
    );
    let err = repo.put_rows("r", &rows(3)).await.unwrap_err();
    assert!(matches!(err, PortError::Denied(_)), "{err}");
}

fn s3_store(rule: &aws_smithy_mocks::Rule) -> S3ObjectStore {
    let client = mock_client!(aws_sdk_s3, RuleMode::Sequential, [rule], |c| c
        .retry_config(
            aws_sdk_s3::config::retry::RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(1))
        ));
    S3ObjectStore::from_client(client, "data", None)
}

#[tokio::test]
async fn s3_slow_down_is_retried_and_access_denied_is_not() {
    let slow_down = mock!(aws_sdk_s3::Client::put_object)
        .sequence()
        .http_status(
            503,
            Some("<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>".into()),
        )
        .times(2)
        .output(|| aws_sdk_s3::operation::put_object::PutObjectOutput::builder().build())
        .build();
    let store = s3_store(&slow_down);
    store
        .put(
            "images/r/000000-00.jpg",
            Bytes::from_static(b"jpeg"),
            "image/jpeg",
        )
        .await
        .unwrap();
    assert_eq!(slow_down.num_calls(), 3);

    let denied = mock!(aws_sdk_s3::Client::put_object)
        .sequence()
        .http_status(
            403,
            Some("<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>".into()),
        )
        .repeatedly()
        .build();
    let store = s3_store(&denied);
    let err = store
        .put(
            "images/r/000000-00.jpg",
            Bytes::from_static(b"jpeg"),
            "image/jpeg",
        )
        .await
        .unwrap_err();
    assert!(matches!(err, PortError::Denied(_)), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(denied.num_calls(), 1);
}

#[tokio::test]
async fn a_missing_object_is_absent_and_a_denied_head_is_an_error_not_absent() {
    // HeadObject answers 404 without a body for a missing key (to a caller that may list the
    // bucket) and 403 to one that may not: only the 404 means "no such object".
    let missing = mock!(aws_sdk_s3::Client::head_object)
        .sequence()
        .http_status(404, None)
        .build();
    assert!(!s3_store(&missing).exists("results/t/r.csv").await.unwrap());
    let denied = mock!(aws_sdk_s3::Client::head_object)
        .sequence()
        .http_status(403, None)
        .repeatedly()
        .build();
    let err = s3_store(&denied)
        .exists("results/t/r.csv")
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    let found = mock!(aws_sdk_s3::Client::head_object)
        .then_output(|| aws_sdk_s3::operation::head_object::HeadObjectOutput::builder().build());
    assert!(s3_store(&found).exists("results/t/r.csv").await.unwrap());
}

fn job(i: u32) -> RowJob {
    RowJob {
        version: 1,
        request_id: "r".into(),
        tenant: "default".into(),
        row_index: i,
        serial: i.to_string(),
        product_name: "p".into(),
        input_urls: vec!["https://img.example.com/a.jpg".into()],
        output_spec: OutputSpec::default(),
        resume: false,
    }
}

fn accepted(id: &str) -> SendMessageBatchResultEntry {
    SendMessageBatchResultEntry::builder()
        .id(id)
        .message_id(format!("m-{id}"))
        .md5_of_message_body("x")
        .build()
        .unwrap()
}

fn refused(id: &str, code: &str, sender_fault: bool) -> BatchResultErrorEntry {
    BatchResultErrorEntry::builder()
        .id(id)
        .code(code)
        .sender_fault(sender_fault)
        .message(format!("{code} (test)"))
        .build()
        .unwrap()
}

#[tokio::test]
async fn send_message_batch_entries_that_failed_on_the_service_side_are_sent_again() {
    let entries = Arc::new(Mutex::new(Vec::new()));
    let seen = entries.clone();
    let batch = mock!(aws_sdk_sqs::Client::send_message_batch).then_compute_output(move |req| {
        let ids: Vec<String> = req.entries().iter().map(|e| e.id().to_owned()).collect();
        let mut seen = seen.lock().unwrap();
        seen.push(ids.clone());
        let first = seen.len() == 1;
        let (failed, successful): (Vec<_>, Vec<_>) =
            ids.iter().partition(|id| first && id.as_str() == "1");
        SendMessageBatchOutput::builder()
            .set_successful(Some(successful.iter().map(|id| accepted(id)).collect()))
            .set_failed(Some(
                failed
                    .iter()
                    .map(|id| refused(id, "InternalError", false))
                    .collect(),
            ))
            .build()
            .unwrap()
    });
    let client = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&batch]);
    let queue = SqsRowQueue::from(
        SqsQueue::from_client(client, "https://sqs.example/rows").with_retry(FAST),
    );
    queue.enqueue(&[job(0), job(1), job(2)]).await.unwrap();
    assert_eq!(
        *entries.lock().unwrap(),
        vec![vec!["0", "1", "2"], vec!["1"]],
        "only the failed entry is sent again"
    );

    // An entry refused for what it holds fails at once.
    let batch = mock!(aws_sdk_sqs::Client::send_message_batch).then_compute_output(|req| {
        SendMessageBatchOutput::builder()
            .set_successful(Some(vec![]))
            .set_failed(Some(
                req.entries()
                    .iter()
                    .map(|e| refused(e.id(), "InvalidMessageContents", true))
                    .collect(),
            ))
            .build()
            .unwrap()
    });
    let client = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&batch]);
    let queue = SqsRowQueue::from(
        SqsQueue::from_client(client, "https://sqs.example/rows").with_retry(FAST),
    );
    let err = queue.enqueue(&[job(0)]).await.unwrap_err();
    assert!(matches!(err, PortError::LimitExceeded(_)), "{err}");
    assert_eq!(batch.num_calls(), 1);
}

/// Every item of a new request — rows, counter shards, the request item — carries the table's
/// TTL attribute at its creation time plus the retention; without one, none does.
#[tokio::test]
async fn with_a_retention_every_item_of_a_new_request_expires_together() {
    for retention in [Some(chrono::Duration::days(30)), None] {
        let items: Arc<Mutex<Vec<std::collections::HashMap<String, AttributeValue>>>> =
            Arc::default();
        let from_transactions = items.clone();
        let transact = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .match_requests(move |req| {
                for action in req.transact_items() {
                    if let Some(put) = action.put() {
                        from_transactions.lock().unwrap().push(put.item().clone());
                    }
                }
                true
            })
            .then_output(|| TransactWriteItemsOutput::builder().build());
        let from_puts = items.clone();
        let put = mock!(aws_sdk_dynamodb::Client::put_item)
            .match_requests(move |req| {
                from_puts
                    .lock()
                    .unwrap()
                    .push(req.item().cloned().unwrap_or_default());
                true
            })
            .then_output(|| PutItemOutput::builder().build());
        let missing = mock!(aws_sdk_dynamodb::Client::get_item)
            .then_output(|| GetItemOutput::builder().build());
        let no_shards =
            mock!(aws_sdk_dynamodb::Client::query).then_output(|| QueryOutput::builder().build());
        let reveal = mock!(aws_sdk_dynamodb::Client::update_item)
            .then_output(|| UpdateItemOutput::builder().build());
        let client = mock_client!(
            aws_sdk_dynamodb,
            RuleMode::MatchAny,
            [&transact, &put, &missing, &no_shards, &reveal],
            |c| c.retry_config(RetryConfig::disabled())
        );
        let repo = DynamoRequestRepository::from(
            DynamoTable::from_client(client, "requests").with_retry(FAST),
        )
        .with_retention(retention);
        let meta = meta(3);
        repo.create_request(&meta, &rows(3)).await.unwrap();
        // A catalogue's chunk rows, written later.
        repo.put_rows("r", &rows(2)).await.unwrap();
        let items = items.lock().unwrap();
        // 3 rows + 3 counter shards + the request item + 2 chunk rows.
        assert_eq!(items.len(), 9);
        for item in items.iter() {
            let sk = item["sk"].as_s().unwrap();
            match retention {
                None => assert!(!item.contains_key("expires_at"), "{sk}"),
                Some(days) => {
                    let at: i64 = item["expires_at"].as_n().unwrap().parse().unwrap();
                    let expected = (meta.created_at + days).timestamp();
                    // Chunk rows count from their writing: a moment later.
                    assert!(
                        (expected..expected + 60).contains(&at),
                        "{sk}: {at} vs {expected}"
                    );
                }
            }
        }
    }
}

/// The slots item of a host where holder `x` holds `n` slots, at `version`.
fn slots_item(n: u32, version: u64) -> GetItemOutput {
    let exp = Utc::now().timestamp_millis() + 60_000;
    GetItemOutput::builder()
        .set_item(Some(
            serde_dynamo::to_item(serde_json::json!({
                "pk": "ORIGIN#img.example.com", "sk": "SLOTS",
                "leases": { "x": { "n": n, "exp": exp } },
                "version": version, "expires_at": exp / 1000 + 86_400,
            }))
            .unwrap(),
        ))
        .build()
}

#[tokio::test]
async fn a_lease_that_loses_a_race_is_recomputed_from_a_fresh_read_not_written_over() {
    // Another holder takes a slot between our read and our write: the conditional put fails,
    // the record is read again, and only what is left is granted.
    let get = mock!(aws_sdk_dynamodb::Client::get_item)
        .sequence()
        .output(|| slots_item(30, 3))
        .output(|| slots_item(31, 4))
        .build();
    let put = mock!(aws_sdk_dynamodb::Client::put_item)
        .sequence()
        .http_status(400, conditional_check_failed())
        .output(|| PutItemOutput::builder().build())
        .build();
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&get, &put], |c| c
        .retry_config(RetryConfig::disabled()));
    let slots =
        DynamoOriginSlots::from(DynamoTable::from_client(client, "requests").with_retry(FAST));
    let lease = slots
        .lease(
            "img.example.com",
            LeaseRequest {
                holder: "me",
                want: 4,
                cap: 32,
                ttl: Duration::from_secs(30),
            },
            Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(lease.granted, 1);
    assert_eq!((get.num_calls(), put.num_calls()), (2, 2));
}

/// A key item as DynamoDB stores it.
fn key_item(key_id: &str, created_at: &str) -> std::collections::HashMap<String, AttributeValue> {
    serde_dynamo::to_item(serde_json::json!({
        "pk": format!("KEY#{key_id}"), "sk": "KEY", "key_id": key_id, "tenant": "acme",
        "key_sha256": "00", "created_at": created_at,
    }))
    .unwrap()
}

#[tokio::test]
async fn listing_api_keys_follows_every_scan_page_and_orders_by_creation() {
    // DynamoDB returns a scan in pages of at most 1 MB: a key on the second page is listed.
    let scan = mock!(aws_sdk_dynamodb::Client::scan)
        .sequence()
        .output(|| {
            ScanOutput::builder()
                .items(key_item("bbbb", "2026-01-02T00:00:00Z"))
                .set_last_evaluated_key(Some(std::collections::HashMap::from([
                    ("pk".to_owned(), AttributeValue::S("KEY#bbbb".to_owned())),
                    ("sk".to_owned(), AttributeValue::S("KEY".to_owned())),
                ])))
                .build()
        })
        .output(|| {
            ScanOutput::builder()
                .items(key_item("aaaa", "2026-01-01T00:00:00Z"))
                .build()
        })
        .build();
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&scan], |c| c
        .retry_config(RetryConfig::disabled()));
    let keys = DynamoKeyStore::from(DynamoTable::from_client(client, "requests"));
    let listed: Vec<String> = keys
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.key_id)
        .collect();
    assert_eq!(listed, ["aaaa", "bbbb"]);
    assert_eq!(scan.num_calls(), 2);
}

#[tokio::test]
async fn a_cancel_accepted_between_the_read_and_the_flip_ends_the_request_cancelled() {
    // Every row is recorded; `complete` reads the request (no cancellation yet), then a
    // cancellation is accepted, then `complete` flips. The flip must not apply COMPLETED over
    // the accepted cancellation: its condition fails, and the second read ends it CANCELLED.
    let request = |cancelled: bool| {
        let mut meta = meta(3);
        meta.status = RequestStatus::Processing;
        if cancelled {
            meta.cancel_requested_at = Some(Utc::now());
        }
        let mut item = MetaItem::new(meta, None);
        item.done_shards = (0..32).collect();
        GetItemOutput::builder()
            .set_item(Some(serde_dynamo::to_item(&item).unwrap()))
            .build()
    };
    let get = mock!(aws_sdk_dynamodb::Client::get_item)
        .sequence()
        .output(move || request(false))
        .output(move || request(true))
        .build();
    let shards = mock!(aws_sdk_dynamodb::Client::query).then_output(|| {
        let items = (0..3)
            .map(|shard| {
                let mut counter = CounterItem::new("r", 1, shard, 1, None);
                counter.counters.rows_done = 1;
                counter.counters.images_ok = 1;
                serde_dynamo::to_item(&counter).unwrap()
            })
            .collect();
        QueryOutput::builder().set_items(Some(items)).build()
    });
    let conditions = Arc::new(Mutex::new(Vec::new()));
    let seen = conditions.clone();
    let flip = mock!(aws_sdk_dynamodb::Client::update_item)
        .match_requests(move |req| {
            seen.lock()
                .unwrap()
                .push(req.condition_expression().unwrap_or_default().to_owned());
            true
        })
        .sequence()
        .http_status(400, conditional_check_failed())
        .output(|| UpdateItemOutput::builder().build())
        .build();
    let client = mock_client!(
        aws_sdk_dynamodb,
        RuleMode::MatchAny,
        [&get, &shards, &flip],
        |c| c.retry_config(RetryConfig::disabled())
    );
    let repo = DynamoRequestRepository::from(
        DynamoTable::from_client(client, "requests").with_retry(FAST),
    );
    let ended = repo.complete("r", Utc::now()).await.unwrap();
    assert_eq!(ended, Transition::Applied(RequestStatus::Cancelled));
    let conditions = conditions.lock().unwrap();
    assert!(
        conditions[0].contains("attribute_not_exists(cancel_requested_at)"),
        "the first flip must not override a cancellation: {}",
        conditions[0]
    );
}

/// Every row message carries its tenant as `MessageGroupId`, which makes the rows queue an SQS
/// fair queue: one tenant's backlog does not hold up the others' rows.
#[tokio::test]
async fn every_row_message_names_its_tenant_as_its_message_group() {
    let groups = Arc::new(Mutex::new(Vec::new()));
    let seen = groups.clone();
    let batch = mock!(aws_sdk_sqs::Client::send_message_batch).then_compute_output(move |req| {
        seen.lock().unwrap().extend(
            req.entries()
                .iter()
                .map(|e| e.message_group_id().map(str::to_owned)),
        );
        SendMessageBatchOutput::builder()
            .set_successful(Some(
                req.entries().iter().map(|e| accepted(e.id())).collect(),
            ))
            .set_failed(Some(vec![]))
            .build()
            .unwrap()
    });
    let client = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&batch]);
    let queue = SqsRowQueue::from(SqsQueue::from_client(client, "https://sqs.example/rows"));
    let jobs: Vec<RowJob> = (0..12)
        .map(|i| RowJob {
            tenant: if i % 3 == 0 { "acme" } else { "bolt" }.into(),
            ..job(i)
        })
        .collect();
    queue.enqueue(&jobs).await.unwrap();
    let expected: Vec<Option<String>> = jobs.iter().map(|j| Some(j.tenant.clone())).collect();
    assert_eq!(*groups.lock().unwrap(), expected);
    assert_eq!(batch.num_calls(), 2, "12 messages in batches of 10");
}
