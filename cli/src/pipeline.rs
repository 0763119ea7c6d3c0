//! The pipeline in one process: the four function apps over one backend — embedded, or the AWS
//! adapters against an emulator — and the pump that moves queue messages and stream records
//! between them as the Lambda event source mappings do in a deployment.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};
use lambda_runtime::LambdaEvent;
use pixpress::adapters::aws::{
    DynamoRequestRepository, EmulatorBackends, EmulatorNames, S3ObjectStore, SqsRowQueue,
    emulator_sdk_config, provision,
};
use pixpress::adapters::local::{
    ChangeRecord, DirObjectStore, InMemoryRequestRepository, InMemoryRowQueue, ReceivedMessage,
};
use pixpress::config::Config;
use pixpress::domain::model::{DeliveryState, RequestMeta, RequestStatus};
use pixpress::fetch::{Fetcher, HostResolver, SystemResolver};
use pixpress::ports::{ObjectStore, PortError, RequestRepository, RowQueue};

use crate::events;

/// Where the pipeline keeps its state, and how the pump reaches the two event sources the
/// Lambda service polls in a deployment: the rows queue and the table's stream.
pub trait PumpBackend: Clone + Send + Sync + 'static {
    /// Requests and rows.
    type Repo: RequestRepository;
    /// Row jobs.
    type Queue: RowQueue;
    /// The bucket.
    type Store: ObjectStore;

    /// The repository.
    fn repo(&self) -> &Self::Repo;
    /// The queue the API and s3-ingest enqueue to.
    fn queue(&self) -> &Self::Queue;
    /// The bucket.
    fn store(&self) -> &Self::Store;
    /// Up to `max` visible row messages, hidden for `visibility` (SQS `ReceiveMessage`).
    fn receive(
        &self,
        max: usize,
        visibility: Duration,
    ) -> impl Future<Output = Result<Vec<ReceivedMessage>, PortError>> + Send;
    /// Deletes a processed message.
    fn delete(&self, receipt_handle: &str) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Stream records written since the last call.
    fn changes(&self) -> impl Future<Output = Result<Vec<ChangeRecord>, PortError>> + Send;
    /// Row messages waiting or in flight.
    fn queue_depth(&self) -> impl Future<Output = Result<u64, PortError>> + Send;
    /// Row messages in the dead-letter queue.
    fn dead_letter_count(&self) -> impl Future<Output = Result<u64, PortError>> + Send;
}

/// Embedded backends: in-memory repository (its change log is the stream), in-memory queue,
/// a directory as the bucket.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// Requests and rows, with the change log.
    pub repo: InMemoryRequestRepository,
    /// Row jobs.
    pub queue: InMemoryRowQueue,
    /// The bucket.
    pub store: DirObjectStore,
}

impl PumpBackend for Embedded {
    type Repo = InMemoryRequestRepository;
    type Queue = InMemoryRowQueue;
    type Store = DirObjectStore;

    fn repo(&self) -> &Self::Repo {
        &self.repo
    }
    fn queue(&self) -> &Self::Queue {
        &self.queue
    }
    fn store(&self) -> &Self::Store {
        &self.store
    }
    async fn receive(
        &self,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, PortError> {
        self.queue.receive(max, visibility)
    }
    async fn delete(&self, receipt_handle: &str) -> Result<(), PortError> {
        self.queue.delete(receipt_handle)
    }
    async fn changes(&self) -> Result<Vec<ChangeRecord>, PortError> {
        self.repo.drain_changes()
    }
    async fn queue_depth(&self) -> Result<u64, PortError> {
        Ok(self.queue.len()? as u64)
    }
    async fn dead_letter_count(&self) -> Result<u64, PortError> {
        Ok(self.queue.dead_letters()?.len() as u64)
    }
}

/// The AWS adapters against an emulator (moto server, ministack): SQS polled with
/// `ReceiveMessage`, the table's stream read with `aws-sdk-dynamodbstreams`.
#[derive(Debug, Clone)]
pub struct Emulated(pub EmulatorBackends);

impl PumpBackend for Emulated {
    type Repo = DynamoRequestRepository;
    type Queue = SqsRowQueue;
    type Store = S3ObjectStore;

