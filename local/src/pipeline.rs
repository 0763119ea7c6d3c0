//! The pipeline in one process: the five function apps over one backend — embedded, or the AWS
//! adapters against an emulator — and the pump that moves queue messages and stream records
//! between them as the Lambda event source mappings do in a deployment.
//!
//! The pump behaves like the Lambda service at its best: several `row-worker` invocations in
//! flight, each started as soon as messages are visible (no barrier between batches); the
//! dead-letter queue drained into `row-dead-letter`; the stream read continuously, filtered to
//! request items entering a terminal status (the template's `FilterCriteria`), and a failed
//! notifier batch retried with backoff, as Lambda retries a stream batch; and the `sweeper`
//! run on its own schedule ([`PipelineOptions::sweep_every`]).

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use aws_lambda_events::event::sqs::SqsBatchResponse;
use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};
use lambda_runtime::LambdaEvent;
use pixpress_app::config::Config;
use pixpress_app::deadline::Deadline;
use pixpress_app::ports::{
    NoQueue, ObjectStore, OriginSlots, PortError, RequestReader, RequestRepository, RowQueue,
};
use pixpress_app::retry::RedeliveryBackoff;
use pixpress_app::sweep::SweepConfig;
use pixpress_aws::{DynamoOriginSlots, DynamoRequestRepository, S3ObjectStore, SqsRowQueue};
use pixpress_domain::item::ItemHead;
use pixpress_domain::model::{DeliveryState, OutputFormat, Quality, RequestMeta, RequestStatus};
use pixpress_domain::storage_keys::META_SK;
use pixpress_embedded::{
    ChangeRecord, DirObjectStore, EmbeddedQueue, EmbeddedRequestRepository, InMemoryOriginSlots,
    ReceivedMessage, TableStorage,
};
use pixpress_fetch::{HostResolver, SystemResolver};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::AnyKeyStore;
use crate::bucket_events::BucketEvents;
use crate::emulator::{EmulatorBackends, EmulatorNames, emulator_sdk_config, provision};
use crate::events;
use crate::faults::{FaultSpec, INVOCATION, SeededFaults};
use crate::sqs::SqsConsumer;

/// The queues the pump polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueName {
    /// The rows queue (`row-worker`).
    Rows,
    /// The rows dead-letter queue (`row-dead-letter`).
    DeadLetters,
}

