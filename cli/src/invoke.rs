//! `pixpress invoke <function> <event.json>`: one handler, in process, on one sample event —
//! the Docker-free equivalent of `sam local invoke` — over the embedded backends or the AWS
//! adapters (configured like the Lambda functions: `TABLE_NAME`, `ROWS_QUEUE_URL`,
//! `BUCKET_NAME`, endpoints from `AWS_ENDPOINT_URL*`).

use anyhow::{Context as _, bail};
use aws_lambda_events::event::{dynamodb, sqs::SqsEvent};
use lambda_http::Body;
use lambda_runtime::LambdaEvent;
use pixpress_app::config::Config;
use pixpress_app::ports::{ObjectStore, RequestRepository, RowQueue};
use serde_json::{Value, json};

use crate::events::context;

/// The function names `invoke` accepts (crate, binary and `events/` folder names).
pub const FUNCTIONS: [&str; 7] = [
    "api",
    "s3-ingest",
    "row-worker",
    "row-dead-letter",
    "completion-notifier",
    "webhook-sender",
    "sweeper",
];

/// The template's logical function names and the names they stand for.
pub const LOGICAL_NAMES: [(&str, &str); 7] = [
    ("ApiFunction", "api"),
    ("S3IngestFunction", "s3-ingest"),
    ("RowWorkerFunction", "row-worker"),
    ("RowDeadLetterFunction", "row-dead-letter"),
    ("CompletionNotifierFunction", "completion-notifier"),
    ("WebhookSenderFunction", "webhook-sender"),
    ("SweeperFunction", "sweeper"),
];

/// `function` as one of [`FUNCTIONS`]: a template logical name (`RowWorkerFunction`, as `sam
/// local invoke` takes) maps to its function; anything else is returned as given.
#[must_use]
pub fn function_name(function: &str) -> &str {
    LOGICAL_NAMES
        .iter()
        .find(|(logical, _)| *logical == function)
        .map_or(function, |(_, name)| name)
}

/// Runs `function` on `event` (the JSON Lambda would deliver) and returns what it answered:
/// the HTTP response for `api`, the batch response for `row-worker`, `null` otherwise.
///
/// # Errors
/// An unknown function, an event that does not parse, or the handler's `Err`.
pub async fn invoke<R, Q, S>(
    function: &str,
    event: &str,
    repo: R,
    queue: Q,
    store: S,
    config: &Config,
) -> anyhow::Result<Value>
where
    R: RequestRepository,
    Q: RowQueue + pixpress_app::ports::WebhookQueue,
    S: ObjectStore,
{
    let handler_error =
        |e: lambda_runtime::Error| anyhow::anyhow!("{function} handler failed: {e}");
    // Sample events carry no API key: the handler runs as the default tenant.
    let apps = pixpress_local::compose::compose(
        config,
        None,
        std::sync::Arc::new(pixpress_fetch::SystemResolver),
        repo,
        queue,
        store,
        pixpress_embedded::InMemoryOriginSlots::default(),
    )?;
    match function_name(function) {
        "api" => {
            let request =
                lambda_http::request::from_str(event).context("parsing the API Gateway event")?;
            let response = pixpress_api::handle(&apps.api, request)
                .await
                .map_err(handler_error)?;
            let body = match response.body() {
                Body::Text(text) => text.clone(),
                Body::Binary(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                _ => String::new(),
            };
            let headers: serde_json::Map<String, Value> = response
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or_default())))
                .collect();
            Ok(
                json!({ "statusCode": response.status().as_u16(), "headers": headers, "body": body }),
            )
        }
        "s3-ingest" => {
            // An S3 event or a batch of chunk jobs, as the function's two triggers send.
            let event: Value = serde_json::from_str(event).context("parsing the event")?;
            pixpress_s3_ingest::handle_any(&apps.s3_ingest, LambdaEvent::new(event, context()))
                .await
                .map_err(handler_error)
        }
        // The SQS-triggered functions: each answers a partial batch response.
        "row-worker" => Ok(serde_json::to_value(
            pixpress_row_worker::handle(&apps.worker, sqs_event(event)?)
                .await
                .map_err(handler_error)?,
        )?),
        "row-dead-letter" => Ok(serde_json::to_value(
            pixpress_row_dead_letter::handle(&apps.dead_letter, sqs_event(event)?)
                .await
                .map_err(handler_error)?,
        )?),
        "webhook-sender" => Ok(serde_json::to_value(
            pixpress_webhook_sender::handle(&apps.sender, sqs_event(event)?)
                .await
                .map_err(handler_error)?,
        )?),
        "completion-notifier" => {
            let event: dynamodb::Event =
                serde_json::from_str(event).context("parsing the DynamoDB stream event")?;
            let response = pixpress_completion_notifier::handle(
                &apps.notifier,
                LambdaEvent::new(event, context()),
            )
            .await
            .map_err(handler_error)?;
            Ok(serde_json::to_value(response)?)
        }
        // A scheduled event: its content is not read.
        "sweeper" => {
            let event: Value =
                serde_json::from_str(event).context("parsing the scheduled event")?;
            pixpress_sweeper::handle(&apps.sweeper, LambdaEvent::new(event, context()))
                .await
                .map_err(handler_error)
        }
        other => bail!(
            "unknown function `{other}`; expected one of {} (or its template name: {})",
            FUNCTIONS.join(", "),
            LOGICAL_NAMES.map(|(logical, _)| logical).join(", ")
        ),
    }
}