    fn repo(&self) -> &Self::Repo {
        &self.0.repo
    }
    fn queue(&self) -> &Self::Queue {
        &self.0.queue
    }
    fn store(&self) -> &Self::Store {
        &self.0.store
    }
    async fn receive(
        &self,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, PortError> {
        self.0.queue.receive(max, visibility).await
    }
    async fn delete(&self, receipt_handle: &str) -> Result<(), PortError> {
        self.0.queue.delete(receipt_handle).await
    }
    async fn changes(&self) -> Result<Vec<ChangeRecord>, PortError> {
        self.0.stream.read().await
    }
    async fn queue_depth(&self) -> Result<u64, PortError> {
        self.0.queue.approximate_depth().await
    }
    async fn dead_letter_count(&self) -> Result<u64, PortError> {
        self.0.dead_letter_queue.approximate_depth().await
    }
}

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

/// The four apps over one backend, and the pump between them.
#[derive(Clone)]
pub struct Pipeline<B: PumpBackend> {
    /// The backend.
    pub backend: B,
    /// `api`.
    pub api: pixpress_api::App<B::Repo, B::Queue, B::Store>,
    /// `s3-ingest`.
    pub s3_ingest: pixpress_s3_ingest::App<B::Repo, B::Queue, B::Store>,
    /// `row-worker`.
    pub worker: pixpress_row_worker::App<B::Repo, B::Store>,
    /// `completion-notifier`.
    pub notifier: pixpress_completion_notifier::App<B::Repo, B::Store>,
    options: PipelineOptions,
}

impl<B: PumpBackend + std::fmt::Debug> std::fmt::Debug for Pipeline<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("backend", &self.backend)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The pipeline over embedded backends (`pixpress run`, `demo`, `serve`).
pub type LocalPipeline = Pipeline<Embedded>;

fn response_json(response: &Response<Body>) -> serde_json::Value {
    let bytes: &[u8] = match response.body() {
        Body::Text(text) => text.as_bytes(),
        Body::Binary(bytes) => bytes,
        _ => b"",
    };
    serde_json::from_slice(bytes).unwrap_or(serde_json::Value::Null)
}

impl LocalPipeline {
    /// The pipeline over embedded backends in `options.data_dir`.
    ///
    /// # Errors
    /// When the data directory or an HTTP client cannot be set up.
    pub fn new(config: &Config, options: PipelineOptions) -> anyhow::Result<Self> {
        let backend = Embedded {
            repo: InMemoryRequestRepository::new(),
            queue: InMemoryRowQueue::new(config.max_receive_count),
            store: DirObjectStore::new(&options.data_dir, options.public_base_url.clone())?,
        };
        Self::with_backend(config, options, backend)
    }
}

impl Pipeline<Emulated> {
    /// The pipeline over the AWS adapters against the emulator at `endpoint`: provisions the
    /// table, queues and bucket named by `names` (as `template.yaml` declares them) and starts
    /// reading the stream at its tip. `options.data_dir` receives the output CSV.
    ///
    /// # Errors
    /// When the emulator refuses a call or an HTTP client cannot be set up.
    pub async fn emulated(
        config: &Config,
        options: PipelineOptions,
        endpoint: &str,
        names: &EmulatorNames,
    ) -> anyhow::Result<Self> {
        let sdk = emulator_sdk_config(endpoint).await;
        let backends = provision(
            &sdk,
            names,
            config.max_receive_count,
            options.public_base_url.clone(),
        )
        .await
        .with_context(|| format!("provisioning the emulator at {endpoint}"))?;
        backends.stream.skip_existing().await?;
        Self::with_backend(config, options, Emulated(backends))
    }

    /// Moves the rows dead-letter queue's messages back to the rows queue (a DLQ redrive, after
    /// whatever made the worker fail is fixed). Returns how many moved.
    ///
    /// # Errors
    /// When SQS fails.
    pub async fn redrive_dead_letters(&self) -> anyhow::Result<u64> {
        Ok(self
            .backend
            .0
            .dead_letter_queue
            .redrive_to(&self.backend.0.queue)
            .await?)
    }
}

impl<B: PumpBackend> Pipeline<B> {
    /// Builds the apps for `config` over `backend`.
    ///
    /// # Errors
    /// When an HTTP client cannot be set up.
    pub fn with_backend(
        config: &Config,
        options: PipelineOptions,
        backend: B,
    ) -> anyhow::Result<Self> {
        let fetcher = Fetcher::with_resolver(config.fetch.clone(), options.resolver.clone())?;
        let webhook_fetcher =
            Fetcher::with_resolver(config.webhook_fetch(), options.resolver.clone())?;
        let (repo, queue, store) = (backend.repo(), backend.queue(), backend.store());
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
            backend,
            options,
        })
    }

    /// The repository.
    #[must_use]
    pub fn repo(&self) -> &B::Repo {
        self.backend.repo()
    }

    /// The bucket.
    #[must_use]
    pub fn store(&self) -> &B::Store {
        self.backend.store()
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
        let mut messages = Vec::new();
        for _ in 0..self.options.worker_invocations.max(1) {
            let received = self
                .backend
                .receive(batch, self.options.visibility_timeout)
                .await?;
            if received.is_empty() {
                break;
            }
            messages.extend(received);
        }
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
                    self.backend.delete(&message.receipt_handle).await?;
                }
            }
            anyhow::Ok(())
        });
        for result in futures::future::join_all(invocations).await {
            result?;
        }
        let changes = self.backend.changes().await?;
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
                .repo()
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
                if self.backend.queue_depth().await? == 0 {
                    let dead = self.backend.dead_letter_count().await?;
                    if dead > 0 {
                        bail!(
                            "request {request_id} cannot finish: {dead} row message(s) went to the dead-letter queue"
                        );
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
