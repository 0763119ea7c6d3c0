//! The local pipeline: the four function apps over embedded backends, and the pump that moves
//! messages and stream records between them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};
use lambda_runtime::LambdaEvent;
use pixpress::adapters::local::{DirObjectStore, InMemoryRequestRepository, InMemoryRowQueue};
use pixpress::config::Config;
use pixpress::domain::model::{DeliveryState, RequestMeta, RequestStatus};
use pixpress::fetch::{Fetcher, HostResolver, SystemResolver};
use pixpress::ports::RequestRepository;

use crate::events;

/// The API app over embedded backends.
pub type LocalApi = pixpress_api::App<InMemoryRequestRepository, InMemoryRowQueue, DirObjectStore>;
/// The S3 ingest app over embedded backends.
pub type LocalS3Ingest =
    pixpress_s3_ingest::App<InMemoryRequestRepository, InMemoryRowQueue, DirObjectStore>;
/// The worker app over embedded backends.
pub type LocalWorker = pixpress_row_worker::App<InMemoryRequestRepository, DirObjectStore>;
/// The notifier app over embedded backends.
pub type LocalNotifier =
    pixpress_completion_notifier::App<InMemoryRequestRepository, DirObjectStore>;

/// How the local pipeline runs.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Directory used as the bucket (`images/…`, `results/…`, `uploads/…`).
    pub data_dir: PathBuf,
    /// Base URL under which the data directory is served (`serve`); `file://` paths otherwise.
    pub public_base_url: Option<String>,
    /// How long a failed message stays invisible before it is delivered again.
    pub visibility_timeout: Duration,
    /// Messages per worker invocation (the SQS event source's batch size, ≤ 10).
    pub batch_size: usize,
    /// Worker invocations running at once.
    pub worker_invocations: usize,
    /// Name resolver for fetches and webhooks (tests map names to loopback).
    pub resolver: Arc<dyn HostResolver>,
}

impl PipelineOptions {
    /// Defaults for `data_dir`: visibility timeout 2 s, batches of 10, 2 invocations at once,
    /// the system resolver.
    #[must_use]
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            public_base_url: None,
            visibility_timeout: Duration::from_secs(2),
            batch_size: 10,
            worker_invocations: 2,
            resolver: Arc::new(SystemResolver),
        }
    }
}

/// The outcome of an upload through the API handler.
#[derive(Debug, Clone)]
pub enum Upload {
    /// 202: the request id and the response document.
    Accepted {
        /// The new request's id.
        request_id: String,
        /// The 202 body.
        body: serde_json::Value,
    },
    /// Any other status: the problem details document.
    Rejected {
        /// HTTP status.
        status: u16,
        /// The problem+json body.
        problem: serde_json::Value,
    },
}

/// The four apps and their shared embedded backends.
#[derive(Debug, Clone)]
pub struct LocalPipeline {
    /// Requests and rows, with the change log.
    pub repo: InMemoryRequestRepository,
    /// Row jobs.
    pub queue: InMemoryRowQueue,
    /// The bucket.
    pub store: DirObjectStore,
    /// `api`.
    pub api: LocalApi,
    /// `s3-ingest`.
    pub s3_ingest: LocalS3Ingest,
    /// `row-worker`.
    pub worker: LocalWorker,
    /// `completion-notifier`.
    pub notifier: LocalNotifier,
    options: PipelineOptions,
}

fn response_json(response: &Response<Body>) -> serde_json::Value {
    let bytes: &[u8] = match response.body() {
        Body::Text(text) => text.as_bytes(),
        Body::Binary(bytes) => bytes,
        _ => b"",
    };
    serde_json::from_slice(bytes).unwrap_or(serde_json::Value::Null)
}

impl LocalPipeline {
    /// Builds the apps for `config`.
    ///
    /// # Errors
    /// When the data directory or an HTTP client cannot be set up.
    pub fn new(config: &Config, options: PipelineOptions) -> anyhow::Result<Self> {
        let repo = InMemoryRequestRepository::new();
        let queue = InMemoryRowQueue::new(config.max_receive_count);
        let store = DirObjectStore::new(&options.data_dir, options.public_base_url.clone())?;
        let fetcher = Fetcher::with_resolver(config.fetch.clone(), options.resolver.clone())?;
        let webhook_fetcher =
            Fetcher::with_resolver(config.webhook_fetch(), options.resolver.clone())?;
        Ok(Self {
            api: pixpress_api::App {
                repo: repo.clone(),
                queue: queue.clone(),
                store: store.clone(),
                config: pixpress_api::ApiConfig::from(config),
            },
            s3_ingest: pixpress_s3_ingest::App {
                repo: repo.clone(),
                queue: queue.clone(),
                store: store.clone(),
                config: pixpress_s3_ingest::IngestConfig::from(config),
            },
            worker: pixpress_row_worker::App::with_fetcher(
                repo.clone(),
                store.clone(),
                fetcher,
                config,
            ),
            notifier: pixpress_completion_notifier::App {
                repo: repo.clone(),
                store: store.clone(),
                fetcher: webhook_fetcher,
                config: pixpress_completion_notifier::NotifierConfig::from(config),
            },
            repo,
            queue,
            store,
            options,
        })
    }

    /// The options in force.
    #[must_use]
    pub fn options(&self) -> &PipelineOptions {
        &self.options
    }