/// Where the pipeline keeps its state, and how the pump reaches the event sources the Lambda
/// service polls in a deployment: the rows queue, its dead-letter queue and the table's stream.
pub trait PumpBackend: Clone + Send + Sync + 'static {
    /// Requests and rows.
    type Repo: RequestRepository;
    /// Row jobs.
    type Queue: RowQueue + pixpress_app::ports::WebhookQueue;
    /// The bucket.
    type Store: ObjectStore;
    /// The origins' download slots.
    type Slots: OriginSlots;

    /// The repository.
    fn repo(&self) -> &Self::Repo;
    /// The queue the API and s3-ingest enqueue to.
    fn queue(&self) -> &Self::Queue;
    /// The bucket.
    fn store(&self) -> &Self::Store;
    /// The origins' download slots.
    fn slots(&self) -> &Self::Slots;
    /// Up to `max` visible messages of `queue`, hidden for `visibility` (SQS `ReceiveMessage`).
    fn receive_from(
        &self,
        queue: QueueName,
        max: usize,
        visibility: Duration,
    ) -> impl Future<Output = Result<Vec<ReceivedMessage>, PortError>> + Send;
    /// Deletes a processed message of `queue`.
    fn delete_from(
        &self,
        queue: QueueName,
        receipt_handle: &str,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Keeps a received message of `queue` hidden for `timeout` from now (SQS
    /// `ChangeMessageVisibility`; the embedded queue never shortens a longer delay the worker
    /// set).
    fn extend_visibility(
        &self,
        queue: QueueName,
        receipt_handle: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Waits until `queue` may have messages or `max_wait` passed (a long poll).
    fn wait_for_messages(
        &self,
        queue: QueueName,
        max_wait: Duration,
    ) -> impl Future<Output = ()> + Send;
    /// Stream records written since the last call.
    fn changes(&self) -> impl Future<Output = Result<Vec<ChangeRecord>, PortError>> + Send;
    /// Row messages waiting or in flight.
    fn queue_depth(&self) -> impl Future<Output = Result<u64, PortError>> + Send;
    /// Row messages in the dead-letter queue.
    fn dead_letter_count(&self) -> impl Future<Output = Result<u64, PortError>> + Send;

    /// Up to `max` visible row messages (see [`PumpBackend::receive_from`]).
    fn receive(
        &self,
        max: usize,
        visibility: Duration,
    ) -> impl Future<Output = Result<Vec<ReceivedMessage>, PortError>> + Send {
        self.receive_from(QueueName::Rows, max, visibility)
    }
}

/// Embedded backends: the repository (its change log is the stream), the queue and
/// dead-letter queue (rows and messages as [`PipelineOptions::table_storage`] says), a
/// directory as the bucket.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// Requests and rows, with the change log.
    pub repo: EmbeddedRequestRepository,
    /// Row jobs.
    pub queue: EmbeddedQueue,
    /// The rows dead-letter queue.
    pub dead_letter_queue: EmbeddedQueue,
    /// The bucket.
    pub store: DirObjectStore,
    /// The origins' download slots.
    pub slots: InMemoryOriginSlots,
}

impl Embedded {
    fn queue_of(&self, queue: QueueName) -> &EmbeddedQueue {
        match queue {
            QueueName::Rows => &self.queue,
            QueueName::DeadLetters => &self.dead_letter_queue,
        }
    }
}

impl PumpBackend for Embedded {
    type Repo = EmbeddedRequestRepository;
    type Queue = EmbeddedQueue;
    type Store = DirObjectStore;
    type Slots = InMemoryOriginSlots;

    fn repo(&self) -> &Self::Repo {
        &self.repo
    }
    fn slots(&self) -> &Self::Slots {
        &self.slots
    }
    fn queue(&self) -> &Self::Queue {
        &self.queue
    }
    fn store(&self) -> &Self::Store {
        &self.store
    }
    async fn receive_from(
        &self,
        queue: QueueName,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, PortError> {
        self.queue_of(queue).receive(max, visibility)
    }
    async fn delete_from(&self, queue: QueueName, receipt_handle: &str) -> Result<(), PortError> {
        self.queue_of(queue).delete(receipt_handle)
    }
    async fn extend_visibility(
        &self,
        queue: QueueName,
        receipt_handle: &str,
        timeout: Duration,
    ) -> Result<(), PortError> {
        self.queue_of(queue)
            .extend_visibility(receipt_handle, timeout)
    }
    async fn wait_for_messages(&self, queue: QueueName, max_wait: Duration) {
        self.queue_of(queue).wait_for_messages(max_wait).await;
    }
    async fn changes(&self) -> Result<Vec<ChangeRecord>, PortError> {
        self.repo.drain_changes()
    }
    async fn queue_depth(&self) -> Result<u64, PortError> {
        Ok(self.queue.len()? as u64)
    }
    async fn dead_letter_count(&self) -> Result<u64, PortError> {
        Ok(self.dead_letter_queue.len()? as u64)
    }
}

/// The AWS adapters against an emulator (moto server, ministack): SQS polled with
/// `ReceiveMessage`, the table's stream read with `aws-sdk-dynamodbstreams`.
#[derive(Debug, Clone)]
pub struct Emulated(pub EmulatorBackends);

impl Emulated {
    fn queue_of(&self, queue: QueueName) -> &SqsConsumer {
        match queue {
            QueueName::Rows => &self.0.rows,
            QueueName::DeadLetters => &self.0.dead_letter_queue,
        }
    }
}

impl PumpBackend for Emulated {
    type Repo = DynamoRequestRepository;
    type Queue = SqsRowQueue;
    type Store = S3ObjectStore;
    type Slots = DynamoOriginSlots;

    fn repo(&self) -> &Self::Repo {
        &self.0.repo
    }
    fn slots(&self) -> &Self::Slots {
        &self.0.slots
    }
    fn queue(&self) -> &Self::Queue {
        &self.0.queue
    }
    fn store(&self) -> &Self::Store {
        &self.0.store
    }
    async fn receive_from(
        &self,
        queue: QueueName,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, PortError> {
        self.queue_of(queue).receive(max, visibility).await
    }
    async fn delete_from(&self, queue: QueueName, receipt_handle: &str) -> Result<(), PortError> {
        self.queue_of(queue).delete(receipt_handle).await
    }
    async fn extend_visibility(
        &self,
        queue: QueueName,
        receipt_handle: &str,
        timeout: Duration,
    ) -> Result<(), PortError> {
        self.queue_of(queue)
            .change_visibility(receipt_handle, timeout)
            .await
    }
    async fn wait_for_messages(&self, _queue: QueueName, max_wait: Duration) {
        // Polling an emulator: a short pause instead of a long poll keeps tests quick.
        tokio::time::sleep(max_wait.min(Duration::from_millis(50))).await;
    }
    async fn changes(&self) -> Result<Vec<ChangeRecord>, PortError> {
        self.0.stream.read().await
    }
    async fn queue_depth(&self) -> Result<u64, PortError> {
        self.0.rows.approximate_depth().await
    }
    async fn dead_letter_count(&self) -> Result<u64, PortError> {
        self.0.dead_letter_queue.approximate_depth().await
    }
}

/// The sweeper's bounds in a local run with `timeout` or `drop-event` faults: a request idle
/// for 10 s is repaired (a lost completion is finished 10 s after it), one missing rows for a
/// minute is failed.
pub const LOCAL_CHAOS_SWEEP: SweepConfig = SweepConfig {
    idle: chrono::Duration::seconds(10),
    ingest_idle: chrono::Duration::seconds(60),
};

/// How the local pipeline runs.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Directory used as the bucket (`images/…`, `results/…`, `uploads/…`).
    pub data_dir: PathBuf,
    /// Base URL under which the data directory is served (`serve`); `file://` paths otherwise.
    pub public_base_url: Option<String>,
    /// Where the server takes the upload forms `POST /upload-urls` issues (`serve`: its own
    /// stand-in for S3 POST Object); `None`: `POST /upload-urls` answers 501.
    pub upload_form_url: Option<String>,
    /// How long a received message stays invisible before it is delivered again, counted from
    /// the end of the invocation that received it: while an invocation runs, its messages stay
    /// hidden, as the deployed queue's visibility timeout (6 × the worker timeout) keeps them.
    pub visibility_timeout: Duration,
    /// Messages per worker invocation (the SQS event source's batch size, ≤ 10).
    pub batch_size: usize,
    /// Worker invocations running at once.
    pub worker_invocations: usize,
    /// A worker invocation's time limit (the function's `Timeout`; its context deadline).
    pub worker_timeout: Duration,
    /// Name resolver for fetches and webhooks (tests map names to loopback).
    pub resolver: Arc<dyn HostResolver>,
    /// AWS failure modes to inject into the embedded backends (`--faults`).
    pub faults: Option<FaultSpec>,
    /// API keys and tenants (`pixpress serve`): the api authenticates with them and the
    /// notifier signs each tenant's webhooks with that tenant's secret. `None`: no
    /// authentication, webhooks signed with `WEBHOOK_SECRET`.
    pub keys: Option<AnyKeyStore>,
    /// How often the pump runs the sweeper (the deployed schedule runs it every 15 minutes).
    pub sweep_every: Duration,
    /// When the sweeper repairs a request; `None`: the configuration's (`SWEEP_IDLE_SECONDS`,
    /// 2 hours by default, so a calm local run never needs it).
    pub sweep: Option<SweepConfig>,
    /// When a row that failed transiently is delivered again: scaled down with the visibility
    /// timeout (deployed: 10 s, 1 min, 6 min, 36 min).
    pub redelivery: RedeliveryBackoff,
    /// Count the DynamoDB read and write units of every repository call
    /// ([`EmbeddedRequestRepository::consumed_capacity`]; embedded backend only).
    pub meter_capacity: bool,
    /// DynamoDB's per-partition throughput, enforced by the embedded repository (implies
    /// metering); `None`: unlimited.
    pub capacity_limits: Option<pixpress_embedded::CapacityModel>,
    /// Where the embedded repository keeps its row items and the queues their messages
    /// (embedded backend only). Default: an unlinked file in `data_dir`, so a run's memory
    /// stays bounded whatever the catalogue's size ([`TableStorage`]).
    pub table_storage: TableStorage,
}

impl PipelineOptions {
    /// Defaults for `data_dir`: visibility timeout 2 s, batches of 10, 16 invocations at once,
    /// worker timeout 120 s (as `template.yaml`), the system resolver, no faults, no key store.
    #[must_use]
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        Self {
            table_storage: TableStorage::Dir(data_dir.clone()),
            data_dir,
            public_base_url: None,
            upload_form_url: None,
            visibility_timeout: Duration::from_secs(2),
            batch_size: 10,
            worker_invocations: 16,
            worker_timeout: Duration::from_secs(120),
            resolver: Arc::new(SystemResolver),
            faults: None,
            keys: None,
            sweep_every: Duration::from_secs(1),
            sweep: None,
            redelivery: RedeliveryBackoff {
                first: Duration::from_secs(1),
                factor: 2,
                cap: Duration::from_secs(2),
            },
            meter_capacity: false,
            capacity_limits: None,
        }
    }
}

/// Options of `POST /uploads`, sent as query parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadQuery {
    /// Where the signed completion event is POSTed.
    pub webhook_url: Option<String>,
    /// Output format (the deployment's default when absent).
    pub format: Option<OutputFormat>,
    /// Encoder quality or `auto:<score>` (the format's default when absent).
    pub quality: Option<Quality>,
    /// Longest side of the output images, in pixels.
    pub max_dimension: Option<u32>,
    /// `Some(false)` leaves images unscored at a fixed quality.
    pub score: Option<bool>,
}

