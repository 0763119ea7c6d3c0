//! # sweeper — brings idle requests to an end
//!
//! Trigger: an EventBridge schedule (every 15 minutes, `template.yaml`); locally, the CLI's
//! pump on its own short schedule. Runs [`pixpress_app::sweep`] over the open requests: a
//! running request with no row recorded for `SWEEP_IDLE_SECONDS` gets its unrecorded rows
//! enqueued again (or is completed when every row is recorded, or failed `rows_missing` when
//! its rows never arrived for `SWEEP_INGEST_IDLE_SECONDS`); a terminal request whose output
//! CSV or webhook was never handed on gets the completion notifier's work done here
//! ([`pixpress_delivery::notify`]); a settled request leaves the open requests.
//!
//! Each repair is logged with its request id and counted in the `sweeper_repairs` metric
//! (EMF); an alarm fires when the sweeper repairs anything, since every repair means an event
//! was lost or an invocation died somewhere upstream.
//!
//! Failure semantics: a failure on one request is logged and counted (`sweeper_errors`); the
//! next scheduled run tries again. A sweep cut short by the deadline continues at the next
//! run. Every repair is idempotent: re-enqueued rows are recorded once, completion and failure
//! are conditional writes, the notifier's work is replay-safe.
//!
//! Env vars: those of the completion-notifier, `ROWS_QUEUE_URL`, `SWEEP_IDLE_SECONDS`,
//! `SWEEP_INGEST_IDLE_SECONDS`.

use chrono::Utc;
use lambda_runtime::LambdaEvent;
use pixpress_app::auth::KeyStore;
use pixpress_app::config::Config;
use pixpress_app::deadline::Deadline;
use pixpress_app::ports::{
    ObjectStore, OpenRequests, OutputLedger, PortError, RequestIntake, RequestReader, RowLedger,
    RowQueue, WebhookQueue,
};
use pixpress_app::sweep::{SweepConfig, Swept, sweep};

/// The sweeper's dependencies: the notifier's app (whose repository is also the sweeper's) and
/// the rows queue.
#[derive(Debug, Clone)]
pub struct App<R, Q, S, W, K> {
    /// What completes a terminal request (output CSV, webhook), over the repository swept.
    pub notifier: pixpress_delivery::App<R, S, W, K>,
    /// The rows queue, for rows enqueued again.
    pub rows: Q,
    /// When a request counts as idle.
    pub config: SweepConfig,
}

impl<R, Q, S, W, K> App<R, Q, S, W, K> {
    /// A sweeper from the process configuration.
    #[must_use]
    pub fn new(notifier: pixpress_delivery::App<R, S, W, K>, rows: Q, config: &Config) -> Self {
        Self {
            notifier,
            rows,
            config: config.sweep,
        }
    }
}

/// Runs one sweep now, within `deadline`, and counts its repairs (`sweeper_repairs`) and the
/// requests it could not examine (`sweeper_errors`) in the metrics.
///
/// # Errors
/// [`PortError`] when the open requests cannot be listed.
pub async fn run<R, Q, S, W, K>(
    app: &App<R, Q, S, W, K>,
    deadline: Deadline,
) -> Result<Swept, PortError>
where
    R: OpenRequests + RequestReader + RequestIntake + RowLedger + OutputLedger,
    Q: RowQueue,
    S: ObjectStore,
    W: WebhookQueue,
    K: KeyStore,
{
    let notifier = &app.notifier;
    let swept = sweep(
        &notifier.repo,
        &app.rows,
        &app.config,
        Utc::now(),
        deadline,
        |request_id| async move {
            match pixpress_delivery::notify::notify(notifier, &request_id, deadline).await {
                Ok(notified) => {
                    tracing::info!(%request_id, ?notified, "completion handled by the sweeper");
                    Ok(())
                }
                Err(pixpress_delivery::notify::NotifyError::Storage(e)) => Err(e),
                Err(e) => Err(PortError::Unexpected(e.into())),
            }
        },
    )
    .await?;
    // One dimension (`function`) only, so the alarm's metric is the one written; the log names
    // each repair.
    metrics::counter!("sweeper_repairs").increment(swept.repairs.len() as u64);
    metrics::counter!("sweeper_errors").increment(swept.errors);
    Ok(swept)
}

/// Handles one scheduled event (its content is not used).
///
/// # Errors
/// When the open requests cannot be listed (the invocation fails; the next schedule runs
/// again).
pub async fn handle<R, Q, S, W, K>(
    app: &App<R, Q, S, W, K>,
    event: LambdaEvent<serde_json::Value>,
) -> Result<serde_json::Value, lambda_runtime::Error>
where
    R: OpenRequests + RequestReader + RequestIntake + RowLedger + OutputLedger,
    Q: RowQueue,
    S: ObjectStore,
    W: WebhookQueue,
    K: KeyStore,
{
    let deadline = Deadline::from_epoch_millis(event.context.deadline);
    let swept = run(app, deadline).await?;
    tracing::info!(
        examined = swept.examined,
        settled = swept.settled,
        repaired = swept.repairs.len(),
        errors = swept.errors,
        complete = swept.complete,
        "sweep done"
    );
    Ok(serde_json::json!({
        "examined": swept.examined,
        "settled": swept.settled,
        "repaired": swept.repairs.len(),
        "errors": swept.errors,
        "complete": swept.complete,
    }))
}
