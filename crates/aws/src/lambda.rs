//! What every function's `main` does around its handler: JSON logs, the metrics recorder, the
//! process configuration and the SDK configuration before the first event; one CloudWatch
//! Embedded Metric Format document after each event.

use std::future::Future;

use lambda_runtime::{LambdaEvent, service_fn};
use pixpress_app::config::Config;
use pixpress_app::telemetry::Metrics;
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
/// configuration and the SDK configuration.
///
/// # Errors
/// When the configuration is invalid or the region or credentials are not in the environment.
pub fn start(function: &'static str) -> Result<Started, lambda_runtime::Error> {
    pixpress_app::telemetry::init_lambda();
    let metrics = Metrics::init(function);
    let config = Config::from_env()?;
    let sdk = crate::lambda_sdk_config()?;
    Ok(Started {
        metrics,
        config,
        sdk,
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