impl UploadQuery {
    /// The options as `POST /uploads` (and `POST /upload-urls`) take them, as query pairs in
    /// this order: `webhook_url`, `format`, `quality`, `max_dimension`, `score`.
    #[must_use]
    pub fn query_pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if let Some(url) = &self.webhook_url {
            pairs.push(("webhook_url", url.clone()));
        }
        if let Some(format) = self.format {
            pairs.push(("format", format.name().to_owned()));
        }
        if let Some(q) = self.quality {
            pairs.push(("quality", q.to_string()));
        }
        if let Some(m) = self.max_dimension {
            pairs.push(("max_dimension", m.to_string()));
        }
        if let Some(score) = self.score {
            pairs.push(("score", score.to_string()));
        }
        pairs
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

/// The bucket of backend `B` as the apps see it: its upload events recorded.
pub type Bucket<B> = BucketEvents<<B as PumpBackend>::Store>;

/// The function apps over one backend, and the pump between them.
#[derive(Clone)]
pub struct Pipeline<B: PumpBackend> {
    /// The backend.
    pub backend: B,
    /// `api`.
    pub api: pixpress_api::App<B::Repo, B::Queue, Bucket<B>, AnyKeyStore>,
    /// `s3-ingest`.
    pub s3_ingest: pixpress_s3_ingest::App<B::Repo, B::Queue, Bucket<B>, NoQueue>,
    /// `row-worker`.
    pub worker: pixpress_row_worker::App<B::Repo, Bucket<B>, B::Slots, B::Queue>,
    /// `row-dead-letter`.
    pub dead_letter: pixpress_row_dead_letter::App<B::Repo>,
    /// `completion-notifier`.
    pub notifier: pixpress_completion_notifier::App<B::Repo, Bucket<B>, NoQueue, AnyKeyStore>,
    /// `sweeper`.
    pub sweeper: pixpress_sweeper::App<B::Repo, B::Queue, Bucket<B>, NoQueue, AnyKeyStore>,
    /// The bucket as every app writes it, recording the uploads to hand to `s3-ingest`.
    bucket: Bucket<B>,
    faults: Option<Arc<SeededFaults>>,
    terminal_records: Arc<Mutex<std::collections::BTreeMap<String, u32>>>,
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
    /// The pipeline over embedded backends in `options.data_dir`, with `options.faults`
    /// injected into the repository and the queues.
    ///
    /// # Errors
    /// When the data directory or an HTTP client cannot be set up.
    pub fn new(config: &Config, options: PipelineOptions) -> anyhow::Result<Self> {
        let mut options = options;
        let faults = options
            .faults
            .filter(|spec| !spec.is_off())
            .map(|spec| Arc::new(SeededFaults::new(spec)));
        if let Some(spec) = options.faults
            && (spec.timeout > 0.0 || spec.drop_event > 0.0)
            && options.sweep.is_none()
        {
            // What these faults lose, only the sweeper finds: within the run, not hours later.
            options.sweep = Some(LOCAL_CHAOS_SWEEP);
        }
        let mut repo = EmbeddedRequestRepository::stored(&options.table_storage)?;
        let mut queue = EmbeddedQueue::stored(config.max_receive_count, &options.table_storage)?;
        if let Some(faults) = &faults {
            repo = repo.with_faults(faults.clone());
            queue = queue.with_faults(faults.clone());
        }
        if options.meter_capacity || options.capacity_limits.is_some() {
            repo = repo.with_capacity(options.capacity_limits);
        }
        let dead_letter_queue = queue
            .dead_letter_queue()
            .context("the rows queue has no dead-letter queue")?;
        let backend = Embedded {
            repo,
            queue,
            dead_letter_queue,
            slots: InMemoryOriginSlots::default(),
            store: {
                let store =
                    DirObjectStore::new(&options.data_dir, options.public_base_url.clone())?;
                match &options.upload_form_url {
                    Some(url) => store.with_upload_form(url.clone()),
                    None => store,
                }
            },
        };
        let mut pipeline = Self::with_backend(config, options, backend)?;
        pipeline.faults = faults;
        Ok(pipeline)
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
}

/// A running pump: background tasks polling the rows queue (several worker invocations), the
/// dead-letter queue and the stream, until [`Pump::stop`].
#[derive(Debug)]
pub struct Pump {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    failure: Arc<Mutex<Option<String>>>,
}

impl Pump {
    /// Why the pump stopped on its own (a handler failed for good), if it did.
    #[must_use]
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    /// Stops every task and waits for them; an invocation in progress finishes first.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Waits until `stop` turns true or `duration` passes.
async fn pause(stop: &mut watch::Receiver<bool>, duration: Duration) {
    if *stop.borrow() {
        return;
    }
    let _ = tokio::time::timeout(duration, stop.changed()).await;
}

/// `true` for the stream records the notifier's event source mapping lets through
/// (`template.yaml`, `FilterCriteria`): a request item entering a terminal status, or one
/// carrying the saved progress of a paused output CSV.
fn passes_stream_filter(change: &ChangeRecord) -> bool {
    is_terminal_transition(change)
        || (change.sk == META_SK && change.new_image.contains_key("output_progress"))
}

/// `true` for a request item entering a terminal status: modified from a non-terminal one, or
/// created terminal (a rejected catalogue is written `FAILED`).
fn is_terminal_transition(change: &ChangeRecord) -> bool {
    if change.sk != META_SK {
        return false;
    }
    let status = |image: &serde_dynamo::Item| {
        serde_dynamo::from_item::<_, ItemHead>(image.clone())
            .ok()
            .and_then(|head| head.status)
    };
    let entered = status(&change.new_image).is_some_and(RequestStatus::is_terminal);
    let was = match &change.old_image {
        None => true,
        Some(old) => status(old).is_some_and(|s| !s.is_terminal()),
    };
    entered && was
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
        let bucket = BucketEvents::new(backend.store().clone());
        let apps = crate::compose::compose(
            config,
            options.keys.clone(),
            options.resolver.clone(),
            backend.repo().clone(),
            backend.queue().clone(),
            bucket.clone(),
            backend.slots().clone(),
        )?;
        Ok(Self {
            api: apps.api,
            s3_ingest: apps.s3_ingest,
            worker: {
                let mut worker = apps.worker;
                worker.config.redelivery = options.redelivery;
                worker
            },
            dead_letter: apps.dead_letter,
            notifier: apps.notifier,
            sweeper: pixpress_sweeper::App {
                config: options.sweep.unwrap_or(apps.sweeper.config),
                ..apps.sweeper
            },
            bucket,
            backend,
            faults: None,
            terminal_records: Arc::default(),
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

    /// The fault injector, when faults were asked for.
    #[must_use]
    pub fn faults(&self) -> Option<&Arc<SeededFaults>> {
        self.faults.as_ref()
    }

    /// How many stream records of each request entering a terminal status the notifier was
    /// given: exactly one per finished request, unless the exactly-once flip is broken.
    #[must_use]
    pub fn terminal_records(&self) -> std::collections::BTreeMap<String, u32> {
        self.terminal_records
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Sends an HTTP request through the `api` handler.
    ///
    /// # Errors
    /// Only if the handler cannot build a response.
    pub async fn call_api(&self, request: Request) -> anyhow::Result<Response<Body>> {
        let call = pixpress_api::handle(&self.api, request);
        let (response, killed) = self.invoke_other(8, call).await;
        if killed {
            // What an HTTP API answers when its Lambda integration fails or times out.
            return Response::builder()
                .status(500)
                .header("content-type", "application/json")
                .body(Body::Text(
                    r#"{"message":"Internal Server Error"}"#.to_owned(),
                ))
                .context("building the 500");
        }
        response.map_err(|e| anyhow::anyhow!("api handler: {e}"))
    }

    /// One `s3-ingest` invocation on the upload event `record`, retried as Lambda retries an
    /// asynchronous invocation that failed or timed out: up to 2 more times (a deployment then
    /// hands the event to the on-failure destination, whose reader fails the upload; here the
    /// call fails).
    ///
    /// # Errors
    /// When every attempt failed.
    pub async fn ingest_upload(
        &self,
        record: &aws_lambda_events::event::s3::S3EventRecord,
    ) -> anyhow::Result<pixpress_s3_ingest::RecordOutcome> {
        let mut attempt = 1;
        loop {
            let call = pixpress_s3_ingest::ingest_record(&self.s3_ingest, record);
            let (outcome, killed) = self.invoke_other(16, call).await;
            let failure = match outcome {
                Ok(outcome) if !killed => return Ok(outcome),
                Ok(_) => "the invocation timed out".to_owned(),
                Err(e) => e.to_string(),
            };
            if attempt >= 3 {
                bail!("s3-ingest failed {attempt} times: {failure}");
            }
            tracing::warn!(error = %failure, attempt, "s3-ingest failed; Lambda retries the event");
            tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            attempt += 1;
        }
    }

    /// Hands every upload written through the bucket since the last call (`POST /uploads`
    /// stores the CSV under `uploads/`) to `s3-ingest`, as the bucket's event notification
    /// invokes it: asynchronously, retried as Lambda retries ([`Pipeline::ingest_upload`]);
    /// when every attempt failed the upload's request fails, as the on-failure destination's
    /// reader fails it ([`pixpress_s3_ingest::fail_uploads`]). Returns `true` if there was
    /// any.
    ///
    /// # Errors
    /// When the failure cannot be recorded either.
    pub async fn deliver_upload_events(&self) -> anyhow::Result<bool> {
        let keys = self.bucket.take_created();
        for key in &keys {
            let event = events::s3_put_event("local", key, 0, "")?;
            let Some(record) = event.records.first() else {
                continue;
            };
            let Err(e) = self.ingest_upload(record).await else {
                continue;
            };
            tracing::error!(%key, error = %format!("{e:#}"), "upload not ingested; its request fails");
            let failed = pixpress_s3_ingest::FailedInvocation {
                request_context: pixpress_s3_ingest::FailedInvocationContext {
                    condition: "RetriesExhausted".to_owned(),
                    approximate_invoke_count: 3,
                },
                request_payload: event.clone(),
            };
            let mut attempt = 0;
            loop {
                match pixpress_s3_ingest::fail_uploads(
                    &self.s3_ingest.repo,
                    self.s3_ingest.config.output,
                    &failed,
                )
                .await
                {
                    Ok(_) => break,
                    Err(e) if attempt < 10 => {
                        tracing::warn!(error = %e, "the failed upload could not be recorded yet");
                        tokio::time::sleep(Duration::from_millis(20 << attempt.min(5))).await;
                        attempt += 1;
                    }
                    Err(e) => {
                        return Err(anyhow::anyhow!("recording the failed upload {key}: {e}"));
                    }
                }
            }
        }
        Ok(!keys.is_empty())
    }

    async fn upload_loop(self, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
        while !*stop.borrow() {
            if !self.deliver_upload_events().await? {
                pause(&mut stop, Duration::from_millis(10)).await;
            }
        }
        Ok(())
    }

    /// `POST /uploads` with `csv` as a `text/csv` body and options as query parameters, with
    /// an `Idempotency-Key` when given (a retry with the same key finds the same request).
    ///
    /// # Errors
    /// Only if the request cannot be built or the handler fails.
    pub async fn upload_csv_with_key(
        &self,
        csv: Vec<u8>,
        options: &UploadQuery,
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<Upload> {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in options.query_pairs() {
            query.append_pair(name, &value);
        }
        let query = query.finish();
        let uri = if query.is_empty() {
            "/uploads".to_owned()
        } else {
            format!("/uploads?{query}")
        };
        let mut request = lambda_http::http::Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header("content-type", "text/csv");
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let request = request
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

    /// `POST /uploads` with `csv` as a `text/csv` body and options as query parameters.
    ///
    /// # Errors
    /// Only if the request cannot be built or the handler fails.
    pub async fn upload_csv(&self, csv: Vec<u8>, options: &UploadQuery) -> anyhow::Result<Upload> {
        self.upload_csv_with_key(csv, options, None).await
    }

    /// `GET /requests/{id}` through the `api` handler, every product on one page.
    ///
    /// # Errors
    /// If the handler fails or answers other than 200.
    pub async fn status_document(&self, request_id: &str) -> anyhow::Result<serde_json::Value> {
        // Every page, following `next_cursor`: the whole request in one document.
        let mut document: Option<serde_json::Value> = None;
        let mut cursor: Option<String> = None;
        loop {
            let query = cursor
                .as_ref()
                .map_or_else(String::new, |c| format!("&cursor={c}"));
            let request = lambda_http::http::Request::builder()
                .method(Method::GET)
                .uri(format!("/requests/{request_id}?limit=1000{query}"))
                .body(Body::Empty)
                .context("building the status request")?;
            let response = self.call_api(request).await?;
            if response.status() != 200 {
                bail!("GET /requests/{request_id} answered {}", response.status());
            }
            let mut page = response_json(&response);
            cursor = page
                .get("next_cursor")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned);
            match &mut document {
                None => document = Some(page),
                Some(doc) => {
                    let more = page["products"].take();
                    if let (Some(all), Some(more)) =
                        (doc["products"].as_array_mut(), more.as_array())
                    {
                        all.extend(more.iter().cloned());
                    }
                }
            }
            if cursor.is_none() {
                break;
            }
        }
        let mut document = document.unwrap_or_default();
        if let Some(object) = document.as_object_mut() {
            object.remove("next_cursor");
        }
        Ok(document)
    }

    /// One `row-worker` invocation on `messages`; deletes the ones it processed unless the
    /// invocation crashed (an injected fault). Returns `true` if it crashed.
    async fn invoke_worker(&self, messages: &[ReceivedMessage]) -> anyhow::Result<bool> {
        let event = events::sqs_event(messages)?;
        let context = events::context_with_deadline(self.options.worker_timeout);
        let invocation = self.faults.as_ref().map(|f| f.invocation(messages.len()));
        let call = pixpress_row_worker::handle(&self.worker, LambdaEvent::new(event, context));
        let call = async {
            match &invocation {
                Some(fate) => INVOCATION.scope(fate.clone(), call).await,
                None => call.await,
            }
        };
        // The deployed queue hides a message for 6 × the worker timeout, longer than any
        // invocation runs; the local queue's short timeout (fast retries) is renewed instead
        // while the invocation runs, so a long invocation's messages are not delivered twice.
        let visibility = self.options.visibility_timeout;
        let heartbeat = async {
            let mut tick = tokio::time::interval((visibility / 2).max(Duration::from_millis(50)));
            tick.tick().await;
            loop {
                tick.tick().await;
                for message in messages {
                    let _ = self
                        .backend
                        .extend_visibility(QueueName::Rows, &message.receipt_handle, visibility)
                        .await;
                }
            }
        };
        let response = tokio::select! {
            response = call => response,
            () = heartbeat => Err("the visibility heartbeat stopped".into()),
        }
        .map_err(|e| anyhow::anyhow!("row-worker: {e}"))?;
        if invocation.is_some_and(|fate| fate.crashed()) {
            // The process died: no batch response, nothing deleted; the messages come back
            // after the visibility timeout.
            return Ok(true);
        }
        // A message whose deletion fails comes back and finds its row recorded.
        self.delete_succeeded(QueueName::Rows, messages, &response)
            .await;
        Ok(false)
    }

    /// One `row-dead-letter` invocation on `messages`; deletes the ones it recorded.
    async fn invoke_dead_letter(&self, messages: &[ReceivedMessage]) -> anyhow::Result<()> {
        let event = events::sqs_event(messages)?;
        let call = pixpress_row_dead_letter::handle(
            &self.dead_letter,
            LambdaEvent::new(event, events::context()),
        );
        let (response, killed) = self.invoke_other(2 * messages.len(), call).await;
        let response = response.map_err(|e| anyhow::anyhow!("row-dead-letter: {e}"))?;
        if killed {
            // Killed before it returned: nothing deleted; the messages come back.
            return Ok(());
        }
        self.delete_succeeded(QueueName::DeadLetters, messages, &response)
            .await;
        Ok(())
    }

    /// Runs `call`, an invocation of a function other than the worker that makes about
    /// `calls` repository and queue calls, under its injected fate (`timeout`). Returns what
    /// it returned and whether it was killed before returning.
    async fn invoke_other<T>(&self, calls: usize, call: impl Future<Output = T>) -> (T, bool) {
        match self.faults.as_ref().map(|f| f.other_invocation(calls)) {
            Some(fate) => {
                let result = INVOCATION.scope(fate.clone(), call).await;
                (result, fate.crashed())
            }
            None => (call.await, false),
        }
    }

    /// Deletes from `queue` the `messages` that `response` does not name as batch item
    /// failures, as the Lambda event source mapping does after an invocation returns; a
    /// message whose deletion fails is logged and comes back after its visibility timeout.
    async fn delete_succeeded(
        &self,
        queue: QueueName,
        messages: &[ReceivedMessage],
        response: &SqsBatchResponse,
    ) {
        let failed: Vec<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        for message in messages {
            if !failed.contains(&message.message_id.as_str())
                && let Err(e) = self
                    .backend
                    .delete_from(queue, &message.receipt_handle)
                    .await
            {
                tracing::info!(error = %e, ?queue, "deleting a message failed; it will be redelivered");
            }
        }
    }

    /// Delivers `changes` that pass the stream filter to `completion-notifier`, retrying a
    /// failed batch with backoff as Lambda retries a stream batch (the template allows 5
    /// retries before the on-failure destination; locally 10, then the pump fails).
    async fn notify(&self, changes: &[ChangeRecord]) -> anyhow::Result<()> {
        let relevant: Vec<ChangeRecord> = changes
            .iter()
            .filter(|c| passes_stream_filter(c))
            .cloned()
            .collect();
        if let Ok(mut seen) = self.terminal_records.lock() {
            for change in relevant.iter().filter(|c| is_terminal_transition(c)) {
                let id = change.pk.strip_prefix("REQ#").unwrap_or(&change.pk);
                *seen.entry(id.to_owned()).or_insert(0) += 1;
            }
        }
        for batch in relevant.chunks(10) {
            if self.faults.as_ref().is_some_and(|f| f.drop_event()) {
                // Lost after its retries: only the sweeper finishes these requests now.
                tracing::warn!(records = batch.len(), "a stream batch is lost (injected)");
                continue;
            }
            let mut delay = Duration::from_millis(20);
            let mut attempt = 1;
            let mut chunk = batch;
            loop {
                let event = events::dynamodb_event(chunk)?;
                let call = pixpress_completion_notifier::handle(
                    &self.notifier,
                    LambdaEvent::new(event, events::context()),
                );
                let (response, killed) = self.invoke_other(8 * chunk.len(), call).await;
                let response = if killed {
                    Err("the invocation timed out".into())
                } else {
                    response
                };
                let failed = match response {
                    Ok(response) => match response.batch_item_failures.first() {
                        None => break,
                        // As Lambda does: retry from the reported record (the whole batch when
                        // it names none).
                        Some(failure) => {
                            let from = failure.item_identifier.as_deref().and_then(|sequence| {
                                chunk.iter().position(|c| c.sequence == sequence)
                            });
                            chunk = &chunk[from.unwrap_or(0)..];
                            "a record failed".to_owned()
                        }
                    },
                    Err(e) => e.to_string(),
                };
                if attempt >= 10 {
                    bail!("completion-notifier failed {attempt} times: {failed}");
                }
                tracing::warn!(error = %failed, attempt, "completion-notifier failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
                attempt += 1;
            }
        }
        Ok(())
    }

    /// One long poll of `queue`, as an event source mapping makes it: up to `max` messages
    /// hidden for `visibility`; `None` when there were none within `idle_wait` (or `stop`
    /// turned) or the receive was throttled.
    async fn poll(
        &self,
        queue: QueueName,
        max: usize,
        visibility: Duration,
        idle_wait: Duration,
        stop: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<Option<Vec<ReceivedMessage>>> {
        let messages = match self.backend.receive_from(queue, max, visibility).await {
            Ok(messages) => messages,
            Err(e) if e.is_retryable() => {
                pause(stop, Duration::from_millis(20)).await;
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        if messages.is_empty() {
            tokio::select! {
                () = self.backend.wait_for_messages(queue, idle_wait) => {}
                _ = stop.changed() => {}
            }
            return Ok(None);
        }
        Ok(Some(messages))
    }

    async fn worker_loop(self, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
        let batch = self.options.batch_size.clamp(1, 10);
        let (visibility, idle) = (self.options.visibility_timeout, Duration::from_millis(100));
        while !*stop.borrow() {
            if let Some(messages) = self
                .poll(QueueName::Rows, batch, visibility, idle, &mut stop)
                .await?
            {
                self.invoke_worker(&messages).await?;
            }
        }
        Ok(())
    }

    async fn dead_letter_loop(self, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
        let (visibility, idle) = (Duration::from_secs(30), Duration::from_millis(200));
        while !*stop.borrow() {
            if let Some(messages) = self
                .poll(QueueName::DeadLetters, 10, visibility, idle, &mut stop)
                .await?
            {
                self.invoke_dead_letter(&messages).await?;
            }
        }
        Ok(())
    }

    async fn stream_loop(self, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
        loop {
            let stopping = *stop.borrow();
            let changes = match self.backend.changes().await {
                Ok(changes) => changes,
                Err(e) if e.is_retryable() => {
                    pause(&mut stop, Duration::from_millis(20)).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if changes.is_empty() {
                if stopping {
                    return Ok(());
                }
                pause(&mut stop, Duration::from_millis(10)).await;
                continue;
            }
            self.notify(&changes).await?;
        }
    }

    /// One sweep, as the scheduled `sweeper` runs it.
    async fn sweep(&self) -> anyhow::Result<()> {
        match pixpress_sweeper::run(&self.sweeper, Deadline::NONE).await {
            Ok(swept) => {
                if !swept.repairs.is_empty() {
                    tracing::info!(
                        repairs = swept.repairs.len(),
                        "the sweeper repaired idle requests"
                    );
                }
                Ok(())
            }
            // Listing throttled (an injected fault): the next run tries again.
            Err(e) if e.is_retryable() => Ok(()),
            Err(e) => Err(anyhow::anyhow!("sweeper: {e}")),
        }
    }

    async fn sweep_loop(self, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
        while !*stop.borrow() {
            pause(&mut stop, self.options.sweep_every).await;
            self.sweep().await?;
        }
        Ok(())
    }

    /// Starts the pump in the background (see the module docs).
    #[must_use]
    pub fn start_pump(&self) -> Pump {
        let (stop, stopped) = watch::channel(false);
        let failure = Arc::new(Mutex::new(None));
        let mut tasks = JoinSet::new();
        let record = |failure: &Arc<Mutex<Option<String>>>, result: anyhow::Result<()>| {
            if let Err(e) = result
                && let Ok(mut slot) = failure.lock()
            {
                tracing::error!(error = %format!("{e:#}"), "pump task failed");
                slot.get_or_insert_with(|| format!("{e:#}"));
            }
        };
        for _ in 0..self.options.worker_invocations.max(1) {
            let (this, rx, failure) = (self.clone(), stopped.clone(), failure.clone());
            tasks.spawn(async move { record(&failure, this.worker_loop(rx).await) });
        }
        let (this, rx, fail) = (self.clone(), stopped.clone(), failure.clone());
        tasks.spawn(async move { record(&fail, this.dead_letter_loop(rx).await) });
        let (this, rx, fail) = (self.clone(), stopped.clone(), failure.clone());
        tasks.spawn(async move { record(&fail, this.sweep_loop(rx).await) });
        let (this, rx, fail) = (self.clone(), stopped.clone(), failure.clone());
        tasks.spawn(async move { record(&fail, this.upload_loop(rx).await) });
        let (this, rx, fail) = (self.clone(), stopped, failure.clone());
        tasks.spawn(async move { record(&fail, this.stream_loop(rx).await) });
        Pump {
            stop,
            tasks,
            failure,
        }
    }

    /// Moves work one step, in sequence: one worker invocation per slot on visible row
    /// messages, one dead-letter invocation, then the stream to the notifier. Returns `true`
    /// if anything was delivered. For tests that need control over each step; runs use
    /// [`Pipeline::start_pump`].
    ///
    /// # Errors
    /// When a handler fails for good.
    pub async fn pump_once(&self) -> anyhow::Result<bool> {
        let batch = self.options.batch_size.clamp(1, 10);
        let mut worked = self.deliver_upload_events().await?;
        for _ in 0..self.options.worker_invocations.max(1) {
            let messages = self
                .backend
                .receive_from(QueueName::Rows, batch, self.options.visibility_timeout)
                .await?;
            if messages.is_empty() {
                break;
            }
            worked = true;
            self.invoke_worker(&messages).await?;
        }
        let dead = self
            .backend
            .receive_from(QueueName::DeadLetters, 10, Duration::from_secs(30))
            .await?;
        if !dead.is_empty() {
            worked = true;
            self.invoke_dead_letter(&dead).await?;
        }
        let changes = self.backend.changes().await?;
        worked |= !changes.is_empty();
        self.notify(&changes).await?;
        self.sweep().await?;
        Ok(worked)
    }

    /// Runs the pump until request `request_id` is terminal and its completion handled (output
    /// CSV written, webhook no longer pending), calling `on_progress` as it goes.
    ///
    /// # Errors
    /// When a handler fails for good, the request is unknown, or no work is left while the
    /// request is still unfinished for 30 s (a stuck request is reported, not waited on).
    pub async fn run_until_done(
        &self,
        request_id: &str,
        mut on_progress: impl FnMut(&RequestMeta),
    ) -> anyhow::Result<RequestMeta> {
        let pump = self.start_pump();
        let result = self
            .wait_until_done(&pump, request_id, &mut on_progress)
            .await;
        pump.stop().await;
        result
    }

    async fn wait_until_done(
        &self,
        pump: &Pump,
        request_id: &str,
        on_progress: &mut impl FnMut(&RequestMeta),
    ) -> anyhow::Result<RequestMeta> {
        let mut idle_since: Option<Instant> = None;
        loop {
            if let Some(failure) = pump.failure() {
                bail!("the pipeline stopped: {failure}");
            }
            let meta = match self.repo().get_request(request_id).await {
                Ok(Some(meta)) => meta,
                Ok(None) => bail!("request {request_id} does not exist"),
                Err(e) if e.is_retryable() => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
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
            let depth = self.backend.queue_depth().await.unwrap_or(1)
                + self.backend.dead_letter_count().await.unwrap_or(1)
                + self.bucket.pending() as u64;
            if depth == 0 && !meta.status.is_terminal() {
                let since = *idle_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(30) {
                    bail!(
                        "request {request_id} cannot finish: no row message is left but it is still {}",
                        meta.status.as_str()
                    );
                }
            } else {
                idle_since = None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use pixpress_embedded::ChangeKind;

    use super::*;

    fn meta_change(old: Option<RequestStatus>, new: RequestStatus) -> ChangeRecord {
        let image = |status: RequestStatus| {
            let mut item = serde_dynamo::Item::from(std::collections::HashMap::<
                String,
                serde_dynamo::AttributeValue,
            >::new());
            item.insert(
                "pk".into(),
                serde_dynamo::AttributeValue::S("REQ#r-1".into()),
            );
            item.insert("sk".into(), serde_dynamo::AttributeValue::S(META_SK.into()));
            item.insert(
                "status".into(),
                serde_dynamo::AttributeValue::S(status.as_str().into()),
            );
            item
        };
        ChangeRecord {
            sequence: "1".into(),
            kind: if old.is_some() {
                ChangeKind::Modify
            } else {
                ChangeKind::Insert
            },
            pk: "REQ#r-1".into(),
            sk: META_SK.into(),
            old_image: old.map(image),
            new_image: image(new),
        }
    }

    /// As the template's FilterCriteria: a request written FAILED (a rejected catalogue)
    /// reaches the notifier, a replayed terminal request does not.
    #[test]
    fn the_stream_filter_passes_requests_entering_or_created_in_a_terminal_status() {
        use RequestStatus::{Completed, Failed, Pending, Processing};
        assert!(passes_stream_filter(&meta_change(None, Failed)));
        assert!(passes_stream_filter(&meta_change(
            Some(Processing),
            Completed
        )));
        assert!(!passes_stream_filter(&meta_change(None, Pending)));
        assert!(!passes_stream_filter(&meta_change(
            Some(Completed),
            Completed
        )));
        assert!(!passes_stream_filter(&meta_change(
            Some(Pending),
            Processing
        )));
    }
}
