//! # Webhook delivery — one signed attempt, recorded on the request
//!
//! Shared by the `completion-notifier` (which delivers in its invocation when it has no
//! webhooks queue: local runs and tests) and the `webhook-sender` (which makes one attempt per
//! SQS delivery on Svix's schedule). An attempt signs the completion event with the tenant's
//! secrets — both during a rotation — as Standard Webhooks v1 prescribes
//! (<https://www.standardwebhooks.com/>, "Signature scheme"), else with the deployment's
//! `WEBHOOK_SECRET`, never unsigned; POSTs it through the guarded client (no redirects); and
//! appends the attempt to the request. A 410 Gone disables the URL for the tenant.
//!
//! [`notify`] is the whole completion of a terminal request: the output CSV, then the webhook.

pub mod notify;

use std::time::Duration;

use chrono::Utc;
use pixpress_app::auth::KeyStore;
use pixpress_app::config::Config;
use pixpress_app::ports::{NoQueue, ObjectStore, OutputLedger, PortError, RequestReader};
use pixpress_domain::model::{DeliveryState, RequestMeta, WebhookAttempt};
use pixpress_domain::webhook::{self, WebhookPayload, WebhookSecret};
use pixpress_fetch::Fetcher;

/// Settings of webhook delivery.
#[derive(Debug, Clone)]
pub struct NotifierConfig {
    /// Signing secret; unsigned deliveries without one.
    pub webhook_secret: Option<WebhookSecret>,
    /// Attempts per completion.
    pub max_attempts: u32,
    /// Delay before the second attempt, doubled for each further one.
    pub backoff: Duration,
    /// Public base URL of the API, for links in the payload.
    pub public_api_url: Option<String>,
}

impl From<&Config> for NotifierConfig {
    fn from(config: &Config) -> Self {
        Self {
            webhook_secret: config.webhook_secret.clone(),
            max_attempts: config.webhook_max_attempts,
            backoff: config.webhook_backoff,
            public_api_url: config.public_api_url.clone(),
        }
    }
}

/// What delivering a webhook needs: the completion notifier's and the webhook sender's app.
#[derive(Debug, Clone)]
pub struct App<R, S, W, K> {
    /// Tenants' webhook secrets: a tenant's own secret signs its deliveries; without a key
    /// store, or for a tenant without one, the configured `WEBHOOK_SECRET` does.
    pub keys: Option<K>,
    /// Requests and rows.
    pub repo: R,
    /// Where the output CSV goes.
    pub store: S,
    /// Guarded client for webhook delivery (no redirects).
    pub fetcher: Fetcher,
    /// Settings.
    pub config: NotifierConfig,
    /// The webhooks queue of a deployment: completion events go there and the webhook-sender
    /// delivers them; `None` (local runs, tests) delivers in this invocation.
    pub webhooks: Option<W>,
}

impl<R: RequestReader + OutputLedger, S: ObjectStore, K> App<R, S, NoQueue, K> {
    /// An app from the process configuration that delivers in the invocation (no webhooks
    /// queue); [`App::with_webhooks`] gives it one.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(keys: Option<K>, repo: R, store: S, config: &Config) -> anyhow::Result<Self> {
        Ok(Self {
            keys,
            repo,
            store,
            fetcher: Fetcher::new(config.webhook_fetch())?,
            config: NotifierConfig::from(config),
            webhooks: None,
        })
    }
}

impl<R, S, W, K> App<R, S, W, K> {
    /// The same app with `webhooks` as its webhooks queue (`None`: it delivers itself).
    #[must_use]
    pub fn with_webhooks<V>(self, webhooks: Option<V>) -> App<R, S, V, K> {
        App {
            keys: self.keys,
            repo: self.repo,
            store: self.store,
            fetcher: self.fetcher,
            config: self.config,
            webhooks,
        }
    }
}

fn links(
    config: &NotifierConfig,
    meta: &RequestMeta,
    csv_url: Option<String>,
) -> (Option<String>, Option<String>) {
    match &config.public_api_url {
        Some(base) => (
            Some(format!("{base}/requests/{}", meta.request_id)),
            csv_url.map(|_| format!("{base}/requests/{}/output.csv", meta.request_id)),
        ),
        None => (None, csv_url),
    }
}

/// Longest wait a receiver's `Retry-After` can ask for between two attempts.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(30);

/// What one delivery attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempted {
    /// A 2xx answer.
    Delivered,
    /// Not sent and never will be: no signing secret, or the endpoint answered 410 before.
    Refused,
    /// The receiver answered 410 Gone: the endpoint is now disabled for the tenant.
    Gone,
    /// Failed; `retry_after` is what the receiver asked for (429/5xx), `retryable` whether
    /// another attempt may succeed.
    Failed {
        /// The receiver's `Retry-After`.
        retry_after: Option<Duration>,
        /// `false` for failures that repeat (4xx other than 408/425/429).
        retryable: bool,
    },
}