/// An SQS event from its JSON `text`, as the event source mapping delivers it.
fn sqs_event(text: &str) -> anyhow::Result<LambdaEvent<SqsEvent>> {
    let event: SqsEvent = serde_json::from_str(text).context("parsing the SQS event")?;
    Ok(LambdaEvent::new(event, context()))
}

/// What [`seed`] put in place for an event.
#[derive(Debug, Default)]
pub struct Seeded {
    /// One line per thing seeded, for the person running `invoke`.
    pub notes: Vec<String>,
    /// The loopback receiver a seeded webhook targets (`webhook-sender`), to report what it got.
    pub receiver: Option<crate::demo::WebhookReceiver>,
    /// The requests seeded, to show how the handler left them.
    pub requests: Vec<String>,
}

/// How `request_id` stands now, as `pixpress status` prints it (every row, failed images with
/// their error), or `None` when it does not exist.
///
/// # Errors
/// A repository failure.
pub async fn request_text<R: RequestRepository>(
    repo: &R,
    request_id: &str,
) -> anyhow::Result<Option<String>> {
    let Some(meta) = repo.get_request(request_id).await? else {
        return Ok(None);
    };
    let document = pixpress_api::status::status_document(repo, meta, "", None, 1000).await?;
    Ok(Some(crate::client::status_text(&serde_json::to_value(
        document,
    )?)))
}

fn seeded_meta(
    request_id: &str,
    tenant: &str,
    status: pixpress_domain::model::RequestStatus,
    output_spec: pixpress_domain::model::OutputSpec,
    rows: &[pixpress_domain::model::RowRecord],
) -> pixpress_domain::model::RequestMeta {
    let now = chrono::Utc::now();
    pixpress_domain::model::RequestMeta {
        status,
        output_spec,
        counters: pixpress_domain::model::Counters::new(
            rows.len() as u64,
            rows.iter().map(|r| r.input_urls.len() as u64).sum(),
        ),
        completed_at: status.is_terminal().then_some(now),
        ..pixpress_domain::model::RequestMeta::new(request_id.to_owned(), tenant.to_owned(), now)
    }
}

