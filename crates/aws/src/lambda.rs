//! What every function's `main` does around its handler: JSON logs, the metrics recorder, the
//! process configuration and the SDK configuration before the first event; one CloudWatch
//! Embedded Metric Format document after each event.

use std::future::Future;

use lambda_runtime::{LambdaEvent, service_fn};
use pixpress_app::config::{Config, vars};
use pixpress_app::ports::PortError;
use pixpress_app::telemetry::Metrics;
use pixpress_domain::webhook::WebhookSecret;
use serde::{Deserialize, Serialize};

/// A function's process-wide setup, made once per execution environment (the init phase).
#[derive(Debug)]
pub struct Started {
    /// The invocation metrics recorder, flushed after each event.
    pub metrics: Metrics,
    /// The process configuration (`Config::from_env`).
    pub config: Config,
    /// The SDK configuration from the Lambda environment ([`crate::lambda_sdk_config`]).
    pub sdk: aws_config::SdkConfig,
}

/// Starts function `function` (the metrics' `function` dimension): JSON logs, metrics, the
/// configuration and the SDK configuration; the webhook signing secret from Secrets Manager
/// when `WEBHOOK_SECRET_ARN` names one.
///
/// # Errors
/// When the configuration is invalid, the region or credentials are not in the environment,
/// or the named secret cannot be read.
pub async fn start(function: &'static str) -> Result<Started, lambda_runtime::Error> {
    pixpress_app::telemetry::init_lambda();
    let metrics = Metrics::init(function);
    let mut config = Config::from_env()?;
    let sdk = crate::lambda_sdk_config()?;
    if let Some(arn) = std::env::var(vars::WEBHOOK_SECRET_ARN)
        .ok()
        .filter(|v| !v.trim().is_empty())
    {
        let client = aws_sdk_secretsmanager::Client::new(&sdk);
        config.webhook_secret = Some(deployment_secret(&client, arn.trim()).await?);
    }
    Ok(Started {
        metrics,
        config,
        sdk,
    })
}

/// The webhook signing secret stored in Secrets Manager secret `arn` (one `GetSecretValue`),
/// read as `WEBHOOK_SECRET` always was: `whsec_<base64>`, or any other text, whose bytes are
/// then the key (what `GenerateSecretString` makes: receivers are handed `whsec_` followed by
/// the base64 of the value, as Standard Webhooks libraries take it).
///
/// # Errors
/// When the secret cannot be read or holds no text.
pub async fn deployment_secret(
    client: &aws_sdk_secretsmanager::Client,
    arn: &str,
) -> Result<WebhookSecret, PortError> {
    let out = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| crate::sdk_error("reading the webhook signing secret", &e))?;
    let text = out
        .secret_string()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            PortError::Unexpected(anyhow::anyhow!(
                "the webhook signing secret {arn} holds no text"
            ))
        })?;
    WebhookSecret::parse(text).map_err(|e| {
        PortError::Unexpected(anyhow::anyhow!(
            "the webhook signing secret {arn} is not usable: {e}"
        ))
    })
}

/// Runs `handler` on every event the Lambda runtime delivers, flushing `metrics` (one EMF
/// document of the invocation's metrics) after each, whatever the handler returned.
///
/// # Errors
/// When the runtime API cannot be reached.
pub async fn run_events<A, R, H, Fut>(
    metrics: Metrics,
    handler: H,
) -> Result<(), lambda_runtime::Error>
where
    A: for<'de> Deserialize<'de>,
    R: Serialize,
    H: Fn(LambdaEvent<A>) -> Fut,
    Fut: Future<Output = Result<R, lambda_runtime::Error>>,
{
    lambda_runtime::run(service_fn(|event| {
        let handled = handler(event);
        async move {
            let result = handled.await;
            metrics.flush();
            result
        }
    }))
    .await
}