/// Makes attempt `attempt` to deliver `meta`'s completion event to `url` and records it on the
/// request: state `Delivered`, `Failed` (when `last` or the failure is permanent), else
/// `Pending`, conditionally on the request holding `recorded_before` attempts
/// ([`OutputLedger::record_webhook_attempt`]). Signed with the tenant's secrets (both during a
/// rotation), else the deployment's; never unsigned. A 410 disables the URL for the tenant.
///
/// # Errors
/// [`PortError`] when the request or the tenant cannot be read or written.
pub async fn attempt_delivery<R: RequestReader + OutputLedger, S: ObjectStore, W, K: KeyStore>(
    app: &App<R, S, W, K>,
    meta: &RequestMeta,
    url: &str,
    attempt: u32,
    last: bool,
    recorded_before: u32,
) -> Result<Attempted, PortError> {
    // Refused before sending: recorded as a failed attempt with `code`, no status.
    let refuse = |code: &'static str| async move {
        let attempt = WebhookAttempt {
            at: Utc::now(),
            status_code: None,
            error: Some(code.to_owned()),
        };
        app.repo
            .record_webhook_attempt(
                &meta.request_id,
                &attempt,
                DeliveryState::Failed,
                recorded_before,
            )
            .await?;
        Ok(Attempted::Refused)
    };
    let tenant = match &app.keys {
        Some(keys) => keys.get_tenant(&meta.tenant).await?,
        None => None,
    };
    if tenant
        .as_ref()
        .is_some_and(|t| t.disabled_webhook_urls.iter().any(|u| u == url))
    {
        return refuse("endpoint_disabled").await;
    }
    let tenant_secrets = tenant
        .as_ref()
        .map(|t| t.signing_secrets(Utc::now()))
        .unwrap_or_default();
    let secrets: Vec<WebhookSecret> = if tenant_secrets.is_empty() {
        app.config.webhook_secret.clone().into_iter().collect()
    } else {
        tenant_secrets
    };
    if secrets.is_empty() {
        tracing::warn!(request_id = %meta.request_id, tenant = %meta.tenant, "no webhook signing secret; not delivered");
        return refuse("no_signing_secret").await;
    }
    let csv_url = meta
        .output_csv_key
        .as_ref()
        .map(|k| app.store.public_url(k));
    let (status_url, csv_link) = links(&app.config, meta, csv_url);
    let msg_id = webhook::message_id(&meta.request_id);
    let now = Utc::now();
    let payload = WebhookPayload::completed(meta, status_url, csv_link, now);
    let body = serde_json::to_vec(&payload).unwrap_or_default();
    let headers = webhook::headers(&secrets, &msg_id, now.timestamp(), &body);
    let result = app.fetcher.post(url, &headers, body).await;
    let outcome = match &result {
        Ok(_) => "delivered".to_owned(),
        Err(e) => e.code(),
    };
    metrics::counter!("webhook_attempts", "outcome" => outcome).increment(1);
    let (record, state, attempted) = match result {
        Ok(status) => (
            WebhookAttempt {
                at: now,
                status_code: Some(status),
                error: None,
            },
            DeliveryState::Delivered,
            Attempted::Delivered,
        ),
        Err(e) => {
            let status_code = match e.kind {
                pixpress_fetch::FetchErrorKind::Http(s) => Some(s),
                _ => None,
            };
            let gone = e.kind == pixpress_fetch::FetchErrorKind::Http(410);
            let retryable = e.is_retryable();
            let state = if gone || last || !retryable {
                DeliveryState::Failed
            } else {
                DeliveryState::Pending
            };
            tracing::info!(request_id = %meta.request_id, error = %e, attempt, "webhook attempt failed");
            let attempted = if gone {
                Attempted::Gone
            } else {
                Attempted::Failed {
                    retry_after: e.retry_after,
                    retryable,
                }
            };
            (
                WebhookAttempt {
                    at: now,
                    status_code,
                    error: Some(e.code()),
                },
                state,
                attempted,
            )
        }
    };
    app.repo
        .record_webhook_attempt(&meta.request_id, &record, state, recorded_before)
        .await?;
    if attempted == Attempted::Gone {
        // Gone for good: this tenant's deliveries to the URL stop here.
        tracing::warn!(request_id = %meta.request_id, %url, "webhook receiver answered 410; endpoint disabled");
        if let (Some(keys), Some(mut tenant)) = (&app.keys, tenant) {
            tenant.disabled_webhook_urls.push(url.to_owned());
            keys.put_tenant(&tenant).await?;
        }
    }
    Ok(attempted)
}

/// Delivers in this invocation (no webhooks queue: local runs and tests): up to
/// `WEBHOOK_MAX_ATTEMPTS` attempts with exponential backoff, a receiver's Retry-After honoured
/// up to [`RETRY_AFTER_CAP`].
pub async fn deliver_inline<R: RequestReader + OutputLedger, S: ObjectStore, W, K: KeyStore>(
    app: &App<R, S, W, K>,
    meta: &RequestMeta,
    url: &str,
) -> Result<DeliveryState, PortError> {
    let mut delay = app.config.backoff;
    let recorded = meta.webhook.as_ref().map_or(0, |hook| {
        u32::try_from(hook.attempts.len()).unwrap_or(u32::MAX)
    });
    for attempt in 1..=app.config.max_attempts {
        let last = attempt == app.config.max_attempts;
        let before = recorded.saturating_add(attempt - 1);
        match attempt_delivery(app, meta, url, attempt, last, before).await? {
            Attempted::Delivered => return Ok(DeliveryState::Delivered),
            Attempted::Refused | Attempted::Gone => return Ok(DeliveryState::Failed),
            Attempted::Failed { retryable, .. } if last || !retryable => {
                return Ok(DeliveryState::Failed);
            }
            Attempted::Failed { retry_after, .. } => {
                let asked = retry_after.map_or(Duration::ZERO, |d| d.min(RETRY_AFTER_CAP));
                tokio::time::sleep(delay.max(asked)).await;
                delay = delay.saturating_mul(2);
            }
        }
    }
    Ok(DeliveryState::Failed)
}