/// The embedded backends start empty, so a sample event would find nothing it names: this puts
/// in place what `event` refers to and is missing — the request and rows of row jobs
/// (`row-worker`, `row-dead-letter`), the request and rows of a stream image
/// (`completion-notifier`), the uploaded CSV (`s3-ingest`, from the `.csv` beside the event
/// file), a finished request whose webhook targets a verifying receiver on loopback
/// (`webhook-sender`; `config` then signs with the receiver's secret and may reach loopback).
/// Whatever exists already is left as it is.
///
/// # Errors
/// An event that does not parse, a missing CSV beside an `s3-ingest` event (the error says
/// where to put it), or a backend failure.
pub async fn seed<R, S>(
    function: &str,
    event: &str,
    event_path: &std::path::Path,
    repo: &R,
    store: &S,
    config: &mut Config,
) -> anyhow::Result<Seeded>
where
    R: RequestRepository,
    S: ObjectStore,
{
    use pixpress_domain::model::{RequestStatus, RowJob, RowRecord, RowState, WebhookJob};
    let mut seeded = Seeded::default();
    match function_name(function) {
        "row-worker" | "row-dead-letter" => {
            let event: SqsEvent = serde_json::from_str(event).context("parsing the SQS event")?;
            let mut requests: std::collections::BTreeMap<String, Vec<RowJob>> = Default::default();
            for body in event.records.iter().filter_map(|r| r.body.as_deref()) {
                if let Ok(job) = serde_json::from_str::<RowJob>(body) {
                    requests
                        .entry(job.request_id.clone())
                        .or_default()
                        .push(job);
                }
            }
            for (id, mut jobs) in requests {
                if repo.get_request(&id).await?.is_some() {
                    continue;
                }
                jobs.sort_by_key(|j| j.row_index);
                jobs.dedup_by_key(|j| j.row_index);
                let rows: Vec<RowRecord> = jobs
                    .iter()
                    .enumerate()
                    .map(|(i, job)| RowRecord {
                        index: u32::try_from(i).unwrap_or(u32::MAX),
                        serial: job.serial.clone(),
                        product_name: job.product_name.clone(),
                        input_urls: job.input_urls.clone(),
                        state: RowState::Pending,
                        images: Vec::new(),
                        progress: Vec::new(),
                    })
                    .collect();
                if jobs
                    .iter()
                    .enumerate()
                    .any(|(i, j)| j.row_index as usize != i)
                {
                    anyhow::bail!(
                        "the row jobs of request {id} are rows {:?}; seeding needs rows 0, 1, 2, … as a request has them",
                        jobs.iter().map(|j| j.row_index).collect::<Vec<_>>()
                    );
                }
                let meta = seeded_meta(
                    &id,
                    &jobs[0].tenant,
                    RequestStatus::Processing,
                    jobs[0].output_spec,
                    &rows,
                );
                repo.create_request(&meta, &rows).await?;
                seeded.requests.push(id.clone());
                seeded.notes.push(format!(
                    "request {id}: PROCESSING, {} row(s) from the event's row jobs",
                    rows.len()
                ));
            }
        }
        "completion-notifier" => {
            let event: dynamodb::Event =
                serde_json::from_str(event).context("parsing the DynamoDB stream event")?;
            let mut metas = Vec::new();
            let mut rows: std::collections::BTreeMap<String, Vec<RowRecord>> = Default::default();
            for record in &event.records {
                let image = record.change.new_image.clone();
                if let Ok(item) =
                    serde_dynamo::from_item::<_, pixpress_domain::item::MetaItem>(image.clone())
                {
                    metas.push(item.meta);
                } else if let Ok(item) =
                    serde_dynamo::from_item::<_, pixpress_domain::item::RowItem>(image)
                    && let Some(id) = pixpress_domain::storage_keys::request_id_from_pk(&item.pk)
                {
                    rows.entry(id.to_owned()).or_default().push(item.row);
                }
            }
            for meta in metas {
                if repo.get_request(&meta.request_id).await?.is_some() {
                    continue;
                }
                let rows = rows.remove(&meta.request_id).unwrap_or_default();
                let mut meta = meta;
                meta.counters.rows_total = rows.len() as u64;
                repo.create_request(&meta, &rows).await?;
                seeded.requests.push(meta.request_id.clone());
                seeded.notes.push(format!(
                    "request {}: {}, {} row(s) from the event's images",
                    meta.request_id,
                    meta.status.as_str(),
                    rows.len()
                ));
            }
        }
        "s3-ingest" => {
            let event: Value = serde_json::from_str(event).context("parsing the event")?;
            for record in event["Records"].as_array().into_iter().flatten() {
                let Some(raw) = record["s3"]["object"]["key"].as_str() else {
                    continue;
                };
                // S3 event keys are URL-encoded, spaces as `+`.
                let key: String = url::form_urlencoded::parse(format!("k={raw}").as_bytes())
                    .map(|(_, v)| v.into_owned())
                    .next()
                    .unwrap_or_default();
                if store.open(&key, None).await?.is_some() {
                    continue;
                }
                let csv = event_path.with_extension("csv");
                let bytes = tokio::fs::read(&csv).await.with_context(|| {
                    format!(
                        "the event names `{key}`, which is not in the data directory, and there is no {} to seed it from: put the CSV at {key} under --data-dir",
                        csv.display()
                    )
                })?;
                store.put(&key, bytes.into(), "text/csv").await?;
                seeded.notes.push(format!("{key} from {}", csv.display()));
            }
        }
        "webhook-sender" => {
            let event: SqsEvent = serde_json::from_str(event).context("parsing the SQS event")?;
            for body in event.records.iter().filter_map(|r| r.body.as_deref()) {
                let Ok(job) = serde_json::from_str::<WebhookJob>(body) else {
                    continue;
                };
                if repo.get_request(&job.request_id).await?.is_some() {
                    continue;
                }
                let receiver = match &seeded.receiver {
                    Some(receiver) => receiver.clone(),
                    None => {
                        let secret = pixpress_domain::webhook::WebhookSecret::random()
                            .map_err(anyhow::Error::msg)?;
                        config.webhook_secret = Some(secret.clone());
                        config.fetch.policy = pixpress_fetch::NetworkPolicy::local();
                        let receiver = crate::demo::WebhookReceiver::start(secret).await?;
                        seeded.receiver = Some(receiver.clone());
                        receiver
                    }
                };
                let row = RowRecord {
                    index: 0,
                    serial: "1".into(),
                    product_name: "Seeded product".into(),
                    input_urls: vec!["https://shop.example/img/1.jpg".into()],
                    state: RowState::Pending,
                    images: Vec::new(),
                    progress: Vec::new(),
                };
                let mut meta = seeded_meta(
                    &job.request_id,
                    &job.tenant,
                    RequestStatus::Completed,
                    pixpress_domain::model::OutputSpec::default(),
                    std::slice::from_ref(&row),
                );
                meta.webhook = Some(pixpress_domain::model::Webhook {
                    url: receiver.url(),
                    state: pixpress_domain::model::DeliveryState::Pending,
                    attempts: Vec::new(),
                });
                repo.create_request(&meta, &[row]).await?;
                seeded.requests.push(job.request_id.clone());
                seeded.notes.push(format!(
                    "request {}: COMPLETED, its webhook to a verifying receiver at {}",
                    job.request_id,
                    receiver.url()
                ));
            }
        }
        _ => {}
    }
    Ok(seeded)
}