    /// Sends an HTTP request through the `api` handler.
    ///
    /// # Errors
    /// Only if the handler cannot build a response.
    pub async fn call_api(&self, request: Request) -> anyhow::Result<Response<Body>> {
        pixpress_api::handle(&self.api, request)
            .await
            .map_err(|e| anyhow::anyhow!("api handler: {e}"))
    }

    /// `POST /uploads` with `csv` as a `text/csv` body and options as query parameters.
    ///
    /// # Errors
    /// Only if the request cannot be built or the handler fails.
    pub async fn upload_csv(
        &self,
        csv: Vec<u8>,
        webhook_url: Option<&str>,
        quality: Option<u8>,
        max_dimension: Option<u32>,
    ) -> anyhow::Result<Upload> {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if let Some(url) = webhook_url {
            query.append_pair("webhook_url", url);
        }
        if let Some(q) = quality {
            query.append_pair("quality", &q.to_string());
        }
        if let Some(m) = max_dimension {
            query.append_pair("max_dimension", &m.to_string());
        }
        let query = query.finish();
        let uri = if query.is_empty() {
            "/uploads".to_owned()
        } else {
            format!("/uploads?{query}")
        };
        let request = lambda_http::http::Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header("content-type", "text/csv")
            .body(Body::Binary(csv))
            .context("building the upload request")?;
        let response = self.call_api(request).await?;
        let status = response.status().as_u16();
        let body = response_json(&response);
        if status == 202 {
            let request_id = body["request_id"]
                .as_str()
                .context("202 without request_id")?
                .to_owned();
            Ok(Upload::Accepted { request_id, body })
        } else {
            Ok(Upload::Rejected {
                status,
                problem: body,
            })
        }
    }

    /// `GET /requests/{id}` through the `api` handler, every product on one page.
    ///
    /// # Errors
    /// If the handler fails or answers other than 200.
    pub async fn status_document(&self, request_id: &str) -> anyhow::Result<serde_json::Value> {
        let request = lambda_http::http::Request::builder()
            .method(Method::GET)
            .uri(format!("/requests/{request_id}?limit=1000"))
            .body(Body::Empty)
            .context("building the status request")?;
        let response = self.call_api(request).await?;
        if response.status() != 200 {
            bail!("GET /requests/{request_id} answered {}", response.status());
        }
        Ok(response_json(&response))
    }

    /// Moves work one step: delivers visible queue messages to `row-worker` invocations
    /// (deleting the ones it processed, leaving batch item failures invisible for the
    /// visibility timeout), then the change log to `completion-notifier`. Returns `true` if
    /// anything was delivered.
    ///
    /// # Errors
    /// When a handler returns `Err` (the local equivalent of a failed invocation).
    pub async fn pump_once(&self) -> anyhow::Result<bool> {
        let batch = self.options.batch_size.clamp(1, 10);
        let messages = self.queue.receive(
            batch * self.options.worker_invocations.max(1),
            self.options.visibility_timeout,
        )?;
        let worked = !messages.is_empty();
        let invocations = messages.chunks(batch).map(|chunk| async move {
            let event = events::sqs_event(chunk)?;
            let response = pixpress_row_worker::handle(
                &self.worker,
                LambdaEvent::new(event, events::context()),
            )
            .await
            .map_err(|e| anyhow::anyhow!("row-worker: {e}"))?;
            let failed: Vec<&str> = response
                .batch_item_failures
                .iter()
                .map(|f| f.item_identifier.as_str())
                .collect();
            for message in chunk {
                if !failed.contains(&message.message_id.as_str()) {
                    self.queue.delete(&message.receipt_handle)?;
                }
            }
            anyhow::Ok(())
        });
        for result in futures::future::join_all(invocations).await {
            result?;
        }
        let changes = self.repo.drain_changes()?;
        let notified = !changes.is_empty();
        for chunk in changes.chunks(100) {
            let event = events::dynamodb_event(chunk)?;
            pixpress_completion_notifier::handle(
                &self.notifier,
                LambdaEvent::new(event, events::context()),
            )
            .await
            .map_err(|e| anyhow::anyhow!("completion-notifier: {e}"))?;
        }
        Ok(worked || notified)
    }

    /// Pumps until request `request_id` is terminal and its completion handled (output CSV
    /// written, webhook no longer pending), calling `on_progress` after every step.
    ///
    /// # Errors
    /// When a handler fails or the request is unknown.
    pub async fn run_until_done(
        &self,
        request_id: &str,
        mut on_progress: impl FnMut(&RequestMeta),
    ) -> anyhow::Result<RequestMeta> {
        loop {
            let worked = self.pump_once().await?;
            let meta = self
                .repo
                .get_request(request_id)
                .await?
                .with_context(|| format!("request {request_id} does not exist"))?;
            on_progress(&meta);
            let handled = meta.status.is_terminal()
                && (meta.status == RequestStatus::Failed || meta.output_csv_key.is_some())
                && meta
                    .webhook
                    .as_ref()
                    .is_none_or(|w| w.state != DeliveryState::Pending);
            if handled {
                return Ok(meta);
            }
            if !worked {
                if self.queue.is_empty()? {
                    let dead = self.queue.dead_letters()?;
                    if !dead.is_empty() {
                        bail!(
                            "request {request_id} cannot finish: {} row message(s) went to the dead-letter queue",
                            dead.len()
                        );
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
